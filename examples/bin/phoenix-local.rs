//! `phoenix-local`: one Phoenix operation at a time on the local stack,
//! against a balancer in another process (its admin socket), so that this
//! orchestrator can be killed at any moment without dropping traffic.
//! Several of them may run at once against one state store (a SQLite file,
//! or a PostgreSQL database shared by orchestrators on several hosts): the
//! deployment's lease lets one of them change it at a time.
//!
//! ```text
//! phoenix-local --dir DIR --lb-socket PATH [--servers N] [--app BIN]
//!               [--state-url URL] [--holder NAME] [--lease-wait-ms MS]
//!               [--lease-ttl-ms MS] [--bake-ms MS] [--drain-ms MS]
//!               [--batch N] [--surge N] [--no-hooks] COMMAND
//!
//! COMMAND:
//!   prepare RELEASE...   bake, certify and record releases (idempotent)
//!   deploy RELEASE       finish what was interrupted, then switch to RELEASE
//!   rolling RELEASE      finish what was interrupted, then replace the live
//!                        pool by RELEASE batch by batch
//!   rollback [RELEASE]   finish what was interrupted, then roll back
//!   heal                 finish what was interrupted, then heal
//!   status               print the live release and the serving members
//!   history [OPERATION]  print the deployment's history, or export one
//!                        operation's as JSON
//! ```
//!
//! `--state-url` names the store (`sqlite://PATH`, `postgres://…`; by
//! default `DIR/state.sqlite`). When another orchestrator holds the
//! deployment it fails at once with exit status 3, naming the holder and
//! when its lease expires, unless `--lease-wait-ms` lets it wait that long.
//! An orchestrator that lost its lease while it stalled (another took the
//! deployment over) has its writes refused and exits with status 4.
//!
//! With `PHOENIX_CRASH_AT_COMMIT=N` it kills itself with SIGKILL right after
//! its N-th commit (before it with `PHOENIX_CRASH_BEFORE_WRITE=1`), and with
//! `PHOENIX_STOP_AT_COMMIT=N` it stops itself (SIGSTOP) just before it: the
//! fault tests use them to kill or freeze a real orchestrator at every
//! journaled step. It prints `commits N` on stderr when it ends by itself.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::{Arc, OnceLock};

use examples::local::{
    serve_demo_app_if_asked, BalancerChoice, HooksChoice, KillSwitch, KillSwitchStore, LocalStack,
    StackError,
};
use phoenix_core::executor::{ExecError, Interruption};
use phoenix_core::id::{OperationId, ReleaseLabel};
use phoenix_state::history;

struct Args {
    dir: PathBuf,
    socket: PathBuf,
    servers: usize,
    app: Option<PathBuf>,
    state: Option<String>,
    holder: Option<String>,
    lease_wait: Duration,
    lease_ttl: Option<Duration>,
    bake: Option<Duration>,
    drain: Option<Duration>,
    batch: Option<usize>,
    surge: Option<usize>,
    hooks: bool,
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
        state: None,
        holder: None,
        lease_wait: Duration::ZERO,
        lease_ttl: None,
        bake: None,
        drain: None,
        batch: None,
        surge: None,
        hooks: true,
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
        let count = |v: String, name: &str| v.parse::<usize>().map_err(|e| format!("{name}: {e}"));
        match arg.as_str() {
            "--dir" => dir = Some(PathBuf::from(value("--dir")?)),
            "--lb-socket" => socket = Some(PathBuf::from(value("--lb-socket")?)),
            "--servers" => a.servers = count(value("--servers")?, "--servers")?,
            "--app" => a.app = Some(value("--app")?.into()),
            "--state-url" => a.state = Some(value("--state-url")?),
            "--holder" => a.holder = Some(value("--holder")?),
            "--lease-wait-ms" => a.lease_wait = ms(value("--lease-wait-ms")?, "--lease-wait-ms")?,
            "--lease-ttl-ms" => a.lease_ttl = Some(ms(value("--lease-ttl-ms")?, "--lease-ttl-ms")?),
            "--bake-ms" => a.bake = Some(ms(value("--bake-ms")?, "--bake-ms")?),
            "--drain-ms" => a.drain = Some(ms(value("--drain-ms")?, "--drain-ms")?),
            "--batch" => a.batch = Some(count(value("--batch")?, "--batch")?),
            "--surge" => a.surge = Some(count(value("--surge")?, "--surge")?),
            "--no-hooks" => a.hooks = false,
            _ => {
                a.command.push(arg);
                a.command.extend(it.by_ref());
            }
        }
    }
    a.dir = dir.ok_or("--dir is required")?;
    a.socket = socket.ok_or("--lb-socket is required")?;
    if a.command.is_empty() {
        return Err(
            "a command is required: prepare, deploy, rolling, rollback, heal, status or history"
                .into(),
        );
    }
    Ok(a)
}

fn label(s: Option<&String>) -> Result<ReleaseLabel, StackError> {
    let s = s.map(String::as_str).unwrap_or_default();
    s.parse()
        .map_err(|e| StackError::Unexpected(format!("release {s:?}: {e}")))
}

/// Why the run failed, as the exit status tells it.
enum Failure {
    /// Another orchestrator holds the deployment (exit status 3).
    Busy(StackError),
    /// This one lost the deployment while it stalled (exit status 4).
    LeaseLost(StackError),
    /// Anything else (exit status 1).
    Other(StackError),
}

impl From<StackError> for Failure {
    fn from(e: StackError) -> Self {
        let StackError::Exec(exec) = &e else {
            return Self::Other(e);
        };
        match exec.as_ref() {
            ExecError::Busy { .. } => Self::Busy(e),
            ExecError::Interrupted {
                source: Interruption::LeaseLost(_),
                ..
            } => Self::LeaseLost(e),
            _ => Self::Other(e),
        }
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    let mut options = examples::local::options()?;
    options.dir = args.dir;
    options.balancer = BalancerChoice::Remote(args.socket);
    options.servers = args.servers;
    options.holder = args
        .holder
        .unwrap_or_else(|| format!("phoenix-local@{}", std::process::id()));
    options.state = args.state;
    options.lease_wait = args.lease_wait;
    if !args.hooks {
        options.hooks = HooksChoice::None;
    }
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
    if let Some(n) = args.batch {
        policy.rollout.batch_size = n.max(1);
    }
    if let Some(n) = args.surge {
        policy.rollout.max_surge = n.max(1);
    }
    options.policy = Some(policy);
    if let Some(ttl) = args.lease_ttl {
        options.lease_ttl = ttl;
    }
    // The kill switch of the fault tests, over the store; kept here to
    // count commits.
    let switch: Arc<OnceLock<KillSwitchStore>> = Arc::default();
    let kept = switch.clone();
    options.store_layer = Some(Arc::new(move |store| {
        let s = KillSwitch::from_env(store);
        let _ = kept.set(s.clone());
        Arc::new(s)
    }));
    let stack = LocalStack::open(options).await?;
    let (d, role) = (stack.deployment.clone(), stack.role.clone());
    let result: Result<(), StackError> = async {
        match args.command.first().map(String::as_str) {
            Some("prepare") => {
                for r in &args.command[1..] {
                    let release = stack.release(r).await?;
                    println!("release {} ready", release.label);
                }
            }
            Some("deploy") => {
                let target = label(args.command.get(1))?;
                stack.resume().await?;
                let plan = stack.phoenix.plan_deploy(&d, &role, &target).await?;
                if !plan.is_noop() {
                    stack.phoenix.apply(plan).await?;
                }
                println!("{target} is live");
            }
            Some("rolling") => {
                let target = label(args.command.get(1))?;
                stack.resume().await?;
                let plan = stack
                    .phoenix
                    .plan_rolling_replace(&d, &role, &target)
                    .await?;
                if !plan.is_noop() {
                    stack.phoenix.apply(plan).await?;
                }
                println!("{target} is live");
            }
            Some("rollback") => {
                let target = args.command.get(1).map(|s| label(Some(s))).transpose()?;
                stack.resume().await?;
                let plan = stack
                    .phoenix
                    .plan_rollback(&d, &role, target.as_ref())
                    .await?;
                stack.phoenix.apply(plan).await?;
            }
            Some("heal") => {
                stack.resume().await?;
                let plan = stack.phoenix.plan_heal(&d, &role).await?;
                if !plan.is_noop() {
                    stack.phoenix.apply(plan).await?;
                }
            }
            Some("status") => {
                let snap = stack.phoenix.snapshot(&d).await?;
                let live = snap.live_pool(&role).map(|p| p.release.to_string());
                println!("live {}", live.unwrap_or_else(|| "none".into()));
            }
            Some("history") => {
                let store = stack.base_store.as_ref();
                let shown = match args.command.get(1) {
                    Some(op) => {
                        let op: OperationId = op.parse().map_err(|e| {
                            StackError::Unexpected(format!("operation {op:?}: {e}"))
                        })?;
                        history::export_operation_json(store, &d, &op).await
                    }
                    None => history::deployment_history(store, &d)
                        .await
                        .map(|h| h.to_string()),
                };
                println!(
                    "{}",
                    shown.map_err(|e| StackError::Unexpected(phoenix_core::error_chain(&e)))?
                );
            }
            Some(other) => return Err(StackError::Unexpected(format!("unknown command {other}"))),
            None => return Err(StackError::Unexpected("no command".into())),
        }
        Ok(())
    }
    .await;
    eprintln!(
        "commits {}",
        switch.get().map(KillSwitchStore::commits).unwrap_or(0)
    );
    result.map_err(Failure::from)
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("phoenix-local: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Busy(e)) => {
            eprintln!("busy: {}", phoenix_core::error_chain(&e));
            ExitCode::from(3)
        }
        Err(Failure::LeaseLost(e)) => {
            eprintln!("lease lost: {}", phoenix_core::error_chain(&e));
            ExitCode::from(4)
        }
        Err(Failure::Other(e)) => {
            eprintln!("error: {}", phoenix_core::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
