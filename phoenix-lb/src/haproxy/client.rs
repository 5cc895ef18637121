//! The runtime API's text protocol: a command is one line; in the
//! default (non-interactive) mode HAProxy answers and closes the
//! connection; after `prompt` it stays open and ends every answer with the
//! prompt `"> "` at the start of a line.
//!
//! [`RuntimeApi`] keeps one such interactive session open and pipelines:
//! a batch of commands is written in one go while the answers are read,
//! and split at the prompts. Ten servers attached or detached cost two
//! round trips instead of thirty to forty connections (see
//! [`ConnectionMode`] for the measurement).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::names::is_valid_haproxy_name;
use super::parse::{self, ServerState, ServerStats};
use super::HaproxyError;

/// The largest answer (or batch of answers) accepted.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Where HAProxy's runtime API listens: a `stats socket` with
/// `level admin`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuntimeAddr {
    /// A Unix socket (`stats socket /run/haproxy/admin.sock level admin`).
    Unix(PathBuf),
    /// A TCP socket (`stats socket ipv4@127.0.0.1:9999 level admin`).
    /// It has no authentication: keep it on loopback.
    Tcp(SocketAddr),
}

impl fmt::Display for RuntimeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

impl From<PathBuf> for RuntimeAddr {
    fn from(path: PathBuf) -> Self {
        Self::Unix(path)
    }
}

impl From<&std::path::Path> for RuntimeAddr {
    fn from(path: &std::path::Path) -> Self {
        Self::Unix(path.to_owned())
    }
}

impl From<SocketAddr> for RuntimeAddr {
    fn from(addr: SocketAddr) -> Self {
        Self::Tcp(addr)
    }
}

/// How commands reach HAProxy.
///
/// Measured on the 2-core development machine against HAProxy 2.6 over a
/// Unix socket (`benches/benches/lb_side_by_side.rs` prints both): a
/// 10-member cutover (`attach` of ten, `detach` of ten: about 70
/// commands) takes a median of 1.1–1.5 ms pipelined in one kept-alive
/// session, and 10.5 ms with one connection per command, which misses the
/// 10 ms target on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConnectionMode {
    /// One interactive (`prompt`) session, kept open and reopened when
    /// HAProxy closes it; batches are pipelined. The default.
    #[default]
    KeptAlive,
    /// A new connection per command, commands of a batch one after the
    /// other: for proxies in front of the socket that do not keep
    /// sessions open.
    PerCommand,
}

/// Both halves of a connection, whatever its transport.
struct Session {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    buf: Vec<u8>,
    last_used: Instant,
}

/// What went wrong inside a session, before the command context is added.
enum Failure {
    Io {
        source: std::io::Error,
        answered: bool,
    },
    Closed {
        answered: bool,
    },
    TooLarge,
}

impl Failure {
    /// The same failure, known to have come after part of the answer.
    fn answered(self) -> Self {
        match self {
            Self::Io { source, .. } => Self::Io {
                source,
                answered: true,
            },
            Self::Closed { .. } => Self::Closed { answered: true },
            Self::TooLarge => Self::TooLarge,
        }
    }

    /// Nothing of the answer arrived: HAProxy most likely closed an idle
    /// session under us before reading the batch.
    fn before_any_answer(&self) -> bool {
        match self {
            Self::Io { answered, .. } | Self::Closed { answered } => !answered,
            Self::TooLarge => false,
        }
    }

    fn into_error(self, addr: &RuntimeAddr, command: &str) -> HaproxyError {
        let (addr, command) = (addr.clone(), command.to_owned());
        match self {
            Self::Io { source, .. } => HaproxyError::Io {
                addr,
                command,
                source,
            },
            Self::Closed { .. } => HaproxyError::Closed { addr, command },
            Self::TooLarge => HaproxyError::TooLarge {
                addr,
                command,
                limit: MAX_ANSWER,
            },
        }
    }
}

/// The position of the next prompt in `buf[start..]`, looking from `scan`:
/// `"> "` at the start of an answer or of a line.
fn find_prompt(buf: &[u8], start: usize, scan: usize) -> Option<usize> {
    (scan.max(start)..buf.len().saturating_sub(1))
        .find(|&i| buf[i] == b'>' && buf[i + 1] == b' ' && (i == start || buf[i - 1] == b'\n'))
}

/// An answer's text: HAProxy ends answers with one or two newlines.
fn answer_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches(['\n', '\r'])
        .to_owned()
}

impl Session {
    /// Writes `payload` while reading `count` prompt-terminated answers;
    /// also says whether the session is still in step (nothing arrived
    /// beyond the last answer).
    async fn run(&mut self, payload: &[u8], count: usize) -> Result<(Vec<String>, bool), Failure> {
        let Self {
            reader,
            writer,
            buf,
            ..
        } = self;
        let write = async {
            writer
                .write_all(payload)
                .await
                .map_err(|source| Failure::Io {
                    source,
                    answered: false,
                })?;
            writer.flush().await.map_err(|source| Failure::Io {
                source,
                answered: false,
            })
        };
        let read = async {
            buf.clear();
            let mut answers = Vec::with_capacity(count);
            let (mut start, mut scan) = (0, 0);
            loop {
                while answers.len() < count {
                    let Some(at) = find_prompt(buf, start, scan) else {
                        break;
                    };
                    answers.push(answer_text(&buf[start..at]));
                    start = at + 2;
                    scan = start;
                }
                if answers.len() == count {
                    return Ok((answers, start == buf.len()));
                }
                scan = buf.len().saturating_sub(1).max(start);
                if buf.len() > MAX_ANSWER {
                    return Err(Failure::TooLarge);
                }
                let answered = !buf.is_empty();
                match reader.read_buf(buf).await {
                    Ok(0) => return Err(Failure::Closed { answered }),
                    Ok(_) => {}
                    Err(source) => return Err(Failure::Io { source, answered }),
                }
            }
        };
        let joined = tokio::try_join!(write, read);
        match joined {
            Ok(((), answers)) => Ok(answers),
            // Whichever half failed first, bytes already read mean HAProxy
            // ran at least part of the batch: it must not run again.
            Err(f) if !self.buf.is_empty() => Err(f.answered()),
            Err(f) => Err(f),
        }
    }
}

/// A client of HAProxy's runtime API.
///
/// Every method takes `&self`; batches from concurrent callers take turns
/// on the one session.
#[derive(Debug)]
pub struct RuntimeApi {
    addr: RuntimeAddr,
    timeout: Duration,
    idle_reconnect: Duration,
    mode: ConnectionMode,
    session: Mutex<Option<Session>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("last_used", &self.last_used)
            .finish_non_exhaustive()
    }
}

/// What a command answers when it succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Nothing.
    Empty,
    /// Exactly this line.
    Line(&'static str),
}

/// The runtime API's commands, as this crate sends them.
pub(crate) mod cmd {
    use std::net::SocketAddr;

    /// `add server <be>/<name> <addr> <options>`.
    pub(crate) fn add_server(
        backend: &str,
        name: &str,
        endpoint: SocketAddr,
        options: &str,
    ) -> String {
        let mut c = format!("add server {backend}/{name} {endpoint}");
        if !options.is_empty() {
            c.push(' ');
            c.push_str(options);
        }
        c
    }

    pub(crate) fn del_server(backend: &str, name: &str) -> String {
        format!("del server {backend}/{name}")
    }

    pub(crate) fn set_state(backend: &str, name: &str, state: &str) -> String {
        format!("set server {backend}/{name} state {state}")
    }

    pub(crate) fn health_down(backend: &str, name: &str) -> String {
        format!("set server {backend}/{name} health down")
    }

    pub(crate) fn enable_health(backend: &str, name: &str) -> String {
        format!("enable health {backend}/{name}")
    }

    pub(crate) fn enable_server(backend: &str, name: &str) -> String {
        format!("enable server {backend}/{name}")
    }

    pub(crate) fn set_weight(backend: &str, name: &str, weight: u32) -> String {
        format!("set server {backend}/{name} weight {weight}")
    }

    pub(crate) fn set_weight_percent(backend: &str, name: &str, percent: u8) -> String {
        format!("set server {backend}/{name} weight {percent}%")
    }

    pub(crate) fn shutdown_sessions(backend: &str, name: &str) -> String {
        format!("shutdown sessions server {backend}/{name}")
    }

    pub(crate) fn servers_state(backend: &str) -> String {
        format!("show servers state {backend}")
    }

    /// Server rows only (type 4), every server (-1).
    pub(crate) fn stat(backend: &str) -> String {
        format!("show stat {backend} 4 -1")
    }
}

/// `set server … state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminState {
    /// Takes traffic.
    Ready,
    /// No new load-balanced traffic; checks go on.
    Drain,
    /// No traffic, no checks.
    Maint,
}

impl AdminState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Drain => "drain",
            Self::Maint => "maint",
        }
    }
}

/// Checks an answer against what the command answers on success; anything
/// else is HAProxy's refusal, kept verbatim.
pub(crate) fn expect(command: &str, answer: &str, expected: Expect) -> Result<(), HaproxyError> {
    let answer = answer.trim();
    let ok = match expected {
        Expect::Empty => answer.is_empty(),
        Expect::Line(line) => answer == line,
    };
    if ok {
        Ok(())
    } else {
        Err(HaproxyError::Command {
            command: command.to_owned(),
            message: answer.to_owned(),
        })
    }
}

/// Refuses names that would break the one-line command syntax (spaces,
/// `;`, newlines) or that HAProxy itself refuses.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), HaproxyError> {
    if is_valid_haproxy_name(name) {
        Ok(())
    } else {
        Err(HaproxyError::InvalidSetting {
            setting: what,
            reason: format!("{name:?} is not a valid HAProxy name (use A-Z a-z 0-9 . _ - :)"),
        })
    }
}

impl RuntimeApi {
    /// A client of the runtime API at `addr`, with a 5 s timeout per batch,
    /// a kept-alive session, reopened after 5 s idle (below HAProxy's
    /// default `stats timeout` of 10 s).
    pub fn new(addr: impl Into<RuntimeAddr>) -> Self {
        Self {
            addr: addr.into(),
            timeout: Duration::from_secs(5),
            idle_reconnect: Duration::from_secs(5),
            mode: ConnectionMode::default(),
            session: Mutex::new(None),
        }
    }

    /// Time for one batch of commands, connecting included.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reopen the session rather than reuse it after this long idle; keep
    /// it below the socket's `stats timeout`.
    #[must_use]
    pub fn idle_reconnect(mut self, idle: Duration) -> Self {
        self.idle_reconnect = idle;
        self
    }

    /// How commands reach HAProxy.
    #[must_use]
    pub fn connection_mode(mut self, mode: ConnectionMode) -> Self {
        self.mode = mode;
        self
    }

    /// Where it connects.
    pub fn addr(&self) -> &RuntimeAddr {
        &self.addr
    }

    async fn connect(&self) -> Result<Session, HaproxyError> {
        let connect_error = |source| HaproxyError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let (reader, writer): (
            Box<dyn AsyncRead + Send + Unpin>,
            Box<dyn AsyncWrite + Send + Unpin>,
        ) = match &self.addr {
            RuntimeAddr::Unix(path) => {
                let (r, w) = UnixStream::connect(path)
                    .await
                    .map_err(connect_error)?
                    .into_split();
                (Box::new(r), Box::new(w))
            }
            RuntimeAddr::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await.map_err(connect_error)?;
                // Commands are small writes waiting for an answer.
                stream.set_nodelay(true).map_err(connect_error)?;
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
        };
        Ok(Session {
            reader,
            writer,
            buf: Vec::with_capacity(16 * 1024),
            last_used: Instant::now(),
        })
    }

    /// Opens an interactive session: `prompt` answers with the prompt.
    async fn open_session(&self) -> Result<Session, HaproxyError> {
        let mut session = self.connect().await?;
        let (answers, in_step) = session
            .run(b"prompt\n", 1)
            .await
            .map_err(|f| f.into_error(&self.addr, "prompt"))?;
        // `prompt` answers nothing but the prompt.
        if !in_step || answers.iter().any(|a| !a.trim().is_empty()) {
            return Err(HaproxyError::Unparsable {
                command: "prompt".to_owned(),
                reason: "not HAProxy's interactive prompt".to_owned(),
                excerpt: answers.concat().chars().take(200).collect(),
            });
        }
        Ok(session)
    }

    /// Sends `commands` in order and returns their answers in order, each
    /// without its trailing newlines. It does not judge the answers: a
    /// refusal is an answer too.
    ///
    /// # Errors
    ///
    /// The socket cannot be reached, the connection fails, or no complete
    /// answer arrives in time.
    pub async fn execute_batch(&self, commands: &[String]) -> Result<Vec<String>, HaproxyError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let first = commands[0].as_str();
        for c in commands {
            if c.contains(['\n', '\r']) {
                return Err(HaproxyError::InvalidSetting {
                    setting: "command",
                    reason: format!("{c:?} spans several lines"),
                });
            }
        }
        let run = async {
            match self.mode {
                ConnectionMode::KeptAlive => self.batch_in_session(commands).await,
                ConnectionMode::PerCommand => self.batch_per_command(commands).await,
            }
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(answers) => answers,
            Err(_) => Err(HaproxyError::Timeout {
                addr: self.addr.clone(),
                command: first.to_owned(),
                after: self.timeout,
            }),
        }
    }

    /// One command; see [`execute_batch`](Self::execute_batch).
    ///
    /// # Errors
    ///
    /// As [`execute_batch`](Self::execute_batch).
    pub async fn execute(&self, command: &str) -> Result<String, HaproxyError> {
        let mut answers = self.execute_batch(&[command.to_owned()]).await?;
        answers.pop().ok_or_else(|| HaproxyError::Closed {
            addr: self.addr.clone(),
            command: command.to_owned(),
        })
    }

    async fn batch_in_session(&self, commands: &[String]) -> Result<Vec<String>, HaproxyError> {
        let mut payload = commands.join("\n").into_bytes();
        payload.push(b'\n');
        // Dropped (and so closed) if this future is dropped by a timeout
        // half-way: a half-read session cannot be reused.
        let mut slot = self.session.lock().await;
        let mut session = match slot.take() {
            Some(s) if s.last_used.elapsed() < self.idle_reconnect => Some(s),
            _ => None,
        };
        for attempt in 0..2 {
            let reused = session.is_some();
            let mut current = match session.take() {
                Some(s) => s,
                None => self.open_session().await?,
            };
            match current.run(&payload, commands.len()).await {
                Ok((answers, in_step)) => {
                    if in_step {
                        current.last_used = Instant::now();
                        *slot = Some(current);
                    } else {
                        // More than the answers asked for: the session is
                        // out of step, and a new one is cheap.
                        tracing::warn!(addr = %self.addr, "HAProxy's runtime API sent more than the answers asked for; reopening the session");
                    }
                    return Ok(answers);
                }
                // A kept session closed by HAProxy before it read anything:
                // nothing ran, so run the batch again on a new one.
                Err(f) if reused && attempt == 0 && f.before_any_answer() => {
                    tracing::debug!(addr = %self.addr, "HAProxy closed the idle runtime API session; reopening it");
                }
                Err(f) => return Err(f.into_error(&self.addr, &commands[0])),
            }
        }
        Err(HaproxyError::Closed {
            addr: self.addr.clone(),
            command: commands[0].clone(),
        })
    }

    async fn batch_per_command(&self, commands: &[String]) -> Result<Vec<String>, HaproxyError> {
        let mut answers = Vec::with_capacity(commands.len());
        for command in commands {
            let mut conn = self.connect().await?;
            let failed = |source| HaproxyError::Io {
                addr: self.addr.clone(),
                command: command.clone(),
                source,
            };
            let mut line = command.clone().into_bytes();
            line.push(b'\n');
            conn.writer.write_all(&line).await.map_err(failed)?;
            conn.writer.flush().await.map_err(failed)?;
            let mut out = Vec::new();
            (&mut conn.reader)
                .take(MAX_ANSWER as u64 + 1)
                .read_to_end(&mut out)
                .await
                .map_err(failed)?;
            if out.len() > MAX_ANSWER {
                return Err(HaproxyError::TooLarge {
                    addr: self.addr.clone(),
                    command: command.clone(),
                    limit: MAX_ANSWER,
                });
            }
            answers.push(answer_text(&out));
        }
        Ok(answers)
    }

    /// Runs `commands` and checks each answer against what it should be.
    ///
    /// Every command runs (a refusal does not stop the ones after it);
    /// the result has one entry per command.
    pub(crate) async fn run_checked(
        &self,
        commands: &[(String, Expect)],
    ) -> Result<Vec<Result<(), HaproxyError>>, HaproxyError> {
        let lines: Vec<String> = commands.iter().map(|(c, _)| c.clone()).collect();
        let answers = self.execute_batch(&lines).await?;
        Ok(commands
            .iter()
            .zip(&answers)
            .map(|((c, e), a)| expect(c, a, *e))
            .collect())
    }

    async fn one_checked(&self, command: String, expected: Expect) -> Result<(), HaproxyError> {
        let answer = self.execute(&command).await?;
        expect(&command, &answer, expected)
    }

    /// `show servers state <backend>`, read.
    ///
    /// # Errors
    ///
    /// As [`execute`](Self::execute); HAProxy's refusal (no such
    /// backend) as [`HaproxyError::Command`]; output that cannot be read as
    /// [`HaproxyError::Unparsable`].
    pub async fn servers_state(&self, backend: &str) -> Result<Vec<ServerState>, HaproxyError> {
        check_name("backend", backend)?;
        let command = cmd::servers_state(backend);
        let answer = self.execute(&command).await?;
        parse_servers_state(&command, &answer)
    }

    /// The server rows of `show stat <backend> 4 -1`: current sessions and
    /// queue per server.
    ///
    /// # Errors
    ///
    /// As [`servers_state`](Self::servers_state).
    pub async fn server_stats(&self, backend: &str) -> Result<Vec<ServerStats>, HaproxyError> {
        check_name("backend", backend)?;
        let command = cmd::stat(backend);
        let answer = self.execute(&command).await?;
        parse_server_stats(&command, &answer)
    }

    /// `add server <backend>/<name> <endpoint> <options>`: a dynamic
    /// server, in maintenance until enabled. `options` are server keywords
    /// such as `check inter 2s rise 2 fall 3 weight 10`.
    ///
    /// # Errors
    ///
    /// As [`execute`](Self::execute); HAProxy's refusal as
    /// [`HaproxyError::Command`] with its message.
    pub async fn add_server(
        &self,
        backend: &str,
        name: &str,
        endpoint: SocketAddr,
        options: &str,
    ) -> Result<(), HaproxyError> {
        check_name("backend", backend)?;
        check_name("server name", name)?;
        if options.contains(['\n', '\r', ';']) {
            return Err(HaproxyError::InvalidSetting {
                setting: "server options",
                reason: format!("{options:?} holds a newline or `;`"),
            });
        }
        self.one_checked(
            cmd::add_server(backend, name, endpoint, options),
            Expect::Line(ADDED),
        )
        .await
    }

    /// `del server <backend>/<name>` (it must be in maintenance with no
    /// connection left).
    ///
    /// # Errors
    ///
    /// As [`add_server`](Self::add_server).
    pub async fn del_server(&self, backend: &str, name: &str) -> Result<(), HaproxyError> {
        check_name("backend", backend)?;
        check_name("server name", name)?;
        self.one_checked(cmd::del_server(backend, name), Expect::Line(DELETED))
            .await
    }

    /// `set server <backend>/<name> state ready|drain|maint`.
    ///
    /// # Errors
    ///
    /// As [`add_server`](Self::add_server).
    pub async fn set_server_state(
        &self,
        backend: &str,
        name: &str,
        state: AdminState,
    ) -> Result<(), HaproxyError> {
        check_name("backend", backend)?;
        check_name("server name", name)?;
        self.one_checked(cmd::set_state(backend, name, state.as_str()), Expect::Empty)
            .await
    }

    /// `set server <backend>/<name> weight <weight>` (0 to 256).
    ///
    /// # Errors
    ///
    /// As [`add_server`](Self::add_server).
    pub async fn set_weight(
        &self,
        backend: &str,
        name: &str,
        weight: u32,
    ) -> Result<(), HaproxyError> {
        check_name("backend", backend)?;
        check_name("server name", name)?;
        self.one_checked(cmd::set_weight(backend, name, weight), Expect::Empty)
            .await
    }

    /// `shutdown sessions server <backend>/<name>`: closes its sessions.
    ///
    /// # Errors
    ///
    /// As [`add_server`](Self::add_server).
    pub async fn shutdown_sessions(&self, backend: &str, name: &str) -> Result<(), HaproxyError> {
        check_name("backend", backend)?;
        check_name("server name", name)?;
        self.one_checked(cmd::shutdown_sessions(backend, name), Expect::Empty)
            .await
    }
}

/// `add server`'s answer on success.
pub(crate) const ADDED: &str = "New server registered.";
/// `del server`'s answer on success.
pub(crate) const DELETED: &str = "Server deleted.";

/// Reads `show servers state`, or turns HAProxy's refusal into
/// [`HaproxyError::Command`].
pub(crate) fn parse_servers_state(
    command: &str,
    answer: &str,
) -> Result<Vec<ServerState>, HaproxyError> {
    if !answer.starts_with('1') && !answer.starts_with('#') && !answer.trim().is_empty() {
        // Not the format at all: most likely a refusal such as "Can't find
        // backend."; a one-line answer is HAProxy talking.
        if answer.trim().lines().count() == 1 {
            return Err(HaproxyError::Command {
                command: command.to_owned(),
                message: answer.trim().to_owned(),
            });
        }
    }
    parse::servers_state(command, answer)
}

/// Reads `show stat`, or turns HAProxy's refusal into
/// [`HaproxyError::Command`].
pub(crate) fn parse_server_stats(
    command: &str,
    answer: &str,
) -> Result<Vec<ServerStats>, HaproxyError> {
    if !answer.starts_with('#') && answer.trim().lines().count() == 1 {
        return Err(HaproxyError::Command {
            command: command.to_owned(),
            message: answer.trim().to_owned(),
        });
    }
    parse::server_stats(command, answer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn prompts_split_answers() {
        let buf = b"\n> New server registered.\n\n> No such server.\n> 1\n# a b\n\n> ";
        let mut start = 0;
        let mut answers = Vec::new();
        while let Some(at) = find_prompt(buf, start, start) {
            answers.push(answer_text(&buf[start..at]));
            start = at + 2;
        }
        assert_eq!(
            answers,
            ["", "New server registered.", "No such server.", "1\n# a b"]
        );
        // A `>` inside a line is not a prompt, nor is one without its space.
        assert_eq!(find_prompt(b"a > b\n>x", 0, 0), None);
        // An answer made of nothing at all.
        assert_eq!(find_prompt(b"> ", 0, 0), Some(0));
        assert_eq!(find_prompt(b">", 0, 0), None);
    }

    #[test]
    fn answers_are_judged_verbatim() {
        assert!(expect("c", "\n", Expect::Empty).is_ok());
        assert!(expect("c", "New server registered.\n", Expect::Line(ADDED)).is_ok());
        let e = expect("del server a/b", "No such server.", Expect::Line(DELETED)).unwrap_err();
        assert_eq!(e.haproxy_message(), Some("No such server."));
        assert!(e.is_no_such_server());
        assert!(matches!(
            parse_servers_state("show servers state x", "Can't find backend."),
            Err(HaproxyError::Command { message, .. }) if message == "Can't find backend."
        ));
        assert!(matches!(
            parse_server_stats("show stat x 4 -1", "No such proxy."),
            Err(HaproxyError::Command { .. })
        ));
    }

    #[test]
    fn names_that_break_the_syntax_are_refused() {
        assert!(check_name("backend", "be").is_ok());
        for bad in ["", "be x", "be;del", "be\n", "be/x"] {
            assert!(check_name("backend", bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_socket_is_a_transient_error() {
        let dir = std::env::temp_dir().join(format!("phx-no-such-{}", std::process::id()));
        let api = RuntimeApi::new(dir.join("admin.sock"));
        let e = api.execute("show info").await.unwrap_err();
        assert!(matches!(e, HaproxyError::Connect { .. }), "{e}");
        assert!(e.is_transient());
    }

    /// A fake runtime API that closes every session after one command, as
    /// HAProxy does with a session idle past its `stats timeout`.
    #[tokio::test]
    async fn a_session_closed_while_idle_is_reopened_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncBufReadExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sessions = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = sessions.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut lines = tokio::io::BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let last = line != "prompt";
                        let answer = if last { "ok\n\n> " } else { "\n> " };
                        if w.write_all(answer.as_bytes()).await.is_err() || last {
                            return;
                        }
                    }
                });
            }
        });
        let api = RuntimeApi::new(addr).timeout(Duration::from_secs(2));
        assert_eq!(api.execute("show info").await.unwrap(), "ok");
        // Let the fake's close arrive, as an idle timeout's would.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(api.execute("show info").await.unwrap(), "ok");
        assert_eq!(sessions.load(Ordering::SeqCst), 2);
        // A session idle longer than `idle_reconnect` is not even tried.
        let api = RuntimeApi::new(addr).idle_reconnect(Duration::from_millis(1));
        assert_eq!(api.execute("a").await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(api.execute("b").await.unwrap(), "ok");
        assert_eq!(sessions.load(Ordering::SeqCst), 4);
    }

    /// A fake runtime API: the prompt, then garbage for the first command,
    /// then silence.
    #[tokio::test]
    async fn garbage_and_silence_are_typed_errors() {
        use tokio::io::AsyncBufReadExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut lines = tokio::io::BufReader::new(r).lines();
                    let mut n = 0;
                    while let Ok(Some(line)) = lines.next_line().await {
                        n += 1;
                        let answer: &[u8] = match (line.as_str(), n) {
                            ("prompt", _) => b"\n> ",
                            (_, 2) => b"\x00\xff garbage\n> ",
                            _ => continue,
                        };
                        if w.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let api = RuntimeApi::new(addr).timeout(Duration::from_millis(300));
        let e = api.servers_state("be").await.unwrap_err();
        assert!(
            matches!(
                e,
                HaproxyError::Command { .. } | HaproxyError::Unparsable { .. }
            ),
            "{e}"
        );
        let e = api.execute("show info").await.unwrap_err();
        assert!(matches!(e, HaproxyError::Timeout { .. }), "{e}");
        assert!(e.is_transient());
        // Something that is not HAProxy at all.
        let not_haproxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other = not_haproxy.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = not_haproxy.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let e = RuntimeApi::new(other)
            .timeout(Duration::from_millis(300))
            .execute("show info")
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                HaproxyError::Closed { .. }
                    | HaproxyError::Timeout { .. }
                    | HaproxyError::Io { .. }
            ),
            "{e}"
        );
    }
}
