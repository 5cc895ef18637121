//! The shared retry policy: bounded, jittered exponential backoff that
//! honours Retry-After, sleeping through `tokio::time` so that paused-clock
//! tests and simulations run it instantly. Built on `backon`.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::{Deserialize, Serialize};

use crate::ports::{PortError, RetryClass, StoreError};

/// Errors that say whether retrying may help.
pub trait Classify {
    /// How to retry this error.
    fn retry_class(&self) -> RetryClass;
}

impl Classify for PortError {
    fn retry_class(&self) -> RetryClass {
        PortError::retry_class(self)
    }
}

impl Classify for crate::records::RecordError {
    fn retry_class(&self) -> RetryClass {
        match self {
            crate::records::RecordError::Store(e) => e.retry_class(),
            _ => RetryClass::Permanent,
        }
    }
}

impl Classify for StoreError {
    fn retry_class(&self) -> RetryClass {
        if self.is_retryable() {
            RetryClass::Temporary
        } else {
            RetryClass::Permanent
        }
    }
}

/// Bounded, jittered exponential backoff honouring Retry-After.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// First delay.
    #[serde(with = "crate::time::duration_ms")]
    pub initial_delay: Duration,
    /// Largest delay between attempts (backoff and Retry-After alike).
    #[serde(with = "crate::time::duration_ms")]
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// Seed for the jitter, for reproducible simulations; random when unset.
    pub jitter_seed: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retries: 6,
            jitter_seed: None,
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_jitter();
        match self.jitter_seed {
            Some(seed) => builder.with_jitter_seed(seed),
            None => builder,
        }
    }

    /// The wait before retry number `attempt` (from 1) after `error`, for
    /// callers that loop themselves (to read afresh before each attempt):
    /// the same bounded, jittered exponential backoff, and a throttled
    /// error's Retry-After when longer (capped at `max_delay`).
    pub fn delay_after<E: Classify>(&self, attempt: usize, error: &E) -> Duration {
        use rand::{Rng, SeedableRng};
        let exp = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(30);
        let base = self
            .initial_delay
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.max_delay);
        let mut rng = match self.jitter_seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed ^ attempt as u64),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        let jittered = base + base.mul_f64(rng.random_range(0.0..1.0));
        let delay = jittered.min(self.max_delay);
        match error.retry_class() {
            RetryClass::Throttled(Some(after)) => delay.max(after.min(self.max_delay)),
            _ => delay,
        }
    }

    /// Runs `operation`, retrying retryable errors. A throttled error's
    /// Retry-After replaces the backoff delay when longer (capped at
    /// `max_delay`). Returns the last error once retries are exhausted.
    pub async fn run<T, E, F, Fut>(&self, operation: F) -> Result<T, E>
    where
        E: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_sleeping(tokio::time::sleep, operation).await
    }

    /// [`Self::run`], waiting between attempts with `sleep` (which must
    /// wait through `tokio::time`): for callers that keep a lease alive
    /// while they back off.
    pub async fn run_sleeping<T, E, F, Fut, S, SF>(&self, sleep: S, operation: F) -> Result<T, E>
    where
        E: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        S: Fn(Duration) -> SF + 'static,
        SF: Future<Output = ()>,
    {
        let max_delay = self.max_delay;
        operation
            .retry(self.backoff())
            .sleep(sleep)
            .when(|e: &E| e.retry_class() != RetryClass::Permanent)
            .adjust(move |e: &E, delay| match (e.retry_class(), delay) {
                (RetryClass::Throttled(Some(after)), Some(d)) => Some(d.max(after.min(max_delay))),
                (_, d) => d,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_temporary_then_succeeds() {
        let calls = AtomicUsize::new(0);
        let policy = RetryPolicy::default();
        let out: Result<u32, PortError> = policy
            .run(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(PortError::temporary("t", "503"))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_is_not_retried_and_retries_are_bounded() {
        let calls = AtomicUsize::new(0);
        let policy = RetryPolicy::default();
        let out: Result<(), PortError> = policy
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(PortError::permanent("t", "400"))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicUsize::new(0);
        let out: Result<(), PortError> = policy
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(PortError::temporary("t", "503"))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1 + policy.max_retries);
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(10),
            ..RetryPolicy::default()
        };
        let calls = AtomicUsize::new(0);
        let start = tokio::time::Instant::now();
        let out: Result<(), PortError> = policy
            .run(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(PortError::throttled("t", Some(Duration::from_secs(5))))
                } else {
                    Ok(())
                }
            })
            .await;
        out.unwrap();
        assert!(
            start.elapsed() >= Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(start.elapsed() < Duration::from_secs(6));
    }
}
