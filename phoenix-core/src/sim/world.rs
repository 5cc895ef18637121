//! The simulated world: servers, images and balancer members whose states
//! are computed lazily from tokio time, so nothing runs in the background
//! and a paused clock jumps straight to the next event.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::id::{ImageId, ReleaseLabel, ServerId};
use crate::labels::Labels;
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
}

#[derive(Debug, Clone)]
pub(crate) struct SimServer {
    pub(crate) id: ServerId,
    pub(crate) name: String,
    pub(crate) labels: Labels,
    pub(crate) image: ImageId,
    pub(crate) release: Option<ReleaseLabel>,
    pub(crate) address: IpAddr,
    pub(crate) launched_at: crate::time::Timestamp,
    pub(crate) visible_at: Instant,
    /// When it finished (re)booting.
    pub(crate) ready_at: Instant,
    pub(crate) fate: Fate,
    pub(crate) stopped_at: Option<Instant>,
    pub(crate) death: Option<(Instant, Death)>,
    pub(crate) terminated_at: Option<Instant>,
}

impl SimServer {
    pub(crate) fn status(&self, now: Instant) -> Option<ServerStatus> {
        if self.terminated_at.is_some_and(|t| now >= t) {
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
}

#[derive(Debug, Clone, Default)]
pub(crate) struct BalancerState {
    pub(crate) members: BTreeMap<ServerId, SimMember>,
    pub(crate) floor: Option<usize>,
    pub(crate) last_read: Option<Instant>,
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
    pub(crate) tokens: BTreeMap<String, ServerId>,
    pub(crate) images: BTreeMap<ImageId, Image>,
    pub(crate) next_image: u64,
    pub(crate) balancers: BTreeMap<String, BalancerState>,
    pub(crate) stats: SimStats,
    pub(crate) violations: Vec<String>,
    pub(crate) smoke_passed: BTreeMap<ReleaseLabel, u64>,
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
        }
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
            b.members
                .retain(|_, m| m.draining.is_none_or(|(_, until)| now < until));
        }
    }

    pub(crate) fn members_at(&self, balancer: &str, at: Instant) -> Vec<Member> {
        let Some(b) = self.balancers.get(balancer) else {
            return Vec::new();
        };
        b.members
            .iter()
            .filter(|(_, m)| m.draining.is_none_or(|(_, until)| at < until))
            .map(|(id, m)| Member {
                server: id.clone(),
                endpoint: m.endpoint,
                health: self.health_at(id, m, at),
                state: if m.draining.is_some() {
                    MemberState::Draining
                } else {
                    MemberState::Active
                },
                connections: Some(if m.draining.is_some() { 1 } else { 3 }),
            })
            .collect()
    }

    /// Invariant 1, checked on the ground truth: a server stopped or
    /// terminated while some balancer still sends it traffic.
    pub(crate) fn check_not_serving(&mut self, server: &ServerId, action: &str, now: Instant) {
        let serving: Vec<String> = self
            .balancers
            .iter()
            .filter(|(_, b)| {
                b.members
                    .get(server)
                    .is_some_and(|m| m.draining.is_none_or(|(_, until)| now < until))
            })
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

    pub(crate) fn timestamp(&self) -> crate::time::Timestamp {
        self.clock.now()
    }
}
