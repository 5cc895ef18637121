//! The floating-IP balancer against a scripted Neutron that answers with
//! the Networking API reference's samples (show floating IP, update
//! floating IP, list ports), keeping the association as state. Mimic's
//! Neutron lists networks only.

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use phoenix_core::conformance::load_balancer::{self, LbExtras, LbFixture};
use phoenix_core::id::ServerId;
use phoenix_core::ports::{ErrorKind, LoadBalancer, MemberHealth, Target};
use phoenix_core::retry::RetryPolicy;
use phoenix_lb::floating_ip::FloatingIpBalancer;
use phoenix_providers::openstack::testing::{MockApi, MockResponse};
use phoenix_providers::openstack::{Neutron, Session};
use serde_json::{json, Value};

const FIP: &str = "2f245a7b-796b-4f26-9cf9-9e82d248fda7";
const PORT_A: &str = "ce705c24-c1ef-408a-bda3-7bbd946164ab";
const PORT_B: &str = "fc861431-0e6c-4842-a0ed-e2363f9bc3a8";
const PORT_E: &str = "5e6f8b2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
/// Later servers given server-a's address once it was gone.
const PORT_A_NEXT: &str = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const PORT_A_LAST: &str = "8b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e";
/// A server with two ports.
const PORT_F1: &str = "9c3d4e5f-6a7b-4c8d-8e9f-1a2b3c4d5e6f";
const PORT_F2: &str = "0d4e5f6a-7b8c-4d9e-8f0a-2b3c4d5e6f7a";

struct Association {
    port: Option<String>,
    fixed: Option<String>,
}

fn port(id: &str, device: &str, ip: &str) -> Value {
    // The shape of the list-ports response sample.
    json!({"admin_state_up": true, "device_id": device, "device_owner": "compute:nova",
           "fixed_ips": [{"ip_address": ip, "subnet_id": "a0304c3a-4f08-4c43-88af-d796509c97d2"}],
           "id": id, "mac_address": "fa:16:3e:58:42:ed", "name": "",
           "network_id": "a87cc70a-3e15-4acf-8205-9b711a3531b7", "status": "ACTIVE",
           "tenant_id": "7e02058126cc4950b75f9970368ba177"})
}

fn ports() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (PORT_A, "server-a", "10.0.0.3"),
        (PORT_B, "server-b", "10.0.0.4"),
        (PORT_E, "server-e", "10.0.0.6"),
        (PORT_A_NEXT, "server-a-next", "10.0.0.3"),
        (PORT_A_LAST, "server-a-last", "10.0.0.3"),
        (PORT_F1, "server-f", "10.0.0.7"),
        (PORT_F2, "server-f", "10.0.1.7"),
    ]
}

fn floating_ip(a: &Association) -> Value {
    // The show-floating-IP response sample with the association filled in.
    json!({"floatingip": {
        "router_id": "d23abc8d-2991-4a55-ba98-2aaea84cc72f", "status": "ACTIVE",
        "description": "for test", "dns_domain": "my-domain.org.", "dns_name": "myfip",
        "tags": ["tag1,tag2"], "tenant_id": "4969c491a3c74ee4af974e6d800c62de",
        "created_at": "2016-12-21T10:55:50Z", "updated_at": "2016-12-21T10:55:53Z",
        "revision_number": 1, "project_id": "4969c491a3c74ee4af974e6d800c62de",
        "floating_network_id": "376da547-b977-4cfe-9cba-275c80debf57",
        "fixed_ip_address": a.fixed, "floating_ip_address": "172.24.4.228",
        "port_id": a.port, "id": FIP, "port_forwardings": []
    }})
}

fn serve(api: &MockApi) -> Arc<Mutex<Association>> {
    let state = Arc::new(Mutex::new(Association {
        port: None,
        fixed: None,
    }));
    let s = state.clone();
    api.on(
        "GET",
        &format!("/network/v2.0/floatingips/{FIP}"),
        move |_| MockResponse::json(200, floating_ip(&s.lock().unwrap())),
    );
    let s = state.clone();
    api.on(
        "PUT",
        &format!("/network/v2.0/floatingips/{FIP}"),
        move |r| {
            let body = r.json();
            let mut a = s.lock().unwrap();
            a.port = body["floatingip"]["port_id"].as_str().map(str::to_owned);
            a.fixed = match (&a.port, body["floatingip"]["fixed_ip_address"].as_str()) {
                (None, _) => None,
                (Some(_), Some(f)) => Some(f.to_owned()),
                (Some(p), None) => ports()
                    .into_iter()
                    .find(|(id, _, _)| id == p)
                    .map(|(_, _, ip)| ip.to_owned()),
            };
            MockResponse::json(200, floating_ip(&a))
        },
    );
    api.on("GET", "/network/v2.0/ports/*", |r| {
        let id = r.path.rsplit('/').next().unwrap_or_default();
        match ports().into_iter().find(|(p, _, _)| *p == id) {
            Some((p, d, ip)) => MockResponse::json(200, json!({ "port": port(p, d, ip) })),
            None => MockResponse::json(
                404,
                json!({"NeutronError": {"type": "PortNotFound",
                "message": format!("Port {id} could not be found."), "detail": ""}}),
            ),
        }
    });
    api.on("GET", "/network/v2.0/ports", |r| {
        let device = r.query_param("device_id").unwrap_or_default();
        let list: Vec<Value> = ports()
            .into_iter()
            .filter(|(_, d, _)| *d == device)
            .map(|(p, d, ip)| port(p, d, ip))
            .collect();
        MockResponse::json(200, json!({ "ports": list }))
    });
    state
}

fn balancer(api: &MockApi) -> FloatingIpBalancer {
    let config = api.serve_keystone_v3(&[("network", "/network/")]).unwrap();
    let session = Session::builder(config)
        .retry(RetryPolicy {
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            max_retries: 2,
            jitter_seed: Some(5),
        })
        .build()
        .unwrap();
    FloatingIpBalancer::new(Neutron::new(session), FIP, 443)
}

fn target(server: &str, ip: [u8; 4]) -> Target {
    Target {
        server: ServerId::new(server).unwrap(),
        endpoint: SocketAddr::from((ip, 443)),
    }
}

#[tokio::test]
async fn moving_the_address_is_one_update() {
    let api = MockApi::start().await.unwrap();
    let state = serve(&api);
    let lb = balancer(&api);
    assert!(lb.members().await.unwrap().is_empty(), "not associated yet");

    let a = target("server-a", [10, 0, 0, 3]);
    let b = target("server-b", [10, 0, 0, 4]);
    lb.attach(std::slice::from_ref(&a)).await.unwrap();
    let members = lb.members().await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].server, a.server);
    assert_eq!(members[0].endpoint, a.endpoint);
    assert_eq!(members[0].health, MemberHealth::Healthy);
    lb.attach(std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(
        api.requests_to("PUT", &format!("/network/v2.0/floatingips/{FIP}"))
            .len(),
        1,
        "attaching the holder again changes nothing"
    );

    // Blue-green for one server: the swap is the update.
    lb.swap(
        std::slice::from_ref(&b),
        std::slice::from_ref(&a.server),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let puts = api.requests_to("PUT", &format!("/network/v2.0/floatingips/{FIP}"));
    assert_eq!(puts.len(), 2);
    // The update-floating-IP request sample, with the fixed address.
    assert_eq!(
        puts[1].json(),
        json!({"floatingip": {"port_id": PORT_B, "fixed_ip_address": "10.0.0.4"}})
    );
    assert_eq!(state.lock().unwrap().port.as_deref(), Some(PORT_B));
    let members = lb.members().await.unwrap();
    assert_eq!(members[0].server, b.server);

    // Detaching a server the address no longer points at changes nothing;
    // detaching the holder disassociates.
    lb.detach(std::slice::from_ref(&a.server), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(state.lock().unwrap().port.as_deref(), Some(PORT_B));
    lb.detach(std::slice::from_ref(&b.server), Duration::ZERO)
        .await
        .unwrap();
    let puts = api.requests_to("PUT", &format!("/network/v2.0/floatingips/{FIP}"));
    assert_eq!(
        puts.last().unwrap().json(),
        json!({"floatingip": {"port_id": null}})
    );
    assert!(lb.members().await.unwrap().is_empty());
}

#[tokio::test]
async fn one_address_holds_one_server() {
    let api = MockApi::start().await.unwrap();
    serve(&api);
    let lb = balancer(&api);
    let caps = lb.capabilities();
    assert!(caps.atomic_swap && !caps.drain);
    assert_eq!(caps.max_batch, 1);
    let err = lb
        .attach(&[
            target("server-a", [10, 0, 0, 3]),
            target("server-b", [10, 0, 0, 4]),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Invalid(_)), "{err}");
    let err = lb
        .attach(&[target("server-c", [10, 0, 0, 5])])
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "a server without a port: {err}");
}

#[tokio::test]
async fn the_floating_ip_passes_the_load_balancer_conformance_suite() {
    let api = MockApi::start().await.unwrap();
    serve(&api);
    let lb = balancer(&api);
    // Another orchestrator process on the same floating IP.
    let second = balancer(&api);
    let fixture = LbFixture {
        healthy: vec![
            target("server-a", [10, 0, 0, 3]),
            target("server-b", [10, 0, 0, 4]),
            target("server-e", [10, 0, 0, 6]),
        ],
        unhealthy: None,
        settle: Duration::from_secs(5),
        drain: Duration::from_millis(100),
        poll: Duration::from_millis(20),
    };
    load_balancer::run_all(
        &lb,
        &fixture,
        &LbExtras {
            second: Some(&second),
            reuse: vec![
                target("server-a-next", [10, 0, 0, 3]),
                target("server-a-last", [10, 0, 0, 3]),
            ],
            single: true,
            ..LbExtras::default()
        },
    )
    .await;
}

/// The member is reported at the fixed address the floating IP maps to
/// and the service port, so an attach that would report another endpoint
/// than the target's is refused rather than done.
#[tokio::test]
async fn a_target_the_floating_ip_cannot_reach_exactly_is_refused() {
    let api = MockApi::start().await.unwrap();
    let state = serve(&api);
    let lb = balancer(&api);
    // server-f has no port with this address.
    let err = lb
        .attach(&[target("server-f", [10, 0, 0, 99])])
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Invalid(_)), "{err}");
    // Another service port than the floating IP's.
    let err = lb
        .attach(&[Target {
            server: ServerId::new("server-f").unwrap(),
            endpoint: SocketAddr::from(([10, 0, 0, 7], 8443)),
        }])
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Invalid(_)), "{err}");
    assert!(state.lock().unwrap().port.is_none(), "nothing moved");

    // The second of its ports, by its address.
    let second = target("server-f", [10, 0, 1, 7]);
    lb.attach(std::slice::from_ref(&second)).await.unwrap();
    let members = lb.members().await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].endpoint, second.endpoint);
    assert_eq!(state.lock().unwrap().port.as_deref(), Some(PORT_F2));
}
