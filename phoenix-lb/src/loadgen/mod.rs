//! A rate-bounded HTTP/1.1 load generator (feature `loadgen`).
//!
//! It sends `GET`s to one address at a bounded rate for a bounded time (or
//! request count, or until stopped), mixing kept-alive and fresh
//! connections, and reports sent / ok (2xx) / failed with failure reasons,
//! latency percentiles, and the releases that answered (by their
//! [`RELEASE_HEADER`](crate::RELEASE_HEADER)). Memory is bounded whatever
//! the run length.
//!
//! **What "failed" means.** A request fails when its client would report a
//! failure to its user. Like HTTP clients, the generator repeats a `GET`
//! once on a fresh connection when its connection closed or was reset
//! before any response arrived (see
//! [`LoadGenConfig::retry_before_response`]): for a kept-alive connection
//! that is the stale-connection race every pooled client handles; for any
//! connection it is what RFC 9110 §9.2.2 allows for idempotent requests. A
//! request whose answer had started arriving is never repeated. Retries
//! are counted separately ([`LoadReport::retried_stale`],
//! [`LoadReport::retried_fresh`]), so a test can hold them to zero too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), phoenix_lb::loadgen::LoadGenError> {
//! use std::time::Duration;
//! use phoenix_lb::loadgen::{LoadGen, LoadGenConfig};
//!
//! let report = LoadGen::run(LoadGenConfig {
//!     rate: 200,
//!     duration: Duration::from_secs(5),
//!     ..LoadGenConfig::new("127.0.0.1:8080".parse().unwrap())
//! })
//! .await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod config;
mod report;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::LoadGenConfig;
pub use report::{FailureKind, LatencySummary, LoadReport, MAX_RELEASES, MAX_SAMPLES};

use report::Tally;
use worker::{Mixer, Worker};

/// Why the load generator could not run or report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadGenError {
    /// A setting is out of range.
    #[error("load generator setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The field.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The request path is not an origin-form target.
    #[error("load generator path {path:?} is invalid")]
    InvalidPath {
        /// The refused path.
        path: String,
        /// What is wrong with it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The latency histogram could not be created.
    #[error("load generator: creating the latency histogram")]
    Histogram {
        /// The cause.
        #[source]
        source: hdrhistogram::CreationError,
    },
    /// Two workers' latency histograms could not be merged.
    #[error("load generator: merging latency histograms")]
    HistogramMerge {
        /// The cause.
        #[source]
        source: hdrhistogram::AdditionError,
    },
    /// [`LoadGen::start`] was called outside a tokio runtime.
    #[error("load generator: no tokio runtime to run on")]
    NoRuntime {
        /// The cause.
        #[source]
        source: tokio::runtime::TryCurrentError,
    },
    /// A worker task panicked or was aborted.
    #[error("load generator: a worker task failed")]
    Worker {
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Counters readable while a run goes on.
#[derive(Debug, Default)]
pub(crate) struct LiveCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
}

/// Counts so far, read while the generator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Requests sent.
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
    /// Repeated after their connection closed before any response.
    pub retried: u64,
}

/// A running load generator. Dropping it stops the workers (they finish
/// their request in flight, bounded by the request timeout).
#[derive(Debug)]
pub struct LoadGen {
    stop: CancellationToken,
    live: Arc<LiveCounters>,
    workers: Vec<JoinHandle<Tally>>,
    started: Instant,
}

impl LoadGen {
    /// Validates `config` and starts the workers on the current tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// A setting out of range, or no runtime.
    pub fn start(config: LoadGenConfig) -> Result<Self, LoadGenError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|source| LoadGenError::NoRuntime { source })?;
        let config = Arc::new(config);
        let live = Arc::new(LiveCounters::default());
        let stop = CancellationToken::new();
        let issued = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let end = started
            .checked_add(config.duration)
            .unwrap_or(started + Duration::from_secs(24 * 3600));
        let workers_n = config.concurrency;
        // Each worker sends every `period`; together they reach the rate.
        let period = Duration::from_secs_f64(f64::from(workers_n) / f64::from(config.rate));
        let mut workers = Vec::with_capacity(workers_n as usize);
        for i in 0..workers_n {
            let share = f64::from(i) / f64::from(workers_n);
            let worker = Worker::new(
                config.clone(),
                live.clone(),
                Tally::new()?,
                Mixer::new(config.fresh_ratio, share),
            );
            let first_tick = started + period.mul_f64(share);
            workers.push(runtime.spawn(worker.run(
                first_tick,
                period,
                end,
                stop.clone(),
                issued.clone(),
            )));
        }
        Ok(Self {
            stop,
            live,
            workers,
            started,
        })
    }

    /// Runs `config` to its end and reports.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start) and [`finish`](Self::finish).
    pub async fn run(config: LoadGenConfig) -> Result<LoadReport, LoadGenError> {
        Self::start(config)?.finish().await
    }

    /// The counts so far.
    pub fn progress(&self) -> Progress {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Progress {
            sent: get(&self.live.sent),
            ok: get(&self.live.ok),
            failed: get(&self.live.failed),
            retried: get(&self.live.retried),
        }
    }

    /// Asks the workers to stop after their request in flight.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits for the run to end (its duration, its request budget, or
    /// [`stop`](Self::stop)) and reports.
    ///
    /// # Errors
    ///
    /// A worker that panicked, or histograms that cannot be merged.
    pub async fn finish(mut self) -> Result<LoadReport, LoadGenError> {
        let mut total = Tally::new()?;
        for handle in std::mem::take(&mut self.workers) {
            let tally = handle
                .await
                .map_err(|source| LoadGenError::Worker { source })?;
            total.merge(tally)?;
        }
        Ok(total.into_report(self.started.elapsed()))
    }

    /// [`stop`](Self::stop), then [`finish`](Self::finish).
    ///
    /// # Errors
    ///
    /// As [`finish`](Self::finish).
    pub async fn stop_and_finish(self) -> Result<LoadReport, LoadGenError> {
        self.stop();
        self.finish().await
    }
}

impl Drop for LoadGen {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_a_runtime() {
        let config = LoadGenConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 9)));
        assert!(matches!(
            LoadGen::start(config),
            Err(LoadGenError::NoRuntime { .. })
        ));
    }
}
