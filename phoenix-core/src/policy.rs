//! Operation policies, with the parameter names operators already know.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;
use crate::time::duration_ms;

/// A capacity floor: an absolute count or a percentage of the desired
/// count (rounded up), the way AWS `MinHealthyPercentage` works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capacity {
    /// This many servers.
    Absolute(usize),
    /// This percentage of desired, rounded up.
    Percent(u8),
}

impl Capacity {
    /// The number of servers for a desired count.
    pub fn resolve(self, desired: usize) -> usize {
        match self {
            Self::Absolute(n) => n,
            Self::Percent(p) => (desired * usize::from(p.min(100))).div_ceil(100),
        }
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absolute(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// What to do when a step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Stop where it failed; the state stays recorded and consistent.
    Halt,
    /// Restore the previous serving state, then stop.
    Rollback,
}

/// How pools are created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProvisionPolicy {
    /// Most launch calls in flight at once.
    pub concurrency: usize,
    /// How long a server may stay in BUILD before it is replaced.
    #[serde(with = "duration_ms")]
    pub server_deadline: Duration,
    /// How many failed or stuck launches may be replaced per step.
    pub replace_budget: usize,
    /// How long a server may take to pass its health check after boot.
    #[serde(with = "duration_ms")]
    pub health_timeout: Duration,
    /// Refuse images that are not certified (always on in production).
    pub require_certified: bool,
    /// How often to poll the cloud while waiting.
    #[serde(with = "duration_ms")]
    pub poll_interval: Duration,
}

impl Default for ProvisionPolicy {
    fn default() -> Self {
        Self {
            concurrency: 16,
            server_deadline: Duration::from_secs(15 * 60),
            replace_budget: 3,
            health_timeout: Duration::from_secs(5 * 60),
            require_certified: true,
            poll_interval: Duration::from_secs(5),
        }
    }
}

/// How traffic moves between pools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RolloutPolicy {
    /// Most servers attached, detached, stopped, started or terminated
    /// in one step (the blast radius).
    pub batch_size: usize,
    /// Most servers above the desired count during a rolling replacement.
    pub max_surge: usize,
    /// The capacity floor behind the balancer during an operation.
    pub min_healthy: Capacity,
    /// How long new members must stay healthy before old ones leave.
    #[serde(with = "duration_ms")]
    pub bake_time: Duration,
    /// How long a step may go without progress before it fails (as
    /// Kubernetes' `progressDeadlineSeconds`); every step is also bounded
    /// by its own limits (attempts, health and drain timeouts).
    #[serde(with = "duration_ms")]
    pub progress_deadline: Duration,
    /// Roll back by itself when a rollout fails.
    pub auto_rollback: bool,
    /// How long detached members may drain.
    #[serde(with = "duration_ms")]
    pub drain: Duration,
    /// Keep the failed pool for inspection (otherwise its servers are
    /// terminated once traffic is restored).
    pub keep_failed: bool,
    /// Bake time of the pool a rollback makes live (it served before; an
    /// incident wants it back fast).
    #[serde(with = "duration_ms")]
    pub rollback_bake: Duration,
    /// How a blue-green deploy or a rollback moves the traffic.
    #[serde(default)]
    pub cutover: Cutover,
}

/// How a blue-green deploy or a rollback moves the traffic from the pools
/// that serve to the new one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cutover {
    /// The new pool's members are attached in batches next to the old
    /// ones, baked under traffic, then the old ones leave in batches. Works
    /// on every balancer; no step changes more than `batch_size` servers.
    #[default]
    Batched,
    /// The balancer's own atomic switch, where it declares one and can
    /// stage members (ELBv2's weighted listener over two target groups):
    /// the new pool is staged, found healthy by the balancer's checks and
    /// baked there while it takes no traffic, then one switch moves all
    /// traffic at once (no request sees a mix of releases) and the old
    /// pool drains out as the standby. The switch step is the one step
    /// allowed to change more than `batch_size` servers: choosing this
    /// cutover is the operator's consent to it. On a balancer that cannot
    /// stage, the cutover is batched.
    Switch,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            batch_size: 10,
            max_surge: 10,
            min_healthy: Capacity::Percent(100),
            bake_time: Duration::from_secs(60),
            progress_deadline: Duration::from_secs(20 * 60),
            auto_rollback: true,
            drain: Duration::from_secs(30),
            keep_failed: true,
            rollback_bake: Duration::ZERO,
            cutover: Cutover::Batched,
        }
    }
}

impl RolloutPolicy {
    /// The failure policy this rollout implies.
    pub fn on_failure(&self) -> FailurePolicy {
        if self.auto_rollback {
            FailurePolicy::Rollback
        } else {
            FailurePolicy::Halt
        }
    }
}

/// What a failed drain or warm-up hook does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookFailure {
    /// The step fails (and the operation follows its failure policy): the
    /// server does not move.
    Block,
    /// The step goes on; the failure is recorded as an event.
    Proceed,
}

/// How drain and warm-up hooks run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HookPolicy {
    /// What a failed hook does.
    pub on_failure: HookFailure,
    /// How long one hook may run before it counts as failed.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// Hooks running at once.
    pub concurrency: usize,
}

impl Default for HookPolicy {
    fn default() -> Self {
        Self {
            on_failure: HookFailure::Block,
            timeout: Duration::from_secs(60),
            concurrency: 8,
        }
    }
}

/// What reaping keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionPolicy {
    /// Standby pools kept for rollback, newest first.
    pub keep: usize,
    /// Of those, how many stay running (hot); older kept pools are
    /// stopped (cold) where the compute back end can stop servers.
    pub hot: usize,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self { keep: 1, hot: 1 }
    }
}

/// How the fleet is renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshPolicy {
    /// Servers older than this are replaced.
    #[serde(with = "duration_ms")]
    pub max_age: Duration,
    /// Most replacements per `window` (the replacement-rate budget).
    pub max_replacements: usize,
    /// The budget's window.
    #[serde(with = "duration_ms")]
    pub window: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_replacements: 100,
            window: Duration::from_secs(3600),
        }
    }
}

/// Deadlines of port calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallPolicy {
    /// The longest one attempt of a port call (cloud, balancer, probe,
    /// store) may take before it counts as a temporary failure. A call
    /// never runs past the deployment lease either: its deadline is the
    /// earlier of the two.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// The oldest a balancer read may be when a destructive call (detach,
    /// stop, terminate) that relies on it goes out. A read that took longer
    /// to gather, or that aged while earlier calls ran, is taken again.
    #[serde(with = "duration_ms", default = "default_fresh_read")]
    pub fresh_read: Duration,
}

fn default_fresh_read() -> Duration {
    Duration::from_secs(5)
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            fresh_read: default_fresh_read(),
        }
    }
}

/// Every policy an operation may consult. It deserialises with defaults:
/// a missing section or field takes [`Policy::default`]'s value (as plain
/// JSON, durations in milliseconds: `{"rollout": {"bake_time": 2000}}`).
/// The `phoenix` facade reads it from `phoenix.toml` with human durations
/// and presets ([`Policy::local`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Pool creation.
    pub provision: ProvisionPolicy,
    /// Traffic moves.
    pub rollout: RolloutPolicy,
    /// Reaping.
    pub retention: RetentionPolicy,
    /// Fleet refresh.
    pub refresh: RefreshPolicy,
    /// Retries of port calls.
    pub retry: RetryPolicy,
    /// Drain and warm-up hooks.
    #[serde(default)]
    pub hooks: HookPolicy,
    /// Deadlines of port calls.
    #[serde(default)]
    pub calls: CallPolicy,
    /// The canary stage of deploys and rolling replacements (none when
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<crate::canary::CanaryPolicy>,
}

/// A policy that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: {field}: {reason}")]
pub struct PolicyError {
    /// The offending field.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl Policy {
    /// The preset for a few servers on one machine (the local provider,
    /// tests, demos): fast polls, 2 s bakes and drains, whole-pool batches
    /// (`batch_size` and `max_surge` = `servers`, `min_healthy` 100%), one
    /// hot standby kept, hooks that do not block a removal when a server
    /// died; everything else as in [`Policy::default`] (production).
    pub fn local(servers: usize) -> Self {
        let mut p = Self::default();
        p.provision.concurrency = 8;
        p.provision.server_deadline = Duration::from_secs(20);
        p.provision.health_timeout = Duration::from_secs(15);
        p.provision.poll_interval = Duration::from_millis(100);
        p.provision.replace_budget = 2;
        p.rollout.batch_size = servers.max(1);
        p.rollout.max_surge = servers.max(1);
        p.rollout.min_healthy = Capacity::Percent(100);
        p.rollout.bake_time = Duration::from_secs(2);
        p.rollout.drain = Duration::from_secs(2);
        p.rollout.progress_deadline = Duration::from_secs(60);
        p.retention.keep = 1;
        p.retention.hot = 1;
        p.refresh.max_age = Duration::from_secs(3600);
        p.refresh.max_replacements = 100;
        p.refresh.window = Duration::from_secs(60);
        // A server that died cannot hand anything over: the failure is
        // recorded (a HookRan event) and the operation goes on.
        p.hooks.on_failure = HookFailure::Proceed;
        p.hooks.timeout = Duration::from_secs(5);
        p.retry = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_retries: 5,
            jitter_seed: None,
        };
        p
    }

    /// Checks the policy for values no operation can work with.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let refuse = |field, reason: &str| {
            Err(PolicyError {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.rollout.batch_size == 0 {
            return refuse("rollout.batch_size", "must be at least 1");
        }
        if self.rollout.max_surge == 0 {
            return refuse(
                "rollout.max_surge",
                "must be at least 1: replacements are attached before old servers leave",
            );
        }
        if self.provision.concurrency == 0 {
            return refuse("provision.concurrency", "must be at least 1");
        }
        if self.provision.poll_interval.is_zero() {
            return refuse("provision.poll_interval", "must be positive");
        }
        if self.rollout.progress_deadline.is_zero() {
            return refuse("rollout.progress_deadline", "must be positive");
        }
        if let Capacity::Percent(p) = self.rollout.min_healthy {
            if p > 100 {
                return refuse("rollout.min_healthy", "a percentage is at most 100");
            }
        }
        if self.hooks.concurrency == 0 {
            return refuse("hooks.concurrency", "must be at least 1");
        }
        if self.calls.timeout.is_zero() {
            return refuse("calls.timeout", "must be positive");
        }
        if self.refresh.max_replacements == 0 {
            return refuse("refresh.max_replacements", "must be at least 1");
        }
        if let Some(canary) = &self.canary {
            canary.validate()?;
        }
        Ok(())
    }

    /// The effective rolling batch: never more than `max_surge` above
    /// desired.
    pub fn rolling_batch(&self) -> usize {
        self.rollout.batch_size.min(self.rollout.max_surge).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_deserialises_with_defaults() {
        let p: Policy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, Policy::default());
        let p: Policy =
            serde_json::from_str(r#"{"rollout": {"bake_time": 2000}, "retention": {"keep": 3}}"#)
                .unwrap();
        assert_eq!(p.rollout.bake_time, Duration::from_secs(2));
        assert_eq!(p.rollout.batch_size, RolloutPolicy::default().batch_size);
        assert_eq!(p.retention.keep, 3);
        assert_eq!(p.retention.hot, RetentionPolicy::default().hot);
    }

    #[test]
    fn the_local_preset_is_valid_and_batches_the_pool() {
        let p = Policy::local(3);
        p.validate().unwrap();
        assert_eq!(p.rollout.batch_size, 3);
        assert_eq!(p.rollout.min_healthy, Capacity::Percent(100));
        assert!(p.rollout.bake_time < Policy::default().rollout.bake_time);
    }

    #[test]
    fn capacity_resolves() {
        assert_eq!(Capacity::Percent(100).resolve(3), 3);
        assert_eq!(Capacity::Percent(50).resolve(3), 2);
        assert_eq!(Capacity::Percent(0).resolve(3), 0);
        assert_eq!(Capacity::Absolute(2).resolve(10), 2);
    }

    #[test]
    fn zero_surge_is_refused() {
        let mut p = Policy::default();
        p.rollout.max_surge = 0;
        assert_eq!(p.validate().unwrap_err().field, "rollout.max_surge");
    }
}
