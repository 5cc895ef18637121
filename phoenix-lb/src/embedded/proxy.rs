//! The data path: accept, pick a member, connect (retrying on another
//! member when a connect fails), then splice bytes both ways with
//! [`tokio::io::copy_bidirectional`] until either side closes, the member
//! is retired, or the balancer shuts down. A member that closes the
//! connection holding the first request unanswered has it sent to another
//! member when that is safe (see the `replay` module).

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::members::MemberEntry;
use super::routing;
use super::sniff::{Exchange, Side};
use super::stats::bump;
use super::Shared;

/// How long to wait after an accept error that is not about one connection
/// (out of file descriptors, say) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(5);

/// Accepts clients until shutdown; each gets its own task.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = shared.root.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, _peer)) => {
                let task_shared = shared.clone();
                shared.tracker.spawn(async move {
                    let root = task_shared.root.clone();
                    tokio::select! {
                        biased;
                        () = root.cancelled() => {}
                        () = serve(&task_shared, client) => {}
                    }
                });
            }
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(error = %e, "accept: a client went away before it was accepted");
            }
            Err(e) => {
                tracing::warn!(error = %e, listen = %shared.local_addr, "accept failed; backing off");
                tokio::select! {
                    biased;
                    () = shared.root.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn serve(shared: &Shared, client: TcpStream) {
    bump(&shared.counters.accepted);
    if let Err(e) = client.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY on a client connection");
    }
    let exchange = Arc::new(Exchange::new(shared.settings.redispatch_buffer));
    let mut client = Counted::new(client, Side::Client(exchange.clone()));
    let mut picks = Picks::default();
    // The first request again, when the member before dropped it.
    let mut resend: Option<Vec<u8>> = None;
    loop {
        let Some((backend, guard)) = connect_upstream(shared, &mut picks).await else {
            bump(&shared.counters.unserved);
            tracing::debug!(listen = %shared.local_addr, "no member could take a connection; closing it");
            return;
        };
        let entry = guard.entry.clone();
        let c = &entry.counters;
        bump(&c.connections_total);
        let mut backend = Counted::new(backend, Side::Member(exchange.clone(), entry.clone()));
        let from_client = client.read;
        let finished = match &resend {
            Some(bytes) => {
                bump(&shared.counters.redispatched);
                c.bytes_in.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                tracing::debug!(server = %entry.server, bytes = bytes.len(), "sending a dropped request to another member");
                match backend.write_all(bytes).await {
                    Ok(()) => splice(&mut client, &mut backend, &entry).await,
                    Err(e) => Some(Err(e)),
                }
            }
            None => splice(&mut client, &mut backend, &entry).await,
        };
        c.bytes_in
            .fetch_add(client.read - from_client, Ordering::Relaxed);
        c.bytes_out.fetch_add(backend.read, Ordering::Relaxed);
        if backend.dropped_a_request {
            bump(&c.unanswered);
            // Ranks it after members that have not failed (see `routing`).
            entry.recent_failures.fetch_add(1, Ordering::Relaxed);
            resend = if client.failed {
                None
            } else {
                exchange.replay.replayable()
            };
            tracing::debug!(
                server = %entry.server,
                redispatch = resend.is_some(),
                "the member closed the connection holding an unanswered request"
            );
            if resend.is_some() {
                continue;
            }
            return;
        }
        match finished {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                bump(&c.connection_errors);
                tracing::debug!(server = %entry.server, error = %e, "proxied connection ended with an error");
            }
            None => {
                bump(&c.forced_closes);
                bump(&shared.counters.forced_closes);
                tracing::debug!(server = %entry.server, "closing a connection the member's drain left open");
            }
        }
        return;
    }
}

/// Copies both ways until either side closes (`Some`), or the member is
/// retired or cut (`None`).
async fn splice(
    client: &mut Counted<TcpStream>,
    backend: &mut Counted<TcpStream>,
    entry: &MemberEntry,
) -> Option<io::Result<(u64, u64)>> {
    let cut = entry.cut_token();
    tokio::select! {
        biased;
        copied = tokio::io::copy_bidirectional(client, backend) => Some(copied),
        () = entry.retired.cancelled() => None,
        () = cut.cancelled() => None,
    }
}

/// The members one client connection was given so far, and how many
/// attempts that took (connects and redispatches alike).
#[derive(Default)]
struct Picks {
    tried: Vec<Arc<MemberEntry>>,
    made: u32,
}

/// Connects to the best eligible member not tried yet, moving on to the
/// next one when a connect fails, while attempts remain.
async fn connect_upstream(shared: &Shared, picks: &mut Picks) -> Option<(TcpStream, ActiveGuard)> {
    let settings = &shared.settings;
    let attempts = settings.connect_attempts;
    while picks.made < attempts {
        let guard = reserve(shared, &picks.tried)?;
        let entry = guard.entry.clone();
        picks.tried.push(entry.clone());
        picks.made += 1;
        let made = picks.made;
        let failure = match tokio::time::timeout(
            settings.connect_timeout,
            TcpStream::connect(entry.endpoint),
        )
        .await
        {
            Ok(Ok(stream)) => {
                entry.recent_failures.store(0, Ordering::Relaxed);
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY on a member connection");
                }
                return Some((stream, guard));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no connection within {:?}", settings.connect_timeout),
        };
        bump(&entry.counters.connect_failures);
        entry.recent_failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            server = %entry.server,
            endpoint = %entry.endpoint,
            attempt = made,
            of = attempts,
            error = %failure,
            "connecting to a member failed; trying the next one"
        );
    }
    None
}

/// How many times [`reserve`] reads the member set when the member it
/// picked refuses. A refusal means a drain began after the read, and the
/// control path stores the snapshot without the member before it closes
/// the member, so the next read sees the change: two reads suffice unless
/// the control path changes the set again meanwhile. The bound keeps a
/// connection from spinning while an operator flaps a pool.
const RESERVE_READS: usize = 16;

/// The best eligible member not in `exclude`, with one of its connection
/// slots taken; `None` when the set offers none.
///
/// A member that refuses (it began draining after the snapshot was read)
/// is not excluded: a swap back may re-open it, and the fresh snapshot
/// decides.
pub(crate) fn reserve(shared: &Shared, exclude: &[Arc<MemberEntry>]) -> Option<ActiveGuard> {
    for _ in 0..RESERVE_READS {
        let entry = {
            let set = shared.set.load();
            let start = shared.rr.fetch_add(1, Ordering::Relaxed);
            routing::pick(&set, exclude, start)?
        };
        if let Some(guard) = ActiveGuard::acquire(&entry) {
            return Some(guard);
        }
    }
    None
}

/// Holds one of a member's open-connection slots; releases it on drop and
/// wakes the member's drain when it was the last.
pub(crate) struct ActiveGuard {
    entry: Arc<MemberEntry>,
}

impl ActiveGuard {
    /// Takes a slot if the member still accepts connections.
    ///
    /// Count first, then check the flag (both sequentially consistent):
    /// the drain clears the flag, then reads the count. Either the drain
    /// sees this connection and waits for it, or this sees the flag
    /// cleared and backs off.
    pub(crate) fn acquire(entry: &Arc<MemberEntry>) -> Option<Self> {
        entry.active.fetch_add(1, Ordering::SeqCst);
        let guard = Self {
            entry: entry.clone(),
        };
        entry.accepting.load(Ordering::SeqCst).then_some(guard)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.entry.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.entry.idle.notify_waiters();
        }
    }
}

/// A stream that counts the bytes read from it (one addition per read
/// call, none per byte, and the count survives a cancelled copy), shows
/// its reads to the [`Side`] it is, and notes how it failed.
struct Counted<S> {
    inner: S,
    read: u64,
    side: Side,
    /// A read or a write failed.
    failed: bool,
    /// A member side only: it closed or failed while holding a request
    /// nothing was answered to.
    dropped_a_request: bool,
}

impl<S> Counted<S> {
    fn new(inner: S, side: Side) -> Self {
        Self {
            inner,
            read: 0,
            side,
            failed: false,
            dropped_a_request: false,
        }
    }

    /// Notes an I/O error; passes it on.
    fn note<T>(&mut self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(_)) = &polled {
            self.failed = true;
            if let Side::Member(x, _) = &self.side {
                if x.member_would_drop_a_request() {
                    self.dropped_a_request = true;
                }
            }
        }
        polled
    }

    /// The end of the stream. A member's that drops a replayable request
    /// becomes an error, so that the copy stops without passing the close
    /// on to the client: the request goes to another member instead.
    fn at_end(&mut self) -> io::Result<()> {
        match &self.side {
            Side::Client(x) => x.client_closed(),
            Side::Member(x, _) if x.member_would_drop_a_request() => {
                self.dropped_a_request = true;
                if x.replay.can_replay() {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the member closed the connection before answering",
                    ));
                }
            }
            Side::Member(..) | Side::Plain => {}
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.read = self.read.saturating_add(n as u64);
        if n > 0 {
            self.side.saw(&buf.filled()[before..]);
        } else if matches!(polled, Poll::Ready(Ok(()))) && buf.remaining() > 0 {
            return Poll::Ready(self.at_end());
        }
        self.note(polled)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.note(polled)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::SocketAddr;
    use std::sync::atomic::AtomicBool;

    use phoenix_core::id::ServerId;
    use phoenix_core::ports::{LoadBalancer, Target};

    use super::*;
    use crate::embedded::{EmbeddedBalancer, HealthCheck};

    fn target(name: &str, endpoint: SocketAddr) -> Target {
        Target {
            server: name.parse().unwrap(),
            endpoint,
        }
    }

    /// Swapping back to a pool that is still draining (its members hold
    /// open connections) re-opens the same members. A connection that
    /// reads the member set meanwhile must always find one to take it:
    /// this raced when the members were re-opened only after the new
    /// snapshot was stored, and the client was closed unserved.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn swapping_back_to_a_draining_pool_never_leaves_a_connection_unserved() {
        const SWAPS: usize = 5_000;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap();
        let lb = EmbeddedBalancer::builder()
            .health_check(HealthCheck::TcpConnect)
            .check_interval(Duration::from_secs(3600))
            .start()
            .await
            .unwrap();
        // One member per pool: a refused pick has no fallback.
        let blue = [target("blue-1", endpoint)];
        let green = [target("green-1", endpoint)];
        let blue_id: [ServerId; 1] = [blue[0].server.clone()];
        let green_id: [ServerId; 1] = [green[0].server.clone()];
        let drain = Duration::from_secs(3600);
        lb.attach(&blue).await.unwrap();
        lb.attach(&green).await.unwrap();
        // An open connection on each keeps their drains from ending, so
        // every swap re-opens a draining member rather than adding a new
        // one.
        let held: Vec<ActiveGuard> = lb
            .shared
            .set
            .load()
            .slots
            .iter()
            .map(|s| ActiveGuard::acquire(&s.entry).unwrap())
            .collect();
        lb.detach(&green_id, drain).await.unwrap();

        let shared = lb.shared.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let picker = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut served, mut unserved) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    match reserve(&shared, &[]) {
                        Some(guard) => {
                            served += 1;
                            drop(guard);
                        }
                        None => unserved += 1,
                    }
                }
                (served, unserved)
            })
        };
        for _ in 0..SWAPS {
            lb.swap(&green, &blue_id, drain).await.unwrap();
            lb.swap(&blue, &green_id, drain).await.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let (served, unserved) = picker.join().unwrap();
        eprintln!(
            "{} swaps: {served} reservations, {unserved} unserved",
            2 * SWAPS
        );
        assert!(served > 0);
        assert_eq!(unserved, 0, "a connection found no member to take it");
        drop(held);
        lb.shutdown().await;
    }
}
