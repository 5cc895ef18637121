//! The admin socket: a balancer served to another process, driven through
//! the port, passes the conformance suite, and errors keep their class.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{quick_lb, Backend, HeldOpen, Spec};
use phoenix_core::conformance::load_balancer::{self, LbExtras, LbFixture};
use phoenix_core::ports::{LoadBalancer, Target};
use phoenix_lb::embedded::EmbeddedBalancer;
use phoenix_lb::remote::{serve, RemoteBalancer};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_balancer_conforms_through_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("lb.sock");
    let lb = Arc::new(quick_lb(Duration::from_millis(50)).start().await.unwrap());
    let _admin = serve(lb.clone(), &sock, CancellationToken::new()).unwrap();
    let mode = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let remote = RemoteBalancer::connect(&sock).await.unwrap();
    assert!(
        remote.capabilities().atomic_swap,
        "capabilities cross the socket"
    );
    let a = Backend::start("remote-a", Spec::release("v1")).await;
    let b = Backend::start("remote-b", Spec::release("v1")).await;
    let c = Backend::start("remote-c", Spec::release("v1")).await;
    let bad = Backend::start("remote-bad", Spec::release("v1").health(500)).await;
    // Another process's client on the same socket.
    let other = RemoteBalancer::connect(&sock).await.unwrap();
    let held = HeldOpen::new(lb.clone());
    load_balancer::run_all(
        &remote,
        &LbFixture {
            healthy: vec![a.target(), b.target(), c.target()],
            unhealthy: Some(bad.target()),
            settle: Duration::from_secs(5),
            drain: Duration::from_millis(200),
            poll: Duration::from_millis(20),
        },
        &LbExtras {
            second: Some(&other),
            out_of_band: Some(&held),
            ..LbExtras::default()
        },
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_balancer_is_a_temporary_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = RemoteBalancer::connect(dir.path().join("nothing.sock"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // A socket that answers garbage is a bad response, not a panic.
    let sock = dir.path().join("garbage.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"not json\n").await;
        }
    });
    let err = RemoteBalancer::connect(&sock).await.unwrap_err();
    assert!(
        matches!(err.kind, phoenix_core::ports::ErrorKind::BadResponse(_)),
        "{err}"
    );
}

#[tokio::test]
async fn port_errors_keep_their_class_across_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("lb.sock");
    let lb = EmbeddedBalancer::builder().start().await.unwrap();
    let _admin = serve(Arc::new(lb), &sock, CancellationToken::new()).unwrap();
    let remote = RemoteBalancer::connect(&sock).await.unwrap();
    let a = Backend::start("remote-err", Spec::release("v1")).await;
    let t = a.target();
    remote.attach(std::slice::from_ref(&t)).await.unwrap();
    // The same server at another address is refused by the balancer.
    let conflicting = Target {
        server: t.server.clone(),
        endpoint: "127.0.0.1:1".parse().unwrap(),
    };
    let err = remote.attach(&[conflicting]).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("remote balancer"), "{err}");
}
