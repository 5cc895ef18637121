//! What rollback capacity costs: the servers of retained pools (ready,
//! standby hot or cold, failed and retired pools not yet deleted), their
//! power state and an estimate from a per-flavor price table the user
//! supplies, and what a reap plan saves.
//!
//! Prices are estimates for operators (list prices per hour), kept as
//! `f64` and shown rounded to cents; nothing here bills anyone. Power
//! state comes from the records (the slot's state as the last operation
//! saw it), so the cost is known without a cloud call.
//!
//! ```
//! use phoenix_core::cost::{FlavorPrice, PriceTable};
//! let prices = PriceTable::new("USD")
//!     .with_flavor("general1-2", FlavorPrice::running(0.08).stopped(0.01));
//! assert_eq!(prices.per_hour(Some("general1-2"), phoenix_core::cost::PowerState::Stopped), Some(0.01));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Pool, PoolState, SlotState};
use crate::plan::{Plan, Step};
use crate::records::Snapshot;

/// Hours in an average month (365 × 24 / 12), the way cloud price pages
/// turn an hourly price into a monthly one.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// A price table that is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("price table: {what}: {why}")]
pub struct PriceError {
    /// The entry.
    pub what: String,
    /// What is wrong with it.
    pub why: String,
}

/// The hourly price of one flavor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlavorPrice {
    /// Per hour while running.
    pub running_per_hour: f64,
    /// Per hour while stopped (storage, reserved addresses); `None` uses
    /// the table's default for stopped servers.
    pub stopped_per_hour: Option<f64>,
}

impl FlavorPrice {
    /// A running price, no stopped price of its own.
    pub fn running(per_hour: f64) -> Self {
        Self {
            running_per_hour: per_hour,
            stopped_per_hour: None,
        }
    }

    /// With a price while stopped.
    pub fn stopped(mut self, per_hour: f64) -> Self {
        self.stopped_per_hour = Some(per_hour);
        self
    }
}

/// Prices per flavor, in one currency, as the user supplies them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceTable {
    /// The currency, as it should print (`USD`, `EUR`, …).
    pub currency: String,
    /// Flavor name → price.
    pub flavors: BTreeMap<String, FlavorPrice>,
    /// Per hour for a stopped server whose flavor has no stopped price
    /// (default 0: a stopped server costs nothing unless said otherwise).
    pub stopped_per_hour: f64,
}

impl PriceTable {
    /// An empty table in a currency.
    pub fn new(currency: impl Into<String>) -> Self {
        Self {
            currency: currency.into(),
            flavors: BTreeMap::new(),
            stopped_per_hour: 0.0,
        }
    }

    /// With one flavor's price.
    pub fn with_flavor(mut self, flavor: impl Into<String>, price: FlavorPrice) -> Self {
        self.flavors.insert(flavor.into(), price);
        self
    }

    /// With the default price of a stopped server.
    pub fn with_stopped_default(mut self, per_hour: f64) -> Self {
        self.stopped_per_hour = per_hour;
        self
    }

    /// Refuses negative, infinite or NaN prices and an empty currency.
    pub fn validate(&self) -> Result<(), PriceError> {
        let check = |what: String, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(PriceError {
                    what,
                    why: format!("{v} is not a price (a finite number, 0 or more)"),
                })
            }
        };
        if self.currency.trim().is_empty() {
            return Err(PriceError {
                what: "currency".into(),
                why: "must not be empty".into(),
            });
        }
        check("stopped_per_hour".into(), self.stopped_per_hour)?;
        for (name, p) in &self.flavors {
            check(format!("{name}.running_per_hour"), p.running_per_hour)?;
            if let Some(s) = p.stopped_per_hour {
                check(format!("{name}.stopped_per_hour"), s)?;
            }
        }
        Ok(())
    }

    /// The hourly price of a server of `flavor` in `power`, or `None` when
    /// the table does not price a running server of that flavor.
    pub fn per_hour(&self, flavor: Option<&str>, power: PowerState) -> Option<f64> {
        match power {
            PowerState::Running => Some(self.flavors.get(flavor?)?.running_per_hour),
            PowerState::Stopped => Some(
                flavor
                    .and_then(|f| self.flavors.get(f))
                    .and_then(|p| p.stopped_per_hour)
                    .unwrap_or(self.stopped_per_hour),
            ),
        }
    }
}

/// A retained server's power state, by the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// Running (or booting): billed at the running price.
    Running,
    /// Stopped (cold standby): billed at the stopped price.
    Stopped,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
        })
    }
}

/// One retained server and its estimated price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerCost {
    /// The server (or `slot N` before it has an id).
    pub server: String,
    /// Running or stopped.
    pub power: PowerState,
    /// Per hour, `None` when its flavor has no price.
    pub per_hour: Option<f64>,
}

/// What one retained (non-live) pool costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionCost {
    /// The pool.
    pub pool: String,
    /// Its release.
    pub release: String,
    /// Its role.
    pub role: String,
    /// Its state (`standby(hot)`, `standby(cold)`, `ready`, `failed`, …).
    pub state: String,
    /// The role's flavor, if it names one.
    pub flavor: Option<String>,
    /// Its servers.
    pub servers: Vec<ServerCost>,
    /// Servers running.
    pub running: usize,
    /// Servers stopped.
    pub stopped: usize,
    /// Estimated per hour (priced servers only).
    pub per_hour: f64,
    /// Estimated per month ([`HOURS_PER_MONTH`] hours).
    pub per_month: f64,
    /// True when some server's flavor has no price (the estimate is low).
    pub incomplete: bool,
}

/// What rollback capacity costs across retained pools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostReport {
    /// The currency of every amount.
    pub currency: String,
    /// One entry per retained pool, newest first.
    pub pools: Vec<RetentionCost>,
    /// Total per hour.
    pub per_hour: f64,
    /// Total per month.
    pub per_month: f64,
    /// Flavors the table does not price (their running servers count 0).
    pub unpriced_flavors: Vec<String>,
}

/// True for pools that are kept but serve nothing: what rollback capacity
/// (and what is left to reap) consists of.
pub fn is_retained(state: PoolState) -> bool {
    matches!(
        state,
        PoolState::Ready | PoolState::Standby { .. } | PoolState::Failed | PoolState::Retired
    )
}

fn power_of(state: SlotState) -> Option<PowerState> {
    match state {
        SlotState::Requested | SlotState::Booting | SlotState::Running => Some(PowerState::Running),
        SlotState::Stopped => Some(PowerState::Stopped),
        SlotState::Pending | SlotState::Terminated | SlotState::Abandoned => None,
    }
}

fn flavor_of<'a>(snap: &'a Snapshot, pool: &Pool) -> Option<&'a str> {
    snap.deployment()
        .roles
        .get(&pool.role)
        .and_then(|r| r.flavor.as_deref())
}

/// The cost of one pool's servers, whatever its state.
pub fn pool_cost(snap: &Snapshot, pool: &Pool, prices: &PriceTable) -> RetentionCost {
    let flavor = flavor_of(snap, pool);
    let servers: Vec<ServerCost> = pool
        .in_service()
        .filter_map(|s| {
            let power = power_of(s.state)?;
            Some(ServerCost {
                server: s
                    .server
                    .as_ref()
                    .map_or_else(|| format!("slot {}", s.index), |id| id.to_string()),
                power,
                per_hour: prices.per_hour(flavor, power),
            })
        })
        .collect();
    let per_hour: f64 = servers.iter().filter_map(|s| s.per_hour).sum();
    RetentionCost {
        pool: pool.id.to_string(),
        release: pool.release.to_string(),
        role: pool.role.to_string(),
        state: pool.state.to_string(),
        flavor: flavor.map(str::to_owned),
        running: servers
            .iter()
            .filter(|s| s.power == PowerState::Running)
            .count(),
        stopped: servers
            .iter()
            .filter(|s| s.power == PowerState::Stopped)
            .count(),
        incomplete: servers.iter().any(|s| s.per_hour.is_none()),
        servers,
        per_hour,
        per_month: per_hour * HOURS_PER_MONTH,
    }
}

/// The cost of every retained pool of the deployment (of every role).
pub fn retention_cost(snap: &Snapshot, prices: &PriceTable) -> CostReport {
    let mut pools: Vec<&Pool> = snap
        .pools
        .values()
        .map(|p| &p.value)
        .filter(|p| is_retained(p.state))
        .collect();
    pools.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    let costs: Vec<RetentionCost> = pools
        .iter()
        .map(|p| pool_cost(snap, p, prices))
        .filter(|c| !c.servers.is_empty())
        .collect();
    let unpriced: BTreeSet<String> = costs
        .iter()
        .filter(|c| c.incomplete)
        .map(|c| c.flavor.clone().unwrap_or_else(|| "(no flavor)".into()))
        .collect();
    let per_hour = costs.iter().map(|c| c.per_hour).sum();
    CostReport {
        currency: prices.currency.clone(),
        pools: costs,
        per_hour,
        per_month: per_hour * HOURS_PER_MONTH,
        unpriced_flavors: unpriced.into_iter().collect(),
    }
}

/// What applying a reap plan saves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReapSavings {
    /// The currency.
    pub currency: String,
    /// Pools the plan deletes, with what they cost now per hour.
    pub deleted: Vec<PoolSaving>,
    /// Pools the plan stops (cold standby), with the difference per hour.
    pub stopped: Vec<PoolSaving>,
    /// Saved per hour.
    pub per_hour: f64,
    /// Saved per month.
    pub per_month: f64,
}

/// One pool's share of a reap's savings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSaving {
    /// The pool.
    pub pool: String,
    /// Servers concerned.
    pub servers: usize,
    /// Saved per hour.
    pub per_hour: f64,
}

/// What a reap `plan` saves against the records in `snap`: every deleted
/// pool's whole cost, and for every stopped server the difference between
/// its running and its stopped price.
pub fn reap_savings(snap: &Snapshot, plan: &Plan, prices: &PriceTable) -> ReapSavings {
    let mut deleted = Vec::new();
    let mut stopped: BTreeMap<String, PoolSaving> = BTreeMap::new();
    for step in &plan.steps {
        match step {
            Step::DeletePool { pool } => {
                if let Some(p) = snap.pool(pool) {
                    let c = pool_cost(snap, p, prices);
                    deleted.push(PoolSaving {
                        pool: pool.to_string(),
                        servers: c.servers.len(),
                        per_hour: c.per_hour,
                    });
                }
            }
            Step::Stop { pool, slots } => {
                let Some(p) = snap.pool(pool) else { continue };
                let flavor = flavor_of(snap, p);
                let running = prices.per_hour(flavor, PowerState::Running).unwrap_or(0.0);
                let idle = prices.per_hour(flavor, PowerState::Stopped).unwrap_or(0.0);
                let n = p
                    .in_service()
                    .filter(|s| slots.contains(&s.index))
                    .filter(|s| power_of(s.state) == Some(PowerState::Running))
                    .count();
                let e = stopped.entry(pool.to_string()).or_insert(PoolSaving {
                    pool: pool.to_string(),
                    servers: 0,
                    per_hour: 0.0,
                });
                e.servers += n;
                // usize → f64 is exact for any server count.
                #[allow(clippy::cast_precision_loss)]
                let saved = (running - idle).max(0.0) * n as f64;
                e.per_hour += saved;
            }
            _ => {}
        }
    }
    let stopped: Vec<PoolSaving> = stopped.into_values().collect();
    let per_hour: f64 = deleted
        .iter()
        .chain(stopped.iter())
        .map(|s| s.per_hour)
        .sum();
    ReapSavings {
        currency: prices.currency.clone(),
        deleted,
        stopped,
        per_hour,
        per_month: per_hour * HOURS_PER_MONTH,
    }
}

/// An amount as it prints: two decimals and the currency.
pub fn money(amount: f64, currency: &str) -> String {
    format!("{amount:.2} {currency}")
}

impl fmt::Display for CostReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "rollback capacity: {} pool(s), {}/h, {}/month",
            self.pools.len(),
            money(self.per_hour, &self.currency),
            money(self.per_month, &self.currency)
        )?;
        for p in &self.pools {
            writeln!(
                f,
                "  pool {} ({}, {}): {} running, {} stopped, {}: {}/h, {}/month{}",
                p.pool,
                p.release,
                p.state,
                p.running,
                p.stopped,
                p.flavor.as_deref().unwrap_or("no flavor"),
                money(p.per_hour, &self.currency),
                money(p.per_month, &self.currency),
                if p.incomplete {
                    " (unpriced servers)"
                } else {
                    ""
                }
            )?;
        }
        if !self.unpriced_flavors.is_empty() {
            writeln!(f, "  no price for: {}", self.unpriced_flavors.join(", "))?;
        }
        Ok(())
    }
}

impl fmt::Display for ReapSavings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reaping saves {}/h ({}/month)",
            money(self.per_hour, &self.currency),
            money(self.per_month, &self.currency)
        )?;
        let parts: Vec<String> = self
            .deleted
            .iter()
            .map(|d| {
                format!(
                    "delete {} ({} server(s)): {}/h",
                    d.pool,
                    d.servers,
                    money(d.per_hour, &self.currency)
                )
            })
            .chain(self.stopped.iter().map(|s| {
                format!(
                    "stop {} ({} server(s)): {}/h",
                    s.pool,
                    s.servers,
                    money(s.per_hour, &self.currency)
                )
            }))
            .collect();
        if !parts.is_empty() {
            write!(f, ": {}", parts.join("; "))?;
        }
        Ok(())
    }
}
