//! Crash safety with real processes: an orchestrator (`phoenix-local`) is
//! killed with SIGKILL at every journaled commit of a blue-green switch and
//! of a rolling replacement, on SQLite and on PostgreSQL, and the same
//! command is run again. Every rerun must converge: the target release
//! serves alone, no pool is duplicated, no server is orphaned or launched
//! twice, the interrupted operation is finished by its second holder, no
//! request fails, and a monitor sampling the balancer every 10 ms never
//! sees fewer healthy serving members than the policy's floor.
//!
//! Kill points alternate between "right after the N-th commit landed" (odd
//! N) and "just before it" (even N), so both sides of every step are hit
//! across the switches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use examples::local::{BalancerChoice, HooksChoice, LocalStack};
use phoenix_core::labels::LabelSelector;
use phoenix_core::model::PoolState;
use phoenix_core::ports::{Compute, LoadBalancer, MemberState};
use phoenix_state::history;
use support::{assert_no_orphans, commits, load, ok, options, tally, FloorMonitor};
use support::{Orchestrator, PgSchema, ServerReaper, TestBalancer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Blue-green switches between two kept pools.
    Switch,
    /// Rolling replacements, one server per batch.
    Rolling,
}

impl Op {
    /// Servers per pool: three for switches; two for rolling replacements,
    /// which still replace them batch by batch (one server per batch) and
    /// keep the run's many kill points within a few minutes.
    fn servers(self) -> usize {
        match self {
            Self::Switch => 3,
            Self::Rolling => 2,
        }
    }
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} commit points, {} kills, {} operations resumed by a second holder; \
             {} requests, {} failed; min healthy {} vs floor {} over {} samples; {:.0}s",
            self.commit_points,
            self.killed,
            self.resumed,
            self.sent,
            self.failed,
            self.min_healthy,
            self.floor,
            self.samples,
            self.took.as_secs_f64()
        )
    }
}

/// What one run saw, for the report.
#[derive(Debug)]
struct RunReport {
    commit_points: u64,
    killed: u64,
    resumed: u64,
    sent: u64,
    failed: u64,
    min_healthy: usize,
    floor: usize,
    samples: u32,
    took: Duration,
}

/// The runs share two cores with their servers and traffic: one at a time,
/// so that a slow health check is never mistaken for a broken floor.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn crash_everywhere(op: Op, state: Option<String>) -> RunReport {
    let _turn = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let servers = op.servers();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("state");
    let socket = dir.path().join("lb.sock");
    let tb = TestBalancer::start(&socket).await;
    let mut orch = Orchestrator::new(&work, &socket);
    orch.state = state.clone();
    orch.flags = vec!["--servers".into(), servers.to_string()];
    if op == Op::Rolling {
        orch.flags
            .extend(["--batch", "1", "--surge", "1"].map(String::from));
    }
    let verb = match op {
        Op::Switch => "deploy",
        Op::Rolling => "rolling",
    };
    ok(&orch.run(&["prepare", "v1", "v2"], None), "prepare");
    ok(&orch.run(&["deploy", "v1"], None), "deploy v1");
    tb.wait_healthy(servers, Duration::from_secs(10)).await;

    let mut observer_options = options(&work, BalancerChoice::Remote(socket.clone()));
    observer_options.servers = servers;
    observer_options.state = state.clone();
    observer_options.hooks = HooksChoice::None;
    let observer = LocalStack::open(observer_options).await.unwrap();
    let _reaper = ServerReaper::new(&observer);
    let policy = LocalStack::policy(servers);
    let floor = policy.rollout.min_healthy.resolve(servers);
    assert_eq!(
        floor, servers,
        "the local policy keeps every server serving"
    );

    let gen = load(tb.lb.local_addr());
    let monitor = FloorMonitor::start(tb.lb.clone(), floor);

    // A clean run counts the commits of the operation under test: for
    // switches, one between the two kept pools (after v2's pool exists);
    // for rolling replacements, one that replaces v1's pool by v2's.
    let (mut target, total) = match op {
        Op::Switch => {
            ok(&orch.run(&["deploy", "v2"], None), "deploy v2");
            let clean = orch.run(&["deploy", "v1"], None);
            ok(&clean, "deploy v1");
            ("v2", commits(&clean))
        }
        Op::Rolling => {
            let clean = orch.run(&["rolling", "v2"], None);
            ok(&clean, "rolling v2");
            ("v1", commits(&clean))
        }
    };
    assert!(total > 10, "an operation journals its steps: {total}");

    let mut killed = 0;
    let mut resumed = 0;
    for at in 1..=total {
        let mut cmd = orch.command(&[verb, target]);
        cmd.env("PHOENIX_CRASH_AT_COMMIT", at.to_string());
        if at % 2 == 0 {
            cmd.env("PHOENIX_CRASH_BEFORE_WRITE", "1");
        }
        let out = cmd.output().unwrap();
        let context = format!("{verb} {target}, killed at commit {at} of {total}");
        match out.status.signal() {
            Some(9) => killed += 1,
            _ => {
                // A run that needed fewer commits than the clean one (a
                // step found done) ends by itself: it must have succeeded.
                ok(&out, &context);
                eprintln!("{context}: finished in {} commits", commits(&out));
            }
        }
        let interrupted = observer
            .phoenix
            .snapshot(&observer.deployment)
            .await
            .unwrap()
            .record
            .value
            .active_operation;

        // The same command again: it resumes and converges.
        ok(
            &orch.run(&[verb, target], None),
            &format!("rerun after: {context}"),
        );
        let snap = observer
            .phoenix
            .snapshot(&observer.deployment)
            .await
            .unwrap();
        assert!(
            snap.record.value.active_operation.is_none(),
            "{context}: finished"
        );
        let live = snap.live_pool(&observer.role).unwrap();
        assert_eq!(live.release.as_str(), target, "{context}");
        let serving = tally(
            tb.lb
                .members()
                .await
                .unwrap()
                .iter()
                .filter(|m| m.state == MemberState::Active)
                .map(|m| {
                    snap.owner_of(&m.server)
                        .map_or("unknown".to_owned(), |(p, _)| p.release.to_string())
                }),
        );
        assert_eq!(
            serving.into_iter().collect::<Vec<_>>(),
            vec![(target.to_owned(), servers)],
            "{context}: the target serves alone, at full size"
        );
        // No duplicate pool: one kept pool per release, at most one pool
        // per operation.
        let kept = tally(
            snap.pools_of(&observer.role)
                .filter(|p| p.state != PoolState::Deleted)
                .map(|p| p.release.to_string()),
        );
        assert!(kept.values().all(|n| *n == 1), "{context}: pools {kept:?}");
        let by_op = tally(snap.pools.values().map(|p| p.value.created_by.to_string()));
        assert!(by_op.values().all(|n| *n == 1), "{context}: {by_op:?}");
        // No orphan, no server launched twice.
        assert_no_orphans(&observer).await;
        let labelled = observer
            .compute
            .list(&LabelSelector::deployment(&observer.deployment))
            .await
            .unwrap();
        let tokens = tally(labelled.iter().filter_map(|s| s.labels.token()));
        assert!(
            tokens.values().all(|n| *n == 1),
            "{context}: duplicate launches {tokens:?}"
        );
        // The interrupted operation was finished by a second holder, and
        // its history says so.
        if let Some(op_id) = interrupted {
            let h = history::operation_history(
                observer.base_store.as_ref(),
                &observer.deployment,
                &op_id,
            )
            .await
            .unwrap();
            let holders: Vec<&str> = h.holders().iter().map(|x| x.holder.as_str()).collect();
            assert!(holders.len() >= 2, "{context}: holders {holders:?}");
            assert_ne!(holders[0], holders[1], "{context}");
            assert!(
                h.holders().windows(2).all(|w| w[0].token < w[1].token),
                "{context}: each holder has a newer fencing token"
            );
            resumed += 1;
        }
        assert_eq!(gen.progress().failed, 0, "{context}: no request failed");
        monitor.assert_held(&context);
        target = if target == "v1" { "v2" } else { "v1" };
    }
    let traffic = gen.stop_and_finish().await.unwrap();
    monitor.assert_held("at the end");
    let (min_healthy, samples) = monitor.stop().await;
    assert_eq!(traffic.failed, 0, "{traffic}");
    assert!(
        killed >= total - 1,
        "killed {killed} of {total} commit points"
    );
    assert!(resumed > 0);
    for s in observer
        .compute
        .list(&LabelSelector::deployment(&observer.deployment))
        .await
        .unwrap()
    {
        observer.compute.terminate(&s.id).await.unwrap();
    }
    tb.lb.shutdown().await;
    let report = RunReport {
        commit_points: total,
        killed,
        resumed,
        sent: traffic.sent,
        failed: traffic.failed,
        min_healthy,
        floor,
        samples,
        took: started.elapsed(),
    };
    println!(
        "{op:?} on {}: {report}",
        if state.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_switch_killed_at_every_commit_converges() {
    crash_everywhere(Op::Switch, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rolling_replace_killed_at_every_commit_converges() {
    crash_everywhere(Op::Rolling, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgresql: run the full test script"]
async fn postgres_switch_killed_at_every_commit_converges() {
    let schema = PgSchema::new("switch");
    crash_everywhere(Op::Switch, Some(schema.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgresql: run the full test script"]
async fn postgres_rolling_replace_killed_at_every_commit_converges() {
    let schema = PgSchema::new("rolling");
    crash_everywhere(Op::Rolling, Some(schema.url.clone())).await;
}
