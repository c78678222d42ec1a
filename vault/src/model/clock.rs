//! Where the vault gets the time; tests and drills move it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where the vault gets the time; tests move it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;

    /// Microseconds since the Unix epoch.
    fn now_micros(&self) -> i64 {
        self.now().saturating_mul(1_000_000)
    }
}

/// The operating system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn now_micros(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }
}

/// The operating system's clock shifted by a fixed number of seconds
/// (`VAULT_TEST_CLOCK_OFFSET_SECS`: tests and drills only).
#[derive(Debug)]
pub struct OffsetClock(pub i64);

impl Clock for OffsetClock {
    fn now(&self) -> i64 {
        SystemClock.now().saturating_add(self.0)
    }

    fn now_micros(&self) -> i64 {
        SystemClock
            .now_micros()
            .saturating_add(self.0.saturating_mul(1_000_000))
    }
}
