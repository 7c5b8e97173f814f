//! Retries: exponential backoff with full jitter, within a time budget.

use std::time::Duration;

use rand::Rng;

/// How the client retries requests that failed for a reason that may pass (leader change,
/// node down, stale map, overload).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Upper bound of the first wait.
    pub initial_backoff: Duration,
    /// Upper bound of any wait.
    pub max_backoff: Duration,
    /// Total time a request may take, retries included; then it fails with
    /// `ClientError::RetryBudgetExhausted`.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    /// 20 ms doubling to 1 s, within 30 s: rides out elections (about a second) and node
    /// restarts.
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            budget: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries: the first error reaches the caller.
    pub fn none() -> Self {
        RetryPolicy { initial_backoff: Duration::ZERO, max_backoff: Duration::ZERO, budget: Duration::ZERO }
    }

    /// The wait before retry number `attempt` (1 = the first retry): uniform in
    /// `[0, min(max_backoff, initial_backoff · 2^(attempt−1))]` ("full jitter", so clients that
    /// failed together do not retry together).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.initial_backoff.saturating_mul(1 << attempt.saturating_sub(1).min(20)).min(self.max_backoff);
        if ceiling.is_zero() {
            return ceiling;
        }
        Duration::from_nanos(rand::thread_rng().gen_range(0..=ceiling.as_nanos() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_capped() {
        let p = RetryPolicy::default();
        for attempt in 1..40 {
            let ceiling = (p.initial_backoff * 2u32.pow((attempt - 1).min(20))).min(p.max_backoff);
            assert!(p.backoff(attempt) <= ceiling);
        }
        assert_eq!(RetryPolicy::none().backoff(3), Duration::ZERO);
    }
}
