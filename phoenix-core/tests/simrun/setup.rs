//! A seed's world: the cloud's behaviour and faults, the policy, and the
//! deployment with its releases, a floating IP the operator points by
//! hand, another deployment sharing the balancer, and a release whose
//! image only claims to be certified.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use phoenix_core::labels::Labels;
use phoenix_core::policy::{Capacity, Cutover};
use phoenix_core::ports::{BootPayload, Compute, LaunchRequest, LoadBalancer, Target};
use phoenix_core::sim::{Faults, SimBootConfig, SimCloud, SimConfig};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{r, Sim, Tally, CANARY};

fn random_faults(rng: &mut ChaCha8Rng) -> Faults {
    let mut p = |max: f64| {
        if rng.random_bool(0.5) {
            rng.random_range(0.0..max)
        } else {
            0.0
        }
    };
    let mut f = Faults {
        launch_failure: p(0.1),
        stuck_in_build: p(0.1),
        boot_error: p(0.1),
        throttle: p(0.1),
        server_error: p(0.1),
        lost_response: p(0.2),
        not_found_after_launch: p(0.3),
        lag_beyond_window: p(0.1),
        terminate_unseen_lost: p(0.5),
        lb_failure: p(0.05),
        lb_partial: p(0.2),
        swap_answer_lost: p(0.3),
        staged_death: p(0.3),
        stuck_draining: p(0.3),
        stand_in_ids: p(0.3),
        lb_empty_read: p(0.15),
        hang: p(0.02),
        slow: p(0.05),
        member_death: p(0.15),
        flaky_smoke: p(0.05),
        store_blip: p(0.01),
        bad_releases: BTreeSet::new(),
        unhealthy_releases: BTreeSet::new(),
        smoke_fails_after: BTreeMap::new(),
        ..Faults::none()
    };
    // EC2 reports a start as a launch: most clouds of the mix do.
    f.start_resets_launch_time = rng.random_bool(0.7);
    f
}

/// Servers of another deployment, behind the same balancer.
async fn neighbours(cloud: &SimCloud, n: usize) {
    let image = cloud.certified_image("shop-neighbour", "1");
    let requests: Vec<LaunchRequest> = (0..n)
        .map(|i| {
            let mut labels = Labels::new();
            labels.insert("phoenix-deployment", "other");
            labels.insert("phoenix-role", "web");
            LaunchRequest {
                name: format!("neighbour-{i}"),
                image: image.id.clone(),
                flavor: None,
                boot: BootPayload::Local {
                    files: vec![],
                    env: Default::default(),
                },
                labels,
                token: phoenix_core::id::IdempotencyToken::new(format!("neighbour-{i}")).unwrap(),
            }
        })
        .collect();
    let servers: Vec<_> = cloud
        .compute()
        .launch(&requests)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let targets: Vec<Target> = servers
        .iter()
        .filter_map(|s| {
            Some(Target {
                server: s.id.clone(),
                endpoint: s.endpoint(8080)?,
            })
        })
        .collect();
    cloud.balancer().attach(&targets).await.unwrap();
}

pub async fn world(seed: u64, rng: &mut ChaCha8Rng) -> Sim {
    let size = rng.random_range(2..=6usize);
    let batch = rng.random_range(1..=3usize);
    let mut faults = random_faults(rng);
    // A bad day at the provider: launch answers get lost, servers are
    // listed minutes after they exist, boots fail, secrets rotate fast.
    // Steps then fail while launches are in flight, and resumes meet them.
    let storm = rng.random_bool(0.15);
    if storm {
        faults.lost_response = 0.4;
        faults.not_found_after_launch = 0.8;
        faults.boot_error = 0.3;
    }
    // Long-lived connections (websockets, long polls) in some seeds: a
    // detached member drains for minutes, longer than any retry budget.
    let long_drain = rng.random_bool(0.2);
    // Some balancers stage a pool and switch all traffic in one call
    // (ELBv2's weighted listener): those seeds cut over that way.
    let switch = rng.random_bool(0.3);
    // Some balancers keep a pool that left the traffic as standby members
    // under their checks (the embedded balancer, HAProxy, ELBv2's idle
    // group): a rollback to it needs no re-check, unless a hand stopped
    // those checks. Drawn apart, so that the rest of each seed's world is
    // what it was before standby members existed.
    let mut apart = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed ^ 0x57a4_db1e);
    let keeps_standby = apart.random_bool(0.5);
    if keeps_standby && apart.random_bool(0.5) {
        faults.standby_checks_stop = apart.random_range(0.0..0.5);
    }
    let config = SimConfig {
        seed,
        drain_time: if long_drain {
            Duration::from_secs(rng.random_range(60..=240))
        } else {
            SimConfig::default().drain_time
        },
        idempotent_launch: rng.random_bool(if storm { 0.5 } else { 0.3 }),
        stop_start: rng.random_bool(0.7),
        death_horizon: Duration::from_secs(4 * 3600),
        // Some balancers drain to the end (ELBv2): attach cannot bring a
        // draining member back before.
        reactivates_draining: !rng.random_bool(0.2),
        stages: switch,
        keeps_standby,
        // Some providers terminate many servers in one call (EC2).
        max_terminate_batch: if rng.random_bool(0.3) {
            rng.random_range(2..=50)
        } else {
            1
        },
        max_describe_batch: if rng.random_bool(0.3) {
            rng.random_range(1..=3)
        } else {
            1000
        },
        // Hooks finish within the policy's hook timeout (failing hooks are
        // tested on their own).
        hook_time: Duration::from_secs(45),
        // Some providers lag for minutes: terminations of lost launches then
        // fall inside the window.
        consistency_window: if storm || rng.random_bool(0.3) {
            Duration::from_secs(300)
        } else {
            Duration::from_secs(30)
        },
        faults: faults.clone(),
        ..SimConfig::default()
    };
    let mut boot =
        SimBootConfig::default().with_secret("prod".parse().unwrap(), "DB_PASSWORD", CANARY);
    // Secrets rotate, often quickly enough to change between a crash and
    // its resume.
    match if storm { 0 } else { rng.random_range(0..10) } {
        0..=2 => boot = boot.rotating(Duration::from_secs(rng.random_range(20..300))),
        3 => boot = boot.rotating(Duration::from_secs(rng.random_range(300..3600))),
        _ => {}
    }
    let cloud = SimCloud::new(config).with_boot(boot);
    cloud.strict();
    let mut policy = cloud.policy();
    policy.rollout.batch_size = batch;
    policy.rollout.max_surge = if rng.random_bool(0.5) {
        batch
    } else {
        2 * batch
    };
    policy.rollout.min_healthy = if rng.random_bool(0.5) {
        Capacity::Percent(100)
    } else {
        Capacity::Absolute(size - 1)
    };
    // A small launch budget fails steps while launches are in flight, so
    // compensation meets lost launches inside the consistency window.
    policy.provision.replace_budget = rng.random_range(0..=if storm { 1 } else { 3 });
    policy.rollout.auto_rollback = rng.random_bool(0.8);
    policy.rollout.keep_failed = rng.random_bool(0.5);
    policy.retention.keep = rng.random_range(0..=2);
    // Mostly cold standbys: rollbacks and reuses start stopped servers.
    policy.retention.hot = usize::from(rng.random_bool(0.3));
    policy.refresh.max_age = Duration::from_secs(3 * 3600);
    policy.refresh.max_replacements = 4;
    policy.refresh.window = Duration::from_secs(1800);
    if switch {
        policy.rollout.cutover = Cutover::Switch;
    }
    if long_drain {
        policy.rollout.drain = Duration::from_secs(300);
    }
    let hooks = rng.random_bool(0.5);
    let shared = rng.random_bool(0.5);
    let mut sim = Sim {
        phoenix: cloud.phoenix().build().unwrap(),
        cloud,
        shop: "shop".parse().unwrap(),
        web: "web".parse().unwrap(),
        policy,
        hooks,
        generation: 0,
        seed,
        batch,
        violations: Vec::new(),
        tally: Tally::default(),
        ops: 0,
        emergency_failed: false,
    };
    sim.phoenix = sim.orchestrator("orchestrator-0");
    // The set-up itself runs without faults.
    sim.cloud.set_faults(Faults::none());
    let (shop, web) = sim.cloud.demo_deployment(&sim.phoenix, size).await.unwrap();
    sim.shop = shop;
    sim.web = web.clone();
    if shared {
        neighbours(&sim.cloud, 2).await;
    }
    // v4's image only claims to be certified: no release may be made of
    // it for production, and nothing of it may ever launch.
    let claimed = sim.cloud.claimed_certified_image("web", "v4");
    let mut images = BTreeMap::new();
    images.insert(web, claimed.id);
    let _ = sim.phoenix.create_release(&sim.shop, r("v4"), images).await;
    sim.cloud.set_faults(faults);
    sim
}
