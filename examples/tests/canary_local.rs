//! The canary stage on the local stack under live traffic: v1 serves
//! behind the embedded balancer at 200 requests per second; v2 is a
//! defective build (30% of its pages answer 500 once it has served a few,
//! which its smoke test misses). `deploy v2` with a canary policy attaches
//! one v2 server next to v1, reads the balancer's counters for it over the
//! analysis window, fails the gate and takes the canary out; v1 serves on,
//! untouched. It prints the requests sent and failed during the canary and
//! the time from the gate's decision to the canary's detach.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use examples::local::{BalancerChoice, LocalStack};
use phoenix_core::canary::{CanaryPolicy, CanaryShare};
use phoenix_core::events::{EventKind, Outcome};
use phoenix_core::executor::{ExecError, FailureCause};
use phoenix_core::model::PoolState;
use phoenix_core::ports::LoadBalancer;
use support::{assert_no_orphans, load, options};

const WINDOW: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_defective_canary_fails_its_gate_under_live_traffic_and_v1_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(
        dir.path(),
        BalancerChoice::Embedded {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: None,
        },
    );
    if let Some(p) = o.policy.as_mut() {
        p.canary = Some(CanaryPolicy {
            share: CanaryShare::Count(1),
            window: WINDOW,
            max_error_rate: 0.05,
            min_requests: 50,
            ..CanaryPolicy::default()
        });
    }
    let stack = LocalStack::open(o).await.unwrap();
    let (d, role) = (stack.deployment.clone(), stack.role.clone());
    stack.release("v1").await.unwrap();
    let first = stack
        .phoenix
        .plan_deploy(&d, &role, &"v1".parse().unwrap())
        .await
        .unwrap();
    stack.phoenix.apply(first).await.unwrap();
    stack.release_defective("v2", 30).await.unwrap();
    let plan = stack
        .phoenix
        .plan_deploy(&d, &role, &"v2".parse().unwrap())
        .await
        .unwrap();
    println!("{plan}");
    let v1_members: Vec<_> = stack
        .balancer
        .members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.server)
        .collect();
    assert_eq!(v1_members.len(), 3);

    // Every event with the moment it arrived.
    let seen: Arc<Mutex<Vec<(Instant, EventKind)>>> = Arc::default();
    let mut rx = stack.phoenix.subscribe();
    let listener = tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Ok(e) = rx.recv().await {
                seen.lock().unwrap().push((Instant::now(), e.kind));
            }
        }
    });

    let gen = load(stack.listen_addr().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let result = stack.phoenix.apply(plan).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traffic = gen.stop_and_finish().await.unwrap();
    listener.abort();

    let report = match result {
        Err(ExecError::Failed { report, .. }) => *report,
        other => panic!("the canary must fail its gate: {other:?}"),
    };
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    let Some(FailureCause::Canary {
        canary,
        baseline,
        reason,
        ..
    }) = report.cause.clone()
    else {
        panic!("a canary cause: {:?}", report.cause)
    };
    assert!(reason.contains("error rate"), "{reason}");
    assert!(canary.requests >= 50, "{canary}");
    assert!(canary.error_rate() > 0.2, "{canary}");
    assert_eq!(baseline.errors, 0, "{baseline}");

    // Gate decision (the canary step failing) to the canary detached.
    let events = seen.lock().unwrap().clone();
    let decided = events
        .iter()
        .find(|(_, k)| {
            matches!(
                k,
                EventKind::StepFailed {
                    rollback: false,
                    ..
                }
            )
        })
        .map(|(t, _)| *t)
        .expect("the gate's decision");
    let detached = events
        .iter()
        .find(|(_, k)| matches!(k, EventKind::ServerDetached { .. }))
        .map(|(t, _)| *t)
        .expect("the canary's detach");
    let to_detach = detached.saturating_duration_since(decided);

    println!("== canary under live traffic (embedded balancer, 200 req/s, v2 fails 30% of pages)");
    println!("   the balancer's canary window: canary {canary}; live pool {baseline}");
    println!("   gate: {reason}");
    println!(
        "   load across the canary and its rollback: {} sent, {} failed ({:.2}%), {} answered by v2",
        traffic.sent,
        traffic.failed,
        traffic.failed as f64 * 100.0 / traffic.sent.max(1) as f64,
        traffic.releases.get("v2").copied().unwrap_or(0)
    );
    println!("   gate decision to canary detached: {to_detach:?}");

    // Only the canary's share failed: far fewer than if v2 had taken the
    // whole fleet, and every failure is one of v2's 500s.
    assert!(traffic.sent > 500, "{traffic}");
    assert!(traffic.failed > 0, "the defect was live: {traffic}");
    assert!(
        traffic.failed * 10 < traffic.sent,
        "a canary's share, not the fleet's: {traffic}"
    );
    assert!(to_detach < Duration::from_secs(2), "{to_detach:?}");

    // v1 serves on, untouched; v2 is out and failed.
    let members = stack.balancer.members().await.unwrap();
    let serving: Vec<_> = members
        .iter()
        .filter(|m| m.is_serving_healthy())
        .map(|m| m.server.clone())
        .collect();
    assert_eq!(serving, v1_members, "v1 alone serves");
    let v1_left = events.iter().any(|(_, k)| {
        matches!(k, EventKind::ServerDetached { server, .. } if v1_members.contains(server))
    });
    assert!(!v1_left, "no v1 member left during the canary");
    let snap = stack.phoenix.snapshot(&d).await.unwrap();
    let v2 = snap
        .pools_of(&role)
        .find(|p| p.release.as_str() == "v2")
        .unwrap();
    assert_eq!(v2.state, PoolState::Failed);
    assert_no_orphans(&stack).await;
    stack.teardown().await.unwrap();
}
