//! The target-group calls both ELBv2 balancers share: read a group's
//! targets with their health and true endpoints, register, deregister
//! with a drain, and wait for health.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use phoenix_core::id::ServerId;
use phoenix_core::model::ServerStatus;
use phoenix_core::ports::{
    Compute, ErrorKind, Member, MemberHealth, MemberState, PortError, Target,
};
use phoenix_providers::aws::{aws_error_code, AwsClient, Ec2Compute, QueryRequest, Service};

use super::wire::{member_of, DescribeTargetHealth, TargetHealthDescription};

/// One registered target: the group's view plus the instance's address.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub(crate) server: ServerId,
    pub(crate) port: u16,
    pub(crate) state: MemberState,
    pub(crate) health: MemberHealth,
    /// The instance's primary private address; `None` when EC2 no longer
    /// knows the instance or it has no address (terminated).
    pub(crate) address: Option<IpAddr>,
}

impl Registered {
    pub(crate) fn member(&self, op: &str) -> Result<Member, PortError> {
        let ip = self.address.ok_or_else(|| {
            PortError::new(
                op,
                ErrorKind::BadResponse(format!(
                    "target {} has no address EC2 knows: its endpoint cannot be reported",
                    self.server
                )),
            )
        })?;
        Ok(Member {
            server: self.server.clone(),
            endpoint: SocketAddr::new(ip, self.port),
            health: self.health,
            state: self.state,
            connections: None,
            checked_ago: None,
        })
    }
}

/// Target-group calls over a shared AWS client.
#[derive(Debug, Clone)]
pub(crate) struct Groups {
    pub(crate) client: AwsClient,
    pub(crate) ec2: Ec2Compute,
}

impl Groups {
    pub(crate) fn new(client: AwsClient) -> Self {
        let ec2 = Ec2Compute::builder(client.clone()).build();
        Self { client, ec2 }
    }

    async fn health(&self, group: &str) -> Result<Vec<TargetHealthDescription>, PortError> {
        let q = QueryRequest::new(Service::Elbv2, "DescribeTargetHealth")
            .param("TargetGroupArn", group);
        let d: DescribeTargetHealth = self.client.call_xml(&q).await?;
        Ok(d.result.descriptions.members)
    }

    /// The groups' targets with their instances' addresses: one
    /// `DescribeTargetHealth` per group and one `DescribeInstances` per
    /// 200 targets, whatever the number of targets.
    pub(crate) async fn read(
        &self,
        groups: &[&str],
    ) -> Result<BTreeMap<String, Vec<Registered>>, PortError> {
        let op = "elbv2 reading targets";
        let mut raw = Vec::new();
        for g in groups {
            raw.push(((*g).to_owned(), self.health(g).await?));
        }
        let mut ids: Vec<ServerId> = Vec::new();
        for (_, descriptions) in &raw {
            for d in descriptions {
                let id = ServerId::new(d.target.id.clone()).map_err(|e| {
                    PortError::new(
                        op,
                        ErrorKind::BadResponse(format!(
                            "target {:?} is not an instance id ({e}); only instance targets are supported",
                            d.target.id
                        )),
                    )
                })?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let addresses: BTreeMap<ServerId, IpAddr> = if ids.is_empty() {
            BTreeMap::new()
        } else {
            self.ec2
                .describe(&ids)
                .await?
                .into_iter()
                .filter(|s| s.status != ServerStatus::Deleted)
                .filter_map(|s| Some((s.id, *s.addresses.first()?)))
                .collect()
        };
        let mut out = BTreeMap::new();
        for (g, descriptions) in raw {
            let mut list = Vec::new();
            for d in descriptions {
                let server = ServerId::new(d.target.id.clone())
                    .map_err(|e| PortError::new(op, ErrorKind::BadResponse(e.to_string())))?;
                let port = d.target.port.ok_or_else(|| {
                    PortError::new(
                        op,
                        ErrorKind::BadResponse(format!("target {server} has no port")),
                    )
                })?;
                let (state, health) = member_of(&d.health.state);
                list.push(Registered {
                    address: addresses.get(&server).copied(),
                    server,
                    port,
                    state,
                    health,
                });
            }
            out.insert(g, list);
        }
        Ok(out)
    }

    /// Checks that each target's endpoint is its instance's primary
    /// private address (where an instance target's traffic goes), so that
    /// no member is ever reported at an endpoint it was not attached with.
    pub(crate) async fn check_endpoints(&self, targets: &[Target]) -> Result<(), PortError> {
        let ids: Vec<ServerId> = targets.iter().map(|t| t.server.clone()).collect();
        let known: BTreeMap<ServerId, Vec<IpAddr>> = self
            .ec2
            .describe(&ids)
            .await?
            .into_iter()
            .map(|s| (s.id, s.addresses))
            .collect();
        for t in targets {
            match known.get(&t.server).and_then(|a| a.first()) {
                Some(ip) if *ip == t.endpoint.ip() => {}
                Some(ip) => {
                    return Err(PortError::new(
                        "elbv2 registering targets",
                        ErrorKind::Invalid(format!(
                            "{} is reached at {ip}, not {}: ELBv2 sends an instance target's traffic to its primary private address",
                            t.server,
                            t.endpoint.ip()
                        )),
                    ))
                }
                None => {
                    return Err(PortError::new(
                        "elbv2 registering targets",
                        ErrorKind::Invalid(format!("{} is not an instance EC2 knows", t.server)),
                    ))
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn register(&self, group: &str, targets: &[Target]) -> Result<(), PortError> {
        if targets.is_empty() {
            return Ok(());
        }
        let mut q =
            QueryRequest::new(Service::Elbv2, "RegisterTargets").param("TargetGroupArn", group);
        for (i, t) in targets.iter().enumerate() {
            q = q
                .param(format!("Targets.member.{}.Id", i + 1), t.server.as_str())
                .param(
                    format!("Targets.member.{}.Port", i + 1),
                    t.endpoint.port().to_string(),
                );
        }
        self.client.call(&q).await.map(drop)
    }

    /// Registers `targets` in `group`, then checks that each is there and
    /// none is still draining: ELBv2 cannot make a draining target active
    /// again before its deregistration ends, so that is a temporary
    /// failure. A target missing after the call was registered while it
    /// drained, and the drain ended since: ELBv2 dropped the registration
    /// with the target, so it is registered once more.
    pub(crate) async fn register_active(
        &self,
        group: &str,
        targets: &[Target],
    ) -> Result<(), PortError> {
        let mut sending: Vec<Target> = targets.to_vec();
        for last in [false, true] {
            self.register(group, &sending).await?;
            let after = self.read(&[group]).await?;
            let rows = after.get(group).map(Vec::as_slice).unwrap_or_default();
            let draining: Vec<String> = rows
                .iter()
                .filter(|r| targets.iter().any(|t| t.server == r.server))
                .filter(|r| r.state == MemberState::Draining)
                .map(|r| r.server.to_string())
                .collect();
            if !draining.is_empty() {
                return Err(PortError::temporary(
                    "elbv2 registering targets",
                    format!(
                        "still draining in {group}, registered again once their deregistration ends: {}",
                        draining.join(", ")
                    ),
                ));
            }
            sending = targets
                .iter()
                .filter(|t| !rows.iter().any(|r| r.server == t.server))
                .cloned()
                .collect();
            if sending.is_empty() {
                return Ok(());
            }
            if last {
                break;
            }
        }
        Err(PortError::temporary(
            "elbv2 registering targets",
            format!(
                "registered twice but not in {group} yet: {}",
                sending
                    .iter()
                    .map(|t| t.server.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    /// Deregisters `targets` from `group`. ELBv2 answers success for a
    /// target that is not registered; moto answers `InvalidTarget`, and so
    /// does the retry of a call whose answer was lost after it took
    /// effect. Then the group is read and only the targets still
    /// registered (not already draining) are sent again, once.
    pub(crate) async fn deregister(
        &self,
        group: &str,
        targets: &[(ServerId, u16)],
    ) -> Result<(), PortError> {
        match self.deregister_once(group, targets).await {
            Err(e) if aws_error_code(&e) == Some("InvalidTarget") => {
                let now = self.read(&[group]).await?;
                let still: Vec<(ServerId, u16)> = targets
                    .iter()
                    .filter(|(id, port)| {
                        now.get(group).into_iter().flatten().any(|r| {
                            &r.server == id && r.port == *port && r.state != MemberState::Draining
                        })
                    })
                    .cloned()
                    .collect();
                self.deregister_once(group, &still).await
            }
            other => other,
        }
    }

    async fn deregister_once(
        &self,
        group: &str,
        targets: &[(ServerId, u16)],
    ) -> Result<(), PortError> {
        if targets.is_empty() {
            return Ok(());
        }
        let mut q =
            QueryRequest::new(Service::Elbv2, "DeregisterTargets").param("TargetGroupArn", group);
        for (i, (id, port)) in targets.iter().enumerate() {
            q = q
                .param(format!("Targets.member.{}.Id", i + 1), id.as_str())
                .param(format!("Targets.member.{}.Port", i + 1), port.to_string());
        }
        self.client.call(&q).await.map(drop)
    }

    /// Sets the group's deregistration delay (ELBv2's drain) to `drain`,
    /// within ELBv2's range. Capped at 3,599 s, not 3,600: moto refuses
    /// the top of the range, and one second of an hour changes nothing.
    pub(crate) async fn set_drain(&self, group: &str, drain: Duration) -> Result<(), PortError> {
        let secs = drain.as_secs().min(3599);
        let q = QueryRequest::new(Service::Elbv2, "ModifyTargetGroupAttributes")
            .param("TargetGroupArn", group)
            .param(
                "Attributes.member.1.Key",
                "deregistration_delay.timeout_seconds",
            )
            .param("Attributes.member.1.Value", secs.to_string());
        self.client.call(&q).await.map(drop)
    }

    /// Waits until every one of `servers` is healthy in `group`, or fails
    /// at `within` naming those that are not.
    pub(crate) async fn wait_healthy(
        &self,
        group: &str,
        servers: &[ServerId],
        within: Duration,
        poll: Duration,
    ) -> Result<(), PortError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let health = self.health(group).await?;
            let not_yet: Vec<&ServerId> = servers
                .iter()
                .filter(|s| {
                    !health
                        .iter()
                        .any(|d| d.target.id == s.as_str() && d.health.state == "healthy")
                })
                .collect();
            if not_yet.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let names: Vec<String> = not_yet.iter().map(|s| s.to_string()).collect();
                return Err(PortError::temporary(
                    "elbv2 waiting for target health",
                    format!(
                        "not healthy in {group} after {}s: {}",
                        within.as_secs(),
                        names.join(", ")
                    ),
                ));
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// Where the given servers are registered in `targets`, with their ports.
pub(crate) fn registered_ports(
    targets: &[Registered],
    servers: &[ServerId],
) -> Vec<(ServerId, u16)> {
    targets
        .iter()
        .filter(|r| servers.contains(&r.server))
        .map(|r| (r.server.clone(), r.port))
        .collect()
}
