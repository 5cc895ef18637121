//! What operators ask about a deployment, read from any [`StateStore`]
//! through the port (it never writes): its releases, its pools and their
//! state over time, its operations with their outcome and who held the
//! lease when; and one operation's whole record (plan, journal, rollback,
//! holders, events), exported as a stable JSON document.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use phoenix_state::history;
//! # let store = phoenix_state::SqliteStore::open_in_memory().await?;
//! # let shop: phoenix_core::id::DeploymentId = "shop".parse()?;
//! # let record = phoenix_core::records::DeploymentRecord::new(phoenix_core::model::Deployment::new(
//! #     shop.clone(),
//! #     phoenix_core::model::Environment::new("prod".parse()?, true),
//! # ));
//! # phoenix_core::records::Records::new(std::sync::Arc::new(store.clone()))
//! #     .register_deployment(&record.deployment).await?;
//! let h = history::deployment_history(&store, &shop).await?;
//! for op in &h.operations {
//!     println!("{} {:?} {:?}: held by {:?}", op.id, op.kind, op.outcome, op.holders);
//!     let json = history::export_operation_json(&store, &shop, &op.id).await?;
//!     # let _ = json;
//! }
//! print!("{h}");
//! # Ok(()) }
//! ```
//!
//! # The export format (`phoenix.operation/v1`)
//!
//! [`export_operation_json`] writes one JSON object. Fields are only ever
//! added to this format; a change that would alter the meaning of one
//! bumps the version in `format`. Times are RFC 3339 in UTC.
//!
//! ```json
//! {
//!   "format": "phoenix.operation/v1",
//!   "deployment": "shop",
//!   "operation": {
//!     "id": "op-20250101T120000-1a2b3c4d", "kind": "deploy", "role": "web",
//!     "summary": "blue-green switch of web to v2", "target_release": "v2",
//!     "planned_at": "…", "status": "finished", "outcome": "succeeded",
//!     "started_at": "…", "finished_at": "…", "error": null
//!   },
//!   "holders": [ { "holder": "ci-7@host:123", "token": 41, "at": "…" },
//!                { "holder": "ci-9@host:456", "token": 42, "at": "…" } ],
//!   "steps": [ { "index": 0, "step": "create pool web-v2-3 …", "status": "done",
//!                "runs": 1, "started_at": "…", "finished_at": "…", "error": null } ],
//!   "rollback": null,
//!   "events": [ { "seq": 17, "at": "…", "event": "operation_started", … } ],
//!   "plan": { … }
//! }
//! ```
//!
//! - `operation.kind`: `provision`, `deploy`, `rolling_replace`,
//!   `rollback`, `reap`, `refresh`, `heal`, `reconcile`;
//!   `operation.status`: `running`, `rolling_back` or `finished`;
//!   `operation.outcome` (once finished): `succeeded`, `rolled_back` or
//!   `failed`.
//! - `holders`: every lease holder that worked on the operation, in order:
//!   more than one means it was resumed (after a crash, or a takeover);
//!   `token` is the fencing token of that holder's lease.
//! - `steps[].step` is the step as the dry run prints it; `status` is
//!   `pending`, `running`, `done` or `failed`; `runs` above 1 means the step
//!   was re-run after a resume.
//! - `rollback`, once a failure started one: `reason`, `failed_step` (the
//!   0-based index of the plan step that failed), `restores` (true when it
//!   restores the previous pool, false when it only cleans up) and its own
//!   `steps` in the same shape.
//! - `events`: the operation's events from the deployment's history, in
//!   order, each as phoenix-core serialises an `Event` (`at`, `deployment`,
//!   `operation`, and the `event` tag with its fields) plus its `seq` in the
//!   stream.
//! - `plan`: the plan as it was applied, as phoenix-core serialises a
//!   `Plan` (its steps, policy and preconditions).

use std::collections::BTreeMap;
use std::fmt;

use phoenix_core::events::{Event, EventKind, Outcome};
use phoenix_core::executor::{
    LeaseHold, OperationProgress, OperationStatus, RollbackJournal, StepRecord, StepStatus,
};
use phoenix_core::id::{DeploymentId, ImageId, OperationId, PoolId, ReleaseLabel, RoleName};
use phoenix_core::model::{Pool, PoolState, Release};
use phoenix_core::plan::{OperationKind, Plan, Step};
use phoenix_core::ports::{Lease, StateStore, StoreError};
use phoenix_core::records::{key, DeploymentRecord};
use phoenix_core::time::Timestamp;
use serde::Serialize;

/// The format tag of [`export_operation_json`]'s documents.
pub const EXPORT_FORMAT: &str = "phoenix.operation/v1";

/// Events are read from the store in pages of this many.
const PAGE: usize = 1000;

/// Why a history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store failed.
    #[error("reading the history failed")]
    Store(#[from] StoreError),
    /// A record does not decode as what its key says it is.
    #[error("record {key} does not decode as {what}")]
    Decode {
        /// Key.
        key: String,
        /// What it should be.
        what: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// No such deployment.
    #[error("deployment {0} is not recorded")]
    UnknownDeployment(DeploymentId),
    /// No such operation in the deployment.
    #[error("operation {operation} of {deployment} has no journal")]
    UnknownOperation {
        /// Deployment.
        deployment: DeploymentId,
        /// Operation.
        operation: OperationId,
    },
    /// The export could not be written.
    #[error("the operation history does not encode as JSON")]
    Encode(#[source] serde_json::Error),
}

fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    what: &'static str,
    bytes: &[u8],
) -> Result<T, HistoryError> {
    serde_json::from_slice(bytes).map_err(|source| HistoryError::Decode {
        key: key.to_owned(),
        what,
        source,
    })
}

/// A release as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseEntry {
    /// Its label.
    pub label: ReleaseLabel,
    /// When it was recorded.
    pub created_at: Timestamp,
    /// The image of each role.
    pub images: BTreeMap<RoleName, ImageId>,
    /// The fingerprint of its configuration.
    pub fingerprint: String,
}

/// A pool's change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolChange {
    /// Previous state.
    pub from: PoolState,
    /// New state.
    pub to: PoolState,
    /// When.
    pub at: Timestamp,
}

/// A pool and its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolEntry {
    /// Its id.
    pub id: PoolId,
    /// Its role.
    pub role: RoleName,
    /// The release it runs.
    pub release: ReleaseLabel,
    /// Its state now.
    pub state: PoolState,
    /// Desired size.
    pub size: usize,
    /// Servers it has now (in service).
    pub servers: usize,
    /// When it was created.
    pub created_at: Timestamp,
    /// The operation that created it.
    pub created_by: OperationId,
    /// Every state change, oldest first.
    pub transitions: Vec<PoolChange>,
}

impl PoolEntry {
    /// The pool with its state changes: those of the event log, or, for a
    /// pool whose changes predate them there, the list its record kept.
    fn of(pool: &Pool, changes: &mut BTreeMap<PoolId, Vec<PoolChange>>) -> Self {
        let logged = changes.remove(&pool.id).unwrap_or_default();
        Self {
            id: pool.id.clone(),
            role: pool.role.clone(),
            release: pool.release.clone(),
            state: pool.state,
            size: pool.size,
            servers: pool.in_service().filter(|s| s.server.is_some()).count(),
            created_at: pool.created_at,
            created_by: pool.created_by.clone(),
            transitions: if logged.is_empty() {
                pool.history
                    .iter()
                    .map(|t| PoolChange {
                        from: t.from,
                        to: t.to,
                        at: t.at,
                    })
                    .collect()
            } else {
                logged
            },
        }
    }
}

/// An operation, in brief.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperationEntry {
    /// Its id.
    pub id: OperationId,
    /// Its kind (`None` when its plan was never written: it died before).
    pub kind: Option<OperationKind>,
    /// Its summary.
    pub summary: String,
    /// Where it is (`None` when its journal was never written).
    pub status: Option<OperationStatus>,
    /// How it ended, once it did.
    pub outcome: Option<Outcome>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// The error that failed it.
    pub error: Option<String>,
    /// Who held the deployment's lease while it ran, in order.
    pub holders: Vec<LeaseHold>,
}

/// A deployment over time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentHistory {
    /// The deployment.
    pub deployment: DeploymentId,
    /// Its generation (bumped by every change).
    pub generation: u64,
    /// The unfinished operation, if any.
    pub active_operation: Option<OperationId>,
    /// Who holds its lease now, if anyone.
    pub lease: Option<Lease>,
    /// Releases, oldest first.
    pub releases: Vec<ReleaseEntry>,
    /// Pools, oldest first (deleted ones included).
    pub pools: Vec<PoolEntry>,
    /// Operations, oldest first.
    pub operations: Vec<OperationEntry>,
}

/// One event of the deployment's history with its position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEvent {
    /// Its sequence number in the deployment's stream.
    pub seq: u64,
    /// The event as stored (kept as JSON, so that events of a newer
    /// Phoenix are shown rather than refused).
    #[serde(flatten)]
    pub raw: serde_json::Value,
}

impl HistoryEvent {
    /// The event, typed; `None` for a kind this build does not know.
    pub fn typed(&self) -> Option<Event> {
        serde_json::from_value(self.raw.clone()).ok()
    }
}

/// One operation's whole record.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationHistory {
    /// The deployment.
    pub deployment: DeploymentId,
    /// The plan as applied.
    pub plan: Plan,
    /// Its journal.
    pub progress: OperationProgress,
    /// Its events, in order.
    pub events: Vec<HistoryEvent>,
}

async fn header(
    store: &dyn StateStore,
    deployment: &DeploymentId,
) -> Result<DeploymentRecord, HistoryError> {
    let k = key::deployment(deployment);
    let v = store
        .get(&k)
        .await?
        .ok_or_else(|| HistoryError::UnknownDeployment(deployment.clone()))?;
    decode(&k, "deployment", &v.value)
}

/// Every event of the deployment's stream (read page by page).
async fn all_events(
    store: &dyn StateStore,
    deployment: &DeploymentId,
) -> Result<Vec<HistoryEvent>, HistoryError> {
    let stream = key::events(deployment);
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events(&stream, after, PAGE).await?;
        let n = page.len();
        for e in page {
            after = e.seq;
            let raw = decode(&format!("events:{stream}#{}", e.seq), "event", &e.payload)?;
            out.push(HistoryEvent { seq: e.seq, raw });
        }
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// Every pool's state changes, from the deployment's event log (pool
/// records do not keep them). Only pool events are decoded: the log holds
/// several events per server.
async fn pool_changes(
    store: &dyn StateStore,
    deployment: &DeploymentId,
) -> Result<BTreeMap<PoolId, Vec<PoolChange>>, HistoryError> {
    const MARK: &[u8] = b"\"event\":\"pool_state_changed\"";
    let stream = key::events(deployment);
    let mut out: BTreeMap<PoolId, Vec<PoolChange>> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.events(&stream, after, PAGE).await?;
        let n = page.len();
        for e in page {
            after = e.seq;
            if !e.payload.windows(MARK.len()).any(|w| w == MARK) {
                continue;
            }
            let event: Event = decode(&format!("events:{stream}#{}", e.seq), "event", &e.payload)?;
            if let EventKind::PoolStateChanged { pool, from, to } = event.kind {
                out.entry(pool).or_default().push(PoolChange {
                    from,
                    to,
                    at: event.at,
                });
            }
        }
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// The releases, pools and operations of a deployment, and who holds its
/// lease now.
pub async fn deployment_history(
    store: &dyn StateStore,
    deployment: &DeploymentId,
) -> Result<DeploymentHistory, HistoryError> {
    let head = header(store, deployment).await?;
    let mut releases = Vec::new();
    for (k, v) in store.list(&key::releases_prefix(deployment)).await? {
        let r: Release = decode(&k, "release", &v.value)?;
        releases.push(ReleaseEntry {
            label: r.label,
            created_at: r.created_at,
            images: r.images,
            fingerprint: r.config_fingerprint,
        });
    }
    releases.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.label.cmp(&b.label)));
    let mut pools: BTreeMap<PoolId, Pool> = BTreeMap::new();
    for (k, v) in store.list(&key::pools_prefix(deployment)).await? {
        let p: Pool = decode(&k, "pool", &v.value)?;
        pools.insert(p.id.clone(), p);
    }
    let mut changes = pool_changes(store, deployment).await?;
    // Creation order as the header records it; anything it misses after.
    let mut ordered: Vec<PoolEntry> = head
        .pools
        .iter()
        .filter_map(|id| pools.remove(id))
        .map(|p| PoolEntry::of(&p, &mut changes))
        .collect();
    ordered.extend(pools.values().map(|p| PoolEntry::of(p, &mut changes)));
    let mut plans: BTreeMap<String, Plan> = BTreeMap::new();
    let mut journals: BTreeMap<String, OperationProgress> = BTreeMap::new();
    let prefix = key::operations_prefix(deployment);
    for (k, v) in store.list(&prefix).await? {
        let rest = k.strip_prefix(&prefix).unwrap_or(&k);
        match rest.strip_suffix("/plan") {
            Some(op) => {
                plans.insert(op.to_owned(), decode(&k, "plan", &v.value)?);
            }
            None => {
                journals.insert(rest.to_owned(), decode(&k, "operation progress", &v.value)?);
            }
        }
    }
    let operations = head
        .operations
        .iter()
        .map(|op| {
            let plan = plans.get(op.as_str());
            let progress = journals.get(op.as_str());
            OperationEntry {
                id: op.clone(),
                kind: plan.map(|p| p.kind),
                summary: plan.map(|p| p.summary.clone()).unwrap_or_default(),
                status: progress.map(|p| p.status),
                outcome: progress.and_then(|p| match p.status {
                    OperationStatus::Finished(o) => Some(o),
                    _ => None,
                }),
                started_at: progress.map(|p| p.started_at),
                finished_at: progress.and_then(|p| p.finished_at),
                error: progress.and_then(|p| p.error.clone()),
                holders: progress.map(|p| p.holders.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let lease = store.current_lease(&key::lease(deployment)).await?;
    Ok(DeploymentHistory {
        deployment: deployment.clone(),
        generation: head.generation,
        active_operation: head.active_operation,
        lease,
        releases,
        pools: ordered,
        operations,
    })
}

/// One operation's plan, journal, holders and events.
pub async fn operation_history(
    store: &dyn StateStore,
    deployment: &DeploymentId,
    operation: &OperationId,
) -> Result<OperationHistory, HistoryError> {
    let unknown = || HistoryError::UnknownOperation {
        deployment: deployment.clone(),
        operation: operation.clone(),
    };
    let pk = key::operation_plan(deployment, operation);
    let plan: Plan = decode(
        &pk,
        "plan",
        &store.get(&pk).await?.ok_or_else(unknown)?.value,
    )?;
    let jk = key::operation(deployment, operation);
    let progress: OperationProgress = decode(
        &jk,
        "operation progress",
        &store.get(&jk).await?.ok_or_else(unknown)?.value,
    )?;
    let events = all_events(store, deployment)
        .await?
        .into_iter()
        .filter(|e| e.raw.get("operation").and_then(|o| o.as_str()) == Some(operation.as_str()))
        .collect();
    Ok(OperationHistory {
        deployment: deployment.clone(),
        plan,
        progress,
        events,
    })
}

#[derive(Serialize)]
struct ExportOperation<'a> {
    id: &'a OperationId,
    kind: OperationKind,
    role: &'a RoleName,
    summary: &'a str,
    target_release: Option<&'a ReleaseLabel>,
    planned_at: Timestamp,
    status: &'static str,
    outcome: Option<Outcome>,
    started_at: Timestamp,
    finished_at: Option<Timestamp>,
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct ExportStep<'a> {
    index: usize,
    step: String,
    status: StepStatus,
    runs: u32,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct ExportRollback<'a> {
    reason: &'a str,
    failed_step: usize,
    restores: bool,
    steps: Vec<ExportStep<'a>>,
}

#[derive(Serialize)]
struct Export<'a> {
    format: &'static str,
    deployment: &'a DeploymentId,
    operation: ExportOperation<'a>,
    holders: &'a [LeaseHold],
    steps: Vec<ExportStep<'a>>,
    rollback: Option<ExportRollback<'a>>,
    events: &'a [HistoryEvent],
    plan: &'a Plan,
}

fn steps<'a>(steps: &'a [Step], records: &'a [StepRecord]) -> Vec<ExportStep<'a>> {
    steps
        .iter()
        .zip(records)
        .enumerate()
        .map(|(index, (step, r))| ExportStep {
            index,
            step: step.to_string(),
            status: r.status,
            runs: r.runs,
            started_at: r.started_at,
            finished_at: r.finished_at,
            error: r.error.as_deref(),
        })
        .collect()
}

fn rollback(rb: &RollbackJournal) -> ExportRollback<'_> {
    ExportRollback {
        reason: &rb.reason,
        failed_step: rb.failed_step,
        restores: rb.restores,
        steps: steps(&rb.steps, &rb.records),
    }
}

impl OperationHistory {
    /// The lease holders that worked on it, in order.
    pub fn holders(&self) -> &[LeaseHold] {
        &self.progress.holders
    }

    /// The `phoenix.operation/v1` document (see the module documentation).
    pub fn to_json(&self) -> Result<serde_json::Value, HistoryError> {
        let p = &self.progress;
        let (status, outcome) = match p.status {
            OperationStatus::Running => ("running", None),
            OperationStatus::RollingBack => ("rolling_back", None),
            OperationStatus::Finished(o) => ("finished", Some(o)),
        };
        let doc = Export {
            format: EXPORT_FORMAT,
            deployment: &self.deployment,
            operation: ExportOperation {
                id: &self.plan.id,
                kind: self.plan.kind,
                role: &self.plan.role,
                summary: &self.plan.summary,
                target_release: self.plan.target_release.as_ref(),
                planned_at: self.plan.created_at,
                status,
                outcome,
                started_at: p.started_at,
                finished_at: p.finished_at,
                error: p.error.as_deref(),
            },
            holders: &p.holders,
            steps: steps(&self.plan.steps, &p.steps),
            rollback: p.rollback.as_ref().map(rollback),
            events: &self.events,
            plan: &self.plan,
        };
        serde_json::to_value(&doc).map_err(HistoryError::Encode)
    }
}

/// One operation's history as a pretty-printed `phoenix.operation/v1`
/// JSON document (see the module documentation for its shape).
pub async fn export_operation_json(
    store: &dyn StateStore,
    deployment: &DeploymentId,
    operation: &OperationId,
) -> Result<String, HistoryError> {
    let history = operation_history(store, deployment, operation).await?;
    serde_json::to_string_pretty(&history.to_json()?).map_err(HistoryError::Encode)
}

fn when(t: Option<Timestamp>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
    )
}

impl fmt::Display for DeploymentHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "deployment {} (generation {})",
            self.deployment, self.generation
        )?;
        if let Some(l) = &self.lease {
            writeln!(
                f,
                "  lease held by {} (token {}) until {}",
                l.holder,
                l.token,
                when(Some(l.expires_at))
            )?;
        }
        writeln!(f, "releases")?;
        for r in &self.releases {
            let images: Vec<String> = r.images.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(
                f,
                "  {:<12} {}  {}  config {}",
                r.label.as_str(),
                when(Some(r.created_at)),
                images.join(" "),
                r.fingerprint
            )?;
        }
        writeln!(f, "pools")?;
        for p in &self.pools {
            let path: Vec<String> = std::iter::once(
                p.transitions
                    .first()
                    .map_or_else(|| p.state.to_string(), |t| t.from.to_string()),
            )
            .chain(
                p.transitions
                    .iter()
                    .map(|t| format!("{} ({})", t.to, t.at.format("%H:%M:%S%.3f"))),
            )
            .collect();
            writeln!(
                f,
                "  {:<16} {:<10} {} servers  {}",
                p.id.as_str(),
                p.release.as_str(),
                p.servers,
                path.join(" → ")
            )?;
        }
        writeln!(f, "operations")?;
        for o in &self.operations {
            let holders: Vec<String> = o
                .holders
                .iter()
                .map(|h| format!("{} #{} at {}", h.holder, h.token, when(Some(h.at))))
                .collect();
            let state = match (o.outcome, o.status) {
                (Some(out), _) => format!("{out:?}").to_lowercase(),
                (None, Some(s)) => format!("{s:?}").to_lowercase(),
                (None, None) => "never started".into(),
            };
            writeln!(
                f,
                "  {} {:<16} {:<12} {} → {}  held by {}",
                o.id,
                o.kind.map_or_else(|| "?".to_owned(), |k| k.to_string()),
                state,
                when(o.started_at),
                when(o.finished_at),
                holders.join(", then ")
            )?;
        }
        Ok(())
    }
}
