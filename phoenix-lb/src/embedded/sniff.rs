//! What the proxy sees of HTTP without parsing it: a read from a member
//! that starts with an HTTP/1 status line is a response (counted, 5xx
//! counted apart), and the time from the client's request bytes to it is
//! the response time. The proxy stays a byte splicer: a response whose
//! status line does not start a read (pipelined requests) is not counted,
//! and non-HTTP traffic counts connections only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::members::MemberEntry;
use super::replay::Replay;
use super::stats::bump;

/// One proxied connection's request in flight.
#[derive(Debug)]
pub(crate) struct Exchange {
    asked_at: Mutex<Option<Instant>>,
    /// The first request, kept for redispatch.
    pub(crate) replay: Replay,
    /// The client closed its side (end of stream).
    client_closed: AtomicBool,
}

impl Exchange {
    /// Keeps up to `replay_limit` bytes of the first request.
    pub(crate) fn new(replay_limit: usize) -> Self {
        Self {
            asked_at: Mutex::new(None),
            replay: Replay::new(replay_limit),
            client_closed: AtomicBool::new(false),
        }
    }

    /// The client ended its side of the connection.
    pub(crate) fn client_closed(&self) {
        self.client_closed.store(true, Ordering::Relaxed);
    }

    /// A member closing now drops a request it was given: the client sent
    /// one, kept its side open, and nothing was answered.
    pub(crate) fn member_would_drop_a_request(&self) -> bool {
        !self.client_closed.load(Ordering::Relaxed) && self.replay.holds_a_request()
    }

    /// The client sent bytes: a request starts, unless one is in flight.
    pub(crate) fn client_sent(&self) {
        if let Ok(mut at) = self.asked_at.lock() {
            at.get_or_insert_with(Instant::now);
        }
    }

    /// The member sent `chunk`: counts it when it starts a response.
    pub(crate) fn member_sent(&self, entry: &MemberEntry, chunk: &[u8]) {
        let Some(status) = status_class(chunk) else {
            return;
        };
        let c = &entry.counters;
        bump(&c.responses);
        if status == b'5' {
            bump(&c.responses_5xx);
        }
        let asked = self.asked_at.lock().ok().and_then(|mut at| at.take());
        if let Some(asked) = asked {
            let micros = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
            c.latency_us_total.fetch_add(micros, Ordering::Relaxed);
            bump(&c.latency_samples);
        }
    }
}

/// The first digit of the status of an HTTP/1 status line at the start of
/// `chunk` (`HTTP/1.1 503 …` gives `b'5'`).
fn status_class(chunk: &[u8]) -> Option<u8> {
    if chunk.len() < 12 || !chunk.starts_with(b"HTTP/1.") || chunk[8] != b' ' {
        return None;
    }
    let digit = chunk[9];
    digit.is_ascii_digit().then_some(digit)
}

/// Which side of a connection a wrapped stream is.
#[derive(Debug, Default)]
pub(crate) enum Side {
    /// Not watched.
    #[default]
    Plain,
    /// The client: its reads start requests.
    Client(Arc<Exchange>),
    /// The member: its reads may start responses.
    Member(Arc<Exchange>, Arc<MemberEntry>),
}

impl Side {
    pub(crate) fn saw(&self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        match self {
            Self::Plain => {}
            Self::Client(x) => {
                x.client_sent();
                x.replay.client_sent(chunk);
            }
            Self::Member(x, entry) => {
                x.replay.answered();
                x.member_sent(entry, chunk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::status_class;

    #[test]
    fn status_lines_are_recognised_only_at_the_start() {
        assert_eq!(
            status_class(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(b'5')
        );
        assert_eq!(status_class(b"HTTP/1.0 200 OK\r\n\r\n"), Some(b'2'));
        assert_eq!(status_class(b"body HTTP/1.1 500 x"), None);
        assert_eq!(status_class(b"HTTP/1.1"), None);
        assert_eq!(status_class(b"HTTP/1.1 abc xxxxxxxx"), None);
    }
}
