//! Figures of fleet campaigns on the simulated cloud (paused clock):
//!
//! 1. a 10-deployment × 3-role campaign whose new release starts failing
//!    its smoke test in wave 3: the waves run, when it halted, and what
//!    was rolled back;
//! 2. a 30-day campaign (one deployment per wave, 6 servers per 2 days)
//!    projected and then run, with and without the daily renewal tick:
//!    projection against actual, and the oldest serving server's age at
//!    the deadline against `max_age`.
//!
//! `cargo run -p phoenix-core --example campaign_figures`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use phoenix_core::campaign::{
    renew_aged, Campaign, CampaignReport, CampaignSpec, CampaignStatus, RenewOptions, RunOptions,
    UnitStatus,
};
use phoenix_core::id::{DeploymentId, ReleaseLabel};
use phoenix_core::model::Deployment;
use phoenix_core::sim::{Faults, SimCloud, SimConfig};
use phoenix_core::time::{elapsed_between, human, Timestamp};
use phoenix_core::Phoenix;

const ROLES: [&str; 3] = ["api", "web", "worker"];
const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3600);

fn domain(i: usize) -> &'static str {
    match i {
        0 | 1 => "stg-1",
        2..=4 => "az-a",
        5..=7 => "az-b",
        _ => "az-c",
    }
}

async fn fleet() -> (SimCloud, Phoenix, Vec<Deployment>) {
    let cloud = SimCloud::new(SimConfig::default());
    let phoenix = cloud.phoenix_with_roles("ops", &ROLES).build().unwrap();
    let fleet = cloud.demo_fleet(&phoenix, 10, &ROLES, 2).await.unwrap();
    (cloud, phoenix, fleet)
}

fn spec(fleet: &[Deployment], name: &str, deadline: Timestamp) -> CampaignSpec {
    let mut spec = CampaignSpec::new(
        name,
        vec!["staging".parse().unwrap(), "prod".parse().unwrap()],
        deadline,
        14 * DAY,
    );
    spec.budget.max_in_flight = 12;
    spec.budget.per_window = 60;
    spec.budget.window = HOUR;
    let v2: ReleaseLabel = "v2".parse().unwrap();
    for (i, d) in fleet.iter().enumerate() {
        spec = spec.target(d.id.clone(), domain(i), d.roles.keys().cloned(), &v2);
    }
    spec
}

fn at(start: Timestamp, t: Option<Timestamp>) -> String {
    t.map_or("-".into(), |t| {
        format!("+{}", human(elapsed_between(start, t)))
    })
}

async fn failing_wave() {
    let (cloud, phoenix, fleet) = fleet().await;
    let mut faults = Faults::none();
    faults.smoke_fails_after.insert("v2".parse().unwrap(), 32);
    cloud.set_faults(faults);
    let started = std::time::Instant::now();
    let campaign = Campaign::new(
        &phoenix,
        spec(&fleet, "halt", cloud.now() + chrono::Duration::days(2)),
    );
    let report = campaign.run().await.unwrap();
    let wall = started.elapsed();
    let record = campaign.record().await.unwrap().unwrap();
    let start = record.started_at;
    println!("## 1. 10 deployments x 3 roles x 2 servers, v1 -> v2; v2's smoke test fails after 32 servers passed it\n");
    println!("| wave | env | domain | servers | status | start | end | failed (own operation rolled back) | rolled back by the campaign |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (w, rec) in report.waves.iter().zip(&record.waves) {
        let units = &record.plan.waves[w.index].units;
        let list = |s: UnitStatus| {
            rec.units
                .iter()
                .zip(units)
                .filter(|(r, _)| r.status == s)
                .map(|(_, u)| format!("{}/{}", u.deployment, u.role))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "| {} | {} | {} | {} | {:?} | {} | {} | {} | {} |",
            w.index,
            w.environment,
            w.failure_domain,
            w.servers,
            w.status,
            at(start, w.started_at),
            at(start, w.finished_at),
            list(UnitStatus::Failed),
            list(UnitStatus::RolledBack),
        );
    }
    if let CampaignStatus::Halted {
        wave, at: halted, ..
    } = &report.status
    {
        let wave_start = record.waves[*wave].started_at.unwrap_or(start);
        println!(
            "\nhalted at wave {wave}: +{} after the campaign started, {} after the failed wave started; waves run: {} of {}; deployments never touched: {}",
            human(elapsed_between(start, *halted)),
            human(elapsed_between(wave_start, *halted)),
            record.waves.iter().filter(|w| w.started_at.is_some()).count(),
            record.waves.len(),
            report
                .deployments
                .iter()
                .filter(|d| d.done.is_empty())
                .filter(|d| {
                    !record.plan.waves[*wave]
                        .units
                        .iter()
                        .any(|u| u.deployment == d.deployment)
                })
                .map(|d| d.deployment.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!(
        "invariant violations seen by the simulated cloud: {}; wall time {} ms\n",
        cloud.violations().len(),
        wall.as_millis()
    );
}

fn oldest_serving(cloud: &SimCloud) -> Duration {
    let serving: BTreeSet<_> = ROLES
        .iter()
        .flat_map(|r| cloud.members_of(r))
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

struct Thirty {
    projected: CampaignReport,
    report: CampaignReport,
    start: Timestamp,
    oldest: Duration,
    renewed: usize,
    ticks: usize,
    violations: usize,
}

async fn thirty_days(renewal: bool) -> Thirty {
    let (cloud, phoenix, fleet) = fleet().await;
    tokio::time::sleep(5 * DAY).await;
    let start = cloud.now();
    let deadline = start + chrono::Duration::days(30);
    let mut spec = spec(&fleet, "thirty-days", deadline);
    spec.budget.max_in_flight = 6;
    spec.budget.per_window = 6;
    spec.budget.window = 2 * DAY;
    let max_age = spec.max_age;
    let campaign = Campaign::new(&phoenix, spec).with_options(RunOptions {
        busy_wait: 6 * HOUR,
        ..RunOptions::default()
    });
    let projected = campaign.report().await.unwrap();
    let ids: Vec<DeploymentId> = fleet.iter().map(|d| d.id.clone()).collect();
    let renew = RenewOptions {
        max_age: max_age - DAY - HOUR,
        max_servers: 12,
    };
    let (report, (renewed, ticks)) = tokio::join!(campaign.run(), async {
        let (mut renewed, mut ticks) = (0, 0);
        while renewal && cloud.now() + chrono::Duration::days(1) <= deadline {
            tokio::time::sleep(DAY).await;
            renewed += renew_aged(&phoenix, &ids, &renew).await.unwrap().renewed;
            ticks += 1;
        }
        (renewed, ticks)
    });
    if cloud.now() < deadline {
        tokio::time::sleep(elapsed_between(cloud.now(), deadline)).await;
    }
    Thirty {
        projected,
        report: report.unwrap(),
        start,
        oldest: oldest_serving(&cloud),
        renewed,
        ticks,
        violations: cloud.violations().len(),
    }
}

async fn thirty() {
    let started = std::time::Instant::now();
    let with = thirty_days(true).await;
    let without = thirty_days(false).await;
    let wall = started.elapsed();
    let start = with.start;
    println!("## 2. 30-day campaign: fleet 5 days old at the start, max_age 14 days, one deployment (6 servers) per 2 days\n");
    println!("| wave | domain | projected start | projected end | actual start | actual end |");
    println!("|---|---|---|---|---|---|");
    let mut prev_end = Some(start);
    for (p, a) in with.projected.waves.iter().zip(&with.report.waves) {
        // A projected wave starts when the budget allows after the previous one ends.
        let p_start = p.projected_finish.map(|f| {
            f - chrono::Duration::from_std(with.projected.wave_duration).unwrap_or_default()
        });
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            p.index,
            p.failure_domain,
            at(start, p_start.or(prev_end)),
            at(start, p.projected_finish),
            at(start, a.started_at),
            at(start, a.finished_at)
        );
        prev_end = p.projected_finish;
    }
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| deadline | +{} |",
        human(elapsed_between(start, with.report.deadline))
    );
    println!(
        "| projected completion (before it ran, wave estimate {}) | {} ({}) |",
        human(with.projected.wave_duration),
        at(start, with.projected.completion),
        if with.projected.on_time {
            "on time"
        } else {
            "late"
        }
    );
    println!(
        "| actual completion (observed wave {}) | {} ({}) |",
        human(with.report.wave_duration),
        at(start, with.report.completion),
        if with.report.on_time {
            "on time"
        } else {
            "late"
        }
    );
    println!(
        "| servers projected to pass max_age before their wave, if nothing changes | {} |",
        with.projected.aging.len()
    );
    println!(
        "| oldest serving server at the deadline, campaign + daily renewal tick ({} ticks, {} servers renewed) | {} (max_age {}) |",
        with.ticks,
        with.renewed,
        human(with.oldest),
        human(with.report.max_age)
    );
    println!(
        "| oldest serving server at the deadline, campaign alone | {} |",
        human(without.oldest)
    );
    println!(
        "| servers the final report says will pass max_age before the deadline (campaign alone) | {} |",
        without.report.aging.len()
    );
    println!(
        "| invariant violations (with / without renewal) | {} / {} |",
        with.violations, without.violations
    );
    println!(
        "| wall time for both 30-day runs | {} ms |",
        wall.as_millis()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        failing_wave().await;
        thirty().await;
    });
}
