//! `phoenix-local`: one Phoenix operation at a time on the local stack,
//! against a balancer in another process (its admin socket), so that this
//! orchestrator can be killed at any moment without dropping traffic.
//!
//! ```text
//! phoenix-local --dir DIR --lb-socket PATH [--servers N] [--app BIN]
//!               [--lease-ttl-ms MS] [--bake-ms MS] [--drain-ms MS] COMMAND
//!
//! COMMAND:
//!   prepare RELEASE...   bake, certify and record releases (idempotent)
//!   deploy RELEASE       finish what was interrupted, then switch to RELEASE
//!   rollback [RELEASE]   finish what was interrupted, then roll back
//!   heal                 finish what was interrupted, then heal
//!   status               print the live release and the serving members
//! ```
//!
//! With `PHOENIX_CRASH_AT_COMMIT=N` it kills itself with SIGKILL right after
//! its N-th commit (before it with `PHOENIX_CRASH_BEFORE_WRITE=1`): the
//! fault tests use it to kill a real orchestrator at every journaled step.
//! It prints `commits N` on stderr when it ends by itself.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use examples::local::{
    block_on_main, serve_demo_app_if_asked, BalancerChoice, LocalStack, StackError, StackOptions,
};
use phoenix_core::id::ReleaseLabel;

struct Args {
    dir: PathBuf,
    socket: PathBuf,
    servers: usize,
    app: Option<PathBuf>,
    lease_ttl: Option<Duration>,
    bake: Option<Duration>,
    drain: Option<Duration>,
    command: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut dir = None;
    let mut socket = None;
    let mut a = Args {
        dir: PathBuf::new(),
        socket: PathBuf::new(),
        servers: 3,
        app: None,
        lease_ttl: None,
        bake: None,
        drain: None,
        command: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let ms = |v: String, name: &str| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| format!("{name}: {e}"))
        };
        match arg.as_str() {
            "--dir" => dir = Some(PathBuf::from(value("--dir")?)),
            "--lb-socket" => socket = Some(PathBuf::from(value("--lb-socket")?)),
            "--servers" => {
                a.servers = value("--servers")?
                    .parse()
                    .map_err(|e| format!("--servers: {e}"))?
            }
            "--app" => a.app = Some(value("--app")?.into()),
            "--lease-ttl-ms" => a.lease_ttl = Some(ms(value("--lease-ttl-ms")?, "--lease-ttl-ms")?),
            "--bake-ms" => a.bake = Some(ms(value("--bake-ms")?, "--bake-ms")?),
            "--drain-ms" => a.drain = Some(ms(value("--drain-ms")?, "--drain-ms")?),
            _ => {
                a.command.push(arg);
                a.command.extend(it.by_ref());
            }
        }
    }
    a.dir = dir.ok_or("--dir is required")?;
    a.socket = socket.ok_or("--lb-socket is required")?;
    if a.command.is_empty() {
        return Err("a command is required: prepare, deploy, rollback, heal or status".into());
    }
    Ok(a)
}

fn label(s: &str) -> Result<ReleaseLabel, StackError> {
    s.parse()
        .map_err(|e| StackError::Unexpected(format!("release {s}: {e}")))
}

async fn run(args: Args) -> Result<(), StackError> {
    let mut options = StackOptions::here()?;
    options.dir = args.dir;
    options.balancer = BalancerChoice::Remote(args.socket);
    options.servers = args.servers;
    options.holder = format!("phoenix-local@{}", std::process::id());
    if let Some(app) = args.app {
        options.app = app;
    }
    let mut policy = LocalStack::policy(args.servers);
    if let Some(b) = args.bake {
        policy.rollout.bake_time = b;
    }
    if let Some(d) = args.drain {
        policy.rollout.drain = d;
    }
    options.policy = Some(policy);
    if let Some(ttl) = args.lease_ttl {
        options.lease_ttl = ttl;
    }
    let stack = LocalStack::open(options).await?;
    let (d, role) = (stack.deployment.clone(), stack.role.clone());
    let result = match args.command.first().map(String::as_str) {
        Some("prepare") => {
            for r in &args.command[1..] {
                let release = stack.release(r).await?;
                println!("release {} ready", release.label);
            }
            Ok(())
        }
        Some("deploy") => {
            let target = label(args.command.get(1).map(String::as_str).unwrap_or_default())?;
            stack.resume().await?;
            let plan = stack.phoenix.plan_deploy(&d, &role, &target).await?;
            if !plan.is_noop() {
                stack.phoenix.apply(plan).await?;
            }
            println!("{target} is live");
            Ok(())
        }
        Some("rollback") => {
            let target = args.command.get(1).map(|s| label(s)).transpose()?;
            stack.resume().await?;
            let plan = stack
                .phoenix
                .plan_rollback(&d, &role, target.as_ref())
                .await?;
            stack.phoenix.apply(plan).await?;
            Ok(())
        }
        Some("heal") => {
            stack.resume().await?;
            let plan = stack.phoenix.plan_heal(&d, &role).await?;
            if !plan.is_noop() {
                stack.phoenix.apply(plan).await?;
            }
            Ok(())
        }
        Some("status") => {
            let snap = stack.phoenix.snapshot(&d).await?;
            let live = snap.live_pool(&role).map(|p| p.release.to_string());
            println!("live {}", live.unwrap_or_else(|| "none".into()));
            Ok(())
        }
        Some(other) => Err(StackError::Unexpected(format!("unknown command {other}"))),
        None => Err(StackError::Unexpected("no command".into())),
    };
    eprintln!("commits {}", stack.store.commits());
    result
}

fn main() -> ExitCode {
    if let Some(code) = serve_demo_app_if_asked() {
        return code;
    }
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("phoenix-local: {e}");
            return ExitCode::from(2);
        }
    };
    block_on_main(async move { run(args).await.map(|()| true) })
}
