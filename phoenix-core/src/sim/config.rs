//! What the simulated cloud does: its timings, capabilities and the faults
//! it injects. The faults are the ones real clouds have; each one exists
//! because a guard of the executor was once missing against it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::id::ReleaseLabel;
use crate::ports::BootFormat;

/// Injected faults; each is a probability per call or per server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// A launch request is refused (quota).
    pub launch_failure: f64,
    /// A server never leaves BUILD.
    pub stuck_in_build: f64,
    /// A server boots into ERROR.
    pub boot_error: f64,
    /// A call is throttled with a Retry-After.
    pub throttle: f64,
    /// A call answers 5xx.
    pub server_error: f64,
    /// A launch creates its servers but the answer is lost.
    pub lost_response: f64,
    /// A new server is invisible for a while (eventual consistency), within
    /// the declared consistency window.
    pub not_found_after_launch: f64,
    /// A new server stays invisible for longer than the declared window
    /// (up to three times it): the provider breaks its own promise.
    pub lag_beyond_window: f64,
    /// Terminating a server the provider does not list yet answers "not
    /// found", which adapters report as done, and the server lives on.
    pub terminate_unseen_lost: f64,
    /// A balancer call fails.
    pub lb_failure: f64,
    /// A balancer change applies to some of its members, then fails.
    pub lb_partial: f64,
    /// An atomic swap applies whole, but its answer is lost (an error
    /// after the switch happened, as a timed-out `ModifyListener`).
    pub swap_answer_lost: f64,
    /// A server's application dies within three minutes of being staged
    /// (infant mortality, met where a pool waits staged: during its bake
    /// or the drain hooks before the switch).
    pub staged_death: f64,
    /// The balancer stops checking a member moved to standby (a hand
    /// disabled its checks) within two minutes, and reports the health it
    /// found last from then on; half the time its application dies within
    /// two minutes after that, unseen.
    pub standby_checks_stop: f64,
    /// A detached member stays listed as draining (with no connections)
    /// long after its drain, as HAProxy keeps a server in DRAIN.
    pub stuck_draining: f64,
    /// A new member is reported under a stand-in id, as an adapter that
    /// lost its address-to-server map does; its endpoint stays true.
    pub stand_in_ids: f64,
    /// A balancer read answers an empty member list (a balancer that
    /// restarted empty, a wrong backend).
    pub lb_empty_read: f64,
    /// Every balancer call takes this long.
    pub lb_slow: Duration,
    /// A call (compute, balancer or probe) hangs for `hang_time` before it
    /// takes effect.
    pub hang: f64,
    /// How long a hung call hangs.
    pub hang_time: Duration,
    /// A call (compute, balancer or probe) is slow: it takes effect after
    /// a delay between one second and `slow_time`, longer than what is
    /// left of a lease now and then.
    pub slow: f64,
    /// Longest delay of a slow call.
    pub slow_time: Duration,
    /// A server dies some time after it boots.
    pub member_death: f64,
    /// A started server reports its start as its launch time (as EC2 does).
    pub start_resets_launch_time: bool,
    /// A smoke test of a good server fails now and then.
    pub flaky_smoke: f64,
    /// A store commit starts an outage of the store that lasts up to
    /// `store_outage` (commits fail; half of those that fail landed).
    pub store_blip: f64,
    /// Longest store outage.
    pub store_outage: Duration,
    /// Releases whose smoke test fails.
    pub bad_releases: BTreeSet<ReleaseLabel>,
    /// Releases whose servers never pass health checks.
    pub unhealthy_releases: BTreeSet<ReleaseLabel>,
    /// Releases whose smoke test fails once this many of their servers
    /// passed it: a defect that shows only under part of the fleet.
    pub smoke_fails_after: BTreeMap<ReleaseLabel, u64>,
}

impl Faults {
    /// No faults at all.
    pub fn none() -> Self {
        Self {
            hang_time: Duration::from_secs(2 * 3600),
            slow_time: Duration::from_secs(90),
            store_outage: Duration::from_secs(5 * 60),
            ..Self::default()
        }
    }
}

/// The simulated cloud's behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Boot time, uniform between the two.
    pub boot_time: (Duration, Duration),
    /// Time from a live server's attach until the balancer calls it healthy.
    pub health_delay: Duration,
    /// Time from a server's death until the balancer calls it unhealthy.
    pub fall_delay: Duration,
    /// Time open connections take to finish once a member drains.
    pub drain_time: Duration,
    /// Latency of every API call.
    pub api_latency: Duration,
    /// How long new servers may be invisible (declared to Phoenix).
    pub consistency_window: Duration,
    /// Dying servers die within this long after booting.
    pub death_horizon: Duration,
    /// Launch requests per call.
    pub max_launch_batch: usize,
    /// Ids per describe call (a longer call is refused, as real APIs do).
    pub max_describe_batch: usize,
    /// Servers per terminate call (1: one call per server).
    pub max_terminate_batch: usize,
    /// Whether the balancer re-activates a draining member on attach
    /// (false: like ELBv2, attach fails temporarily until it drained).
    pub reactivates_draining: bool,
    /// Whether the balancer stages members and swaps atomically (ELBv2's
    /// two target groups behind a weighted listener).
    pub stages: bool,
    /// Whether the balancer keeps standby members under its checks (the
    /// embedded balancer, HAProxy, ELBv2's idle group).
    pub keeps_standby: bool,
    /// How often the balancer's checks run.
    pub check_interval: Duration,
    /// Whether servers can be stopped and started.
    pub stop_start: bool,
    /// Whether the provider deduplicates launches by token (and refuses a
    /// token reused with a different payload, as EC2 does).
    pub idempotent_launch: bool,
    /// The boot format it takes.
    pub boot_format: BootFormat,
    /// Longest time a drain hook takes (with [`super::SimCloud::hooks`]).
    pub hook_time: Duration,
    /// Faults.
    pub faults: Faults,
    /// The traffic its balancer measures (for canary gates).
    pub traffic: super::traffic::SimTraffic,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            boot_time: (Duration::from_secs(240), Duration::from_secs(300)),
            health_delay: Duration::from_secs(10),
            fall_delay: Duration::from_secs(10),
            drain_time: Duration::from_secs(5),
            api_latency: Duration::ZERO,
            consistency_window: Duration::from_secs(30),
            death_horizon: Duration::from_secs(3600),
            max_launch_batch: 100,
            max_describe_batch: 1000,
            max_terminate_batch: 1,
            reactivates_draining: true,
            stages: false,
            keeps_standby: false,
            check_interval: Duration::from_secs(5),
            stop_start: true,
            idempotent_launch: false,
            boot_format: BootFormat::Local,
            hook_time: Duration::from_secs(90),
            faults: Faults::none(),
            traffic: super::traffic::SimTraffic::default(),
        }
    }
}

/// Call counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Launch calls.
    pub launch_calls: u64,
    /// Servers created.
    pub servers_launched: u64,
    /// Describe calls.
    pub describe_calls: u64,
    /// Describe calls per moment (ms since start): one entry per polling
    /// round.
    pub describe_rounds: BTreeMap<u64, u64>,
    /// List calls.
    pub list_calls: u64,
    /// Terminate calls.
    pub terminate_calls: u64,
    /// Stop calls.
    pub stop_calls: u64,
    /// Start calls.
    pub start_calls: u64,
    /// Balancer calls.
    pub lb_calls: u64,
    /// Probe calls.
    pub probe_calls: u64,
    /// Hook calls.
    pub hook_calls: u64,
    /// Faults injected.
    pub faults_injected: u64,
}

impl SimStats {
    /// The most describe calls in one polling round, and the mean.
    pub fn describe_per_round(&self) -> (u64, f64) {
        let max = self.describe_rounds.values().copied().max().unwrap_or(0);
        let n = self.describe_rounds.len().max(1) as f64;
        (max, self.describe_calls as f64 / n)
    }
}
