//! One worker: at most one request in flight, on its kept-alive connection
//! or on a fresh one, paced by its own share of the rate.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::report::{FailureKind, Tally};
use super::{LiveCounters, LoadGenConfig};
use crate::http::{self, Answer, ClientConn, HttpError, ReqBody};

/// Body bytes accepted per answer.
const BODY_LIMIT: u64 = 16 * 1024 * 1024;

/// Spreads fresh connections evenly: every `1 / ratio`-th request.
#[derive(Debug, Clone)]
pub(crate) struct Mixer {
    ratio: f64,
    credit: f64,
}

impl Mixer {
    /// `offset` in `[0, 1)` staggers workers.
    pub(crate) fn new(ratio: f64, offset: f64) -> Self {
        Self {
            ratio,
            credit: offset,
        }
    }

    pub(crate) fn next_is_fresh(&mut self) -> bool {
        self.credit += self.ratio;
        if self.credit >= 1.0 - 1e-9 {
            self.credit -= 1.0;
            true
        } else {
            false
        }
    }
}

struct KeptAlive {
    sender: SendRequest<ReqBody>,
    conn: Pin<Box<ClientConn>>,
    used: u32,
    opened: Instant,
}

/// A failed attempt, and whether it ran on a reused connection.
struct Failure {
    error: HttpError,
    reused: bool,
}

pub(crate) struct Worker {
    config: Arc<LoadGenConfig>,
    live: Arc<LiveCounters>,
    tally: Tally,
    mixer: Mixer,
    kept: Option<KeptAlive>,
}

impl Worker {
    pub(crate) fn new(
        config: Arc<LoadGenConfig>,
        live: Arc<LiveCounters>,
        tally: Tally,
        mixer: Mixer,
    ) -> Self {
        Self {
            config,
            live,
            tally,
            mixer,
            kept: None,
        }
    }

    /// Sends one request per tick from `first_tick`, every `period`, until
    /// `end`, `stop`, or the shared request budget runs out.
    pub(crate) async fn run(
        mut self,
        first_tick: Instant,
        period: Duration,
        end: Instant,
        stop: CancellationToken,
        issued: Arc<AtomicU64>,
    ) -> Tally {
        let mut ticker = tokio::time::interval_at(first_tick, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(end) => break,
                _ = ticker.tick() => {}
            }
            if Instant::now() >= end {
                break;
            }
            if let Some(max) = self.config.max_requests {
                if issued.fetch_add(1, Ordering::Relaxed) >= max {
                    break;
                }
            }
            let fresh = self.mixer.next_is_fresh();
            self.request(fresh).await;
        }
        // Closes the kept-alive connection.
        self.kept = None;
        self.tally
    }

    async fn request(&mut self, fresh: bool) {
        let started = Instant::now();
        self.tally.sent += 1;
        self.live.sent.fetch_add(1, Ordering::Relaxed);
        let mut outcome = self.timed_attempt(fresh).await;
        if let Err(f) = &outcome {
            if self.config.retry_before_response && f.error.closed_before_response() {
                if f.reused {
                    self.tally.retried_stale += 1;
                } else {
                    self.tally.retried_fresh += 1;
                }
                self.live.retried.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %phoenix_core::error_chain(&f.error), reused = f.reused, "retrying a GET whose connection closed before any response");
                outcome = self.timed_attempt(true).await;
            }
        }
        if let Ok(answer) = &outcome {
            self.tally.body_bytes += answer.body_bytes;
        }
        match outcome {
            Ok(answer) if answer.status.is_success() => {
                self.tally
                    .record_ok(started.elapsed(), answer.release.as_ref());
                self.live.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(answer) => {
                let status = answer.status;
                self.tally
                    .record_failure(FailureKind::Status(status.as_u16()), || {
                        format!("GET {} answered {status}", self.config.path)
                    });
                self.live.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(f) => {
                let kind = classify(&f.error);
                self.tally
                    .record_failure(kind, || phoenix_core::error_chain(&f.error));
                self.live.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn timed_attempt(&mut self, fresh: bool) -> Result<Answer, Failure> {
        let limit = self.config.request_timeout;
        match tokio::time::timeout(limit, self.attempt(fresh)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // Whatever state the connection is in, it is not reusable.
                self.kept = None;
                Err(Failure {
                    error: HttpError::Timeout {
                        endpoint: self.config.target,
                        after: limit,
                    },
                    reused: !fresh,
                })
            }
        }
    }

    async fn attempt(&mut self, fresh: bool) -> Result<Answer, Failure> {
        let target = self.config.target;
        let fail = |reused| move |error| Failure { error, reused };
        if fresh {
            let request =
                http::get_request(target, &self.config.path, true).map_err(fail(false))?;
            let (mut sender, conn) = self.open().await.map_err(fail(false))?;
            return http::exchange(&mut sender, Box::pin(conn), request, target, BODY_LIMIT)
                .await
                .0
                .map_err(fail(false));
        }
        let request = http::get_request(target, &self.config.path, false).map_err(fail(false))?;
        let reused = self.reuse().await;
        let KeptAlive {
            mut sender,
            conn,
            used,
            opened,
        } = match self.kept.take() {
            Some(kept) if reused => kept,
            _ => {
                let (sender, conn) = self.open().await.map_err(fail(false))?;
                KeptAlive {
                    sender,
                    conn: Box::pin(conn),
                    used: 0,
                    opened: Instant::now(),
                }
            }
        };
        let (answer, conn) = http::exchange(&mut sender, conn, request, target, BODY_LIMIT).await;
        let used = used + 1;
        if let Some(conn) = conn {
            if used < self.config.keepalive_max_requests {
                self.kept = Some(KeptAlive {
                    sender,
                    conn,
                    used,
                    opened,
                });
            }
        }
        answer.map_err(fail(reused))
    }

    /// Whether the kept-alive connection can take this request; drops it
    /// when it is too old, used up or closed by the server.
    async fn reuse(&mut self) -> bool {
        let target = self.config.target;
        let Some(kept) = self.kept.as_mut() else {
            return false;
        };
        let fit = kept.used < self.config.keepalive_max_requests
            && kept.opened.elapsed() < self.config.keepalive_max_age;
        if fit
            && matches!(
                http::ready(&mut kept.sender, kept.conn.as_mut(), target).await,
                Ok(true)
            )
        {
            return true;
        }
        self.kept = None;
        false
    }

    async fn open(&mut self) -> Result<(SendRequest<ReqBody>, ClientConn), HttpError> {
        let target = self.config.target;
        let stream = http::connect(target, self.config.connect_timeout).await?;
        self.tally.connections_opened += 1;
        http::handshake(stream, target).await
    }
}

fn classify(error: &HttpError) -> FailureKind {
    match error {
        HttpError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            FailureKind::ConnectRefused
        }
        HttpError::Connect { .. } | HttpError::Handshake { .. } => FailureKind::Connect,
        HttpError::ConnectTimeout { .. } => FailureKind::ConnectTimeout,
        e @ HttpError::BeforeResponse { .. } if e.closed_before_response() => {
            FailureKind::ClosedBeforeResponse
        }
        HttpError::BeforeResponse { .. } => FailureKind::InvalidResponse,
        HttpError::Body { .. } => FailureKind::BodyInterrupted,
        HttpError::BodyTooLarge { .. } => FailureKind::BodyTooLarge,
        HttpError::Timeout { .. } => FailureKind::Timeout,
        HttpError::InvalidPath { .. } | HttpError::BuildRequest { .. } => FailureKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mixer_spreads_fresh_connections() {
        let count = |ratio: f64, offset: f64| {
            let mut m = Mixer::new(ratio, offset);
            (0..1000).filter(|_| m.next_is_fresh()).count()
        };
        assert_eq!(count(0.0, 0.0), 0);
        assert_eq!(count(1.0, 0.0), 1000);
        assert_eq!(count(0.25, 0.0), 250);
        assert!((249..=251).contains(&count(0.25, 0.6)));
        let mut m = Mixer::new(0.5, 0.0);
        let pattern: Vec<bool> = (0..4).map(|_| m.next_is_fresh()).collect();
        assert_eq!(pattern, [false, true, false, true]);
    }
}
