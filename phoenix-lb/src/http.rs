//! The small HTTP/1.1 client that health checks, the probe and the load
//! generator share: `GET` requests on connections this crate opens and
//! owns (no pool, no background task per connection), response bodies
//! counted frame by frame rather than buffered.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{HeaderValue, CONNECTION, HOST, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The request body type: `GET`s carry none.
pub(crate) type ReqBody = Empty<Bytes>;
/// A client connection's driver future.
pub(crate) type ClientConn = Connection<TokioIo<TcpStream>, ReqBody>;

const USER_AGENT_VALUE: &str = concat!("phoenix-lb/", env!("CARGO_PKG_VERSION"));

/// Why an HTTP exchange failed, and where.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// The request path is not a valid origin-form target.
    #[error("invalid request path {path:?}: {reason}")]
    InvalidPath {
        path: String,
        reason: &'static str,
        #[source]
        source: Option<hyper::http::uri::InvalidUri>,
    },
    /// The request could not be assembled.
    #[error("building the request for {path:?}")]
    BuildRequest {
        path: String,
        #[source]
        source: hyper::http::Error,
    },
    /// The TCP connection failed.
    #[error("connecting to {endpoint}")]
    Connect {
        endpoint: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TCP connection was not established in time.
    #[error("connecting to {endpoint}: no connection within {after:?}")]
    ConnectTimeout {
        endpoint: SocketAddr,
        after: Duration,
    },
    /// hyper refused to set up the connection.
    #[error("setting up HTTP/1.1 on the connection to {endpoint}")]
    Handshake {
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The connection failed or closed before the response head arrived.
    #[error("{endpoint} gave no response")]
    BeforeResponse {
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The response head arrived, then the body failed.
    #[error("{endpoint} failed while sending the response body")]
    Body {
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The response body is larger than the caller accepts.
    #[error("the response body from {endpoint} exceeds {limit} bytes")]
    BodyTooLarge { endpoint: SocketAddr, limit: u64 },
    /// No complete answer in time.
    #[error("no complete answer from {endpoint} within {after:?}")]
    Timeout {
        endpoint: SocketAddr,
        after: Duration,
    },
}

impl HttpError {
    /// True when the connection closed or was reset before any response
    /// arrived (not for an unparsable answer): an idempotent request may
    /// then be repeated on a new connection.
    pub(crate) fn closed_before_response(&self) -> bool {
        match self {
            Self::BeforeResponse { source, .. } => {
                !(source.is_parse() || source.is_user() || source.is_timeout())
            }
            _ => false,
        }
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The status.
    pub(crate) status: StatusCode,
    /// The [`crate::RELEASE_HEADER`] value, if any.
    pub(crate) release: Option<HeaderValue>,
    /// Body bytes received.
    pub(crate) body_bytes: u64,
    /// The connection ended with this exchange (the server closed it, or
    /// answered `Connection: close`): it must not be reused.
    pub(crate) connection_done: bool,
}

/// Checks that `path` is an origin-form request target (`/x?y`).
pub(crate) fn validate_path(path: &str) -> Result<(), HttpError> {
    let invalid = |reason: &'static str, source| HttpError::InvalidPath {
        path: path.to_owned(),
        reason,
        source,
    };
    let uri: Uri = path
        .parse()
        .map_err(|e| invalid("not a valid request target", Some(e)))?;
    if !path.starts_with('/') || uri.scheme().is_some() || uri.authority().is_some() {
        return Err(invalid("it must start with '/' (origin form)", None));
    }
    Ok(())
}

/// A `GET path` request for `endpoint`; `close` asks the server to close
/// the connection after answering.
pub(crate) fn get_request(
    endpoint: SocketAddr,
    path: &str,
    close: bool,
) -> Result<Request<ReqBody>, HttpError> {
    let mut builder = Request::get(path)
        .header(HOST, endpoint.to_string())
        .header(USER_AGENT, USER_AGENT_VALUE);
    if close {
        builder = builder.header(CONNECTION, "close");
    }
    builder
        .body(Empty::new())
        .map_err(|source| HttpError::BuildRequest {
            path: path.to_owned(),
            source,
        })
}

/// Opens a TCP connection (with `TCP_NODELAY`) within `timeout`.
pub(crate) async fn connect(
    endpoint: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, HttpError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(endpoint))
        .await
        .map_err(|_| HttpError::ConnectTimeout {
            endpoint,
            after: timeout,
        })?
        .map_err(|source| HttpError::Connect { endpoint, source })?;
    // Latency matters more than packet count for requests this small; a
    // failure here only costs a little latency.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%endpoint, error = %e, "could not set TCP_NODELAY");
    }
    Ok(stream)
}

/// Sets HTTP/1.1 up on a connected stream.
pub(crate) async fn handshake(
    stream: TcpStream,
    endpoint: SocketAddr,
) -> Result<(SendRequest<ReqBody>, ClientConn), HttpError> {
    http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| HttpError::Handshake { endpoint, source })
}

/// Waits until a kept-alive connection takes another request. `Ok(false)`
/// when the server has closed it meanwhile (the caller opens another one,
/// as connection pools do).
pub(crate) async fn ready(
    sender: &mut SendRequest<ReqBody>,
    mut conn: Pin<&mut ClientConn>,
    endpoint: SocketAddr,
) -> Result<bool, HttpError> {
    if sender.is_closed() {
        return Ok(false);
    }
    tokio::select! {
        biased;
        ready = sender.ready() => match ready {
            Ok(()) => Ok(true),
            Err(e) if e.is_closed() || e.is_canceled() => Ok(false),
            Err(source) => Err(HttpError::BeforeResponse { endpoint, source }),
        },
        _ = conn.as_mut() => Ok(false),
    }
}

/// Sends `request` and reads the whole answer (up to `body_limit` body
/// bytes) while driving `conn`. Hands `conn` back when it can take another
/// request: not after an error, nor when its driver finished (the server
/// closed the connection, or answered `Connection: close`).
pub(crate) async fn exchange(
    sender: &mut SendRequest<ReqBody>,
    mut conn: Pin<Box<ClientConn>>,
    request: Request<ReqBody>,
    endpoint: SocketAddr,
    body_limit: u64,
) -> (Result<Answer, HttpError>, Option<Pin<Box<ClientConn>>>) {
    let response = read_answer(sender, request, endpoint, body_limit);
    tokio::pin!(response);
    tokio::select! {
        biased;
        answer = &mut response => {
            let reusable = matches!(&answer, Ok(a) if !a.connection_done);
            (answer, reusable.then_some(conn))
        }
        _ = conn.as_mut() => {
            // The driver is done: the connection closed or failed. Dropping
            // it resolves the request with what was delivered, or with an
            // error if the request was still queued or unanswered.
            drop(conn);
            let answer = response.await.map(|mut a| {
                a.connection_done = true;
                a
            });
            (answer, None)
        }
    }
}

async fn read_answer(
    sender: &mut SendRequest<ReqBody>,
    request: Request<ReqBody>,
    endpoint: SocketAddr,
    body_limit: u64,
) -> Result<Answer, HttpError> {
    let response = sender
        .send_request(request)
        .await
        .map_err(|source| HttpError::BeforeResponse { endpoint, source })?;
    let status = response.status();
    let release = response.headers().get(crate::RELEASE_HEADER).cloned();
    let close = response
        .headers()
        .get(CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let mut body = response.into_body();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| HttpError::Body { endpoint, source })?;
        if let Some(data) = frame.data_ref() {
            body_bytes = body_bytes.saturating_add(data.len() as u64);
            if body_bytes > body_limit {
                return Err(HttpError::BodyTooLarge {
                    endpoint,
                    limit: body_limit,
                });
            }
        }
    }
    Ok(Answer {
        status,
        release,
        body_bytes,
        connection_done: close,
    })
}

/// One `GET path` on a new connection, closed afterwards, all within
/// `timeout`.
pub(crate) async fn get_once(
    endpoint: SocketAddr,
    path: &str,
    timeout: Duration,
    body_limit: u64,
) -> Result<Answer, HttpError> {
    let request = get_request(endpoint, path, true)?;
    let attempt = async {
        let stream = connect(endpoint, timeout).await?;
        let (mut sender, conn) = handshake(stream, endpoint).await?;
        exchange(&mut sender, Box::pin(conn), request, endpoint, body_limit)
            .await
            .0
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| HttpError::Timeout {
            endpoint,
            after: timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_origin_form() {
        assert!(validate_path("/health").is_ok());
        assert!(validate_path("/a/b?c=d").is_ok());
        assert!(validate_path("health").is_err());
        assert!(validate_path("http://example.invalid/health").is_err());
        assert!(validate_path("/with space").is_err());
        assert!(validate_path("").is_err());
    }
}
