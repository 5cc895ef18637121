//! The simulated world: servers, images and balancer members whose states
//! are computed lazily from tokio time, so nothing runs in the background
//! and a paused clock jumps straight to the next event.
//!
//! The world is also the referee: it records violations of the invariants
//! it can judge from the ground truth (see [`super::SimCloud::strict`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::id::{ImageId, PoolId, ReleaseLabel, ServerId};
use crate::labels::{keys, Labels};
use crate::memory_store::MemoryStore;
use crate::model::{Image, Server, ServerStatus};
use crate::ports::{Member, MemberHealth, MemberState};
use crate::time::{Clock, TokioClock};

use super::{Faults, SimConfig, SimStats};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Boots,
    StuckInBuild,
    BootsToError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Death {
    /// The hypervisor fails: the cloud reports ERROR.
    Host,
    /// The application dies: the cloud still reports ACTIVE.
    App,
    /// The cloud takes the server back (spot reclaim, an operator's
    /// delete) and it vanishes from every answer, as if never launched.
    Reclaimed,
}

#[derive(Debug, Clone)]
pub(crate) struct SimServer {
    pub(crate) id: ServerId,
    pub(crate) name: String,
    pub(crate) labels: Labels,
    pub(crate) image: ImageId,
    pub(crate) release: Option<ReleaseLabel>,
    pub(crate) address: IpAddr,
    /// What the provider reports as its launch time (reset by a start when
    /// the fault says so).
    pub(crate) launched_at: crate::time::Timestamp,
    /// When it really came to be.
    pub(crate) created_at: crate::time::Timestamp,
    pub(crate) visible_at: Instant,
    /// When it finished (re)booting.
    pub(crate) ready_at: Instant,
    pub(crate) fate: Fate,
    pub(crate) stopped_at: Option<Instant>,
    pub(crate) death: Option<(Instant, Death)>,
    pub(crate) terminated_at: Option<Instant>,
    /// The provider misled Phoenix about this server (invisible past the
    /// declared window, or a termination answered but not done): Phoenix
    /// cannot be expected to have it in its records, only to find it.
    pub(crate) misreported: bool,
    /// Fingerprint of the payload it was launched with (shared: every
    /// server of a release carries the same one).
    pub(crate) payload: Arc<str>,
}

impl SimServer {
    pub(crate) fn status(&self, now: Instant) -> Option<ServerStatus> {
        if self.terminated_at.is_some_and(|t| now >= t) {
            return None;
        }
        if matches!(self.death, Some((t, Death::Reclaimed)) if now >= t) {
            return None;
        }
        if self.stopped_at.is_some_and(|t| now >= t) {
            return Some(ServerStatus::Stopped);
        }
        if now < self.ready_at {
            return Some(ServerStatus::Building);
        }
        Some(match self.fate {
            Fate::StuckInBuild => ServerStatus::Building,
            Fate::BootsToError => ServerStatus::Error {
                message: "No valid host was found".into(),
            },
            Fate::Boots => match self.death {
                Some((t, Death::Host)) if now >= t => ServerStatus::Error {
                    message: "host failure".into(),
                },
                _ => ServerStatus::Active,
            },
        })
    }

    /// When the application stopped answering, if it has by `now`.
    pub(crate) fn ended_at(&self, now: Instant) -> Option<Instant> {
        let mut ends = Vec::new();
        if let Some(t) = self.terminated_at {
            ends.push(t);
        }
        if let Some(t) = self.stopped_at {
            ends.push(t);
        }
        if let Some((t, _)) = self.death {
            ends.push(t);
        }
        ends.into_iter().filter(|t| *t <= now).min()
    }

    pub(crate) fn alive(&self, now: Instant, unhealthy: &BTreeSet<ReleaseLabel>) -> bool {
        self.fate == Fate::Boots
            && now >= self.ready_at
            && self.ended_at(now).is_none()
            && !self.release.as_ref().is_some_and(|r| unhealthy.contains(r))
    }

    pub(crate) fn to_server(&self, now: Instant) -> Option<Server> {
        Some(Server {
            id: self.id.clone(),
            name: self.name.clone(),
            addresses: vec![self.address],
            service_port: None,
            status: self.status(now)?,
            launched_at: Some(self.launched_at),
            image: Some(self.image.clone()),
            labels: self.labels.clone(),
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SimMember {
    pub(crate) endpoint: SocketAddr,
    pub(crate) attached_at: Instant,
    /// (detached at, drained at)
    pub(crate) draining: Option<(Instant, Instant)>,
    /// When a detached member leaves the list: when drained, or much later
    /// when it is stuck draining.
    pub(crate) leaves_at: Option<Instant>,
    /// The id reads report instead of the server's, if the adapter lost it.
    pub(crate) stand_in: Option<ServerId>,
    /// Staged: checked by the balancer, taking no traffic (ELBv2's idle
    /// target group) until a swap. A standby member is staged too.
    pub(crate) staged: bool,
    /// A member moved to standby still finishes its open connections
    /// until then.
    pub(crate) conns_until: Option<Instant>,
    /// When the balancer stopped checking it (a hand disabled its checks):
    /// from then on it reports the health it found last.
    pub(crate) checks_stopped: Option<Instant>,
}

impl SimMember {
    pub(crate) fn listed(&self, at: Instant) -> bool {
        self.leaves_at.is_none_or(|t| at < t)
    }

    /// Still sends traffic to its server (active, or within its drain).
    pub(crate) fn serving(&self, at: Instant) -> bool {
        (!self.staged && self.draining.is_none_or(|(_, drained)| at < drained))
            || self.conns_until.is_some_and(|t| at < t)
    }

    /// A fresh member, attached (or staged) at `at`.
    pub(crate) fn new(endpoint: SocketAddr, at: Instant, staged: bool) -> Self {
        Self {
            endpoint,
            attached_at: at,
            draining: None,
            leaves_at: None,
            stand_in: None,
            staged,
            conns_until: None,
            checks_stopped: None,
        }
    }

    /// The instant its reported health stands for: now, or when its checks
    /// stopped.
    pub(crate) fn judged_at(&self, at: Instant) -> Instant {
        self.checks_stopped.filter(|t| *t < at).unwrap_or(at)
    }
}

/// Whose capacity a balancer's floor protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FloorWatch {
    pub(crate) floor: usize,
    /// Only members whose servers carry these labels count.
    pub(crate) deployment: Option<String>,
    pub(crate) role: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct BalancerState {
    pub(crate) members: BTreeMap<ServerId, SimMember>,
    pub(crate) floor: Option<FloorWatch>,
    /// The last read that answered the truth.
    pub(crate) last_read: Option<Instant>,
    pub(crate) next_node: u64,
}

/// Servers of these pools may not run more than `limit` at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurgeWatch {
    /// The pools counted together.
    pub pools: BTreeSet<PoolId>,
    /// The most servers they may run.
    pub limit: usize,
    /// What it watches, for the violation message.
    pub what: String,
    /// The operation it watches, by its journal's key: once that operation
    /// rolls back, restoring the previous pool to full capacity comes first
    /// (invariant 4) and the surge no longer applies.
    pub journal: Option<String>,
}

#[derive(Debug)]
pub(crate) struct World {
    pub(crate) rng: ChaCha8Rng,
    pub(crate) config: SimConfig,
    pub(crate) faults: Faults,
    pub(crate) clock: TokioClock,
    pub(crate) start: Instant,
    pub(crate) servers: BTreeMap<ServerId, SimServer>,
    pub(crate) next_server: u64,
    /// Token → the server it created and the payload it carried.
    pub(crate) tokens: BTreeMap<String, ServerId>,
    pub(crate) images: BTreeMap<ImageId, Image>,
    pub(crate) next_image: u64,
    pub(crate) balancers: BTreeMap<String, BalancerState>,
    pub(crate) stats: SimStats,
    pub(crate) violations: Vec<String>,
    pub(crate) smoke_passed: BTreeMap<ReleaseLabel, u64>,
    /// Strict refereeing: leases, fresh reads, certification.
    pub(crate) strict: Option<MemoryStore>,
    pub(crate) surge: Vec<SurgeWatch>,
    /// Every payload fingerprint seen, so that servers share one copy.
    pub(crate) payloads: BTreeSet<Arc<str>>,
}

impl World {
    pub(crate) fn new(config: SimConfig, rng: ChaCha8Rng) -> Self {
        Self {
            rng,
            faults: config.faults.clone(),
            config,
            clock: TokioClock::fixed(),
            start: Instant::now(),
            servers: BTreeMap::new(),
            next_server: 1,
            tokens: BTreeMap::new(),
            images: BTreeMap::new(),
            next_image: 1,
            balancers: BTreeMap::new(),
            stats: SimStats::default(),
            violations: Vec::new(),
            smoke_passed: BTreeMap::new(),
            strict: None,
            surge: Vec::new(),
            payloads: BTreeSet::new(),
        }
    }

    /// The shared copy of a payload fingerprint.
    pub(crate) fn payload(&mut self, fingerprint: String) -> Arc<str> {
        if let Some(known) = self.payloads.get(fingerprint.as_str()) {
            return known.clone();
        }
        let shared: Arc<str> = fingerprint.into();
        self.payloads.insert(shared.clone());
        shared
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let hit = self.rng.random_bool(p.min(1.0));
        if hit {
            self.stats.faults_injected += 1;
        }
        hit
    }

    pub(crate) fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let lo_ms = u64::try_from(lo.as_millis()).unwrap_or(u64::MAX);
        let hi_ms = u64::try_from(hi.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.rng.random_range(lo_ms..=hi_ms))
    }

    pub(crate) fn elapsed_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn new_server_id(&mut self) -> ServerId {
        let id = ServerId::from_valid(format!("srv-{:06}", self.next_server));
        self.next_server += 1;
        id
    }

    pub(crate) fn address(n: u64) -> IpAddr {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        IpAddr::V4(Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8))
    }

    /// How long a call hangs, if this one does.
    pub(crate) fn hang(&mut self) -> Option<Duration> {
        let (hang, slow) = (self.faults.hang, self.faults.slow);
        if self.chance(hang) {
            return Some(self.faults.hang_time);
        }
        if self.chance(slow) {
            let longest = self.faults.slow_time.max(Duration::from_secs(1));
            return Some(self.between(Duration::from_secs(1), longest));
        }
        None
    }

    /// What the balancer's checks say about a member at `at`.
    pub(crate) fn health_at(
        &self,
        server: &ServerId,
        member: &SimMember,
        at: Instant,
    ) -> MemberHealth {
        let Some(s) = self.servers.get(server) else {
            return MemberHealth::Unhealthy;
        };
        let rise = self.config.health_delay;
        let fall = self.config.fall_delay;
        let up_since = member.attached_at.max(s.ready_at);
        let bad = &self.faults.unhealthy_releases;
        match s.ended_at(at) {
            None if s.alive(at, bad) => {
                if at >= up_since + rise {
                    MemberHealth::Healthy
                } else {
                    MemberHealth::Unknown
                }
            }
            None => {
                if at >= up_since + fall {
                    MemberHealth::Unhealthy
                } else {
                    MemberHealth::Unknown
                }
            }
            Some(ended) => {
                let was_healthy = s.fate == Fate::Boots && ended >= up_since + rise;
                if at < ended + fall && was_healthy {
                    MemberHealth::Healthy
                } else if at < ended + fall {
                    MemberHealth::Unknown
                } else {
                    MemberHealth::Unhealthy
                }
            }
        }
    }

    pub(crate) fn prune(&mut self, balancer: &str, now: Instant) {
        if let Some(b) = self.balancers.get_mut(balancer) {
            b.members.retain(|_, m| m.listed(now));
        }
    }

    /// The members of a balancer at `at`, under the ids reads report.
    pub(crate) fn members_at(&self, balancer: &str, at: Instant) -> Vec<Member> {
        self.members_with(balancer, at, true)
    }

    /// The members under their true server ids.
    pub(crate) fn true_members_at(&self, balancer: &str, at: Instant) -> Vec<Member> {
        self.members_with(balancer, at, false)
    }

    fn members_with(&self, balancer: &str, at: Instant, as_read: bool) -> Vec<Member> {
        let Some(b) = self.balancers.get(balancer) else {
            return Vec::new();
        };
        b.members
            .iter()
            .filter(|(_, m)| m.listed(at))
            // Like ELBv2's idle group: a staged target whose instance is
            // gone (terminated, reclaimed) is left out, it carries
            // nothing; one whose application died stays, failing checks.
            .filter(|(id, m)| {
                !m.staged
                    || self
                        .servers
                        .get(*id)
                        .is_some_and(|s| s.status(at).is_some())
            })
            .map(|(id, m)| Member {
                server: match (&m.stand_in, as_read) {
                    (Some(stand_in), true) => stand_in.clone(),
                    _ => id.clone(),
                },
                endpoint: m.endpoint,
                health: self.health_at(id, m, m.judged_at(at)),
                state: if m.draining.is_some() {
                    MemberState::Draining
                } else if m.staged {
                    MemberState::Disabled
                } else {
                    MemberState::Active
                },
                connections: Some(match m.draining {
                    None if m.staged && m.conns_until.is_some_and(|t| at < t) => 1,
                    None if m.staged => 0,
                    None => 3,
                    Some((_, drained)) if at < drained => 1,
                    Some(_) => 0,
                }),
                checked_ago: Some(match m.checks_stopped {
                    Some(t) if t < at => at - t,
                    _ => self.config.check_interval / 2,
                }),
            })
            .collect()
    }

    /// Invariant 1, checked on the ground truth: a server stopped or
    /// terminated while some balancer still sends it traffic.
    pub(crate) fn check_not_serving(&mut self, server: &ServerId, action: &str, now: Instant) {
        let serving: Vec<String> = self
            .balancers
            .iter()
            .filter(|(_, b)| b.members.get(server).is_some_and(|m| m.serving(now)))
            .map(|(name, _)| name.clone())
            .collect();
        if !serving.is_empty() {
            self.violations.push(format!(
                "invariant 1: {action} {server} while balancer {} still sends it traffic (t={}ms)",
                serving.join(","),
                self.elapsed_ms(now)
            ));
        }
    }

    /// A destructive call must act on a fresh read: the balancers it
    /// depends on were read (truthfully) no longer before the call was
    /// issued than a call's latency plus the policy's `fresh_read` (a call
    /// that then hangs is the provider's delay, not a stale decision). `which` is one balancer (detach) or all of them (stop,
    /// terminate: serving means serving behind any balancer).
    pub(crate) fn check_fresh(
        &mut self,
        caller: Option<&str>,
        which: Option<&str>,
        action: &str,
        issued: Instant,
    ) {
        // Only orchestrators are held to it (an operator's hand is not).
        if self.strict.is_none() || caller.is_none() {
            return;
        }
        let latency = self.config.api_latency
            + if which.is_some() {
                self.faults.lb_slow
            } else {
                Duration::ZERO
            };
        // Orchestrators promise the default policy's bound on a read's age
        // (an answer that took longer to gather is read again).
        let tolerance =
            latency + crate::policy::CallPolicy::default().fresh_read + Duration::from_millis(1);
        let stale: Vec<String> = self
            .balancers
            .iter()
            .filter(|(name, _)| which.is_none_or(|w| w == name.as_str()))
            .filter(|(_, b)| {
                b.last_read
                    .is_none_or(|t| issued.saturating_duration_since(t) > tolerance)
            })
            .map(|(name, b)| match b.last_read {
                Some(t) => format!(
                    "{name} read {} ago",
                    crate::time::human(issued.saturating_duration_since(t))
                ),
                None => format!("{name} never read"),
            })
            .collect();
        if !stale.is_empty() {
            self.violations.push(format!(
                "invariant 1/2: {action} on a stale balancer read ({}) (t={}ms)",
                stale.join(", "),
                self.elapsed_ms(issued)
            ));
        }
    }

    /// Invariant 5: a change to the cloud or a balancer is made only by an
    /// orchestrator that holds a lease at that moment.
    pub(crate) fn check_lease(&mut self, holder: Option<&str>, action: &str, now: Instant) {
        let (Some(store), Some(holder)) = (&self.strict, holder) else {
            return;
        };
        if !store.holds_lease(holder) {
            let t = self.elapsed_ms(now);
            self.violations.push(format!(
                "invariant 5: {holder} {action} without holding its lease (t={t}ms)"
            ));
        }
    }

    /// Production launches only images with passing test evidence for
    /// their digest (the provider's metadata alone certifies nothing).
    pub(crate) fn check_certified(&mut self, image: &ImageId, labels: &Labels, now: Instant) {
        if self.strict.is_none() {
            return;
        }
        let Some(img) = self.images.get(image) else {
            return;
        };
        let proven = img
            .evidence
            .iter()
            .any(|e| e.passed && e.digest.is_some() && e.digest == img.digest);
        if !proven {
            let t = self.elapsed_ms(now);
            let dep = labels.get(keys::DEPLOYMENT).unwrap_or("?").to_owned();
            self.violations.push(format!(
                "certification: {dep} launched image {image} that has no passing evidence for its digest (t={t}ms)"
            ));
        }
    }

    /// Surge: servers of watched pools, running or booting and visible.
    pub(crate) fn check_surge(&mut self, now: Instant) {
        let mut found = Vec::new();
        for watch in &self.surge {
            let rolling_back = match (&watch.journal, &self.strict) {
                (Some(key), Some(store)) => store.peek(key).is_some_and(|v| {
                    // The journal's first field is the operation's status.
                    !v.value.starts_with(br#"{"status":"running""#)
                }),
                _ => false,
            };
            if rolling_back {
                continue;
            }
            let running: Vec<String> = self
                .servers
                .values()
                .filter(|s| s.status(now).is_some() && now >= s.visible_at && !s.misreported)
                .filter(|s| s.labels.pool().is_some_and(|p| watch.pools.contains(&p)))
                .map(|s| s.id.to_string())
                .collect();
            if running.len() > watch.limit {
                found.push(format!(
                    "max surge: {} servers ran at once for {} (limit {}): {}",
                    running.len(),
                    watch.what,
                    watch.limit,
                    running.join(", ")
                ));
            }
        }
        for v in found {
            if !self.violations.contains(&v) {
                self.violations.push(v);
            }
        }
    }

    pub(crate) fn timestamp(&self) -> crate::time::Timestamp {
        self.clock.now()
    }
}
