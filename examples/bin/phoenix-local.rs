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
//!   status               print the deployment as a tree: role → release →
//!                        pool → server (health, traffic, age)
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

use clap::{Parser, Subcommand};
use examples::local::{
    serve_demo_app_if_asked, BalancerChoice, HooksChoice, KillSwitch, KillSwitchStore, LocalStack,
    StackError,
};
use phoenix::status::StatusTree;
use phoenix_core::executor::{ExecError, Interruption};
use phoenix_core::id::{OperationId, ReleaseLabel};
use phoenix_state::history;

/// One Phoenix operation at a time on the local stack, against a balancer
/// in another process.
#[derive(Debug, Parser)]
#[command(name = "phoenix-local", args_override_self = true)]
struct Args {
    /// The working directory (state, images, servers).
    #[arg(long)]
    dir: PathBuf,
    /// The admin socket of the balancer.
    #[arg(long = "lb-socket")]
    socket: PathBuf,
    /// Servers per pool.
    #[arg(long, default_value_t = 3)]
    servers: usize,
    /// The binary baked into images (default: this one).
    #[arg(long)]
    app: Option<PathBuf>,
    /// The state store's URL (default: DIR/state.sqlite).
    #[arg(long = "state-url")]
    state: Option<String>,
    /// Who this orchestrator is, in leases.
    #[arg(long)]
    holder: Option<String>,
    /// How long to wait for another orchestrator's lease, in ms.
    #[arg(long = "lease-wait-ms", value_parser = millis, default_value = "0")]
    lease_wait: Duration,
    /// How long the lease lasts unless renewed, in ms.
    #[arg(long = "lease-ttl-ms", value_parser = millis)]
    lease_ttl: Option<Duration>,
    /// Bake time, in ms.
    #[arg(long = "bake-ms", value_parser = millis)]
    bake: Option<Duration>,
    /// Drain time, in ms.
    #[arg(long = "drain-ms", value_parser = millis)]
    drain: Option<Duration>,
    /// Batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Max surge.
    #[arg(long)]
    surge: Option<usize>,
    /// No drain or warm-up hooks.
    #[arg(long = "no-hooks", action = clap::ArgAction::SetFalse)]
    hooks: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Bake, certify and record releases (idempotent).
    Prepare {
        /// The releases.
        #[arg(required = true)]
        releases: Vec<String>,
    },
    /// Finish what was interrupted, then switch to RELEASE.
    Deploy {
        /// The release.
        release: String,
    },
    /// Finish what was interrupted, then replace the live pool by RELEASE
    /// batch by batch.
    Rolling {
        /// The release.
        release: String,
    },
    /// Finish what was interrupted, then roll back.
    Rollback {
        /// The release.
        release: Option<String>,
    },
    /// Finish what was interrupted, then heal.
    Heal,
    /// Print the deployment as a tree: role, release, pool, server.
    Status,
    /// Print the deployment's history, or export one operation's as JSON.
    History {
        /// The operation.
        operation: Option<String>,
    },
}

fn millis(v: &str) -> Result<Duration, String> {
    v.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("milliseconds: {e}"))
}

fn label(s: &str) -> Result<ReleaseLabel, StackError> {
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
        match &args.command {
            Cmd::Prepare { releases } => {
                for r in releases {
                    let release = stack.release(r).await?;
                    println!("release {} ready", release.label);
                }
            }
            Cmd::Deploy { release } => {
                let target = label(release)?;
                stack.resume().await?;
                let plan = stack.phoenix.plan_deploy(&d, &role, &target).await?;
                if !plan.is_noop() {
                    stack.phoenix.apply(plan).await?;
                }
                println!("{target} is live");
            }
            Cmd::Rolling { release } => {
                let target = label(release)?;
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
            Cmd::Rollback { release } => {
                let target = release.as_deref().map(label).transpose()?;
                stack.resume().await?;
                let plan = stack
                    .phoenix
                    .plan_rollback(&d, &role, target.as_ref())
                    .await?;
                stack.phoenix.apply(plan).await?;
            }
            Cmd::Heal => {
                stack.resume().await?;
                let plan = stack.phoenix.plan_heal(&d, &role).await?;
                if !plan.is_noop() {
                    stack.phoenix.apply(plan).await?;
                }
            }
            Cmd::Status => {
                let snap = stack.phoenix.snapshot(&d).await?;
                let max_age = stack.phoenix.policy().refresh.max_age;
                print!(
                    "{}",
                    StatusTree::of(&snap, chrono::Utc::now(), max_age, false)
                );
            }
            Cmd::History { operation } => {
                let store = stack.base_store.as_ref();
                let shown = match operation {
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
    let args = Args::parse();
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
