//! What rollback capacity costs, and what a reap saves, on the simulated
//! cloud.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::world_with;
use phoenix_core::cost::{
    reap_savings, retention_cost, FlavorPrice, PowerState, PriceTable, HOURS_PER_MONTH,
};
use phoenix_core::sim::SimConfig;

fn prices() -> PriceTable {
    // The demo deployment's role runs flavor general1-2.
    PriceTable::new("USD")
        .with_flavor("general1-2", FlavorPrice::running(0.10).stopped(0.01))
        .with_stopped_default(0.02)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn a_price_table_prices_running_and_stopped_servers_and_refuses_nonsense() {
    let p = prices();
    assert_eq!(
        p.per_hour(Some("general1-2"), PowerState::Running),
        Some(0.10)
    );
    assert_eq!(
        p.per_hour(Some("general1-2"), PowerState::Stopped),
        Some(0.01)
    );
    assert_eq!(p.per_hour(Some("other"), PowerState::Running), None);
    assert_eq!(p.per_hour(Some("other"), PowerState::Stopped), Some(0.02));
    assert_eq!(p.per_hour(None, PowerState::Running), None);
    assert!(p.validate().is_ok());
    let bad = PriceTable::new("USD").with_flavor("x", FlavorPrice::running(-1.0));
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("x.running_per_hour"));
    assert!(PriceTable::new(" ").validate().is_err());
    let nan = PriceTable::new("EUR").with_stopped_default(f64::NAN);
    assert!(nan.validate().is_err());
}

#[tokio::test(start_paused = true)]
async fn retained_pools_cost_what_their_servers_cost_and_reap_says_what_it_saves() {
    // Keep two standby pools, one of them hot: a third deploy leaves v1
    // and v2 behind, and reap stops v1's (the older one).
    let w = world_with(SimConfig::default(), 3, |mut p| {
        p.retention.keep = 2;
        p.retention.hot = 1;
        p
    })
    .await;
    w.deploy("v1").await;
    w.deploy("v2").await;
    w.deploy("v3").await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let before = retention_cost(&snap, &prices());
    assert_eq!(before.pools.len(), 2, "{before}");
    assert!(before
        .pools
        .iter()
        .all(|p| p.running == 3 && p.stopped == 0));
    assert!(before.pools.iter().all(|p| !p.incomplete));
    assert!(close(before.per_hour, 0.60), "{before}");
    assert!(close(before.per_month, 0.60 * HOURS_PER_MONTH));
    // Newest first: v2's pool, then v1's.
    assert_eq!(before.pools[0].release, "v2");
    assert!(before.to_string().contains("0.60 USD/h"), "{before}");

    let plan = w.phoenix.plan_reap(&w.shop, &w.web).await.unwrap();
    let savings = reap_savings(&snap, &plan, &prices());
    assert!(savings.deleted.is_empty(), "{plan}");
    assert_eq!(savings.stopped.len(), 1, "{plan}");
    assert_eq!(savings.stopped[0].servers, 3);
    assert!(close(savings.per_hour, 3.0 * (0.10 - 0.01)), "{savings}");
    assert!(
        savings.to_string().starts_with("reaping saves 0.27 USD/h"),
        "{savings}"
    );

    w.apply(plan).await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let after = retention_cost(&snap, &prices());
    let cold = after.pools.iter().find(|p| p.release == "v1").unwrap();
    assert_eq!((cold.running, cold.stopped), (0, 3));
    assert_eq!(cold.state, "standby(cold)");
    assert!(close(after.per_hour, 0.30 + 0.03), "{after}");
    assert!(close(before.per_hour - after.per_hour, savings.per_hour));

    // v1 goes live again (its cold pool is started); reaping with keep =
    // 1 deletes v2's hot pool and saves what its running servers cost.
    w.deploy("v1").await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let mut keep_one = w.phoenix.policy().clone();
    keep_one.retention.keep = 1;
    let plan = w
        .phoenix
        .plan_reap_with(&w.shop, &w.web, &keep_one)
        .await
        .unwrap();
    let savings = reap_savings(&snap, &plan, &prices());
    assert_eq!(savings.deleted.len(), 1, "{plan}\n{savings}");
    assert_eq!(savings.deleted[0].servers, 3);
    assert!(close(savings.per_hour, 0.30), "{plan}\n{savings}");
}

#[tokio::test(start_paused = true)]
async fn unpriced_flavors_are_named_and_the_live_pool_is_not_rollback_capacity() {
    let w = world_with(SimConfig::default(), 2, |p| p).await;
    w.deploy("v1").await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    // Only a live pool: no rollback capacity.
    let none = retention_cost(&snap, &prices());
    assert!(none.pools.is_empty());
    assert!(close(none.per_hour, 0.0));
    w.deploy("v2").await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let unpriced = retention_cost(&snap, &PriceTable::new("USD"));
    assert_eq!(unpriced.pools.len(), 1);
    assert!(unpriced.pools[0].incomplete);
    assert_eq!(unpriced.unpriced_flavors, vec!["general1-2".to_owned()]);
    assert!(unpriced.to_string().contains("no price for: general1-2"));
}
