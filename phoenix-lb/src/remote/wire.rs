//! The admin protocol's messages.

use std::time::Duration;

use phoenix_core::id::ServerId;
use phoenix_core::ports::{ErrorKind, LbCapabilities, Member, PortError, Target, TrafficStats};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    Capabilities,
    Members,
    Attach {
        targets: Vec<Target>,
    },
    Detach {
        servers: Vec<ServerId>,
        drain_ms: u64,
    },
    Stage {
        targets: Vec<Target>,
    },
    Swap {
        attach: Vec<Target>,
        detach: Vec<ServerId>,
        drain_ms: u64,
    },
    Standby {
        servers: Vec<ServerId>,
        drain_ms: u64,
    },
    SwapStandby {
        attach: Vec<Target>,
        standby: Vec<ServerId>,
        drain_ms: u64,
    },
    TrafficStats {
        servers: Vec<ServerId>,
    },
    SetWeight {
        servers: Vec<ServerId>,
        percent: u8,
    },
}

impl Request {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Capabilities => "capabilities",
            Self::Members => "members",
            Self::Attach { .. } => "attach",
            Self::Detach { .. } => "detach",
            Self::Stage { .. } => "stage",
            Self::Swap { .. } => "swap",
            Self::Standby { .. } => "standby",
            Self::SwapStandby { .. } => "swap_standby",
            Self::TrafficStats { .. } => "traffic_stats",
            Self::SetWeight { .. } => "set_weight",
        }
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Capabilities {
    pub(crate) atomic_swap: bool,
    pub(crate) drain: bool,
    pub(crate) reports_connections: bool,
    pub(crate) max_batch: usize,
    /// Missing from balancers served by an older version, which all did.
    #[serde(default = "yes")]
    pub(crate) reactivates_draining: bool,
    /// Missing from balancers served by an older version, which did not
    /// stage.
    #[serde(default)]
    pub(crate) stages: bool,
    /// Missing from balancers served by an older version, which kept no
    /// standby members.
    #[serde(default)]
    pub(crate) keeps_standby: bool,
    #[serde(default)]
    pub(crate) check_interval_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

impl From<LbCapabilities> for Capabilities {
    fn from(c: LbCapabilities) -> Self {
        Self {
            atomic_swap: c.atomic_swap,
            drain: c.drain,
            reports_connections: c.reports_connections,
            max_batch: c.max_batch,
            reactivates_draining: c.reactivates_draining,
            stages: c.stages,
            keeps_standby: c.keeps_standby,
            check_interval_ms: c
                .check_interval
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

impl From<Capabilities> for LbCapabilities {
    fn from(c: Capabilities) -> Self {
        Self {
            atomic_swap: c.atomic_swap,
            drain: c.drain,
            reports_connections: c.reports_connections,
            max_batch: c.max_batch.max(1),
            reactivates_draining: c.reactivates_draining,
            stages: c.stages,
            keeps_standby: c.keeps_standby,
            check_interval: c.check_interval_ms.map(std::time::Duration::from_millis),
        }
    }
}

/// An error as it crosses the socket: its classification survives, so the
/// orchestrator still knows whether to retry.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireError {
    kind: String,
    retry_after_ms: Option<u64>,
    operation: String,
    message: String,
}

impl From<&PortError> for WireError {
    fn from(e: &PortError) -> Self {
        let (kind, retry_after_ms, message) = match &e.kind {
            ErrorKind::Throttled { retry_after } => {
                ("throttled", retry_after.map(millis), String::new())
            }
            ErrorKind::Temporary(m) => ("temporary", None, m.clone()),
            ErrorKind::NotFound(m) => ("not_found", None, m.clone()),
            ErrorKind::Conflict(m) => ("conflict", None, m.clone()),
            ErrorKind::Invalid(m) => ("invalid", None, m.clone()),
            ErrorKind::Unauthorized(m) => ("unauthorized", None, m.clone()),
            ErrorKind::Unsupported(m) => ("unsupported", None, m.clone()),
            ErrorKind::BadResponse(m) => ("bad_response", None, m.clone()),
            ErrorKind::Permanent(m) => ("permanent", None, m.clone()),
            // A kind newer than this wire format travels as permanent: the
            // other side fails closed rather than retrying blindly.
            other => ("permanent", None, other.to_string()),
        };
        Self {
            kind: kind.to_owned(),
            retry_after_ms,
            operation: e.operation.clone(),
            message: if e.source.is_some() {
                e.chain()
            } else {
                message
            },
        }
    }
}

impl WireError {
    pub(crate) fn into_port_error(self) -> PortError {
        let m = self.message;
        let kind = match self.kind.as_str() {
            "throttled" => ErrorKind::Throttled {
                retry_after: self.retry_after_ms.map(Duration::from_millis),
            },
            "temporary" => ErrorKind::Temporary(m),
            "not_found" => ErrorKind::NotFound(m),
            "conflict" => ErrorKind::Conflict(m),
            "invalid" => ErrorKind::Invalid(m),
            "unauthorized" => ErrorKind::Unauthorized(m),
            "unsupported" => ErrorKind::Unsupported(m),
            "bad_response" => ErrorKind::BadResponse(m),
            _ => ErrorKind::Permanent(m),
        };
        PortError::new(format!("remote balancer: {}", self.operation), kind)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Response {
    Capabilities(Capabilities),
    Members(Vec<Member>),
    TrafficStats(TrafficStats),
    Done,
    Error(WireError),
}

/// The longest line either side reads: a member list of thousands.
pub(crate) const MAX_LINE: usize = 16 * 1024 * 1024;
