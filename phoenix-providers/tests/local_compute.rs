//! The local compute back end: the Compute conformance suite, boot
//! delivery, re-adoption after an orchestrator restart, crashes, process
//! groups, grace periods, stop and start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{
    bake_demo, bake_script, demo_boot, empty_boot, http_get, launch_one, record, recorded_pid,
    request, running, runtime_dir, wait_active, wait_for, Root,
};
use phoenix_core::conformance::compute::ComputeFixture;
use phoenix_core::labels::{keys, LabelSelector};
use phoenix_core::model::ServerStatus;
use phoenix_core::ports::{BootFile, BootPayload, Compute, ErrorKind};
use phoenix_providers::local::LocalCompute;
use secrecy::{SecretSlice, SecretString};

#[tokio::test]
async fn local_compute_conforms() {
    let root = Root::new();
    let image = bake_demo(&root.images(), "1").await;
    let compute = root.compute();
    let fixture = ComputeFixture {
        image,
        flavor: None,
        boot: Box::new(|_name| demo_boot("v1")),
        ready_within: Duration::from_secs(20),
        poll: Duration::from_millis(50),
    };
    phoenix_core::conformance::compute::run(&compute, &fixture).await;
}

#[tokio::test]
async fn servers_receive_their_boot_configuration_and_answer_http() {
    let root = Root::new();
    let image = bake_demo(&root.images(), "1").await;
    let compute = root.compute();
    let mut env = BTreeMap::new();
    env.insert(
        "PHOENIX_RELEASE".to_owned(),
        SecretString::from("2026.11.22-1"),
    );
    env.insert(
        "PHOENIX_ENVIRONMENT".to_owned(),
        SecretString::from("staging"),
    );
    env.insert("PHOENIX_ROLE".to_owned(), SecretString::from("web"));
    env.insert("PORT".to_owned(), SecretString::from("1"));
    let boot = BootPayload::Local {
        files: vec![
            BootFile {
                path: "phoenix.env".into(),
                mode: 0o640,
                owner: None,
                content: SecretSlice::from(b"PHOENIX_ROLE=ignored\n".to_vec()),
            },
            BootFile {
                path: "secrets/db.password".into(),
                mode: 0o600,
                owner: None,
                content: SecretSlice::from(b"hunter2-canary".to_vec()),
            },
        ],
        env,
    };
    let s = launch_one(&compute, request(&image, "boot", 0, boot)).await;
    let port = s.service_port.unwrap();
    assert_eq!(s.addresses, vec![std::net::IpAddr::from([127, 0, 0, 1])]);
    assert!(s.launched_at.is_some());
    let s = wait_active(&compute, &s.id).await;
    assert_eq!(
        s.service_port,
        Some(port),
        "the provider's port wins over the payload's PORT"
    );

    let run = runtime_dir(&compute, &s.id);
    let mode = |p: &str| std::fs::metadata(run.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("phoenix.env"), 0o640);
    assert_eq!(mode("secrets/db.password"), 0o600);
    assert_eq!(
        std::fs::read(run.join("secrets/db.password")).unwrap(),
        b"hunter2-canary"
    );

    let (status, head, body) = http_get(port, "/").await.unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("x-phoenix-release: 2026.11.22-1"), "{head}");
    assert!(head.contains("x-phoenix-environment: staging"), "{head}");
    assert!(head.contains("x-phoenix-role: web"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["release"], "2026.11.22-1");
    assert_eq!(json["role"], "web", "variables win over phoenix.env");
    assert_eq!(json["server"], s.id.as_str());
    assert_eq!(
        json["pid"].as_i64().unwrap() as i32,
        recorded_pid(&compute, &s.id)
    );
    let (status, _, body) = http_get(port, "/health").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(http_get(port, "/nope").await.unwrap().0, 404);

    // Secrets never reach the record.
    let rec = std::fs::read_to_string(compute.server_directory(&s.id).unwrap().join("server.json"))
        .unwrap();
    assert!(
        !rec.contains("hunter2") && !rec.contains("2026.11.22-1"),
        "{rec}"
    );
    compute.terminate(&s.id).await.unwrap();
    assert!(
        !run.exists(),
        "terminate removes the runtime directory with its secrets"
    );
    assert!(!compute
        .server_directory(&s.id)
        .unwrap()
        .join("boot-env.json")
        .exists());
}

#[tokio::test]
async fn boot_files_cannot_escape_the_runtime_directory() {
    let root = Root::new();
    let image = bake_script(&root.images(), root.path(), "idle", "exec sleep 100").await;
    let compute = root.compute();
    for (slot, path) in ["../escape", "/tmp/phoenix-escape", "a/../../escape"]
        .into_iter()
        .enumerate()
    {
        let boot = BootPayload::Local {
            files: vec![BootFile {
                path: path.into(),
                mode: 0o644,
                owner: None,
                content: SecretSlice::from(b"x".to_vec()),
            }],
            env: BTreeMap::new(),
        };
        let err = compute
            .launch(&[request(&image, "escape", slot as u32, boot)])
            .await
            .remove(0)
            .unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Invalid(_)), "{err}");
        assert!(err.chain().contains(path), "{}", err.chain());
    }
    assert!(std::fs::read_dir(root.path().join("servers"))
        .unwrap()
        .next()
        .is_none());
    assert!(!root.path().join("servers/escape").exists() && !root.path().join("escape").exists());
    let err = compute
        .launch(&[request(
            &image,
            "fmt",
            0,
            BootPayload::CloudInit {
                user_data: SecretSlice::from(vec![]),
            },
        )])
        .await
        .remove(0)
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Invalid(_)), "{err}");
}

#[tokio::test]
async fn missing_configuration_is_reported_as_unknown() {
    let root = Root::new();
    let image = bake_demo(&root.images(), "1").await;
    let compute = root.compute();
    let s = launch_one(&compute, request(&image, "bare", 0, empty_boot())).await;
    let s = wait_active(&compute, &s.id).await;
    let (status, head, body) = http_get(s.service_port.unwrap(), "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("x-phoenix-release: unknown"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["environment"], "unknown");
    compute.terminate(&s.id).await.unwrap();
}

#[tokio::test]
async fn a_restarted_orchestrator_re_adopts_running_servers() {
    let root = Root::new();
    let image = bake_demo(&root.images(), "1").await;
    let (ids, pids) = {
        let first = root.compute();
        let launched = first
            .launch(&[
                request(&image, "adopt", 0, demo_boot("v1")),
                request(&image, "adopt", 1, demo_boot("v1")),
            ])
            .await;
        let ids: Vec<_> = launched.into_iter().map(|r| r.unwrap().id).collect();
        for id in &ids {
            wait_active(&first, id).await;
        }
        let pids: Vec<i32> = ids.iter().map(|id| recorded_pid(&first, id)).collect();
        (ids, pids)
        // `first` is dropped here: the orchestrator is gone.
    };
    let second = root.compute();
    let listed = second
        .list(&LabelSelector::new().with(keys::POOL, "adopt"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    for s in &listed {
        assert_eq!(s.status, ServerStatus::Active, "{} is re-adopted", s.id);
        let (status, _, body) = http_get(s.service_port.unwrap(), "/").await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("\"release\":\"v1\""), "{body}");
    }
    // A repeated launch after the restart finds the same servers.
    let again = launch_one(&second, request(&image, "adopt", 0, demo_boot("v1"))).await;
    assert_eq!(again.id, ids[0]);
    for id in &ids {
        second.terminate(id).await.unwrap();
    }
    for pid in pids {
        assert!(!running(pid), "{pid} is gone");
    }
    assert!(second.describe(&ids).await.unwrap().is_empty());
    assert!(second
        .list(&LabelSelector::new().with(keys::POOL, "adopt"))
        .await
        .unwrap()
        .is_empty());
    // Terminating again, and terminating unknown ids, succeeds.
    second.terminate(&ids[0]).await.unwrap();
    second
        .terminate(&"srv-0000000000000000".parse().unwrap())
        .await
        .unwrap();
    // The token of a terminated server launches nothing new.
    let tomb = launch_one(&second, request(&image, "adopt", 0, demo_boot("v1"))).await;
    assert_eq!(
        (tomb.id.clone(), tomb.status),
        (ids[0].clone(), ServerStatus::Deleted)
    );
    assert_eq!(second.purge_terminated().await.unwrap(), 2);
    assert!(!second.server_directory(&ids[0]).unwrap().exists());
}

#[tokio::test]
async fn a_server_killed_from_outside_shows_as_error_with_the_reason() {
    let root = Root::new();
    let image = bake_demo(&root.images(), "1").await;
    let compute = root.compute();
    let s = launch_one(&compute, request(&image, "crash", 0, demo_boot("v1"))).await;
    wait_active(&compute, &s.id).await;
    let pid = recorded_pid(&compute, &s.id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let failed = wait_for(&compute, &s.id, "it is in error", |st| {
        matches!(st, ServerStatus::Error { .. })
    })
    .await;
    let ServerStatus::Error { message } = &failed.status else {
        unreachable!()
    };
    assert!(message.contains("SIGKILL"), "{message}");
    assert!(!running(pid));
    // The exit is recorded, so a new orchestrator reports it too.
    assert_eq!(record(&compute, &s.id)["exit"]["signal"], "SIGKILL");
    let later = root
        .compute()
        .describe(std::slice::from_ref(&s.id))
        .await
        .unwrap();
    assert!(
        matches!(&later[0].status, ServerStatus::Error { message } if message.contains("SIGKILL"))
    );
    let err = compute.start(&s.id).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Conflict(_)), "{err}");
    compute.terminate(&s.id).await.unwrap();
}

#[tokio::test]
async fn a_server_that_exits_reports_its_status_and_last_stderr_line() {
    let root = Root::new();
    let image = bake_script(
        &root.images(),
        root.path(),
        "fail",
        "echo 'fatal: no database configured' >&2\nexit 3",
    )
    .await;
    let compute = root.compute();
    let s = launch_one(&compute, request(&image, "fail", 0, empty_boot())).await;
    let failed = wait_for(&compute, &s.id, "it is in error", |st| {
        matches!(st, ServerStatus::Error { .. })
    })
    .await;
    let ServerStatus::Error { message } = failed.status else {
        unreachable!()
    };
    assert!(message.contains("exited with status 3"), "{message}");
    assert!(
        message.contains("fatal: no database configured"),
        "{message}"
    );
    compute.terminate(&s.id).await.unwrap();
}

#[tokio::test]
async fn terminate_ends_the_whole_process_group() {
    let root = Root::new();
    let image = bake_script(
        &root.images(),
        root.path(),
        "family",
        "sleep 1000 &\necho $! > child.pid\nexec sleep 1001",
    )
    .await;
    let compute = root.compute();
    let s = launch_one(&compute, request(&image, "family", 0, empty_boot())).await;
    let child_file = runtime_dir(&compute, &s.id).join("child.pid");
    let child: i32 = {
        let start = tokio::time::Instant::now();
        loop {
            if let Some(pid) = std::fs::read_to_string(&child_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break pid;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the script wrote no child pid"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let leader = recorded_pid(&compute, &s.id);
    assert!(running(leader) && running(child));
    // It never listens: it stays Building, which is what a probe would see.
    assert_eq!(
        compute.describe(std::slice::from_ref(&s.id)).await.unwrap()[0].status,
        ServerStatus::Building
    );
    let started = tokio::time::Instant::now();
    compute.terminate(&s.id).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "sleep obeys SIGTERM: no need to wait for the grace period"
    );
    assert!(!running(leader), "the leader is gone");
    assert!(!running(child), "its child in the group is gone too");
}

#[tokio::test]
async fn a_server_ignoring_sigterm_is_killed_after_the_grace_period() {
    let root = Root::new();
    let image = bake_script(
        &root.images(),
        root.path(),
        "stubborn",
        "trap '' TERM\nexec sleep 1000",
    )
    .await;
    let compute = LocalCompute::builder()
        .root(root.path())
        .grace_period(Duration::from_millis(600))
        .build()
        .unwrap();
    let s = launch_one(&compute, request(&image, "stubborn", 0, empty_boot())).await;
    let pid = recorded_pid(&compute, &s.id);
    // Let the shell install its trap and exec.
    let start = tokio::time::Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() != "sleep")
        .unwrap_or(true)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the script did not exec sleep"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = tokio::time::Instant::now();
    compute.terminate(&s.id).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "it waited the grace period first ({took:?})"
    );
    assert!(
        took < Duration::from_secs(4),
        "then SIGKILLed it ({took:?})"
    );
    assert!(!running(pid));
    assert!(compute
        .describe(std::slice::from_ref(&s.id))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn stop_and_start_keep_the_port_and_serve_again() {
    let root = Root::new();
    let image = bake_demo(&root.images(), "1").await;
    let compute = root.compute();
    let s = launch_one(&compute, request(&image, "cold", 0, demo_boot("v7"))).await;
    let s = wait_active(&compute, &s.id).await;
    let port = s.service_port.unwrap();
    let first_pid = recorded_pid(&compute, &s.id);

    compute.stop(&s.id).await.unwrap();
    let stopped = compute.describe(std::slice::from_ref(&s.id)).await.unwrap();
    assert_eq!(stopped[0].status, ServerStatus::Stopped);
    assert_eq!(stopped[0].service_port, Some(port));
    assert!(!running(first_pid));
    assert!(
        http_get(port, "/health").await.is_err(),
        "nothing listens while stopped"
    );
    compute.stop(&s.id).await.unwrap();

    compute.start(&s.id).await.unwrap();
    let again = wait_active(&compute, &s.id).await;
    assert_eq!(again.service_port, Some(port));
    assert_eq!(
        again.launched_at, s.launched_at,
        "launch time (for max-age) is kept"
    );
    assert_ne!(recorded_pid(&compute, &s.id), first_pid);
    let (status, _, body) = http_get(port, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("\"release\":\"v7\""),
        "the boot environment is kept: {body}"
    );
    compute.start(&s.id).await.unwrap();
    compute.terminate(&s.id).await.unwrap();
    assert!(compute.stop(&s.id).await.unwrap_err().is_not_found());
    assert!(compute.start(&s.id).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn sigterm_drains_requests_in_flight() {
    let root = Root::new();
    let image = bake_demo(&root.images(), "1").await;
    let compute = root.compute();
    let s = launch_one(&compute, request(&image, "drain", 0, demo_boot("v1"))).await;
    let port = wait_active(&compute, &s.id).await.service_port.unwrap();
    let slow = tokio::spawn(async move { http_get(port, "/slow?ms=700").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = tokio::time::Instant::now();
    compute.terminate(&s.id).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "terminate waited for the drain"
    );
    let (status, _, body) = slow.await.unwrap().unwrap();
    assert_eq!(status, 200, "the request in flight finished: {body}");
    let log = std::fs::read_to_string(compute.server_directory(&s.id).unwrap().join("stdout.log"))
        .unwrap();
    assert!(log.contains("stopped"), "it exited by itself: {log}");
}

const HELPER_ROOT: &str = "PHOENIX_TEST_HELPER_ROOT";
const HELPER_IMAGE: &str = "PHOENIX_TEST_HELPER_IMAGE";

/// Runs in a child process started by
/// `servers_outlive_the_orchestrator_process`: an orchestrator that
/// launches one server and exits. Without its environment it does nothing.
#[tokio::test]
#[ignore = "helper process of servers_outlive_the_orchestrator_process"]
async fn helper_orchestrator_launches_and_exits() {
    let (Ok(root), Ok(image)) = (std::env::var(HELPER_ROOT), std::env::var(HELPER_IMAGE)) else {
        return;
    };
    let compute = LocalCompute::builder().root(root).build().unwrap();
    let image = image.parse().unwrap();
    let s = launch_one(&compute, request(&image, "outlive", 0, demo_boot("v1"))).await;
    wait_active(&compute, &s.id).await;
}

#[tokio::test]
async fn servers_outlive_the_orchestrator_process() {
    let root = Root::new();
    let image = bake_demo(&root.images(), "1").await;
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_orchestrator_launches_and_exits",
            "--ignored",
            "--quiet",
        ])
        .env(HELPER_ROOT, root.path())
        .env(HELPER_IMAGE, image.as_str())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the helper orchestrator failed: {status}");

    // A new orchestrator (this process) adopts a server it is not the
    // parent of.
    let compute = root.compute();
    let listed = compute
        .list(&LabelSelector::new().with(keys::POOL, "outlive"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let s = &listed[0];
    assert_eq!(s.status, ServerStatus::Active);
    let pid = recorded_pid(&compute, &s.id);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: u32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(ppid, std::process::id(), "not our child");
    let (code, _, _) = http_get(s.service_port.unwrap(), "/health").await.unwrap();
    assert_eq!(code, 200);

    // Killed from outside, it is reported failed even though its exit
    // status belongs to another parent.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let failed = wait_for(&compute, &s.id, "it is in error", |st| {
        matches!(st, ServerStatus::Error { .. })
    })
    .await;
    assert!(
        matches!(&failed.status, ServerStatus::Error { message } if message.contains("exit status is unknown")),
        "{}",
        failed.status
    );
    compute.terminate(&s.id).await.unwrap();
    assert!(compute
        .describe(std::slice::from_ref(&s.id))
        .await
        .unwrap()
        .is_empty());
}
