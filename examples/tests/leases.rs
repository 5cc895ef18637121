//! One writer per deployment, across real orchestrator processes
//! (`phoenix-local`) sharing one state store (PostgreSQL, as orchestrators
//! on several hosts would, and SQLite):
//!
//! - while one orchestrator runs an operation, a second one fails at once
//!   with the typed "busy" error naming the first and when its lease
//!   expires, and a third one given `--lease-wait-ms` waits and then
//!   proceeds;
//! - an orchestrator frozen (SIGSTOP) just before a commit, past its lease's
//!   expiry, while another takes the deployment over and finishes its
//!   operation, is refused that commit by the fencing token when it is let
//!   go (SIGCONT): nothing it would have written lands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use examples::local::{BalancerChoice, HooksChoice, LocalStack};
use phoenix_core::labels::LabelSelector;
use phoenix_core::ports::{Compute, StateStore};
use phoenix_core::records::key;
use phoenix_state::history;
use support::{ok, options, Orchestrator, PgSchema, ServerReaper, TestBalancer};

struct Setup {
    // Dropped first: the servers go before their directory.
    _reaper: ServerReaper,
    _dir: tempfile::TempDir,
    tb: TestBalancer,
    orch: Orchestrator,
    observer: LocalStack,
}

async fn setup(state: Option<String>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("state");
    let socket = dir.path().join("lb.sock");
    let tb = TestBalancer::start(&socket).await;
    let mut orch = Orchestrator::new(&work, &socket);
    orch.state = state.clone();
    ok(&orch.run(&["prepare", "v1", "v2"], None), "prepare");
    ok(&orch.run(&["deploy", "v1"], None), "deploy v1");
    let mut o = options(&work, BalancerChoice::Remote(socket));
    o.state = state;
    o.hooks = HooksChoice::None;
    let observer = LocalStack::open(o).await.unwrap();
    Setup {
        _reaper: ServerReaper::new(&observer),
        _dir: dir,
        tb,
        orch,
        observer,
    }
}

impl Setup {
    fn as_holder(&self, holder: &str, extra: &[&str]) -> Orchestrator {
        let mut o = self.orch.clone();
        o.flags = ["--holder", holder]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        o
    }

    fn store(&self) -> &dyn StateStore {
        self.observer.base_store.as_ref()
    }

    async fn holder(&self) -> Option<String> {
        self.store()
            .current_lease(&key::lease(&self.observer.deployment))
            .await
            .unwrap()
            .map(|l| l.holder)
    }

    async fn wait_for_holder(&self, holder: &str, child: &mut Child) {
        let started = Instant::now();
        while self.holder().await.as_deref() != Some(holder) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{holder} ended before it took the lease"
            );
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{holder} never held the lease"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn teardown(self) {
        for s in self
            .observer
            .compute
            .list(&LabelSelector::deployment(&self.observer.deployment))
            .await
            .unwrap()
        {
            self.observer.compute.terminate(&s.id).await.unwrap();
        }
        self.tb.lb.shutdown().await;
    }
}

fn spawn(o: &Orchestrator, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = o.command(args);
    cmd.envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

fn finish(child: Child) -> std::process::Output {
    child.wait_with_output().unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Kills a child that a failed assertion left behind.
struct Reap(Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn busy_or_wait(state: Option<String>) {
    let s = setup(state).await;
    // A switches to v2: it provisions a pool, so it holds the deployment
    // for a few seconds.
    let a = s.as_holder("orchestrator-a", &[]);
    let mut child = spawn(&a, &["deploy", "v2"], &[]);
    s.wait_for_holder("orchestrator-a", &mut child).await;
    let mut guard = Reap(Some(child));

    // B does not wait: the typed error names A and its lease's expiry.
    let b = s.as_holder("orchestrator-b", &["--lease-wait-ms", "0"]);
    let out = b.run(&["deploy", "v2"], None);
    let said = stderr(&out);
    println!(
        "orchestrator-b (exit {:?}): {}",
        out.status.code(),
        said.trim()
    );
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("deployment is busy: orchestrator-a holds its lease until"),
        "{said}"
    );

    // C waits for it: asked while A still holds the deployment, it
    // proceeds once A is done.
    let c = s.as_holder("orchestrator-c", &["--lease-wait-ms", "60000"]);
    let waiting = spawn(&c, &["rollback"], &[]);
    let mut waiting_guard = Reap(Some(waiting));
    assert_eq!(s.holder().await.as_deref(), Some("orchestrator-a"));
    let a_out = finish(guard.0.take().unwrap());
    ok(&a_out, "orchestrator-a");
    let c_out = finish(waiting_guard.0.take().unwrap());
    ok(&c_out, "orchestrator-c");
    let h = history::deployment_history(s.store(), &s.observer.deployment)
        .await
        .unwrap();
    let by = |holder: &str| {
        h.operations
            .iter()
            .find(|o| o.holders.iter().any(|x| x.holder == holder))
            .cloned()
    };
    let a_op = by("orchestrator-a").expect("A's switch is recorded");
    let c_op = by("orchestrator-c").expect("C's rollback is recorded");
    assert!(by("orchestrator-b").is_none(), "B changed nothing");
    assert!(
        c_op.started_at.unwrap() >= a_op.finished_at.unwrap(),
        "C started after A finished: {a_op:?} {c_op:?}"
    );
    assert!(c_op.holders[0].token > a_op.holders[0].token);
    let snap = s
        .observer
        .phoenix
        .snapshot(&s.observer.deployment)
        .await
        .unwrap();
    assert_eq!(
        snap.live_pool(&s.observer.role).unwrap().release.as_str(),
        "v1"
    );
    s.teardown().await;
}

/// Every record of the deployment, and how many events it has.
async fn dump(
    store: &dyn StateStore,
    deployment: &phoenix_core::id::DeploymentId,
) -> (Vec<(String, phoenix_core::ports::Versioned)>, usize) {
    let prefix = key::deployment(deployment);
    let records = store.list(&prefix).await.unwrap();
    let events = store
        .events(&key::events(deployment), 0, usize::MAX)
        .await
        .unwrap();
    (records, events.len())
}

fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name in parentheses.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|s| s == "T")
        })
        .unwrap_or(false)
}

async fn stalled_holder_is_fenced(state: Option<String>) {
    let s = setup(state).await;
    ok(&s.orch.run(&["deploy", "v2"], None), "deploy v2");
    // A switches back to v1 and freezes just before its 5th commit, in the
    // middle of the switch, holding a lease of 1 s.
    let a = s.as_holder("orchestrator-a", &[]);
    let child = spawn(&a, &["deploy", "v1"], &[("PHOENIX_STOP_AT_COMMIT", "5")]);
    let pid = child.id();
    let mut guard = Reap(Some(child));
    let started = Instant::now();
    while !is_stopped(pid) {
        assert!(
            guard.0.as_mut().unwrap().try_wait().unwrap().is_none(),
            "A ended before it froze"
        );
        assert!(started.elapsed() < Duration::from_secs(30), "A never froze");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let frozen_op = s
        .observer
        .phoenix
        .snapshot(&s.observer.deployment)
        .await
        .unwrap()
        .record
        .value
        .active_operation
        .expect("A froze in the middle of its operation");
    // Past A's lease, B takes the deployment over: it resumes A's
    // operation and finishes it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = s.as_holder("orchestrator-b", &[]);
    ok(&b.run(&["deploy", "v1"], None), "orchestrator-b");
    let deployment = &s.observer.deployment;
    let before = dump(s.store(), deployment).await;

    // A comes back and tries the commit it was about to make.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    let out = finish(guard.0.take().unwrap());
    let said = stderr(&out);
    println!(
        "orchestrator-a after SIGCONT (exit {:?}): {}",
        out.status.code(),
        said.trim()
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "A was told it lost the lease: {said}"
    );
    assert!(said.contains("fenced off"), "by the fencing token: {said}");
    let after = dump(s.store(), deployment).await;
    assert_eq!(after.1, before.1, "no event of A's landed");
    assert!(after.0 == before.0, "no record of A's landed");

    let h = history::operation_history(s.store(), deployment, &frozen_op)
        .await
        .unwrap();
    let holders: Vec<&str> = h.holders().iter().map(|x| x.holder.as_str()).collect();
    assert_eq!(holders, vec!["orchestrator-a", "orchestrator-b"]);
    assert!(h.holders()[1].token > h.holders()[0].token);
    println!("operation {frozen_op} holders: {:?}", h.holders());
    let json: serde_json::Value = serde_json::from_str(
        &history::export_operation_json(s.store(), deployment, &frozen_op)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["operation"]["outcome"], "succeeded");
    assert_eq!(json["holders"][1]["holder"], "orchestrator-b");
    let snap = s.observer.phoenix.snapshot(deployment).await.unwrap();
    assert_eq!(
        snap.live_pool(&s.observer.role).unwrap().release.as_str(),
        "v1"
    );
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgresql: run the full test script"]
async fn postgres_a_second_orchestrator_is_told_who_holds_the_deployment_or_waits() {
    let schema = PgSchema::new("busy");
    busy_or_wait(Some(schema.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgresql: run the full test script"]
async fn postgres_a_stalled_holder_that_comes_back_is_fenced() {
    let schema = PgSchema::new("fence");
    stalled_holder_is_fenced(Some(schema.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_second_orchestrator_is_told_who_holds_the_deployment_or_waits() {
    busy_or_wait(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_stalled_holder_that_comes_back_is_fenced() {
    stalled_holder_is_fenced(None).await;
}
