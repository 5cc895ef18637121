//! The scheduled mode: one tick renews the fleet's servers older than
//! `max_age`, oldest first, within a budget, through refresh.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::events::Outcome;
use crate::executor::ExecError;
use crate::id::{DeploymentId, OperationId, RoleName};
use crate::model::{PoolState, StandbyKind};
use crate::time::{elapsed_between, Timestamp};
use crate::Phoenix;

use super::{CampaignError, Operators};

/// What one tick may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewOptions {
    /// Servers older than this are renewed.
    #[serde(with = "crate::time::duration_ms")]
    pub max_age: Duration,
    /// Most servers one tick renews, fleet-wide (the oldest first). A
    /// role's servers launched together are renewed together; a cohort
    /// larger than the whole budget is renewed alone, in a tick that
    /// renews nothing else.
    pub max_servers: usize,
}

/// What became of one role in a tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RenewOutcome {
    /// Its oldest servers were replaced.
    Renewed {
        /// The refresh.
        operation: OperationId,
    },
    /// Another operation holds the deployment, or an emergency reserved
    /// it: the tick did not wait (the next tick takes it up).
    Busy {
        /// Why.
        reason: String,
    },
    /// An incident's emergency rollback pre-empted the refresh.
    Preempted {
        /// The refresh.
        operation: OperationId,
        /// By whom and why.
        reason: String,
    },
    /// The refresh failed (its own policy cleaned up).
    Failed {
        /// Why.
        reason: String,
    },
    /// Over this tick's budget: the next tick takes it up.
    Deferred,
}

/// One role a tick looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewedRole {
    /// Deployment.
    pub deployment: DeploymentId,
    /// Role.
    pub role: RoleName,
    /// Its servers past `max_age` at the tick.
    pub aged: usize,
    /// How many the tick chose to renew.
    pub chosen: usize,
    /// What happened.
    pub outcome: RenewOutcome,
}

/// What one tick did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewReport {
    /// When it started.
    pub at: Timestamp,
    /// Servers past `max_age` fleet-wide at the start.
    pub aged: usize,
    /// Servers renewed.
    pub renewed: usize,
    /// Per role with aged servers.
    pub roles: Vec<RenewedRole>,
}

/// One tick of the scheduled mode: finds every server of `deployments`
/// older than `max_age` (serving, or in a hot standby pool), and renews
/// the oldest first, at most `max_servers` of them, each role through an
/// ordinary refresh (replacements attach and bake before old servers
/// leave; the orchestrator's replacement-rate budget applies).
///
/// It never waits on a deployment's lease: a busy or reserved deployment
/// is left to the next tick. While a refresh runs, an incident's
/// [`Phoenix::emergency_rollback`] pre-empts it at its next safe point
/// (the executor's pre-emption); the tick records that and leaves the
/// deployment alone for the rest of the tick.
pub async fn renew_aged(
    phoenix: &Phoenix,
    deployments: &[DeploymentId],
    options: &RenewOptions,
) -> Result<RenewReport, CampaignError> {
    renew_aged_with(phoenix, None, deployments, options).await
}

/// [`renew_aged`] for a fleet whose roles are operated by different
/// Phoenix instances sharing one state store (`operators`; the others go
/// through `phoenix`).
pub async fn renew_aged_with(
    phoenix: &Phoenix,
    operators: Option<&dyn Operators>,
    deployments: &[DeploymentId],
    options: &RenewOptions,
) -> Result<RenewReport, CampaignError> {
    if options.max_servers == 0 || options.max_age.is_zero() {
        return Err(CampaignError::InvalidSpec(
            "renewal needs max_servers > 0 and max_age > 0".into(),
        ));
    }
    let at = phoenix.clock().now();
    // Every aged server: (launched, deployment, role).
    let mut aged: Vec<(Timestamp, &DeploymentId, RoleName)> = Vec::new();
    for d in deployments {
        let snap = phoenix.snapshot(d).await?;
        for role in snap.deployment().roles.keys() {
            for pool in snap.pools_of(role) {
                let counted = matches!(
                    pool.state,
                    PoolState::Live
                        | PoolState::Standby {
                            kind: StandbyKind::Hot
                        }
                );
                if !counted {
                    continue;
                }
                for slot in pool.in_service() {
                    if let Some(t) = slot.launched_at {
                        if elapsed_between(t, at) > options.max_age {
                            aged.push((t, d, role.clone()));
                        }
                    }
                }
            }
        }
    }
    aged.sort();
    // Per role: the launch times chosen, oldest first, within the budget;
    // a cohort (same launch time) is never split.
    let mut per_role: BTreeMap<(&DeploymentId, RoleName), (usize, Vec<Timestamp>)> =
        BTreeMap::new();
    for (t, d, role) in &aged {
        per_role.entry((*d, role.clone())).or_default().0 += 1;
        let _ = t;
    }
    let mut budget = options.max_servers;
    let mut chosen_any = false;
    let mut i = 0;
    while i < aged.len() {
        let (t, d, role) = (&aged[i].0, aged[i].1, &aged[i].2);
        let cohort = aged[i..]
            .iter()
            .take_while(|(t2, d2, r2)| t2 == t && *d2 == d && r2 == role)
            .count();
        if cohort <= budget || !chosen_any {
            if let Some(entry) = per_role.get_mut(&(d, role.clone())) {
                entry.1.extend(std::iter::repeat_n(*t, cohort));
            }
            budget = budget.saturating_sub(cohort);
            chosen_any = true;
        }
        i += cohort;
        if budget == 0 {
            break;
        }
    }

    let mut roles = Vec::new();
    let mut renewed = 0;
    let mut leave_alone: Vec<&DeploymentId> = Vec::new();
    for ((d, role), (count, chosen)) in per_role {
        let Some(youngest) = chosen.iter().max().copied() else {
            roles.push(RenewedRole {
                deployment: d.clone(),
                role,
                aged: count,
                chosen: 0,
                outcome: RenewOutcome::Deferred,
            });
            continue;
        };
        if leave_alone.contains(&d) {
            roles.push(RenewedRole {
                deployment: d.clone(),
                role,
                aged: count,
                chosen: chosen.len(),
                outcome: RenewOutcome::Busy {
                    reason: "an emergency pre-empted this deployment earlier in the tick".into(),
                },
            });
            continue;
        }
        let phoenix = operators
            .and_then(|o| o.for_unit(d, &role))
            .unwrap_or(phoenix);
        // Only servers launched at or before the youngest chosen one are
        // past this refresh's age: a refresh of exactly the chosen ones.
        let mut policy = phoenix.policy().clone();
        let now = phoenix.clock().now();
        policy.refresh.max_age = elapsed_between(youngest, now)
            .saturating_sub(Duration::from_millis(1))
            .max(options.max_age);
        let outcome = match phoenix.plan_refresh_with(d, &role, &policy).await {
            Err(e) => RenewOutcome::Failed {
                reason: crate::error_chain(&e),
            },
            Ok(plan) if plan.is_noop() => continue,
            Ok(plan) => {
                let op = plan.id.clone();
                match phoenix.apply(plan).await {
                    Ok(r) if r.outcome == Outcome::Succeeded => {
                        renewed += chosen.len();
                        RenewOutcome::Renewed { operation: op }
                    }
                    Ok(r) => RenewOutcome::Failed {
                        reason: r.error.unwrap_or_else(|| format!("{:?}", r.outcome)),
                    },
                    Err(ExecError::Preempted { report }) => {
                        leave_alone.push(d);
                        RenewOutcome::Preempted {
                            operation: op,
                            reason: report.error.unwrap_or_default(),
                        }
                    }
                    Err(
                        e @ (ExecError::Busy { .. }
                        | ExecError::Reserved { .. }
                        | ExecError::Unfinished(_)
                        | ExecError::Stale { .. }),
                    ) => {
                        if matches!(e, ExecError::Reserved { .. }) {
                            leave_alone.push(d);
                        }
                        RenewOutcome::Busy {
                            reason: crate::error_chain(&e),
                        }
                    }
                    Err(e) => RenewOutcome::Failed {
                        reason: crate::error_chain(&e),
                    },
                }
            }
        };
        roles.push(RenewedRole {
            deployment: d.clone(),
            role,
            aged: count,
            chosen: chosen.len(),
            outcome,
        });
    }
    Ok(RenewReport {
        at,
        aged: aged.len(),
        renewed,
        roles,
    })
}
