//! Server processes: spawning them in their own process group, telling
//! whether they still run (from `/proc/<pid>/stat`, with the recorded start
//! time so that a reused pid is never taken for the server), reaping them,
//! and ending their group with a grace period.
//!
//! Every process this provider spawns is reaped with `waitpid(WNOHANG)`
//! whenever it is observed as a zombie. That works the same for a process
//! spawned by this `LocalCompute`, by an earlier one in the same
//! orchestrator process, or (when it answers `ECHILD`) for one adopted from
//! an earlier orchestrator process, which the init process reaps.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use secrecy::ExposeSecret;

use super::boot_files::BootEnv;
use super::error::LocalError;

/// `PATH` for servers when the orchestrator has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// State letter (`R`, `S`, `Z`, …).
    pub(crate) state: char,
    /// Process group.
    pub(crate) pgrp: i32,
    /// Start time in clock ticks since boot.
    pub(crate) start_ticks: u64,
}

impl ProcStat {
    fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process.
pub(crate) fn read_stat(pid: i32) -> Result<Option<ProcStat>, LocalError> {
    let path = format!("/proc/{pid}/stat");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(3) => {
            return Ok(None)
        }
        Err(e) => return Err(LocalError::io("read", path, e)),
    };
    parse_stat(&text).map(Some).ok_or_else(|| {
        LocalError::io(
            "parse",
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "unexpected /proc stat format",
            ),
        )
    })
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may hold spaces and
    // parentheses itself: fields are counted after the last `)`.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    /// Exit code, when known.
    pub(crate) code: Option<i32>,
    /// The signal that killed it, when known.
    pub(crate) signal: Option<String>,
}

impl Ended {
    const UNKNOWN: Self = Self {
        code: None,
        signal: None,
    };
}

/// What a recorded process is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Observed {
    /// It runs.
    Alive,
    /// It ended (and, if it was our child, was reaped now).
    Ended(Ended),
}

/// Observes the recorded process `pid` that started at `start_ticks`,
/// reaping it if it is our zombie child.
pub(crate) fn observe(pid: i32, start_ticks: u64) -> Result<Observed, LocalError> {
    check_pid(pid)?;
    match read_stat(pid)? {
        None => Ok(Observed::Ended(Ended::UNKNOWN)),
        Some(st) if st.start_ticks != start_ticks => Ok(Observed::Ended(Ended::UNKNOWN)),
        Some(st) if st.is_dead() => reap(pid).map(Observed::Ended),
        Some(_) => Ok(Observed::Alive),
    }
}

fn reap(pid: i32) -> Result<Ended, LocalError> {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Ok(Ended {
            code: Some(code),
            signal: None,
        }),
        Ok(WaitStatus::Signaled(_, sig, _)) => Ok(Ended {
            code: None,
            signal: Some(sig.as_str().to_owned()),
        }),
        // Not our child (adopted after an orchestrator restart): its parent
        // (init) reaps it and keeps the status.
        Ok(_) | Err(Errno::ECHILD) => Ok(Ended::UNKNOWN),
        Err(source) => Err(LocalError::Process {
            action: "reap",
            pid,
            source,
        }),
    }
}

/// What to run for a server.
#[derive(Debug)]
pub(crate) struct SpawnSpec<'a> {
    /// The entrypoint.
    pub(crate) program: &'a Path,
    /// Working directory: the runtime directory.
    pub(crate) run_dir: &'a Path,
    /// Boot environment (secret values).
    pub(crate) env: &'a BootEnv,
    /// Variables set by the provider, which win over the boot environment.
    pub(crate) provider_env: &'a [(&'static str, String)],
    /// Standard output log (appended).
    pub(crate) stdout: &'a Path,
    /// Standard error log (appended).
    pub(crate) stderr: &'a Path,
}

/// A spawned process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spawned {
    /// Its pid (and process group id).
    pub(crate) pid: i32,
    /// Its start time, from `/proc`.
    pub(crate) start_ticks: u64,
}

/// Spawns a server process in a new process group of its own, with a clean
/// environment (`PATH`, the boot environment and the provider's variables:
/// nothing else of the orchestrator's environment leaks into servers).
/// The `Child` handle is dropped without killing: the process outlives the
/// orchestrator, and [`observe`] reaps it.
pub(crate) fn spawn(spec: &SpawnSpec<'_>) -> Result<Spawned, LocalError> {
    let open_log = |path: &Path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| LocalError::io("open log", path, e))
    };
    let stdout = open_log(spec.stdout)?;
    let stderr = open_log(spec.stderr)?;
    let path_var = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_owned());
    let mut cmd = Command::new(spec.program);
    cmd.current_dir(spec.run_dir)
        .env_clear()
        .env("PATH", path_var)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    for (k, v) in &spec.env.0 {
        cmd.env(k, v.expose_secret());
    }
    for (k, v) in spec.provider_env {
        cmd.env(k, v);
    }
    // Never format `cmd`: its Debug output holds the environment.
    let child = cmd.spawn().map_err(|source| LocalError::Spawn {
        program: spec.program.to_owned(),
        source,
    })?;
    let pid = i32::try_from(child.id()).map_err(|_| {
        LocalError::io(
            "record pid of",
            spec.program,
            std::io::Error::new(std::io::ErrorKind::InvalidData, "pid out of range"),
        )
    })?;
    drop(child);
    // Not reaped yet, so /proc/<pid> exists even if it already exited.
    let stat = read_stat(pid)?.ok_or_else(|| {
        LocalError::io(
            "inspect",
            format!("/proc/{pid}"),
            std::io::Error::new(std::io::ErrorKind::NotFound, "the new process vanished"),
        )
    })?;
    Ok(Spawned {
        pid,
        start_ticks: stat.start_ticks,
    })
}

/// Refuses pids that would signal more than one server: 0, 1, negative,
/// or this orchestrator's own process group.
fn check_pid(pid: i32) -> Result<(), LocalError> {
    let own_group = nix::unistd::getpgrp().as_raw();
    if pid <= 1 || pid == own_group || pid == nix::unistd::getpid().as_raw() {
        return Err(LocalError::invalid(
            format!("recorded pid {pid}"),
            "not a server process (the record is corrupt)",
        ));
    }
    Ok(())
}

/// Sends `signal` to the process group `pgid`; a group that is gone is fine.
pub(crate) fn signal_group(pgid: i32, signal: Signal) -> Result<(), LocalError> {
    check_pid(pgid)?;
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(LocalError::Process {
            action: "signal the group of",
            pid: pgid,
            source,
        }),
    }
}

/// Members of process group `pgid` that still run (zombies excluded).
pub(crate) fn live_group_members(pgid: i32) -> Result<Vec<i32>, LocalError> {
    let proc = Path::new("/proc");
    let mut members = Vec::new();
    for entry in std::fs::read_dir(proc).map_err(|e| LocalError::io("list", proc, e))? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Processes come and go while we read: skip any that vanish.
        if let Ok(Some(st)) = read_stat(pid) {
            if st.pgrp == pgid && !st.is_dead() {
                members.push(pid);
            }
        }
    }
    Ok(members)
}

/// How long to wait when ending a process group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grace {
    /// After SIGTERM, before SIGKILL.
    pub(crate) term: Duration,
    /// After SIGKILL, before giving up.
    pub(crate) kill: Duration,
    /// Polling interval.
    pub(crate) poll: Duration,
}

/// Ends the process group of the recorded process `pid`: SIGTERM, up to
/// `grace.term` for every member to exit, then SIGKILL. Returns how the
/// leader ended when it was reaped here. A pid that now belongs to another
/// process is left alone: its group, which that pid led, is gone already
/// (Linux does not reuse the id of a live process group).
pub(crate) async fn end_group(
    pid: i32,
    start_ticks: u64,
    grace: Grace,
) -> Result<Option<Ended>, LocalError> {
    check_pid(pid)?;
    if let Some(st) = read_stat(pid)? {
        if st.start_ticks != start_ticks {
            return Ok(None);
        }
    }
    let mut leader = None;
    signal_group(pid, Signal::SIGTERM)?;
    if wait_group_gone(pid, start_ticks, grace.term, grace.poll, &mut leader).await? {
        return Ok(leader);
    }
    signal_group(pid, Signal::SIGKILL)?;
    if wait_group_gone(pid, start_ticks, grace.kill, grace.poll, &mut leader).await? {
        return Ok(leader);
    }
    Err(LocalError::Unkillable {
        pgid: pid,
        members: live_group_members(pid)?,
    })
}

async fn wait_group_gone(
    pid: i32,
    start_ticks: u64,
    limit: Duration,
    poll: Duration,
    leader: &mut Option<Ended>,
) -> Result<bool, LocalError> {
    let start = tokio::time::Instant::now();
    loop {
        if leader.is_none() {
            if let Observed::Ended(e) = observe(pid, start_ticks)? {
                *leader = Some(e);
            }
        }
        if live_group_members(pid)?.is_empty() {
            return Ok(true);
        }
        if start.elapsed() >= limit {
            return Ok(false);
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line =
            "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.pgrp, 4242);
        assert_eq!(st.start_ticks, 987654);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn own_process_is_alive_and_dangerous_pids_are_refused() {
        let me = std::process::id() as i32;
        let st = read_stat(me).unwrap().unwrap();
        assert!(!st.is_dead());
        for pid in [0, 1, -1, me] {
            assert!(signal_group(pid, Signal::SIGTERM).is_err(), "{pid}");
        }
        assert!(observe(me, st.start_ticks).is_err());
    }
}
