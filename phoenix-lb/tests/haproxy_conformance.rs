//! The `LoadBalancer` contract against a real haproxy, through its runtime
//! API, with real HTTP backends on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(feature = "haproxy", feature = "embedded"))]

mod common;
mod haproxy_common;

use std::time::Duration;

use async_trait::async_trait;
use common::{get, wait_healthy, Backend, Spec};
use haproxy_common::haproxy;
use phoenix_core::conformance::load_balancer::{
    run_all, LbExtras, LbFixture, OutOfBand, Sidelined, Unparsable,
};
use phoenix_core::id::ServerId;
use phoenix_core::ports::{LoadBalancer, Target};
use phoenix_lb::haproxy::{
    member_name, AdminState, ConnectionMode, HaproxyBalancer, LocalHaproxy, Mode, RuntimeApi,
    ServerCheck,
};

struct Backends {
    a: Backend,
    b: Backend,
    c: Backend,
    bad: Backend,
}

async fn backends(prefix: &str) -> Backends {
    Backends {
        a: Backend::start(&format!("{prefix}-a"), Spec::release("v1")).await,
        b: Backend::start(&format!("{prefix}-b"), Spec::release("v1")).await,
        c: Backend::start(&format!("{prefix}-c"), Spec::release("v1")).await,
        bad: Backend::start(&format!("{prefix}-bad"), Spec::release("v1").health(500)).await,
    }
}

fn fixture(b: &Backends) -> LbFixture {
    LbFixture {
        healthy: vec![b.a.target(), b.b.target(), b.c.target()],
        unhealthy: Some(b.bad.target()),
        settle: Duration::from_secs(5),
        drain: Duration::from_millis(300),
        poll: Duration::from_millis(10),
    }
}

/// Runtime-API commands behind the balancer's back: an operator's, or
/// what a detach that stopped part-way leaves (`drain`, then `maint`,
/// before `del server`).
struct Behind {
    api: RuntimeApi,
    backend: String,
}

/// A Phoenix-named server that HAProxy has no address for (a name it
/// could not resolve): the balancer cannot tell where it sends traffic.
fn stray() -> String {
    member_name(&ServerId::new("stray").unwrap())
}

#[async_trait]
impl OutOfBand for Behind {
    fn sidelines(&self) -> Vec<Sidelined> {
        vec![
            Sidelined::Draining,
            Sidelined::ZeroWeight,
            Sidelined::Disabled,
            Sidelined::DrainedThenDisabled,
        ]
    }

    async fn sideline(&self, member: &Target, how: Sidelined) {
        let (be, name) = (self.backend.as_str(), member_name(&member.server));
        let states: &[AdminState] = match how {
            Sidelined::Draining => &[AdminState::Drain],
            Sidelined::Disabled => &[AdminState::Maint],
            Sidelined::DrainedThenDisabled => &[AdminState::Drain, AdminState::Maint],
            _ => &[],
        };
        for state in states {
            self.api.set_server_state(be, &name, *state).await.unwrap();
        }
        if how == Sidelined::ZeroWeight {
            self.api.set_weight(be, &name, 0).await.unwrap();
        }
    }

    async fn add_unparsable(&self) -> Option<Unparsable> {
        let answer = self
            .api
            .execute(&format!(
                "add server {}/{} backend.example.invalid:80",
                self.backend,
                stray()
            ))
            .await
            .unwrap();
        assert!(answer.contains("New server registered"), "{answer}");
        Some(Unparsable {
            endpoint: None,
            what: "a Phoenix-named server without an address".into(),
        })
    }

    async fn remove_unparsable(&self) {
        self.api.del_server(&self.backend, &stray()).await.unwrap();
    }
}

async fn conforms(lb: &HaproxyBalancer, second: &HaproxyBalancer, b: &Backends) {
    let caps = lb.capabilities();
    assert!(!caps.atomic_swap, "HAProxy has no multi-server transaction");
    assert!(caps.drain && caps.reports_connections);
    let behind = Behind {
        api: RuntimeApi::new(lb.api().addr().clone()),
        backend: lb.backend().to_owned(),
    };
    let extras = LbExtras {
        second: Some(second),
        out_of_band: Some(&behind),
        ..LbExtras::default()
    };
    tokio::time::timeout(Duration::from_secs(60), run_all(lb, &fixture(b), &extras))
        .await
        .expect("the suite finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn haproxy_conforms_over_its_unix_socket_in_http_mode() {
    let b = backends("conf").await;
    let h = haproxy(Mode::Http).await;
    let build = || {
        h.balancer()
            .check(Some(ServerCheck::new(Duration::from_millis(50), 1, 2)))
            .build()
            .unwrap()
    };
    let (lb, second) = (build(), build());
    conforms(&lb, &second, &b).await;

    // Traffic goes where the members say.
    lb.attach(&[b.c.target()]).await.unwrap();
    wait_healthy(&lb, std::slice::from_ref(&b.c.id), Duration::from_secs(5)).await;
    let before = b.c.hits();
    for _ in 0..5 {
        let (status, release) = get(h.frontend_addr(), "/").await.unwrap();
        assert_eq!((status, release.as_deref()), (200, Some("v1")));
    }
    assert_eq!(b.c.hits(), before + 5);
    lb.detach(std::slice::from_ref(&b.c.id), Duration::from_millis(300))
        .await
        .unwrap();
    assert!(lb.members().await.unwrap().is_empty());
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn haproxy_conforms_over_tcp_one_connection_per_command_in_tcp_mode() {
    let b = backends("conf-tcp").await;
    let h = haproxy_common::start(LocalHaproxy::builder().mode(Mode::Tcp).admin_tcp(true)).await;
    let build = || {
        HaproxyBalancer::builder()
            .runtime_api(h.admin_tcp().unwrap())
            .backend(h.backend())
            .connection_mode(ConnectionMode::PerCommand)
            .check(Some(ServerCheck::new(Duration::from_millis(50), 1, 2)))
            .build()
            .unwrap()
    };
    let (lb, second) = (build(), build());
    conforms(&lb, &second, &b).await;
    h.stop().await.unwrap();
}
