//! The `phoenix` command as a person uses it: a hand-written phoenix.toml
//! for the local stack in a fresh directory, the balancer served by
//! `phoenix lb serve`, then plan, deploy, status, rollback, history and
//! report — and a bad phoenix.toml.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

const PHOENIX: &str = env!("CARGO_BIN_EXE_phoenix");

const STACK: &str = r#"# The local stack: processes on this machine, the embedded balancer
# served by `phoenix lb serve`, SQLite state in .phoenix.
workdir = ".phoenix"

[policy]
preset = "local"
bake_time = "500ms"
drain = "300ms"

[environments.dev]

[providers.laptop]
kind = "local"

[balancers.front]
kind = "embedded"
listen = "127.0.0.1:0"
admin_socket = ".phoenix/lb.sock"

[deployments.shop]
environment = "dev"
provider = "laptop"

[deployments.shop.roles.web]
desired = 2
balancer = "front"
"#;

/// A directory with a phoenix.toml and a balancer serving it; the
/// servers are torn down and the balancer stopped when it is dropped.
struct Fixture {
    dir: tempfile::TempDir,
    lb: Option<Child>,
}

impl Fixture {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("phoenix.toml"), STACK).unwrap();
        let mut f = Self { dir, lb: None };
        let lb = Command::new(PHOENIX)
            .args(["lb", "serve"])
            .current_dir(f.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        f.lb = Some(lb);
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

    /// Runs and expects success; returns stdout.
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

    async fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--json"]).await).unwrap()
    }

    /// Records `label`, a release whose app exits at once (`/bin/false`
    /// baked instead of the demo app), through a second file naming that
    /// app for the same deployment.
    async fn broken_release(&self, label: &str) {
        let broken = STACK.replace("kind = \"local\"", "kind = \"local\"\napp = \"/bin/false\"");
        std::fs::write(self.path().join("broken.toml"), broken).unwrap();
        let out = self.ok(&["-f", "broken.toml", "release", label]).await;
        assert!(out.contains(&format!("release {label} ready")), "{out}");
    }

    /// Releases v1 and v2 and makes v1 live.
    async fn v1_live(&self) {
        assert!(self
            .ok(&["release", "v1"])
            .await
            .contains("release v1 ready"));
        let out = self.ok(&["deploy", "v1"]).await;
        assert!(out.contains("deploy: succeeded"), "{out}");
        assert!(self
            .ok(&["release", "v2"])
            .await
            .contains("release v2 ready"));
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.lb.is_some() && self.path().join(".phoenix").exists() {
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

/// The pools of the status tree: (release, state) per pool.
fn pools(status: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for role in status["roles"].as_array().unwrap() {
        for rel in role["releases"].as_array().unwrap() {
            for pool in rel["pools"].as_array().unwrap() {
                out.push((
                    rel["release"].as_str().unwrap().to_owned(),
                    pool["state"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_deploy_status_rollback_history_report_on_the_local_stack() {
    let f = Fixture::start().await;
    f.v1_live().await;

    // The dry run prints the plan and changes nothing.
    let before = f.status_json().await;
    let plan = f
        .ok(&["plan", "deploy", "v2", "--out", "deploy-v2.json"])
        .await;
    assert!(
        plan.contains("blue-green switch of web to release v2"),
        "{plan}"
    );
    assert!(plan.contains("steps:"), "{plan}");
    assert_eq!(f.status_json().await, before, "plan changed the deployment");
    assert_eq!(pools(&before), [("v1".into(), "live".into())]);

    // The saved plan applies.
    let applied = f.ok(&["apply", "deploy-v2.json"]).await;
    assert!(applied.contains("deploy: succeeded"), "{applied}");
    assert!(applied.contains("timeline: "), "{applied}");
    assert_eq!(
        pools(&f.status_json().await),
        [
            ("v2".into(), "live".into()),
            ("v1".into(), "standby(hot)".into())
        ]
    );

    // A plan made before a change is refused (exit status 5).
    f.ok(&["plan", "rollback", "--out", "rollback.json"]).await;
    let rolled = f.ok(&["rollback"]).await;
    assert!(rolled.contains("rollback: succeeded"), "{rolled}");
    let stale = f.run(&["apply", "rollback.json"]).await;
    assert_eq!(stale.status.code(), Some(5), "{stale:?}");
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("plan again"),
        "{stale:?}"
    );

    // The tree: deployment → role → release → pool → server.
    let tree = f.ok(&["status"]).await;
    println!("{tree}");
    assert!(tree.starts_with("shop (environment dev"), "{tree}");
    assert!(tree.contains("role web: 2/2 serving"), "{tree}");
    assert!(tree.contains("release v1"), "{tree}");
    assert!(
        tree.contains("pool web-v1-1 live (2 of 2 servers)"),
        "{tree}"
    );
    assert!(tree.contains("pool web-v2-2 standby(hot)"), "{tree}");
    assert_eq!(tree.matches("healthy, attached").count(), 2, "{tree}");
    assert_eq!(tree.matches("standby member").count(), 2, "{tree}");
    assert!(tree.contains("max age in"), "{tree}");

    // A release whose servers die at boot: the deploy fails, v1 keeps
    // serving, and the exit status says "failed and rolled back" (6).
    f.broken_release("v3").await;
    let failed = f.run(&["deploy", "v3", "--json"]).await;
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("failed and was rolled back"), "{stderr}");
    // Machines get why, typed, on stdout.
    let stdout = String::from_utf8_lossy(&failed.stdout);
    let why: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(why["exit"], 6, "{stdout}");
    assert!(
        why["error"].as_str().unwrap().contains("rolled back"),
        "{stdout}"
    );
    let cause = why["cause"]["cause"].as_str().unwrap_or_default();
    assert!(
        ["launch_budget", "check", "timeout"].contains(&cause),
        "a broken release fails its launches or checks: {stdout}"
    );
    let after = f.ok(&["status"]).await;
    assert!(after.contains("role web: 2/2 serving"), "{after}");
    assert!(after.contains("pool web-v1-1 live"), "{after}");
    assert!(after.contains("failed (0 of 2 servers)"), "{after}");

    // What auditors get: every recorded image, its evidence, certified.
    let evidence: serde_json::Value =
        serde_json::from_str(&f.ok(&["evidence", "--json"]).await).unwrap();
    let reports = evidence.as_array().unwrap();
    assert!(!reports.is_empty(), "{evidence}");
    assert!(
        reports
            .iter()
            .any(|r| r["certifies"] == true && !r["evidence"].as_array().unwrap().is_empty()),
        "{evidence}"
    );
    let text = f.ok(&["evidence"]).await;
    assert!(text.contains("certified by its evidence"), "{text}");

    let history = f.ok(&["history"]).await;
    assert_eq!(history.matches(" deploy ").count(), 3, "{history}");
    assert_eq!(history.matches(" rollback ").count(), 1, "{history}");
    assert!(history.contains(" rolledback "), "{history}");

    // The last operation's timeline.
    let report = f.ok(&["report"]).await;
    assert!(report.contains("timeline of op-"), "{report}");
    let svgs: Vec<PathBuf> = std::fs::read_dir(f.path().join(".phoenix/reports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
        .collect();
    assert_eq!(svgs.len(), 4, "one per operation: {svgs:?}");
    let html = std::fs::read_to_string(svgs[0].with_extension("html")).unwrap();
    assert!(html.contains("<svg") && html.contains("<h2>Steps</h2>"));

    let export = f.ok(&["export", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&export).unwrap();
    assert!(v.is_object(), "{export}");

    let gone = f.ok(&["teardown", "--yes"]).await;
    assert!(gone.contains("terminated 4 server(s)"), "{gone}");
    assert!(!f.path().join(".phoenix").exists());
}

#[tokio::test]
async fn a_bad_phoenix_toml_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            STACK.replace("desired = 2", "desired = 2\ndesird = 3"),
            "phoenix.toml:26:",
            "unknown field `desird`",
        ),
        (
            STACK.replace("\"500ms\"", "\"half a second\""),
            "phoenix.toml:7:",
            "policy.bake_time: invalid duration",
        ),
        (
            STACK.replace("balancer = \"front\"", "balancer = \"back\""),
            "phoenix.toml:26:",
            "deployments.shop.roles.web.balancer: no balancer \"back\"",
        ),
    ];
    for (text, at, says) in cases {
        std::fs::write(dir.path().join("phoenix.toml"), &text).unwrap();
        let out = Command::new(PHOENIX)
            .args(["status"])
            .current_dir(dir.path())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(at), "expected {at} in: {stderr}");
        assert!(stderr.contains(says), "expected {says} in: {stderr}");
        assert!(
            !dir.path().join(".phoenix").exists(),
            "a refused file created state"
        );
    }
}

/// `phoenix campaign plan` and `status` read a campaign file against the
/// phoenix.toml (no server is started); a campaign naming a deployment the
/// file does not declare is refused as bad usage.
#[tokio::test]
async fn a_campaign_file_plans_its_waves_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("phoenix.toml"), STACK).unwrap();
    let campaign = r#"name = "base-image-2026-12"
release = "v2"
environments = ["dev"]
deadline = "2030-01-01T00:00:00Z"
max_age = "14days"

[budget]
max_in_flight = 2

[deployments.shop]
domain = "az-a"
"#;
    std::fs::write(dir.path().join("campaign.toml"), campaign).unwrap();
    let run = |args: &'static [&'static str]| {
        let dir = dir.path().to_path_buf();
        async move {
            let out = Command::new(PHOENIX)
                .args(args)
                .current_dir(dir)
                .output()
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, out, err) = run(&["campaign", "plan"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("1 wave(s), 2 server(s)"), "{out}");
    assert!(out.contains("shop/web→v2"), "{out}");
    let (code, out, err) = run(&["campaign", "status"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("not started"), "{out}");

    std::fs::write(
        dir.path().join("campaign.toml"),
        campaign.replace("[deployments.shop]", "[deployments.nope]"),
    )
    .unwrap();
    let (code, _, err) = run(&["campaign", "plan"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("deployments.nope: not declared"), "{err}");
}

#[tokio::test]
async fn every_command_has_help_and_completions_print() {
    let commands = [
        "plan",
        "apply",
        "bake",
        "certify",
        "release",
        "provision",
        "deploy",
        "rollout",
        "rollback",
        "reap",
        "refresh",
        "heal",
        "reconcile",
        "teardown",
        "status",
        "history",
        "evidence",
        "export",
        "report",
        "lb",
        "completions",
        "campaign",
    ];
    for c in commands {
        let out = Command::new(PHOENIX)
            .args([c, "--help"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "phoenix {c} --help: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: phoenix"));
    }
    let out = Command::new(PHOENIX).arg("--help").output().await.unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Exit statuses:") && help.contains("5  refused"),
        "{help}"
    );
    let out = Command::new(PHOENIX)
        .args(["completions", "bash"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("_phoenix()"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rsvg-convert (Debian librsvg2-bin): run the full test script"]
async fn the_timeline_renders_to_png() {
    let f = Fixture::start().await;
    f.v1_live().await;
    f.ok(&["deploy", "v2"]).await;
    f.ok(&["rollback"]).await;
    f.broken_release("v3").await;
    assert_eq!(f.run(&["deploy", "v3"]).await.status.code(), Some(6));
    let out_dir = std::env::var_os("PHOENIX_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| f.path().join("pictures"));
    let ops = f.ok(&["history"]).await;
    let id_of = |kind: &str, nth: usize| {
        ops.lines()
            .filter(|l| l.trim_start().starts_with("op-") && l.contains(&format!(" {kind} ")))
            .filter_map(|l| l.split_whitespace().next())
            .nth(nth)
            .unwrap()
            .to_owned()
    };
    let pictures = [
        ("deploy", id_of("deploy", 1)),
        ("rollback", id_of("rollback", 0)),
        ("failed-deploy", id_of("deploy", 2)),
    ];
    for (op, id) in pictures {
        f.ok(&["report", &id, "--out", out_dir.to_str().unwrap()])
            .await;
        let svg = out_dir.join(format!("{id}.svg"));
        let png = out_dir.join(format!("{op}.png"));
        let r = Command::new("rsvg-convert")
            .arg("-o")
            .arg(&png)
            .arg(&svg)
            .output()
            .await
            .expect("rsvg-convert runs");
        assert!(r.status.success(), "rsvg-convert: {r:?}");
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        // A real picture: 1280 pixels wide, and more than a blank page.
        assert_eq!(
            u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]),
            1280
        );
        assert!(bytes.len() > 20_000, "{} bytes", bytes.len());
    }
}

/// Every provider and balancer of the workspace is reachable from a
/// phoenix.toml: a stack on AWS (EC2, an ELBv2 target group) and one on
/// OpenStack (Nova, Octavia) open, show their status and plan (refusing
/// an unrecorded release) without a cloud call; vSphere is refused with
/// the feature it needs.
#[cfg(all(feature = "aws", feature = "openstack"))]
#[tokio::test]
async fn cloud_providers_and_balancers_are_reachable_from_the_file() {
    const CLOUDS: &str = r#"
[environments.prod]
production = true

[providers.ec2]
kind = "aws"
profile = "ci"
region = "eu-west-1"

[providers.nova]
kind = "openstack"

[providers.vcenter]
kind = "vsphere"

[balancers.alb]
kind = "elbv2"
target_group = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123"

[balancers.octavia]
kind = "octavia"
pool = "pool-1"

[deployments.shop]
environment = "prod"
provider = "ec2"
[deployments.shop.roles.web]
desired = 4
flavor = "t3.small"
balancer = "alb"

[deployments.blog]
environment = "prod"
provider = "nova"
[deployments.blog.roles.web]
desired = 2
flavor = "m1.small"
balancer = "octavia"

[deployments.vm]
environment = "prod"
provider = "vcenter"
[deployments.vm.roles.web]
desired = 2
balancer = "octavia"
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("phoenix.toml"), CLOUDS).unwrap();
    let run = |args: &'static [&'static str]| {
        let mut c = Command::new(PHOENIX);
        c.args(args)
            .current_dir(dir.path())
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "not-a-secret")
            .env("OS_AUTH_URL", "http://127.0.0.1:9/v3")
            .env("OS_USERNAME", "demo")
            .env("OS_PASSWORD", "not-a-secret")
            .env("OS_PROJECT_NAME", "demo")
            .env("OS_USER_DOMAIN_NAME", "Default")
            .env("OS_PROJECT_DOMAIN_NAME", "Default")
            .env_remove("OS_CLOUD");
        c
    };
    for d in ["shop", "blog"] {
        let args: &'static [&'static str] = if d == "shop" {
            &["-d", "shop", "status"]
        } else {
            &["-d", "blog", "status"]
        };
        let out = run(args).output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{d}: {out:?}");
        assert!(
            stdout.starts_with(&format!("{d} (environment prod")),
            "{stdout}"
        );
        assert!(stdout.contains("no pools"), "{stdout}");
    }
    let out = run(&["-d", "shop", "plan", "deploy", "v1"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("release v1 is not recorded"));
    let out = run(&["-d", "shop", "release", "v1"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--image IMAGE"));

    // Without GOVC_URL (vSphere's own settings), or without the feature.
    let out = run(&["-d", "vm", "status"])
        .env_remove("GOVC_URL")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let expected = if cfg!(feature = "vsphere") {
        "GOVC_URL"
    } else {
        "built without feature `vsphere`"
    };
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(expected),
        "{out:?}"
    );
    let out = run(&["status"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("choose one (phoenix --deployment NAME)"));
}

/// `deploy --canary` runs the canary stage through `phoenix lb serve`'s
/// admin socket: with no traffic at all the gate has no evidence, fails
/// closed (exit 6, rolled back), and v1 serves on; `plan` shows the stage
/// only when asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_with_a_canary_fails_closed_without_traffic_and_v1_serves_on() {
    let f = Fixture::start().await;
    f.v1_live().await;
    let plain = f.ok(&["plan", "deploy", "v2"]).await;
    assert!(!plain.contains("canary"), "{plain}");
    let plan = f
        .ok(&["plan", "deploy", "v2", "--canary-window", "1s"])
        .await;
    assert!(plan.contains("canary: 1 server(s) for 1.0s"), "{plan}");
    assert!(plan.contains("then the canary gate decides"), "{plan}");
    let bad = f
        .run(&["plan", "deploy", "v2", "--canary-window", "a while"])
        .await;
    assert_eq!(bad.status.code(), Some(2), "bad usage");

    let out = f.run(&["deploy", "v2", "--canary-window", "1s"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(6),
        "failed and rolled back\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let said = format!("{stdout}{stderr}");
    assert!(said.contains("failed its gate"), "{said}");
    assert!(said.contains("fewer than the 20"), "{said}");
    let status = f.status_json().await;
    let pools = pools(&status);
    assert!(
        pools.contains(&("v1".to_owned(), "live".to_owned())),
        "{pools:?}"
    );
    assert!(
        pools.contains(&("v2".to_owned(), "failed".to_owned())),
        "{pools:?}"
    );
}
