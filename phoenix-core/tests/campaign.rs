//! Fleet campaigns on the simulated cloud, under the paused clock: waves,
//! the halt at the first failed wave and its rollback, crash and resume,
//! a 30-day campaign with the scheduled renewal, and the renewal tick
//! pre-empted by an incident rollback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use phoenix_core::campaign::{
    plan_waves, renew_aged, Campaign, CampaignError, CampaignSpec, CampaignStatus, RenewOptions,
    RenewOutcome, RunOptions, UnitStatus, WaveStatus,
};
use phoenix_core::id::{DeploymentId, ReleaseLabel, RoleName};
use phoenix_core::model::{Deployment, Environment, Role};
use phoenix_core::plan::OperationKind;
use phoenix_core::sim::{Faults, SimCloud, SimConfig};
use phoenix_core::time::elapsed_between;
use phoenix_core::Phoenix;

const ROLES: [&str; 3] = ["api", "web", "worker"];
const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3600);

fn r(s: &str) -> ReleaseLabel {
    ReleaseLabel::new(s).unwrap()
}

/// Failure domains of the 10-deployment fleet: staging in one site, prod
/// in three zones.
fn domain(i: usize) -> &'static str {
    match i {
        0 | 1 => "stg-1",
        2..=4 => "az-a",
        5..=7 => "az-b",
        _ => "az-c",
    }
}

fn spec_for(fleet: &[Deployment], name: &str, cloud: &SimCloud) -> CampaignSpec {
    let mut spec = CampaignSpec::new(
        name,
        vec!["staging".parse().unwrap(), "prod".parse().unwrap()],
        cloud.now() + chrono::Duration::days(2),
        14 * DAY,
    );
    spec.budget.max_in_flight = 12;
    spec.budget.per_window = 60;
    spec.budget.window = HOUR;
    for (i, d) in fleet.iter().enumerate() {
        spec = spec.target(d.id.clone(), domain(i), d.roles.keys().cloned(), &r("v2"));
    }
    spec
}

async fn fleet(config: SimConfig) -> (SimCloud, Phoenix, Vec<Deployment>) {
    let cloud = SimCloud::new(config);
    let phoenix = cloud
        .phoenix_with_roles("sim-orchestrator", &ROLES)
        .build()
        .unwrap();
    let fleet = cloud.demo_fleet(&phoenix, 10, &ROLES, 2).await.unwrap();
    (cloud, phoenix, fleet)
}

/// The release each role of a deployment serves, by the records.
async fn serving(phoenix: &Phoenix, d: &DeploymentId) -> BTreeMap<String, String> {
    let snap = phoenix.snapshot(d).await.unwrap();
    snap.deployment()
        .roles
        .keys()
        .map(|role| {
            (
                role.to_string(),
                snap.live_pool(role)
                    .map_or("-".into(), |p| p.release.to_string()),
            )
        })
        .collect()
}

fn all(release: &str) -> BTreeMap<String, String> {
    ["api", "web", "worker"]
        .into_iter()
        .map(|r| (r.to_owned(), release.to_owned()))
        .collect()
}

#[test]
fn waves_go_staging_first_one_failure_domain_at_a_time_within_the_budget() {
    let env = |n: &str| Environment::new(n.parse().unwrap(), n == "prod");
    let roles = ["api", "web", "worker"];
    // Prod listed first on purpose: the environment order decides.
    let fleet: Vec<Deployment> = (0..10)
        .rev()
        .map(|i| {
            let mut d = Deployment::new(
                DeploymentId::new(format!("d{i:02}")).unwrap(),
                env(if i < 2 { "staging" } else { "prod" }),
            );
            for role in roles {
                d = d.with_role(Role::new(RoleName::new(role).unwrap(), 2));
            }
            d
        })
        .collect();
    let mut spec = CampaignSpec::new(
        "c",
        vec!["staging".parse().unwrap(), "prod".parse().unwrap()],
        chrono::DateTime::from_timestamp(0, 0).unwrap(),
        DAY,
    );
    spec.budget.max_in_flight = 12;
    for d in &fleet {
        let i: usize = d.id.as_str()[1..].parse().unwrap();
        spec = spec.target(d.id.clone(), domain(i), d.roles.keys().cloned(), &r("v2"));
    }
    let plan = plan_waves(&spec, &fleet).unwrap();
    println!("{plan}");
    assert_eq!(plan.servers(), 60);
    assert_eq!(plan.fleet_servers, 60);
    assert_eq!(plan.waves[0].environment.as_str(), "staging");
    let mut seen_prod = false;
    let mut domains_done: Vec<&str> = Vec::new();
    for w in &plan.waves {
        assert!(w.servers() <= 12, "wave {} has {}", w.index, w.servers());
        seen_prod |= w.environment.as_str() == "prod";
        assert!(!(seen_prod && w.environment.as_str() == "staging"));
        for u in &w.units {
            let i: usize = u.deployment.as_str()[1..].parse().unwrap();
            assert_eq!(domain(i), w.failure_domain, "a wave mixes domains");
        }
        // A failure domain, once left, is never returned to.
        if domains_done.last() != Some(&w.failure_domain.as_str()) {
            assert!(!domains_done.contains(&w.failure_domain.as_str()));
            domains_done.push(&w.failure_domain);
        }
    }

    // A role bigger than a wave may replace is refused before anything runs.
    spec.budget.max_in_flight = 1;
    assert!(matches!(
        plan_waves(&spec, &fleet),
        Err(CampaignError::UnitTooLarge { servers: 2, .. })
    ));
    // An environment the order does not list is refused.
    spec.budget.max_in_flight = 12;
    spec.environment_order = vec!["prod".parse().unwrap()];
    assert!(matches!(
        plan_waves(&spec, &fleet),
        Err(CampaignError::UnorderedEnvironment { .. })
    ));
}

/// 10 deployments × 3 roles; the new release's smoke test starts failing
/// once 32 of its servers passed it (a defect that shows only under part of
/// the fleet), which is in wave 3. The campaign halts there: no later wave
/// starts, the wave's units that had moved are rolled back, the waves
/// before keep v2, and the report says so.
#[tokio::test(start_paused = true)]
async fn a_failed_wave_halts_the_campaign_everywhere_and_is_rolled_back() {
    let (cloud, phoenix, fleet) = fleet(SimConfig::default()).await;
    let mut faults = Faults::none();
    faults.smoke_fails_after.insert(r("v2"), 32);
    cloud.set_faults(faults);
    let campaign = Campaign::new(&phoenix, spec_for(&fleet, "halt", &cloud));
    let before: Vec<usize> = {
        let mut v = Vec::new();
        for d in &fleet {
            v.push(
                phoenix
                    .snapshot(&d.id)
                    .await
                    .unwrap()
                    .record
                    .value
                    .operations
                    .len(),
            );
        }
        v
    };
    let plan = campaign.plan().await.unwrap();
    assert_eq!(plan.waves.len(), 6);
    let report = campaign.run().await.unwrap();
    println!("{report}");

    assert_eq!(report.halted_at(), Some(3), "{:?}", report.status);
    let record = campaign.record().await.unwrap().unwrap();
    for w in 0..3 {
        assert_eq!(record.waves[w].status, WaveStatus::Succeeded);
    }
    assert_eq!(record.waves[3].status, WaveStatus::RolledBack);
    for w in 4..6 {
        assert_eq!(record.waves[w].status, WaveStatus::Pending);
        assert!(record.waves[w].started_at.is_none());
    }
    // Waves 0-2 (d00-d04) serve v2; the failed wave (d05, d06) and every
    // later one (d07-d09) serve v1 on every role.
    for (i, d) in fleet.iter().enumerate() {
        let want = if i < 5 { "v2" } else { "v1" };
        assert_eq!(serving(&phoenix, &d.id).await, all(want), "{}", d.id);
    }
    // Nothing was even tried after the halt.
    for (i, d) in fleet.iter().enumerate().skip(7) {
        let ops = phoenix
            .snapshot(&d.id)
            .await
            .unwrap()
            .record
            .value
            .operations
            .len();
        assert_eq!(ops, before[i], "{} was touched after the halt", d.id);
    }
    // The failed wave: some unit failed, some had moved and was rolled back
    // through the normal rollback.
    let units = &record.waves[3].units;
    assert!(units.iter().any(|u| u.status == UnitStatus::Failed));
    assert!(units
        .iter()
        .any(|u| u.status == UnitStatus::RolledBack && u.rollback.is_some()));
    assert!(!report.waves[3].rolled_back.is_empty());
    assert!(!report.waves[3].failed.is_empty());
    let d05 = report
        .deployments
        .iter()
        .find(|d| d.deployment.as_str() == "d05")
        .unwrap();
    assert!(d05.done.is_empty() && d05.remaining.len() == 3);
    assert_eq!(d05.completion, None, "a halted deployment never completes");
    // Running it again does nothing: a halted campaign only reports.
    let again = campaign.run().await.unwrap();
    assert_eq!(again.status, report.status);
    let v = cloud.violations();
    assert!(v.is_empty(), "{v:#?}");
}

/// The orchestrator dies in wave 2 (its future dropped mid-operation); a
/// new process runs the same campaign: it finishes the interrupted
/// operation, continues wave 2, and never redoes waves 0 and 1.
#[tokio::test(start_paused = true)]
async fn a_crashed_campaign_resumes_the_wave_it_was_in() {
    let (cloud, phoenix, fleet) = fleet(SimConfig::default()).await;
    let spec = spec_for(&fleet, "crash", &cloud);
    let campaign = Campaign::new(&phoenix, spec.clone());
    let crashed = tokio::select! {
        r = campaign.run() => Some(r),
        () = async {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if let Some(rec) = campaign.record().await.unwrap() {
                    if rec.waves[2].units.iter().any(|u| u.status == UnitStatus::Done) {
                        return;
                    }
                }
            }
        } => None,
    };
    assert!(crashed.is_none(), "the campaign finished before the crash");
    drop(campaign);
    let at_crash = campaign_ops(&phoenix, &fleet).await;
    let rec = Campaign::new(&phoenix, spec.clone())
        .record()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.waves[2].status, WaveStatus::Running);

    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarted = cloud
        .phoenix_with_roles("restarted", &ROLES)
        .build()
        .unwrap();
    let resumed = Campaign::new(&restarted, spec).with_options(RunOptions {
        busy_wait: Duration::from_secs(600),
        ..RunOptions::default()
    });
    let report = resumed.run().await.unwrap();
    println!("{report}");
    assert!(report.is_completed(), "{:?}", report.status);
    assert_eq!(report.resumes, 1);
    let after = campaign_ops(&phoenix, &fleet).await;
    // Waves 0 and 1 (d00-d03) finished before the crash: not one operation
    // more on them.
    for i in 0..4 {
        assert_eq!(after[i], at_crash[i], "{} was redone", fleet[i].id);
    }
    for d in &fleet {
        assert_eq!(serving(&phoenix, &d.id).await, all("v2"), "{}", d.id);
        // One v2 pool per role: nothing was deployed twice.
        let snap = phoenix.snapshot(&d.id).await.unwrap();
        for role in snap.deployment().roles.keys() {
            let v2 = snap.pools_of(role).filter(|p| p.release == r("v2")).count();
            assert_eq!(v2, 1, "{}/{role}", d.id);
        }
    }
    let v = cloud.violations();
    assert!(v.is_empty(), "{v:#?}");
}

async fn campaign_ops(phoenix: &Phoenix, fleet: &[Deployment]) -> Vec<usize> {
    let mut out = Vec::new();
    for d in fleet {
        out.push(
            phoenix
                .snapshot(&d.id)
                .await
                .unwrap()
                .record
                .value
                .operations
                .len(),
        );
    }
    out
}

/// The oldest serving server's age now (ground truth from the cloud).
fn oldest_serving(cloud: &SimCloud) -> Duration {
    let serving: std::collections::BTreeSet<_> = ROLES
        .iter()
        .flat_map(|role| cloud.members_of(role))
        .filter(|m| m.is_serving_healthy())
        .map(|m| m.server)
        .collect();
    let now = cloud.now();
    cloud
        .servers()
        .iter()
        .filter(|s| serving.contains(&s.id))
        .filter_map(|s| s.launched_at)
        .map(|t| elapsed_between(t, now))
        .max()
        .unwrap_or_default()
}

/// A 30-day campaign: a fleet five days old, one deployment per wave, six
/// servers per two days; projected first (on time, and which servers pass
/// max_age before their wave), then run beside a daily renewal tick until
/// the deadline. At the deadline no serving server is older than max_age.
#[tokio::test(start_paused = true)]
async fn a_thirty_day_campaign_with_daily_renewal_keeps_every_server_under_max_age() {
    let (cloud, phoenix, fleet) = fleet(SimConfig::default()).await;
    tokio::time::sleep(5 * DAY).await;
    let start = cloud.now();
    let deadline = start + chrono::Duration::days(30);
    let mut spec = spec_for(&fleet, "thirty-days", &cloud);
    spec.deadline = deadline;
    spec.budget.max_in_flight = 6;
    spec.budget.per_window = 6;
    spec.budget.window = 2 * DAY;
    let campaign = Campaign::new(&phoenix, spec.clone()).with_options(RunOptions {
        busy_wait: 6 * HOUR,
        ..RunOptions::default()
    });
    let projected = campaign.report().await.unwrap();
    println!("{projected}");
    assert!(!projected.started);
    assert!(projected.on_time);
    let projected_end = projected.completion.unwrap();
    assert!(elapsed_between(start, projected_end) > 18 * DAY);
    // v1 servers launched five days ago pass 14 days at day 9: the five
    // deployments whose waves start after that pass it first.
    assert_eq!(projected.aging.len(), 30, "{:#?}", projected.aging);

    let ids: Vec<DeploymentId> = fleet.iter().map(|d| d.id.clone()).collect();
    let renew = RenewOptions {
        // Renew a day before max_age: the tick runs daily.
        max_age: spec.max_age - DAY - HOUR,
        max_servers: 12,
    };
    let (report, ticks) = tokio::join!(campaign.run(), async {
        let mut renewed = 0;
        while cloud.now() + chrono::Duration::days(1) <= deadline {
            tokio::time::sleep(DAY).await;
            let tick = renew_aged(&phoenix, &ids, &renew).await.unwrap();
            renewed += tick.renewed;
        }
        renewed
    });
    let report = report.unwrap();
    println!("{report}");
    assert!(report.is_completed());
    assert!(report.on_time);
    if cloud.now() < deadline {
        tokio::time::sleep(elapsed_between(cloud.now(), deadline)).await;
    }
    let oldest = oldest_serving(&cloud);
    println!(
        "projected end +{}, actual end +{}, renewed by ticks {ticks}, oldest serving server at the deadline {}",
        phoenix_core::time::human(elapsed_between(start, projected_end)),
        phoenix_core::time::human(elapsed_between(start, report.completion.unwrap())),
        phoenix_core::time::human(oldest)
    );
    assert!(ticks > 0);
    assert!(oldest > Duration::ZERO, "no serving server found");
    assert!(oldest <= spec.max_age, "oldest {oldest:?}");
    for d in &fleet {
        assert_eq!(serving(&phoenix, &d.id).await, all("v2"));
    }
    let v = cloud.violations();
    assert!(v.is_empty(), "{v:#?}");
}

/// A renewal tick whose refresh waits on its replacement budget is
/// pre-empted by an incident's emergency rollback: the rollback proceeds
/// at once and the tick reports the pre-emption.
#[tokio::test(start_paused = true)]
async fn an_incident_rollback_preempts_a_renewal_tick() {
    let cloud = SimCloud::new(SimConfig::default());
    let mut policy = cloud.policy();
    policy.refresh.max_replacements = 1;
    policy.refresh.window = HOUR;
    policy.rollout.batch_size = 1;
    policy.rollout.max_surge = 1;
    let phoenix = cloud.phoenix().policy(policy).build().unwrap();
    let fleet = cloud.demo_fleet(&phoenix, 2, &["web"], 3).await.unwrap();
    let web = RoleName::new("web").unwrap();
    let d = fleet[1].id.clone();
    let plan = phoenix.plan_deploy(&d, &web, &r("v2")).await.unwrap();
    phoenix.apply(plan).await.unwrap();
    tokio::time::sleep(2 * HOUR).await;

    let incident = cloud.phoenix_as("incident").build().unwrap();
    let options = RenewOptions {
        max_age: HOUR,
        max_servers: 10,
    };
    let ids = [d.clone()];
    let asked = std::sync::Mutex::new(None);
    let (tick, rolled_back) = tokio::join!(renew_aged(&phoenix, &ids, &options), async {
        // Once the tick's refresh waits on its budget for its second server.
        tokio::time::sleep(Duration::from_secs(15 * 60)).await;
        *asked.lock().unwrap() = Some(cloud.now());
        incident.emergency_rollback(&d, &web, None).await
    });
    let tick = tick.unwrap();
    println!("{tick:#?}");
    let rolled_back = rolled_back.unwrap();
    assert_eq!(rolled_back.kind, OperationKind::Rollback);
    let took = elapsed_between(asked.lock().unwrap().unwrap(), rolled_back.finished_at);
    assert!(
        took < Duration::from_secs(10 * 60),
        "the rollback waited {took:?}"
    );
    assert!(
        matches!(tick.roles[0].outcome, RenewOutcome::Preempted { .. }),
        "{:?}",
        tick.roles[0].outcome
    );
    assert_eq!(serving_one(&phoenix, &d, &web).await, "v1");
    let v = cloud.violations();
    assert!(v.is_empty(), "{v:#?}");
}

async fn serving_one(phoenix: &Phoenix, d: &DeploymentId, role: &RoleName) -> String {
    let snap = phoenix.snapshot(d).await.unwrap();
    snap.live_pool(role).unwrap().release.to_string()
}

/// A campaign changed after it started is refused, not silently replanned.
#[tokio::test(start_paused = true)]
async fn a_changed_spec_is_refused_for_a_started_campaign() {
    let cloud = SimCloud::new(SimConfig::default());
    let phoenix = cloud.phoenix().build().unwrap();
    let fleet = cloud.demo_fleet(&phoenix, 2, &["web"], 1).await.unwrap();
    let mut spec = CampaignSpec::new(
        "small",
        vec!["staging".parse().unwrap(), "prod".parse().unwrap()],
        cloud.now() + chrono::Duration::days(1),
        DAY,
    );
    for d in &fleet {
        spec = spec.target(d.id.clone(), "az-a", d.roles.keys().cloned(), &r("v2"));
    }
    let report = Campaign::new(&phoenix, spec.clone()).run().await.unwrap();
    assert!(matches!(report.status, CampaignStatus::Completed { .. }));
    spec.capacity_floor_percent = 50;
    assert!(matches!(
        Campaign::new(&phoenix, spec).run().await,
        Err(CampaignError::SpecChanged { .. })
    ));
}

/// The same fleet by rolling replacement: the failed wave's units that had
/// moved go back to v1 through the normal rollback too.
#[tokio::test(start_paused = true)]
async fn a_rolling_campaign_halts_and_rolls_back_its_failed_wave() {
    let (cloud, phoenix, fleet) = fleet(SimConfig::default()).await;
    let mut faults = Faults::none();
    faults.smoke_fails_after.insert(r("v2"), 32);
    cloud.set_faults(faults);
    let mut spec = spec_for(&fleet, "rolling", &cloud);
    spec.method = phoenix_core::campaign::Method::Rolling;
    let campaign = Campaign::new(&phoenix, spec);
    let report = campaign.run().await.unwrap();
    println!("{report}");
    assert_eq!(report.halted_at(), Some(3), "{:?}", report.status);
    for (i, d) in fleet.iter().enumerate() {
        let want = if i < 5 { "v2" } else { "v1" };
        assert_eq!(serving(&phoenix, &d.id).await, all(want), "{}", d.id);
    }
    let v = cloud.violations();
    assert!(v.is_empty(), "{v:#?}");
}

/// An incident during a campaign: the on-call's emergency rollback
/// pre-empts the campaign's deploy at once, the campaign halts on that
/// wave, and it does not undo the incident's choice (the pre-empted unit
/// is not "rolled back" again by the campaign).
#[tokio::test(start_paused = true)]
async fn an_incident_rollback_preempts_a_campaign_wave_and_halts_it() {
    let cloud = SimCloud::new(SimConfig::default());
    let phoenix = cloud.phoenix().build().unwrap();
    let fleet = cloud.demo_fleet(&phoenix, 2, &["web"], 3).await.unwrap();
    let web = RoleName::new("web").unwrap();
    let d = fleet[1].id.clone();
    // d01 serves v2 with v1 as its hot standby; the campaign brings v3.
    let plan = phoenix.plan_deploy(&d, &web, &r("v2")).await.unwrap();
    phoenix.apply(plan).await.unwrap();
    let image = cloud.certified_image("web", "v3");
    phoenix.register_image(&image).await.unwrap();
    phoenix
        .create_release(&d, r("v3"), [(web.clone(), image.id)].into_iter().collect())
        .await
        .unwrap();
    let spec = CampaignSpec::new(
        "incident",
        vec!["staging".parse().unwrap(), "prod".parse().unwrap()],
        cloud.now() + chrono::Duration::days(1),
        DAY,
    )
    .target(d.clone(), "az-a", [web.clone()], &r("v3"));
    let campaign = Campaign::new(&phoenix, spec);
    let incident = cloud.phoenix_as("incident").build().unwrap();
    let (report, rolled_back) = tokio::join!(campaign.run(), async {
        // Once the campaign's deploy of d01 is under way.
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let rec = campaign.record().await.unwrap();
            if rec.is_some_and(|r| r.waves[0].units[0].from.is_some()) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        let asked = cloud.now();
        let r = incident.emergency_rollback(&d, &web, None).await;
        (asked, r)
    });
    let report = report.unwrap();
    println!("{report}");
    let (asked, rolled_back) = rolled_back;
    let rolled_back = rolled_back.unwrap();
    let took = elapsed_between(asked, rolled_back.finished_at);
    assert!(
        took < Duration::from_secs(5 * 60),
        "the rollback waited {took:?}"
    );
    assert_eq!(report.halted_at(), Some(0), "{:?}", report.status);
    match &report.status {
        CampaignStatus::Halted { reason, .. } => {
            assert!(reason.contains("pre-empted"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let rec = campaign.record().await.unwrap().unwrap();
    assert_eq!(rec.waves[0].units[0].status, UnitStatus::Failed);
    assert!(rec.waves[0].units[0].rollback.is_none());
    // The incident's rollback stands: v1, its standby, serves.
    assert_eq!(serving_one(&phoenix, &d, &web).await, "v1");
    let v = cloud.violations();
    assert!(v.is_empty(), "{v:#?}");
}
