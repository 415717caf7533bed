//! Per-object exponential backoff with jitter. kube-runtime retries a failed object with whatever `Action` the
//! error policy returns and keeps no count itself, so the count lives in the context.

use std::time::Duration;

use rand::Rng;

use crate::context::Context;

const BASE: Duration = Duration::from_secs(1);
const CAP: Duration = Duration::from_secs(300);
/// How often an object short of capacity (no free host, a quota) looks again. Not a failure that grows: capacity
/// comes back when someone frees or adds it, and should be noticed within this long.
const CAPACITY_RETRY: Duration = Duration::from_secs(15);
/// How often an object that needs a person to act (a provider this manager does not run) looks again.
pub const SLOW_RETRY: Duration = Duration::from_secs(300);
/// The longest an object waits while the management apiserver does not answer: the failures count (so a long outage
/// is not hammered by every object at once) but, once it is back, no object sits out minutes of backoff it earned
/// for the outage.
pub const UNREACHABLE_CAP: Duration = Duration::from_secs(10);

/// Records one more failure of `key` and returns how long to wait before the next try.
pub fn next_delay(ctx: &Context, key: &str) -> Duration {
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let count = failures.entry(key.to_string()).or_default();
    *count = count.saturating_add(1);
    delay_for(*count, rand::rng().random_range(0.8..1.2))
}

/// When an object that found no capacity looks again: `CAPACITY_RETRY`, with jitter.
pub fn capacity_retry() -> Duration {
    CAPACITY_RETRY.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// Forgets the failures of `key` after a successful reconcile.
pub fn reset(ctx: &Context, key: &str) {
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    failures.remove(key);
}

/// `BASE * 2^(failures-1)`, capped, times `jitter` so that objects failing together do not retry together.
fn delay_for(failures: u32, jitter: f64) -> Duration {
    let exponential = BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    exponential.min(CAP).mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_per_failure_up_to_the_cap() {
        let delays: Vec<u64> = (1..=12).map(|n| delay_for(n, 1.0).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn capacity_is_looked_at_again_slowly_and_steadily() {
        for _ in 0..100 {
            let delay = capacity_retry();
            assert!((Duration::from_secs(12)..=Duration::from_secs(18)).contains(&delay));
        }
    }

    #[test]
    fn jitter_spreads_the_delay() {
        assert_eq!(delay_for(3, 0.8), Duration::from_millis(3200));
        assert_eq!(delay_for(3, 1.2), Duration::from_millis(4800));
    }
}
