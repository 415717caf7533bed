//! Waiting for what a test expects to become true.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Ok`, or panics after `timeout` naming `what` and the last observation (the
/// `Err` text), so that a failing test says what it saw.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if started.elapsed() > timeout => {
                panic!("{what}: not within {timeout:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
