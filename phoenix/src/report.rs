//! The timeline of an operation as a picture: an SVG (and an HTML page
//! embedding it) with a lane per pool and a row per server — launches,
//! health, traffic (attached, draining), terminations and failures on a
//! time axis — the operation's steps above, the traffic switches and
//! rollbacks as lines across, and the count of serving members over time
//! below.
//!
//! [`Timeline::build`] reads it from the deployment's events (the state
//! store's history), so a report can be drawn at any later time:
//! `phoenix report OPERATION`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use phoenix_core::events::{Event, EventKind, Outcome};
use phoenix_core::id::{DeploymentId, OperationId, PoolId};
use phoenix_core::model::PoolState;
use phoenix_core::ports::StateStore;
use phoenix_core::records::key;
use phoenix_core::time::{elapsed_between, human, Timestamp};

/// Why a timeline could not be drawn.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The store could not be read.
    #[error("cannot read the events of {deployment}")]
    Store {
        /// The deployment.
        deployment: DeploymentId,
        /// Cause.
        #[source]
        source: phoenix_core::ports::StoreError,
    },
    /// An event could not be decoded.
    #[error("event {seq} of {deployment} is not valid JSON")]
    Decode {
        /// The deployment.
        deployment: DeploymentId,
        /// Its position.
        seq: u64,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// No event of that operation was recorded.
    #[error("no events of operation {operation} in {deployment} (see `phoenix history`)")]
    UnknownOperation {
        /// The deployment.
        deployment: DeploymentId,
        /// The operation.
        operation: OperationId,
    },
}

/// Every event of a deployment, oldest first (events of kinds this build
/// does not know are skipped).
pub async fn deployment_events(
    store: &dyn StateStore,
    deployment: &DeploymentId,
) -> Result<Vec<Event>, ReportError> {
    const PAGE: usize = 500;
    let stream = key::events(deployment);
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page =
            store
                .events(&stream, after, PAGE)
                .await
                .map_err(|source| ReportError::Store {
                    deployment: deployment.clone(),
                    source,
                })?;
        let n = page.len();
        for e in page {
            after = e.seq;
            match serde_json::from_slice::<Event>(&e.payload) {
                Ok(ev) => out.push(ev),
                Err(source) if serde_json::from_slice::<serde_json::Value>(&e.payload).is_ok() => {
                    // A kind from a newer Phoenix: not drawn.
                    tracing::debug!(seq = e.seq, error = %source, "event skipped");
                }
                Err(source) => {
                    return Err(ReportError::Decode {
                        deployment: deployment.clone(),
                        seq: e.seq,
                        source,
                    })
                }
            }
        }
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// What a span of a server row shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpanKind {
    /// Launched, not yet healthy.
    Booting,
    /// Healthy, out of the traffic.
    Healthy,
    /// Taking traffic.
    Serving,
    /// Detached, connections draining.
    Draining,
}

/// What a point of a server row shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PointKind {
    /// The provider accepted the launch.
    Launched,
    /// A launch attempt was given up.
    LaunchFailed,
    /// The server was gone from the cloud.
    Missing,
    /// Terminated.
    Terminated,
    /// Stopped (cold standby).
    Stopped,
}

/// A span of time, in seconds from the timeline's start.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// What it shows.
    pub kind: SpanKind,
    /// Start.
    pub from: f64,
    /// End.
    pub to: f64,
}

/// One server (or failed attempt) of a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerRow {
    /// Its id.
    pub server: String,
    /// Its slot.
    pub slot: u32,
    /// Its states over time.
    pub spans: Vec<Span>,
    /// What happened to it, and when.
    pub points: Vec<(PointKind, f64, String)>,
}

/// A pool's lane.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolLane {
    /// The pool.
    pub pool: String,
    /// Its release.
    pub release: String,
    /// Its state at the end of the timeline.
    pub state: String,
    /// Its servers.
    pub servers: Vec<ServerRow>,
}

/// A step of the operation.
#[derive(Debug, Clone, PartialEq)]
pub struct StepBar {
    /// Its index (rollback steps after the plan's).
    pub index: usize,
    /// A rollback step.
    pub rollback: bool,
    /// The step as the dry run prints it.
    pub text: String,
    /// Start.
    pub from: f64,
    /// End.
    pub to: f64,
    /// It failed, with this error.
    pub failed: Option<String>,
}

/// A moment marked across every lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// What (`switch`, `rollback`, `failed`, `refused`).
    pub kind: &'static str,
    /// When.
    pub at: f64,
    /// Label.
    pub label: String,
}

/// An operation's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// The deployment.
    pub deployment: String,
    /// The operation.
    pub operation: String,
    /// Its kind and summary.
    pub summary: String,
    /// How it ended (`None`: not yet).
    pub outcome: Option<Outcome>,
    /// When it started.
    pub start: Timestamp,
    /// Its length in seconds (the time axis).
    pub length: f64,
    /// Its steps.
    pub steps: Vec<StepBar>,
    /// A lane per pool.
    pub pools: Vec<PoolLane>,
    /// Switches, rollbacks, failures.
    pub marks: Vec<Mark>,
    /// Serving members over time: (seconds, count), a step function.
    pub serving: Vec<(f64, usize)>,
}

#[derive(Default)]
struct RowState {
    server: String,
    slot: u32,
    spans: Vec<Span>,
    points: Vec<(PointKind, f64, String)>,
    open: Option<(SpanKind, f64)>,
}

impl RowState {
    fn enter(&mut self, kind: Option<SpanKind>, at: f64) {
        if let Some((k, from)) = self.open.take() {
            if at > from || k == SpanKind::Serving {
                self.spans.push(Span {
                    kind: k,
                    from,
                    to: at,
                });
            }
        }
        self.open = kind.map(|k| (k, at));
    }
}

fn pool_of(kind: &EventKind) -> Option<(&PoolId, Option<u32>, Option<String>)> {
    use EventKind::*;
    match kind {
        ServerLaunched { pool, slot, server }
        | ServerActive { pool, slot, server }
        | ServerVerified { pool, slot, server }
        | ServerHealthy { pool, slot, server }
        | ServerAttached { pool, slot, server }
        | ServerDetached { pool, slot, server }
        | ServerDrained { pool, slot, server }
        | ServerStopped { pool, slot, server }
        | ServerStarted { pool, slot, server }
        | ServerMissing { pool, slot, server } => {
            Some((pool, Some(*slot), Some(server.to_string())))
        }
        LaunchFailed {
            pool, slot, server, ..
        } => Some((pool, Some(*slot), server.as_ref().map(|s| s.to_string()))),
        ServerTerminated {
            pool: Some(pool),
            slot,
            server,
        } => Some((pool, *slot, Some(server.to_string()))),
        PoolStateChanged { pool, .. } | LaunchRequested { pool, .. } => Some((pool, None, None)),
        _ => None,
    }
}

impl Timeline {
    /// The timeline of `operation` from the deployment's events, with the
    /// release of each pool from `releases` (pool id → label).
    pub fn build(
        deployment: &DeploymentId,
        operation: &OperationId,
        events: &[Event],
        releases: &BTreeMap<PoolId, String>,
    ) -> Result<Self, ReportError> {
        let mine: Vec<&Event> = events
            .iter()
            .filter(|e| e.operation.as_ref() == Some(operation))
            .collect();
        let (Some(first), Some(last)) = (mine.first(), mine.last()) else {
            return Err(ReportError::UnknownOperation {
                deployment: deployment.clone(),
                operation: operation.clone(),
            });
        };
        let start = first.at;
        let end = last.at;
        let length = (elapsed_between(start, end).as_secs_f64()).max(0.001);
        let t = |at: Timestamp| -> f64 {
            if at <= start {
                0.0
            } else {
                elapsed_between(start, at).as_secs_f64().min(length)
            }
        };

        // Before the window: who serves, and which pools exist.
        let mut serving_now: BTreeSet<String> = BTreeSet::new();
        // Servers running before it began (with their pool, slot and
        // health), to draw the standby pools a rollback brings back.
        let mut alive: BTreeMap<String, (PoolId, u32, bool)> = BTreeMap::new();
        let mut pool_state: BTreeMap<PoolId, PoolState> = BTreeMap::new();
        let mut server_pool: BTreeMap<String, (PoolId, u32)> = BTreeMap::new();
        for e in events.iter().filter(|e| e.at < start) {
            match &e.kind {
                EventKind::ServerAttached { pool, slot, server } => {
                    serving_now.insert(server.to_string());
                    server_pool.insert(server.to_string(), (pool.clone(), *slot));
                }
                EventKind::ServerDetached { server, .. } => {
                    serving_now.remove(server.as_str());
                }
                EventKind::ServerLaunched { pool, slot, server } => {
                    alive.insert(server.to_string(), (pool.clone(), *slot, false));
                }
                EventKind::ServerHealthy { server, .. }
                | EventKind::ServerVerified { server, .. } => {
                    if let Some(a) = alive.get_mut(server.as_str()) {
                        a.2 = true;
                    }
                }
                EventKind::ServerTerminated { server, .. }
                | EventKind::ServerStopped { server, .. }
                | EventKind::ServerMissing { server, .. } => {
                    serving_now.remove(server.as_str());
                    alive.remove(server.as_str());
                }
                EventKind::PoolStateChanged { pool, to, .. } => {
                    pool_state.insert(pool.clone(), *to);
                }
                _ => {}
            }
        }

        let mut lanes: Vec<PoolId> = Vec::new();
        let mut rows: BTreeMap<PoolId, Vec<RowState>> = BTreeMap::new();
        let lane = |lanes: &mut Vec<PoolId>, p: &PoolId| {
            if !lanes.contains(p) {
                lanes.push(p.clone());
            }
        };
        fn row<'a>(
            rows: &'a mut BTreeMap<PoolId, Vec<RowState>>,
            pool: &PoolId,
            slot: u32,
            server: &str,
        ) -> &'a mut RowState {
            let v = rows.entry(pool.clone()).or_default();
            let i = match v.iter().position(|r| r.server == server) {
                Some(i) => i,
                None => {
                    v.push(RowState {
                        server: server.to_owned(),
                        slot,
                        ..RowState::default()
                    });
                    v.len() - 1
                }
            };
            &mut v[i]
        }
        // Servers serving when it began start with an open serving span.
        for s in &serving_now {
            if let Some((pool, slot)) = server_pool.get(s) {
                lane(&mut lanes, pool);
                row(&mut rows, pool, *slot, s).enter(Some(SpanKind::Serving), 0.0);
            }
        }
        // Running servers of pools this operation touches start with an
        // open span too: healthy (a standby) or booting.
        let touched: BTreeSet<&PoolId> = events
            .iter()
            .filter(|e| e.at >= start && e.at <= end && e.operation.as_ref() == Some(operation))
            .filter_map(|e| pool_of(&e.kind).map(|(p, _, _)| p))
            .collect();
        for (server, (pool, slot, healthy)) in &alive {
            if serving_now.contains(server) || !touched.contains(pool) {
                continue;
            }
            lane(&mut lanes, pool);
            let kind = if *healthy {
                SpanKind::Healthy
            } else {
                SpanKind::Booting
            };
            row(&mut rows, pool, *slot, server).enter(Some(kind), 0.0);
        }
        let mut serving = vec![(0.0, serving_now.len())];
        let mut steps: Vec<StepBar> = Vec::new();
        let mut marks = Vec::new();
        let mut summary = String::new();
        let mut outcome = None;
        for e in events.iter().filter(|e| e.at >= start && e.at <= end) {
            let at = t(e.at);
            let ours = e.operation.as_ref() == Some(operation);
            if let Some((pool, slot, server)) = pool_of(&e.kind) {
                lane(&mut lanes, pool);
                if let (Some(slot), Some(server)) = (slot, server) {
                    let r = row(&mut rows, pool, slot, &server);
                    match &e.kind {
                        EventKind::ServerLaunched { .. } => {
                            r.points.push((PointKind::Launched, at, "launched".into()));
                            r.enter(Some(SpanKind::Booting), at);
                        }
                        EventKind::ServerStarted { .. } => {
                            r.enter(Some(SpanKind::Booting), at);
                        }
                        EventKind::ServerHealthy { .. } | EventKind::ServerVerified { .. }
                            if !matches!(
                                r.open,
                                Some((SpanKind::Serving | SpanKind::Draining, _))
                            ) =>
                        {
                            r.enter(Some(SpanKind::Healthy), at);
                        }
                        EventKind::ServerAttached { .. } => {
                            r.enter(Some(SpanKind::Serving), at);
                            serving_now.insert(server.clone());
                            serving.push((at, serving_now.len()));
                        }
                        EventKind::ServerDetached { .. } => {
                            r.enter(Some(SpanKind::Draining), at);
                            serving_now.remove(&server);
                            serving.push((at, serving_now.len()));
                        }
                        EventKind::ServerDrained { .. } => r.enter(Some(SpanKind::Healthy), at),
                        EventKind::ServerStopped { .. } => {
                            r.points.push((PointKind::Stopped, at, "stopped".into()));
                            r.enter(None, at);
                        }
                        EventKind::ServerTerminated { .. } => {
                            r.points
                                .push((PointKind::Terminated, at, "terminated".into()));
                            r.enter(None, at);
                            if serving_now.remove(&server) {
                                serving.push((at, serving_now.len()));
                            }
                        }
                        EventKind::ServerMissing { .. } => {
                            r.points.push((PointKind::Missing, at, "missing".into()));
                            r.enter(None, at);
                        }
                        EventKind::LaunchFailed { reason, .. } => {
                            r.points.push((PointKind::LaunchFailed, at, reason.clone()));
                            r.enter(None, at);
                        }
                        _ => {}
                    }
                } else if let (EventKind::LaunchFailed { reason, slot, .. }, None) =
                    (&e.kind, &slot)
                {
                    let r = row(&mut rows, pool, *slot, &format!("slot {slot}"));
                    r.points.push((PointKind::LaunchFailed, at, reason.clone()));
                }
                if let EventKind::PoolStateChanged { pool, to, .. } = &e.kind {
                    pool_state.insert(pool.clone(), *to);
                    if *to == PoolState::Live && ours {
                        let release = releases.get(pool).cloned().unwrap_or_default();
                        marks.push(Mark {
                            kind: "switch",
                            at,
                            label: format!("{release} live"),
                        });
                    }
                }
            }
            if !ours {
                continue;
            }
            match &e.kind {
                EventKind::OperationStarted {
                    kind, summary: s, ..
                } => {
                    summary = format!("{kind}: {s}");
                }
                EventKind::OperationFinished { outcome: o, .. } => outcome = Some(*o),
                EventKind::StepStarted {
                    index,
                    rollback,
                    step,
                } => steps.push(StepBar {
                    index: *index,
                    rollback: *rollback,
                    text: step.clone(),
                    from: at,
                    to: length,
                    failed: None,
                }),
                EventKind::StepFinished { index, rollback } => {
                    if let Some(s) = steps
                        .iter_mut()
                        .rev()
                        .find(|s| s.index == *index && s.rollback == *rollback)
                    {
                        s.to = at;
                    }
                }
                EventKind::StepFailed {
                    index,
                    rollback,
                    error,
                } => {
                    if let Some(s) = steps
                        .iter_mut()
                        .rev()
                        .find(|s| s.index == *index && s.rollback == *rollback)
                    {
                        s.to = at;
                        s.failed = Some(error.clone());
                    }
                    marks.push(Mark {
                        kind: "failed",
                        at,
                        label: format!("step {} failed", index + 1),
                    });
                }
                EventKind::RollbackStarted { reason, .. } => marks.push(Mark {
                    kind: "rollback",
                    at,
                    label: format!("rollback: {}", first_line(reason)),
                }),
                EventKind::GuardRefused { invariant, .. } => marks.push(Mark {
                    kind: "refused",
                    at,
                    label: format!("guard: {invariant}"),
                }),
                _ => {}
            }
        }
        let pools = lanes
            .iter()
            .map(|p| {
                let servers = rows
                    .remove(p)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|mut r| {
                        r.enter(None, length);
                        ServerRow {
                            server: r.server,
                            slot: r.slot,
                            spans: r.spans,
                            points: r.points,
                        }
                    })
                    .collect();
                PoolLane {
                    pool: p.to_string(),
                    release: releases.get(p).cloned().unwrap_or_else(|| "?".into()),
                    state: pool_state
                        .get(p)
                        .map_or_else(|| "?".into(), |s| s.to_string()),
                    servers,
                }
            })
            .collect();
        serving.push((length, serving_now.len()));
        Ok(Self {
            deployment: deployment.to_string(),
            operation: operation.to_string(),
            summary,
            outcome,
            start,
            length,
            steps,
            pools,
            marks,
            serving,
        })
    }

    /// The picture, as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        Svg::new(self).draw()
    }

    /// An HTML page embedding the picture, with the steps as a table.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>{op} — Phoenix timeline</title>\
             <style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222}}\
             table{{border-collapse:collapse;font-size:13px}}td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}}\
             .failed{{color:#c62828}}</style></head><body>\n<h1>{dep}: {op}</h1>\n<p>{summary} — {outcome}, {len}, started {start}</p>\n",
            op = esc(&self.operation),
            dep = esc(&self.deployment),
            summary = esc(&self.summary),
            outcome = esc(&outcome_text(self.outcome)),
            len = human(std::time::Duration::from_secs_f64(self.length)),
            start = self.start.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
        );
        h.push_str(&self.to_svg());
        h.push_str(
            "\n<h2>Steps</h2>\n<table><tr><th>#</th><th>from</th><th>to</th><th>step</th></tr>\n",
        );
        for s in &self.steps {
            let _ = writeln!(
                h,
                "<tr{cls}><td>{n}{rb}</td><td>+{from:.2}s</td><td>+{to:.2}s</td><td>{text}{err}</td></tr>",
                cls = if s.failed.is_some() { " class=\"failed\"" } else { "" },
                n = s.index + 1,
                rb = if s.rollback { " (rollback)" } else { "" },
                from = s.from,
                to = s.to,
                text = esc(&s.text),
                err = s
                    .failed
                    .as_deref()
                    .map(|e| format!("<br>failed: {}", esc(e)))
                    .unwrap_or_default(),
            );
        }
        h.push_str("</table>\n</body></html>\n");
        h
    }
}

fn outcome_text(o: Option<Outcome>) -> String {
    match o {
        Some(Outcome::Succeeded) => "succeeded".into(),
        Some(Outcome::RolledBack) => "failed and rolled back".into(),
        Some(Outcome::Failed) => "failed".into(),
        Some(Outcome::Preempted) => "pre-empted".into(),
        None => "unfinished".into(),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// Escapes text for XML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

const WIDTH: f64 = 1280.0;
const LEFT: f64 = 300.0;
const RIGHT: f64 = 40.0;
const ROW: f64 = 18.0;
const FONT: &str = "DejaVu Sans, Verdana, sans-serif";

const C_BOOT: &str = "#b0bec5";
const C_HEALTHY: &str = "#81c784";
const C_SERVING: &str = "#1e88e5";
const C_DRAIN: &str = "#fb8c00";
const C_FAIL: &str = "#d32f2f";
const C_SWITCH: &str = "#3949ab";
const C_STEP: &str = "#90a4ae";
const C_STEP_RB: &str = "#ef9a9a";

struct Svg<'a> {
    t: &'a Timeline,
    out: String,
    y: f64,
}

impl<'a> Svg<'a> {
    fn new(t: &'a Timeline) -> Self {
        Self {
            t,
            out: String::new(),
            y: 0.0,
        }
    }

    fn x(&self, secs: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (secs / self.t.length).clamp(0.0, 1.0)
    }

    // Every attribute of an SVG text, in the order SVG writes them.
    #[allow(clippy::too_many_arguments)]
    fn text(&mut self, x: f64, y: f64, size: f64, anchor: &str, fill: &str, weight: &str, s: &str) {
        let _ = writeln!(
            self.out,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" font-weight="{weight}">{}</text>"#,
            esc(s)
        );
    }

    fn rect(&mut self, x1: f64, y: f64, x2: f64, h: f64, fill: &str, title: &str) {
        let w = (x2 - x1).max(1.5);
        let _ = writeln!(
            self.out,
            r#"<rect x="{x1:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"><title>{}</title></rect>"#,
            esc(title)
        );
    }

    fn ticks(&self) -> (f64, Vec<f64>) {
        let len = self.t.length;
        let step = [
            0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0,
            60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0,
        ]
        .into_iter()
        .find(|s| len / s <= 12.0)
        .unwrap_or(86400.0);
        let mut v = Vec::new();
        let mut s = 0.0;
        while s <= len + 1e-9 {
            v.push(s);
            s += step;
        }
        (step, v)
    }

    fn draw(mut self) -> String {
        let t = self.t;
        let step_rows = t.steps.len().clamp(1, 24);
        // Title.
        self.text(
            20.0,
            32.0,
            20.0,
            "start",
            "#212121",
            "bold",
            &format!("{} · {}", t.deployment, t.operation),
        );
        let sub = format!(
            "{} — {}, {} (started {})",
            truncate(&t.summary, 90),
            outcome_text(t.outcome),
            human(std::time::Duration::from_secs_f64(t.length)),
            t.start.format("%Y-%m-%d %H:%M:%S UTC")
        );
        self.text(20.0, 56.0, 13.0, "start", "#455a64", "normal", &sub);
        self.legend(20.0, 80.0);
        self.y = 110.0;

        // Steps: one thin bar per step, stacked in rows.
        self.text(
            20.0,
            self.y + 12.0,
            13.0,
            "start",
            "#212121",
            "bold",
            "steps",
        );
        let top = self.y;
        for (i, s) in t.steps.iter().enumerate() {
            let y = top + (i % step_rows) as f64 * 12.0 + 2.0;
            let fill = if s.failed.is_some() {
                C_FAIL
            } else if s.rollback {
                C_STEP_RB
            } else {
                C_STEP
            };
            let (x1, x2) = (self.x(s.from), self.x(s.to));
            let title = format!(
                "step {}{}: {} (+{:.2}s … +{:.2}s){}",
                s.index + 1,
                if s.rollback { " (rollback)" } else { "" },
                s.text,
                s.from,
                s.to,
                s.failed
                    .as_deref()
                    .map(|e| format!(" FAILED: {e}"))
                    .unwrap_or_default()
            );
            self.rect(x1, y, x2, 9.0, fill, &title);
            // The label goes right of the bar, or inside it, or left of it:
            // wherever it has the most room.
            let label = format!("{}. {}", s.index + 1, s.text);
            let right = WIDTH - RIGHT - x2 - 6.0;
            let left = x1 - LEFT - 6.0;
            let inside = x2 - x1 - 8.0;
            let fit = |room: f64| truncate(&label, (room / 5.2).max(0.0) as usize);
            if right >= 200.0 || (right >= left && right >= inside && right > 40.0) {
                self.text(
                    x2 + 4.0,
                    y + 8.0,
                    9.0,
                    "start",
                    "#546e7a",
                    "normal",
                    &fit(right),
                );
            } else if inside >= left && inside > 40.0 {
                self.text(
                    x1 + 4.0,
                    y + 8.0,
                    9.0,
                    "start",
                    "#ffffff",
                    "bold",
                    &fit(inside),
                );
            } else if left > 40.0 {
                self.text(
                    x1 - 4.0,
                    y + 8.0,
                    9.0,
                    "end",
                    "#546e7a",
                    "normal",
                    &fit(left),
                );
            }
        }
        let steps_bottom = top + step_rows as f64 * 12.0 + 8.0;
        // A band for the marks' labels, one row each (at most three).
        let mark_rows = t.marks.len().min(3) as f64;
        self.y = steps_bottom + 8.0 + mark_rows * 12.0;
        let lanes_top = self.y;

        // Pool lanes.
        for (pi, p) in t.pools.iter().enumerate() {
            let rows = p.servers.len().max(1) as f64;
            let lane_h = 26.0 + rows * ROW;
            let bg = if pi % 2 == 0 { "#f5f7f8" } else { "#ffffff" };
            let _ = writeln!(
                self.out,
                r##"<rect x="10" y="{:.1}" width="{:.1}" height="{lane_h:.1}" fill="{bg}" stroke="#e0e0e0"/>"##,
                self.y,
                WIDTH - 20.0
            );
            self.text(
                20.0,
                self.y + 17.0,
                14.0,
                "start",
                "#212121",
                "bold",
                &format!("{} · {}", p.release, p.state),
            );
            self.text(
                20.0,
                self.y + 31.0,
                10.0,
                "start",
                "#78909c",
                "normal",
                &truncate(&p.pool, 44),
            );
            let mut y = self.y + 26.0;
            for s in &p.servers {
                self.text(
                    LEFT - 8.0,
                    y + 12.0,
                    10.0,
                    "end",
                    "#455a64",
                    "normal",
                    &truncate(&s.server, 28),
                );
                let _ = writeln!(
                    self.out,
                    r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#eceff1"/>"##,
                    y + 8.0,
                    WIDTH - RIGHT,
                    y + 8.0
                );
                for span in &s.spans {
                    let (fill, h, dy, what) = match span.kind {
                        SpanKind::Booting => (C_BOOT, 6.0, 5.0, "booting"),
                        SpanKind::Healthy => (C_HEALTHY, 6.0, 5.0, "healthy, no traffic"),
                        SpanKind::Serving => (C_SERVING, 12.0, 2.0, "serving"),
                        SpanKind::Draining => (C_DRAIN, 12.0, 2.0, "draining"),
                    };
                    let title =
                        format!("{} {what} +{:.2}s … +{:.2}s", s.server, span.from, span.to);
                    let (x1, x2) = (self.x(span.from), self.x(span.to));
                    self.rect(x1, y + dy, x2, h, fill, &title);
                }
                for (kind, at, why) in &s.points {
                    let x = self.x(*at);
                    let cy = y + 8.0;
                    let title = esc(&format!("{} {why} at +{at:.2}s", s.server));
                    match kind {
                        PointKind::Launched => {
                            let _ = writeln!(
                                self.out,
                                r##"<path d="M{:.1},{:.1} L{:.1},{cy:.1} L{:.1},{:.1} Z" fill="#37474f"><title>{title}</title></path>"##,
                                x - 4.0,
                                cy - 5.0,
                                x + 4.0,
                                x - 4.0,
                                cy + 5.0
                            );
                        }
                        PointKind::Terminated | PointKind::Stopped => {
                            let color = if *kind == PointKind::Stopped {
                                "#6d4c41"
                            } else {
                                "#212121"
                            };
                            let _ = writeln!(
                                self.out,
                                r#"<g stroke="{color}" stroke-width="2"><title>{title}</title><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/></g>"#,
                                x - 4.0,
                                cy - 4.0,
                                x + 4.0,
                                cy + 4.0,
                                x - 4.0,
                                cy + 4.0,
                                x + 4.0,
                                cy - 4.0
                            );
                        }
                        PointKind::LaunchFailed | PointKind::Missing => {
                            let _ = writeln!(
                                self.out,
                                r#"<g stroke="{C_FAIL}" stroke-width="3"><title>{title}</title><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/></g>"#,
                                x - 5.0,
                                cy - 5.0,
                                x + 5.0,
                                cy + 5.0,
                                x - 5.0,
                                cy + 5.0,
                                x + 5.0,
                                cy - 5.0
                            );
                        }
                    }
                }
                y += ROW;
            }
            if p.servers.is_empty() {
                self.text(
                    LEFT,
                    y + 12.0,
                    10.0,
                    "start",
                    "#90a4ae",
                    "normal",
                    "no servers in this operation",
                );
            }
            self.y += lane_h + 4.0;
        }
        let lanes_bottom = self.y;

        // Serving members over time.
        self.y += 16.0;
        let chart_top = self.y;
        let chart_h = 80.0;
        let max = t.serving.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
        self.text(
            20.0,
            chart_top + 14.0,
            13.0,
            "start",
            "#212121",
            "bold",
            "serving members",
        );
        self.text(
            20.0,
            chart_top + 30.0,
            10.0,
            "start",
            "#78909c",
            "normal",
            "behind the balancer, taking traffic",
        );
        let _ = writeln!(
            self.out,
            r##"<rect x="{LEFT}" y="{chart_top:.1}" width="{:.1}" height="{chart_h}" fill="#fafafa" stroke="#e0e0e0"/>"##,
            WIDTH - LEFT - RIGHT
        );
        let yv = |n: usize| chart_top + chart_h - (n as f64 / max as f64) * (chart_h - 10.0);
        for n in 0..=max {
            if max > 8 && n % 2 == 1 && n != max {
                continue;
            }
            let y = yv(n);
            let _ = writeln!(
                self.out,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eeeeee"/>"##,
                WIDTH - RIGHT
            );
            self.text(
                LEFT - 6.0,
                y + 4.0,
                10.0,
                "end",
                "#607d8b",
                "normal",
                &n.to_string(),
            );
        }
        let mut d = String::new();
        let mut prev: Option<usize> = None;
        for (at, n) in &t.serving {
            let x = self.x(*at);
            match prev {
                None => {
                    let _ = write!(d, "M{x:.1},{:.1}", yv(*n));
                }
                Some(p) => {
                    let _ = write!(d, " L{x:.1},{:.1} L{x:.1},{:.1}", yv(p), yv(*n));
                }
            }
            prev = Some(*n);
        }
        let _ = writeln!(
            self.out,
            r#"<path d="{d}" fill="none" stroke="{C_SERVING}" stroke-width="2.5"/>"#
        );
        self.y = chart_top + chart_h;

        // Marks across lanes and chart.
        let mut label_row = 0.0;
        let rows = t.marks.len().clamp(1, 3) as f64;
        for m in &t.marks {
            let x = self.x(m.at);
            let color = match m.kind {
                "switch" => C_SWITCH,
                "refused" => "#8e24aa",
                _ => C_FAIL,
            };
            let _ = writeln!(
                self.out,
                r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{color}" stroke-width="1.5" stroke-dasharray="5,3"><title>{}</title></line>"#,
                lanes_top - 2.0 - rows * 12.0,
                self.y,
                esc(&format!("{} at +{:.2}s", m.label, m.at))
            );
            let ly = lanes_top - 4.0 - (rows - 1.0) * 12.0 + label_row;
            let anchor = if x > WIDTH - 200.0 { "end" } else { "start" };
            let dx = if anchor == "end" { -3.0 } else { 3.0 };
            self.text(
                x + dx,
                ly,
                10.0,
                anchor,
                color,
                "bold",
                &truncate(&m.label, 50),
            );
            label_row = if label_row >= (rows - 1.0) * 12.0 {
                0.0
            } else {
                label_row + 12.0
            };
        }
        let _ = lanes_bottom;

        // Time axis.
        let axis_y = self.y + 6.0;
        let _ = writeln!(
            self.out,
            r##"<line x1="{LEFT}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#455a64"/>"##,
            WIDTH - RIGHT
        );
        let (step, ticks) = self.ticks();
        for s in ticks {
            let x = self.x(s);
            let _ = writeln!(
                self.out,
                r##"<line x1="{x:.1}" y1="{axis_y:.1}" x2="{x:.1}" y2="{:.1}" stroke="#455a64"/>"##,
                axis_y + 5.0
            );
            let label = if step < 0.1 {
                format!("+{:.0}ms", s * 1000.0)
            } else if step < 1.0 {
                format!("+{s:.1}s")
            } else {
                format!("+{}", human(std::time::Duration::from_secs_f64(s)))
            };
            self.text(
                x,
                axis_y + 18.0,
                10.0,
                "middle",
                "#455a64",
                "normal",
                &label,
            );
        }
        self.text(
            LEFT,
            axis_y + 36.0,
            10.0,
            "start",
            "#78909c",
            "normal",
            "time since the operation started · hover a bar for details",
        );
        let height = (axis_y + 50.0).ceil();
        let mut svg = String::with_capacity(self.out.len() + 400);
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="{FONT}">"#
        );
        let _ = writeln!(
            svg,
            r##"<rect x="0" y="0" width="{WIDTH}" height="{height:.0}" fill="#ffffff"/>"##
        );
        svg.push_str(&self.out);
        svg.push_str("</svg>\n");
        svg
    }

    fn legend(&mut self, x0: f64, y: f64) {
        let items: [(&str, &str, f64); 5] = [
            (C_BOOT, "booting", 6.0),
            (C_HEALTHY, "healthy, no traffic", 6.0),
            (C_SERVING, "serving", 12.0),
            (C_DRAIN, "draining", 12.0),
            (C_STEP_RB, "rollback step", 9.0),
        ];
        let mut x = x0;
        for (color, label, h) in items {
            let _ = writeln!(
                self.out,
                r#"<rect x="{x:.1}" y="{:.1}" width="22" height="{h}" fill="{color}"/>"#,
                y - h / 2.0
            );
            self.text(x + 28.0, y + 4.0, 11.0, "start", "#37474f", "normal", label);
            x += 40.0 + label.len() as f64 * 6.5;
        }
        let _ = writeln!(
            self.out,
            r##"<path d="M{:.1},{:.1} L{:.1},{y:.1} L{:.1},{:.1} Z" fill="#37474f"/>"##,
            x,
            y - 5.0,
            x + 8.0,
            x,
            y + 5.0
        );
        self.text(
            x + 14.0,
            y + 4.0,
            11.0,
            "start",
            "#37474f",
            "normal",
            "launched",
        );
        x += 80.0;
        let _ = writeln!(
            self.out,
            r##"<g stroke="#212121" stroke-width="2"><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/></g>"##,
            x,
            y - 4.0,
            x + 8.0,
            y + 4.0,
            x,
            y + 4.0,
            x + 8.0,
            y - 4.0
        );
        self.text(
            x + 14.0,
            y + 4.0,
            11.0,
            "start",
            "#37474f",
            "normal",
            "terminated",
        );
        x += 90.0;
        let _ = writeln!(
            self.out,
            r#"<g stroke="{C_FAIL}" stroke-width="3"><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/></g>"#,
            x,
            y - 5.0,
            x + 10.0,
            y + 5.0,
            x,
            y + 5.0,
            x + 10.0,
            y - 5.0
        );
        self.text(
            x + 16.0,
            y + 4.0,
            11.0,
            "start",
            "#37474f",
            "normal",
            "failure",
        );
        x += 80.0;
        let _ = writeln!(
            self.out,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{C_SWITCH}" stroke-width="1.5" stroke-dasharray="5,3"/>"#,
            y - 7.0,
            y + 7.0
        );
        self.text(
            x + 6.0,
            y + 4.0,
            11.0,
            "start",
            "#37474f",
            "normal",
            "traffic switch",
        );
        x += 110.0;
        let _ = writeln!(
            self.out,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{C_FAIL}" stroke-width="1.5" stroke-dasharray="5,3"/>"#,
            y - 7.0,
            y + 7.0
        );
        self.text(
            x + 6.0,
            y + 4.0,
            11.0,
            "start",
            "#37474f",
            "normal",
            "rollback / failed step",
        );
    }
}
