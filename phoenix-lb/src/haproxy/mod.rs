//! HAProxy as a [`LoadBalancer`] (feature `haproxy`), through its runtime
//! API: the `stats socket` (Unix or TCP) at `level admin`. Written and
//! tested against HAProxy 2.6 (Debian 12).
//!
//! Every server Phoenix puts behind HAProxy is a *dynamic* server of one
//! backend, added and removed at runtime; servers declared in the
//! configuration file are left alone (and not reported).
//!
//! - **Members** ([`members`](LoadBalancer::members)): `show servers
//!   state <backend>` (addresses, operational and administrative state,
//!   last check) and `show stat <backend> 4 -1` (current sessions), in one
//!   round trip. State: maintenance → `Disabled`; drain or weight 0 →
//!   `Draining`; else `Active`. Health, from the last *finished* check
//!   ([`ServerState::last_check_result`], so a check in flight changes
//!   nothing): never checked → `Unknown`; up (running or starting) →
//!   `Healthy`; down after a passed check (still rising) → `Unknown`;
//!   otherwise `Unhealthy`. Only a server HAProxy itself has up is ever
//!   `Healthy`. Without checks HAProxy serves any server that is not in
//!   maintenance, and so it is reported `Healthy` while up. A
//!   Phoenix-named server without an address (added by name by someone
//!   else) fails the read with `BadResponse`: it may take traffic, and
//!   leaving it out would hide that.
//! - **Attach**: `add server <be>/<name> <addr>:<port> check inter … rise
//!   … fall … weight …` for every target (dynamic servers start in
//!   maintenance), then `enable health`, `enable server` and `set server
//!   … health down` (so that a new server takes traffic only once `rise`
//!   checks pass; see [`HaproxyBalancerBuilder::start_down`]). A target
//!   already present at the same address is made active again, whatever
//!   mix a detach that stopped part-way or an operator left it in: its
//!   weight back from 0, `set server … state ready` from drain, the
//!   enable sequence from maintenance. Maintenance HAProxy keeps from its
//!   configuration, a tracked server or DNS cannot be lifted this way, and
//!   fails the call. At another address the call fails with
//!   [`HaproxyError::EndpointConflict`] carrying HAProxy's refusal.
//! - **Detach**: `set server … state drain` for every server, then one
//!   `show stat` per polling round for the whole batch (the first look is
//!   immediate; then every 1 ms, doubling up to the drain poll); as each
//!   server's sessions and queue reach zero, `set server … state maint`
//!   and `del server`. At the drain deadline `shutdown sessions server`
//!   closes what remains. A batch of ten drains concurrently: it takes the
//!   longest drain, not ten. The call returns once every server is deleted
//!   (a caller that gives up half-way leaves servers in drain or
//!   maintenance; detaching them again finishes the job).
//! - **Commands** go through one kept-alive interactive session, each
//!   round trip a pipelined batch ([`ConnectionMode`]): a 10-member
//!   cutover is four round trips.
//! - **Names**: a server's HAProxy name is `phx-<hash>-<id>`, derived from
//!   its [`ServerId`] by a reversible escape (see [`member_name`]), so a
//!   restarted orchestrator — or any other process — reads the ids back
//!   from HAProxy.
//! - **Errors**: HAProxy 2.6 answers with text, not codes: each command's
//!   answer is compared with what it says on success, and anything else
//!   becomes [`HaproxyError::Command`] with HAProxy's message verbatim.
//!   Unreachable sockets and timeouts map to `Temporary`; refusals to
//!   `Conflict`, `Invalid`, `NotFound`, `Unauthorized` or `Permanent`
//!   by their message; unreadable output to `BadResponse`.
//! - **Not atomic**: HAProxy has no transaction over several servers, so
//!   [`LbCapabilities::atomic_swap`] is false and `swap` attaches first,
//!   then detaches. It does not wait for the new servers' checks in
//!   between: with [`start_down`](HaproxyBalancerBuilder::start_down) (the
//!   default) the old servers would leave before the new ones take
//!   traffic, so under load attach, wait until the new members are
//!   healthy, then detach — as Phoenix's executor does.
//!
//! - **Reloads forget dynamic servers**: HAProxy restores only the servers
//!   of its configuration file on a reload or restart, so after one the
//!   members are gone until attached again (Phoenix's reconcile does that
//!   from its recorded pools). Reload with `server-state-file` and the
//!   servers written into the configuration if that gap matters.
//!
//! [`LocalHaproxy`] starts a haproxy of its own with a generated
//! configuration, for tests, benchmarks and examples; its documentation
//! lists the settings a configuration of your own needs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! use phoenix_core::ports::{LoadBalancer, Target};
//! use phoenix_lb::haproxy::{HaproxyBalancer, ServerCheck};
//!
//! let lb = HaproxyBalancer::builder()
//!     .runtime_api(std::path::PathBuf::from("/run/haproxy/admin.sock"))
//!     .backend("web")
//!     .check(Some(ServerCheck::new(Duration::from_secs(1), 2, 3)))
//!     .build()?;
//! lb.attach(&[Target {
//!     server: "web-1".parse()?,
//!     endpoint: "10.0.0.5:8080".parse()?,
//! }])
//! .await?;
//! for member in lb.members().await? {
//!     println!("{member}");
//! }
//! lb.detach(&["web-1".parse()?], Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```

mod client;
mod config;
mod error;
mod local;
mod names;
mod parse;
mod traffic;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::id::ServerId;
use phoenix_core::ports::{
    LbCapabilities, LoadBalancer, Member, MemberHealth, MemberState, PortError, Target,
};
use tokio::time::Instant;

pub use client::{AdminState, ConnectionMode, RuntimeAddr, RuntimeApi};
pub use config::{HaproxyBalancerBuilder, ServerCheck, MAX_BATCH};
pub use error::{EndpointConflict, HaproxyError};
pub use local::{
    binary_from_env, Balance, LocalHaproxy, LocalHaproxyBuilder, LocalHaproxyError, Mode,
    HAPROXY_ENV,
};
pub use parse::{CheckResult, OpState, ServerState, ServerStats};

use client::{cmd, expect, parse_server_stats, parse_servers_state, Expect, ADDED, DELETED};
use config::Settings;
use error::ALREADY_EXISTS;

/// The HAProxy server name Phoenix gives `server`: `phx-`, eight hex
/// digits of a checksum of the id, `-`, and the id with `_` written `__`,
/// `@` written `_a` and `+` written `_p` (HAProxy names allow neither `@`
/// nor `+`).
pub fn member_name(server: &ServerId) -> String {
    names::member_name(server)
}

/// The server id behind a name made by [`member_name`]; `None` for names
/// Phoenix did not make.
pub fn server_id_of(name: &str) -> Option<ServerId> {
    names::server_id(name)
}

/// A [`LoadBalancer`] over HAProxy's runtime API. See the [module
/// documentation](self).
#[derive(Debug, Clone)]
pub struct HaproxyBalancer {
    api: Arc<RuntimeApi>,
    settings: Arc<Settings>,
}

/// What `attach` does to one server after the `add server` round trip.
/// A server found present may be in any mix of maintenance, drain and
/// weight 0 (a detach that stopped part-way, an operator): each is undone.
struct Enable {
    /// Added now, or found in maintenance: leave maintenance (and hold it
    /// down until its checks pass, with `start_down`).
    from_maint: bool,
    /// Its health checks must be turned on.
    enable_health: bool,
    /// Found draining: `set server … state ready`.
    ready: bool,
    /// Found at weight 0: the configured weight again.
    reweight: bool,
}

/// `srv_admin_state` bits this client can clear over the runtime API:
/// forced maintenance and forced drain. The others come from the
/// configuration, a tracked server or DNS, and a `set server` does not
/// lift them.
const CLEARABLE: u32 = parse::admin::FMAINT | parse::admin::FDRAIN;

impl HaproxyBalancer {
    /// A builder with the defaults described on [`HaproxyBalancerBuilder`].
    pub fn builder() -> HaproxyBalancerBuilder {
        HaproxyBalancerBuilder::default()
    }

    /// The runtime-API client, for commands this port does not cover.
    pub fn api(&self) -> &RuntimeApi {
        &self.api
    }

    /// The backend.
    pub fn backend(&self) -> &str {
        &self.settings.backend
    }

    /// Every server of the backend as `show servers state` reports it,
    /// Phoenix's and others.
    ///
    /// # Errors
    ///
    /// As [`RuntimeApi::servers_state`].
    pub async fn servers(&self) -> Result<Vec<ServerState>, HaproxyError> {
        self.api.servers_state(&self.settings.backend).await
    }

    /// Sets a member's weight (0 to 256; 0 drains it).
    ///
    /// # Errors
    ///
    /// An out-of-range weight, or HAProxy's refusal (`No such server.` for
    /// a non-member).
    pub async fn set_weight(&self, server: &ServerId, weight: u32) -> Result<(), HaproxyError> {
        if weight > 256 {
            return Err(HaproxyError::InvalidSetting {
                setting: "weight",
                reason: format!("{weight} is above 256"),
            });
        }
        self.api
            .set_weight(&self.settings.backend, &member_name(server), weight)
            .await
    }

    fn op(&self, what: &str) -> String {
        format!("haproxy backend {}: {what}", self.settings.backend)
    }

    fn check_batch(&self, count: usize) -> Result<(), HaproxyError> {
        if count > MAX_BATCH {
            return Err(HaproxyError::BatchTooLarge {
                count,
                max: MAX_BATCH,
            });
        }
        Ok(())
    }

    /// One round trip: the backend's servers and their sessions.
    async fn read(&self) -> Result<(Vec<ServerState>, Vec<ServerStats>), HaproxyError> {
        let be = &self.settings.backend;
        let commands = [cmd::servers_state(be), cmd::stat(be)];
        let answers = self.api.execute_batch(&commands).await?;
        let [state, stat] = answers.as_slice() else {
            return Err(HaproxyError::Closed {
                addr: self.api.addr().clone(),
                command: commands[0].clone(),
            });
        };
        Ok((
            parse_servers_state(&commands[0], state)?,
            parse_server_stats(&commands[1], stat)?,
        ))
    }

    /// Phoenix's members, read fresh.
    ///
    /// # Errors
    ///
    /// As [`RuntimeApi::servers_state`].
    pub async fn read_members(&self) -> Result<Vec<Member>, HaproxyError> {
        let (states, stats) = self.read().await?;
        let sessions: HashMap<&str, u64> = stats
            .iter()
            .map(|s| (s.name.as_str(), s.sessions))
            .collect();
        let mut members = Vec::new();
        for s in &states {
            let Some(server) = names::server_id(&s.name) else {
                continue;
            };
            let Some(endpoint) = s.endpoint else {
                // Phoenix adds servers by IP address, so one without an
                // address was added or changed by someone else, and may
                // still take traffic wherever its name resolves. Leaving it
                // out would tell the guards that server is not serving.
                return Err(HaproxyError::Unparsable {
                    command: cmd::servers_state(&self.settings.backend),
                    reason: format!(
                        "Phoenix server {server} ({}) has no address: where it sends traffic is unknown",
                        s.name
                    ),
                    excerpt: s.name.clone(),
                });
            };
            let connections = sessions.get(s.name.as_str()).copied();
            // A server whose checks run was checked within their interval;
            // one whose checks were disabled (by hand) tells nothing.
            let checked_ago = self
                .settings
                .check_every
                .filter(|_| s.check_enabled() && s.last_check_result() != CheckResult::Unknown);
            members.push(Member {
                server,
                endpoint,
                health: health_of(s),
                state: state_of(s, connections, checked_ago.is_some()),
                connections,
                checked_ago,
            });
        }
        Ok(members)
    }

    async fn attach_inner(&self, targets: &[Target]) -> Result<(), HaproxyError> {
        let be = self.settings.backend.as_str();
        let mut wanted: Vec<(&Target, String)> = Vec::with_capacity(targets.len());
        for t in targets {
            match wanted.iter().find(|(w, _)| w.server == t.server) {
                Some((w, _)) if w.endpoint != t.endpoint => {
                    return Err(HaproxyError::DuplicateTarget {
                        server: t.server.clone(),
                        first: w.endpoint,
                        second: t.endpoint,
                    });
                }
                Some(_) => {}
                None => wanted.push((t, member_name(&t.server))),
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        self.check_batch(wanted.len())?;

        // Round trip 1: add every server, then read the backend to judge
        // the ones that were there already.
        let mut lines: Vec<String> = wanted
            .iter()
            .map(|(t, name)| cmd::add_server(be, name, t.endpoint, &self.settings.server_options))
            .collect();
        lines.push(cmd::servers_state(be));
        let answers = self.api.execute_batch(&lines).await?;
        let (state_answer, add_answers) =
            answers.split_last().ok_or_else(|| HaproxyError::Closed {
                addr: self.api.addr().clone(),
                command: lines[0].clone(),
            })?;
        let states = parse_servers_state(&lines[lines.len() - 1], state_answer)?;

        let mut failures = Vec::new();
        let mut plan: Vec<(&str, Enable)> = Vec::new();
        for (((target, name), line), answer) in wanted.iter().zip(&lines).zip(add_answers) {
            match expect(line, answer, Expect::Line(ADDED)) {
                Ok(()) => plan.push((
                    name,
                    Enable {
                        from_maint: true,
                        enable_health: self.settings.checked,
                        ready: false,
                        reweight: false,
                    },
                )),
                Err(refused) if answer.trim().starts_with(ALREADY_EXISTS) => {
                    let Some(current) = states.iter().find(|s| &s.name == name) else {
                        // Deleted between the two commands.
                        failures.push(refused);
                        continue;
                    };
                    match current.endpoint {
                        Some(at) if at == target.endpoint => {}
                        Some(at) => {
                            failures.push(HaproxyError::EndpointConflict(Box::new(
                                EndpointConflict {
                                    backend: be.to_owned(),
                                    server: target.server.clone(),
                                    name: name.clone(),
                                    current: at,
                                    requested: target.endpoint,
                                    message: answer.trim().to_owned(),
                                },
                            )));
                            continue;
                        }
                        None => {
                            failures.push(refused);
                            continue;
                        }
                    }
                    if current.admin_state & !CLEARABLE != 0 {
                        // Reporting success would leave a member the caller
                        // believes serves out of rotation.
                        failures.push(HaproxyError::Command {
                            command: cmd::set_state(be, name, "ready"),
                            message: format!(
                                "server {name} is in maintenance or drain that HAProxy keeps from its configuration, a tracked server or DNS (srv_admin_state {:#x}); the runtime API cannot make it active",
                                current.admin_state
                            ),
                        });
                        continue;
                    }
                    let enable = Enable {
                        from_maint: current.in_maintenance(),
                        enable_health: current.in_maintenance()
                            && self.settings.checked
                            && !current.check_enabled(),
                        ready: current.draining(),
                        reweight: current.weight == 0,
                    };
                    if enable.from_maint || enable.ready || enable.reweight {
                        plan.push((name, enable));
                    }
                }
                Err(refused) => failures.push(refused),
            }
        }

        // Round trip 2: enable.
        let mut commands: Vec<(String, Expect)> = Vec::new();
        for (name, enable) in &plan {
            if enable.enable_health {
                commands.push((cmd::enable_health(be, name), Expect::Empty));
            }
            // The weight first, so that the server never takes traffic at
            // weight 0 once it is ready.
            if enable.reweight {
                commands.push((
                    cmd::set_weight(be, name, self.settings.weight),
                    Expect::Empty,
                ));
            }
            if enable.ready {
                // Lifts forced maintenance too.
                commands.push((cmd::set_state(be, name, "ready"), Expect::Empty));
            } else if enable.from_maint {
                commands.push((cmd::enable_server(be, name), Expect::Empty));
            }
            // Leaving maintenance makes a checked server "up" before any
            // check: hold it down until `rise` checks pass.
            if enable.from_maint && self.settings.start_down {
                commands.push((cmd::health_down(be, name), Expect::Empty));
            }
        }
        for result in self.api.run_checked(&commands).await? {
            if let Err(e) = result {
                failures.push(e);
            }
        }
        first_failure(failures, "attach")
    }

    async fn detach_inner(
        &self,
        servers: &[ServerId],
        drain: Duration,
    ) -> Result<(), HaproxyError> {
        let be = self.settings.backend.as_str();
        let mut names: Vec<String> = Vec::with_capacity(servers.len());
        for s in servers {
            let name = member_name(s);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        self.check_batch(names.len())?;
        let started = Instant::now();
        let deadline = started
            .checked_add(drain)
            .unwrap_or_else(|| started + Duration::from_secs(30 * 365 * 24 * 3600));
        let give_up = deadline
            .checked_add(self.settings.removal_grace)
            .unwrap_or(deadline);

        // Round trip 1: drain them all, then look at their sessions.
        let mut commands: Vec<(String, Expect)> = names
            .iter()
            .map(|n| (cmd::set_state(be, n, "drain"), Expect::Empty))
            .collect();
        let stat_line = cmd::stat(be);
        commands.push((stat_line.clone(), Expect::Empty));
        let lines: Vec<String> = commands.iter().map(|(c, _)| c.clone()).collect();
        let mut answers = self.api.execute_batch(&lines).await?;
        let stat_answer = answers.pop().unwrap_or_default();
        let mut failures = Vec::new();
        let mut pending: Vec<String> = Vec::new();
        for ((name, (line, _)), answer) in names.into_iter().zip(&commands).zip(&answers) {
            match expect(line, answer, Expect::Empty) {
                Ok(()) => pending.push(name),
                Err(e) if e.is_no_such_server() => {}
                Err(e) => failures.push(e),
            }
        }
        let mut stats = parse_server_stats(&stat_line, &stat_answer)?;
        let mut pause = Duration::from_millis(1);
        let mut forced: Vec<String> = Vec::new();
        let mut last_refusal: HashMap<String, HaproxyError> = HashMap::new();
        while !pending.is_empty() {
            let now = Instant::now();
            let overdue = now >= deadline;
            let busy = |name: &str| {
                stats
                    .iter()
                    .find(|s| s.name == name)
                    .is_some_and(|s| s.sessions > 0 || s.queued > 0)
            };
            let ready: Vec<String> = pending
                .iter()
                .filter(|n| overdue || !busy(n))
                .cloned()
                .collect();
            if !ready.is_empty() {
                let mut commands: Vec<(String, Expect)> = Vec::new();
                let mut del_at: Vec<(String, usize)> = Vec::new();
                for name in &ready {
                    if overdue && busy(name) && !forced.contains(name) {
                        tracing::info!(backend = be, server = %name, "drain deadline passed; closing the server's remaining sessions");
                        commands.push((cmd::shutdown_sessions(be, name), Expect::Empty));
                        forced.push(name.clone());
                    }
                    commands.push((cmd::set_state(be, name, "maint"), Expect::Empty));
                    del_at.push((name.clone(), commands.len()));
                    commands.push((cmd::del_server(be, name), Expect::Line(DELETED)));
                }
                let mut results: Vec<Option<Result<(), HaproxyError>>> = self
                    .api
                    .run_checked(&commands)
                    .await?
                    .into_iter()
                    .map(Some)
                    .collect();
                for (name, at) in del_at {
                    match results.get_mut(at).and_then(Option::take) {
                        Some(Ok(())) => {}
                        Some(Err(e)) if e.is_no_such_server() => {}
                        // Connections left (a persistent one slipped in, or
                        // idle ones not purged yet): look again next round.
                        Some(Err(e)) if e.is_transient() => {
                            tracing::debug!(server = %name, error = %e, "HAProxy keeps the server for now");
                            last_refusal.insert(name, e);
                            continue;
                        }
                        Some(Err(e)) => failures.push(e),
                        None => failures.push(HaproxyError::Closed {
                            addr: self.api.addr().clone(),
                            command: cmd::del_server(be, &name),
                        }),
                    }
                    pending.retain(|p| p != &name);
                }
            }
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= give_up {
                for name in pending.drain(..) {
                    failures.push(last_refusal.remove(&name).unwrap_or_else(|| {
                        HaproxyError::Command {
                            command: cmd::del_server(be, &name),
                            message: format!(
                                "still present {:?} after the drain deadline",
                                self.settings.removal_grace
                            ),
                        }
                    }));
                }
                break;
            }
            let wake = (Instant::now() + pause).min(if overdue { give_up } else { deadline });
            tokio::time::sleep_until(wake.max(Instant::now())).await;
            pause = (pause * 2).min(self.settings.drain_poll);
            stats = self.api.server_stats(be).await?;
        }
        tracing::debug!(backend = be, took = ?started.elapsed(), "detach finished");
        first_failure(failures, "detach")
    }
}

impl HaproxyBalancer {
    async fn standby_inner(&self, servers: &[ServerId]) -> Result<(), HaproxyError> {
        if !self.settings.checked {
            return Err(HaproxyError::Command {
                command: "set server ... state drain".into(),
                message: "servers added without checks cannot stand by: nothing would check them"
                    .into(),
            });
        }
        let be = self.settings.backend.as_str();
        let mut names: Vec<String> = Vec::with_capacity(servers.len());
        for s in servers {
            let name = member_name(s);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        self.check_batch(names.len())?;
        let commands: Vec<(String, Expect)> = names
            .iter()
            .map(|n| (cmd::set_state(be, n, "drain"), Expect::Empty))
            .collect();
        let mut failures = Vec::new();
        for result in self.api.run_checked(&commands).await? {
            match result {
                Ok(()) => {}
                // Not a member: nothing to keep.
                Err(e) if e.is_no_such_server() => {}
                Err(e) => failures.push(e),
            }
        }
        first_failure(failures, "standby")
    }
}

/// The first of `failures`, logging the others (each is about a different
/// server; the caller sees one and can read the rest in the log).
fn first_failure(failures: Vec<HaproxyError>, what: &str) -> Result<(), HaproxyError> {
    let mut failures = failures.into_iter();
    let Some(first) = failures.next() else {
        return Ok(());
    };
    for other in failures {
        tracing::warn!(error = %other, "{what}: another server failed too");
    }
    Err(first)
}

/// A server in drain with nothing open and its checks running is a
/// standby: it takes no traffic at all and stays checked.
fn state_of(s: &ServerState, connections: Option<u64>, checked: bool) -> MemberState {
    if s.in_maintenance() || (s.draining() && connections == Some(0) && checked) {
        MemberState::Disabled
    } else if s.draining() || s.weight == 0 {
        MemberState::Draining
    } else {
        MemberState::Active
    }
}

fn health_of(s: &ServerState) -> MemberHealth {
    if !s.check_enabled() {
        return match s.op_state {
            OpState::Running | OpState::Starting => MemberHealth::Healthy,
            _ => MemberHealth::Unhealthy,
        };
    }
    match (s.op_state, s.last_check_result()) {
        (_, CheckResult::Unknown) => MemberHealth::Unknown,
        (OpState::Running | OpState::Starting, _) => MemberHealth::Healthy,
        // Down, but its last check passed: on its way up, `rise` not
        // reached yet.
        (
            OpState::Stopped,
            CheckResult::Passed | CheckResult::ConditionallyPassed | CheckResult::Neutral,
        ) => MemberHealth::Unknown,
        _ => MemberHealth::Unhealthy,
    }
}

#[async_trait]
impl LoadBalancer for HaproxyBalancer {
    fn capabilities(&self) -> LbCapabilities {
        LbCapabilities {
            atomic_swap: false,
            drain: true,
            reports_connections: true,
            max_batch: MAX_BATCH,
            reactivates_draining: true,
            stages: false,
            keeps_standby: self.settings.checked,
            check_interval: self.settings.check_every,
        }
    }

    async fn members(&self) -> Result<Vec<Member>, PortError> {
        self.read_members()
            .await
            .map_err(|e| e.into_port_error(self.op("members")))
    }

    async fn attach(&self, targets: &[Target]) -> Result<(), PortError> {
        self.attach_inner(targets)
            .await
            .map_err(|e| e.into_port_error(self.op("attach")))
    }

    async fn detach(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        self.detach_inner(servers, drain)
            .await
            .map_err(|e| e.into_port_error(self.op("detach")))
    }

    /// Puts the servers in drain, where HAProxy sends them no new
    /// traffic and keeps checking them; they stay until detached. Open
    /// sessions finish on their own (`members` reports them `Draining`
    /// until none is left, then `Disabled`). `attach` makes them ready
    /// again with the health their checks found.
    async fn standby(&self, servers: &[ServerId], _drain: Duration) -> Result<(), PortError> {
        self.standby_inner(servers)
            .await
            .map_err(|e| e.into_port_error(self.op("standby")))
    }

    /// `show stat`: HTTP responses (5xx, failed responses and failed
    /// connects as errors) and `rtime` as the mean latency.
    async fn traffic_stats(
        &self,
        servers: &[ServerId],
    ) -> Result<phoenix_core::ports::TrafficStats, PortError> {
        self.traffic(servers)
            .await
            .map_err(|e| e.into_port_error(self.op("traffic statistics")))
    }

    /// `set server … weight N%` of each server's configured weight.
    async fn set_weight(&self, servers: &[ServerId], percent: u8) -> Result<(), PortError> {
        self.weigh(servers, percent)
            .await
            .map_err(|e| e.into_port_error(self.op("set weight")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn state(op: u32, admin: u32, weight: u32, result: u32, check: u32) -> ServerState {
        // The status that goes with each result (0: never checked).
        let status = match result {
            0 => 1,
            1 => 3,
            2 => 8,
            3 => 15,
            _ => 16,
        };
        ServerState {
            backend: "be".into(),
            name: "n".into(),
            endpoint: Some("127.0.0.1:1".parse().unwrap()),
            op_state: op.into(),
            admin_state: admin,
            weight,
            check_result: result.into(),
            check_status: status,
            check_health: 0,
            check_state: check,
        }
    }

    /// New members must not count as healthy before HAProxy itself has
    /// them up: whatever the check columns say, a checked server that is
    /// down or soft-stopping is never `Healthy`.
    #[test]
    fn only_a_server_haproxy_has_up_is_healthy() {
        for op in 0..=5 {
            for result in 0..=5 {
                for status in 0..=25 {
                    let s = ServerState {
                        check_result: result.into(),
                        check_status: status,
                        ..state(op, 0, 1, 0, 6)
                    };
                    let up = matches!(s.op_state, OpState::Running | OpState::Starting);
                    if !up {
                        assert_ne!(health_of(&s), MemberHealth::Healthy, "{s:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn health_and_state_mapping() {
        use MemberHealth::*;
        // Just enabled and held down: not checked yet.
        assert_eq!(health_of(&state(0, 0, 1, 0, 6)), Unknown);
        assert_eq!(health_of(&state(2, 0, 1, 0, 6)), Unknown);
        assert_eq!(health_of(&state(2, 0, 1, 3, 6)), Healthy);
        assert_eq!(
            health_of(&state(2, 0, 1, 2, 6)),
            Healthy,
            "falling, still up"
        );
        assert_eq!(health_of(&state(0, 0, 1, 3, 6)), Unknown, "rising");
        // A check in flight: the result is cleared, the last status stays.
        let in_flight = |op, status| ServerState {
            check_result: CheckResult::Unknown,
            check_status: status,
            ..state(op, 0, 1, 0, 6)
        };
        assert_eq!(health_of(&in_flight(2, 15)), Healthy, "up, last passed");
        assert_eq!(health_of(&in_flight(2, 6)), Healthy, "up, last L4 passed");
        assert_eq!(health_of(&in_flight(2, 17)), Healthy, "falling, still up");
        assert_eq!(health_of(&in_flight(0, 8)), Unhealthy, "down, last failed");
        assert_eq!(health_of(&in_flight(0, 15)), Unknown, "rising");
        assert_eq!(health_of(&in_flight(2, 1)), Unknown, "never checked");
        assert_eq!(health_of(&state(0, 0, 1, 2, 6)), Unhealthy);
        assert_eq!(health_of(&state(3, 0, 1, 4, 6)), Unhealthy, "soft-stopping");
        assert_eq!(
            health_of(&state(2, 0, 1, 0, 2)),
            Healthy,
            "unchecked and up"
        );
        assert_eq!(
            health_of(&state(0, 1, 1, 0, 2)),
            Unhealthy,
            "unchecked, down"
        );
        let busy = Some(2);
        assert_eq!(
            state_of(&state(2, 0, 1, 3, 6), busy, true),
            MemberState::Active
        );
        assert_eq!(
            state_of(&state(2, 8, 1, 3, 6), busy, true),
            MemberState::Draining
        );
        assert_eq!(
            state_of(&state(2, 0, 0, 3, 6), busy, true),
            MemberState::Draining
        );
        assert_eq!(
            state_of(&state(0, 1, 1, 3, 6), busy, true),
            MemberState::Disabled
        );
        assert_eq!(
            state_of(&state(0, 9, 1, 3, 6), busy, true),
            MemberState::Disabled
        );
        // In drain with nothing open and checked: a standby.
        assert_eq!(
            state_of(&state(2, 8, 1, 3, 6), Some(0), true),
            MemberState::Disabled
        );
        // Unchecked, or with an unknown count: still draining for all we know.
        assert_eq!(
            state_of(&state(2, 8, 1, 3, 6), Some(0), false),
            MemberState::Draining
        );
        assert_eq!(
            state_of(&state(2, 8, 1, 3, 6), None, true),
            MemberState::Draining
        );
    }
}
