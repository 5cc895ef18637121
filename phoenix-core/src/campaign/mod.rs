//! Fleet campaigns: one change — a new base image, any new release — rolled
//! out across many deployments, environments and roles.
//!
//! A [`CampaignSpec`] names the target release of each (deployment, role),
//! the failure domain of each deployment (an availability zone, region or
//! site), the order of environments (staging first), a fleet-wide
//! replacement budget ([`FleetBudget`]: servers at once and per window), a
//! capacity floor, a deadline and `max_age`.
//!
//! - [`Campaign::plan`] orders the work into [`Wave`]s: environment order
//!   first, then one failure domain at a time, each wave within the budget.
//! - [`Campaign::run`] runs wave after wave through the ordinary Phoenix
//!   operations (blue-green deploy or rolling replacement, under every
//!   guard of the executor), waits for each wave's health, and halts
//!   everywhere at the first failed wave, rolling that wave's units back
//!   through the normal rollback. Its progress is one record in the state
//!   store, written after every unit: a restarted process calling `run`
//!   again resumes the wave it was in (finishing an interrupted operation
//!   first) and never redoes a finished wave.
//! - [`Campaign::report`] tells per deployment what is done and what
//!   remains, the projected completion against the deadline (from the
//!   budget and the observed wave durations), and the servers that will
//!   exceed `max_age` if nothing changes.
//! - [`renew_aged`] is the scheduled mode: one tick (from cron or a loop)
//!   renews the fleet's servers older than `max_age`, oldest first, within
//!   a budget, through refresh. It never waits on a deployment's lease, and
//!   an incident's [`crate::Phoenix::emergency_rollback`] pre-empts its
//!   refresh at the next safe point.
//!
//! Nothing here holds a deployment's lease itself: every change is an
//! executor operation, so one writer per deployment and pre-emption by an
//! emergency hold as for any operation. Waiting goes through `tokio::time`.
//!
//! ```
//! # #[cfg(feature = "sim")]
//! # {
//! use std::time::Duration;
//! use phoenix_core::campaign::{Campaign, CampaignSpec};
//! use phoenix_core::sim::{SimCloud, SimConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! let cloud = SimCloud::new(SimConfig::default());
//! let phoenix = cloud.phoenix_with_roles("ops", &["web", "api"]).build().unwrap();
//! // Four deployments (the first in staging), roles web and api, 2 servers
//! // each, serving v1; releases v1 and v2 recorded.
//! let fleet = cloud.demo_fleet(&phoenix, 4, &["web", "api"], 2).await.unwrap();
//! let v2 = "v2".parse().unwrap();
//! let deadline = cloud.now() + chrono::Duration::days(1);
//! let mut spec = CampaignSpec::new(
//!     "base-image-2030-01",
//!     vec!["staging".parse().unwrap(), "prod".parse().unwrap()],
//!     deadline,
//!     Duration::from_secs(14 * 86_400),
//! );
//! for (i, d) in fleet.iter().enumerate() {
//!     let zone = format!("az-{}", i % 2);
//!     spec = spec.target(d.id.clone(), zone, d.roles.keys().cloned(), &v2);
//! }
//! let campaign = Campaign::new(&phoenix, spec);
//! println!("{}", campaign.plan().await.unwrap());
//! let report = campaign.run().await.unwrap();
//! assert!(report.is_completed());
//! println!("{report}");
//! # });
//! # }
//! ```

mod plan;
mod renew;
mod report;
mod run;
mod spec;
pub mod state;

use std::time::Duration;

use crate::id::{DeploymentId, EnvironmentName, RoleName};
use crate::ops::PlanningError;
use crate::ports::{PortError, StoreError};
use crate::records::RecordError;
use crate::Phoenix;

pub use plan::{plan_waves, CampaignPlan, Unit, Wave};
pub use renew::{
    renew_aged, renew_aged_with, RenewOptions, RenewOutcome, RenewReport, RenewedRole,
};
pub use report::{AgingServer, CampaignReport, DeploymentProgress, WaveSummary};
pub use spec::{CampaignSpec, CampaignTarget, FleetBudget, Method};
pub use state::{CampaignRecord, CampaignStatus, UnitRecord, UnitStatus, WaveRecord, WaveStatus};

/// Why a campaign could not be planned, run or reported. A failed wave is
/// not an error: it halts the campaign, and the report says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignError {
    /// The spec contradicts itself.
    #[error("invalid campaign: {0}")]
    InvalidSpec(String),
    /// A target deployment is not registered.
    #[error("deployment {0} is not registered")]
    UnknownDeployment(DeploymentId),
    /// A target role is not a role of its deployment.
    #[error("role {role} is not a role of deployment {deployment}")]
    UnknownRole {
        /// Deployment.
        deployment: DeploymentId,
        /// Role.
        role: RoleName,
    },
    /// A deployment's environment is missing from the environment order.
    #[error("deployment {deployment} is in environment {environment}, which the campaign's environment order does not list")]
    UnorderedEnvironment {
        /// Deployment.
        deployment: DeploymentId,
        /// Its environment.
        environment: EnvironmentName,
    },
    /// A unit alone exceeds the fleet budget.
    #[error("role {role} of {deployment} has {servers} servers, more than the {budget} a wave may replace")]
    UnitTooLarge {
        /// Deployment.
        deployment: DeploymentId,
        /// Role.
        role: RoleName,
        /// Its size.
        servers: usize,
        /// The budget.
        budget: usize,
    },
    /// The stored campaign was started with another spec.
    #[error("campaign {name} was started with another spec (fingerprint {stored}); give a changed campaign a new name")]
    SpecChanged {
        /// Campaign.
        name: String,
        /// The stored spec's fingerprint.
        stored: String,
    },
    /// The stored record does not fit its own plan (edited by hand, or
    /// written by an incompatible version).
    #[error("campaign {name}'s record is inconsistent: {detail}")]
    Corrupt {
        /// Campaign.
        name: String,
        /// What does not fit.
        detail: String,
    },
    /// Another process wrote the campaign's record meanwhile.
    #[error("campaign {0} was updated by another process; only one may run it")]
    Conflict(String),
    /// No campaign by that name was started.
    #[error("campaign {0} was never started")]
    NotStarted(String),
    /// Reading fresh state failed (the capacity floor fails closed).
    #[error("reading {what} failed")]
    Read {
        /// What was read.
        what: String,
        /// Why.
        #[source]
        source: PortError,
    },
    /// Planning a unit's operation failed.
    #[error("planning {what} of {deployment}/{role} failed")]
    Planning {
        /// Operation.
        what: &'static str,
        /// Deployment.
        deployment: DeploymentId,
        /// Role.
        role: RoleName,
        /// Why.
        #[source]
        source: Box<PlanningError>,
    },
    /// The records failed.
    #[error(transparent)]
    Records(#[from] RecordError),
}

impl From<StoreError> for CampaignError {
    fn from(e: StoreError) -> Self {
        Self::Records(e.into())
    }
}

/// How long a campaign waits for what others hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// How long a unit waits for a busy deployment (another operation, a
    /// crashed process's lease until it lapses) before it fails.
    pub busy_wait: Duration,
    /// How long a wave waits for the fleet to be back above the capacity
    /// floor before the campaign halts.
    pub floor_wait: Duration,
    /// Polling interval of those waits.
    pub poll: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            busy_wait: Duration::from_secs(15 * 60),
            floor_wait: Duration::from_secs(15 * 60),
            poll: Duration::from_secs(10),
        }
    }
}

/// Which [`Phoenix`] operates each (deployment, role), for a fleet whose
/// deployments and roles are not all behind one (each has its provider
/// and balancer, as the `phoenix` command composes them). Every one must
/// share the campaign's state store.
pub trait Operators: Send + Sync {
    /// The Phoenix for `role` of `deployment`; `None`: the campaign's own.
    fn for_unit(&self, deployment: &DeploymentId, role: &RoleName) -> Option<&Phoenix>;
}

/// A campaign over one [`Phoenix`] (or one per unit, [`Operators`]): plan,
/// run (or resume), report.
pub struct Campaign<'a> {
    phoenix: &'a Phoenix,
    operators: Option<&'a dyn Operators>,
    spec: CampaignSpec,
    options: RunOptions,
}

impl std::fmt::Debug for Campaign<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Campaign")
            .field("spec", &self.spec.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<'a> Campaign<'a> {
    /// A campaign of `spec` over `phoenix`.
    pub fn new(phoenix: &'a Phoenix, spec: CampaignSpec) -> Self {
        Self {
            phoenix,
            operators: None,
            spec,
            options: RunOptions::default(),
        }
    }

    /// Operates each unit through the Phoenix `operators` gives (records
    /// and the campaign's own progress still go through the first one).
    pub fn with_operators(mut self, operators: &'a dyn Operators) -> Self {
        self.operators = Some(operators);
        self
    }

    /// The Phoenix that operates a unit.
    fn on(&self, deployment: &DeploymentId, role: &RoleName) -> &'a Phoenix {
        self.operators
            .and_then(|o| o.for_unit(deployment, role))
            .unwrap_or(self.phoenix)
    }

    /// Other waiting limits.
    pub fn with_options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// The spec.
    pub fn spec(&self) -> &CampaignSpec {
        &self.spec
    }

    /// Plans the waves from the registered deployments (a dry run:
    /// nothing changes). A running campaign keeps the plan it started with
    /// ([`state::CampaignRecord::plan`]).
    pub async fn plan(&self) -> Result<CampaignPlan, CampaignError> {
        self.spec.validate()?;
        let mut deployments = Vec::with_capacity(self.spec.targets.len());
        for t in &self.spec.targets {
            let snap = match self.phoenix.snapshot(&t.deployment).await {
                Ok(s) => s,
                Err(RecordError::UnknownDeployment(d)) => {
                    return Err(CampaignError::UnknownDeployment(d))
                }
                Err(e) => return Err(e.into()),
            };
            deployments.push(snap.deployment().clone());
        }
        plan_waves(&self.spec, &deployments)
    }

    /// The stored record, if the campaign was started.
    pub async fn record(&self) -> Result<Option<CampaignRecord>, CampaignError> {
        Ok(state::load(self.phoenix.records(), &self.spec.name)
            .await?
            .map(|s| s.value))
    }
}
