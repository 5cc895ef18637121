//! Shared set-up for the simulated-cloud tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use phoenix_core::events::{Event, EventKind};
use phoenix_core::executor::OperationReport;
use phoenix_core::id::{DeploymentId, ReleaseLabel, RoleName};
use phoenix_core::plan::Plan;
use phoenix_core::sim::{SimCloud, SimConfig};
use phoenix_core::Phoenix;

pub struct World {
    pub cloud: SimCloud,
    pub phoenix: Phoenix,
    pub shop: DeploymentId,
    pub web: RoleName,
}

pub fn r(label: &str) -> ReleaseLabel {
    ReleaseLabel::new(label).unwrap()
}

pub async fn world(config: SimConfig, size: usize) -> World {
    world_with(config, size, |p| p).await
}

pub async fn world_with(
    config: SimConfig,
    size: usize,
    policy: impl FnOnce(phoenix_core::policy::Policy) -> phoenix_core::policy::Policy,
) -> World {
    let cloud = SimCloud::new(config);
    let phoenix = cloud
        .phoenix()
        .policy(policy(cloud.policy()))
        .build()
        .unwrap();
    let (shop, web) = cloud.demo_deployment(&phoenix, size).await.unwrap();
    World {
        cloud,
        phoenix,
        shop,
        web,
    }
}

impl World {
    pub async fn deploy(&self, release: &str) -> OperationReport {
        let plan = self
            .phoenix
            .plan_deploy(&self.shop, &self.web, &r(release))
            .await
            .unwrap();
        self.apply(plan).await
    }

    pub async fn apply(&self, plan: Plan) -> OperationReport {
        match self.phoenix.apply(plan).await {
            Ok(report) => report,
            Err(e) => panic!("apply failed: {e}: {:?}", e.report()),
        }
    }

    /// Ground truth: how many serving members run each release.
    pub async fn serving(&self) -> BTreeMap<String, usize> {
        let snap = self.phoenix.snapshot(&self.shop).await.unwrap();
        let mut out = BTreeMap::new();
        for m in self.cloud.members() {
            if m.state != phoenix_core::ports::MemberState::Active {
                continue;
            }
            let release = snap
                .owner_of(&m.server)
                .map_or("unknown".to_owned(), |(p, _)| p.release.to_string());
            *out.entry(release).or_insert(0) += 1;
        }
        out
    }

    /// Servers that exist in the cloud (not terminated), by release label.
    pub fn running_by_release(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for s in self.cloud.servers() {
            let release = s
                .labels
                .release()
                .map_or("none".to_owned(), |r| r.to_string());
            *out.entry(release).or_insert(0) += 1;
        }
        out
    }

    pub fn assert_no_violations(&self) {
        let v = self.cloud.violations();
        assert!(v.is_empty(), "invariant violations: {v:#?}");
    }
}

/// Drains a subscription.
pub fn drain(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

pub fn count(events: &[Event], f: impl Fn(&EventKind) -> bool) -> usize {
    events.iter().filter(|e| f(&e.kind)).count()
}
