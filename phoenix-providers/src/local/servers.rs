//! The server store: launching, observing, starting and retiring server
//! records and their processes. Synchronous; the [`Compute`] port calls it
//! on tokio's blocking pool and does the waiting (grace periods, port
//! probes) itself through `tokio::time`.
//!
//! [`Compute`]: phoenix_core::ports::Compute

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use phoenix_core::id::{IdempotencyToken, ImageId, ServerId};
use phoenix_core::labels::Labels;
use phoenix_core::time::SharedClock;

use super::boot_files::{load_env, save_env, write_files, BootEnv, RuntimeFile};
use super::error::LocalError;
use super::image_store::ImageStore;
use super::layout::{server_id_for, Layout};
use super::logs::last_line;
use super::manifest::Manifest;
use super::process::{observe, signal_group, spawn, Ended, Observed, SpawnSpec, Spawned};
use super::records::{self, ExitRecord, ProcessRecord, RecordState, ServerRecord};

/// One launch, with everything copied out of the request.
#[derive(Debug)]
pub(crate) struct LaunchSpec {
    pub(crate) name: String,
    pub(crate) image: ImageId,
    pub(crate) labels: Labels,
    pub(crate) token: IdempotencyToken,
    pub(crate) files: Vec<RuntimeFile>,
    pub(crate) env: BootEnv,
}

/// How a recorded server is doing, before the port probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Health {
    /// Its process runs (Active once the port answers, Building before).
    Running,
    /// Stopped on request.
    Stopped,
    /// It failed: why.
    Failed(String),
}

/// Servers under one root.
#[derive(Debug)]
pub(crate) struct ServerStore {
    layout: Layout,
    images: ImageStore,
    clock: SharedClock,
    /// Serialises record changes within this process.
    lock: Mutex<()>,
}

impl ServerStore {
    pub(crate) fn new(layout: Layout, clock: SharedClock) -> Self {
        Self {
            images: ImageStore::new(layout.clone(), clock.clone()),
            layout,
            clock,
            lock: Mutex::new(()),
        }
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    fn locked(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Launches a batch; one result per spec, in order.
    pub(crate) fn launch_batch(
        &self,
        specs: Vec<Result<LaunchSpec, LocalError>>,
    ) -> Vec<Result<ServerRecord, LocalError>> {
        // Verify each image once, before taking the lock: hashing a large
        // entrypoint takes a while and must not hold up describe.
        let mut verified: HashMap<ImageId, Manifest> = HashMap::new();
        let prepared: Vec<Result<(LaunchSpec, Option<Manifest>), LocalError>> = specs
            .into_iter()
            .map(|spec| {
                let spec = spec?;
                if records::load(&self.layout, &server_id_for(&spec.token)?)?.is_some() {
                    return Ok((spec, None));
                }
                let manifest = match verified.get(&spec.image) {
                    Some(m) => m.clone(),
                    None => {
                        let m = self.images.verify(&spec.image)?;
                        verified.insert(spec.image.clone(), m.clone());
                        m
                    }
                };
                Ok((spec, Some(manifest)))
            })
            .collect();
        let _guard = self.locked();
        let mut used = match records::load_all(&self.layout) {
            Ok(all) => all
                .iter()
                .filter(|r| r.state != RecordState::Terminated)
                .map(|r| r.port)
                .collect(),
            Err(e) => {
                let reason = e.to_string();
                return prepared
                    .into_iter()
                    .map(|_| Err(LocalError::Unreadable(reason.clone())))
                    .collect();
            }
        };
        prepared
            .into_iter()
            .map(|p| p.and_then(|(spec, manifest)| self.launch_one(spec, manifest, &mut used)))
            .collect()
    }

    fn launch_one(
        &self,
        spec: LaunchSpec,
        manifest: Option<Manifest>,
        used_ports: &mut BTreeSet<u16>,
    ) -> Result<ServerRecord, LocalError> {
        let id = server_id_for(&spec.token)?;
        if let Some(existing) = records::load(&self.layout, &id)? {
            if existing.token != spec.token {
                return Err(LocalError::Conflict(format!(
                    "server {id} belongs to another launch token"
                )));
            }
            return Ok(existing);
        }
        let manifest = match manifest {
            Some(m) => m,
            // Its record vanished (purged) since the check: verify now.
            None => self.images.verify(&spec.image)?,
        };
        let dir = self.layout.server_dir(id.as_str());
        if dir.exists() {
            // A launch interrupted before its record was written.
            std::fs::remove_dir_all(&dir).map_err(|e| LocalError::io("clean up", &dir, e))?;
        }
        let port = allocate_port(used_ports)?;
        let run_dir = self.layout.run_dir(id.as_str());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&run_dir)
            .map_err(|e| LocalError::io("create runtime directory", &run_dir, e))?;
        let result = (|| {
            write_files(&run_dir, &spec.files)?;
            save_env(&self.layout.boot_env(id.as_str()), &spec.env)?;
            let mut record = ServerRecord::launching(
                id.clone(),
                spec.name,
                spec.labels,
                spec.image,
                port,
                spec.token,
                self.clock.now(),
            );
            // The intent first: a crash before the pid is written shows as a
            // failed server rather than as nothing.
            records::save(&self.layout, &record)?;
            let entrypoint = self.images.entrypoint(&manifest);
            let spawned = self.spawn(&record, &entrypoint, &spec.env)?;
            self.record_process(&mut record, spawned)?;
            Ok(record)
        })();
        match result {
            Ok(record) => {
                used_ports.insert(port);
                Ok(record)
            }
            Err(e) => {
                // Nothing half-made stays behind.
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn spawn(
        &self,
        record: &ServerRecord,
        entrypoint: &Path,
        env: &BootEnv,
    ) -> Result<Spawned, LocalError> {
        let id = record.id.as_str();
        let run_dir = self.layout.run_dir(id);
        let provider_env = [
            ("PORT", record.port.to_string()),
            ("PHOENIX_SERVER_ID", id.to_owned()),
            ("PHOENIX_RUNTIME_DIR", run_dir.display().to_string()),
        ];
        spawn(&SpawnSpec {
            program: entrypoint,
            run_dir: &run_dir,
            env,
            provider_env: &provider_env,
            stdout: &self.layout.stdout_log(id),
            stderr: &self.layout.stderr_log(id),
        })
    }

    /// Records a new process; if that fails the process is killed, so no
    /// process runs unrecorded.
    fn record_process(
        &self,
        record: &mut ServerRecord,
        spawned: Spawned,
    ) -> Result<(), LocalError> {
        record.state = RecordState::Running;
        record.process = Some(ProcessRecord {
            pid: spawned.pid,
            start_ticks: spawned.start_ticks,
            started_at: self.clock.now(),
        });
        record.exit = None;
        record.stopped_at = None;
        if let Err(e) = records::save(&self.layout, record) {
            let _ = signal_group(spawned.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = observe(spawned.pid, spawned.start_ticks);
            return Err(e);
        }
        Ok(())
    }

    /// One record; `None` for unknown ids.
    pub(crate) fn load(&self, id: &ServerId) -> Result<Option<ServerRecord>, LocalError> {
        records::load(&self.layout, id)
    }

    /// Every record.
    pub(crate) fn load_all(&self) -> Result<Vec<ServerRecord>, LocalError> {
        records::load_all(&self.layout)
    }

    /// How a server is doing; reaps its process and records how it ended
    /// the first time that is seen.
    pub(crate) fn health(&self, record: &ServerRecord) -> Result<Health, LocalError> {
        match record.state {
            RecordState::Stopped => return Ok(Health::Stopped),
            RecordState::Terminated => {
                return Ok(Health::Failed("the server was terminated".into()))
            }
            RecordState::Running => {}
        }
        let Some(process) = record.process else {
            return Ok(Health::Failed(
                "its launch was interrupted before its process was recorded".into(),
            ));
        };
        let exit = match &record.exit {
            Some(exit) => exit.clone(),
            None => match observe(process.pid, process.start_ticks)? {
                Observed::Alive => return Ok(Health::Running),
                Observed::Ended(ended) => self.record_exit(&record.id, process, ended)?,
            },
        };
        let mut message = format!("process {} {exit}", process.pid);
        if let Some(line) = last_line(&self.layout.stderr_log(record.id.as_str())) {
            message.push_str("; last stderr line: ");
            message.push_str(&line);
        }
        Ok(Health::Failed(message))
    }

    fn record_exit(
        &self,
        id: &ServerId,
        process: ProcessRecord,
        ended: Ended,
    ) -> Result<ExitRecord, LocalError> {
        let exit = self.exit_record(ended);
        let _guard = self.locked();
        if let Some(mut fresh) = records::load(&self.layout, id)? {
            let same = fresh.state == RecordState::Running && fresh.process == Some(process);
            if same && fresh.exit.is_none() {
                fresh.exit = Some(exit.clone());
                records::save(&self.layout, &fresh)?;
            }
        }
        Ok(exit)
    }

    /// Starts a stopped server again: same port, runtime directory and
    /// environment; the image is verified first.
    pub(crate) fn start(&self, id: &ServerId) -> Result<(), LocalError> {
        // Verify before taking the lock (see launch_batch).
        let first = self.existing(id)?;
        let verified = if first.state == RecordState::Stopped {
            Some(self.images.verify(&first.image)?)
        } else {
            None
        };
        let _guard = self.locked();
        let mut record = self.existing(id)?;
        match record.state {
            RecordState::Stopped => {}
            RecordState::Running => {
                let why = match (&record.exit, record.process) {
                    (Some(exit), _) => format!("its process {exit}"),
                    (None, None) => "its launch was interrupted".to_owned(),
                    (None, Some(p)) => match observe(p.pid, p.start_ticks)? {
                        Observed::Alive => return Ok(()),
                        Observed::Ended(ended) => {
                            let exit = self.exit_record(ended);
                            let why = format!("its process {exit}");
                            record.exit = Some(exit);
                            records::save(&self.layout, &record)?;
                            why
                        }
                    },
                };
                return Err(LocalError::Conflict(format!(
                    "server {id} has failed ({why}); stop it before starting it again, or replace it"
                )));
            }
            RecordState::Terminated => return Err(LocalError::NotFound(format!("server {id}"))),
        }
        let manifest = match verified {
            Some(m) if m.id == record.image => m,
            _ => self.images.verify(&record.image)?,
        };
        let env = load_env(&self.layout.boot_env(id.as_str()))?;
        let entrypoint = self.images.entrypoint(&manifest);
        let spawned = self.spawn(&record, &entrypoint, &env)?;
        self.record_process(&mut record, spawned)
    }

    fn exit_record(&self, ended: Ended) -> ExitRecord {
        ExitRecord {
            code: ended.code,
            signal: ended.signal,
            observed_at: self.clock.now(),
        }
    }

    fn existing(&self, id: &ServerId) -> Result<ServerRecord, LocalError> {
        records::load(&self.layout, id)?.ok_or_else(|| LocalError::NotFound(format!("server {id}")))
    }

    /// Records that `process` was ended on request: the server is now
    /// stopped (`keep`) or terminated. Refuses if the record changed
    /// meanwhile (started again by someone else).
    pub(crate) fn retire(
        &self,
        id: &ServerId,
        process: Option<ProcessRecord>,
        to: RecordState,
    ) -> Result<(), LocalError> {
        let _guard = self.locked();
        let Some(mut record) = records::load(&self.layout, id)? else {
            return Ok(());
        };
        if record.state == RecordState::Running && record.process != process {
            return Err(LocalError::Conflict(format!(
                "server {id} was started again while it was being ended"
            )));
        }
        let now = self.clock.now();
        match to {
            RecordState::Stopped if record.state == RecordState::Terminated => {
                return Err(LocalError::NotFound(format!("server {id}")))
            }
            RecordState::Stopped => record.stopped_at = Some(now),
            RecordState::Terminated => {
                if record.terminated_at.is_none() {
                    record.terminated_at = Some(now);
                }
            }
            RecordState::Running => {
                return Err(LocalError::invalid(
                    "retire",
                    "a server is retired to stopped or terminated",
                ))
            }
        }
        record.state = to;
        record.process = None;
        record.exit = None;
        records::save(&self.layout, &record)?;
        if to == RecordState::Terminated {
            self.remove_secrets(id)?;
        }
        Ok(())
    }

    /// Removes what may hold secrets of a terminated server: the runtime
    /// directory and the saved boot environment. Logs and the record stay.
    pub(crate) fn remove_secrets(&self, id: &ServerId) -> Result<(), LocalError> {
        let run = self.layout.run_dir(id.as_str());
        match std::fs::remove_dir_all(&run) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LocalError::io("remove runtime directory", &run, e)),
        }
        let env = self.layout.boot_env(id.as_str());
        match std::fs::remove_file(&env) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LocalError::io("remove boot environment", &env, e)),
        }
    }

    /// Removes the directories of terminated servers (records and logs).
    pub(crate) fn purge_terminated(&self) -> Result<usize, LocalError> {
        let _guard = self.locked();
        let mut n = 0;
        for record in records::load_all(&self.layout)? {
            if record.state == RecordState::Terminated {
                let dir = self.layout.server_dir(record.id.as_str());
                std::fs::remove_dir_all(&dir).map_err(|e| LocalError::io("remove", &dir, e))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// A free loopback port: bind port 0, read it, release it. Ports of
/// recorded servers (stopped ones keep theirs) are skipped.
fn allocate_port(used: &BTreeSet<u16>) -> Result<u16, LocalError> {
    let mut held = Vec::new();
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| LocalError::io("bind a loopback port on", "127.0.0.1:0", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| LocalError::io("read the port of", "127.0.0.1:0", e))?
            .port();
        if !used.contains(&port) {
            return Ok(port);
        }
        // Held until we return, so the next bind gets another port.
        held.push(listener);
    }
    Err(LocalError::Conflict(
        "no free loopback port outside those of recorded servers".into(),
    ))
}
