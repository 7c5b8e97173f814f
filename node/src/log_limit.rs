//! Rate limits on log lines that repeat. A condition that persists (a peer that does not answer,
//! replication that keeps timing out) logs from one place many times a second; left alone that
//! filled disks with tens of megabytes per node in minutes and cost CPU on an overloaded node.
//! Each call site may log `burst` lines per window; the rest of the window is counted, and the
//! count is reported once the call site logs again in a later window.
//!
//! ```text
//!   event ──► RateLimitLayer::event_enabled ──► LineBudget::admit(call site, now)
//!                                   Admit::Yes | Admit::YesAfterSuppressing(n) | Admit::No
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// What to do with one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Log it.
    Yes,
    /// Log it, after saying that this many lines from the same place were left out.
    YesAfterSuppressing(u64),
    /// Leave it out (counted).
    No,
}

#[derive(Debug)]
struct Site {
    window_start: Instant,
    admitted: u32,
    suppressed: u64,
}

/// Per-key budgets of `burst` lines per `window`.
#[derive(Debug)]
pub struct LineBudget<K> {
    window: Duration,
    burst: u32,
    sites: Mutex<HashMap<K, Site>>,
}

impl<K: std::hash::Hash + Eq> LineBudget<K> {
    /// `burst` lines per `window` for each key.
    pub fn new(window: Duration, burst: u32) -> Self {
        LineBudget { window, burst: burst.max(1), sites: Mutex::new(HashMap::new()) }
    }

    /// Whether a line from `key` at `now` is logged.
    pub fn admit(&self, key: K, now: Instant) -> Admit {
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let site = sites.entry(key).or_insert(Site { window_start: now, admitted: 0, suppressed: 0 });
        if now.saturating_duration_since(site.window_start) >= self.window {
            let suppressed = std::mem::take(&mut site.suppressed);
            site.window_start = now;
            site.admitted = 1;
            return if suppressed > 0 { Admit::YesAfterSuppressing(suppressed) } else { Admit::Yes };
        }
        if site.admitted < self.burst {
            site.admitted += 1;
            Admit::Yes
        } else {
            site.suppressed += 1;
            Admit::No
        }
    }
}

/// A tracing layer that drops lines over their call site's budget, for every layer of the
/// subscriber.
pub struct RateLimitLayer {
    budget: LineBudget<Identifier>,
}

impl RateLimitLayer {
    /// `burst` lines per `window` for each call site.
    pub fn new(window: Duration, burst: u32) -> Self {
        RateLimitLayer { budget: LineBudget::new(window, burst) }
    }
}

impl<S: Subscriber> Layer<S> for RateLimitLayer {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        match self.budget.admit(meta.callsite(), Instant::now()) {
            Admit::Yes => true,
            Admit::YesAfterSuppressing(n) => {
                // Written directly: logging through tracing here would re-enter this filter.
                eprintln!(
                    "{} {}: {n} similar lines from {}:{} were left out (at most {} per {:?})",
                    meta.level(),
                    meta.target(),
                    meta.file().unwrap_or("?"),
                    meta.line().unwrap_or(0),
                    self.budget.burst,
                    self.budget.window,
                );
                true
            }
            Admit::No => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key logs `burst` lines per window; the next window's first line reports how many of the
    /// previous window's were left out; keys do not share budgets.
    #[test]
    fn repeats_are_limited_per_key_and_counted() {
        let budget = LineBudget::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert_eq!(budget.admit("a", t0), Admit::Yes);
        assert_eq!(budget.admit("a", t0), Admit::Yes);
        assert_eq!(budget.admit("a", t0 + Duration::from_secs(1)), Admit::No);
        assert_eq!(budget.admit("a", t0 + Duration::from_secs(2)), Admit::No);
        assert_eq!(budget.admit("b", t0 + Duration::from_secs(2)), Admit::Yes);
        assert_eq!(budget.admit("a", t0 + Duration::from_secs(10)), Admit::YesAfterSuppressing(2));
        assert_eq!(budget.admit("a", t0 + Duration::from_secs(11)), Admit::Yes);
        assert_eq!(budget.admit("a", t0 + Duration::from_secs(21)), Admit::Yes);
    }
}
