//! The command line: parsing, and one function per command.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use phoenix::campaign::{CampaignFile, FleetStacks};
use phoenix::core::campaign::{
    renew_aged_with, Campaign, CampaignError, CampaignStatus, RenewOptions, RenewOutcome,
};
use phoenix::core::id::{DeploymentId, ImageId, OperationId, PoolId, ReleaseLabel};
use phoenix::core::model::TestEvidence;
use phoenix::core::ops::{PlanningError, ReconcileOptions};
#[cfg(feature = "local")]
use phoenix::core::ports::Compute as _;
use phoenix::exit;
use phoenix::file::{BalancerSection, StackFile};
use phoenix::report::{deployment_events, Timeline};
use phoenix::status::StatusTree;
use phoenix::{
    ExecError, FailureCause, OperationReport, Plan, Stack, StackError, StackFileError, StackSelect,
};

use crate::progress::Progress;

mod chaos;

const AFTER_HELP: &str = "\
Exit statuses:
  0  done
  1  an error (a port, the store, a file): the message says which
  2  bad usage, or a bad phoenix.toml (the message names file, line and key)
  3  busy: another orchestrator holds the deployment's lease
  4  lease lost: another orchestrator took the deployment over while this one stalled
  5  refused before any change: a guard, the planner, a stale plan, an unfinished operation
  6  the operation failed and was rolled back: the previous pool serves
  7  the operation failed and halted (or was pre-empted): see `phoenix status`

Quick start (the local stack, nothing installed):
  phoenix lb serve &            # the balancer, in a process of its own
  phoenix release v1            # bake, certify and record release v1
  phoenix deploy v1             # a verified pool of v1 goes live
  phoenix release v2 && phoenix plan deploy v2   # the dry run
  phoenix deploy v2             # blue-green switch; v1 stays as the hot standby
  phoenix rollback              # v1 serves again
  phoenix status                # deployment → role → release → pool → server
  phoenix report                # the last operation's timeline (SVG + HTML)";

/// Phoenix servers: never patched in place. Plans and applies operations
/// on the deployments a phoenix.toml declares.
#[derive(Debug, Parser)]
#[command(name = "phoenix", version, after_long_help = AFTER_HELP, propagate_version = true)]
pub(crate) struct Cli {
    /// The stack file.
    #[arg(
        short,
        long,
        global = true,
        default_value = "phoenix.toml",
        env = "PHOENIX_FILE"
    )]
    file: PathBuf,
    /// The deployment (needed when the file declares several).
    #[arg(short, long, global = true)]
    deployment: Option<String>,
    /// The role (needed when the deployment has several).
    #[arg(short, long, global = true)]
    role: Option<String>,
    /// Print results as JSON, for machines (progress still goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Who this orchestrator is, in leases (default: phoenix@PID).
    #[arg(long, global = true)]
    holder: Option<String>,
    /// How long to wait for another orchestrator's lease ("0s": fail at once).
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    lease_wait: Option<Duration>,
    /// No live progress display.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the plan of an operation (the dry run); changes nothing.
    Plan {
        #[command(subcommand)]
        operation: Operation,
        /// Also save the plan as JSON, for `phoenix apply`.
        #[arg(long, short, global = true)]
        out: Option<PathBuf>,
    },
    /// Apply a saved plan (refused when the deployment changed since).
    Apply {
        /// The plan, as `phoenix plan … --out` saved it.
        plan: PathBuf,
    },
    /// Bake an image of the app (local provider), not yet certified.
    Bake {
        /// Its version.
        #[arg(value_name = "VERSION")]
        label: String,
    },
    /// Check an image, record the evidence and certify it.
    Certify {
        /// The image id (`phoenix bake` prints it).
        image: String,
        /// The test suite that ran against the image (a pipeline's
        /// evidence); without it the local provider checks the image's
        /// integrity itself.
        #[arg(long)]
        suite: Option<String>,
        /// A summary of the run, or a link to its report.
        #[arg(long, requires = "suite", default_value = "")]
        details: String,
        /// The suite failed: record it, and do not certify.
        #[arg(long, requires = "suite")]
        failed: bool,
    },
    /// Record a release; without --image, bake and certify one first.
    Release {
        /// Its label.
        label: String,
        /// A certified image for the role.
        #[arg(long)]
        image: Option<String>,
    },
    #[command(flatten)]
    Operation(Operation),
    /// Terminate every server of the deployment, delete its images and
    /// working directory.
    Teardown {
        /// Do it (without it, say what would go).
        #[arg(long)]
        yes: bool,
    },
    /// The deployment as a tree: role → release → pool → server.
    Status {
        /// Redraw every INTERVAL until interrupted.
        #[arg(long, short, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s", value_parser = humantime::parse_duration)]
        watch: Option<Duration>,
        /// Include deleted pools.
        #[arg(long)]
        all: bool,
    },
    /// A planned-failure drill: kill (or stop) live servers at random
    /// (seeded), within the capacity floor and one failure domain at a
    /// time; heal restores each; prints time to detect and to restore.
    Chaos(chaos::ChaosArgs),
    /// The deployment's releases, pools and operations.
    History,
    /// The test evidence of an image, or of every recorded image, for
    /// auditors: digest, provenance, each run, and whether it certifies.
    Evidence {
        /// The image (default: every image in the records).
        image: Option<String>,
    },
    /// One operation's whole record (plan, journal, events) as JSON.
    Export {
        /// The operation (default: the last one).
        operation: Option<String>,
        /// Write it here instead of stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Draw an operation's timeline (SVG and an HTML page).
    Report {
        /// The operation (default: the last one).
        operation: Option<String>,
        /// Where to write OPERATION.svg and OPERATION.html (default:
        /// WORKDIR/reports).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// A fleet campaign: one release rolled out across the file's
    /// deployments in waves, halting everywhere at the first failed wave.
    #[command(long_about = CAMPAIGN_HELP)]
    Campaign {
        /// The campaign file (TOML; `phoenix help campaign` shows one).
        #[arg(
            long,
            global = true,
            default_value = "campaign.toml",
            env = "PHOENIX_CAMPAIGN"
        )]
        campaign: PathBuf,
        #[command(subcommand)]
        command: CampaignCommand,
    },
    /// The embedded balancer as a process of its own.
    Lb {
        #[command(subcommand)]
        command: LbCommand,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

const CAMPAIGN_HELP: &str = "\
A fleet campaign rolls one release (a new base image, any release change) out
across the deployments and roles of the phoenix.toml, in waves: environments in
the campaign's order (staging first), then one failure domain (zone, region,
site) at a time, each wave within the replacement budget and above the capacity
floor. Each unit moves through a normal blue-green deploy (or rolling
replacement) under every guard. The first failed wave halts the campaign
everywhere and is rolled back through the normal rollback. Progress is kept in
the state store: `phoenix campaign run` after a crash resumes the wave it was in.

The campaign file (default campaign.toml):

  name = \"base-image-2026-12\"
  release = \"v2\"                        # every role's target
  environments = [\"staging\", \"prod\"]   # rollout order
  deadline = \"2026-12-31T00:00:00Z\"
  max_age = \"14days\"
  capacity_floor = 100                  # percent serving healthy
  wave_bake = \"5m\"

  [budget]
  max_in_flight = 4                     # servers per wave
  per_window = 20                       # servers per window
  window = \"1h\"

  [deployments.shop]
  domain = \"az-a\"                       # failure domain
  roles = [\"web\"]                       # default: every role

Exit statuses: 0 done (or nothing to do), 2 a bad file, 7 the campaign halted
at a failed wave (`phoenix campaign status` says which and what was rolled back).";

#[derive(Debug, Subcommand)]
enum CampaignCommand {
    /// Print the waves (the dry run); changes nothing.
    Plan,
    /// Run the campaign, or resume it where an earlier run stopped.
    Run,
    /// Per deployment: what is done, what remains, the projected
    /// completion against the deadline; and the servers that will pass
    /// max_age before it if nothing changes.
    Status,
    /// One tick of the scheduled renewal (call it from cron): replace the
    /// campaign's servers older than max_age, oldest first. It never waits
    /// on a deployment: an incident rollback pre-empts it.
    Renew {
        /// Most servers this tick replaces.
        #[arg(long, default_value_t = 10)]
        max_servers: usize,
        /// Renew servers older than this (default: the campaign's max_age).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
    },
}

#[derive(Debug, Subcommand)]
enum LbCommand {
    /// Run the embedded balancer and serve its admin socket until
    /// interrupted, so that orchestrators can come and go.
    Serve {
        /// The balancer of the file (default: the role's).
        #[arg(long)]
        balancer: Option<String>,
        /// Listen here instead of the file's address.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Serve the admin socket here instead of the file's.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Subcommand)]
enum Operation {
    /// Create and verify a pool of RELEASE, without traffic.
    Provision {
        /// The release.
        release: String,
        /// Servers (default: the role's desired count).
        #[arg(long)]
        size: Option<usize>,
    },
    /// Make RELEASE live, blue-green; the pool that served stays as standby.
    Deploy {
        /// The release.
        release: String,
        #[command(flatten)]
        canary: CanaryArgs,
    },
    /// Replace the live pool by RELEASE batch by batch.
    Rollout {
        /// The release.
        release: String,
        #[command(flatten)]
        canary: CanaryArgs,
    },
    /// Give the traffic back to the last standby pool, or RELEASE's.
    Rollback {
        /// The release.
        release: Option<String>,
    },
    /// Delete pools beyond retention (never a serving one).
    Reap,
    /// Replace servers older than max_age.
    Refresh,
    /// Replace dead or unhealthy servers of the live pool.
    Heal,
    /// Repair drift between the records, the servers and the balancer.
    Reconcile {
        /// Terminate servers carrying the deployment's labels that no pool owns.
        #[arg(long)]
        remove_orphans: bool,
    },
}

/// The canary stage of a deploy or rollout.
#[derive(Debug, Clone, clap::Args)]
struct CanaryArgs {
    /// Run the canary stage first: a share of the new pool serves next to
    /// the live one for the analysis window, and a failing gate takes it
    /// out (thresholds from `[policy.canary]`, else the defaults).
    #[arg(long)]
    canary: bool,
    /// Skip the canary stage `[policy.canary]` asks for.
    #[arg(long, conflicts_with = "canary")]
    no_canary: bool,
    /// The analysis window (`"30s"`, `"5m"`); implies --canary.
    #[arg(long, value_name = "DURATION")]
    canary_window: Option<String>,
}

impl CanaryArgs {
    /// The policy to plan with: the stack's, with the canary stage as asked.
    fn policy(
        &self,
        base: &phoenix::core::policy::Policy,
    ) -> Result<phoenix::core::policy::Policy, Failure> {
        let mut policy = base.clone();
        if self.no_canary {
            policy.canary = None;
            return Ok(policy);
        }
        if self.canary || self.canary_window.is_some() {
            let canary = policy.canary.get_or_insert_with(Default::default);
            if let Some(text) = &self.canary_window {
                let quoted = format!("w = {text:?}");
                #[derive(serde::Deserialize)]
                struct W {
                    w: phoenix::file::HumanDuration,
                }
                let w: W = toml::from_str(&quoted).map_err(|e| {
                    Failure::usage(format!("invalid --canary-window {text:?}: {}", e.message()))
                })?;
                canary.window = w.w.0;
            }
        }
        Ok(policy)
    }
}

/// What failed, with its exit status.
struct Failure {
    code: u8,
    message: String,
    /// Why an operation failed, typed, for `--json`.
    cause: Option<FailureCause>,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
            cause: None,
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    phoenix::core::error_chain(e)
}

impl From<StackFileError> for Failure {
    fn from(e: StackFileError) -> Self {
        let code = match &e {
            StackFileError::File(_)
            | StackFileError::NotDeclared { .. }
            | StackFileError::Ambiguous { .. }
            | StackFileError::MissingFeature { .. }
            | StackFileError::Unsupported { .. }
            | StackFileError::Setup { .. } => exit::USAGE,
            StackFileError::Stack(StackError::Exec(x)) => exit::for_exec(x),
            StackFileError::Stack(StackError::Planning(_)) => exit::REFUSED,
            StackFileError::Stack(StackError::InvalidName { .. }) => exit::USAGE,
            _ => exit::ERROR,
        };
        let cause = match &e {
            StackFileError::Stack(StackError::Exec(x)) => exec_cause(x),
            _ => None,
        };
        Self {
            code,
            message: chain(&e),
            cause,
        }
    }
}

fn exec_cause(e: &ExecError) -> Option<FailureCause> {
    match e {
        ExecError::Failed { cause, .. } => Some(cause.clone()),
        _ => None,
    }
}

impl From<StackError> for Failure {
    fn from(e: StackError) -> Self {
        StackFileError::from(e).into()
    }
}

impl From<ExecError> for Failure {
    fn from(e: ExecError) -> Self {
        Self {
            code: exit::for_exec(&e),
            message: chain(&e),
            cause: exec_cause(&e),
        }
    }
}

impl From<PlanningError> for Failure {
    fn from(e: PlanningError) -> Self {
        Self {
            code: exit::REFUSED,
            message: chain(&e),
            cause: None,
        }
    }
}

fn other(e: impl std::error::Error) -> Failure {
    Failure {
        code: exit::ERROR,
        message: chain(&e),
        cause: None,
    }
}

/// Parses, runs, and maps the outcome to an exit status.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("phoenix: cannot start the runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("phoenix: {}", f.message);
            if json {
                // Machines read why from stdout, typed, as they read results.
                let v = serde_json::json!({
                    "error": f.message,
                    "exit": f.code,
                    "cause": f.cause,
                });
                println!("{v}");
            }
            ExitCode::from(f.code)
        }
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(v).map_err(other)?;
    println!("{text}");
    Ok(())
}

async fn open(cli: &Cli) -> Result<Stack, Failure> {
    open_with(cli, false).await
}

/// Opens the stack to read its records only (no balancer needed).
async fn open_records(cli: &Cli) -> Result<Stack, Failure> {
    open_with(cli, true).await
}

async fn open_with(cli: &Cli, read_only: bool) -> Result<Stack, Failure> {
    let mut select = StackSelect::default();
    select.read_only = read_only;
    select.deployment = cli.deployment.clone();
    select.role = cli.role.clone();
    select.holder = cli.holder.clone();
    select.lease_wait = cli.lease_wait;
    Ok(Stack::open(&cli.file, select).await?)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "phoenix",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Lb {
            command:
                LbCommand::Serve {
                    balancer,
                    listen,
                    socket,
                },
        } => lb_serve(&cli, balancer.as_deref(), *listen, socket.clone()).await,
        Command::Campaign { campaign, command } => campaign_command(&cli, campaign, command).await,
        Command::Plan { operation, out } => {
            let stack = open(&cli).await?;
            let plan = make_plan(&stack, operation).await?;
            if let Some(path) = out {
                let text = serde_json::to_string_pretty(&plan).map_err(other)?;
                std::fs::write(path, text)
                    .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
            }
            if cli.json {
                print_json(&plan)?;
            } else {
                println!("{plan}");
                if plan.is_noop() {
                    println!("(nothing to do)");
                }
                if matches!(operation, Operation::Reap) {
                    if let Some(line) = chaos::savings(&stack, &plan).await? {
                        println!("{line}");
                    }
                }
                if let Some(path) = out {
                    println!(
                        "saved to {}; apply it with: phoenix apply {}",
                        path.display(),
                        path.display()
                    );
                }
            }
            Ok(())
        }
        Command::Apply { plan } => {
            let stack = open(&cli).await?;
            let text = std::fs::read_to_string(plan)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", plan.display())))?;
            let plan: Plan = serde_json::from_str(&text).map_err(|e| {
                Failure::usage(format!("{}: not a saved plan: {e}", plan.display()))
            })?;
            if &plan.deployment != stack.deployment() {
                return Err(Failure::usage(format!(
                    "the plan is for deployment {}, this is {}",
                    plan.deployment,
                    stack.deployment()
                )));
            }
            apply(&cli, &stack, plan).await
        }
        Command::Bake { label } => {
            let stack = open(&cli).await?;
            let image = stack.bake(label).await?;
            if cli.json {
                print_json(&image)
            } else {
                println!(
                    "image {} baked (version {}, {}): certify it with `phoenix certify {}`",
                    image.id, image.version, image.state, image.id
                );
                Ok(())
            }
        }
        Command::Certify {
            image,
            suite,
            details,
            failed,
        } => {
            let stack = open(&cli).await?;
            let id: ImageId = image
                .parse()
                .map_err(|e| Failure::usage(format!("invalid image id {image:?}: {e}")))?;
            let evidence = suite.as_ref().map(|suite| TestEvidence {
                suite: suite.clone(),
                at: chrono::Utc::now(),
                passed: !failed,
                details: details.clone(),
                digest: None,
                log: None,
            });
            let image = stack.certify(&id, evidence).await?;
            if cli.json {
                print_json(&image)
            } else {
                println!("image {} is {}", image.id, image.state);
                Ok(())
            }
        }
        Command::Release { label, image } => {
            let stack = open(&cli).await?;
            let image = image
                .as_deref()
                .map(|i| {
                    i.parse::<ImageId>()
                        .map_err(|e| Failure::usage(format!("invalid image id {i:?}: {e}")))
                })
                .transpose()?;
            let release = stack.release(label, image.as_ref()).await?;
            if cli.json {
                print_json(&release)
            } else {
                let images: Vec<String> = release
                    .images
                    .iter()
                    .map(|(r, i)| format!("{r}: {i}"))
                    .collect();
                println!("release {} ready ({})", release.label, images.join(", "));
                Ok(())
            }
        }
        Command::Operation(op) => {
            let stack = open(&cli).await?;
            // Pick up what an earlier orchestrator left unfinished first. A
            // balancer in this process starts empty: the restore puts the
            // serving pool back behind it before anything is planned.
            if stack.local_balancer_in_process() {
                let found = stack.restore(false).await?;
                if !cli.quiet && !cli.json {
                    eprintln!("{found}");
                }
            } else {
                resume(&cli, &stack).await?;
            }
            let plan = make_plan(&stack, op).await?;
            if matches!(op, Operation::Reap) && !cli.json && !plan.is_noop() {
                if let Some(line) = chaos::savings(&stack, &plan).await? {
                    println!("{line}");
                }
            }
            if plan.is_noop() {
                if cli.json {
                    print_json(&serde_json::json!({ "operation": null, "noop": true }))?;
                } else {
                    println!("nothing to do");
                }
                return Ok(());
            }
            apply(&cli, &stack, plan).await
        }
        Command::Teardown { yes } => {
            let stack = open(&cli).await?;
            if !yes {
                #[cfg(feature = "local")]
                let servers = match stack.local() {
                    Some(l) => l
                        .compute
                        .list(&phoenix::core::labels::LabelSelector::deployment(
                            stack.deployment(),
                        ))
                        .await
                        .map_err(other)?
                        .len(),
                    None => 0,
                };
                // Only the local stack tears down; `teardown --yes` says so.
                #[cfg(not(feature = "local"))]
                let servers = 0;
                println!(
                    "would terminate {servers} server(s) of {}, delete its images and remove {}; run again with --yes",
                    stack.deployment(),
                    stack.workdir().display()
                );
                return Ok(());
            }
            let n = stack.teardown().await?;
            if cli.json {
                print_json(&serde_json::json!({ "terminated": n }))
            } else {
                println!("terminated {n} server(s); removed the images and the state");
                Ok(())
            }
        }
        Command::Status { watch, all } => {
            let stack = open_records(&cli).await?;
            loop {
                let tree = status(&stack, *all).await?;
                if cli.json {
                    print_json(&tree)?;
                } else {
                    if watch.is_some() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{tree}");
                    let _ = std::io::stdout().flush();
                }
                let Some(every) = watch else {
                    return Ok(());
                };
                tokio::select! {
                    _ = tokio::time::sleep(*every) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
                if !cli.json {
                    println!();
                }
            }
        }
        Command::Evidence { image } => {
            let stack = open_records(&cli).await?;
            let p = stack.phoenix();
            let reports = match image {
                Some(id) => {
                    let id = phoenix::core::id::ImageId::new(id.clone())
                        .map_err(|e| Failure::usage(format!("image {id:?}: {e}")))?;
                    vec![p.evidence_report(&id).await.map_err(other)?]
                }
                None => p.evidence_reports().await.map_err(other)?,
            };
            if cli.json {
                return print_json(&reports);
            }
            if reports.is_empty() {
                println!("no image is recorded");
            }
            for r in &reports {
                println!(
                    "image {} ({} {}) {}: {}",
                    r.image,
                    r.name,
                    r.version,
                    r.state,
                    if r.certifies {
                        "certified by its evidence".to_owned()
                    } else {
                        format!(
                            "not certified: {}",
                            r.refusal.as_deref().unwrap_or("no passing evidence")
                        )
                    }
                );
                println!("  digest {}", r.digest.as_deref().unwrap_or("(none)"));
                for (k, v) in &r.provenance {
                    println!("  {k} = {v}");
                }
                for e in &r.evidence {
                    let t = &e.evidence;
                    println!(
                        "  - {} {} at {}{}{}{}",
                        t.suite,
                        if t.passed { "passed" } else { "FAILED" },
                        t.at.format("%Y-%m-%d %H:%M:%S UTC"),
                        if e.for_this_digest {
                            String::new()
                        } else {
                            format!(" (for digest {})", t.digest.as_deref().unwrap_or("none"))
                        },
                        if t.details.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", t.details)
                        },
                        t.log
                            .as_deref()
                            .map(|l| format!(" [log {l}]"))
                            .unwrap_or_default(),
                    );
                }
            }
            Ok(())
        }
        Command::Chaos(args) => chaos::run(&cli, args).await,
        Command::History => {
            let stack = open_records(&cli).await?;
            let h = phoenix::state::history::deployment_history(
                stack.store().as_ref(),
                stack.deployment(),
            )
            .await
            .map_err(other)?;
            if cli.json {
                print_json(&h)
            } else {
                print!("{h}");
                Ok(())
            }
        }
        Command::Export { operation, out } => {
            let stack = open_records(&cli).await?;
            let op = operation_or_last(&stack, operation.as_deref()).await?;
            let text = phoenix::state::history::export_operation_json(
                stack.store().as_ref(),
                stack.deployment(),
                &op,
            )
            .await
            .map_err(other)?;
            match out {
                Some(path) => std::fs::write(path, text)
                    .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display()))),
                None => {
                    println!("{text}");
                    Ok(())
                }
            }
        }
        Command::Report { operation, out } => {
            let stack = open_records(&cli).await?;
            let op = operation_or_last(&stack, operation.as_deref()).await?;
            let dir = out
                .clone()
                .unwrap_or_else(|| stack.workdir().join("reports"));
            let (svg, html) = report(&stack, &op, &dir).await?;
            if cli.json {
                print_json(&serde_json::json!({ "operation": op, "svg": svg, "html": html }))
            } else {
                println!("timeline of {op}: {} and {}", svg.display(), html.display());
                Ok(())
            }
        }
    }
}

fn campaign_failure(e: CampaignError) -> Failure {
    let code = match &e {
        CampaignError::InvalidSpec(_)
        | CampaignError::UnknownDeployment(_)
        | CampaignError::UnknownRole { .. }
        | CampaignError::UnorderedEnvironment { .. }
        | CampaignError::UnitTooLarge { .. } => exit::USAGE,
        CampaignError::SpecChanged { .. } | CampaignError::Planning { .. } => exit::REFUSED,
        CampaignError::Conflict(_) => exit::BUSY,
        _ => exit::ERROR,
    };
    Failure {
        code,
        message: chain(&e),
        cause: None,
    }
}

async fn campaign_command(
    cli: &Cli,
    path: &Path,
    command: &CampaignCommand,
) -> Result<(), Failure> {
    let file = CampaignFile::load(path).map_err(|e| Failure::usage(chain(&e)))?;
    let stack_file = StackFile::load(&cli.file).map_err(|e| Failure::usage(chain(&e)))?;
    let spec = file
        .spec(path, &stack_file)
        .map_err(|e| Failure::usage(chain(&e)))?;
    let read_only = matches!(command, CampaignCommand::Plan | CampaignCommand::Status);
    let mut select = StackSelect::default();
    select.read_only = read_only;
    select.holder = cli.holder.clone();
    select.lease_wait = cli.lease_wait;
    let fleet = FleetStacks::open(&cli.file, &spec, &select).await?;
    let home = fleet
        .home()
        .ok_or_else(|| Failure::usage("the campaign spans no role"))?;
    if !read_only {
        // A balancer in this process starts empty: put what serves back.
        for (_, stack) in fleet.stacks() {
            if stack.local_balancer_in_process() {
                stack.restore(false).await?;
            }
        }
    }
    let campaign = Campaign::new(home, spec.clone()).with_operators(&fleet);
    match command {
        CampaignCommand::Plan => {
            let plan = campaign.plan().await.map_err(campaign_failure)?;
            if cli.json {
                print_json(&plan)
            } else {
                print!("{plan}");
                Ok(())
            }
        }
        CampaignCommand::Status => {
            let report = campaign.report().await.map_err(campaign_failure)?;
            if cli.json {
                print_json(&report)
            } else {
                print!("{report}");
                Ok(())
            }
        }
        CampaignCommand::Run => {
            let report = campaign.run().await.map_err(campaign_failure)?;
            if cli.json {
                print_json(&report)?;
            } else {
                print!("{report}");
            }
            match report.status {
                CampaignStatus::Halted { wave, reason, .. } => Err(Failure {
                    code: exit::FAILED,
                    message: format!("campaign {} halted at wave {wave}: {reason}", spec.name),
                    cause: None,
                }),
                _ => Ok(()),
            }
        }
        CampaignCommand::Renew {
            max_servers,
            older_than,
        } => {
            let ids: Vec<DeploymentId> =
                spec.targets.iter().map(|t| t.deployment.clone()).collect();
            let options = RenewOptions {
                max_age: older_than.unwrap_or(spec.max_age),
                max_servers: *max_servers,
            };
            let report = renew_aged_with(home, Some(&fleet), &ids, &options)
                .await
                .map_err(campaign_failure)?;
            if cli.json {
                return print_json(&report);
            }
            println!(
                "{} server(s) older than {}; {} renewed",
                report.aged,
                phoenix::core::time::human(options.max_age),
                report.renewed
            );
            for r in &report.roles {
                let what = match &r.outcome {
                    RenewOutcome::Renewed { operation } => format!("renewed by {operation}"),
                    RenewOutcome::Busy { reason } => format!("busy, next tick: {reason}"),
                    RenewOutcome::Preempted { operation, reason } => {
                        format!("{operation} pre-empted: {reason}")
                    }
                    RenewOutcome::Failed { reason } => format!("failed: {reason}"),
                    RenewOutcome::Deferred => "over this tick's budget, next tick".into(),
                };
                println!(
                    "  {}/{}: {} aged, {} chosen: {what}",
                    r.deployment, r.role, r.aged, r.chosen
                );
            }
            Ok(())
        }
    }
}

async fn make_plan(stack: &Stack, op: &Operation) -> Result<Plan, Failure> {
    let p = stack.phoenix();
    let (d, r) = (stack.deployment(), stack.role());
    let label = |s: &str| -> Result<ReleaseLabel, Failure> {
        s.parse()
            .map_err(|e| Failure::usage(format!("invalid release {s:?}: {e}")))
    };
    Ok(match op {
        Operation::Provision { release, size } => {
            p.plan_provision(d, r, &label(release)?, *size).await?
        }
        Operation::Deploy { release, canary } => {
            p.plan_deploy_with(d, r, &label(release)?, &canary.policy(p.policy())?)
                .await?
        }
        Operation::Rollout { release, canary } => {
            p.plan_rolling_replace_with(d, r, &label(release)?, &canary.policy(p.policy())?)
                .await?
        }
        Operation::Rollback { release } => {
            let target = release.as_deref().map(label).transpose()?;
            p.plan_rollback(d, r, target.as_ref()).await?
        }
        Operation::Reap => p.plan_reap(d, r).await?,
        Operation::Refresh => p.plan_refresh(d, r).await?,
        Operation::Heal => p.plan_heal(d, r).await?,
        Operation::Reconcile { remove_orphans } => {
            let (found, plan) = p
                .plan_reconcile(
                    d,
                    r,
                    ReconcileOptions {
                        remove_orphans: *remove_orphans,
                        record_missing: true,
                        restore_members: true,
                    },
                )
                .await?;
            eprintln!("{found}");
            plan
        }
    })
}

async fn resume(cli: &Cli, stack: &Stack) -> Result<(), Failure> {
    let progress = Progress::start(stack.phoenix(), cli.quiet);
    let r = stack.phoenix().resume(stack.deployment()).await;
    progress.finish().await;
    match r {
        Ok(Some(report)) => {
            eprintln!("resumed {}: {:?}", report.operation, report.outcome);
            Ok(())
        }
        Ok(None) | Err(ExecError::Failed { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn apply(cli: &Cli, stack: &Stack, plan: Plan) -> Result<(), Failure> {
    let id = plan.id.clone();
    if !cli.json && !cli.quiet {
        eprintln!("{} — {} step(s)", plan.summary, plan.steps.len());
    }
    let progress = Progress::start(stack.phoenix(), cli.quiet);
    let result = stack.phoenix().apply(plan).await;
    progress.finish().await;
    let dir = stack.workdir().join("reports");
    let picture = report(stack, &id, &dir).await;
    match result {
        Ok(report) => {
            done(cli, &report, picture.as_ref().ok())?;
            Ok(())
        }
        Err(e) => {
            if let (Some(r), Ok((svg, _))) = (e.report(), &picture) {
                eprintln!(
                    "{} {:?}; timeline: {}",
                    r.operation,
                    r.outcome,
                    svg.display()
                );
            }
            Err(e.into())
        }
    }
}

fn done(
    cli: &Cli,
    report: &OperationReport,
    picture: Option<&(PathBuf, PathBuf)>,
) -> Result<(), Failure> {
    if cli.json {
        return print_json(&serde_json::json!({
            "report": report,
            "svg": picture.map(|p| &p.0),
            "html": picture.map(|p| &p.1),
        }));
    }
    println!(
        "{} {}: {} in {}",
        report.operation,
        report.kind,
        match report.outcome {
            phoenix::core::events::Outcome::Succeeded => "succeeded",
            phoenix::core::events::Outcome::RolledBack => "rolled back",
            phoenix::core::events::Outcome::Failed => "failed",
            phoenix::core::events::Outcome::Preempted => "pre-empted",
        },
        phoenix::core::time::human(report.duration())
    );
    if let Some((svg, html)) = picture {
        println!("timeline: {} ({})", svg.display(), html.display());
    }
    Ok(())
}

async fn status(stack: &Stack, all: bool) -> Result<StatusTree, Failure> {
    let snap = stack
        .phoenix()
        .snapshot(stack.deployment())
        .await
        .map_err(other)?;
    let tree = StatusTree::of(
        &snap,
        chrono::Utc::now(),
        stack.phoenix().policy().refresh.max_age,
        all,
    );
    Ok(match &stack.file().prices {
        Some(prices) => tree.with_cost(&snap, &prices.table()),
        None => tree,
    })
}

async fn operation_or_last(stack: &Stack, op: Option<&str>) -> Result<OperationId, Failure> {
    if let Some(op) = op {
        return op
            .parse()
            .map_err(|e| Failure::usage(format!("invalid operation id {op:?}: {e}")));
    }
    let snap = stack
        .phoenix()
        .snapshot(stack.deployment())
        .await
        .map_err(other)?;
    snap.record
        .value
        .operations
        .last()
        .cloned()
        .ok_or_else(|| Failure::usage(format!("{} has no operations yet", stack.deployment())))
}

async fn report(
    stack: &Stack,
    op: &OperationId,
    dir: &Path,
) -> Result<(PathBuf, PathBuf), Failure> {
    let deployment: &DeploymentId = stack.deployment();
    let events = deployment_events(stack.store().as_ref(), deployment)
        .await
        .map_err(other)?;
    let snap = stack.phoenix().snapshot(deployment).await.map_err(other)?;
    let releases: BTreeMap<PoolId, String> = snap
        .pools
        .iter()
        .map(|(id, p)| (id.clone(), p.value.release.to_string()))
        .collect();
    let timeline = Timeline::build(deployment, op, &events, &releases).map_err(|e| Failure {
        code: exit::USAGE,
        message: chain(&e),
        cause: None,
    })?;
    std::fs::create_dir_all(dir).map_err(|e| other_io(e, "cannot create", dir))?;
    let svg = dir.join(format!("{op}.svg"));
    let html = dir.join(format!("{op}.html"));
    std::fs::write(&svg, timeline.to_svg()).map_err(|e| other_io(e, "cannot write", &svg))?;
    std::fs::write(&html, timeline.to_html()).map_err(|e| other_io(e, "cannot write", &html))?;
    Ok((svg, html))
}

fn other_io(e: std::io::Error, what: &str, path: &Path) -> Failure {
    Failure {
        code: exit::ERROR,
        message: format!("{what} {}: {e}", path.display()),
        cause: None,
    }
}

async fn lb_serve(
    cli: &Cli,
    name: Option<&str>,
    listen: Option<std::net::SocketAddr>,
    socket: Option<PathBuf>,
) -> Result<(), Failure> {
    let file = StackFile::load(&cli.file).map_err(|e| Failure::usage(chain(&e)))?;
    let base = cli.file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let name = match name {
        Some(n) => n.to_owned(),
        None => {
            let embedded: Vec<&String> = file
                .balancers
                .iter()
                .filter(|(_, b)| matches!(b, BalancerSection::Embedded { .. }))
                .map(|(n, _)| n)
                .collect();
            match embedded.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    return Err(Failure::usage(format!(
                        "{}: no embedded balancer is declared",
                        cli.file.display()
                    )))
                }
                _ => {
                    return Err(Failure::usage(format!(
                        "{}: several embedded balancers; choose one with --balancer",
                        cli.file.display()
                    )))
                }
            }
        }
    };
    let Some(BalancerSection::Embedded {
        listen: file_listen,
        admin_socket,
    }) = file.balancers.get(&name)
    else {
        return Err(Failure::usage(format!(
            "{}: no embedded balancer {name:?}",
            cli.file.display()
        )));
    };
    let socket = socket
        .or_else(|| {
            admin_socket.as_ref().map(|s| {
                if s.is_absolute() {
                    s.clone()
                } else {
                    base.join(s)
                }
            })
        })
        .ok_or_else(|| {
            Failure::usage(format!(
                "{}: balancer {name:?} has no admin_socket (or pass --socket)",
                cli.file.display()
            ))
        })?;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| other_io(e, "cannot create", dir))?;
    }
    let lb = Arc::new(phoenix::embedded_balancer(listen.unwrap_or(*file_listen)).await?);
    let stop = phoenix::CancellationToken::new();
    let served = phoenix::lb::remote::serve(lb.clone(), &socket, stop.clone()).map_err(other)?;
    if cli.json {
        print_json(
            &serde_json::json!({ "listen": lb.local_addr(), "admin_socket": served.path() }),
        )?;
    } else {
        println!(
            "balancer {name} listening on {}, admin socket {}",
            lb.local_addr(),
            served.path().display()
        );
    }
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    stop.cancel();
    drop(served);
    lb.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
