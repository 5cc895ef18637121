//! The Octavia balancer against a scripted Octavia that follows the API
//! reference (no emulator exists here): the batch member update
//! (`PUT /v2/lbaas/pools/{pool_id}/members`) replaces the member set,
//! matching existing members by address and port, and leaves the pool
//! `PENDING_UPDATE` for a few reads; a change made while it is pending is
//! refused with 409. The responses are the reference's samples
//! (members-list-response, pool-show-response) with the state filled in.

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::conformance::load_balancer::{
    self, LbExtras, LbFixture, OutOfBand, Sidelined, Unparsable,
};
use phoenix_core::id::ServerId;
use phoenix_core::ports::{LoadBalancer, MemberState, Target};
use phoenix_core::retry::RetryPolicy;
use phoenix_lb::octavia::OctaviaBalancer;
use phoenix_providers::openstack::busy::Patience;
use phoenix_providers::openstack::testing::{MockApi, MockResponse};
use phoenix_providers::openstack::Session;
use serde_json::{json, Map, Value};

const POOL: &str = "4029d267-3983-4224-a3d0-afb3fe16a2cd";
const SUBNET: &str = "bbb35f84-35cc-4b2f-84c2-a6a29bba68aa";
/// Octavia's `[api_settings] pagination_max_limit` (1000 by default), set
/// low so that every test reads members across several pages: a
/// balancer that read only the first page would drop the rest from its
/// next batch update.
const PAGINATION_MAX_LIMIT: usize = 2;

#[derive(Default)]
struct Octavia {
    members: Vec<Map<String, Value>>,
    /// Pool reads left before it is ACTIVE again.
    pending: u32,
    next_id: u32,
    puts: Vec<Value>,
    refused: u32,
}

fn member_sample(id: &str, m: &Map<String, Value>) -> Value {
    // The members-list-response sample's fields.
    json!({
        "monitor_port": m.get("monitor_port").cloned().unwrap_or(Value::Null),
        "project_id": "e3cd678b11784734bc366148aa37580e",
        "name": m.get("name").cloned().unwrap_or(json!("")),
        "weight": m.get("weight").cloned().unwrap_or(json!(1)),
        "backup": false,
        "admin_state_up": m.get("admin_state_up").cloned().unwrap_or(json!(true)),
        "subnet_id": m.get("subnet_id").cloned().unwrap_or(json!(SUBNET)),
        "created_at": "2017-05-11T17:21:34",
        "provisioning_status": "ACTIVE",
        "monitor_address": null,
        "updated_at": "2017-05-11T17:21:37",
        "address": m["address"].clone(),
        "protocol_port": m["protocol_port"].clone(),
        "id": id,
        // An administratively down member is OFFLINE; one at weight 0
        // DRAINING.
        "operating_status": if m.get("admin_state_up") == Some(&json!(false)) {
            "OFFLINE"
        } else if m.get("weight") == Some(&json!(0)) {
            "DRAINING"
        } else {
            "NO_MONITOR"
        },
        "tags": []
    })
}

fn serve(api: &MockApi) -> Arc<Mutex<Octavia>> {
    let state = Arc::new(Mutex::new(Octavia::default()));
    let s = state.clone();
    api.on(
        "GET",
        &format!("/load-balancer/v2/lbaas/pools/{POOL}/members"),
        move |r| {
            let o = s.lock().unwrap();
            // Octavia pages by `marker` (a member id) and answers at most
            // `pagination_max_limit` members, with a `next` link when
            // more follow.
            let from = match r.query_param("marker") {
                None => 0,
                Some(marker) => match o.members.iter().position(|m| m["id"] == *marker) {
                    Some(i) => i + 1,
                    None => {
                        return MockResponse::json(404, json!({"faultcode": "Client",
                            "faultstring": format!("Marker {marker} not found"), "debuginfo": null}));
                    }
                },
            };
            let limit = r
                .query_param("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(PAGINATION_MAX_LIMIT)
                .min(PAGINATION_MAX_LIMIT);
            let page: Vec<Value> = o.members[from..]
                .iter()
                .take(limit)
                .map(|m| member_sample(m["id"].as_str().unwrap(), m))
                .collect();
            let mut links = Vec::new();
            if from + page.len() < o.members.len() {
                let last = page.last().map_or(Value::Null, |m| m["id"].clone());
                links.push(json!({"rel": "next", "href": format!(
                    "http://198.51.100.10:9876/v2/lbaas/pools/{POOL}/members?limit={limit}&marker={}",
                    last.as_str().unwrap_or_default())}));
            }
            MockResponse::json(200, json!({"members": page, "members_links": links}))
        },
    );
    let s = state.clone();
    api.on("GET", &format!("/load-balancer/v2/lbaas/pools/{POOL}"), move |_| {
        let mut o = s.lock().unwrap();
        let status = if o.pending > 0 {
            o.pending -= 1;
            "PENDING_UPDATE"
        } else {
            "ACTIVE"
        };
        // The pool-show-response sample with the state filled in.
        MockResponse::json(200, json!({"pool": {
            "lb_algorithm": "ROUND_ROBIN", "protocol": "HTTP",
            "description": "Super Round Robin Pool", "admin_state_up": true,
            "loadbalancers": [{"id": "607226db-27ef-4d41-ae89-f2a800e9c2db"}],
            "created_at": "2017-05-10T18:14:44", "provisioning_status": status,
            "updated_at": "2017-05-10T23:08:12", "listeners": [{"id": "023f2e34-7806-443b-bfae-16c324569a3d"}],
            "members": [], "healthmonitor_id": null, "project_id": "e3cd678b11784734bc366148aa37580e",
            "id": POOL, "operating_status": "ONLINE", "name": "super-pool", "tags": []
        }}))
    });
    let s = state.clone();
    api.on("PUT", &format!("/load-balancer/v2/lbaas/pools/{POOL}/members"), move |r| {
        let mut o = s.lock().unwrap();
        if o.pending > 0 {
            o.refused += 1;
            return MockResponse::json(409, json!({"faultcode": "Client",
                "faultstring": "Load Balancer 607226db-27ef-4d41-ae89-f2a800e9c2db is immutable and cannot be updated.",
                "debuginfo": null}));
        }
        let body = r.json();
        o.puts.push(body.clone());
        let Some(wanted) = body["members"].as_array() else {
            return MockResponse::json(400, json!({"faultstring": "Invalid input"}));
        };
        let mut next = Vec::new();
        for w in wanted {
            let w = w.as_object().unwrap().clone();
            if w.contains_key("id") || w.contains_key("provisioning_status") {
                return MockResponse::json(400, json!({"faultstring": "read-only field"}));
            }
            let same = o.members.iter().find(|m| {
                m["address"] == w["address"] && m["protocol_port"] == w["protocol_port"]
            });
            let id = match same {
                Some(m) => m["id"].clone(),
                None => {
                    o.next_id += 1;
                    json!(format!("957a1ace-1bd2-449b-8455-{:012}", o.next_id))
                }
            };
            let mut m = w.clone();
            m.insert("id".into(), id);
            next.push(m);
        }
        o.members = next;
        o.pending = 2;
        MockResponse::empty(202)
    });
    state
}

fn balancer(api: &MockApi) -> OctaviaBalancer {
    let config = api
        .serve_keystone_v3(&[("load-balancer", "/load-balancer")])
        .unwrap();
    let session = Session::builder(config)
        .retry(RetryPolicy {
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            max_retries: 3,
            jitter_seed: Some(3),
        })
        .build()
        .unwrap();
    OctaviaBalancer::builder(session, POOL)
        .subnet(SUBNET)
        .patience(Patience {
            wait: Duration::from_secs(10),
            poll: Duration::from_millis(10),
        })
        .build()
}

fn target(i: u8) -> Target {
    Target {
        server: ServerId::new(format!("server-{i}")).unwrap(),
        endpoint: SocketAddr::from(([192, 0, 2, 10 + i], 80)),
    }
}

/// Changes to the scripted Octavia's members behind the balancer's back,
/// as another client of the API (an operator, Horizon, a detach that
/// stopped part-way) makes them.
struct Behind(Arc<Mutex<Octavia>>);

/// An address that is not one: a member the balancer cannot place.
const NOT_AN_ADDRESS: &str = "backend.example.invalid";

impl Behind {
    fn edit(&self, at: &Target, change: &[(&str, Value)]) {
        let mut o = self.0.lock().unwrap();
        let ip = at.endpoint.ip().to_string();
        let m = o
            .members
            .iter_mut()
            .find(|m| m["address"] == json!(ip) && m["protocol_port"] == json!(at.endpoint.port()))
            .expect("the member is there");
        for (k, v) in change {
            m.insert((*k).to_owned(), v.clone());
        }
    }
}

#[async_trait]
impl OutOfBand for Behind {
    fn sidelines(&self) -> Vec<Sidelined> {
        vec![
            Sidelined::Draining,
            Sidelined::Disabled,
            Sidelined::DrainedThenDisabled,
        ]
    }

    async fn sideline(&self, member: &Target, how: Sidelined) {
        let change: &[(&str, Value)] = match how {
            Sidelined::Draining => &[("weight", json!(0))],
            Sidelined::Disabled => &[("admin_state_up", json!(false))],
            Sidelined::DrainedThenDisabled => {
                &[("weight", json!(0)), ("admin_state_up", json!(false))]
            }
            other => panic!("not offered: {other:?}"),
        };
        self.edit(member, change);
    }

    async fn add_unparsable(&self) -> Option<Unparsable> {
        let mut o = self.0.lock().unwrap();
        o.next_id += 1;
        let id = format!("957a1ace-1bd2-449b-8455-{:012}", o.next_id);
        let mut m = Map::new();
        m.insert("id".into(), json!(id));
        m.insert("name".into(), json!("by-hand"));
        m.insert("address".into(), json!(NOT_AN_ADDRESS));
        m.insert("protocol_port".into(), json!(80));
        o.members.push(m);
        Some(Unparsable {
            endpoint: None,
            what: format!("a member whose address is {NOT_AN_ADDRESS:?}"),
        })
    }

    async fn remove_unparsable(&self) {
        self.0
            .lock()
            .unwrap()
            .members
            .retain(|m| m["address"] != json!(NOT_AN_ADDRESS));
    }
}

#[tokio::test]
async fn octavia_passes_the_load_balancer_conformance_suite() {
    let api = MockApi::start().await.unwrap();
    let state = serve(&api);
    let lb = balancer(&api);
    // Another orchestrator process: its own session, the same pool.
    let second = balancer(&api);
    let fixture = LbFixture {
        healthy: vec![target(1), target(2), target(3)],
        unhealthy: None,
        settle: Duration::from_secs(5),
        drain: Duration::from_millis(200),
        poll: Duration::from_millis(20),
    };
    let behind = Behind(state);
    load_balancer::run_all(
        &lb,
        &fixture,
        &LbExtras {
            second: Some(&second),
            out_of_band: Some(&behind),
            ..LbExtras::default()
        },
    )
    .await;
}

#[tokio::test]
async fn one_batch_update_per_change_and_the_swap_is_atomic() {
    let api = MockApi::start().await.unwrap();
    let state = serve(&api);
    let lb = balancer(&api);
    let blue: Vec<Target> = (1..=5).map(target).collect();
    let green: Vec<Target> = (6..=10).map(target).collect();
    lb.attach(&blue).await.unwrap();
    {
        let o = state.lock().unwrap();
        assert_eq!(o.puts.len(), 1, "five members, one call");
        // The member-batch-update-request sample's fields.
        assert_eq!(
            o.puts[0]["members"][0],
            json!({"name": "server-1", "address": "192.0.2.11", "protocol_port": 80,
                   "weight": 1, "admin_state_up": true, "subnet_id": SUBNET})
        );
    }
    let pool_reads = api
        .requests_to("GET", &format!("/load-balancer/v2/lbaas/pools/{POOL}"))
        .len();
    assert!(pool_reads >= 3, "provisioning_status polled until ACTIVE");

    let leaving: Vec<ServerId> = blue.iter().map(|t| t.server.clone()).collect();
    lb.swap(&green, &leaving, Duration::from_millis(300))
        .await
        .unwrap();
    {
        let o = state.lock().unwrap();
        assert_eq!(o.puts.len(), 2, "the swap is one call");
        let sent = o.puts[1]["members"].as_array().unwrap();
        assert_eq!(sent.len(), 10);
        let zero = sent.iter().filter(|m| m["weight"] == json!(0)).count();
        assert_eq!(zero, 5, "blue drains at weight 0 while green takes traffic");
        // Existing members keep what Octavia knows of them, less what it
        // sets itself.
        assert!(sent
            .iter()
            .all(|m| m.get("id").is_none() && m.get("operating_status").is_none()));
    }
    let members = lb.members().await.unwrap();
    assert_eq!(
        members
            .iter()
            .filter(|m| m.state == MemberState::Draining)
            .count(),
        5
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let members = lb.members().await.unwrap();
    assert_eq!(members.len(), 5, "drained members removed: {members:?}");
    assert!(members
        .iter()
        .all(|m| green.iter().any(|t| t.server == m.server)));
    assert_eq!(state.lock().unwrap().puts.len(), 3);
}

#[tokio::test]
async fn a_change_refused_while_immutable_waits_for_active() {
    let api = MockApi::start().await.unwrap();
    let state = serve(&api);
    let lb = balancer(&api);
    state.lock().unwrap().pending = 3;
    lb.attach(&[target(1)]).await.unwrap();
    let o = state.lock().unwrap();
    assert!(o.refused >= 1, "the first PUT met a pending pool");
    assert_eq!(o.members.len(), 1);
    assert_eq!(o.puts.len(), 1);
}

#[tokio::test]
async fn a_pool_in_error_fails_the_change() {
    let api = MockApi::start().await.unwrap();
    serve(&api);
    api.on(
        "GET",
        &format!("/load-balancer/v2/lbaas/pools/{POOL}"),
        |_| {
            MockResponse::json(
                200,
                json!({"pool": {"id": POOL, "provisioning_status": "ERROR"}}),
            )
        },
    );
    let lb = balancer(&api);
    let err = lb.attach(&[target(1)]).await.unwrap_err();
    assert!(err.to_string().contains("ERROR"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_server_attached_at_a_draining_members_address_takes_the_member_over() {
    let api = MockApi::start().await.unwrap();
    let state = serve(&api);
    let lb = balancer(&api);
    let old = target(1);
    lb.attach(std::slice::from_ref(&old)).await.unwrap();
    lb.detach(std::slice::from_ref(&old.server), Duration::from_secs(3600))
        .await
        .unwrap();
    // A new server got the address while the old one's member drains:
    // Octavia keeps one member per address, so it becomes the new one's.
    let new = Target {
        server: ServerId::new("server-new").unwrap(),
        endpoint: old.endpoint,
    };
    lb.attach(std::slice::from_ref(&new)).await.unwrap();
    let members = lb.members().await.unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].server, new.server, "not the server that left");
    assert_eq!(members[0].endpoint, new.endpoint);
    assert_eq!(members[0].state, MemberState::Active);
    let o = state.lock().unwrap();
    assert_eq!(o.members[0]["name"], json!("server-new"));
    assert_eq!(o.members[0]["weight"], json!(1));
}

#[tokio::test]
async fn a_member_named_by_hand_is_reported_at_its_address_under_a_stand_in() {
    let api = MockApi::start().await.unwrap();
    let state = serve(&api);
    let lb = balancer(&api);
    lb.attach(&[target(1)]).await.unwrap();
    {
        let mut o = state.lock().unwrap();
        let mut m = Map::new();
        m.insert("id".into(), json!("957a1ace-1bd2-449b-8455-00000000beef"));
        // Not a server id (a space), as a person types it in a dashboard.
        m.insert("name".into(), json!("web server"));
        m.insert("address".into(), json!("192.0.2.99"));
        m.insert("protocol_port".into(), json!(8080));
        o.members.push(m);
    }
    let members = lb.members().await.unwrap();
    assert_eq!(members.len(), 2, "not left out: {members:?}");
    let by_hand = members
        .iter()
        .find(|m| m.endpoint == SocketAddr::from(([192, 0, 2, 99], 8080)))
        .unwrap();
    assert_eq!(
        by_hand.server.as_str(),
        "octavia-member-957a1ace-1bd2-449b-8455-00000000beef"
    );
}
