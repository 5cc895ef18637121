//! The [`Compute`] port of the local provider.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use phoenix_core::id::ServerId;
use phoenix_core::labels::LabelSelector;
use phoenix_core::model::{Server, ServerStatus};
use phoenix_core::ports::{BootFormat, Compute, ComputeCapabilities, LaunchRequest, PortError};
use phoenix_core::time::{SharedClock, SystemClock};

use super::blocking::run_blocking;
use super::boot_files::from_payload;
use super::error::LocalError;
use super::layout::{is_server_id, root_from_env, Layout, DEFAULT_ROOT};
use super::process::{end_group, Grace};
use super::records::{RecordState, ServerRecord};
use super::servers::{Health, LaunchSpec, ServerStore};

const MAX_BATCH: usize = 1000;

/// Local servers: each one a process started from a local image's
/// entrypoint, in its own process group, listening on its own loopback
/// port, with its runtime directory `<root>/servers/<id>/run/` as working
/// directory.
///
/// A [`BootPayload::Local`] is delivered as files in the runtime directory
/// (relative paths only, with their modes) and environment variables,
/// next to `PORT`, `PHOENIX_SERVER_ID` and `PHOENIX_RUNTIME_DIR` set by the
/// provider. Servers outlive the orchestrator: a new `LocalCompute` on the
/// same root finds them from their records and re-adopts those still
/// running.
///
/// Statuses: `Building` until the port accepts a connection, `Active`
/// while the process runs and listens, `Error` (with the exit status and
/// the last line of stderr) once it exited on its own, `Stopped` after
/// [`stop`](Compute::stop); terminated servers are absent.
///
/// [`BootPayload::Local`]: phoenix_core::ports::BootPayload::Local
#[derive(Debug, Clone)]
pub struct LocalCompute {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: ServerStore,
    grace: Grace,
    probe_timeout: Duration,
}

/// Builds a [`LocalCompute`].
#[derive(Debug, Clone)]
pub struct LocalComputeBuilder {
    root: PathBuf,
    clock: SharedClock,
    grace: Grace,
    probe_timeout: Duration,
}

impl LocalComputeBuilder {
    /// The root directory (default `./.phoenix/local`); images are read
    /// from `<root>/images/`, as [`LocalImages`](super::LocalImages) bakes
    /// them.
    pub fn root(mut self, root: impl AsRef<Path>) -> Self {
        self.root = root.as_ref().to_path_buf();
        self
    }

    /// Where launch times come from (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// How long terminate and stop wait after SIGTERM before SIGKILL
    /// (default 5 s).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace.term = grace;
        self
    }

    /// How long to wait for the group to vanish after SIGKILL before
    /// reporting a failure (default 2 s).
    pub fn kill_timeout(mut self, timeout: Duration) -> Self {
        self.grace.kill = timeout;
        self
    }

    /// How often to check while waiting for a process group to exit
    /// (default 50 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.grace.poll = every.max(Duration::from_millis(1));
        self
    }

    /// How long the readiness probe (a TCP connect to the server's port)
    /// may take (default 250 ms).
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Creates the root's directories if needed.
    pub fn build(self) -> Result<LocalCompute, PortError> {
        let layout =
            Layout::open(&self.root).map_err(|e| e.into_port("local: open server store"))?;
        Ok(LocalCompute {
            inner: Arc::new(Inner {
                store: ServerStore::new(layout, self.clock),
                grace: self.grace,
                probe_timeout: self.probe_timeout,
            }),
        })
    }
}

impl LocalCompute {
    /// A builder with the default root `./.phoenix/local`.
    pub fn builder() -> LocalComputeBuilder {
        LocalComputeBuilder {
            root: PathBuf::from(DEFAULT_ROOT),
            clock: Arc::new(SystemClock),
            grace: Grace {
                term: Duration::from_secs(5),
                kill: Duration::from_secs(2),
                poll: Duration::from_millis(50),
            },
            probe_timeout: Duration::from_millis(250),
        }
    }

    /// Opens the root named by `PHOENIX_LOCAL_ROOT` (default
    /// `./.phoenix/local`) with default settings.
    pub fn from_env() -> Result<Self, PortError> {
        Self::builder().root(root_from_env()).build()
    }

    /// The root directory (absolute).
    pub fn root(&self) -> &Path {
        self.inner.store.layout().root()
    }

    /// A server's directory (`server.json`, `stdout.log`, `stderr.log`,
    /// `run/`), whether or not it exists; `None` for ids this provider
    /// never makes.
    pub fn server_directory(&self, id: &ServerId) -> Option<PathBuf> {
        is_server_id(id.as_str()).then(|| self.inner.store.layout().server_dir(id.as_str()))
    }

    /// Removes the records and logs of terminated servers; returns how
    /// many were removed. Terminated servers are kept as small tombstones
    /// (record and logs, no secrets) until this is called.
    pub async fn purge_terminated(&self) -> Result<usize, PortError> {
        let inner = self.inner.clone();
        run_blocking("local: purge terminated servers".into(), move || {
            inner.store.purge_terminated()
        })
        .await
    }

    async fn load(
        &self,
        id: &ServerId,
        operation: &str,
    ) -> Result<Option<ServerRecord>, PortError> {
        let inner = self.inner.clone();
        let id = id.clone();
        run_blocking(operation.to_owned(), move || inner.store.load(&id)).await
    }

    /// Observes records (blocking pool), then probes the ports of running
    /// ones concurrently.
    async fn views(
        &self,
        records: Vec<ServerRecord>,
        operation: &str,
    ) -> Result<Vec<Server>, PortError> {
        let inner = self.inner.clone();
        let observed = run_blocking(operation.to_owned(), move || {
            records
                .into_iter()
                .filter(|r| r.state != RecordState::Terminated)
                .map(|r| inner.store.health(&r).map(|h| (r, h)))
                .collect::<Result<Vec<_>, LocalError>>()
        })
        .await?;
        let timeout = self.inner.probe_timeout;
        Ok(
            join_all(observed.into_iter().map(|(record, health)| async move {
                let status = match health {
                    Health::Running if listening(record.port, timeout).await => {
                        ServerStatus::Active
                    }
                    Health::Running => ServerStatus::Building,
                    Health::Stopped => ServerStatus::Stopped,
                    Health::Failed(message) => ServerStatus::Error { message },
                };
                view(record, status)
            }))
            .await,
        )
    }

    /// Ends the record's process group (if it has a process) and records
    /// the server as `to`.
    async fn retire(
        &self,
        record: ServerRecord,
        to: RecordState,
        operation: &str,
    ) -> Result<(), PortError> {
        if let Some(p) = record.process {
            end_group(p.pid, p.start_ticks, self.inner.grace)
                .await
                .map_err(|e| e.into_port(operation))?;
        }
        let inner = self.inner.clone();
        let id = record.id.clone();
        let process = record.process;
        run_blocking(operation.to_owned(), move || {
            inner.store.retire(&id, process, to)
        })
        .await
    }
}

/// True when something accepts TCP connections on `127.0.0.1:port`.
async fn listening(port: u16, timeout: Duration) -> bool {
    let connect = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port));
    matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_)))
}

fn view(record: ServerRecord, status: ServerStatus) -> Server {
    Server {
        id: record.id,
        name: record.name,
        addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        service_port: Some(record.port),
        status,
        launched_at: Some(record.launched_at),
        image: Some(record.image),
        labels: record.labels,
    }
}

#[async_trait]
impl Compute for LocalCompute {
    fn capabilities(&self) -> ComputeCapabilities {
        ComputeCapabilities {
            max_launch_batch: MAX_BATCH,
            max_describe_batch: MAX_BATCH,
            max_terminate_batch: 1,
            stop_start: true,
            idempotent_launch: true,
            consistency_window: Duration::ZERO,
            boot_format: BootFormat::Local,
        }
    }

    async fn launch(&self, requests: &[LaunchRequest]) -> Vec<Result<Server, PortError>> {
        let specs: Vec<Result<LaunchSpec, LocalError>> = requests
            .iter()
            .map(|r| {
                from_payload(&r.boot).map(|(files, env)| LaunchSpec {
                    name: r.name.clone(),
                    image: r.image.clone(),
                    labels: r.labels.clone(),
                    token: r.token.clone(),
                    files,
                    env,
                })
            })
            .collect();
        let names: Vec<String> = requests.iter().map(|r| r.name.clone()).collect();
        let inner = self.inner.clone();
        let results =
            match tokio::task::spawn_blocking(move || inner.store.launch_batch(specs)).await {
                Ok(results) => results,
                Err(join) => {
                    let reason = LocalError::Task(join).to_string();
                    return names
                        .iter()
                        .map(|n| {
                            Err(PortError::temporary(
                                format!("local: launch {n}"),
                                reason.clone(),
                            ))
                        })
                        .collect();
                }
            };
        // One observation round for every launched (or found) server.
        let live: Vec<ServerRecord> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|r| r.state != RecordState::Terminated)
            .cloned()
            .collect();
        let seen = match self.views(live, "local: launch").await {
            Ok(v) => v,
            Err(e) => {
                let reason = e.chain();
                return names
                    .iter()
                    .map(|n| {
                        Err(PortError::temporary(
                            format!("local: launch {n}"),
                            reason.clone(),
                        ))
                    })
                    .collect();
            }
        };
        results
            .into_iter()
            .zip(&names)
            .map(|(result, name)| {
                let operation = format!("local: launch {name}");
                match result {
                    // The token's server was terminated: a repeated token
                    // launches nothing new.
                    Ok(record) if record.state == RecordState::Terminated => {
                        Ok(view(record, ServerStatus::Deleted))
                    }
                    Ok(record) => seen
                        .iter()
                        .find(|s| s.id == record.id)
                        .cloned()
                        .ok_or_else(|| PortError::not_found(operation, record.id.to_string())),
                    Err(e) => Err(e.into_port(operation)),
                }
            })
            .collect()
    }

    async fn describe(&self, ids: &[ServerId]) -> Result<Vec<Server>, PortError> {
        let wanted: BTreeSet<ServerId> = ids.iter().cloned().collect();
        let inner = self.inner.clone();
        let records = run_blocking("local: describe servers".into(), move || {
            let mut out = Vec::new();
            for id in &wanted {
                if let Some(r) = inner.store.load(id)? {
                    out.push(r);
                }
            }
            Ok(out)
        })
        .await?;
        self.views(records, "local: describe servers").await
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<Server>, PortError> {
        let inner = self.inner.clone();
        let selector_owned = selector.clone();
        let records = run_blocking(format!("local: list servers {selector}"), move || {
            Ok(inner
                .store
                .load_all()?
                .into_iter()
                .filter(|r| r.labels.matches(&selector_owned))
                .collect())
        })
        .await?;
        self.views(records, &format!("local: list servers {selector}"))
            .await
    }

    async fn stop(&self, id: &ServerId) -> Result<(), PortError> {
        let operation = format!("local: stop server {id}");
        let record = self
            .load(id, &operation)
            .await?
            .filter(|r| r.state != RecordState::Terminated)
            .ok_or_else(|| PortError::not_found(operation.clone(), format!("server {id}")))?;
        if record.state == RecordState::Stopped {
            return Ok(());
        }
        self.retire(record, RecordState::Stopped, &operation).await
    }

    async fn start(&self, id: &ServerId) -> Result<(), PortError> {
        let inner = self.inner.clone();
        let id = id.clone();
        run_blocking(format!("local: start server {id}"), move || {
            inner.store.start(&id)
        })
        .await
    }

    async fn terminate(&self, id: &ServerId) -> Result<(), PortError> {
        let operation = format!("local: terminate server {id}");
        let Some(record) = self.load(id, &operation).await? else {
            return Ok(());
        };
        if record.state == RecordState::Terminated {
            // Finish a cleanup that failed before, if any.
            let inner = self.inner.clone();
            let id = id.clone();
            return run_blocking(operation, move || inner.store.remove_secrets(&id)).await;
        }
        self.retire(record, RecordState::Terminated, &operation)
            .await
    }
}
