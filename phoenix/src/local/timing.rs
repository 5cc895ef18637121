use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use phoenix_core::id::ServerId;
use phoenix_core::ports::{LbCapabilities, LoadBalancer, Member, PortError, Target, TrafficStats};

/// One balancer call that changed membership.
#[derive(Debug, Clone)]
pub struct BalancerCall {
    /// `attach`, `detach` or `swap`.
    pub kind: &'static str,
    /// Members it changed.
    pub count: usize,
    /// When it started.
    pub at: Instant,
    /// How long it took: the control time of a cutover.
    pub took: Duration,
}

/// Wraps a balancer and records how long each membership change takes.
#[derive(Clone)]
pub struct TimedBalancer {
    inner: Arc<dyn LoadBalancer>,
    calls: Arc<Mutex<Vec<BalancerCall>>>,
}

impl std::fmt::Debug for TimedBalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedBalancer").finish_non_exhaustive()
    }
}

impl TimedBalancer {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn LoadBalancer>) -> Self {
        Self {
            inner,
            calls: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The calls made since `since`.
    pub fn calls_since(&self, since: Instant) -> Vec<BalancerCall> {
        self.calls
            .lock()
            .map(|c| c.iter().filter(|c| c.at >= since).cloned().collect())
            .unwrap_or_default()
    }

    fn record(&self, kind: &'static str, count: usize, at: Instant) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(BalancerCall {
                kind,
                count,
                at,
                took: at.elapsed(),
            });
        }
    }
}

#[async_trait]
impl LoadBalancer for TimedBalancer {
    fn capabilities(&self) -> LbCapabilities {
        self.inner.capabilities()
    }

    async fn members(&self) -> Result<Vec<Member>, PortError> {
        self.inner.members().await
    }

    async fn attach(&self, targets: &[Target]) -> Result<(), PortError> {
        let at = Instant::now();
        let r = self.inner.attach(targets).await;
        self.record("attach", targets.len(), at);
        r
    }

    async fn detach(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        let at = Instant::now();
        let r = self.inner.detach(servers, drain).await;
        self.record("detach", servers.len(), at);
        r
    }

    async fn stage(&self, targets: &[Target]) -> Result<(), PortError> {
        let at = Instant::now();
        let r = self.inner.stage(targets).await;
        self.record("stage", targets.len(), at);
        r
    }

    async fn swap(
        &self,
        attach: &[Target],
        detach: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        let at = Instant::now();
        let r = self.inner.swap(attach, detach, drain).await;
        self.record("swap", attach.len() + detach.len(), at);
        r
    }

    async fn standby(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        let at = Instant::now();
        let r = self.inner.standby(servers, drain).await;
        self.record("standby", servers.len(), at);
        r
    }

    async fn traffic_stats(&self, servers: &[ServerId]) -> Result<TrafficStats, PortError> {
        self.inner.traffic_stats(servers).await
    }

    async fn set_weight(&self, servers: &[ServerId], percent: u8) -> Result<(), PortError> {
        let at = Instant::now();
        let r = self.inner.set_weight(servers, percent).await;
        self.record("set_weight", servers.len(), at);
        r
    }

    async fn swap_standby(
        &self,
        attach: &[Target],
        standby: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        let at = Instant::now();
        let r = self.inner.swap_standby(attach, standby, drain).await;
        self.record("swap_standby", attach.len() + standby.len(), at);
        r
    }
}
