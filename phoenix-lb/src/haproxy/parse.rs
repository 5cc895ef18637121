//! Readers for the runtime API's `show servers state` and `show stat`
//! outputs. Columns are found by their header names, not their positions,
//! so that a column HAProxy adds later does not shift what is read.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::HaproxyError;

/// A server's operational state (`srv_op_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpState {
    /// `0`: down.
    Stopped,
    /// `1`: up, warming up (`slowstart`).
    Starting,
    /// `2`: fully up.
    Running,
    /// `3`: up but soft-stopping (a check answered "conditionally
    /// passed", e.g. 404 with `http-check disable-on-404`).
    Stopping,
    /// A value this client does not know.
    Other(u32),
}

impl From<u32> for OpState {
    fn from(v: u32) -> Self {
        match v {
            0 => Self::Stopped,
            1 => Self::Starting,
            2 => Self::Running,
            3 => Self::Stopping,
            v => Self::Other(v),
        }
    }
}

/// The result of a server's last health check (`srv_check_result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CheckResult {
    /// `0`: no result: never checked, or a check is in flight (HAProxy
    /// clears the result when each check starts; see
    /// [`ServerState::last_check_result`]).
    Unknown,
    /// `1`: valid but without status information.
    Neutral,
    /// `2`: failed.
    Failed,
    /// `3`: passed.
    Passed,
    /// `4`: passed, but the server wants no new sessions.
    ConditionallyPassed,
    /// A value this client does not know.
    Other(u32),
}

impl From<u32> for CheckResult {
    fn from(v: u32) -> Self {
        match v {
            0 => Self::Unknown,
            1 => Self::Neutral,
            2 => Self::Failed,
            3 => Self::Passed,
            4 => Self::ConditionallyPassed,
            v => Self::Other(v),
        }
    }
}

/// `srv_admin_state` bits.
pub(crate) mod admin {
    /// Forced into maintenance (`set server … state maint`).
    pub(crate) const FMAINT: u32 = 0x01;
    /// Maintenance inherited from a tracked server.
    pub(crate) const IMAINT: u32 = 0x02;
    /// Maintenance from the configuration (`disabled`).
    pub(crate) const CMAINT: u32 = 0x04;
    /// Forced into drain (`set server … state drain`).
    pub(crate) const FDRAIN: u32 = 0x08;
    /// Drain inherited from a tracked server.
    pub(crate) const IDRAIN: u32 = 0x10;
    /// Maintenance because its address did not resolve.
    pub(crate) const RMAINT: u32 = 0x20;
    /// Any maintenance.
    pub(crate) const MAINT: u32 = FMAINT | IMAINT | CMAINT | RMAINT;
    /// Any drain.
    pub(crate) const DRAIN: u32 = FDRAIN | IDRAIN;
}

/// `srv_check_state` bit: the check is administratively enabled.
pub(crate) const CHECK_ENABLED: u32 = 0x04;

/// One line of `show servers state <backend>` (format version 1).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerState {
    /// `be_name`.
    pub backend: String,
    /// `srv_name`.
    pub name: String,
    /// `srv_addr` and `srv_port`; `None` when HAProxy has no address for
    /// it (an unresolved FQDN shows as `-`).
    pub endpoint: Option<SocketAddr>,
    /// `srv_op_state`.
    pub op_state: OpState,
    /// `srv_admin_state`, a bit mask.
    pub admin_state: u32,
    /// `srv_uweight`: the weight set by the user.
    pub weight: u32,
    /// `srv_check_result`. HAProxy resets it to
    /// [`Unknown`](CheckResult::Unknown) when each check starts; see
    /// [`last_check_result`](Self::last_check_result).
    pub check_result: CheckResult,
    /// `srv_check_status`: HAProxy's `HCHK_STATUS_*` code of the last
    /// finished check (`1`, "initializing", until the first one ends).
    pub check_status: u32,
    /// `srv_check_health`: the rise/fall counter.
    pub check_health: u32,
    /// `srv_check_state`, a bit mask.
    pub check_state: u32,
}

impl ServerState {
    /// In maintenance for any reason.
    pub fn in_maintenance(&self) -> bool {
        self.admin_state & admin::MAINT != 0
    }

    /// Forced or inherited drain.
    pub fn draining(&self) -> bool {
        self.admin_state & admin::DRAIN != 0
    }

    /// Its health check is enabled.
    pub fn check_enabled(&self) -> bool {
        self.check_state & CHECK_ENABLED != 0
    }

    /// The result of the last *finished* check. `srv_check_result` reads
    /// "unknown" while a check is in flight (HAProxy clears it when the
    /// check starts), but `srv_check_status` keeps the last finished
    /// check's status until the next one ends, so the result is taken from
    /// it then — as HAProxy itself maps statuses to results. Only a server
    /// that has never finished a check reads [`CheckResult::Unknown`].
    pub fn last_check_result(&self) -> CheckResult {
        match self.check_result {
            CheckResult::Unknown => result_of_status(self.check_status),
            known => known,
        }
    }
}

/// HAProxy's `HCHK_STATUS_*` codes mapped to the result each one records
/// (its `check_statuses` table, `src/check.c`).
fn result_of_status(status: u32) -> CheckResult {
    match status {
        // CHECKED: finished, nothing to say.
        3 => CheckResult::Neutral,
        // L4OK, L6OK, L7OK, PROCOK.
        6 | 9 | 15 | 20 => CheckResult::Passed,
        // L7OKC: e.g. 404 with `http-check disable-on-404`.
        16 => CheckResult::ConditionallyPassed,
        // HANA, SOCKERR, L4TOUT, L4CON, L6TOUT, L6RSP, L7TOUT, L7RSP,
        // L7STS, PROCERR, PROCTOUT.
        4 | 5 | 7 | 8 | 10..=13 | 17..=19 => CheckResult::Failed,
        // UNKNOWN, INI, START, the L57DATA marker, and codes newer than
        // this client: nothing finished that it can read.
        _ => CheckResult::Unknown,
    }
}

/// One server row of `show stat <backend> 4 -1`: what a drain waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// `svname`.
    pub name: String,
    /// `scur`: current sessions.
    pub sessions: u64,
    /// `qcur`: requests queued for it.
    pub queued: u64,
    /// `econ`: failed connection attempts to it.
    pub connect_errors: u64,
    /// `wretr`: connections or requests retried after a failure on it.
    pub retries: u64,
    /// `wredis`: sessions moved from it to another server (`option
    /// redispatch`).
    pub redispatches: u64,
    /// `stot`: sessions it took since HAProxy started (or the server was
    /// added).
    pub sessions_total: u64,
    /// `hrsp_1xx` … `hrsp_other` added up: HTTP responses it sent (0 in
    /// TCP mode).
    pub http_responses: u64,
    /// `hrsp_5xx`: its 5xx answers.
    pub http_5xx: u64,
    /// `eresp`: responses that failed (the server closed or reset).
    pub response_errors: u64,
    /// `rtime`: mean response time of its last 1024 requests, in ms.
    pub response_time_ms: Option<u64>,
}

const MAX_EXCERPT: usize = 200;

fn unparsable(command: &str, reason: impl Into<String>, output: &str) -> HaproxyError {
    let mut end = output.len().min(MAX_EXCERPT);
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    HaproxyError::Unparsable {
        command: command.to_owned(),
        reason: reason.into(),
        excerpt: output[..end].to_owned(),
    }
}

/// Reads `show servers state` output.
pub(crate) fn servers_state(command: &str, output: &str) -> Result<Vec<ServerState>, HaproxyError> {
    let mut lines = output.lines();
    let version = lines.next().map(str::trim);
    if version != Some("1") {
        return Err(unparsable(
            command,
            format!("expected format version 1, found {version:?}"),
            output,
        ));
    }
    let header = lines
        .next()
        .and_then(|l| l.strip_prefix('#'))
        .ok_or_else(|| unparsable(command, "no column header", output))?;
    let columns: HashMap<&str, usize> = header
        .split_whitespace()
        .enumerate()
        .map(|(i, name)| (name, i))
        .collect();
    let col = |name: &str| {
        columns
            .get(name)
            .copied()
            .ok_or_else(|| unparsable(command, format!("no `{name}` column"), output))
    };
    let (be, name, addr, port) = (
        col("be_name")?,
        col("srv_name")?,
        col("srv_addr")?,
        col("srv_port")?,
    );
    let (op, adm, weight, status, result, health, check) = (
        col("srv_op_state")?,
        col("srv_admin_state")?,
        col("srv_uweight")?,
        col("srv_check_status")?,
        col("srv_check_result")?,
        col("srv_check_health")?,
        col("srv_check_state")?,
    );
    let mut servers = Vec::new();
    for line in lines {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let field = |i: usize, what: &str| {
            fields
                .get(i)
                .copied()
                .ok_or_else(|| unparsable(command, format!("a line without `{what}`"), line))
        };
        let number = |i: usize, what: &str| -> Result<u32, HaproxyError> {
            let raw = field(i, what)?;
            raw.parse().map_err(|_| {
                unparsable(command, format!("`{what}` is not a number: {raw:?}"), line)
            })
        };
        let port_raw = field(port, "srv_port")?;
        let port: u16 = port_raw.parse().map_err(|_| {
            unparsable(
                command,
                format!("`srv_port` is not a port: {port_raw:?}"),
                line,
            )
        })?;
        let endpoint = field(addr, "srv_addr")?
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        servers.push(ServerState {
            backend: field(be, "be_name")?.to_owned(),
            name: field(name, "srv_name")?.to_owned(),
            endpoint,
            op_state: number(op, "srv_op_state")?.into(),
            admin_state: number(adm, "srv_admin_state")?,
            weight: number(weight, "srv_uweight")?,
            check_result: number(result, "srv_check_result")?.into(),
            check_status: number(status, "srv_check_status")?,
            check_health: number(health, "srv_check_health")?,
            check_state: number(check, "srv_check_state")?,
        });
    }
    Ok(servers)
}

/// Reads the server rows of `show stat` CSV output.
pub(crate) fn server_stats(command: &str, output: &str) -> Result<Vec<ServerStats>, HaproxyError> {
    let mut lines = output.lines();
    let header = lines
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .ok_or_else(|| unparsable(command, "no CSV header", output))?;
    let columns: HashMap<&str, usize> = header
        .split(',')
        .enumerate()
        .map(|(i, name)| (name, i))
        .collect();
    let col = |name: &str| {
        columns
            .get(name)
            .copied()
            .ok_or_else(|| unparsable(command, format!("no `{name}` column"), output))
    };
    let (sv, scur, qcur) = (col("svname")?, col("scur")?, col("qcur")?);
    let (econ, wretr, wredis) = (col("econ")?, col("wretr")?, col("wredis")?);
    // Traffic columns: read where this HAProxy has them.
    let opt = |name: &str| columns.get(name).copied();
    let (stot, eresp, rtime) = (opt("stot"), opt("eresp"), opt("rtime"));
    let hrsp: Vec<Option<usize>> = [
        "hrsp_1xx",
        "hrsp_2xx",
        "hrsp_3xx",
        "hrsp_4xx",
        "hrsp_5xx",
        "hrsp_other",
    ]
    .iter()
    .map(|n| opt(n))
    .collect();
    let hrsp_5xx = opt("hrsp_5xx");
    let mut rows = Vec::new();
    for line in lines {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let Some(name) = fields.get(sv) else {
            return Err(unparsable(command, "a row without `svname`", line));
        };
        if matches!(*name, "FRONTEND" | "BACKEND") {
            continue;
        }
        let number = |i: usize, what: &str| -> Result<u64, HaproxyError> {
            match fields.get(i).copied() {
                // Empty means "not applicable" in HAProxy's CSV.
                Some("") => Ok(0),
                Some(raw) => raw.parse().map_err(|_| {
                    unparsable(command, format!("`{what}` is not a number: {raw:?}"), line)
                }),
                None => Err(unparsable(command, format!("a row without `{what}`"), line)),
            }
        };
        let maybe = |i: Option<usize>, what: &str| -> Result<u64, HaproxyError> {
            i.map_or(Ok(0), |i| number(i, what))
        };
        let mut http_responses = 0u64;
        for i in &hrsp {
            http_responses = http_responses.saturating_add(maybe(*i, "hrsp_*")?);
        }
        let response_time_ms = match rtime.and_then(|i| fields.get(i).copied()) {
            None | Some("") => None,
            Some(_) => Some(maybe(rtime, "rtime")?),
        };
        rows.push(ServerStats {
            sessions_total: maybe(stot, "stot")?,
            http_responses,
            http_5xx: maybe(hrsp_5xx, "hrsp_5xx")?,
            response_errors: maybe(eresp, "eresp")?,
            response_time_ms,
            name: (*name).to_owned(),
            sessions: number(scur, "scur")?,
            queued: number(qcur, "qcur")?,
            connect_errors: number(econ, "econ")?,
            retries: number(wretr, "wretr")?,
            redispatches: number(wredis, "wredis")?,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Captured from HAProxy 2.6.12.
    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\
3 be 1 g 127.0.0.1 2 0 1 1 39 15 3 3 6 0 0 0 - 18082 - 0 0 - - 0\n\
3 be 3 i 127.0.0.1 0 0 1 1 38 8 2 0 6 0 0 0 - 18099 - 0 0 - - 0\n\
3 be 4 j 127.0.0.1 0 1 50 0 38 1 0 0 2 0 0 0 - 18082 - 0 0 - - 0\n\
3 be 5 x ::1 0 9 1 1 0 1 0 0 2 0 0 0 - 8080 - 0 0 - - 0\n";

    /// `g` read again while its next check is in flight: the result is
    /// cleared, the last status (15, L7OK) stays.
    const IN_FLIGHT: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\
3 be 1 g 127.0.0.1 2 0 1 1 40 15 0 3 6 0 0 0 - 18082 - 0 0 - - 0\n\
3 be 3 i 127.0.0.1 0 0 1 1 39 8 0 0 6 0 0 0 - 18099 - 0 0 - - 0\n";

    #[test]
    fn reads_servers_state() {
        let s = servers_state("show servers state be", STATE).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "g");
        assert_eq!(s[0].backend, "be");
        assert_eq!(s[0].endpoint, Some("127.0.0.1:18082".parse().unwrap()));
        assert_eq!(s[0].op_state, OpState::Running);
        assert_eq!(s[0].check_result, CheckResult::Passed);
        assert!(s[0].check_enabled() && !s[0].in_maintenance() && !s[0].draining());
        assert_eq!(s[0].check_status, 15);
        assert_eq!(s[0].last_check_result(), CheckResult::Passed);
        assert_eq!(s[1].check_result, CheckResult::Failed);
        assert_eq!(s[1].last_check_result(), CheckResult::Failed);
        // Never checked (status 1, "initializing").
        assert_eq!(s[2].last_check_result(), CheckResult::Unknown);
        assert!(s[2].in_maintenance());
        assert_eq!(s[2].weight, 50);
        assert!(!s[2].check_enabled());
        assert_eq!(s[3].endpoint, Some("[::1]:8080".parse().unwrap()));
        assert!(s[3].in_maintenance() && s[3].draining());
        // An empty backend.
        let empty = STATE.lines().take(2).collect::<Vec<_>>().join("\n");
        assert!(servers_state("x", &empty).unwrap().is_empty());
    }

    #[test]
    fn a_check_in_flight_keeps_the_last_finished_result() {
        let s = servers_state("show servers state be", IN_FLIGHT).unwrap();
        assert_eq!(s[0].check_result, CheckResult::Unknown);
        assert_eq!(s[0].last_check_result(), CheckResult::Passed);
        assert_eq!(s[1].last_check_result(), CheckResult::Failed);
    }

    #[test]
    fn every_check_status_maps_as_haproxy_maps_it() {
        use CheckResult::*;
        let expected = [
            (0, Unknown),
            (1, Unknown),
            (2, Unknown),
            (3, Neutral),
            (4, Failed),
            (5, Failed),
            (6, Passed),
            (7, Failed),
            (8, Failed),
            (9, Passed),
            (10, Failed),
            (11, Failed),
            (12, Failed),
            (13, Failed),
            (14, Unknown),
            (15, Passed),
            (16, ConditionallyPassed),
            (17, Failed),
            (18, Failed),
            (19, Failed),
            (20, Passed),
            (21, Unknown),
        ];
        for (status, result) in expected {
            assert_eq!(result_of_status(status), result, "status {status}");
        }
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        for bad in [
            "",
            "Can't find backend.",
            "2\n# be_name srv_name",
            "1\nno header",
            "1\n# be_name srv_name\n",
            &STATE.replace(" 18082 ", " port "),
            &STATE.replace("3 be 1 g 127.0.0.1 2 0 1 1", "3 be 1 g 127.0.0.1 two 0 1 1"),
            &format!("{STATE}3 be 9 short\n"),
            "1\n# é\u{0}",
        ] {
            assert!(
                matches!(
                    servers_state("c", bad),
                    Err(HaproxyError::Unparsable { .. })
                ),
                "{bad:?}"
            );
        }
    }

    const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status\n\
be,a,0,0,3,5,,10,100,0,,0,,4,0,2,1,UP\n\
be,b,,0,,0,,0,0,0,,0,,0,0,0,0,MAINT\n\
be,BACKEND,1,0,3,5,,10,100,0,,0,,4,0,2,1,UP\n";

    /// An HTTP backend's row (HAProxy 2.6 column names, trimmed).
    const HTTP_STAT: &str = "# pxname,svname,qcur,scur,stot,econ,eresp,wretr,wredis,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,rtime\n\
be,a,0,1,40,1,2,0,0,0,90,0,3,7,0,12\n";

    #[test]
    fn reads_the_http_traffic_columns() {
        let rows = server_stats("show stat", HTTP_STAT).unwrap();
        let a = &rows[0];
        assert_eq!(a.http_responses, 100);
        assert_eq!(a.http_5xx, 7);
        assert_eq!(a.response_errors, 2);
        assert_eq!(a.sessions_total, 40);
        assert_eq!(a.response_time_ms, Some(12));
    }

    #[test]
    fn reads_show_stat() {
        let rows = server_stats("show stat", STAT).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            ServerStats {
                name: "a".into(),
                sessions: 3,
                queued: 0,
                connect_errors: 4,
                retries: 2,
                redispatches: 1,
                sessions_total: 10,
                http_responses: 0,
                http_5xx: 0,
                response_errors: 0,
                response_time_ms: None,
            }
        );
        assert_eq!(rows[1].sessions, 0);
        for bad in [
            "",
            "No such proxy.",
            "# pxname,svname\nbe,a\n",
            &STAT.replace(",3,5,,10", ",x,5,,10"),
            "# pxname,svname,qcur,scur\nbe\n",
        ] {
            assert!(
                matches!(server_stats("c", bad), Err(HaproxyError::Unparsable { .. })),
                "{bad:?}"
            );
        }
    }
}
