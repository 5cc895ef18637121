//! [`RackspaceClb`]: the `LoadBalancer` port on Rackspace Cloud Load
//! Balancers v1.0 (feature `rackspace`), sharing the authenticated
//! OpenStack session of `phoenix-providers`.
//!
//! - **Members** are the balancer's nodes (`GET …/nodes`): condition
//!   `ENABLED` → active, `DRAINING` → draining, `DISABLED` → disabled;
//!   status `ONLINE` → healthy, `OFFLINE` → unhealthy. Nodes carry an
//!   address and a port, not a server: the balancer remembers whom it
//!   attached, and resolves other addresses through the compute back end
//!   (one list call) when one is given, so that a restarted orchestrator
//!   still knows its members.
//! - **Attach** adds the missing nodes in batches (`POST …/nodes`) and
//!   re-enables a draining one; **detach** sets nodes `DRAINING` and
//!   removes them (`DELETE …/nodes?id=…`, ten at a time, the API's limit)
//!   once the drain period has passed, when `members` or a change next
//!   runs; a zero drain removes them at once. There is no atomic swap.
//! - While the balancer is `PENDING_UPDATE` it refuses changes with 422
//!   ("considered immutable"): the change waits, polling the balancer's
//!   status, and runs again (bounded by [`RackspaceClbBuilder::patience`]).
//!   Rate limits (413 `OverLimit` with a Retry-After) go through the shared
//!   retry policy.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use phoenix_lb::rackspace_clb::RackspaceClb;
//! use phoenix_providers::openstack::{CloudConfig, NovaCompute, Session};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::new(CloudConfig::from_env()?)?;
//! let nova = Arc::new(NovaCompute::builder(session.clone()).build());
//! let lb = RackspaceClb::builder(session, 271828)
//!     .servers(nova)
//!     .build();
//! # let _ = lb;
//! # Ok(())
//! # }
//! ```

mod api;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::id::ServerId;
use phoenix_core::labels::LabelSelector;
use phoenix_core::ports::{
    Compute, ErrorKind, LbCapabilities, LoadBalancer, Member, MemberHealth, MemberState, PortError,
    Target,
};
use phoenix_providers::openstack::busy::{change_when_ready, Patience};
use phoenix_providers::openstack::Session;
use tokio::time::Instant;

pub use api::Node;

/// The most node ids one bulk delete takes.
const DELETE_BATCH: usize = 10;

/// Builds a [`RackspaceClb`].
pub struct RackspaceClbBuilder {
    session: Session,
    lb: u64,
    servers: Option<Arc<dyn Compute>>,
    add_batch: usize,
    patience: Patience,
}

impl std::fmt::Debug for RackspaceClbBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RackspaceClbBuilder")
            .field("lb", &self.lb)
            .field("add_batch", &self.add_batch)
            .finish_non_exhaustive()
    }
}

impl RackspaceClbBuilder {
    /// Resolves node addresses this process did not attach through this
    /// compute back end (one list of its servers per unknown address set).
    pub fn servers(mut self, compute: Arc<dyn Compute>) -> Self {
        self.servers = Some(compute);
        self
    }

    /// Nodes per add call (default 10).
    pub fn add_batch(mut self, n: usize) -> Self {
        self.add_batch = n.max(1);
        self
    }

    /// How long a change waits for the balancer to leave `PENDING_UPDATE`,
    /// and how often it looks (default 5 minutes, every 2 s).
    pub fn patience(mut self, patience: Patience) -> Self {
        self.patience = patience;
        self
    }

    /// Builds the balancer.
    pub fn build(self) -> RackspaceClb {
        RackspaceClb {
            session: self.session,
            lb: self.lb,
            servers: self.servers,
            add_batch: self.add_batch,
            patience: self.patience,
            known: Mutex::new(BTreeMap::new()),
            unresolved: Mutex::new(BTreeMap::new()),
            draining: Mutex::new(BTreeMap::new()),
        }
    }
}

/// The `LoadBalancer` port on one Rackspace Cloud Load Balancer.
pub struct RackspaceClb {
    session: Session,
    lb: u64,
    servers: Option<Arc<dyn Compute>>,
    add_batch: usize,
    patience: Patience,
    /// Which server an address belongs to.
    known: Mutex<BTreeMap<SocketAddr, ServerId>>,
    /// Addresses the compute back end did not know, and when to ask again:
    /// a node of someone else's must not cost a list call every round.
    unresolved: Mutex<BTreeMap<SocketAddr, Instant>>,
    /// Draining nodes and when they may go.
    draining: Mutex<BTreeMap<u64, Instant>>,
}

impl std::fmt::Debug for RackspaceClb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RackspaceClb")
            .field("lb", &self.lb)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn endpoint(node: &Node) -> Option<SocketAddr> {
    node.address
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, node.port))
}

impl RackspaceClb {
    /// Starts building a balancer over a session for balancer `lb`.
    pub fn builder(session: Session, lb: u64) -> RackspaceClbBuilder {
        RackspaceClbBuilder {
            session,
            lb,
            servers: None,
            add_batch: 10,
            patience: Patience::default(),
        }
    }

    /// The balancer's id.
    pub fn id(&self) -> u64 {
        self.lb
    }

    /// Creates a balancer (`protocol` such as `HTTP`, listening on `port`)
    /// with a public virtual IP and optional metadata, and waits until it
    /// is `ACTIVE`. For tests, examples and tools: Phoenix manages nodes,
    /// not balancers.
    pub async fn create_balancer(
        session: &Session,
        name: &str,
        protocol: &str,
        port: u16,
        metadata: &[(&str, &str)],
    ) -> Result<u64, PortError> {
        let id = api::create(session, name, protocol, port, metadata).await?;
        let clb = Self::builder(session.clone(), id).build();
        clb.wait_active().await?;
        Ok(id)
    }

    /// Deletes a balancer (gone already counts as deleted).
    pub async fn delete_balancer(session: &Session, id: u64) -> Result<(), PortError> {
        api::delete(session, id).await
    }

    /// The balancer's status (`ACTIVE`, `PENDING_UPDATE`, `BUILD`, `ERROR`, …).
    pub async fn status(&self) -> Result<String, PortError> {
        api::status(&self.session, self.lb).await
    }

    /// The raw nodes.
    pub async fn nodes(&self) -> Result<Vec<Node>, PortError> {
        api::nodes(&self.session, self.lb).await
    }

    /// True once the balancer takes changes again; an error for states it
    /// will not leave by itself.
    async fn ready(&self) -> Result<bool, PortError> {
        match self.status().await?.as_str() {
            "ACTIVE" => Ok(true),
            "PENDING_UPDATE" | "BUILD" => Ok(false),
            other => Err(PortError::new(
                format!("cloud load balancers: waiting for balancer {}", self.lb),
                ErrorKind::Permanent(format!("the balancer is {other}")),
            )),
        }
    }

    /// Waits until the balancer is `ACTIVE` (bounded by the patience).
    pub async fn wait_active(&self) -> Result<(), PortError> {
        let deadline = Instant::now() + self.patience.wait;
        loop {
            if self.ready().await? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(PortError::temporary(
                    format!("cloud load balancers: waiting for balancer {}", self.lb),
                    format!("still updating after {:?}", self.patience.wait),
                ));
            }
            tokio::time::sleep(self.patience.poll).await;
        }
    }

    async fn change<T, C, CF>(&self, change: C) -> Result<T, PortError>
    where
        C: Fn() -> CF,
        CF: std::future::Future<Output = Result<T, PortError>>,
    {
        change_when_ready(self.session.retry_policy(), self.patience, change, || {
            self.ready()
        })
        .await
    }

    /// The server behind each node: remembered, or resolved through the
    /// compute back end, or a stand-in id naming the node.
    async fn resolve(&self, nodes: &[Node]) -> Result<Vec<Option<ServerId>>, PortError> {
        let now = Instant::now();
        let unknown = {
            let known = lock(&self.known);
            let unresolved = lock(&self.unresolved);
            nodes.iter().filter_map(endpoint).any(|e| {
                !known.contains_key(&e) && unresolved.get(&e).is_none_or(|again| *again <= now)
            })
        };
        if unknown {
            if let Some(compute) = &self.servers {
                let servers = compute.list(&LabelSelector::new()).await?;
                let by_ip: BTreeMap<IpAddr, ServerId> = servers
                    .into_iter()
                    .flat_map(|s| {
                        let id = s.id.clone();
                        s.addresses.into_iter().map(move |ip| (ip, id.clone()))
                    })
                    .collect();
                let mut known = lock(&self.known);
                let mut unresolved = lock(&self.unresolved);
                for n in nodes {
                    if let Some(e) = endpoint(n) {
                        match by_ip.get(&e.ip()) {
                            Some(id) => {
                                known.entry(e).or_insert_with(|| id.clone());
                                unresolved.remove(&e);
                            }
                            None => {
                                unresolved.insert(e, now + Duration::from_secs(60));
                            }
                        }
                    }
                }
            }
        }
        let known = lock(&self.known);
        Ok(nodes
            .iter()
            .map(|n| {
                endpoint(n)
                    .and_then(|e| known.get(&e).cloned())
                    .or_else(|| ServerId::new(format!("clb-node-{}", n.id)).ok())
            })
            .collect())
    }

    /// Removes draining nodes whose drain period has passed; returns the
    /// nodes left.
    async fn finish_drains(&self, nodes: Vec<Node>) -> Result<Vec<Node>, PortError> {
        let now = Instant::now();
        let due: Vec<u64> = {
            let mut draining = lock(&self.draining);
            // Nodes found draining without a record (another process, a
            // restart) get a default period from now.
            for n in &nodes {
                if n.condition == "DRAINING" {
                    draining
                        .entry(n.id)
                        .or_insert(now + Duration::from_secs(30));
                }
            }
            draining.retain(|id, _| {
                nodes
                    .iter()
                    .any(|n| n.id == *id && n.condition == "DRAINING")
            });
            draining
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(id, _)| *id)
                .collect()
        };
        if due.is_empty() {
            return Ok(nodes);
        }
        self.remove_nodes(&due).await?;
        lock(&self.draining).retain(|id, _| !due.contains(id));
        Ok(nodes.into_iter().filter(|n| !due.contains(&n.id)).collect())
    }

    async fn remove_nodes(&self, ids: &[u64]) -> Result<(), PortError> {
        for chunk in ids.chunks(DELETE_BATCH) {
            self.change(|| async {
                // Only what still exists: a repeated call after a lost
                // answer must not name removed nodes.
                let present: Vec<u64> = api::nodes(&self.session, self.lb)
                    .await?
                    .into_iter()
                    .map(|n| n.id)
                    .filter(|id| chunk.contains(id))
                    .collect();
                if present.is_empty() {
                    return Ok(());
                }
                api::remove(&self.session, self.lb, &present).await
            })
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl LoadBalancer for RackspaceClb {
    fn capabilities(&self) -> LbCapabilities {
        LbCapabilities {
            atomic_swap: false,
            drain: true,
            reports_connections: false,
            max_batch: DELETE_BATCH,
        }
    }

    async fn members(&self) -> Result<Vec<Member>, PortError> {
        let nodes = self.finish_drains(self.nodes().await?).await?;
        let ids = self.resolve(&nodes).await?;
        Ok(nodes
            .iter()
            .zip(ids)
            .filter_map(|(n, server)| {
                Some(Member {
                    server: server?,
                    endpoint: endpoint(n)?,
                    health: match n.status.as_str() {
                        "ONLINE" => MemberHealth::Healthy,
                        "OFFLINE" => MemberHealth::Unhealthy,
                        _ => MemberHealth::Unknown,
                    },
                    state: match n.condition.as_str() {
                        "DRAINING" => MemberState::Draining,
                        "DISABLED" => MemberState::Disabled,
                        _ => MemberState::Active,
                    },
                    connections: None,
                })
            })
            .collect())
    }

    async fn attach(&self, targets: &[Target]) -> Result<(), PortError> {
        {
            let mut known = lock(&self.known);
            for t in targets {
                known.insert(t.endpoint, t.server.clone());
            }
        }
        self.change(|| async {
            let nodes = api::nodes(&self.session, self.lb).await?;
            // Back from draining: a rollback re-attaches a pool that is
            // still leaving.
            for n in &nodes {
                let wanted = targets.iter().any(|t| Some(t.endpoint) == endpoint(n));
                if wanted && n.condition != "ENABLED" {
                    api::set_condition(&self.session, self.lb, n.id, "ENABLED").await?;
                    lock(&self.draining).remove(&n.id);
                }
            }
            let missing: Vec<(String, u16)> = targets
                .iter()
                .filter(|t| !nodes.iter().any(|n| endpoint(n) == Some(t.endpoint)))
                .map(|t| (t.endpoint.ip().to_string(), t.endpoint.port()))
                .collect();
            for chunk in missing.chunks(self.add_batch) {
                api::add(&self.session, self.lb, chunk).await?;
            }
            Ok(())
        })
        .await
    }

    async fn detach(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        let nodes = self.finish_drains(self.nodes().await?).await?;
        let ids = self.resolve(&nodes).await?;
        let leaving: Vec<&Node> = nodes
            .iter()
            .zip(&ids)
            .filter(|(_, id)| id.as_ref().is_some_and(|id| servers.contains(id)))
            .map(|(n, _)| n)
            .collect();
        if leaving.is_empty() {
            return Ok(());
        }
        if drain.is_zero() {
            let ids: Vec<u64> = leaving.iter().map(|n| n.id).collect();
            return self.remove_nodes(&ids).await;
        }
        let until = Instant::now() + drain;
        for node in leaving {
            if node.condition == "DRAINING" {
                continue;
            }
            self.change(|| api::set_condition(&self.session, self.lb, node.id, "DRAINING"))
                .await?;
            lock(&self.draining).insert(node.id, until);
        }
        Ok(())
    }
}
