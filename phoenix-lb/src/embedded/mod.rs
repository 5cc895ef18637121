//! The embedded load balancer: a tokio TCP proxy on a loopback address.
//!
//! - **Member set.** An immutable snapshot behind an
//!   [`arc_swap::ArcSwap`]: each new connection reads it without a lock;
//!   `attach`, `detach` and `swap` build the next snapshot under a mutex
//!   that only they take, and store it in one atomic step. None of them
//!   waits for a check or for the network, so control time is a few
//!   microseconds.
//! - **Routing.** Least connections among healthy active members, ties
//!   broken round-robin; members not checked yet serve when no member is
//!   healthy; a failed connect is retried on the next candidate, so a
//!   member that just died costs the client nothing. Least connections
//!   because the proxy balances connections, whose lifetimes vary from one
//!   request to many (keep-alive) or to seconds (a slow request): open
//!   connections track load better than taking turns, a freshly attached
//!   pool fills at once, and a slow member gets less.
//! - **Health.** One task per member, started on attach and stopped when
//!   the member leaves: HTTP `GET` or TCP connect every interval; `Unknown`
//!   until `rise` consecutive passes, `Unhealthy` after `fall` consecutive
//!   failures.
//! - **Draining.** A detached member takes no new connections and leaves
//!   the set as soon as its open connections reach zero; at its drain
//!   deadline the balancer closes what remains and removes it.
//!   Re-attaching a draining member makes it active again.
//! - **Data path.** [`tokio::io::copy_bidirectional`] with `TCP_NODELAY` on
//!   both sides; counters are bumped per connection, never per byte.
//! - **Redispatch.** A member can die holding a connection's first request:
//!   a killed server's listen backlog still completes connects until the
//!   kernel tears it down. When the member closes or resets such a
//!   connection before a byte of answer and the request is a `GET`, `HEAD`
//!   or `OPTIONS` that fits the
//!   [redispatch buffer](EmbeddedBalancerBuilder::redispatch_buffer), its
//!   bytes go to another member and the client sees one answer; any other
//!   request is closed as before, never sent twice.
//! - **Lifetime.** Every task (accept loop, connections, checks, drains)
//!   stops on [`EmbeddedBalancer::shutdown`], on the builder's shutdown
//!   token, or when the balancer is dropped.

mod config;
mod drain;
mod error;
mod health;
mod members;
mod proxy;
mod replay;
mod routing;
mod sniff;
mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use phoenix_core::id::ServerId;
use phoenix_core::ports::{ErrorKind, LbCapabilities, LoadBalancer, Member, PortError, Target};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{EmbeddedBalancerBuilder, HealthCheck};
pub use error::EmbeddedError;
pub use stats::{BalancerStats, MemberStats};

use config::Settings;
use members::{Join, Leave, MemberSet};
use stats::BalancerCounters;

/// State shared by the handle and every task.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The current member set.
    pub(crate) set: ArcSwap<MemberSet>,
    /// Serialises the control path (never taken on the data path).
    control: Mutex<()>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) counters: BalancerCounters,
    /// Rotates routing tie-breaks.
    pub(crate) rr: AtomicUsize,
    /// Cancelled at shutdown; every task's token descends from it.
    pub(crate) root: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) local_addr: SocketAddr,
}

impl Shared {
    /// Applies attach-then-detach as one new snapshot and starts what
    /// follows from it (checks of new members, drains).
    fn apply(
        self: &Arc<Self>,
        operation: &str,
        (attach, join): (&[Target], Join),
        (detach, leave): (&[ServerId], Leave),
        drain: Duration,
    ) -> Result<(), PortError> {
        if self.root.is_cancelled() {
            return Err(PortError::permanent(
                operation,
                format!("the embedded balancer on {} is shut down", self.local_addr),
            ));
        }
        let _control = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        let change = self
            .set
            .load()
            .change(
                attach,
                join,
                detach,
                leave,
                drain,
                Instant::now(),
                &self.root,
            )
            .map_err(|e| {
                PortError::new(operation, ErrorKind::Conflict(e.to_string())).with_source(e)
            })?;
        // The data path must never find a member active in the snapshot
        // it reads yet refusing connections: that member would be skipped
        // and, with no other candidate, the client closed unserved. So a
        // member opens before the snapshot that makes it active is stored,
        // and closes only after the snapshot that drains it is; the
        // snapshot before (or after) does not offer it either way.
        let (opening, closing): (Vec<_>, Vec<_>) =
            change.accepting.into_iter().partition(|(_, open)| *open);
        for (entry, _) in opening {
            entry.accepting.store(true, Ordering::SeqCst);
        }
        self.set.store(Arc::new(change.set));
        for (entry, _) in closing {
            entry.accepting.store(false, Ordering::SeqCst);
        }
        // Under the lock, where `remove_drained` looks at them.
        for stopped in change.stop_drains {
            stopped.cancel();
        }
        for entry in change.started {
            self.tracker
                .spawn(health::run(entry, self.settings.clone()));
        }
        for (entry, cancel, deadline) in change.draining {
            self.tracker
                .spawn(drain::run(self.clone(), entry, cancel, deadline));
        }
        for (entry, cancel, deadline) in change.closing {
            self.tracker
                .spawn(drain::close_standby(self.clone(), entry, cancel, deadline));
        }
        Ok(())
    }

    /// Closes what a standby member still has open at its drain deadline,
    /// unless that was cancelled meanwhile (checked under the control
    /// lock, where re-attaching cancels it).
    pub(crate) fn cut_standby(
        &self,
        entry: &Arc<members::MemberEntry>,
        cancel: &CancellationToken,
    ) {
        {
            let _control = self.control.lock().unwrap_or_else(PoisonError::into_inner);
            if cancel.is_cancelled() {
                return;
            }
            cancel.cancel();
        }
        let open = entry.active.load(Ordering::SeqCst);
        tracing::info!(server = %entry.server, open, "standby drain deadline passed; closing the remaining connections");
        entry.cut_open_connections();
    }

    /// Removes a drained member, unless its drain was cancelled meanwhile
    /// (checked under the control lock, where re-attaching cancels it).
    pub(crate) fn remove_drained(
        &self,
        entry: &Arc<members::MemberEntry>,
        cancel: &CancellationToken,
        deadline_passed: bool,
    ) {
        {
            let _control = self.control.lock().unwrap_or_else(PoisonError::into_inner);
            if cancel.is_cancelled() {
                return;
            }
            if let Some(next) = self.set.load().without(entry) {
                self.set.store(Arc::new(next));
            }
            cancel.cancel();
        }
        let open = entry.active.load(Ordering::SeqCst);
        if deadline_passed && open > 0 {
            tracing::info!(server = %entry.server, open, "drain deadline passed; closing the remaining connections");
        } else {
            tracing::debug!(server = %entry.server, "member drained and removed");
        }
        // Stops its health checks and closes whatever is still open.
        entry.retired.cancel();
    }
}

/// The embedded load balancer. See the [module documentation](self).
///
/// Dropping it stops every task it started (without waiting); call
/// [`shutdown`](Self::shutdown) to wait for them.
#[derive(Debug)]
pub struct EmbeddedBalancer {
    shared: Arc<Shared>,
}

impl EmbeddedBalancer {
    /// A builder with the defaults described on [`EmbeddedBalancerBuilder`].
    pub fn builder() -> EmbeddedBalancerBuilder {
        EmbeddedBalancerBuilder::default()
    }

    async fn start(builder: EmbeddedBalancerBuilder) -> Result<Self, EmbeddedError> {
        let addr = builder.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| EmbeddedError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| EmbeddedError::LocalAddr { addr, source })?;
        let root = builder
            .shutdown
            .as_ref()
            .map_or_else(CancellationToken::new, CancellationToken::child_token);
        let shared = Arc::new(Shared {
            set: ArcSwap::from_pointee(MemberSet::default()),
            control: Mutex::new(()),
            settings: Arc::new(builder.settings),
            counters: BalancerCounters::default(),
            rr: AtomicUsize::new(0),
            root,
            tracker: TaskTracker::new(),
            local_addr,
        });
        shared
            .tracker
            .spawn(proxy::accept_loop(shared.clone(), listener));
        tracing::info!(listen = %local_addr, "embedded balancer started");
        Ok(Self { shared })
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The counters, read now.
    pub fn stats(&self) -> BalancerStats {
        let c = &self.shared.counters;
        let set = self.shared.set.load();
        BalancerStats {
            listen: self.shared.local_addr,
            accepted: c.accepted.load(Ordering::Relaxed),
            unserved: c.unserved.load(Ordering::Relaxed),
            redispatched: c.redispatched.load(Ordering::Relaxed),
            forced_closes: c.forced_closes.load(Ordering::Relaxed),
            members: set.slots.iter().map(members::Slot::stats).collect(),
        }
    }

    /// Detaches `servers` with the builder's default drain.
    ///
    /// # Errors
    ///
    /// As [`LoadBalancer::detach`].
    pub async fn detach_default(&self, servers: &[ServerId]) -> Result<(), PortError> {
        self.detach(servers, self.shared.settings.drain_default)
            .await
    }

    /// True once shut down (by [`shutdown`](Self::shutdown) or the
    /// builder's token).
    pub fn is_shut_down(&self) -> bool {
        self.shared.root.is_cancelled()
    }

    /// Stops accepting, closes every proxied connection, stops every check
    /// and drain, and waits until all of those tasks have ended. Further
    /// `attach`/`detach`/`swap` calls fail.
    pub async fn shutdown(&self) {
        self.shared.root.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        tracing::info!(listen = %self.shared.local_addr, "embedded balancer stopped");
    }
}

impl Drop for EmbeddedBalancer {
    fn drop(&mut self) {
        self.shared.root.cancel();
        self.shared.tracker.close();
    }
}

#[async_trait]
impl LoadBalancer for EmbeddedBalancer {
    fn capabilities(&self) -> LbCapabilities {
        LbCapabilities {
            atomic_swap: true,
            drain: true,
            reports_connections: true,
            max_batch: usize::MAX,
            reactivates_draining: true,
            stages: true,
            keeps_standby: true,
            // The longest time between two finished checks: the interval,
            // and a check that takes its whole timeout.
            check_interval: Some(
                self.shared.settings.check_interval + self.shared.settings.check_timeout,
            ),
        }
    }

    async fn traffic_stats(
        &self,
        servers: &[ServerId],
    ) -> Result<phoenix_core::ports::TrafficStats, PortError> {
        let stats = self.stats();
        let parts: Vec<phoenix_core::ports::TrafficStats> = servers
            .iter()
            .filter_map(|s| stats.member(s))
            .map(MemberStats::traffic)
            .collect();
        Ok(phoenix_core::ports::TrafficStats::combine(&parts))
    }

    async fn members(&self) -> Result<Vec<Member>, PortError> {
        Ok(self
            .shared
            .set
            .load()
            .slots
            .iter()
            .map(members::Slot::member)
            .collect())
    }

    async fn attach(&self, targets: &[Target]) -> Result<(), PortError> {
        self.shared.apply(
            "embedded lb: attach",
            (targets, Join::Active),
            (&[], Leave::Detach),
            Duration::ZERO,
        )
    }

    async fn detach(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        self.shared.apply(
            "embedded lb: detach",
            (&[], Join::Active),
            (servers, Leave::Detach),
            drain,
        )
    }

    async fn swap(
        &self,
        attach: &[Target],
        detach: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        self.shared.apply(
            "embedded lb: swap",
            (attach, Join::Active),
            (detach, Leave::Detach),
            drain,
        )
    }

    /// Adds the targets as standby members: checked, taking nothing.
    async fn stage(&self, targets: &[Target]) -> Result<(), PortError> {
        self.shared.apply(
            "embedded lb: stage",
            (targets, Join::Standby),
            (&[], Leave::Detach),
            Duration::ZERO,
        )
    }

    /// The members take no new connections, their open ones close by
    /// `drain`, and they stay in the set under their checks.
    async fn standby(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        self.shared.apply(
            "embedded lb: standby",
            (&[], Join::Active),
            (servers, Leave::Standby),
            drain,
        )
    }

    /// One snapshot: `attach` serve, `standby` stand by.
    async fn swap_standby(
        &self,
        attach: &[Target],
        standby: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        self.shared.apply(
            "embedded lb: swap to standby",
            (attach, Join::Active),
            (standby, Leave::Standby),
            drain,
        )
    }
}
