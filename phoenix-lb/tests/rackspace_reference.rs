//! Cloud Load Balancers behaviour that Mimic does not reproduce, against a
//! scripted balancer answering with the shapes of the Cloud Load Balancers
//! v1.0 developer guide: its rate limit (413 `overLimit` with a
//! Retry-After), a refusal while `PENDING_UPDATE` (422) waited out by
//! polling the balancer's status, and bulk deletes of at most ten nodes;
//! and which server a node is, resolved through a compute back end the
//! test scripts.

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use phoenix_core::id::ServerId;
use phoenix_core::labels::{LabelSelector, Labels};
use phoenix_core::model::{Server, ServerStatus};
use phoenix_core::ports::{
    Compute, ComputeCapabilities, LaunchRequest, LoadBalancer, MemberState, PortError, Target,
};
use phoenix_core::retry::RetryPolicy;
use phoenix_lb::rackspace_clb::{RackspaceClb, RackspaceClbBuilder};
use phoenix_providers::openstack::busy::Patience;
use phoenix_providers::openstack::testing::{MockApi, MockResponse};
use phoenix_providers::openstack::Session;
use serde_json::{json, Value};

const LB: u64 = 42;
const BASE: &str = "/clb/v1.0/123456";

#[derive(Default)]
struct Clb {
    nodes: Vec<Value>,
    next_id: u64,
    /// Status reads left while PENDING_UPDATE.
    pending: u32,
    /// Add calls to refuse with 413 first.
    throttle: u32,
    /// Condition updates to refuse with 422 first (and go pending).
    immutable: u32,
}

fn serve(api: &MockApi) -> Arc<Mutex<Clb>> {
    let state = Arc::new(Mutex::new(Clb::default()));
    let s = state.clone();
    api.on("GET", &format!("{BASE}/loadbalancers/{LB}"), move |_| {
        let mut c = s.lock().unwrap();
        let status = if c.pending > 0 {
            c.pending -= 1;
            "PENDING_UPDATE"
        } else {
            "ACTIVE"
        };
        MockResponse::json(
            200,
            json!({"loadBalancer": {"id": LB, "name": "a-new-loadbalancer",
            "protocol": "HTTP", "port": 80, "algorithm": "RANDOM", "status": status}}),
        )
    });
    let s = state.clone();
    api.on(
        "GET",
        &format!("{BASE}/loadbalancers/{LB}/nodes"),
        move |_| MockResponse::json(200, json!({"nodes": s.lock().unwrap().nodes})),
    );
    let s = state.clone();
    api.on(
        "POST",
        &format!("{BASE}/loadbalancers/{LB}/nodes"),
        move |r| {
            let mut c = s.lock().unwrap();
            if c.throttle > 0 {
                c.throttle -= 1;
                return MockResponse::json(
                    413,
                    json!({"overLimit": {"code": 413,
                "message": "OverLimit Retry...", "details": "Error Details..."}}),
                )
                .header("Retry-After", "1");
            }
            let mut added = Vec::new();
            for n in r.json()["nodes"].as_array().unwrap() {
                c.next_id += 1;
                let node = json!({"address": n["address"], "id": c.next_id, "port": n["port"],
                              "status": "ONLINE", "condition": n["condition"], "weight": 1,
                              "type": "PRIMARY"});
                c.nodes.push(node.clone());
                added.push(node);
            }
            MockResponse::json(202, json!({ "nodes": added }))
        },
    );
    let s = state.clone();
    api.on("PUT", &format!("{BASE}/loadbalancers/{LB}/nodes/*"), move |r| {
        let mut c = s.lock().unwrap();
        if c.immutable > 0 {
            c.immutable -= 1;
            c.pending = 2;
            return MockResponse::json(422, json!({"message": format!(
                "Load Balancer '{LB}' has a status of 'PENDING_UPDATE' and is considered immutable."),
                "code": 422}));
        }
        let id: u64 = r.path.rsplit('/').next().unwrap().parse().unwrap();
        let condition = r.json()["node"]["condition"].clone();
        for n in c.nodes.iter_mut() {
            if n["id"] == json!(id) {
                n["condition"] = condition.clone();
            }
        }
        MockResponse::empty(202)
    });
    let s = state.clone();
    api.on(
        "DELETE",
        &format!("{BASE}/loadbalancers/{LB}/nodes"),
        move |r| {
            let ids: Vec<u64> = r
                .query
                .as_deref()
                .unwrap_or_default()
                .split('&')
                .filter_map(|kv| kv.strip_prefix("id=")?.parse().ok())
                .collect();
            if ids.len() > 10 {
                return MockResponse::json(
                    400,
                    json!({"message": "Validation Failure", "code": 400,
                "details": "Request to delete more than 10 nodes"}),
                );
            }
            s.lock()
                .unwrap()
                .nodes
                .retain(|n| !ids.contains(&n["id"].as_u64().unwrap()));
            MockResponse::empty(202)
        },
    );
    state
}

fn balancer(api: &MockApi) -> RackspaceClb {
    builder(api).build()
}

fn builder(api: &MockApi) -> RackspaceClbBuilder {
    let config = api
        .serve_keystone_v3(&[("rax:load-balancer", BASE)])
        .unwrap();
    let session = Session::builder(config)
        .retry(RetryPolicy {
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(2),
            max_retries: 3,
            jitter_seed: Some(9),
        })
        .build()
        .unwrap();
    RackspaceClb::builder(session, LB).patience(Patience {
        wait: Duration::from_secs(10),
        poll: Duration::from_millis(20),
    })
}

fn target(i: u8) -> Target {
    Target {
        server: ServerId::new(format!("server-{i}")).unwrap(),
        endpoint: SocketAddr::from(([10, 1, 1, i], 80)),
    }
}

#[tokio::test]
async fn the_rate_limit_is_honoured() {
    let api = MockApi::start().await.unwrap();
    let state = serve(&api);
    state.lock().unwrap().throttle = 1;
    let lb = balancer(&api);
    let started = Instant::now();
    lb.attach(&[target(1)]).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After waited"
    );
    assert_eq!(
        api.requests_to("POST", &format!("{BASE}/loadbalancers/{LB}/nodes"))
            .len(),
        2
    );
    let sent = &api.requests_to("POST", &format!("{BASE}/loadbalancers/{LB}/nodes"))[1];
    // The add-nodes request of the developer guide.
    assert_eq!(
        sent.json(),
        json!({"nodes": [{"address": "10.1.1.1", "port": 80, "condition": "ENABLED",
                          "type": "PRIMARY"}]})
    );
    assert_eq!(lb.members().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_refusal_while_pending_update_waits_for_active() {
    let api = MockApi::start().await.unwrap();
    let state = serve(&api);
    let lb = balancer(&api);
    lb.attach(&[target(1), target(2)]).await.unwrap();
    state.lock().unwrap().immutable = 1;
    lb.detach(&[target(1).server], Duration::from_secs(60))
        .await
        .unwrap();
    let puts = api.requests_to("PUT", &format!("{BASE}/loadbalancers/{LB}/nodes/*"));
    assert_eq!(puts.len(), 2, "refused once, made again once ACTIVE");
    assert_eq!(puts[1].json(), json!({"node": {"condition": "DRAINING"}}));
    let status_reads = api
        .requests_to("GET", &format!("{BASE}/loadbalancers/{LB}"))
        .len();
    assert!(
        status_reads >= 3,
        "polled PENDING_UPDATE twice, then ACTIVE"
    );
    let members = lb.members().await.unwrap();
    let one = members
        .iter()
        .find(|m| m.server == target(1).server)
        .unwrap();
    assert_eq!(one.state, MemberState::Draining);
}

#[tokio::test]
async fn bulk_deletes_take_ten_nodes_at_most() {
    let api = MockApi::start().await.unwrap();
    let state = serve(&api);
    let lb = balancer(&api);
    let targets: Vec<Target> = (1..=12).map(target).collect();
    lb.attach(&targets).await.unwrap();
    assert_eq!(
        api.requests_to("POST", &format!("{BASE}/loadbalancers/{LB}/nodes"))
            .len(),
        2,
        "added in batches of ten"
    );
    let servers: Vec<ServerId> = targets.iter().map(|t| t.server.clone()).collect();
    lb.detach(&servers, Duration::ZERO).await.unwrap();
    let deletes = api.requests_to("DELETE", &format!("{BASE}/loadbalancers/{LB}/nodes"));
    assert_eq!(deletes.len(), 2);
    assert!(state.lock().unwrap().nodes.is_empty());
    assert!(lb.members().await.unwrap().is_empty());
}

/// A compute back end whose servers the test sets; only `list` is used.
#[derive(Default)]
struct Servers(Mutex<Vec<Server>>);

impl Servers {
    /// Servers named by id, each with one address.
    fn set(&self, servers: &[(&str, [u8; 4])]) {
        *self.0.lock().unwrap() = servers
            .iter()
            .map(|(id, ip)| Server {
                id: ServerId::new(*id).unwrap(),
                name: (*id).to_owned(),
                addresses: vec![IpAddr::from(*ip)],
                service_port: None,
                status: ServerStatus::Active,
                launched_at: None,
                image: None,
                labels: Labels::default(),
            })
            .collect();
    }
}

#[async_trait]
impl Compute for Servers {
    fn capabilities(&self) -> ComputeCapabilities {
        unimplemented!("not used by the balancer")
    }
    async fn launch(&self, _: &[LaunchRequest]) -> Vec<Result<Server, PortError>> {
        unimplemented!("not used by the balancer")
    }
    async fn describe(&self, _: &[ServerId]) -> Result<Vec<Server>, PortError> {
        unimplemented!("not used by the balancer")
    }
    async fn list(&self, _: &LabelSelector) -> Result<Vec<Server>, PortError> {
        Ok(self.0.lock().unwrap().clone())
    }
    async fn stop(&self, _: &ServerId) -> Result<(), PortError> {
        unimplemented!("not used by the balancer")
    }
    async fn start(&self, _: &ServerId) -> Result<(), PortError> {
        unimplemented!("not used by the balancer")
    }
    async fn terminate(&self, _: &ServerId) -> Result<(), PortError> {
        unimplemented!("not used by the balancer")
    }
}

fn ids(lb_members: &[phoenix_core::ports::Member]) -> Vec<&str> {
    lb_members.iter().map(|m| m.server.as_str()).collect()
}

/// A node stays while the address behind it passes from one server to
/// another (the first terminated, the second given its address): the
/// balancer looks the node up again rather than keep reporting the server
/// that has gone.
#[tokio::test]
async fn a_node_is_looked_up_again_once_its_address_may_have_passed_on() {
    let api = MockApi::start().await.unwrap();
    serve(&api);
    let recheck = Duration::from_millis(200);
    let servers = Arc::new(Servers::default());
    let lb = builder(&api)
        .servers(servers.clone())
        .recheck(recheck)
        .build();
    // Attached by another process: this one knows only the address.
    balancer(&api).attach(&[target(1)]).await.unwrap();
    servers.set(&[("old", [10, 1, 1, 1])]);
    assert_eq!(ids(&lb.members().await.unwrap()), ["old"]);

    servers.set(&[("new", [10, 1, 1, 1])]);
    assert_eq!(
        ids(&lb.members().await.unwrap()),
        ["old"],
        "trusted until the recheck"
    );
    tokio::time::sleep(recheck).await;
    assert_eq!(ids(&lb.members().await.unwrap()), ["new"]);

    // Claimed by two servers, or by none: neither is a guess.
    tokio::time::sleep(recheck).await;
    servers.set(&[("new", [10, 1, 1, 1]), ("other", [10, 1, 1, 1])]);
    let m = lb.members().await.unwrap();
    assert!(m[0].server.as_str().starts_with("clb-node-"), "{m:?}");
    servers.set(&[]);
    tokio::time::sleep(recheck).await;
    let m = lb.members().await.unwrap();
    assert!(m[0].server.as_str().starts_with("clb-node-"), "{m:?}");
    assert_eq!(m[0].endpoint, target(1).endpoint);

    // What this process attaches it knows, whatever the compute back end
    // says of the address.
    servers.set(&[("someone-else", [10, 1, 1, 1])]);
    lb.attach(&[target(1)]).await.unwrap();
    tokio::time::sleep(recheck).await;
    assert_eq!(ids(&lb.members().await.unwrap()), ["server-1"]);
}

/// A node removed and another added at the same address (a new server
/// there, attached by another process): the old node's server is
/// forgotten with it.
#[tokio::test]
async fn a_new_node_at_a_reused_address_is_not_the_old_server() {
    let api = MockApi::start().await.unwrap();
    let state = serve(&api);
    let lb = balancer(&api);
    lb.attach(&[target(1)]).await.unwrap();
    assert_eq!(ids(&lb.members().await.unwrap()), ["server-1"]);
    // Behind this process's back, without it seeing the address free.
    {
        let mut c = state.lock().unwrap();
        c.nodes.clear();
    }
    let other = balancer(&api);
    other
        .attach(&[Target {
            server: ServerId::new("server-9").unwrap(),
            endpoint: target(1).endpoint,
        }])
        .await
        .unwrap();
    let m = lb.members().await.unwrap();
    assert_eq!(m.len(), 1);
    assert_ne!(m[0].server.as_str(), "server-1", "{m:?}");
    assert!(m[0].server.as_str().starts_with("clb-node-"), "{m:?}");
}

#[tokio::test]
async fn detaching_again_shortens_a_drain() {
    let api = MockApi::start().await.unwrap();
    serve(&api);
    let lb = balancer(&api);
    lb.attach(&[target(1)]).await.unwrap();
    lb.detach(&[target(1).server], Duration::from_secs(3600))
        .await
        .unwrap();
    lb.detach(&[target(1).server], Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = lb.members().await.unwrap();
    assert!(m.is_empty(), "the shorter drain has passed: {m:?}");
}

#[tokio::test]
async fn a_node_by_host_name_fails_the_read() {
    let api = MockApi::start().await.unwrap();
    let state = serve(&api);
    let lb = balancer(&api);
    lb.attach(&[target(1)]).await.unwrap();
    state
        .lock()
        .unwrap()
        .nodes
        .push(json!({"address": "backend.example.com",
        "id": 77, "port": 80, "status": "ONLINE", "condition": "ENABLED",
        "weight": 1, "type": "PRIMARY"}));
    let err = lb.members().await.unwrap_err();
    assert!(
        matches!(err.kind, phoenix_core::ports::ErrorKind::BadResponse(_)),
        "{err}"
    );
    assert!(err.to_string().contains("backend.example.com"), "{err}");
    // Detaching what it knows still works.
    lb.detach(&[target(1).server], Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(state.lock().unwrap().nodes.len(), 1);
}
