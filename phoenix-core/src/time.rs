//! Clocks. All waiting goes through `tokio::time`; timestamps come from a
//! [`Clock`] so that a simulated cloud under tokio's paused clock produces
//! the same timestamps on every run.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A point in time, UTC.
pub type Timestamp = DateTime<Utc>;

/// Where timestamps come from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock, for production.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Utc::now()
    }
}

/// A clock that starts at a fixed instant and advances with `tokio::time`,
/// so it follows tokio's paused clock in tests and simulations.
#[derive(Debug, Clone)]
pub struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at `base` now.
    pub fn starting_at(base: Timestamp) -> Self {
        Self {
            base,
            start: tokio::time::Instant::now(),
        }
    }

    /// Starts at 2030-01-01T00:00:00Z, a fixed base for reproducible runs.
    pub fn fixed() -> Self {
        let base = DateTime::<Utc>::from_timestamp(1_893_456_000, 0).unwrap_or_default();
        Self::starting_at(base)
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.start);
        self.base + chrono::Duration::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)
    }
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The duration from `earlier` to `later`, zero when `later` is not later.
pub fn elapsed_between(earlier: Timestamp, later: Timestamp) -> Duration {
    (later - earlier).to_std().unwrap_or(Duration::ZERO)
}

/// Serde helpers for `Duration` as milliseconds, readable in JSON plans.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as integer milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Deserialises from integer milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Formats a duration for people: `850ms`, `12.3s`, `5m02s`, `2h05m`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = d.as_secs() / 60;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::fixed();
        let t0 = clock.now();
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(elapsed_between(t0, clock.now()), Duration::from_secs(300));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(12_300)), "12.3s");
        assert_eq!(human(Duration::from_secs(302)), "5m02s");
        assert_eq!(human(Duration::from_secs(7500)), "2h05m");
    }
}
