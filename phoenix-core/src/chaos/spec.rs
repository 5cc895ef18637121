//! What a drill does: [`ChaosDrill`] and [`FailureKind`].

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::Capacity;
use crate::time::duration_ms;

/// The label that names a server's failure domain unless a drill names
/// another (an availability zone, a rack, a hypervisor). Servers without
/// it are all in one domain, [`UNLABELLED_DOMAIN`].
pub const DEFAULT_DOMAIN_KEY: &str = "phoenix-zone";

/// The domain of servers that carry no failure-domain label.
pub const UNLABELLED_DOMAIN: &str = "unlabelled";

/// How a victim fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// It dies abruptly: the process is killed (local), the instance is
    /// terminated (cloud), the application crashes (simulation).
    Kill,
    /// It stops: powered off (cloud `stop`), frozen (`SIGSTOP`, local),
    /// its host fails (simulation).
    Stop,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kill => "kill",
            Self::Stop => "stop",
        })
    }
}

/// A planned-failure drill on a role's live pool: within a budget of
/// failures, and only where the capacity floor allows, it fails live
/// servers picked at random (seeded), waits until the failure is seen,
/// heals, and waits until the pool serves at full size again before the
/// next failure. It reports time to detect and time to restore per
/// failure.
///
/// Failure domains: the victims of one failure all share one domain, and
/// a failure starts only after the previous one is restored, so servers
/// of two domains are never down at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosDrill {
    /// Seeds the choice of domains and victims: the same seed on the same
    /// pool picks the same servers.
    pub seed: u64,
    /// How many failures to inject (the budget).
    pub failures: usize,
    /// Servers failed at once per failure, all in one domain (default 1).
    pub victims_per_failure: usize,
    /// How they fail.
    pub kind: FailureKind,
    /// Pause between a restoration and the next failure.
    #[serde(with = "duration_ms")]
    pub interval: Duration,
    /// How long a failure may go unseen before the drill halts.
    #[serde(with = "duration_ms")]
    pub detect_deadline: Duration,
    /// How long restoring may take before the drill halts.
    #[serde(with = "duration_ms")]
    pub restore_deadline: Duration,
    /// How often to read the balancer and the cloud while waiting.
    #[serde(with = "duration_ms")]
    pub poll: Duration,
    /// The label naming a server's failure domain.
    pub domain_key: String,
    /// The healthy members that must remain counting the victims as lost;
    /// `None` uses the policy's `min_healthy`. A policy at 100% allows no
    /// planned failure at all: a drill needs a floor below the pool size.
    pub min_healthy: Option<Capacity>,
}

impl ChaosDrill {
    /// `failures` kills of one server each, seeded, with a second between
    /// them, 30 s to detect and 120 s to restore, polls every 50 ms.
    pub fn kills(seed: u64, failures: usize) -> Self {
        Self {
            seed,
            failures,
            victims_per_failure: 1,
            kind: FailureKind::Kill,
            interval: Duration::from_secs(1),
            detect_deadline: Duration::from_secs(30),
            restore_deadline: Duration::from_secs(120),
            poll: Duration::from_millis(50),
            domain_key: DEFAULT_DOMAIN_KEY.into(),
            min_healthy: None,
        }
    }

    /// With another failure kind.
    pub fn kind(mut self, kind: FailureKind) -> Self {
        self.kind = kind;
        self
    }

    /// With this many victims per failure (in one domain).
    pub fn victims_per_failure(mut self, n: usize) -> Self {
        self.victims_per_failure = n;
        self
    }

    /// With this pause between failures.
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// With these deadlines.
    pub fn deadlines(mut self, detect: Duration, restore: Duration) -> Self {
        self.detect_deadline = detect;
        self.restore_deadline = restore;
        self
    }

    /// With this polling interval.
    pub fn poll(mut self, d: Duration) -> Self {
        self.poll = d;
        self
    }

    /// With this failure-domain label.
    pub fn domain_key(mut self, key: impl Into<String>) -> Self {
        self.domain_key = key.into();
        self
    }

    /// With this floor instead of the policy's.
    pub fn min_healthy(mut self, floor: Capacity) -> Self {
        self.min_healthy = Some(floor);
        self
    }

    /// Refuses a drill that cannot run: no victim per failure, a zero
    /// poll or deadline, an empty domain key.
    pub fn validate(&self) -> Result<(), String> {
        if self.victims_per_failure == 0 {
            return Err("victims_per_failure must be at least 1".into());
        }
        if self.poll.is_zero() {
            return Err("poll must be positive".into());
        }
        if self.detect_deadline.is_zero() || self.restore_deadline.is_zero() {
            return Err("deadlines must be positive".into());
        }
        if self.domain_key.trim().is_empty() {
            return Err("domain_key must not be empty".into());
        }
        Ok(())
    }
}
