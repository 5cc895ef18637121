//! HAProxy's refusals as typed errors carrying its message, re-adoption of
//! members by a new balancer instance, weights and re-attaching.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(feature = "haproxy", feature = "embedded"))]

mod common;
mod haproxy_common;

use std::time::Duration;

use common::{find, wait_healthy, Backend, Spec};
use haproxy_common::haproxy;
use phoenix_core::id::ServerId;
use phoenix_core::ports::{ErrorKind, LoadBalancer, MemberState, Target};
use phoenix_lb::haproxy::{
    member_name, AdminState, CheckResult, HaproxyBalancer, HaproxyError, Mode, RuntimeApi,
    ServerCheck,
};

fn haproxy_error(e: &phoenix_core::ports::PortError) -> &HaproxyError {
    e.source
        .as_deref()
        .and_then(|s| s.downcast_ref::<HaproxyError>())
        .unwrap_or_else(|| panic!("not an HAProxy error: {}", e.chain()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn refusals_are_typed_errors_with_haproxys_message() {
    let a = Backend::start("err-a", Spec::release("v1")).await;
    let other = Backend::start("err-other", Spec::release("v1")).await;
    let h = haproxy(Mode::Http).await;
    let lb = h.balancer().build().unwrap();
    let be = h.backend();

    // The runtime API itself.
    let api = RuntimeApi::new(h.admin_socket());
    let e = api.del_server(be, "missing").await.unwrap_err();
    assert_eq!(e.haproxy_message(), Some("No such server."), "{e}");
    assert!(matches!(e.kind(), ErrorKind::NotFound(_)));
    let e = api
        .add_server(be, "x", a.addr, "bogus-keyword")
        .await
        .unwrap_err();
    assert!(
        e.haproxy_message()
            .is_some_and(|m| m.contains("unknown keyword 'bogus-keyword'")),
        "{e}"
    );
    assert!(matches!(e.kind(), ErrorKind::Invalid(_)));
    let e = api.servers_state("no-such-backend").await.unwrap_err();
    assert_eq!(e.haproxy_message(), Some("Can't find backend."), "{e}");
    // Deleting a server that is not in maintenance.
    api.add_server(be, "static-ish", a.addr, "").await.unwrap();
    api.set_server_state(be, "static-ish", AdminState::Ready)
        .await
        .unwrap();
    let e = api.del_server(be, "static-ish").await.unwrap_err();
    assert_eq!(
        e.haproxy_message(),
        Some("Only servers in maintenance mode can be deleted."),
        "{e}"
    );
    assert!(matches!(e.kind(), ErrorKind::Conflict(_)));
    // Servers Phoenix did not name are not members.
    assert!(lb.members().await.unwrap().is_empty());
    assert_eq!(lb.servers().await.unwrap().len(), 1);

    // Through the port: the same server at another address.
    let id: ServerId = "err-a".parse().unwrap();
    lb.attach(&[a.target()]).await.unwrap();
    let e = lb
        .attach(&[Target {
            server: id.clone(),
            endpoint: other.addr,
        }])
        .await
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Conflict(_)), "{}", e.chain());
    match haproxy_error(&e) {
        HaproxyError::EndpointConflict(c) => {
            assert_eq!((c.current, c.requested), (a.addr, other.addr));
            assert_eq!(
                c.message,
                "Already exists a server with the same name in backend."
            );
        }
        other => panic!("{other}"),
    }
    assert!(
        e.chain().contains("Already exists a server"),
        "{}",
        e.chain()
    );
    assert_eq!(
        find(&lb.members().await.unwrap(), &id).unwrap().endpoint,
        a.addr,
        "the member keeps its address"
    );

    // A backend that does not exist.
    let lost = HaproxyBalancer::builder()
        .runtime_api(h.admin_socket())
        .backend("nope")
        .build()
        .unwrap();
    let e = lost.members().await.unwrap_err();
    assert!(!e.is_retryable());
    assert!(e.chain().contains("Can't find backend."), "{}", e.chain());

    // Nothing listening: a temporary failure.
    let gone = HaproxyBalancer::builder()
        .runtime_api(h.admin_socket().with_file_name("absent.sock"))
        .backend(be)
        .build()
        .unwrap();
    let e = gone.members().await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Temporary(_)), "{}", e.chain());

    lb.detach(&[id], Duration::from_millis(100)).await.unwrap();
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn a_new_instance_finds_the_members_with_their_ids() {
    let backends = [
        Backend::start("web@blue+1_a", Spec::release("v1")).await,
        Backend::start("web-2.prod:x", Spec::release("v1")).await,
    ];
    let targets: Vec<Target> = backends.iter().map(Backend::target).collect();
    let ids: Vec<ServerId> = targets.iter().map(|t| t.server.clone()).collect();
    let h = haproxy(Mode::Http).await;
    let check = Some(ServerCheck::new(Duration::from_millis(50), 1, 2));
    {
        let first = h.balancer().check(check).build().unwrap();
        first.attach(&targets).await.unwrap();
        wait_healthy(&first, &ids, Duration::from_secs(5)).await;
    }
    // A restarted orchestrator: nothing but the socket and the backend.
    let second = h.balancer().check(check).build().unwrap();
    let members = second.members().await.unwrap();
    assert_eq!(members.len(), 2, "{members:?}");
    for t in &targets {
        let m = find(&members, &t.server).unwrap();
        assert_eq!(m.endpoint, t.endpoint);
        assert!(m.is_serving_healthy(), "{m}");
    }
    let names: Vec<String> = h
        .balancer()
        .build()
        .unwrap()
        .servers()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    for id in &ids {
        assert!(names.contains(&member_name(id)), "{names:?}");
    }

    // Weight 0 drains; attaching again restores it.
    second.set_weight(&ids[0], 0).await.unwrap();
    let m = second.members().await.unwrap();
    assert_eq!(find(&m, &ids[0]).unwrap().state, MemberState::Draining);
    assert!(matches!(
        second.set_weight(&ids[0], 300).await,
        Err(HaproxyError::InvalidSetting { .. })
    ));
    // Drained by someone else, too.
    second
        .api()
        .set_server_state(second.backend(), &member_name(&ids[1]), AdminState::Drain)
        .await
        .unwrap();
    second.attach(&targets).await.unwrap();
    let m = second.members().await.unwrap();
    assert!(m.iter().all(|m| m.state == MemberState::Active), "{m:?}");

    // In maintenance (an orchestrator that died mid-detach): attach
    // re-enables it; it comes back once its checks pass.
    second
        .api()
        .set_server_state(second.backend(), &member_name(&ids[0]), AdminState::Maint)
        .await
        .unwrap();
    let m = second.members().await.unwrap();
    assert_eq!(find(&m, &ids[0]).unwrap().state, MemberState::Disabled);
    second.attach(&targets).await.unwrap();
    wait_healthy(&second, &ids, Duration::from_secs(5)).await;

    // At weight 0 and in maintenance at once: leaving maintenance alone
    // would leave it taking no traffic.
    let weight = |servers: &[phoenix_lb::haproxy::ServerState]| {
        servers
            .iter()
            .find(|s| s.name == member_name(&ids[0]))
            .unwrap()
            .weight
    };
    let before = weight(&second.servers().await.unwrap());
    second.set_weight(&ids[0], 0).await.unwrap();
    second
        .api()
        .set_server_state(second.backend(), &member_name(&ids[0]), AdminState::Maint)
        .await
        .unwrap();
    second.attach(&targets).await.unwrap();
    assert_eq!(weight(&second.servers().await.unwrap()), before);
    wait_healthy(&second, &ids, Duration::from_secs(5)).await;

    second
        .detach(&ids, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(second.members().await.unwrap().is_empty());
    h.stop().await.unwrap();
}

/// HAProxy resets a server's `srv_check_result` to "unknown" when each
/// check starts and sets it again when the check ends, so a member that
/// has been up for a long time reads "unknown" while its next check is in
/// flight. That must still be a healthy member: an orchestrator that read
/// it as "not checked yet" would stall a cutover or count a serving pool
/// as short of healthy servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn a_healthy_member_stays_healthy_while_its_next_check_is_in_flight() {
    // Each check takes 40 of every 100 ms, so a read often lands in one.
    let spec = Spec::release("v1").health_delay(Duration::from_millis(40));
    let backends = [
        Backend::start("inflight-a", spec.clone()).await,
        Backend::start("inflight-b", spec).await,
    ];
    let targets: Vec<Target> = backends.iter().map(Backend::target).collect();
    let ids: Vec<ServerId> = targets.iter().map(|t| t.server.clone()).collect();
    let h = haproxy(Mode::Http).await;
    let lb = h
        .balancer()
        .check(Some(ServerCheck::new(Duration::from_millis(100), 1, 2)))
        .build()
        .unwrap();
    lb.attach(&targets).await.unwrap();
    wait_healthy(&lb, &ids, Duration::from_secs(5)).await;

    let (mut in_flight, mut not_healthy) = (0, Vec::new());
    for _ in 0..150 {
        let raw = lb.api().servers_state(lb.backend()).await.unwrap();
        in_flight += raw
            .iter()
            .filter(|s| s.check_result == CheckResult::Unknown)
            .count();
        for m in lb.members().await.unwrap() {
            if !m.is_serving_healthy() {
                not_healthy.push(m.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    eprintln!("reads that caught a check in flight: {in_flight}");
    assert!(
        in_flight > 0,
        "no read caught a check in flight, so this test proved nothing"
    );
    assert!(
        not_healthy.is_empty(),
        "{} reads: {not_healthy:?}",
        not_healthy.len()
    );
    lb.detach(&ids, Duration::from_millis(200)).await.unwrap();
    h.stop().await.unwrap();
}
