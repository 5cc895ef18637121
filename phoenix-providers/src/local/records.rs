//! `servers/<id>/server.json`: what the local provider knows about one
//! server, written atomically so that an orchestrator restarted at any
//! moment finds and re-adopts its servers.

use std::fmt;

use phoenix_core::id::{IdempotencyToken, ImageId, ServerId};
use phoenix_core::labels::Labels;
use phoenix_core::time::Timestamp;
use serde::{Deserialize, Serialize};

use super::atomic_file::{read_json, write_json_atomic};
use super::error::LocalError;
use super::layout::{is_server_id, Layout};

const FORMAT: u32 = 1;

/// What the orchestrator last asked of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RecordState {
    /// Launched or started: its process should be running.
    Running,
    /// Stopped: no process; port, runtime directory and boot environment kept.
    Stopped,
    /// Terminated: a tombstone (logs kept, secrets removed).
    Terminated,
}

/// The process a server runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessRecord {
    /// Process id, also its process group id.
    pub(crate) pid: i32,
    /// Start time from `/proc/<pid>/stat` (clock ticks since boot), so that
    /// a reused pid is never mistaken for the server.
    pub(crate) start_ticks: u64,
    /// When it was started.
    pub(crate) started_at: Timestamp,
}

/// How a server's process ended on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    /// Exit code, when it exited.
    pub(crate) code: Option<i32>,
    /// Signal name, when a signal killed it.
    pub(crate) signal: Option<String>,
    /// When it was observed.
    pub(crate) observed_at: Timestamp,
}

impl fmt::Display for ExitRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.signal) {
            (Some(code), _) => write!(f, "exited with status {code}"),
            (None, Some(sig)) => write!(f, "was killed by {sig}"),
            (None, None) => f.write_str(
                "is gone (its exit status is unknown: it was not a child of this orchestrator)",
            ),
        }
    }
}

/// One server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServerRecord {
    /// Format of this file.
    pub(crate) format: u32,
    /// Server id (derived from the token).
    pub(crate) id: ServerId,
    /// Name.
    pub(crate) name: String,
    /// Labels, as the provider carries them.
    pub(crate) labels: Labels,
    /// Image.
    pub(crate) image: ImageId,
    /// Loopback port, kept across stop and start.
    pub(crate) port: u16,
    /// Launch idempotency token.
    pub(crate) token: IdempotencyToken,
    /// Launch time, for max-age (kept across stop and start).
    pub(crate) launched_at: Timestamp,
    /// Requested state.
    pub(crate) state: RecordState,
    /// The current process, when running.
    pub(crate) process: Option<ProcessRecord>,
    /// How the current process ended on its own, once known.
    pub(crate) exit: Option<ExitRecord>,
    /// When it was stopped, while stopped.
    pub(crate) stopped_at: Option<Timestamp>,
    /// When it was terminated.
    pub(crate) terminated_at: Option<Timestamp>,
}

impl ServerRecord {
    /// A new record for a server being launched (no process yet).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launching(
        id: ServerId,
        name: String,
        labels: Labels,
        image: ImageId,
        port: u16,
        token: IdempotencyToken,
        launched_at: Timestamp,
    ) -> Self {
        Self {
            format: FORMAT,
            id,
            name,
            labels,
            image,
            port,
            token,
            launched_at,
            state: RecordState::Running,
            process: None,
            exit: None,
            stopped_at: None,
            terminated_at: None,
        }
    }
}

/// Reads one record; `None` when the id is not one of ours or has none.
pub(crate) fn load(layout: &Layout, id: &ServerId) -> Result<Option<ServerRecord>, LocalError> {
    if !is_server_id(id.as_str()) {
        return Ok(None);
    }
    read_json(&layout.server_record(id.as_str()))
}

/// Writes a record atomically (mode 0600: labels are not secret, but the
/// token is an internal handle).
pub(crate) fn save(layout: &Layout, record: &ServerRecord) -> Result<(), LocalError> {
    write_json_atomic(&layout.server_record(record.id.as_str()), record, 0o600)
}

/// Every record under `servers/`, by id. Directories without a record
/// (a launch interrupted before its first write) are skipped.
pub(crate) fn load_all(layout: &Layout) -> Result<Vec<ServerRecord>, LocalError> {
    let dir = layout.servers_dir();
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| LocalError::io("list", &dir, e))? {
        let entry = entry.map_err(|e| LocalError::io("list", &dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if is_server_id(&name) {
            if let Ok(id) = ServerId::new(name) {
                ids.push(id);
            }
        }
    }
    ids.sort();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = load(layout, &id)? {
            out.push(r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use phoenix_core::time::{Clock, SystemClock};

    #[test]
    fn records_round_trip_and_foreign_ids_are_absent() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(dir.path()).unwrap();
        let token = IdempotencyToken::new("t-1").unwrap();
        let id = super::super::layout::server_id_for(&token).unwrap();
        std::fs::create_dir_all(layout.server_dir(id.as_str())).unwrap();
        let rec = ServerRecord::launching(
            id.clone(),
            "web-0".into(),
            Labels::new(),
            ImageId::new("img-0123456789abcdef").unwrap(),
            4000,
            token,
            SystemClock.now(),
        );
        save(&layout, &rec).unwrap();
        assert_eq!(load(&layout, &id).unwrap(), Some(rec.clone()));
        assert_eq!(load_all(&layout).unwrap(), vec![rec]);
        assert_eq!(load(&layout, &ServerId::new("..").unwrap()).unwrap(), None);
    }
}
