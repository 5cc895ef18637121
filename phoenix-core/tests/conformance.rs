#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The conformance suites against the in-memory store and the simulated
//! cloud.

use std::sync::Arc;
use std::time::Duration;

use phoenix_core::conformance::{compute, load_balancer, state_store};
use phoenix_core::memory_store::MemoryStore;
use phoenix_core::ports::{BootPayload, Compute, LaunchRequest, Target};
use phoenix_core::sim::{SimCloud, SimConfig};

#[tokio::test(start_paused = true)]
async fn memory_store_conforms() {
    let store = MemoryStore::default();
    state_store::run(&store, state_store::StoreFixture::tokio_clock()).await;
    state_store::run_concurrent(Arc::new(store)).await;
}

fn local_boot(_: &str) -> BootPayload {
    BootPayload::Local {
        files: vec![],
        env: Default::default(),
    }
}

#[tokio::test(start_paused = true)]
async fn sim_compute_conforms() {
    for idempotent in [false, true] {
        let cloud = SimCloud::new(SimConfig {
            idempotent_launch: idempotent,
            ..SimConfig::default()
        });
        let image = cloud.certified_image("web", "1");
        compute::run(
            cloud.compute().as_ref(),
            &compute::ComputeFixture {
                image: image.id,
                flavor: None,
                boot: Box::new(local_boot),
                ready_within: Duration::from_secs(600),
                poll: Duration::from_secs(5),
            },
        )
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn sim_balancer_conforms() {
    sim_balancer(false, false).await;
}

/// The simulated balancer that stages and swaps atomically (as ELBv2's
/// weighted listener over two target groups).
#[tokio::test(start_paused = true)]
async fn sim_staging_balancer_conforms() {
    sim_balancer(true, false).await;
}

/// The simulated balancer that keeps standby members under its checks,
/// with and without staging.
#[tokio::test(start_paused = true)]
async fn sim_standby_balancer_conforms() {
    sim_balancer(false, true).await;
    sim_balancer(true, true).await;
}

async fn sim_balancer(stages: bool, keeps_standby: bool) {
    let cloud = SimCloud::new(SimConfig {
        stages,
        keeps_standby,
        ..SimConfig::default()
    });
    let image = cloud.certified_image("web", "1");
    let compute = cloud.compute();
    let requests: Vec<LaunchRequest> = (0..4)
        .map(|i| LaunchRequest {
            name: format!("b{i}"),
            image: image.id.clone(),
            flavor: None,
            boot: local_boot(""),
            labels: Default::default(),
            token: phoenix_core::id::IdempotencyToken::new(format!("t{i}")).unwrap(),
        })
        .collect();
    let servers: Vec<_> = compute
        .launch(&requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // The fourth one dies, so the balancer's checks fail it.
    cloud.kill(&servers[3].id);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let targets: Vec<Target> = servers
        .iter()
        .map(|s| Target {
            server: s.id.clone(),
            endpoint: s.endpoint(8080).unwrap(),
        })
        .collect();
    let fixture = load_balancer::LbFixture {
        healthy: targets[..3].to_vec(),
        unhealthy: Some(targets[3].clone()),
        settle: Duration::from_secs(60),
        drain: Duration::from_secs(10),
        poll: Duration::from_secs(1),
    };
    // A second adapter instance on the same simulated balancer, and a hand
    // that drains a member behind the adapter's back.
    let second = cloud.balancer();
    let hand = Hand(cloud.balancer());
    load_balancer::run_all(
        cloud.balancer().as_ref(),
        &fixture,
        &load_balancer::LbExtras {
            second: Some(second.as_ref()),
            out_of_band: Some(&hand),
            ..load_balancer::LbExtras::default()
        },
    )
    .await;
}

/// Drains a member by hand (maintenance someone forgot).
struct Hand(Arc<phoenix_core::sim::SimBalancer>);

#[async_trait::async_trait]
impl load_balancer::OutOfBand for Hand {
    fn sidelines(&self) -> Vec<load_balancer::Sidelined> {
        vec![load_balancer::Sidelined::Draining]
    }

    async fn sideline(&self, member: &Target, _how: load_balancer::Sidelined) {
        self.0.sideline(&member.server, Duration::from_secs(3600));
    }
}

#[tokio::test(start_paused = true)]
async fn sim_images_conform() {
    use phoenix_core::conformance::images::{run, ImagesFixture};
    use phoenix_core::ports::BakeSource;
    let cloud = SimCloud::new(SimConfig::default());
    run(
        cloud.images().as_ref(),
        &ImagesFixture {
            bake_from: Some(BakeSource::Artifact("build/web".into())),
            existing: None,
        },
    )
    .await;
}
