//! Redispatch: a client connection's first request, kept until its member
//! answers, so that a member dying with it (it closed or reset the
//! connection before a byte of answer) does not fail it.
//!
//! A killed server can take a connection after the kill: its listen
//! backlog completes handshakes until the kernel tears the process down,
//! and a connect that succeeded is then reset with the request inside.
//! The client cannot tell this from a request the server acted on, so it
//! may not repeat it. The balancer can for a safe method (`GET`, `HEAD`,
//! `OPTIONS`: RFC 9110 §9.2.1 — acting on one twice changes nothing), and
//! as long as nothing was answered on the connection, so that the
//! request's bytes are all it has seen of it. It sends them to another
//! member, which answers as if it had been picked in the first place.
//!
//! Only the first exchange is kept: after an answer the balancer, which
//! splices bytes without parsing HTTP, no longer knows where a request
//! starts. A request larger than the buffer is not kept either.

use std::sync::{Mutex, PoisonError};

/// Request methods whose request a member dropped may be sent again: the
/// safe ones, with the space that ends the method token.
const SAFE_METHODS: [&[u8]; 3] = [b"GET ", b"HEAD ", b"OPTIONS "];

/// The first exchange of one client connection, as far as redispatch
/// needs it.
#[derive(Debug)]
pub(crate) struct Replay {
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    /// Nothing answered yet; `bytes` is all the client sent, unless it
    /// outgrew `limit` (then `None`: nothing to replay); `sent` says
    /// whether the client sent anything.
    Unanswered {
        bytes: Option<Vec<u8>>,
        sent: bool,
        limit: usize,
    },
    /// A member sent something: the exchange is its to finish.
    Answered,
}

impl Replay {
    /// Keeps up to `limit` bytes of the first request; 0 keeps nothing
    /// (redispatch off).
    pub(crate) fn new(limit: usize) -> Self {
        let bytes = (limit > 0).then(Vec::new);
        Self {
            state: Mutex::new(State::Unanswered {
                bytes,
                sent: false,
                limit,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client sent `chunk`.
    pub(crate) fn client_sent(&self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        if let State::Unanswered { bytes, sent, limit } = &mut *self.state() {
            *sent = true;
            if let Some(kept) = bytes {
                if kept.len() + chunk.len() > *limit {
                    *bytes = None;
                } else {
                    kept.extend_from_slice(chunk);
                }
            }
        }
    }

    /// A member sent its first bytes: nothing is replayed from now on.
    pub(crate) fn answered(&self) {
        let mut state = self.state();
        if matches!(*state, State::Unanswered { .. }) {
            *state = State::Answered;
        }
    }

    /// Whether nothing was answered yet and the client sent something:
    /// the member that closes now dropped a request.
    pub(crate) fn holds_a_request(&self) -> bool {
        matches!(*self.state(), State::Unanswered { sent: true, .. })
    }

    /// Whether the exchange can be replayed: unanswered, kept whole, and
    /// a safe method's request.
    pub(crate) fn can_replay(&self) -> bool {
        matches!(&*self.state(), State::Unanswered { bytes: Some(bytes), .. } if is_safe(bytes))
    }

    /// The bytes to send to the next member, when the exchange
    /// [can be replayed](Self::can_replay).
    pub(crate) fn replayable(&self) -> Option<Vec<u8>> {
        match &*self.state() {
            State::Unanswered {
                bytes: Some(bytes), ..
            } if is_safe(bytes) => Some(bytes.clone()),
            _ => None,
        }
    }
}

fn is_safe(request: &[u8]) -> bool {
    SAFE_METHODS.iter().any(|m| request.starts_with(m))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::Replay;

    #[test]
    fn a_safe_unanswered_request_is_replayable_whole() {
        let r = Replay::new(64);
        assert!(!r.holds_a_request());
        assert_eq!(r.replayable(), None);
        r.client_sent(b"GET /a HTTP/1.1\r\n");
        r.client_sent(b"Host: x\r\n\r\n");
        assert!(r.holds_a_request());
        assert!(r.can_replay());
        assert_eq!(
            r.replayable().unwrap(),
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        for method in ["HEAD", "OPTIONS"] {
            let r = Replay::new(64);
            r.client_sent(format!("{method} / HTTP/1.1\r\n\r\n").as_bytes());
            assert!(r.replayable().is_some(), "{method}");
        }
    }

    #[test]
    fn unsafe_methods_answered_exchanges_and_oversized_requests_are_not() {
        for request in [
            &b"POST /orders HTTP/1.1\r\n\r\n"[..],
            b"PUT /a HTTP/1.1\r\n\r\n",
            b"DELETE /a HTTP/1.1\r\n\r\n",
            b"GETX / HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01 tls",
        ] {
            let r = Replay::new(64);
            r.client_sent(request);
            assert!(r.holds_a_request());
            assert!(!r.can_replay());
            assert_eq!(r.replayable(), None, "{}", String::from_utf8_lossy(request));
        }
        let r = Replay::new(64);
        r.client_sent(b"GET / HTTP/1.1\r\n\r\n");
        r.answered();
        assert!(!r.holds_a_request());
        assert_eq!(r.replayable(), None);
        r.client_sent(b"GET /next HTTP/1.1\r\n\r\n");
        assert_eq!(r.replayable(), None, "only the first exchange");

        let r = Replay::new(16);
        r.client_sent(b"GET /a-long-path HTTP/1.1\r\n\r\n");
        assert!(r.holds_a_request());
        assert_eq!(r.replayable(), None);
        r.client_sent(b"x");
        assert_eq!(r.replayable(), None, "stays dropped once outgrown");

        let off = Replay::new(0);
        off.client_sent(b"GET / HTTP/1.1\r\n\r\n");
        assert!(off.holds_a_request());
        assert_eq!(off.replayable(), None);
    }
}
