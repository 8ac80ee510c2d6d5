//! Wall-clock time behind a trait, so token expiry can be tested without waiting.
//! (Leases and timeouts use `tokio::time`, which tests pause instead.)

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in Unix seconds.
pub trait Clock: Send + Sync + 'static {
    fn now_unix(&self) -> i64;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}
