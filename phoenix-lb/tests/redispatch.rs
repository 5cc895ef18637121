//! A member that dies holding a request: the connect succeeded (a dying
//! process's listen backlog still completes handshakes, or it accepted
//! just before the kill), the request went in, and the member closed or
//! reset the connection without a byte of answer.
//!
//! The local chaos drill met this: a client's stale keep-alive `GET` lost
//! its connection to the killed server, the client repeated it on a new
//! connection, and that one landed in the dying server's backlog and was
//! reset too. The client had used its one retry, and the request failed.
//!
//! The balancer still holds such a request's bytes (nothing was answered
//! on that connection), so for a safe method it sends them to another
//! member. A `POST` is never sent twice: the member may have acted on it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_healthy, Backend, Spec};
use phoenix_core::id::ServerId;
use phoenix_core::ports::{LoadBalancer, Target};
use phoenix_lb::embedded::{EmbeddedBalancer, HealthCheck};
use phoenix_lb::loadgen::{LoadGen, LoadGenConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the dying member lets go of a connection.
#[derive(Debug, Clone, Copy)]
enum Close {
    /// `RST`: the kernel resets what a killed process leaves unread.
    Reset,
    /// `FIN`: a process that exits after reading the request.
    Fin,
}

/// Accepts, reads one request head, records its request line and closes
/// without answering. Its port stays open, so TCP checks pass: the window
/// before the balancer's checks notice.
struct DyingMember {
    id: ServerId,
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DyingMember {
    async fn start(id: &str, close: Close) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let line = String::from_utf8_lossy(&head);
                        let line = line.lines().next().unwrap_or_default().to_owned();
                        seen.lock().unwrap().push(line);
                        if let Close::Reset = close {
                            socket2::SockRef::from(&stream)
                                .set_linger(Some(Duration::ZERO))
                                .unwrap();
                        }
                        drop(stream);
                    });
                }
            }
        });
        Self {
            id: id.parse().unwrap(),
            addr,
            seen,
            task,
        }
    }

    fn target(&self) -> Target {
        Target {
            server: self.id.clone(),
            endpoint: self.addr,
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for DyingMember {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A balancer over one dying member and one that answers, with TCP checks
/// (both pass them).
async fn balancer(dying: &DyingMember, live: &Backend) -> EmbeddedBalancer {
    let lb = EmbeddedBalancer::builder()
        .health_check(HealthCheck::TcpConnect)
        .check_interval(Duration::from_millis(100))
        .rise(1)
        .start()
        .await
        .unwrap();
    lb.attach(&[dying.target(), live.target()]).await.unwrap();
    wait_healthy(
        &lb,
        &[dying.id.clone(), live.id.clone()],
        Duration::from_secs(5),
    )
    .await;
    lb
}

async fn a_get_the_member_dropped_is_answered_by_another(close: Close) {
    let dying = DyingMember::start("dying", close).await;
    let live = Backend::start("live", Spec::release("v1")).await;
    let lb = balancer(&dying, &live).await;

    // A fresh connection per request and no client retry: any request the
    // balancer gives up on fails.
    let report = LoadGen::run(LoadGenConfig {
        rate: 200,
        max_requests: Some(40),
        duration: Duration::from_secs(10),
        concurrency: 2,
        fresh_ratio: 1.0,
        retry_before_response: false,
        request_timeout: Duration::from_secs(2),
        ..LoadGenConfig::new(lb.local_addr())
    })
    .await
    .unwrap();
    let stats = lb.stats();
    let taken = dying.seen().len() as u64;
    eprintln!("{close:?}: {report}; the dying member took {taken}; {stats:?}");

    assert_eq!(report.sent, 40, "{report}");
    assert_eq!(report.failed, 0, "{:?}", report.failure_samples);
    assert!(taken > 0, "the dying member was given requests");
    assert_eq!(live.hits(), 40, "each request was answered once, by live");
    assert_eq!(stats.redispatched, taken, "each dropped GET was sent again");
    assert_eq!(stats.member(&dying.id).unwrap().unanswered, taken);
    assert_eq!(stats.member(&live.id).unwrap().unanswered, 0);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_reset_before_any_answer_is_answered_by_another_member() {
    a_get_the_member_dropped_is_answered_by_another(Close::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_closed_before_any_answer_is_answered_by_another_member() {
    a_get_the_member_dropped_is_answered_by_another(Close::Fin).await;
}

/// Sends one `POST` on its own connection; whether a response came.
async fn post(lb: std::net::SocketAddr, n: usize) -> bool {
    let mut stream = TcpStream::connect(lb).await.unwrap();
    let body = format!("order={n}");
    let request = format!(
        "POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    answer.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_the_member_dropped_is_never_sent_twice() {
    let dying = DyingMember::start("dying", Close::Reset).await;
    let live = Backend::start("live", Spec::release("v1")).await;
    let lb = balancer(&dying, &live).await;

    let mut answered = 0;
    for n in 0..40 {
        if post(lb.local_addr(), n).await {
            answered += 1;
        }
    }
    let stats = lb.stats();
    let taken = dying.seen().len() as u64;
    eprintln!("{answered} of 40 POSTs answered; the dying member took {taken}");

    assert!(taken > 0, "the dying member was given requests");
    assert_eq!(live.hits() + taken, 40, "no POST reached two members");
    assert_eq!(answered, live.hits(), "a dropped POST fails at the client");
    assert_eq!(stats.redispatched, 0);
    assert_eq!(stats.member(&dying.id).unwrap().unanswered, taken);
    lb.shutdown().await;
}
