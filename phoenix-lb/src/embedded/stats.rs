//! Counters: atomics bumped on the data path (once per connection or per
//! check, never per byte) and the snapshots [`super::EmbeddedBalancer::stats`]
//! returns.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use phoenix_core::id::ServerId;
use std::time::Duration;

use phoenix_core::ports::{MemberHealth, MemberState, TrafficStats};

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Per-member counters, kept for as long as the member is attached.
#[derive(Debug, Default)]
pub(crate) struct MemberCounters {
    pub(crate) connections_total: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) connection_errors: AtomicU64,
    pub(crate) unanswered: AtomicU64,
    pub(crate) forced_closes: AtomicU64,
    pub(crate) checks_passed: AtomicU64,
    pub(crate) checks_failed: AtomicU64,
    pub(crate) responses: AtomicU64,
    pub(crate) responses_5xx: AtomicU64,
    pub(crate) latency_us_total: AtomicU64,
    pub(crate) latency_samples: AtomicU64,
}

/// Balancer-wide counters.
#[derive(Debug, Default)]
pub(crate) struct BalancerCounters {
    pub(crate) accepted: AtomicU64,
    pub(crate) unserved: AtomicU64,
    pub(crate) redispatched: AtomicU64,
    pub(crate) forced_closes: AtomicU64,
}

/// One member's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberStats {
    /// The server.
    pub server: ServerId,
    /// Where its traffic goes.
    pub endpoint: SocketAddr,
    /// Active or draining.
    pub state: MemberState,
    /// As the health checks see it.
    pub health: MemberHealth,
    /// Connections proxied to it since it was attached.
    pub connections_total: u64,
    /// Connections open now (including ones being connected).
    pub connections_active: u64,
    /// Bytes from clients to the member.
    pub bytes_in: u64,
    /// Bytes from the member to clients.
    pub bytes_out: u64,
    /// Connection attempts to the member that failed (refused, timed out);
    /// each was retried on another member while attempts remained.
    pub connect_failures: u64,
    /// Proxied connections that ended with an I/O error (a reset, say),
    /// other than the [`unanswered`](Self::unanswered) ones.
    pub connection_errors: u64,
    /// Connections the member closed or reset after a client's request
    /// went in and before a byte of answer came out: it died holding the
    /// request. Those whose request could be sent again were
    /// [redispatched](BalancerStats::redispatched).
    pub unanswered: u64,
    /// Connections closed by the balancer: still open when the member's
    /// drain timeout passed, or at shutdown.
    pub forced_closes: u64,
    /// Health checks passed.
    pub checks_passed: u64,
    /// Health checks failed.
    pub checks_failed: u64,
    /// Why the last failed health check failed, until a check passes.
    pub last_check_error: Option<String>,
    /// HTTP responses seen from the member (a status line starting a
    /// read; see the `sniff` module).
    pub http_responses: u64,
    /// Of those, 5xx answers.
    pub http_5xx: u64,
    /// Mean time from a request's first bytes to its response's, over the
    /// responses seen.
    pub mean_latency: Option<Duration>,
}

impl MemberStats {
    /// The member's traffic as a canary gate reads it: HTTP responses
    /// where the member speaks HTTP (else connections), failed ones being
    /// 5xx answers, connection errors and failed connects.
    pub fn traffic(&self) -> TrafficStats {
        let failed_io = self.connect_failures + self.connection_errors;
        let answered = if self.http_responses > 0 {
            self.http_responses
        } else {
            self.connections_total
        };
        TrafficStats {
            requests: answered + self.connect_failures + self.unanswered,
            errors: self.http_5xx + failed_io,
            mean_latency: self.mean_latency,
            p99_latency: None,
        }
    }
}

/// The balancer's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BalancerStats {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Client connections accepted.
    pub accepted: u64,
    /// Client connections closed unserved: no member was eligible, or every
    /// connection attempt failed.
    pub unserved: u64,
    /// Client connections whose request a member dropped unanswered, sent
    /// again to another member: the request was a `GET`, `HEAD` or
    /// `OPTIONS` and the first on its connection, so nothing of it had
    /// reached the client yet (see [`MemberStats::unanswered`]).
    pub redispatched: u64,
    /// Connections closed by the balancer (drain timeouts, shutdown),
    /// including those of members since removed.
    pub forced_closes: u64,
    /// The current members, in attach order.
    pub members: Vec<MemberStats>,
}

impl BalancerStats {
    /// The counters of one member, if it is attached.
    pub fn member(&self, server: &ServerId) -> Option<&MemberStats> {
        self.members.iter().find(|m| &m.server == server)
    }
}
