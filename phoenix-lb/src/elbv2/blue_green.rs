//! [`Elbv2BlueGreen`]: a listener that forwards to two target groups by
//! weight, the native atomic switch of ELBv2.
//!
//! The live group (the one with weight) serves; the other is idle. A
//! blue-green switch registers the new pool in the idle group, waits until
//! ELBv2's own health checks pass there, moves all the weight in one
//! `ModifyListener` call (no request sees a mix of old and new, no
//! member-by-member churn), then deregisters the old pool with the drain
//! asked for. A switch back (a rollback) is the same sequence.
//!
//! Members are reported once each: a server in the live group with that
//! group's state and health; a server only in the idle group (a switch
//! under way) as `Disabled`, since it takes no traffic, with the health
//! ELBv2 reports. A target of the idle group whose instance is gone is
//! left out: with no weight it carries no traffic. One in the live group
//! fails the read.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::id::ServerId;
use phoenix_core::ports::{
    ErrorKind, LbCapabilities, LoadBalancer, Member, MemberHealth, MemberState, PortError, Target,
};
use phoenix_providers::aws::{AwsClient, QueryRequest, Service};

use super::groups::{registered_ports, Groups, Registered};
use super::target_group::MAX_BATCH;
use super::wire::DescribeListeners;

/// The `LoadBalancer` port on a listener and its two target groups.
#[derive(Debug, Clone)]
pub struct Elbv2BlueGreen {
    groups: Groups,
    listener: String,
    pair: [String; 2],
    healthy_within: Duration,
    poll: Duration,
    check_interval: Duration,
}

/// The listener's view: which group is live.
struct View {
    live: String,
    idle: String,
    targets: BTreeMap<String, Vec<Registered>>,
}

impl Elbv2BlueGreen {
    /// The listener with this ARN, switching between the two target
    /// groups (both must be in its forward action).
    pub fn new(
        client: AwsClient,
        listener_arn: impl Into<String>,
        blue_group_arn: impl Into<String>,
        green_group_arn: impl Into<String>,
    ) -> Self {
        Self {
            groups: Groups::new(client),
            listener: listener_arn.into(),
            pair: [blue_group_arn.into(), green_group_arn.into()],
            healthy_within: Duration::from_secs(300),
            poll: Duration::from_secs(5),
            check_interval: Duration::from_secs(30),
        }
    }

    /// The target groups' `HealthCheckIntervalSeconds` (default 30 s, as
    /// ELBv2's): ELBv2 checks every registered target that often, so the
    /// health it reports is at most that old.
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// How long a new pool may take to pass ELBv2's health checks in the
    /// idle group before a switch is given up (default 5 min), and how
    /// often to look (default 5 s).
    pub fn healthy_within(mut self, within: Duration, poll: Duration) -> Self {
        self.healthy_within = within;
        self.poll = poll;
        self
    }

    fn op(what: &str) -> String {
        format!("elbv2 blue-green {what}")
    }

    async fn weights(&self) -> Result<Vec<(String, u32)>, PortError> {
        let q = QueryRequest::new(Service::Elbv2, "DescribeListeners")
            .param("ListenerArns.member.1", &self.listener);
        let d: DescribeListeners = self.groups.client.call_xml(&q).await?;
        let listener = d
            .result
            .listeners
            .members
            .into_iter()
            .next()
            .ok_or_else(|| {
                PortError::not_found(Self::op("reading the listener"), self.listener.clone())
            })?;
        Ok(listener.weights())
    }

    async fn view(&self) -> Result<View, PortError> {
        let weights = self.weights().await?;
        let weight = |g: &str| weights.iter().find(|(a, _)| a == g).map(|(_, w)| *w);
        for g in &self.pair {
            if weight(g).is_none() {
                return Err(PortError::new(
                    Self::op("reading the listener"),
                    ErrorKind::Invalid(format!(
                        "target group {g} is not in the forward action of {}",
                        self.listener
                    )),
                ));
            }
        }
        let (a, b) = (&self.pair[0], &self.pair[1]);
        let (live, idle) = if weight(b).unwrap_or(0) > weight(a).unwrap_or(0) {
            (b.clone(), a.clone())
        } else {
            (a.clone(), b.clone())
        };
        let targets = self.groups.read(&[&live, &idle]).await?;
        Ok(View {
            live,
            idle,
            targets,
        })
    }

    /// Deregisters `servers` wherever `view` saw them registered.
    async fn detach_in(
        &self,
        view: &View,
        servers: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        for g in [&view.live, &view.idle] {
            let present = registered_ports(Self::in_group(view, g), servers);
            if !present.is_empty() {
                self.groups.set_drain(g, drain).await?;
                self.groups.deregister(g, &present).await?;
            }
        }
        Ok(())
    }

    fn in_group<'a>(view: &'a View, group: &str) -> &'a [Registered] {
        view.targets
            .get(group)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    async fn modify_listener(&self, live: &str, idle: &str) -> Result<(), PortError> {
        let q = QueryRequest::new(Service::Elbv2, "ModifyListener")
            .param("ListenerArn", &self.listener)
            .param("DefaultActions.member.1.Type", "forward")
            .param(
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn",
                live,
            )
            .param(
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.1.Weight",
                "100",
            )
            .param(
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.2.TargetGroupArn",
                idle,
            )
            .param(
                "DefaultActions.member.1.ForwardConfig.TargetGroups.member.2.Weight",
                "0",
            );
        self.groups.client.call(&q).await.map(drop)
    }
}

#[async_trait]
impl LoadBalancer for Elbv2BlueGreen {
    fn capabilities(&self) -> LbCapabilities {
        LbCapabilities {
            atomic_swap: true,
            drain: true,
            reports_connections: false,
            max_batch: MAX_BATCH,
            reactivates_draining: false,
            stages: true,
            keeps_standby: true,
            check_interval: Some(self.check_interval),
        }
    }

    async fn members(&self) -> Result<Vec<Member>, PortError> {
        let view = self.view().await?;
        let op = Self::op("reading members");
        let mut out: Vec<Member> = Vec::new();
        // ELBv2 never stops checking a registered target: a health it
        // reports is at most one interval old.
        let checked = |mut m: Member| {
            if m.health != MemberHealth::Unknown {
                m.checked_ago = Some(self.check_interval);
            }
            m
        };
        for r in Self::in_group(&view, &view.live) {
            out.push(checked(r.member(&op)?));
        }
        for r in Self::in_group(&view, &view.idle) {
            if out.iter().any(|m| m.server == r.server) || r.address.is_none() {
                continue;
            }
            let mut m = r.member(&op)?;
            // Registered and checked, but the listener gives it nothing.
            m.state = MemberState::Disabled;
            if r.state == MemberState::Disabled {
                m.health = MemberHealth::Unknown;
            }
            out.push(checked(m));
        }
        Ok(out)
    }

    /// Registers the targets in the live group: they take traffic now.
    async fn attach(&self, targets: &[Target]) -> Result<(), PortError> {
        if targets.is_empty() {
            return Ok(());
        }
        self.groups.check_endpoints(targets).await?;
        let view = self.view().await?;
        self.groups.register_active(&view.live, targets).await
    }

    /// Deregisters the servers from both groups.
    async fn detach(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        if servers.is_empty() {
            return Ok(());
        }
        let view = self.view().await?;
        self.detach_in(&view, servers, drain).await
    }

    /// Registers the targets in the idle group (the one without weight):
    /// ELBv2 checks them there while they take no traffic, and `members`
    /// reports them `Disabled` with that health. Targets already in the
    /// live group are left where they serve.
    async fn stage(&self, targets: &[Target]) -> Result<(), PortError> {
        if targets.is_empty() {
            return Ok(());
        }
        let view = self.view().await?;
        let live = Self::in_group(&view, &view.live);
        let idle = Self::in_group(&view, &view.idle);
        let missing: Vec<Target> = targets
            .iter()
            .filter(|t| !live.iter().any(|r| r.server == t.server))
            .filter(|t| {
                !idle
                    .iter()
                    .any(|r| r.server == t.server && r.state != MemberState::Draining)
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.groups.check_endpoints(&missing).await?;
        self.groups.register_active(&view.idle, &missing).await
    }

    /// The blue-green switch when `detach` empties the live group: the
    /// new pool goes to the idle group, and once ELBv2 finds it healthy
    /// the weight moves in one call; then the old pool drains out. Any
    /// other swap (a rolling batch) is attach then detach on the live
    /// group.
    async fn swap(
        &self,
        attach: &[Target],
        detach: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        self.swap_with(attach, detach, drain, false).await
    }

    /// The blue-green switch that keeps the old pool registered in the
    /// group that loses the weight: a standby that ELBv2 keeps checking,
    /// which a rollback switches back to with one `ModifyListener`.
    async fn swap_standby(
        &self,
        attach: &[Target],
        standby: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        self.swap_with(attach, standby, drain, true).await
    }

    /// Moves serving targets to the idle group: registered there (checked,
    /// no weight), deregistered from the live group with the drain.
    async fn standby(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        if servers.is_empty() {
            return Ok(());
        }
        let view = self.view().await?;
        let op = Self::op("moving members to standby");
        let moving: Vec<Target> = Self::in_group(&view, &view.live)
            .iter()
            .filter(|r| servers.contains(&r.server))
            .map(|r| {
                r.member(&op).map(|m| Target {
                    server: m.server,
                    endpoint: m.endpoint,
                })
            })
            .collect::<Result<_, _>>()?;
        self.groups.register(&view.idle, &moving).await?;
        let present = registered_ports(Self::in_group(&view, &view.live), servers);
        if !present.is_empty() {
            self.groups.set_drain(&view.live, drain).await?;
            self.groups.deregister(&view.live, &present).await?;
        }
        Ok(())
    }
}

impl Elbv2BlueGreen {
    async fn swap_with(
        &self,
        attach: &[Target],
        detach: &[ServerId],
        drain: Duration,
        keep: bool,
    ) -> Result<(), PortError> {
        let view = self.view().await?;
        let live = Self::in_group(&view, &view.live);
        let empties_live = !live.is_empty() && live.iter().all(|r| detach.contains(&r.server));
        let stays: Vec<&ServerId> = attach
            .iter()
            .map(|t| &t.server)
            .filter(|s| live.iter().any(|r| &r.server == *s))
            .collect();
        if !empties_live || !stays.is_empty() || attach.is_empty() {
            self.attach(attach).await?;
            return if keep {
                self.standby(detach, drain).await
            } else {
                self.detach(detach, drain).await
            };
        }
        let idle = Self::in_group(&view, &view.idle);
        let missing: Vec<Target> = attach
            .iter()
            .filter(|t| !idle.iter().any(|r| r.server == t.server))
            .cloned()
            .collect();
        if !missing.is_empty() {
            self.groups.check_endpoints(&missing).await?;
            self.groups.register(&view.idle, &missing).await?;
        }
        let servers: Vec<ServerId> = attach.iter().map(|t| t.server.clone()).collect();
        self.groups
            .wait_healthy(&view.idle, &servers, self.healthy_within, self.poll)
            .await?;
        // Servers of the idle group that are not the new pool (a standby
        // older than one step) leave before that group takes the traffic.
        let stale: Vec<ServerId> = idle
            .iter()
            .map(|r| r.server.clone())
            .filter(|s| !servers.contains(s))
            .collect();
        let stale = registered_ports(idle, &stale);
        if !stale.is_empty() {
            self.groups.set_drain(&view.idle, drain).await?;
            self.groups.deregister(&view.idle, &stale).await?;
        }
        self.modify_listener(&view.idle, &view.live).await?;
        if keep {
            // The old pool stays where it is: the group that lost the
            // weight, checked by ELBv2, a standby.
            return Ok(());
        }
        // The old pool drains out of the group that just lost the weight
        // (registrations read before the switch are still true: only the
        // weights moved).
        self.detach_in(&view, detach, drain).await
    }
}
