//! `phoenix chaos`, and what rollback capacity costs in `phoenix status`
//! and `phoenix reap`, as a person runs them on the local stack.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

const PHOENIX: &str = env!("CARGO_BIN_EXE_phoenix");

const STACK: &str = r#"workdir = ".phoenix"

[policy]
preset = "local"
bake_time = "300ms"
drain = "300ms"
keep = 1
hot = 0

[providers.laptop]
kind = "local"

[balancers.front]
kind = "embedded"
listen = "127.0.0.1:0"
admin_socket = ".phoenix/lb.sock"

[deployments.shop]
environment = "local"
provider = "laptop"

[deployments.shop.roles.web]
desired = 2
balancer = "front"
flavor = "small"

[prices]
currency = "USD"
[prices.flavors]
small = { running = 0.5, stopped = 0.1 }
"#;

struct Fixture {
    dir: tempfile::TempDir,
    lb: Option<Child>,
}

impl Fixture {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("phoenix.toml"), STACK).unwrap();
        let lb = Command::new(PHOENIX)
            .args(["lb", "serve"])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let f = Self { dir, lb: Some(lb) };
        let socket = f.path().join(".phoenix/lb.sock");
        for _ in 0..100 {
            if socket.exists() {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("phoenix lb serve did not serve {}", socket.display());
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn run(&self, args: &[&str]) -> Output {
        Command::new(PHOENIX)
            .args(args)
            .current_dir(self.path())
            .output()
            .await
            .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "phoenix {args:?} failed with {:?}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.path().join(".phoenix").exists() {
            let _ = std::process::Command::new(PHOENIX)
                .args(["teardown", "--yes", "--quiet"])
                .current_dir(self.path())
                .output();
        }
        if let Some(mut lb) = self.lb.take() {
            let _ = lb.start_kill();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_heals_kills_and_status_and_reap_show_what_rollback_capacity_costs() {
    let f = Fixture::start().await;
    f.ok(&["release", "v1"]).await;
    f.ok(&["deploy", "v1"]).await;

    // The local preset keeps min_healthy at 100%: no planned failure.
    let out = f.run(&["chaos", "--kills", "1"]).await;
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("capacity floor forbids"),
        "{out:?}"
    );

    // With a floor of one of two: two kills, each healed.
    let json = f
        .ok(&[
            "chaos",
            "--kills",
            "2",
            "--seed",
            "9",
            "--min-healthy",
            "1",
            "--interval",
            "200ms",
            "--json",
        ])
        .await;
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{json}");
    for failure in failures {
        assert!(failure["time_to_restore_ms"].as_u64().unwrap() > 0);
    }

    // v2 goes live; v1's pool is the hot standby: 2 × 0.50 USD/h.
    f.ok(&["release", "v2"]).await;
    f.ok(&["deploy", "v2"]).await;
    let status = f.ok(&["status"]).await;
    assert!(
        status.contains("rollback capacity: 1 pool(s), 1.00 USD/h, 730.00 USD/month"),
        "{status}"
    );
    assert!(status.contains("2 running, 0 stopped, small"), "{status}");
    let tree: serde_json::Value = serde_json::from_str(&f.ok(&["status", "--json"]).await).unwrap();
    assert_eq!(tree["rollback_cost"]["per_hour"].as_f64(), Some(1.0));

    // hot = 0: reaping stops it, saving 2 × (0.50 - 0.10) an hour.
    let plan = f.ok(&["plan", "reap"]).await;
    assert!(plan.contains("reaping saves 0.80 USD/h"), "{plan}");
    let reaped = f.ok(&["reap"]).await;
    assert!(reaped.contains("reaping saves 0.80 USD/h"), "{reaped}");
    let status = f.ok(&["status"]).await;
    assert!(
        status.contains("0 running, 2 stopped, small: 0.20 USD/h"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_has_help() {
    let out = Command::new(PHOENIX)
        .args(["chaos", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for flag in ["--kills", "--seed", "--stop", "--min-healthy", "--json"] {
        assert!(help.contains(flag), "{help}");
    }
}
