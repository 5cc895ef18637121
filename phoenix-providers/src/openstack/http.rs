//! The authenticated session every OpenStack adapter shares: one reqwest
//! client (rustls), one cached token, endpoint selection from the token's
//! catalog, the shared [`RetryPolicy`], error classification, and counters
//! of the API calls made.
//!
//! Errors are [`PortError`]s: 429 and 413 are `Throttled` with the
//! Retry-After (seconds or an HTTP date, or Rackspace's `retryAfter` in the
//! body); 5xx, connection failures and timeouts are `Temporary`; 409 and
//! 422 (a balancer that is immutable while it updates) are `Temporary`;
//! 404 is `NotFound`; 400 is `Invalid`; a 401 re-authenticates once and
//! then, like 403, is `Unauthorized`; an answer that is not the JSON
//! expected is `BadResponse` naming the operation with an excerpt of the
//! body. Secrets (credentials, tokens) are scrubbed from every message and
//! never logged.
//!
//! ```no_run
//! use phoenix_providers::openstack::{ApiRequest, CloudConfig, Session};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::new(CloudConfig::from_env()?)?;
//! let servers = session
//!     .send(ApiRequest::get("compute", "/servers/detail", "/servers/detail".into()))
//!     .await?;
//! let body: serde_json::Value = servers.json()?;
//! println!("{} servers; calls so far: {:?}", body["servers"].as_array().map_or(0, Vec::len),
//!     session.stats().snapshot());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use phoenix_core::ports::{ErrorKind, PortError, RetryClass};
use phoenix_core::retry::{Classify, RetryPolicy};
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use super::auth::{self, Token, TokenCache};
pub(crate) use super::classify::classify;
pub use super::classify::http_status;
use super::config::CloudConfig;
use super::error::ConfigError;
pub use crate::api_stats::ApiStats;
use crate::redact::excerpt;
pub(crate) use crate::redact::Redactor;

/// Which failures the session retries for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Throttling and transient failures: for reads and idempotent writes.
    Idempotent,
    /// Only throttling (nothing was done): for creates, where a 5xx or a
    /// timeout leaves the outcome unknown and the caller must look first.
    ThrottledOnly,
    /// Nothing: the caller retries with its own logic.
    Never,
}

/// A request body.
#[derive(Clone)]
enum Body {
    Json(serde_json::Value),
    JsonPatch(serde_json::Value),
}

/// One API call: the service (catalog type), method, a path template for
/// counting and messages, the path itself, and how to retry. Its `Debug`
/// leaves the body out: it may hold user data with secrets.
#[derive(Clone)]
pub struct ApiRequest {
    service: String,
    service_name: Option<String>,
    method: Method,
    template: &'static str,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Body>,
    headers: Vec<(&'static str, String)>,
    retry: Retry,
    version: Option<&'static str>,
    operation: Option<String>,
}

impl fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiRequest")
            .field("service", &self.service)
            .field("service_name", &self.service_name)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("body", &self.body.as_ref().map(|_| "[omitted]"))
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl ApiRequest {
    fn new(service: &str, method: Method, template: &'static str, path: String) -> Self {
        let retry = if method == Method::POST || method == Method::PATCH {
            Retry::ThrottledOnly
        } else {
            Retry::Idempotent
        };
        Self {
            service: service.to_owned(),
            service_name: None,
            method,
            template,
            path,
            query: Vec::new(),
            body: None,
            headers: Vec::new(),
            retry,
            version: None,
            operation: None,
        }
    }

    /// A GET (retried on transient failures).
    pub fn get(service: &str, template: &'static str, path: String) -> Self {
        Self::new(service, Method::GET, template, path)
    }

    /// A POST with a JSON body (retried only when throttled).
    pub fn post(
        service: &str,
        template: &'static str,
        path: String,
        body: serde_json::Value,
    ) -> Self {
        Self::new(service, Method::POST, template, path).json(body)
    }

    /// A PUT with a JSON body (idempotent: retried on transient failures).
    pub fn put(
        service: &str,
        template: &'static str,
        path: String,
        body: serde_json::Value,
    ) -> Self {
        Self::new(service, Method::PUT, template, path).json(body)
    }

    /// A PATCH with a JSON-patch body (`application/openstack-images-v2.1-json-patch`).
    pub fn patch(
        service: &str,
        template: &'static str,
        path: String,
        patch: serde_json::Value,
    ) -> Self {
        let mut r = Self::new(service, Method::PATCH, template, path);
        r.body = Some(Body::JsonPatch(patch));
        r
    }

    /// A PATCH with a plain JSON body (idempotent).
    pub fn patch_json(
        service: &str,
        template: &'static str,
        path: String,
        body: serde_json::Value,
    ) -> Self {
        Self::new(service, Method::PATCH, template, path)
            .json(body)
            .retry(Retry::Idempotent)
    }

    /// A DELETE (idempotent).
    pub fn delete(service: &str, template: &'static str, path: String) -> Self {
        Self::new(service, Method::DELETE, template, path)
    }

    /// Sets a JSON body.
    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(Body::Json(body));
        self
    }

    /// Adds a query parameter.
    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Adds a header (such as a microversion).
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets which failures the session retries.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// The API version path segment (`v2`, `v2.0`) to add when the
    /// catalog's endpoint is unversioned (Glance, Neutron and Octavia list
    /// bare endpoints; Rackspace and Mimic versioned ones).
    pub fn version(mut self, version: &'static str) -> Self {
        self.version = Some(version);
        self
    }

    /// Uses the catalog service of this name (of the request's type) for
    /// this request only: Rackspace's and Mimic's control services share
    /// their type with the real ones.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Names the operation in errors (default: the method and template).
    pub fn operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }

    fn operation_name(&self) -> String {
        self.operation
            .clone()
            .unwrap_or_else(|| format!("{}: {} {}", self.service, self.method, self.template))
    }

    fn stat_key(&self) -> String {
        format!("{} {} {}", self.service, self.method, self.template)
    }
}

/// A successful (2xx) answer. Its `Debug` leaves the body out (Nova's
/// create answer holds the admin password).
pub struct ApiResponse {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    operation: String,
    redactor: Arc<Redactor>,
}

impl fmt::Debug for ApiResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiResponse")
            .field("status", &self.status)
            .field("operation", &self.operation)
            .field("body", &format_args!("[{} bytes]", self.body.len()))
            .finish_non_exhaustive()
    }
}

impl ApiResponse {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The raw body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as JSON of type `T`; `BadResponse` naming the operation,
    /// with an excerpt of the body, when it is not.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, PortError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            PortError::new(
                self.operation.clone(),
                ErrorKind::BadResponse(format!(
                    "HTTP {} body is not the JSON expected ({e}): {}",
                    self.status,
                    excerpt(&self.body, &self.redactor)
                )),
            )
        })
    }
}

/// A raw answer, before classification.
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One HTTP request as the transport sends it.
pub(crate) struct Outgoing<'a> {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) token: Option<&'a SecretString>,
    pub(crate) body: Option<(&'static str, &'a serde_json::Value)>,
    pub(crate) headers: &'a [(&'static str, String)],
    /// What the call counts as (`compute GET /servers/detail`).
    pub(crate) stat_key: String,
    pub(crate) operation: &'a str,
}

/// The HTTP layer under the session: sends, counts and scrubs.
#[derive(Debug)]
pub(crate) struct Transport {
    client: reqwest::Client,
    stats: ApiStats,
    pub(crate) redactor: Arc<Redactor>,
}

impl Transport {
    /// Sends one request. Connection failures and timeouts are
    /// `Temporary`; any HTTP answer is returned as is.
    pub(crate) async fn execute(&self, out: Outgoing<'_>) -> Result<RawResponse, PortError> {
        let Outgoing {
            method,
            url,
            token,
            body,
            headers,
            stat_key,
            operation,
        } = out;
        let mut req = self
            .client
            .request(method.clone(), url)
            .header("Accept", "application/json");
        if let Some(token) = token {
            req = req.header("X-Auth-Token", token.expose_secret());
        }
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        if let Some((content_type, body)) = body {
            let bytes = serde_json::to_vec(body).map_err(|e| {
                PortError::new(
                    operation,
                    ErrorKind::Invalid(format!("encoding the body: {e}")),
                )
            })?;
            req = req.header("Content-Type", content_type).body(bytes);
        }
        self.stats.record(stat_key.clone());
        let sent = req.send().await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(call = %stat_key, error = %e, "openstack request failed");
                return Err(PortError::temporary(operation, transport_failure(&e)).with_source(e));
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| {
            PortError::temporary(operation, "reading the response body failed").with_source(e)
        })?;
        tracing::debug!(call = %stat_key, status, "openstack request");
        Ok(RawResponse {
            status,
            headers,
            body: body.to_vec(),
        })
    }
}

fn transport_failure(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "the request timed out"
    } else if e.is_connect() {
        "connecting failed"
    } else {
        "the request failed"
    }
}

/// A failure and whether the session may retry it for this request.
struct Attempt {
    error: PortError,
    retry: Retry,
}

impl Classify for Attempt {
    fn retry_class(&self) -> RetryClass {
        match (self.retry, self.error.retry_class()) {
            (Retry::Never, _) => RetryClass::Permanent,
            (_, RetryClass::Throttled(d)) => RetryClass::Throttled(d),
            (Retry::Idempotent, RetryClass::Temporary) => RetryClass::Temporary,
            _ => RetryClass::Permanent,
        }
    }
}

/// Builds a [`Session`].
#[derive(Debug)]
pub struct SessionBuilder {
    config: CloudConfig,
    retry: RetryPolicy,
    timeout: Duration,
    connect_timeout: Duration,
    renew_margin: Duration,
}

impl SessionBuilder {
    /// The retry policy of API calls (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The timeout of one HTTP request (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The timeout of connecting (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long before its expiry a token is renewed (default 5 min).
    pub fn renew_margin(mut self, margin: Duration) -> Self {
        self.renew_margin = margin;
        self
    }

    /// Builds the session (it authenticates on first use).
    pub fn build(self) -> Result<Session, ConfigError> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("phoenix-providers/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ConfigError::Client)?;
        let redactor = Arc::new(Redactor::default());
        for s in self.config.credentials().secrets() {
            redactor.add(&s);
        }
        Ok(Session {
            inner: Arc::new(Inner {
                transport: Transport {
                    client,
                    stats: ApiStats::default(),
                    redactor,
                },
                tokens: TokenCache::new(self.renew_margin),
                config: self.config,
                retry: self.retry,
            }),
        })
    }
}

struct Inner {
    transport: Transport,
    tokens: TokenCache,
    config: CloudConfig,
    retry: RetryPolicy,
}

/// An authenticated connection to one cloud, shared (cheaply cloned) by
/// the compute, image, network and balancer adapters.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("config", &self.inner.config)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session with default settings.
    pub fn new(config: CloudConfig) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    /// Starts building a session.
    pub fn builder(config: CloudConfig) -> SessionBuilder {
        SessionBuilder {
            config,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            renew_margin: Duration::from_secs(300),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CloudConfig {
        &self.inner.config
    }

    /// The API calls made so far.
    pub fn stats(&self) -> &ApiStats {
        &self.inner.transport.stats
    }

    /// The retry policy of API calls.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// The current token, authenticating (with retries) when there is none
    /// or it is about to expire.
    pub async fn token(&self) -> Result<Arc<Token>, PortError> {
        let inner = &self.inner;
        inner
            .tokens
            .get(|| async {
                let token = inner
                    .retry
                    .run(|| auth::authenticate(&inner.transport, &inner.config))
                    .await?;
                inner.transport.redactor.add(token.value.expose_secret());
                Ok(token)
            })
            .await
    }

    /// The base URL of a service: the configured override, or the
    /// catalog's endpoint for the configured name, region and interface.
    pub async fn endpoint(&self, service_type: &str) -> Result<String, PortError> {
        if let Some(url) = self.inner.config.endpoint_override(service_type) {
            return Ok(url.to_owned());
        }
        let token = self.token().await?;
        self.endpoint_in(&token, service_type, None)
    }

    fn endpoint_in(
        &self,
        token: &Token,
        service_type: &str,
        name: Option<&str>,
    ) -> Result<String, PortError> {
        let c = &self.inner.config;
        if name.is_none() {
            if let Some(url) = c.endpoint_override(service_type) {
                return Ok(url.to_owned());
            }
        }
        token
            .catalog
            .endpoint(
                service_type,
                name.or(c.service_name(service_type)),
                c.region(),
                c.interface(),
            )
            .map_err(|e| e.into_port_error(format!("{service_type}: choosing an endpoint")))
    }

    fn url(&self, token: &Token, req: &ApiRequest) -> Result<Url, PortError> {
        let base = self.endpoint_in(token, &req.service, req.service_name.as_deref())?;
        let base = match req.version {
            Some(v) => versioned(&base, v),
            None => base.trim_end_matches('/').to_owned(),
        };
        let full = format!("{base}{}", req.path);
        let mut url = Url::parse(&full).map_err(|e| {
            PortError::new(
                req.operation_name(),
                ErrorKind::BadResponse(format!("the catalog's endpoint gives no valid URL: {e}")),
            )
        })?;
        if !req.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(req.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        Ok(url)
    }

    async fn attempt(&self, req: &ApiRequest) -> Result<ApiResponse, PortError> {
        let operation = req.operation_name();
        let body = req.body.as_ref().map(|b| match b {
            Body::Json(v) => ("application/json", v),
            Body::JsonPatch(v) => ("application/openstack-images-v2.1-json-patch", v),
        });
        let mut token = self.token().await?;
        let mut reauthenticated = false;
        loop {
            let url = self.url(&token, req)?;
            let raw = self
                .inner
                .transport
                .execute(Outgoing {
                    method: req.method.clone(),
                    url,
                    token: Some(&token.value),
                    body,
                    headers: &req.headers,
                    stat_key: req.stat_key(),
                    operation: &operation,
                })
                .await?;
            if raw.status == 401 && !reauthenticated {
                // Revoked or expired early: authenticate once more.
                self.inner.tokens.invalidate(&token);
                token = self.token().await?;
                reauthenticated = true;
                continue;
            }
            if raw.is_success() {
                return Ok(ApiResponse {
                    status: raw.status,
                    headers: raw.headers,
                    body: raw.body,
                    operation,
                    redactor: self.inner.transport.redactor.clone(),
                });
            }
            return Err(classify(
                raw.status,
                &raw.headers,
                &raw.body,
                operation,
                &self.inner.transport.redactor,
            ));
        }
    }

    /// Sends a request, retrying what [`ApiRequest::retry`] allows with
    /// the session's policy, and returns the successful answer.
    pub async fn send(&self, req: ApiRequest) -> Result<ApiResponse, PortError> {
        let policy = if req.retry == Retry::Never {
            RetryPolicy::none()
        } else {
            self.inner.retry.clone()
        };
        let retry = req.retry;
        policy
            .run(|| async {
                self.attempt(&req)
                    .await
                    .map_err(|error| Attempt { error, retry })
            })
            .await
            .map_err(|a| a.error)
    }
}

/// `base` with the API version segment appended unless its path already
/// has a segment of that major version (`…/v2/<tenant>` for `v2.0`).
pub fn versioned(base: &str, version: &str) -> String {
    let base = base.trim_end_matches('/');
    let major = version.split('.').next().unwrap_or(version);
    let path = Url::parse(base)
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    let has = path
        .split('/')
        .any(|seg| seg == version || seg == major || seg.starts_with(&format!("{major}.")));
    if has {
        base.to_owned()
    } else {
        format!("{base}/{version}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_added_to_bare_endpoints_only() {
        assert_eq!(versioned("http://h:9292", "v2"), "http://h:9292/v2");
        assert_eq!(versioned("http://h:9696/", "v2.0"), "http://h:9696/v2.0");
        assert_eq!(
            versioned("http://m/mimicking/GlanceApi-1/ORD/v2/123", "v2"),
            "http://m/mimicking/GlanceApi-1/ORD/v2/123"
        );
        assert_eq!(
            versioned("http://m/mimicking/NeutronApi-1/ORD/v2/123", "v2.0"),
            "http://m/mimicking/NeutronApi-1/ORD/v2/123"
        );
        assert_eq!(
            versioned("http://h/load-balancer", "v2"),
            "http://h/load-balancer/v2"
        );
    }
}
