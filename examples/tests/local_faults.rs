//! Fault tests with real processes on the local stack: a live server
//! killed with SIGKILL under load, and the orchestrator itself killed at
//! every journaled step of a blue-green switch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use examples::local::{BalancerChoice, LocalStack};
use phoenix_core::labels::LabelSelector;
use phoenix_core::ports::{Compute, LoadBalancer, MemberHealth};
use support::{assert_no_orphans, commits, load, ok, options, orchestrate, TestBalancer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_server_killed_under_load_costs_no_request_and_heal_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let stack = LocalStack::open(options(
        dir.path(),
        BalancerChoice::Embedded {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: None,
        },
    ))
    .await
    .unwrap();
    stack.release("v1").await.unwrap();
    let (d, role) = (stack.deployment.clone(), stack.role.clone());
    let plan = stack
        .phoenix
        .plan_deploy(&d, &role, &"v1".parse().unwrap())
        .await
        .unwrap();
    stack.phoenix.apply(plan).await.unwrap();
    let gen = load(stack.listen_addr().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let snap = stack.phoenix.snapshot(&d).await.unwrap();
    let victim = snap.live_pool(&role).unwrap().slots[1]
        .server
        .clone()
        .unwrap();
    let pid = stack.server_pid(&victim).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    loop {
        let m = stack.balancer.members().await.unwrap();
        if m.iter()
            .any(|m| m.server == victim && m.health == MemberHealth::Unhealthy)
        {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(5), "never ejected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let plan = stack.phoenix.plan_heal(&d, &role).await.unwrap();
    assert!(
        plan.notes.iter().any(|n| n.contains(victim.as_str())),
        "{plan}"
    );
    stack.phoenix.apply(plan).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = gen.stop_and_finish().await.unwrap();
    assert!(report.sent > 300, "{report}");
    assert_eq!(report.failed, 0, "no request failed: {report}");
    let members = stack.balancer.members().await.unwrap();
    assert_eq!(members.iter().filter(|m| m.is_serving_healthy()).count(), 3);
    assert!(members.iter().all(|m| m.server != victim));
    assert_no_orphans(&stack).await;
    stack.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_killed_at_every_step_of_a_switch_converges_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket = dir.path().join("lb.sock");
    // The balancer lives in this process: the orchestrator is another one,
    // and it is the one that dies.
    let balancer = TestBalancer::start(&socket).await;
    let lb = &balancer.lb;
    ok(
        &orchestrate(&state, &socket, &["prepare", "v1", "v2"], None),
        "prepare",
    );
    ok(
        &orchestrate(&state, &socket, &["deploy", "v1"], None),
        "deploy v1",
    );
    let gen = load(lb.local_addr());

    // The first switch to v2 provisions its pool; a clean switch back to
    // v1 (the hot standby) counts the commits of the switches under test.
    ok(
        &orchestrate(&state, &socket, &["deploy", "v2"], None),
        "deploy v2",
    );
    let clean = orchestrate(&state, &socket, &["deploy", "v1"], None);
    ok(&clean, "deploy v1");
    let total = commits(&clean);
    assert!(total > 10, "a switch journals its steps: {total}");
    let observer = LocalStack::open(options(&state, BalancerChoice::Remote(socket.clone())))
        .await
        .unwrap();
    let mut target = "v2";
    let mut crashed = 0;
    for at in 1..=total {
        let out = orchestrate(&state, &socket, &["deploy", target], Some(at));
        assert_eq!(
            out.status.signal(),
            Some(9),
            "the orchestrator died at commit {at} of {total}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        crashed += 1;
        // Rerun the same command: it resumes and converges.
        ok(
            &orchestrate(&state, &socket, &["deploy", target], None),
            &format!("rerun after a kill at commit {at}"),
        );
        let snap = observer
            .phoenix
            .snapshot(&observer.deployment)
            .await
            .unwrap();
        let live = snap.live_pool(&observer.role).unwrap();
        assert_eq!(live.release.as_str(), target, "after a kill at commit {at}");
        let serving: BTreeSet<String> = lb
            .members()
            .await
            .unwrap()
            .iter()
            .filter(|m| m.state == phoenix_core::ports::MemberState::Active)
            .filter_map(|m| snap.owner_of(&m.server).map(|(p, _)| p.release.to_string()))
            .collect();
        assert_eq!(
            serving,
            [target.to_owned()].into_iter().collect(),
            "after a kill at commit {at}"
        );
        assert_no_orphans(&observer).await;
        assert_eq!(
            gen.progress().failed,
            0,
            "no request failed, after a kill at commit {at}"
        );
        target = if target == "v1" { "v2" } else { "v1" };
    }
    let report = gen.stop_and_finish().await.unwrap();
    println!("{crashed} kills of {total} commit points; traffic: {report}");
    assert_eq!(crashed, total);
    assert_eq!(report.failed, 0, "{report}");
    let servers = observer
        .compute
        .list(&LabelSelector::deployment(&observer.deployment))
        .await
        .unwrap();
    for s in servers {
        observer.compute.terminate(&s.id).await.unwrap();
    }
    lb.shutdown().await;
}
