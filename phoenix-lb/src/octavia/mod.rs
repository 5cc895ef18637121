//! [`OctaviaBalancer`]: the `LoadBalancer` port on one OpenStack Octavia
//! pool (feature `octavia`), sharing the authenticated OpenStack session
//! of `phoenix-providers`.
//!
//! Every change is one batch member update
//! (`PUT /v2/lbaas/pools/{pool_id}/members` with the whole member set):
//! attach, detach and [`swap`](LoadBalancer::swap) each cost one call
//! whatever the number of members, and a swap is atomic, the native one
//! the design asks for. Each member is named after its server, so the
//! member set says which servers serve. A detach with a drain period sets
//! the leaving members' weight to 0 (no new connections, open ones
//! finish) and removes them in a later update once the period has passed
//! (when `members` or a change next runs). After each update the pool's
//! `provisioning_status` is polled until it is `ACTIVE` again; an update
//! refused with 409 while the load balancer is immutable waits for it.
//!
//! Octavia keeps one member per address and port, so `attach` works on
//! the member at the target's endpoint: one at weight 0 gets its weight
//! back, one with `admin_state_up: false` is brought up, and its name
//! becomes the target's server (a new server at a reused address takes
//! the member over). A member without a usable name (one made by hand) is
//! reported as `octavia-member-<id>`; one without an IP address and port
//! fails the read with `BadResponse` rather than being left out.
//!
//! Health comes from `operating_status`: `ONLINE` and `NO_MONITOR` (no
//! health monitor: Octavia sends traffic) are healthy, `OFFLINE`,
//! `ERROR` and `DEGRADED` unhealthy.
//!
//! ```no_run
//! use phoenix_lb::octavia::OctaviaBalancer;
//! use phoenix_providers::openstack::{CloudConfig, Session};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::new(CloudConfig::from_env()?)?;
//! let lb = OctaviaBalancer::builder(session, "4029d267-3983-4224-a3d0-afb3fe16a2cd")
//!     .subnet("bbb35f84-35cc-4b2f-84c2-a6a29bba68aa")
//!     .build();
//! # let _ = lb;
//! # Ok(())
//! # }
//! ```

mod api;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::id::ServerId;
use phoenix_core::ports::{
    ErrorKind, LbCapabilities, LoadBalancer, Member, MemberHealth, MemberState, PortError, Target,
};
use phoenix_providers::openstack::busy::{change_when_ready, Patience};
use phoenix_providers::openstack::Session;
use serde_json::{json, Value};
use tokio::time::Instant;

use api::RawMember;

/// Builds an [`OctaviaBalancer`].
#[derive(Debug)]
pub struct OctaviaBalancerBuilder {
    session: Session,
    pool: String,
    subnet: Option<String>,
    weight: u16,
    patience: Patience,
}

impl OctaviaBalancerBuilder {
    /// The subnet new members are on (default: the load balancer's VIP
    /// subnet, as Octavia chooses).
    pub fn subnet(mut self, subnet: impl Into<String>) -> Self {
        self.subnet = Some(subnet.into());
        self
    }

    /// The weight of new members (default 1).
    pub fn weight(mut self, weight: u16) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// How long to wait for the pool to be `ACTIVE` after an update, and
    /// how often to look (default 5 minutes, every 2 s).
    pub fn patience(mut self, patience: Patience) -> Self {
        self.patience = patience;
        self
    }

    /// Builds the balancer.
    pub fn build(self) -> OctaviaBalancer {
        OctaviaBalancer {
            session: self.session,
            pool: self.pool,
            subnet: self.subnet,
            weight: self.weight,
            patience: self.patience,
            draining: Mutex::new(BTreeMap::new()),
        }
    }
}

/// The `LoadBalancer` port on one Octavia pool.
#[derive(Debug)]
pub struct OctaviaBalancer {
    session: Session,
    pool: String,
    subnet: Option<String>,
    weight: u16,
    patience: Patience,
    /// Members at weight 0 and when they may go.
    draining: Mutex<BTreeMap<SocketAddr, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn endpoint_of(m: &RawMember) -> Option<SocketAddr> {
    let ip: IpAddr = m.get("address")?.as_str()?.parse().ok()?;
    let port = u16::try_from(m.get("protocol_port")?.as_u64()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

fn weight_of(m: &RawMember) -> u64 {
    m.get("weight").and_then(Value::as_u64).unwrap_or(1)
}

fn server_of(m: &RawMember) -> Option<ServerId> {
    m.get("name")
        .and_then(Value::as_str)
        .and_then(|n| ServerId::new(n).ok())
        .or_else(|| {
            let id = m.get("id").and_then(Value::as_str)?;
            ServerId::new(format!("octavia-member-{id}")).ok()
        })
}

/// How a batch update changes the member set.
#[derive(Debug, Default)]
struct Change<'a> {
    add: &'a [Target],
    leave: &'a [ServerId],
    drain: bool,
}

impl OctaviaBalancer {
    /// Starts building a balancer for pool `pool_id`.
    pub fn builder(session: Session, pool_id: impl Into<String>) -> OctaviaBalancerBuilder {
        OctaviaBalancerBuilder {
            session,
            pool: pool_id.into(),
            subnet: None,
            weight: 1,
            patience: Patience::default(),
        }
    }

    /// The pool's id.
    pub fn pool_id(&self) -> &str {
        &self.pool
    }

    async fn ready(&self) -> Result<bool, PortError> {
        match api::provisioning_status(&self.session, &self.pool)
            .await?
            .as_str()
        {
            "ACTIVE" => Ok(true),
            "ERROR" => Err(PortError::new(
                format!("octavia: waiting for pool {}", self.pool),
                ErrorKind::Permanent("the pool's provisioning status is ERROR".into()),
            )),
            _ => Ok(false),
        }
    }

    /// Polls the pool's `provisioning_status` until it is `ACTIVE`.
    pub async fn wait_active(&self) -> Result<(), PortError> {
        let deadline = Instant::now() + self.patience.wait;
        loop {
            if self.ready().await? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(PortError::temporary(
                    format!("octavia: waiting for pool {}", self.pool),
                    format!("still not ACTIVE after {:?}", self.patience.wait),
                ));
            }
            tokio::time::sleep(self.patience.poll).await;
        }
    }

    fn new_member(&self, t: &Target) -> RawMember {
        let mut m = json!({
            "name": t.server.as_str(),
            "address": t.endpoint.ip().to_string(),
            "protocol_port": t.endpoint.port(),
            "weight": self.weight,
            "admin_state_up": true,
        });
        if let Some(subnet) = &self.subnet {
            m["subnet_id"] = json!(subnet);
        }
        match m {
            Value::Object(map) => map,
            _ => RawMember::new(),
        }
    }

    /// The member set after `change`, and whether it differs from
    /// `current`.
    fn plan(
        &self,
        current: &[RawMember],
        change: &Change<'_>,
        due: &[SocketAddr],
    ) -> (Vec<RawMember>, bool) {
        let mut out = Vec::new();
        let mut changed = false;
        for m in current {
            let endpoint = endpoint_of(m);
            let server = server_of(m);
            let leaving = server.as_ref().is_some_and(|s| change.leave.contains(s));
            let drained = endpoint.is_some_and(|e| due.contains(&e));
            if (leaving && !change.drain) || drained {
                changed = true;
                continue;
            }
            let mut d = api::desired(m);
            let returning = change.add.iter().find(|t| Some(t.endpoint) == endpoint);
            if leaving && weight_of(m) != 0 {
                d.insert("weight".into(), json!(0));
                changed = true;
            } else if let Some(t) = returning {
                // Back into service: a rollback re-attaches members that a
                // detach left at weight 0, or that someone disabled. The
                // name follows the target: the member at this address is
                // now that server's, and a stale name would report a
                // server that has left.
                let wanted = [
                    ("name", json!(t.server.as_str())),
                    ("admin_state_up", json!(true)),
                ];
                for (k, v) in wanted {
                    if m.get(k) != Some(&v) {
                        d.insert(k.into(), v);
                        changed = true;
                    }
                }
                if weight_of(m) == 0 {
                    d.insert("weight".into(), json!(self.weight));
                    changed = true;
                }
            }
            out.push(d);
        }
        for t in change.add {
            if !current.iter().any(|m| endpoint_of(m) == Some(t.endpoint)) {
                out.push(self.new_member(t));
                changed = true;
            }
        }
        (out, changed)
    }

    /// Members at weight 0 whose drain period has passed.
    fn due(&self, current: &[RawMember]) -> Vec<SocketAddr> {
        let now = Instant::now();
        let mut draining = lock(&self.draining);
        for m in current {
            if let Some(e) = endpoint_of(m) {
                if weight_of(m) == 0 {
                    // Found draining without a record (a restart): a
                    // default period from now.
                    draining.entry(e).or_insert(now + Duration::from_secs(30));
                }
            }
        }
        draining.retain(|e, _| {
            current
                .iter()
                .any(|m| endpoint_of(m) == Some(*e) && weight_of(m) == 0)
        });
        draining
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(e, _)| *e)
            .collect()
    }

    /// One batch update applying `change` (and finishing due drains),
    /// then waits for the pool to be `ACTIVE`.
    async fn update(&self, change: Change<'_>) -> Result<Vec<RawMember>, PortError> {
        let members = change_when_ready(
            self.session.retry_policy(),
            self.patience,
            || async {
                let current = api::members(&self.session, &self.pool).await?;
                let due = self.due(&current);
                let (desired, changed) = self.plan(&current, &change, &due);
                if !changed {
                    return Ok((current, false));
                }
                api::replace(&self.session, &self.pool, desired).await?;
                Ok((current, true))
            },
            || self.ready(),
        )
        .await?;
        let (before, changed) = members;
        if changed {
            self.wait_active().await?;
            return api::members(&self.session, &self.pool).await;
        }
        Ok(before)
    }
}

#[async_trait]
impl LoadBalancer for OctaviaBalancer {
    fn capabilities(&self) -> LbCapabilities {
        LbCapabilities {
            atomic_swap: true,
            drain: true,
            reports_connections: false,
            max_batch: 1000,
            reactivates_draining: true,
            stages: false,
            keeps_standby: false,
            check_interval: None,
        }
    }

    async fn members(&self) -> Result<Vec<Member>, PortError> {
        let raw = self.update(Change::default()).await?;
        // A member left out would be a server the guards believe is not
        // serving: one that cannot be placed fails the whole read.
        let bad = |m: &RawMember, what: &str| {
            PortError::new(
                format!("octavia: listing members of pool {}", self.pool),
                ErrorKind::BadResponse(format!(
                    "member {} {what}",
                    m.get("id")
                        .and_then(Value::as_str)
                        .unwrap_or("without an id")
                )),
            )
        };
        raw.iter()
            .map(|m| {
                let operating = m
                    .get("operating_status")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let admin_up = m
                    .get("admin_state_up")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                Ok(Member {
                    server: server_of(m)
                        .ok_or_else(|| bad(m, "has neither a usable name nor an id"))?,
                    endpoint: endpoint_of(m).ok_or_else(|| {
                        bad(m, "has no IP address and protocol port to send traffic to")
                    })?,
                    health: match operating {
                        "ONLINE" | "NO_MONITOR" | "DRAINING" => MemberHealth::Healthy,
                        "OFFLINE" | "ERROR" | "DEGRADED" => MemberHealth::Unhealthy,
                        _ => MemberHealth::Unknown,
                    },
                    state: if !admin_up {
                        MemberState::Disabled
                    } else if weight_of(m) == 0 {
                        MemberState::Draining
                    } else {
                        MemberState::Active
                    },
                    connections: None,
                    checked_ago: None,
                })
            })
            .collect()
    }

    async fn attach(&self, targets: &[Target]) -> Result<(), PortError> {
        for t in targets {
            lock(&self.draining).remove(&t.endpoint);
        }
        self.update(Change {
            add: targets,
            ..Change::default()
        })
        .await
        .map(|_| ())
    }

    async fn detach(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        self.swap(&[], servers, drain).await
    }

    async fn swap(
        &self,
        attach: &[Target],
        detach: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        for t in attach {
            lock(&self.draining).remove(&t.endpoint);
        }
        let members = self
            .update(Change {
                add: attach,
                leave: detach,
                drain: !drain.is_zero(),
            })
            .await?;
        if !drain.is_zero() {
            let until = Instant::now() + drain;
            let mut draining = lock(&self.draining);
            for m in &members {
                if server_of(m).is_some_and(|s| detach.contains(&s)) {
                    if let Some(e) = endpoint_of(m) {
                        draining.insert(e, until);
                    }
                }
            }
        }
        Ok(())
    }
}
