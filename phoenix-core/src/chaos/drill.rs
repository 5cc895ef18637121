//! Running a drill: [`Phoenix::chaos_drill`].

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::error_chain;
use crate::executor::guards::MemberIndex;
use crate::id::{DeploymentId, RoleName, ServerId};
use crate::model::{Pool, Server, Slot};
use crate::ports::Member;
use crate::Phoenix;

use super::error::{ChaosError, DrillHalted};
use super::report::{DrillReport, FailureRecord};
use super::spec::ChaosDrill;
use super::target::ChaosTarget;

/// One failure's chosen victims.
struct Choice {
    victims: Vec<Server>,
    domain: String,
    healthy: usize,
    floor: usize,
}

impl Phoenix {
    /// Runs a planned-failure drill on `role`'s live pool: `drill.failures`
    /// times, it checks the capacity floor against a fresh balancer read
    /// (the victims counted as lost), picks a failure domain and victims in
    /// it at random (seeded), fails them through `target`, waits until the
    /// balancer or the cloud shows the failure, heals until the pool serves
    /// at full size and health without them, and only then, after
    /// `drill.interval`, goes on. Each wait polls every `drill.poll` on the
    /// tokio clock and ends at its deadline.
    ///
    /// # Errors
    ///
    /// [`DrillHalted`], with the failures done so far, when the floor would
    /// break (nothing is injected then), no domain has enough healthy
    /// servers, an injection fails, or a failure is not seen or not
    /// restored within its deadline.
    pub async fn chaos_drill(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        drill: &ChaosDrill,
        target: &dyn ChaosTarget,
    ) -> Result<DrillReport, DrillHalted> {
        let started_at = self.clock().now();
        let pool = self
            .snapshot(deployment)
            .await
            .ok()
            .and_then(|s| s.live_pool(role).map(|p| p.id.clone()));
        let mut report = DrillReport {
            deployment: deployment.to_string(),
            role: role.to_string(),
            pool,
            target: target.name().to_owned(),
            seed: drill.seed,
            kind: drill.kind,
            budget: drill.failures,
            domain_key: drill.domain_key.clone(),
            started_at,
            finished_at: started_at,
            failures: Vec::new(),
        };
        let result = self
            .drill_into(&mut report, deployment, role, drill, target)
            .await;
        report.finished_at = self.clock().now();
        match result {
            Ok(()) => Ok(report),
            Err(error) => Err(DrillHalted {
                error,
                report: Box::new(report),
            }),
        }
    }

    async fn drill_into(
        &self,
        report: &mut DrillReport,
        deployment: &DeploymentId,
        role: &RoleName,
        drill: &ChaosDrill,
        target: &dyn ChaosTarget,
    ) -> Result<(), ChaosError> {
        drill.validate().map_err(ChaosError::InvalidDrill)?;
        let mut rng = StdRng::seed_from_u64(drill.seed);
        for number in 1..=drill.failures {
            if number > 1 {
                tokio::time::sleep(drill.interval).await;
            }
            let choice = self
                .choose_victims(deployment, role, drill, target, &mut rng)
                .await?;
            let record = self
                .fail_and_restore(number, deployment, role, drill, target, choice)
                .await?;
            tracing::info!(
                failure = number,
                detect_ms = record.time_to_detect.as_millis(),
                restore_ms = record.time_to_restore.as_millis(),
                "chaos: failure restored"
            );
            report.failures.push(record);
        }
        Ok(())
    }

    /// The floor check and the seeded choice of one domain and its victims.
    async fn choose_victims(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        drill: &ChaosDrill,
        target: &dyn ChaosTarget,
        rng: &mut StdRng,
    ) -> Result<Choice, ChaosError> {
        let snap = self.snapshot(deployment).await?;
        let pool = snap
            .live_pool(role)
            .ok_or_else(|| ChaosError::NothingLive(role.clone()))?;
        let members = self.members(role).await?;
        let healthy = healthy_slots(pool, &members);
        let floor = drill
            .min_healthy
            .unwrap_or(self.policy().rollout.min_healthy)
            .resolve(pool.size);
        let wanted = drill.victims_per_failure;
        // The floor counts the victims as lost: checked before any choice,
        // against a fresh read of the balancer.
        if healthy.len() < floor + wanted {
            return Err(ChaosError::FloorWouldBreak {
                pool: pool.id.clone(),
                healthy: healthy.len(),
                victims: wanted,
                floor,
            });
        }
        let ids: Vec<ServerId> = healthy.iter().filter_map(|s| s.server.clone()).collect();
        let servers = self.describe_all(&ids).await?;
        let mut domains: BTreeMap<String, Vec<Server>> = BTreeMap::new();
        for s in servers.into_iter().filter(|s| s.status.is_active()) {
            domains
                .entry(target.domain(&s, &drill.domain_key))
                .or_default()
                .push(s);
        }
        for list in domains.values_mut() {
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        let eligible: Vec<&String> = domains
            .iter()
            .filter(|(_, l)| l.len() >= wanted)
            .map(|(d, _)| d)
            .collect();
        if eligible.is_empty() {
            return Err(ChaosError::DomainTooSmall {
                key: drill.domain_key.clone(),
                wanted,
                largest: domains.values().map(Vec::len).max().unwrap_or(0),
            });
        }
        let domain = eligible[rng.random_range(0..eligible.len())].clone();
        let mut candidates = domains.remove(&domain).unwrap_or_default();
        let mut victims = Vec::with_capacity(wanted);
        while victims.len() < wanted && !candidates.is_empty() {
            victims.push(candidates.swap_remove(rng.random_range(0..candidates.len())));
        }
        Ok(Choice {
            victims,
            domain,
            healthy: healthy.len(),
            floor,
        })
    }

    async fn describe_all(&self, ids: &[ServerId]) -> Result<Vec<Server>, ChaosError> {
        let compute = self.ports().compute.clone();
        let max = compute.capabilities().max_describe_batch.max(1);
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(max) {
            out.extend(
                self.read("describing live servers", || compute.describe(chunk))
                    .await?,
            );
        }
        Ok(out)
    }

    async fn fail_and_restore(
        &self,
        number: usize,
        deployment: &DeploymentId,
        role: &RoleName,
        drill: &ChaosDrill,
        target: &dyn ChaosTarget,
        choice: Choice,
    ) -> Result<FailureRecord, ChaosError> {
        let victims: Vec<ServerId> = choice.victims.iter().map(|s| s.id.clone()).collect();
        for v in &choice.victims {
            target
                .inject(v, drill.kind)
                .await
                .map_err(|source| ChaosError::Inject {
                    server: v.id.clone(),
                    source,
                })?;
        }
        let injected_at = self.clock().now();
        let t0 = Instant::now();
        tracing::info!(failure = number, victims = ?victims, domain = %choice.domain, "chaos: injected");

        let detected_by = loop {
            if let Some(by) = self.seen_failed(deployment, role, &choice.victims).await {
                break by;
            }
            if t0.elapsed() >= drill.detect_deadline {
                return Err(ChaosError::DetectDeadline {
                    failure: number,
                    victims,
                    waited: t0.elapsed(),
                });
            }
            tokio::time::sleep(drill.poll).await;
        };
        let time_to_detect = t0.elapsed();
        let detected_at = self.clock().now();

        let mut heals = Vec::new();
        let mut last: Option<String> = None;
        loop {
            match self.restored(deployment, role, &victims).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => last = Some(e),
            }
            if t0.elapsed() >= drill.restore_deadline {
                return Err(ChaosError::RestoreDeadline {
                    failure: number,
                    waited: t0.elapsed(),
                    last,
                });
            }
            match self.plan_heal(deployment, role).await {
                Ok(plan) if !plan.is_noop() => match self.apply(plan).await {
                    Ok(r) => heals.push(r.operation),
                    Err(e) => {
                        last = Some(error_chain(&e));
                        // A halted heal leaves its operation unfinished:
                        // pick it up so that the next plan is allowed.
                        if let Err(e) = self.resume(deployment).await {
                            last = Some(error_chain(&e));
                        }
                    }
                },
                Ok(_) => {}
                Err(e) => last = Some(error_chain(&e)),
            }
            tokio::time::sleep(drill.poll).await;
        }
        Ok(FailureRecord {
            number,
            victims,
            domain: choice.domain,
            kind: drill.kind,
            healthy_before: choice.healthy,
            floor: choice.floor,
            injected_at,
            detected_at,
            restored_at: self.clock().now(),
            time_to_detect,
            time_to_restore: t0.elapsed(),
            detected_by,
            heals,
        })
    }

    /// Whether a fresh read shows any victim failed: the balancer no longer
    /// counts it healthy, or the cloud no longer runs it. A failed read is
    /// "not seen yet".
    async fn seen_failed(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        victims: &[Server],
    ) -> Option<String> {
        if let (Ok(snap), Ok(members)) = (self.snapshot(deployment).await, self.members(role).await)
        {
            let index = MemberIndex::new(&members);
            let slots: Vec<&Slot> = snap
                .live_pools(role)
                .flat_map(Pool::attached)
                .filter(|s| victims.iter().any(|v| s.server.as_ref() == Some(&v.id)))
                .collect();
            let sick = slots.len() < victims.len()
                || slots
                    .iter()
                    .any(|s| !index.of_slot(s).is_some_and(Member::is_serving_healthy));
            if sick {
                return Some("balancer".into());
            }
        }
        let ids: Vec<ServerId> = victims.iter().map(|v| v.id.clone()).collect();
        match self.ports().compute.describe(&ids).await {
            Ok(found) => {
                let running = found.iter().filter(|s| s.status.is_active()).count();
                (running < ids.len()).then(|| "cloud".into())
            }
            Err(_) => None,
        }
    }

    /// Whether the live pool serves at its full size, every attached
    /// member healthy by a fresh read, and no victim attached any more.
    async fn restored(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        victims: &[ServerId],
    ) -> Result<bool, String> {
        let snap = self
            .snapshot(deployment)
            .await
            .map_err(|e| error_chain(&e))?;
        let Some(pool) = snap.live_pool(role) else {
            return Err(format!("role {role} has no live pool"));
        };
        if pool
            .attached()
            .any(|s| s.server.as_ref().is_some_and(|id| victims.contains(id)))
        {
            return Ok(false);
        }
        let members = self.members(role).await.map_err(|e| error_chain(&e))?;
        Ok(healthy_slots(pool, &members).len() >= pool.size
            && pool.attached().count() == healthy_slots(pool, &members).len())
    }
}

/// The pool's attached slots whose members serve and pass their checks.
fn healthy_slots<'a>(pool: &'a Pool, members: &[Member]) -> Vec<&'a Slot> {
    let index = MemberIndex::new(members);
    pool.attached()
        .filter(|s| index.of_slot(s).is_some_and(Member::is_serving_healthy))
        .collect()
}
