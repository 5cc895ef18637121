//! `phoenix chaos` (a planned-failure drill) and what rollback capacity
//! costs in `phoenix status` and `phoenix reap`.

use std::time::Duration;

use phoenix::core::chaos::{ChaosDrill, ChaosError, FailureKind, DEFAULT_DOMAIN_KEY};
use phoenix::core::cost::reap_savings;
use phoenix::core::policy::Capacity;
use phoenix::{exit, Plan, Stack};

use super::{print_json, resume, Cli, Failure};

/// The drill's options.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct ChaosArgs {
    /// How many failures to inject (the budget).
    #[arg(long, default_value_t = 1)]
    kills: usize,
    /// Seeds the choice of victims: the same seed picks the same servers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop servers (power off) instead of killing them.
    #[arg(long)]
    stop: bool,
    /// Servers failed at once, all in one failure domain.
    #[arg(long, default_value_t = 1)]
    victims: usize,
    /// Healthy members to keep, counting the victims as lost ("2" or
    /// "66%"); default: the policy's min_healthy (a policy at 100% allows
    /// no planned failure).
    #[arg(long, value_name = "N|P%", value_parser = parse_capacity)]
    min_healthy: Option<Capacity>,
    /// The server label that names its failure domain.
    #[arg(long, default_value = DEFAULT_DOMAIN_KEY)]
    domain_key: String,
    /// Pause between a restoration and the next failure.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Halt when a failure is not seen within this.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    detect_deadline: Duration,
    /// Halt when the pool is not restored within this.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    restore_deadline: Duration,
}

fn parse_capacity(s: &str) -> Result<Capacity, String> {
    if let Ok(n) = s.parse::<usize>() {
        return Ok(Capacity::Absolute(n));
    }
    s.strip_suffix('%')
        .and_then(|p| p.trim().parse::<u8>().ok())
        .filter(|p| *p <= 100)
        .map(Capacity::Percent)
        .ok_or_else(|| format!("{s:?}: a count (2) or a percentage up to 100 (66%)"))
}

impl ChaosArgs {
    fn drill(&self) -> ChaosDrill {
        let mut d = ChaosDrill::kills(self.seed, self.kills)
            .kind(if self.stop {
                FailureKind::Stop
            } else {
                FailureKind::Kill
            })
            .victims_per_failure(self.victims)
            .interval(self.interval)
            .deadlines(self.detect_deadline, self.restore_deadline)
            .domain_key(self.domain_key.clone());
        d.min_healthy = self.min_healthy;
        d
    }
}

/// Runs the drill on the stack's live pool and prints its report.
pub(super) async fn run(cli: &Cli, args: &ChaosArgs) -> Result<(), Failure> {
    let stack = super::open(cli).await?;
    if stack.local_balancer_in_process() {
        let found = stack.restore(false).await?;
        if !cli.quiet && !cli.json {
            eprintln!("{found}");
        }
    } else {
        resume(cli, &stack).await?;
    }
    let drill = args.drill();
    let target = phoenix::chaos::target_for(&stack);
    if !cli.quiet && !cli.json {
        eprintln!(
            "chaos drill: {} {}(s) on {}/{} through {} (seed {})",
            drill.failures,
            drill.kind,
            stack.deployment(),
            stack.role(),
            target.name(),
            drill.seed
        );
    }
    let result = stack
        .phoenix()
        .chaos_drill(stack.deployment(), stack.role(), &drill, target.as_ref())
        .await;
    match result {
        Ok(report) if cli.json => print_json(&report),
        Ok(report) => {
            print!("{report}");
            Ok(())
        }
        Err(halted) => {
            if cli.json {
                print_json(&serde_json::json!({
                    "halted": phoenix::core::error_chain(&halted.error),
                    "report": halted.report,
                }))?;
            } else {
                print!("{}", halted.report);
            }
            let code = match halted.error {
                ChaosError::FloorWouldBreak { .. }
                | ChaosError::DomainTooSmall { .. }
                | ChaosError::NothingLive(_)
                | ChaosError::InvalidDrill(_) => exit::REFUSED,
                _ => exit::FAILED,
            };
            Err(Failure {
                code,
                message: phoenix::core::error_chain(&halted),
                cause: None,
            })
        }
    }
}

/// What applying a reap plan saves, when the file has prices.
pub(super) async fn savings(stack: &Stack, plan: &Plan) -> Result<Option<String>, Failure> {
    let Some(prices) = &stack.file().prices else {
        return Ok(None);
    };
    let snap = stack
        .phoenix()
        .snapshot(stack.deployment())
        .await
        .map_err(super::other)?;
    Ok(Some(reap_savings(&snap, plan, &prices.table()).to_string()))
}
