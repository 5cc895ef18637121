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

/// A plan for `w` with custom steps (a plan no planner would make), made
/// against its current records, that halts on failure.
pub async fn custom_plan(w: &World, steps: Vec<phoenix_core::plan::Step>) -> Plan {
    let mut plan = w.phoenix.plan_heal(&w.shop, &w.web).await.unwrap();
    plan.steps = steps;
    plan.on_failure = phoenix_core::policy::FailurePolicy::Halt;
    plan
}

/// Changes a pool's record by hand (as a crash at the worst moment, or a
/// lying cloud, would have left it).
pub async fn edit_pool(
    w: &World,
    pool: &phoenix_core::id::PoolId,
    edit: impl FnOnce(&mut phoenix_core::model::Pool),
) {
    use phoenix_core::ports::{Commit, Expect, StateStore, Write};
    use phoenix_core::records::key;
    let k = key::pool(&w.shop, pool);
    let stored = w
        .phoenix
        .records()
        .get::<phoenix_core::model::Pool>(&k, "pool")
        .await
        .unwrap()
        .unwrap();
    let mut value = stored.value;
    edit(&mut value);
    w.cloud
        .store()
        .commit(Commit {
            fence: None,
            writes: vec![Write {
                key: k,
                expect: Expect::Version(stored.version),
                value: Some(serde_json::to_vec(&value).unwrap()),
            }],
            events: vec![],
        })
        .await
        .unwrap();
}

/// The live pool's id.
pub async fn live(w: &World) -> phoenix_core::id::PoolId {
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    snap.live_pool(&w.web).unwrap().id.clone()
}

/// The server of a slot.
pub async fn server_of(
    w: &World,
    pool: &phoenix_core::id::PoolId,
    slot: u32,
) -> phoenix_core::model::Slot {
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    snap.pool(pool).unwrap().slot(slot).unwrap().clone()
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
