//! Promotion across environments on the simulated cloud: production takes
//! a release only after its image served, live and healthy, in the
//! production-like staging deployment its rule names, for the soak time.
//! The planner refuses without the proof and prints it with it; the
//! executor proves it again, so an edited plan cannot skip it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::r;
use phoenix_core::executor::ExecError;
use phoenix_core::id::{DeploymentId, ImageId, RoleName};
use phoenix_core::model::{Deployment, Environment, Role};
use phoenix_core::ops::PlanningError;
use phoenix_core::plan::{Plan, Precondition};
use phoenix_core::sim::{SimCloud, SimConfig};
use phoenix_core::Phoenix;

const SOAK: Duration = Duration::from_secs(2 * 3600);

struct Fleet {
    cloud: SimCloud,
    phoenix: Phoenix,
    staging: DeploymentId,
    prod: DeploymentId,
    web: RoleName,
    images: BTreeMap<&'static str, ImageId>,
}

/// `shop-staging` (production-like) and `shop` (production, promoted from
/// staging after two hours), both with releases v1 and v2 of the same
/// certified images. `staging_flavor` sizes staging's role.
async fn fleet(staging_flavor: &str) -> Fleet {
    let cloud = SimCloud::new(SimConfig::default());
    let phoenix = cloud.phoenix().build().unwrap();
    let web = RoleName::new("web").unwrap();
    let staging = DeploymentId::new("shop-staging").unwrap();
    let prod = DeploymentId::new("shop").unwrap();
    let mut images = BTreeMap::new();
    for v in ["v1", "v2"] {
        let image = cloud.certified_image("web", v);
        phoenix.register_image(&image).await.unwrap();
        images.insert(v, image.id);
    }
    let deployments = [
        Deployment::new(
            staging.clone(),
            Environment::new("staging".parse().unwrap(), false).production_like(),
        )
        .with_role(Role::new(web.clone(), 2).with_flavor(staging_flavor)),
        Deployment::new(
            prod.clone(),
            Environment::new("prod".parse().unwrap(), true),
        )
        .with_role(Role::new(web.clone(), 2).with_flavor("general1-2"))
        .promoted_from(staging.clone(), SOAK),
    ];
    for d in &deployments {
        phoenix.register(d).await.unwrap();
        for (v, image) in &images {
            let mut map = BTreeMap::new();
            map.insert(web.clone(), image.clone());
            phoenix.create_release(&d.id, r(v), map).await.unwrap();
        }
    }
    Fleet {
        cloud,
        phoenix,
        staging,
        prod,
        web,
        images,
    }
}

impl Fleet {
    async fn deploy(&self, d: &DeploymentId, v: &str) {
        let plan = self.phoenix.plan_deploy(d, &self.web, &r(v)).await.unwrap();
        self.phoenix.apply(plan).await.unwrap();
    }

    async fn plan_prod(&self, v: &str) -> Result<Plan, PlanningError> {
        self.phoenix.plan_deploy(&self.prod, &self.web, &r(v)).await
    }
}

fn refusal(result: Result<Plan, PlanningError>) -> String {
    match result {
        Err(PlanningError::NotPromoted(e)) => e.to_string(),
        other => panic!("expected a promotion refusal, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn production_takes_a_release_only_after_it_soaked_in_staging() {
    let f = fleet("general1-2").await;

    let why = refusal(f.plan_prod("v1").await);
    assert!(why.contains("never served there"), "{why}");

    f.deploy(&f.staging, "v1").await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let why = refusal(f.plan_prod("v1").await);
    assert!(why.contains("of the 2h00m required"), "{why}");

    tokio::time::sleep(Duration::from_secs(3600)).await;
    let plan = f.plan_prod("v1").await.unwrap();
    let proof = plan
        .preconditions
        .iter()
        .find_map(|p| match p {
            Precondition::Promoted { proof } => Some(proof.clone()),
            _ => None,
        })
        .expect("the plan carries the proof");
    assert_eq!(proof.from, f.staging);
    assert_eq!(proof.image, f.images["v1"]);
    assert!(proof.live_for >= SOAK, "{proof}");
    let dry_run = plan.to_string();
    assert!(
        dry_run.contains("promoted: image") && dry_run.contains("in shop-staging"),
        "{dry_run}"
    );
    f.phoenix.apply(plan).await.unwrap();

    // Rollbacks are never held back by promotion: v2 soaks in staging,
    // goes live, and production can still return to v1 at once.
    f.deploy(&f.staging, "v2").await;
    tokio::time::sleep(SOAK).await;
    f.deploy(&f.prod, "v2").await;
    let plan = f
        .phoenix
        .plan_rollback(&f.prod, &f.web, None)
        .await
        .unwrap();
    f.phoenix.apply(plan).await.unwrap();
    assert!(
        f.cloud.violations().is_empty(),
        "{:?}",
        f.cloud.violations()
    );
}

#[tokio::test(start_paused = true)]
async fn an_edited_plan_that_leaves_the_proof_out_is_refused_at_apply() {
    let f = fleet("general1-2").await;
    f.deploy(&f.staging, "v1").await;
    tokio::time::sleep(SOAK).await;
    let proven = f.plan_prod("v1").await.unwrap();

    // The v1 plan turned by hand into a v2 plan (v2 never served in
    // staging), without its promotion precondition.
    let json = serde_json::to_string(&proven)
        .unwrap()
        .replace(f.images["v1"].as_str(), f.images["v2"].as_str())
        .replace("v1", "v2");
    let mut edited: Plan = serde_json::from_str(&json).unwrap();
    edited
        .preconditions
        .retain(|p| !matches!(p, Precondition::Promoted { .. }));
    assert_eq!(edited.target_release, Some(r("v2")));
    match f.phoenix.apply(edited).await {
        Err(ExecError::Precondition { actual, .. }) => {
            assert!(actual.contains("never served there"), "{actual}")
        }
        other => panic!("expected the promotion precondition to fail, got {other:?}"),
    }
    let snap = f.phoenix.snapshot(&f.prod).await.unwrap();
    assert!(snap.live_pool(&f.web).is_none(), "nothing went live");
    assert_eq!(
        f.cloud.stats().servers_launched,
        2,
        "only staging's servers"
    );
}

#[tokio::test(start_paused = true)]
async fn staging_must_be_production_like() {
    let f = fleet("tiny").await;
    f.deploy(&f.staging, "v1").await;
    tokio::time::sleep(SOAK).await;
    let why = refusal(f.plan_prod("v1").await);
    assert!(why.contains("its role web differs"), "{why}");
}
