//! What a run saw: counts, failure reasons, latencies, releases. Memory is
//! bounded: a fixed-size latency histogram per worker, at most
//! [`MAX_RELEASES`] distinct releases and [`MAX_SAMPLES`] failure messages.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use hyper::header::HeaderValue;

use super::LoadGenError;

/// Distinct release values tallied; more are counted in
/// [`LoadReport::releases_overflow`].
pub const MAX_RELEASES: usize = 64;
/// Failure messages kept as samples.
pub const MAX_SAMPLES: usize = 16;
/// The slowest latency the histogram resolves (one minute); slower ones
/// are recorded as one minute.
const HISTOGRAM_MAX_MICROS: u64 = 60_000_000;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The connection was refused.
    ConnectRefused,
    /// The connection was not established in time.
    ConnectTimeout,
    /// Connecting failed otherwise.
    Connect,
    /// The connection closed or was reset before any response arrived
    /// (after the retry, when retries are on).
    ClosedBeforeResponse,
    /// The response head arrived, then the body failed.
    BodyInterrupted,
    /// The body exceeded the limit.
    BodyTooLarge,
    /// The answer was not valid HTTP/1.x.
    InvalidResponse,
    /// No complete answer within the request timeout.
    Timeout,
    /// A complete answer with a status other than 2xx.
    Status(u16),
    /// The request could not be built.
    Internal,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnectRefused => f.write_str("connection refused"),
            Self::ConnectTimeout => f.write_str("connect timeout"),
            Self::Connect => f.write_str("connect failed"),
            Self::ClosedBeforeResponse => f.write_str("closed before response"),
            Self::BodyInterrupted => f.write_str("body interrupted"),
            Self::BodyTooLarge => f.write_str("body too large"),
            Self::InvalidResponse => f.write_str("invalid response"),
            Self::Timeout => f.write_str("timeout"),
            Self::Status(code) => write!(f, "HTTP {code}"),
            Self::Internal => f.write_str("request not built"),
        }
    }
}

/// Latencies of the successful requests (a retried request's includes
/// its retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    /// Requests measured.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LoadReport {
    /// From start to the last worker stopping.
    pub elapsed: Duration,
    /// Requests sent (a retried request counts once).
    pub sent: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests that failed; `ok + failed == sent`.
    pub failed: u64,
    /// Requests repeated because a reused kept-alive connection closed
    /// before any response arrived.
    pub retried_stale: u64,
    /// Requests repeated because a fresh connection closed before any
    /// response arrived.
    pub retried_fresh: u64,
    /// TCP connections opened.
    pub connections_opened: u64,
    /// Response body bytes received.
    pub body_bytes: u64,
    /// Failures by reason.
    pub failures: BTreeMap<FailureKind, u64>,
    /// The first few failure messages, for diagnosis.
    pub failure_samples: Vec<String>,
    /// Latencies of successful requests.
    pub latency: LatencySummary,
    /// Successful requests by the [`RELEASE_HEADER`](crate::RELEASE_HEADER)
    /// value that answered them.
    pub releases: BTreeMap<String, u64>,
    /// Successful requests answered without that header (or with an
    /// unreadable one).
    pub unlabelled: u64,
    /// Successful requests from releases beyond the first
    /// [`MAX_RELEASES`].
    pub releases_overflow: u64,
}

impl LoadReport {
    /// All retries.
    pub fn retried(&self) -> u64 {
        self.retried_stale + self.retried_fresh
    }

    /// Requests sent per second.
    pub fn achieved_rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        }
    }

    /// Successful requests answered by `release`.
    pub fn served_by(&self, release: &str) -> u64 {
        self.releases.get(release).copied().unwrap_or(0)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} in {:.2?} ({:.1} req/s): ok {}, failed {}, retried {} (stale keep-alive {}, fresh {}), {} connections",
            self.sent,
            self.elapsed,
            self.achieved_rate(),
            self.ok,
            self.failed,
            self.retried(),
            self.retried_stale,
            self.retried_fresh,
            self.connections_opened,
        )?;
        let l = &self.latency;
        write!(
            f,
            "; latency p50 {:?} p90 {:?} p99 {:?} max {:?}",
            l.p50, l.p90, l.p99, l.max
        )?;
        if !self.releases.is_empty() || self.unlabelled > 0 {
            f.write_str("; releases")?;
            for (release, n) in &self.releases {
                write!(f, " {release}={n}")?;
            }
            if self.unlabelled > 0 {
                write!(f, " (none)={}", self.unlabelled)?;
            }
        }
        if !self.failures.is_empty() {
            f.write_str("; failures")?;
            for (kind, n) in &self.failures {
                write!(f, " [{kind}]={n}")?;
            }
        }
        Ok(())
    }
}

/// One worker's running totals; merged at the end.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) sent: u64,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) retried_stale: u64,
    pub(crate) retried_fresh: u64,
    pub(crate) connections_opened: u64,
    pub(crate) body_bytes: u64,
    failures: BTreeMap<FailureKind, u64>,
    samples: Vec<String>,
    latency: Histogram<u64>,
    releases: BTreeMap<String, u64>,
    unlabelled: u64,
    releases_overflow: u64,
}

impl Tally {
    pub(crate) fn new() -> Result<Self, LoadGenError> {
        let latency = Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)
            .map_err(|source| LoadGenError::Histogram { source })?;
        Ok(Self {
            sent: 0,
            ok: 0,
            failed: 0,
            retried_stale: 0,
            retried_fresh: 0,
            connections_opened: 0,
            body_bytes: 0,
            failures: BTreeMap::new(),
            samples: Vec::new(),
            latency,
            releases: BTreeMap::new(),
            unlabelled: 0,
            releases_overflow: 0,
        })
    }

    pub(crate) fn record_ok(&mut self, latency: Duration, release: Option<&HeaderValue>) {
        self.ok += 1;
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency
            .saturating_record(micros.clamp(1, HISTOGRAM_MAX_MICROS));
        match release.and_then(|v| v.to_str().ok()) {
            None => self.unlabelled += 1,
            Some(r) => {
                if let Some(n) = self.releases.get_mut(r) {
                    *n += 1;
                } else if self.releases.len() < MAX_RELEASES {
                    self.releases.insert(r.to_owned(), 1);
                } else {
                    self.releases_overflow += 1;
                }
            }
        }
    }

    pub(crate) fn record_failure(&mut self, kind: FailureKind, message: impl FnOnce() -> String) {
        self.failed += 1;
        *self.failures.entry(kind).or_insert(0) += 1;
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(message());
        }
    }

    pub(crate) fn merge(&mut self, other: Tally) -> Result<(), LoadGenError> {
        self.sent += other.sent;
        self.ok += other.ok;
        self.failed += other.failed;
        self.retried_stale += other.retried_stale;
        self.retried_fresh += other.retried_fresh;
        self.connections_opened += other.connections_opened;
        self.body_bytes += other.body_bytes;
        for (kind, n) in other.failures {
            *self.failures.entry(kind).or_insert(0) += n;
        }
        let room = MAX_SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
        self.latency
            .add(&other.latency)
            .map_err(|source| LoadGenError::HistogramMerge { source })?;
        for (release, n) in other.releases {
            if let Some(m) = self.releases.get_mut(&release) {
                *m += n;
            } else if self.releases.len() < MAX_RELEASES {
                self.releases.insert(release, n);
            } else {
                self.releases_overflow += n;
            }
        }
        self.unlabelled += other.unlabelled;
        self.releases_overflow += other.releases_overflow;
        Ok(())
    }

    pub(crate) fn into_report(self, elapsed: Duration) -> LoadReport {
        let h = &self.latency;
        let at = |q: f64| {
            if h.is_empty() {
                Duration::ZERO
            } else {
                Duration::from_micros(h.value_at_quantile(q))
            }
        };
        let latency = LatencySummary {
            count: h.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: if h.is_empty() {
                Duration::ZERO
            } else {
                Duration::from_micros(h.max())
            },
        };
        LoadReport {
            elapsed,
            sent: self.sent,
            ok: self.ok,
            failed: self.failed,
            retried_stale: self.retried_stale,
            retried_fresh: self.retried_fresh,
            connections_opened: self.connections_opened,
            body_bytes: self.body_bytes,
            failures: self.failures,
            failure_samples: self.samples,
            latency,
            releases: self.releases,
            unlabelled: self.unlabelled,
            releases_overflow: self.releases_overflow,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn tallies_merge_and_stay_bounded() {
        let mut a = Tally::new().unwrap();
        let mut b = Tally::new().unwrap();
        let v1 = HeaderValue::from_static("v1");
        for ms in 1..=100u64 {
            a.sent += 1;
            a.record_ok(Duration::from_millis(ms), Some(&v1));
        }
        b.sent += 2;
        b.record_ok(Duration::from_secs(3600), None);
        b.record_failure(FailureKind::Status(503), || "503".into());
        for i in 0..(MAX_RELEASES + 5) {
            let v = HeaderValue::from_str(&format!("r{i}")).unwrap();
            b.record_ok(Duration::from_millis(1), Some(&v));
        }
        for _ in 0..(MAX_SAMPLES * 2) {
            b.record_failure(FailureKind::Timeout, || "slow".into());
        }
        a.merge(b).unwrap();
        let r = a.into_report(Duration::from_secs(1));
        assert_eq!(r.sent, 102);
        assert_eq!(r.served_by("v1"), 100);
        assert_eq!(r.unlabelled, 1);
        assert_eq!(r.releases.len(), MAX_RELEASES);
        assert_eq!(r.releases_overflow, 6, "v1 took one slot");
        assert_eq!(r.failure_samples.len(), MAX_SAMPLES);
        assert_eq!(r.failures[&FailureKind::Status(503)], 1);
        assert_eq!(r.failures[&FailureKind::Timeout], (MAX_SAMPLES * 2) as u64);
        // 70 answers of 1 ms, then 2..=100 ms, then one clamped to a minute:
        // the 85th of 170 is 16 ms.
        assert_eq!(r.latency.count, 170);
        let p50 = r.latency.p50;
        assert!(
            p50 >= Duration::from_millis(15) && p50 <= Duration::from_millis(17),
            "{p50:?}"
        );
        assert!(
            r.latency.max >= Duration::from_secs(59),
            "clamped to a minute"
        );
        assert!(r.to_string().contains("v1=100"));
    }
}
