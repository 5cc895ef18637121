//! The drain and warm-up hooks through a real Phoenix on the local stack,
//! against the demo app's `POST /drain` and `/sitemap.xml`: every server is
//! warmed before it is attached and drained before it is detached, and a
//! failing drain blocks the switch (which rolls back, the old pool still
//! serving) or is recorded and the switch goes on, as the policy says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use examples::local::{BalancerChoice, HooksChoice, LocalStack};
use phoenix_core::events::{Event, EventKind, HookKind, Outcome};
use phoenix_core::executor::ExecError;
use phoenix_core::labels::LabelSelector;
use phoenix_core::policy::HookFailure;
use phoenix_core::ports::{Compute, HookReport, HookTarget, LoadBalancer, PortError, ServerHooks};
use phoenix_core::Phoenix;
use phoenix_state::hooks::{Hooks, HttpDrain, WarmUp};
use support::options;

fn drain(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// The demo app's hooks, except that the servers of one release have a
/// broken drain endpoint (the app answers 405 to `POST /no-such-drain`).
struct BrokenDrainOf {
    release: &'static str,
    broken: Hooks,
    demo: Hooks,
}

#[async_trait::async_trait]
impl ServerHooks for BrokenDrainOf {
    async fn warm_up(&self, t: &HookTarget) -> Result<HookReport, PortError> {
        self.demo.warm_up(t).await
    }

    async fn drain(&self, t: &HookTarget) -> Result<HookReport, PortError> {
        if t.release.as_str() == self.release {
            self.broken.drain(t).await
        } else {
            self.demo.drain(t).await
        }
    }
}

/// A Phoenix over the stack's ports whose drain of `release`'s servers
/// fails, with the given hook policy.
fn with_hooks(stack: &LocalStack, release: &'static str, on_failure: HookFailure) -> Phoenix {
    let ports = stack.phoenix.ports();
    let hooks = BrokenDrainOf {
        release,
        broken: Hooks::builder()
            .drain(HttpDrain::post("/no-such-drain").timeout(Duration::from_secs(2)))
            .warm_up(WarmUp::sitemap("/sitemap.xml").budget(Duration::from_secs(3)))
            .build(),
        demo: LocalStack::demo_hooks(),
    };
    let mut policy = stack.phoenix.policy().clone();
    policy.hooks.on_failure = on_failure;
    Phoenix::builder()
        .compute(ports.compute.clone())
        .images(ports.images.clone())
        .balancer(Arc::new(stack.balancer.clone()))
        .boot_config(ports.boot.clone())
        .probe(ports.probe.clone())
        .store(ports.store.clone())
        .hooks(Arc::new(hooks))
        .policy(policy)
        .holder(format!("hooks-test-{on_failure:?}"))
        .lease_ttl(Duration::from_secs(2))
        .build()
        .unwrap()
}

async fn serving_releases(stack: &LocalStack) -> BTreeSet<String> {
    let snap = stack.phoenix.snapshot(&stack.deployment).await.unwrap();
    stack
        .balancer
        .members()
        .await
        .unwrap()
        .iter()
        .filter(|m| m.is_serving_healthy())
        .filter_map(|m| snap.owner_of(&m.server).map(|(p, _)| p.release.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_hooks_run_in_order_and_a_failing_drain_blocks_or_proceeds_as_the_policy_says() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(
        dir.path(),
        BalancerChoice::Embedded {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: None,
        },
    );
    o.servers = 2;
    o.policy = o.policy.map(|mut p| {
        p.rollout.batch_size = 2;
        p.rollout.max_surge = 2;
        p
    });
    o.hooks = HooksChoice::Demo;
    let stack = LocalStack::open(o).await.unwrap();
    let _reaper = support::ServerReaper::new(&stack);
    let (d, role) = (stack.deployment.clone(), stack.role.clone());
    stack.release("v1").await.unwrap();
    stack.release("v2").await.unwrap();
    let mut rx = stack.phoenix.subscribe();
    let plan = stack
        .phoenix
        .plan_deploy(&d, &role, &"v1".parse().unwrap())
        .await
        .unwrap();
    stack.phoenix.apply(plan).await.unwrap();
    let plan = stack
        .phoenix
        .plan_deploy(&d, &role, &"v2".parse().unwrap())
        .await
        .unwrap();
    stack.phoenix.apply(plan).await.unwrap();

    // Every server was warmed (the sitemap's five pages) before it was
    // attached, and drained (its sessions handed over) before it was
    // detached.
    let mut warmed = BTreeSet::new();
    let mut drained = BTreeSet::new();
    for e in drain(&mut rx) {
        match e.kind {
            EventKind::HookRan {
                hook: HookKind::WarmUp,
                server,
                ok,
                done,
                failed,
                detail,
                ..
            } => {
                println!("warm-up of {server}: {detail}");
                assert!(ok && done == 5 && failed == 0, "{detail}");
                warmed.insert(server);
            }
            EventKind::HookRan {
                hook: HookKind::Drain,
                server,
                ok,
                done,
                detail,
                ..
            } => {
                println!("drain of {server}: {detail}");
                // The warm-up's own requests to / and /slow count as
                // sessions on the demo app.
                assert!(ok && done >= 3, "{detail}");
                drained.insert(server);
            }
            EventKind::ServerAttached { server, .. } => {
                assert!(
                    warmed.contains(&server),
                    "{server} attached before its warm-up"
                )
            }
            EventKind::ServerDetached { server, .. } => {
                assert!(
                    drained.contains(&server),
                    "{server} detached before its drain"
                )
            }
            _ => {}
        }
    }
    assert_eq!(warmed.len(), 4, "two pools of two");
    assert_eq!(drained.len(), 2, "v1's servers left");

    // The v2 servers' drain fails (their app has no such endpoint) and the
    // policy blocks: the switch back to v1 fails before any v2 server
    // leaves, and rolls back; v2 keeps serving.
    let blocking = with_hooks(&stack, "v2", HookFailure::Block);
    let mut rx = blocking.subscribe();
    let plan = blocking
        .plan_deploy(&d, &role, &"v1".parse().unwrap())
        .await
        .unwrap();
    match blocking.apply(plan).await {
        Err(ExecError::Failed { report, .. }) => {
            assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
            assert!(
                report
                    .error
                    .as_deref()
                    .unwrap_or_default()
                    .contains("drain"),
                "{report:?}"
            );
        }
        other => panic!("a blocking drain failure must fail the switch: {other:?}"),
    }
    let failures = drain(&mut rx)
        .into_iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::HookRan {
                    hook: HookKind::Drain,
                    ok: false,
                    ..
                }
            )
        })
        .count();
    assert!(failures >= 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        serving_releases(&stack).await,
        ["v2".to_owned()].into_iter().collect()
    );

    // The same failure with Proceed: recorded, and the switch goes on.
    let proceeding = with_hooks(&stack, "v2", HookFailure::Proceed);
    let mut rx = proceeding.subscribe();
    let plan = proceeding
        .plan_deploy(&d, &role, &"v1".parse().unwrap())
        .await
        .unwrap();
    proceeding.apply(plan).await.unwrap();
    let recorded: Vec<String> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::HookRan {
                hook: HookKind::Drain,
                ok: false,
                detail,
                ..
            } => Some(detail),
            _ => None,
        })
        .collect();
    assert_eq!(
        recorded.len(),
        2,
        "both v2 servers' drains failed: {recorded:?}"
    );
    assert!(
        recorded.iter().all(|d| d.contains("HTTP 405")),
        "{recorded:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        serving_releases(&stack).await,
        ["v1".to_owned()].into_iter().collect()
    );

    for s in stack
        .compute
        .list(&LabelSelector::deployment(&d))
        .await
        .unwrap()
    {
        stack.compute.terminate(&s.id).await.unwrap();
    }
}
