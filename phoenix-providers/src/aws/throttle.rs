//! The client-side request bucket shared by every call a client makes in
//! one region, modelled on EC2's own request token bucket (non-mutating
//! actions: 100 requests of burst, refilled at 20 per second), so that a
//! large rollout spends its budget evenly instead of meeting
//! `RequestLimitExceeded`. When AWS throttles anyway, the bucket empties,
//! so that every task sharing it slows down, not just the one that was
//! told.
//!
//! It keeps time through `tokio::time` (paused-clock tests run it
//! instantly). `governor` was weighed: its waits use real time and its
//! clock abstraction would take as much code as this bucket.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `capacity` requests of burst, refilled at `per_second`.
#[derive(Debug)]
pub struct RequestBucket {
    capacity: f64,
    per_second: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    at: Option<Instant>,
}

impl RequestBucket {
    /// A full bucket. A `per_second` of zero or less means no limit.
    pub fn new(capacity: u32, per_second: f64) -> Self {
        Self {
            capacity: f64::from(capacity.max(1)),
            per_second,
            state: Mutex::new(State {
                tokens: f64::from(capacity.max(1)),
                at: None,
            }),
        }
    }

    /// EC2's documented default for non-mutating actions.
    pub fn ec2_default() -> Self {
        Self::new(100, 20.0)
    }

    fn refill(&self, s: &mut State, now: Instant) {
        if let Some(at) = s.at {
            let earned = now.saturating_duration_since(at).as_secs_f64() * self.per_second;
            s.tokens = (s.tokens + earned).min(self.capacity);
        }
        s.at = Some(now);
    }

    /// Takes one token, waiting (through `tokio::time`) until one is there.
    pub async fn acquire(&self) {
        if self.per_second <= 0.0 {
            return;
        }
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                self.refill(&mut s, Instant::now());
                if s.tokens >= 1.0 {
                    s.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.tokens) / self.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// AWS throttled a call: every caller sharing the bucket backs off.
    pub fn throttled(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut s, Instant::now());
        s.tokens = s.tokens.min(0.0);
    }

    /// Tokens left now (for tests and figures).
    pub fn available(&self) -> f64 {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refill(&mut s, Instant::now());
        s.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_paces() {
        let b = RequestBucket::new(10, 5.0);
        let start = Instant::now();
        for _ in 0..10 {
            b.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..5 {
            b.acquire().await;
        }
        let e = start.elapsed();
        assert!(
            e >= Duration::from_millis(990) && e <= Duration::from_millis(1010),
            "{e:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_empties_it() {
        let b = RequestBucket::new(10, 10.0);
        b.throttled();
        let start = Instant::now();
        b.acquire().await;
        assert!(start.elapsed() >= Duration::from_millis(99));
    }
}
