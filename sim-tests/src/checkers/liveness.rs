//! Liveness: once faults stop, a write and a read through every node succeed within `bound`
//! of simulated time.

use std::time::Duration;

use crate::workload::{read_device, write, Outcome};

/// Fails when some node cannot write and read within `bound` after healing.
pub async fn check(addrs: &[String], probe_batch: u64, bound: Duration) -> Result<(), String> {
    let deadline = madsim::time::Instant::now() + bound;
    for (i, addr) in addrs.iter().enumerate() {
        loop {
            let wrote = write(addr, probe_batch + i as u64).await;
            let read = if wrote == Outcome::Acked { read_device(addr, 0).await.map(|_| ()) } else { Ok(()) };
            if wrote == Outcome::Acked && read.is_ok() {
                break;
            }
            if madsim::time::Instant::now() >= deadline {
                return Err(format!(
                    "{addr} could not write and read within {bound:?} after the faults stopped (last write {wrote:?}, read {read:?})"
                ));
            }
            madsim::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
