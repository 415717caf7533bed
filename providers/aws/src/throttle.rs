//! Client-side rate limits: a token bucket per (access key, region), with separate budgets for RunInstances,
//! Describe* calls and everything else. Elastic Load Balancing's calls draw from the same buckets as EC2's.
//!
//! EC2 throttles each account and region with token buckets of its own (per the EC2 API docs: non-mutating calls
//! 100 tokens refilled at 20/s, RunInstances 1000 at 2/s, mutating calls 200 at 5/s). Slipway stays well under
//! those so that other tools sharing the account keep their share, and so that a fleet-wide burst (a manager
//! restart reconciling every cluster) queues here instead of drawing `RequestLimitExceeded` for everyone.
//! A dozen lines of bucket did not justify a dependency such as `governor`, whose keyed limiters would still need
//! a wrapper for three budgets per key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use slipway_provider::KeyedCache;
use tokio::time::Instant;

/// Which budget an EC2 call draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiClass {
    RunInstances,
    Describe,
    Mutate,
}

/// How many calls may go out at once (`burst`) and how fast the budget refills (`per_second`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub per_second: f64,
    pub burst: f64,
}

/// The three budgets of one (access key, region).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budgets {
    pub run_instances: Budget,
    pub describe: Budget,
    pub mutate: Budget,
}

impl Default for Budgets {
    /// About half of EC2's default account limits (see the module docs).
    fn default() -> Self {
        Self {
            run_instances: Budget {
                per_second: 1.0,
                burst: 20.0,
            },
            describe: Budget {
                per_second: 10.0,
                burst: 50.0,
            },
            mutate: Budget {
                per_second: 2.5,
                burst: 100.0,
            },
        }
    }
}

impl Budgets {
    fn of(&self, class: ApiClass) -> Budget {
        match class {
            ApiClass::RunInstances => self.run_instances,
            ApiClass::Describe => self.describe,
            ApiClass::Mutate => self.mutate,
        }
    }
}

struct Bucket {
    budget: Budget,
    tokens: f64,
    refilled_at: Instant,
}

impl Bucket {
    fn new(budget: Budget) -> Self {
        Self {
            budget,
            tokens: budget.burst,
            refilled_at: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is there.
    fn try_take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.budget.per_second).min(self.budget.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.budget.per_second,
            ))
        }
    }
}

/// The buckets of one (access key, region).
pub struct Limiter {
    buckets: [Mutex<Bucket>; 3],
}

impl Limiter {
    fn new(budgets: &Budgets) -> Self {
        Self {
            buckets: [ApiClass::RunInstances, ApiClass::Describe, ApiClass::Mutate]
                .map(|class| Mutex::new(Bucket::new(budgets.of(class)))),
        }
    }

    /// Waits until the budget of `class` allows one more call.
    pub async fn acquire(&self, class: ApiClass) {
        let index = match class {
            ApiClass::RunInstances => 0,
            ApiClass::Describe => 1,
            ApiClass::Mutate => 2,
        };
        loop {
            let taken = self.buckets[index]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_take();
            match taken {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

/// Limiters by (access key, region), shared by every cluster that uses the same account.
pub struct Limiters {
    budgets: Budgets,
    by_key: KeyedCache<(String, String), Arc<Limiter>>,
}

impl Limiters {
    pub fn new(budgets: Budgets) -> Self {
        Self {
            budgets,
            by_key: KeyedCache::new(),
        }
    }

    pub fn get(&self, access_key: &str, region: &str) -> Arc<Limiter> {
        self.by_key
            .get_or_insert_with((access_key.to_string(), region.to_string()), || {
                Arc::new(Limiter::new(&self.budgets))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time rather than tokio's paused clock: `test-util` would change tokio's features and so rebuild the
    // whole AWS SDK for the tests.
    #[tokio::test]
    async fn bucket_allows_a_burst_then_the_refill_rate() {
        let limiter = Limiter::new(&Budgets {
            run_instances: Budget {
                per_second: 20.0,
                burst: 3.0,
            },
            ..Budgets::default()
        });
        let start = Instant::now();
        for _ in 0..3 {
            limiter.acquire(ApiClass::RunInstances).await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(20),
            "the burst goes out at once"
        );
        for _ in 0..4 {
            limiter.acquire(ApiClass::RunInstances).await;
        }
        // Four more at 20/s take 200 ms; the other budgets are untouched.
        let elapsed = start.elapsed().as_secs_f64();
        assert!((0.19..0.5).contains(&elapsed), "{elapsed}");
        let before = Instant::now();
        limiter.acquire(ApiClass::Describe).await;
        assert!(before.elapsed() < Duration::from_millis(20));
    }
}
