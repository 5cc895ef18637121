//! Running waves: budget, floor, units, health, halt and roll back.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::Mutex;

use crate::events::Outcome;
use crate::executor::ExecError;
use crate::id::{OperationId, ReleaseLabel, ServerId};
use crate::plan::Plan;
use crate::records::Stored;
use crate::time::{elapsed_between, Timestamp};

use super::state::{self, CampaignRecord, CampaignStatus, UnitStatus, WaveStatus};
use super::{Campaign, CampaignError, CampaignReport, Method, Unit};

/// What became of one unit.
enum UnitResult {
    /// Serves its release (by this operation, or already did).
    Done(Option<OperationId>),
    /// Failed, and why.
    Failed(Option<OperationId>, String),
}

/// Whether an executor refusal is worth waiting out (another writer, an
/// emergency, records changed under the plan).
fn transient(e: &ExecError) -> bool {
    matches!(
        e,
        ExecError::Busy { .. }
            | ExecError::Reserved { .. }
            | ExecError::Stale { .. }
            | ExecError::Unfinished(_)
    )
}

impl Campaign<'_> {
    pub(super) fn now(&self) -> Timestamp {
        self.phoenix.clock().now()
    }

    /// Runs the campaign, or resumes it where a previous process left it.
    ///
    /// Waves run in order. Before a wave: the replacement budget (servers
    /// per window) is waited for, and the fleet must serve at or above the
    /// capacity floor (a fresh balancer read; waited for up to
    /// `floor_wait`, then the campaign halts). In a wave, deployments run
    /// side by side and the roles of one deployment one after the other,
    /// each through a normal operation. After it, the wave bakes for
    /// `wave_bake` and every unit must serve its release healthy at full
    /// size. A failed wave halts the campaign: nothing later starts, and
    /// the units of the wave that had moved are rolled back through the
    /// normal rollback (a failed unit was already rolled back by its own
    /// operation). A halted or completed campaign only reports.
    pub async fn run(&self) -> Result<CampaignReport, CampaignError> {
        let mut st = self.start().await?;
        if st.value.status == CampaignStatus::Running {
            for w in 0..st.value.waves.len() {
                match st.value.waves[w].status {
                    WaveStatus::Succeeded => continue,
                    WaveStatus::RolledBack => break,
                    WaveStatus::Pending | WaveStatus::Running => {}
                }
                if let Some(reason) = self.run_wave(&mut st, w).await? {
                    let now = self.now();
                    st.value.status = CampaignStatus::Halted {
                        wave: w,
                        reason,
                        at: now,
                    };
                    state::save(self.phoenix.records(), &mut st).await?;
                    break;
                }
            }
            if st.value.status == CampaignStatus::Running {
                st.value.status = CampaignStatus::Completed { at: self.now() };
                state::save(self.phoenix.records(), &mut st).await?;
            }
        }
        self.report_on(&st.value, true).await
    }

    /// Loads the campaign's record, or plans and stores a new one.
    async fn start(&self) -> Result<Stored<CampaignRecord>, CampaignError> {
        let records = self.phoenix.records();
        if let Some(mut st) = state::load(records, &self.spec.name).await? {
            if st.value.plan.fingerprint != self.spec.fingerprint() {
                return Err(CampaignError::SpecChanged {
                    name: self.spec.name.clone(),
                    stored: st.value.plan.fingerprint.clone(),
                });
            }
            if st.value.status == CampaignStatus::Running {
                st.value.resumes += 1;
                state::save(records, &mut st).await?;
                tracing::info!(campaign = %self.spec.name, "resuming campaign");
            }
            return Ok(st);
        }
        let plan = self.plan().await?;
        let mut st = Stored {
            value: CampaignRecord::new(self.spec.clone(), plan, self.now()),
            version: 0,
        };
        state::save(records, &mut st).await?;
        Ok(st)
    }

    /// Runs one wave; `Some(reason)` when it failed (and was rolled back).
    async fn run_wave(
        &self,
        st: &mut Stored<CampaignRecord>,
        w: usize,
    ) -> Result<Option<String>, CampaignError> {
        let records = self.phoenix.records();
        let wave = st.value.plan.waves[w].clone();
        if st.value.waves[w].status == WaveStatus::Pending {
            self.await_budget(&st.value, w).await;
            if let Some(reason) = self.await_floor(&st.value).await? {
                // Nothing of this wave started: it is not rolled back.
                st.value.waves[w].status = WaveStatus::RolledBack;
                for u in &mut st.value.waves[w].units {
                    u.status = UnitStatus::Skipped;
                }
                return Ok(Some(reason));
            }
            st.value.waves[w].status = WaveStatus::Running;
            st.value.waves[w].started_at = Some(self.now());
            state::save(records, st).await?;
        }
        tracing::info!(campaign = %self.spec.name, wave = w, servers = wave.servers(), "wave starts");

        // Deployments side by side, the roles of one in order.
        let shared = Mutex::new(&mut *st);
        let groups: Vec<Vec<usize>> = wave
            .deployments()
            .into_iter()
            .map(|d| {
                (0..wave.units.len())
                    .filter(|&i| &wave.units[i].deployment == d)
                    .collect()
            })
            .collect();
        let runs = groups.iter().map(|idx| {
            let shared = &shared;
            let wave = &wave;
            async move {
                for &i in idx {
                    let (done, known) = {
                        let st = shared.lock().await;
                        let rec = &st.value.waves[w].units[i];
                        (rec.status == UnitStatus::Done, rec.from.is_some())
                    };
                    if done {
                        continue;
                    }
                    if !known {
                        // What serves now is what a rollback returns to:
                        // recorded before anything moves.
                        let u = &wave.units[i];
                        let snap = self.phoenix.snapshot(&u.deployment).await?;
                        let from = snap.live_pool(&u.role).map(|p| p.release.clone());
                        let mut st = shared.lock().await;
                        st.value.waves[w].units[i].from = from;
                        state::save(self.phoenix.records(), &mut st).await?;
                    }
                    let result = self.run_unit(&wave.units[i]).await;
                    let failed = matches!(result, UnitResult::Failed(..));
                    let mut st = shared.lock().await;
                    let now = self.now();
                    let rec = &mut st.value.waves[w].units[i];
                    match result {
                        UnitResult::Done(op) => {
                            rec.status = UnitStatus::Done;
                            rec.operation = op.or(rec.operation.take());
                        }
                        UnitResult::Failed(op, error) => {
                            rec.status = UnitStatus::Failed;
                            rec.operation = op.or(rec.operation.take());
                            rec.error = Some(error);
                        }
                    }
                    rec.finished_at = Some(now);
                    state::save(self.phoenix.records(), &mut st).await?;
                    if failed {
                        break;
                    }
                }
                Ok::<(), CampaignError>(())
            }
        });
        for r in join_all(runs).await {
            r?;
        }
        let _ = shared.into_inner();

        let mut failures: Vec<String> = st.value.waves[w]
            .units
            .iter()
            .zip(&wave.units)
            .filter(|(r, _)| r.status == UnitStatus::Failed)
            .map(|(r, u)| {
                format!(
                    "{}/{}: {}",
                    u.deployment,
                    u.role,
                    r.error.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        if failures.is_empty() {
            // The wave's health: every unit serves its release at full
            // size after the bake, and the fleet stays above its floor.
            tokio::time::sleep(self.spec.wave_bake).await;
            failures.extend(self.wave_health(&wave.units).await?);
            if failures.is_empty() {
                if let Some(reason) = self.floor_shortfall(&st.value).await? {
                    failures.push(reason);
                }
            }
        }
        if failures.is_empty() {
            st.value.waves[w].status = WaveStatus::Succeeded;
            st.value.waves[w].finished_at = Some(self.now());
            state::save(records, st).await?;
            return Ok(None);
        }
        let reason = format!("wave {w} failed: {}", failures.join("; "));
        tracing::warn!(campaign = %self.spec.name, wave = w, %reason, "halting the campaign and rolling the wave back");
        let unrolled = self.roll_back_wave(st, w).await?;
        if unrolled.is_empty() {
            Ok(Some(reason))
        } else {
            Ok(Some(format!(
                "{reason}; ROLLBACK FAILED for {}",
                unrolled.join("; ")
            )))
        }
    }

    /// Rolls back the units of wave `w` that moved, each to the release
    /// it served before; marks the others. Returns the units whose
    /// rollback failed, with why.
    async fn roll_back_wave(
        &self,
        st: &mut Stored<CampaignRecord>,
        w: usize,
    ) -> Result<Vec<String>, CampaignError> {
        let units = st.value.plan.waves[w].units.clone();
        let mut unrolled = Vec::new();
        for (i, u) in units.iter().enumerate() {
            match st.value.waves[w].units[i].status {
                UnitStatus::Done => {
                    let from = st.value.waves[w].units[i].from.clone();
                    let (op, error) = self.roll_back_unit(u, from.as_ref()).await;
                    let rec = &mut st.value.waves[w].units[i];
                    rec.rollback = op;
                    match error {
                        None => rec.status = UnitStatus::RolledBack,
                        Some(e) => {
                            unrolled.push(format!("{}/{}: {e}", u.deployment, u.role));
                            rec.error = Some(format!("rollback failed: {e}"));
                        }
                    }
                }
                UnitStatus::Pending => st.value.waves[w].units[i].status = UnitStatus::Skipped,
                _ => {}
            }
            state::save(self.phoenix.records(), st).await?;
        }
        st.value.waves[w].status = WaveStatus::RolledBack;
        st.value.waves[w].finished_at = Some(self.now());
        state::save(self.phoenix.records(), st).await?;
        Ok(unrolled)
    }

    /// Finishes an interrupted operation of the deployment, if any.
    async fn finish_interrupted(&self, unit: &Unit) -> Result<(), Option<String>> {
        let snap = self
            .phoenix
            .snapshot(&unit.deployment)
            .await
            .map_err(|e| Some(crate::error_chain(&e)))?;
        let Some(op) = snap.record.value.active_operation.clone() else {
            return Ok(());
        };
        // Resumed by the Phoenix of the operation's role (its balancer).
        let role = self
            .phoenix
            .records()
            .get::<Plan>(
                &crate::records::key::operation_plan(&unit.deployment, &op),
                "plan",
            )
            .await
            .ok()
            .flatten()
            .map_or_else(|| unit.role.clone(), |p| p.value.role);
        match self
            .on(&unit.deployment, &role)
            .resume(&unit.deployment)
            .await
        {
            Ok(_) => Ok(()),
            // The interrupted operation failed: its own policy cleaned up
            // (a failed move of this unit is planned again below and
            // fails again if the cause remains).
            Err(ExecError::Failed { .. }) => Ok(()),
            Err(e) if transient(&e) => Err(None),
            Err(e) => Err(Some(crate::error_chain(&e))),
        }
    }

    /// Moves one unit to its release: a normal operation, waiting out a
    /// busy deployment up to `busy_wait`.
    async fn run_unit(&self, unit: &Unit) -> UnitResult {
        let until = tokio::time::Instant::now() + self.options.busy_wait;
        let mut last = String::from("deployment busy");
        loop {
            if tokio::time::Instant::now() >= until {
                return UnitResult::Failed(
                    None,
                    format!(
                        "gave up after waiting {}: {last}",
                        crate::time::human(self.options.busy_wait)
                    ),
                );
            }
            match self.finish_interrupted(unit).await {
                Ok(()) => {}
                Err(None) => {
                    tokio::time::sleep(self.options.poll).await;
                    continue;
                }
                Err(Some(e)) => return UnitResult::Failed(None, e),
            }
            let phoenix = self.on(&unit.deployment, &unit.role);
            let planned = match self.spec.method {
                Method::BlueGreen => {
                    phoenix
                        .plan_deploy(&unit.deployment, &unit.role, &unit.release)
                        .await
                }
                Method::Rolling => {
                    phoenix
                        .plan_rolling_replace(&unit.deployment, &unit.role, &unit.release)
                        .await
                }
            };
            let plan: Plan = match planned {
                Ok(p) => p,
                Err(e) => return UnitResult::Failed(None, crate::error_chain(&e)),
            };
            if plan.is_noop() {
                return UnitResult::Done(None);
            }
            let op = plan.id.clone();
            match phoenix.apply(plan).await {
                Ok(r) if r.outcome == Outcome::Succeeded => return UnitResult::Done(Some(op)),
                Ok(r) => {
                    return UnitResult::Failed(
                        Some(op),
                        r.error.unwrap_or_else(|| format!("{:?}", r.outcome)),
                    )
                }
                Err(e) if transient(&e) => {
                    last = crate::error_chain(&e);
                    tokio::time::sleep(self.options.poll).await;
                }
                Err(e) => return UnitResult::Failed(Some(op), crate::error_chain(&e)),
            }
        }
    }

    /// Rolls one unit back (the normal rollback) to `from`, the release it
    /// served before (its standby pool, or a new pool of it when a rolling
    /// replacement left none), or else to the last standby pool.
    async fn roll_back_unit(
        &self,
        unit: &Unit,
        from: Option<&ReleaseLabel>,
    ) -> (Option<OperationId>, Option<String>) {
        let until = tokio::time::Instant::now() + self.options.busy_wait;
        loop {
            match self.finish_interrupted(unit).await {
                Ok(()) => {}
                Err(None) if tokio::time::Instant::now() < until => {
                    tokio::time::sleep(self.options.poll).await;
                    continue;
                }
                Err(e) => return (None, Some(e.unwrap_or_else(|| "deployment busy".into()))),
            }
            let phoenix = self.on(&unit.deployment, &unit.role);
            let plan = match phoenix
                .plan_rollback(
                    &unit.deployment,
                    &unit.role,
                    from.filter(|f| **f != unit.release),
                )
                .await
            {
                Ok(p) => p,
                Err(e) => return (None, Some(crate::error_chain(&e))),
            };
            let op = plan.id.clone();
            match phoenix.apply(plan).await {
                Ok(r) if r.outcome == Outcome::Succeeded => return (Some(op), None),
                Ok(r) => return (Some(op), Some(r.error.unwrap_or_default())),
                Err(e) if transient(&e) && tokio::time::Instant::now() < until => {
                    tokio::time::sleep(self.options.poll).await;
                }
                Err(e) => return (Some(op), Some(crate::error_chain(&e))),
            }
        }
    }

    /// Waits until wave `w` fits the replacement budget's window.
    async fn await_budget(&self, record: &CampaignRecord, w: usize) {
        let need = record.plan.waves[w].servers();
        let budget = &self.spec.budget;
        loop {
            let now = self.now();
            let recent: Vec<(Timestamp, usize)> = record
                .waves
                .iter()
                .zip(&record.plan.waves)
                .filter_map(|(r, p)| r.started_at.map(|t| (t, p.servers())))
                .filter(|(t, _)| elapsed_between(*t, now) < budget.window)
                .collect();
            let used: usize = recent.iter().map(|(_, n)| n).sum();
            if used + need <= budget.per_window {
                return;
            }
            let oldest = recent.iter().map(|(t, _)| *t).min().unwrap_or(now);
            let wait = budget
                .window
                .saturating_sub(elapsed_between(oldest, now))
                .max(Duration::from_millis(1));
            tracing::info!(campaign = %self.spec.name, wave = w, wait = %crate::time::human(wait), "waiting on the replacement budget");
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits for the fleet to serve at or above the floor; `Some(reason)`
    /// when it did not within `floor_wait`.
    async fn await_floor(&self, record: &CampaignRecord) -> Result<Option<String>, CampaignError> {
        let until = tokio::time::Instant::now() + self.options.floor_wait;
        loop {
            let short = self.floor_shortfall(record).await?;
            match short {
                None => return Ok(None),
                Some(reason) if tokio::time::Instant::now() >= until => return Ok(Some(reason)),
                Some(_) => tokio::time::sleep(self.options.poll).await,
            }
        }
    }

    /// Healthy serving servers of the spanned deployments by a fresh read
    /// of every balancer, against the floor.
    pub(super) async fn floor_shortfall(
        &self,
        record: &CampaignRecord,
    ) -> Result<Option<String>, CampaignError> {
        let mut ours: BTreeSet<ServerId> = BTreeSet::new();
        // Every balancer any unit's Phoenix knows, read once each.
        let mut balancers: Vec<std::sync::Arc<dyn crate::ports::LoadBalancer>> = Vec::new();
        for t in &self.spec.targets {
            let snap = self.phoenix.snapshot(&t.deployment).await?;
            for role in snap.deployment().roles.keys() {
                for p in snap.live_pools(role) {
                    ours.extend(p.attached().filter_map(|s| s.server.clone()));
                }
                for lb in self.on(&t.deployment, role).ports().balancers.all() {
                    if !balancers.iter().any(|b| std::sync::Arc::ptr_eq(b, &lb)) {
                        balancers.push(lb);
                    }
                }
            }
        }
        let mut serving: BTreeSet<ServerId> = BTreeSet::new();
        for lb in balancers {
            let members = lb.members().await.map_err(|source| CampaignError::Read {
                what: "balancer members for the capacity floor".into(),
                source,
            })?;
            serving.extend(
                members
                    .into_iter()
                    .filter(|m| m.is_serving_healthy() && ours.contains(&m.server))
                    .map(|m| m.server),
            );
        }
        let pct = usize::from(self.spec.capacity_floor_percent);
        let floor = (record.plan.fleet_servers * pct).div_ceil(100);
        Ok((serving.len() < floor).then(|| {
            format!(
                "capacity floor: {} of {} servers serve healthy, the floor is {floor} ({pct}%)",
                serving.len(),
                record.plan.fleet_servers
            )
        }))
    }

    /// Every unit serves its release healthy at full size (fresh reads);
    /// the failures.
    async fn wave_health(&self, units: &[Unit]) -> Result<Vec<String>, CampaignError> {
        let mut out = Vec::new();
        for u in units {
            let snap = self.phoenix.snapshot(&u.deployment).await?;
            let Some(live) = snap
                .live_pools(&u.role)
                .filter(|p| p.release == u.release)
                .last()
            else {
                out.push(format!(
                    "{}/{}: no live pool of {}",
                    u.deployment, u.role, u.release
                ));
                continue;
            };
            let servers: BTreeSet<ServerId> =
                live.attached().filter_map(|s| s.server.clone()).collect();
            let Some(lb) = self
                .on(&u.deployment, &u.role)
                .ports()
                .balancers
                .for_role(&u.role)
                .cloned()
            else {
                out.push(format!("{}/{}: no balancer", u.deployment, u.role));
                continue;
            };
            let members = lb.members().await.map_err(|source| CampaignError::Read {
                what: format!("balancer members of {}/{}", u.deployment, u.role),
                source,
            })?;
            let healthy = members
                .iter()
                .filter(|m| m.is_serving_healthy() && servers.contains(&m.server))
                .count();
            if healthy < u.servers {
                out.push(format!(
                    "{}/{}: {healthy} of {} servers of {} serve healthy after the bake",
                    u.deployment, u.role, u.servers, u.release
                ));
            }
        }
        Ok(out)
    }
}
