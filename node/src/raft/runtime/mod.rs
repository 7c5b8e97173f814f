//! The async runtime openraft runs on: tokio in production, madsim in simulation.

#[cfg(not(madsim))]
/// openraft's runtime in production builds.
pub type Runtime = openraft::TokioRuntime;

#[cfg(madsim)]
pub use sim::MadsimRuntime as Runtime;

#[cfg(madsim)]
mod sim;
