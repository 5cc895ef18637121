//! [`RackspaceClb`]: the `LoadBalancer` port on Rackspace Cloud Load
//! Balancers v1.0 (feature `rackspace`), sharing the authenticated
//! OpenStack session of `phoenix-providers`.
//!
//! - **Members** are the balancer's nodes (`GET …/nodes`): condition
//!   `ENABLED` → active, `DRAINING` → draining, `DISABLED` → disabled;
//!   status `ONLINE` → healthy, `OFFLINE` → unhealthy. A node whose
//!   address is not an IP address (the API takes host names) or whose
//!   condition is unknown fails the read with `BadResponse`: leaving it
//!   out could hide a serving server.
//! - **Which server a node is.** Nodes carry an address and a port, not a
//!   server. The balancer remembers, by *node id*, whom it attached to
//!   each node (a node's address never changes, and a new server at a
//!   reused address gets a new node once the old one is removed), and
//!   forgets a node once a listing no longer has it. It resolves other
//!   nodes through the compute back end (one list call) when one is
//!   given, so that a restarted orchestrator still knows its members, and
//!   looks them up again after [`RackspaceClbBuilder::recheck`], as the
//!   address may pass to another server while the node stays. A node it
//!   cannot resolve is reported as `clb-node-<id>`, never as a guess.
//! - **Attach** adds the missing nodes in batches (`POST …/nodes`) and
//!   re-enables one that is draining or disabled (a rollback re-attaches a
//!   pool whose detach stopped part-way); the node at a target's endpoint
//!   is that target's server from then on. **Detach** sets nodes
//!   `DRAINING` and removes them (`DELETE …/nodes?id=…`, ten at a time,
//!   the API's limit) once the drain period has passed, when `members` or
//!   a change next runs; a zero drain removes them at once, and a second
//!   detach may shorten a drain but not lengthen it. There is no atomic
//!   swap.
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

use std::collections::{BTreeMap, BTreeSet};
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
    recheck: Duration,
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

    /// How long the server found through the compute back end for a
    /// node (or the absence of one) is trusted before the node is looked
    /// up again (default 60 s): the node's address may pass to another
    /// server while the node stays.
    pub fn recheck(mut self, after: Duration) -> Self {
        self.recheck = after;
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
            recheck: self.recheck,
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
    recheck: Duration,
    /// Which server each node (by id) serves.
    known: Mutex<BTreeMap<u64, Owner>>,
    /// Nodes the compute back end had no server for, and when to ask
    /// again: a node of someone else's must not cost a list call every
    /// round.
    unresolved: Mutex<BTreeMap<u64, Instant>>,
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

/// The server behind a node, as this process learnt it.
#[derive(Debug, Clone)]
struct Owner {
    server: ServerId,
    /// When it was learnt: a listing taken before then may not have the
    /// node yet, and does not prove it gone.
    learnt: Instant,
    /// `None`: this process attached the server to the node. Otherwise
    /// found through the compute back end, and looked up again from then.
    recheck: Option<Instant>,
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
            recheck: Duration::from_secs(60),
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

    fn op(&self, what: &str) -> String {
        format!("cloud load balancers: {what} of {}", self.lb)
    }

    /// Records that `server` is behind node `node` (this process attached
    /// it there): whatever was known of the node before is stale.
    fn attached(&self, node: u64, server: &ServerId) {
        lock(&self.unresolved).remove(&node);
        lock(&self.known).insert(
            node,
            Owner {
                server: server.clone(),
                learnt: Instant::now(),
                recheck: None,
            },
        );
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
    /// compute back end, or a stand-in id naming the node. `listed` is
    /// when the listing of `nodes` was asked for: what was learnt of nodes
    /// missing from it before then is forgotten.
    async fn resolve(&self, nodes: &[Node], listed: Instant) -> Result<Vec<ServerId>, PortError> {
        let present: BTreeSet<u64> = nodes.iter().map(|n| n.id).collect();
        lock(&self.known).retain(|id, o| present.contains(id) || o.learnt > listed);
        lock(&self.unresolved).retain(|id, _| present.contains(id));
        let now = Instant::now();
        let lookup: Vec<(u64, IpAddr)> = {
            let known = lock(&self.known);
            let unresolved = lock(&self.unresolved);
            nodes
                .iter()
                .filter_map(|n| Some((n.id, endpoint(n)?.ip())))
                .filter(|(id, _)| match known.get(id) {
                    Some(o) => o.recheck.is_some_and(|at| at <= now),
                    None => unresolved.get(id).is_none_or(|at| *at <= now),
                })
                .collect()
        };
        if let (false, Some(compute)) = (lookup.is_empty(), &self.servers) {
            let servers = compute.list(&LabelSelector::new()).await?;
            // An address two servers claim names neither.
            let mut by_ip: BTreeMap<IpAddr, Option<ServerId>> = BTreeMap::new();
            for s in servers {
                for ip in s.addresses {
                    by_ip
                        .entry(ip)
                        .and_modify(|held| {
                            if held.as_ref() != Some(&s.id) {
                                *held = None;
                            }
                        })
                        .or_insert_with(|| Some(s.id.clone()));
                }
            }
            let mut known = lock(&self.known);
            let mut unresolved = lock(&self.unresolved);
            for (node, ip) in lookup {
                // A node attached since the lookup started keeps its owner.
                if known.get(&node).is_some_and(|o| o.recheck.is_none()) {
                    continue;
                }
                match by_ip.get(&ip) {
                    Some(Some(id)) => {
                        known.insert(
                            node,
                            Owner {
                                server: id.clone(),
                                learnt: now,
                                recheck: Some(now + self.recheck),
                            },
                        );
                        unresolved.remove(&node);
                    }
                    _ => {
                        known.remove(&node);
                        unresolved.insert(node, now + self.recheck);
                    }
                }
            }
        }
        let known = lock(&self.known);
        nodes
            .iter()
            .map(|n| match known.get(&n.id) {
                Some(o) => Ok(o.server.clone()),
                None => ServerId::new(format!("clb-node-{}", n.id)).map_err(|e| {
                    PortError::new(
                        self.op("naming node"),
                        ErrorKind::BadResponse(format!("node id {}: {e}", n.id)),
                    )
                }),
            })
            .collect()
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
            reactivates_draining: true,
            stages: false,
            keeps_standby: false,
            check_interval: None,
        }
    }

    async fn members(&self) -> Result<Vec<Member>, PortError> {
        let listed = Instant::now();
        let nodes = self.finish_drains(self.nodes().await?).await?;
        // A node left out would be a server the guards believe is not
        // serving: one that cannot be read fails the whole read, before
        // any lookup.
        let bad = |n: &Node, what: String| {
            PortError::new(
                self.op("listing nodes"),
                ErrorKind::BadResponse(format!("node {} {what}", n.id)),
            )
        };
        let mut read = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let endpoint = endpoint(n).ok_or_else(|| {
                bad(
                    n,
                    format!(
                        "is at {:?}, not an IP address: which server it sends traffic to is unknown",
                        n.address
                    ),
                )
            })?;
            let state = match n.condition.as_str() {
                "ENABLED" => MemberState::Active,
                "DRAINING" => MemberState::Draining,
                "DISABLED" => MemberState::Disabled,
                other => return Err(bad(n, format!("has an unknown condition {other:?}"))),
            };
            read.push((endpoint, state));
        }
        let ids = self.resolve(&nodes, listed).await?;
        Ok(nodes
            .iter()
            .zip(read)
            .zip(ids)
            .map(|((n, (endpoint, state)), server)| Member {
                server,
                endpoint,
                health: match n.status.as_str() {
                    "ONLINE" => MemberHealth::Healthy,
                    "OFFLINE" => MemberHealth::Unhealthy,
                    _ => MemberHealth::Unknown,
                },
                state,
                connections: None,
                checked_ago: None,
            })
            .collect())
    }

    async fn attach(&self, targets: &[Target]) -> Result<(), PortError> {
        // One node per address and port: two servers at one endpoint
        // cannot both be attached, and the node would name only one.
        for (i, t) in targets.iter().enumerate() {
            if let Some(other) = targets[..i]
                .iter()
                .find(|o| o.endpoint == t.endpoint && o.server != t.server)
            {
                return Err(PortError::new(
                    self.op("adding nodes"),
                    ErrorKind::Invalid(format!(
                        "{} and {} are both at {}",
                        other.server, t.server, t.endpoint
                    )),
                ));
            }
        }
        let owner = |n: &Node| {
            let at = endpoint(n)?;
            targets.iter().find(|t| t.endpoint == at)
        };
        self.change(|| async {
            let nodes = api::nodes(&self.session, self.lb).await?;
            for n in &nodes {
                let Some(t) = owner(n) else { continue };
                // Back from draining or disabled: a rollback re-attaches a
                // pool whose detach stopped part-way.
                if n.condition != "ENABLED" {
                    api::set_condition(&self.session, self.lb, n.id, "ENABLED").await?;
                    lock(&self.draining).remove(&n.id);
                }
                // The node at the endpoint is this server's now, whoever
                // it served before.
                self.attached(n.id, &t.server);
            }
            let missing: Vec<&Target> = targets
                .iter()
                .filter(|t| !nodes.iter().any(|n| endpoint(n) == Some(t.endpoint)))
                .collect();
            let mut unseen = Vec::new();
            for chunk in missing.chunks(self.add_batch) {
                let wanted: Vec<(String, u16)> = chunk
                    .iter()
                    .map(|t| (t.endpoint.ip().to_string(), t.endpoint.port()))
                    .collect();
                let added = api::add(&self.session, self.lb, &wanted).await?;
                for t in chunk {
                    match added.iter().find(|n| endpoint(n) == Some(t.endpoint)) {
                        Some(n) => self.attached(n.id, &t.server),
                        None => unseen.push(*t),
                    }
                }
            }
            // The answer did not name the new nodes: find them.
            if !unseen.is_empty() {
                for n in api::nodes(&self.session, self.lb).await? {
                    if let Some(t) = unseen.iter().find(|t| endpoint(&n) == Some(t.endpoint)) {
                        self.attached(n.id, &t.server);
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn detach(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        let listed = Instant::now();
        let nodes = self.finish_drains(self.nodes().await?).await?;
        let ids = self.resolve(&nodes, listed).await?;
        let leaving: Vec<&Node> = nodes
            .iter()
            .zip(&ids)
            .filter(|(_, id)| servers.contains(id))
            .map(|(n, _)| n)
            .collect();
        if leaving.is_empty() {
            return Ok(());
        }
        if drain.is_zero() {
            let ids: Vec<u64> = leaving.iter().map(|n| n.id).collect();
            return self.remove_nodes(&ids).await;
        }
        let now = Instant::now();
        let until = now
            .checked_add(drain)
            .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600));
        for node in leaving {
            if node.condition != "DRAINING" {
                self.change(|| api::set_condition(&self.session, self.lb, node.id, "DRAINING"))
                    .await?;
            }
            // Detaching again may shorten a drain (a rollback in a hurry),
            // never lengthen it.
            lock(&self.draining)
                .entry(node.id)
                .and_modify(|at| *at = (*at).min(until))
                .or_insert(until);
        }
        Ok(())
    }
}
