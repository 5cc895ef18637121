//! The one client every AWS adapter shares in a region: a reqwest client,
//! SigV4 signing (`aws-sigv4`) with cached credentials, the Query APIs'
//! form-encoded requests and XML answers, the shared [`RetryPolicy`], the
//! region's [`RequestBucket`], error classification that keeps the AWS
//! error code, `NextToken` pagination, and counts of the calls made per
//! action.
//!
//! Retries: throttling (`RequestLimitExceeded`, `Throttling`, HTTP 429 and
//! 503 with a throttling code) is retried for every call, since nothing
//! was done; 5xx, timeouts and connection failures only for calls marked
//! idempotent, because a `RunInstances` that timed out may have launched
//! (the caller looks by token first). `ExpiredToken` drops the cached
//! credentials and tries again with fresh ones.
//!
//! ```no_run
//! use phoenix_providers::aws::{AwsClient, AwsConfig, QueryRequest, Service};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = AwsClient::new(AwsConfig::from_env().await?)?;
//! let body = client
//!     .call(&QueryRequest::new(Service::Ec2, "DescribeRegions"))
//!     .await?;
//! println!("{} bytes; calls: {:?}", body.len(), client.stats().snapshot());
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use phoenix_core::ports::{ErrorKind, PortError, RetryClass};
use phoenix_core::retry::{Classify, RetryPolicy};
use serde::de::DeserializeOwned;

use super::config::{AwsConfig, Service};
use super::credentials::{CredentialsCache, CredentialsError};
use super::error::{aws_error_code, kind_of, AwsApiError, AwsConfigError};
use super::throttle::RequestBucket;
use super::xml;
use crate::api_stats::ApiStats;
use crate::redact::{excerpt, Redactor};

const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// One Query API call: the service, the action and its parameters. Its
/// `Debug` shows parameter names only: values may hold user data.
#[derive(Clone)]
pub struct QueryRequest {
    service: Service,
    action: &'static str,
    params: Vec<(String, String)>,
    idempotent: bool,
    filters: usize,
}

impl std::fmt::Debug for QueryRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRequest")
            .field("service", &self.service)
            .field("action", &self.action)
            .field(
                "params",
                &self
                    .params
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("idempotent", &self.idempotent)
            .finish()
    }
}

impl QueryRequest {
    /// A call of `action`, idempotent (retried on transient failures).
    pub fn new(service: Service, action: &'static str) -> Self {
        Self {
            service,
            action,
            params: Vec::new(),
            idempotent: true,
            filters: 0,
        }
    }

    /// Marks the call as not safe to repeat after a transient failure
    /// (only throttling is retried).
    pub fn not_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }

    /// Adds `name=value`.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// Adds a list as `name.1=…&name.2=…`.
    pub fn list<I, V>(mut self, name: &str, values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<String>,
    {
        for (i, v) in values.into_iter().enumerate() {
            self.params.push((format!("{name}.{}", i + 1), v.into()));
        }
        self
    }

    /// Adds an EC2 filter `Filter.N.Name=name&Filter.N.Value.M=…`.
    pub fn filter<I, V>(mut self, name: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<String>,
    {
        self.filters += 1;
        let n = self.filters;
        self.params.push((format!("Filter.{n}.Name"), name.into()));
        for (i, v) in values.into_iter().enumerate() {
            self.params
                .push((format!("Filter.{n}.Value.{}", i + 1), v.into()));
        }
        self
    }

    /// The action.
    pub fn action(&self) -> &'static str {
        self.action
    }

    /// The service.
    pub fn service(&self) -> Service {
        self.service
    }

    /// The call's name in counts and errors (`ec2 RunInstances`).
    pub fn operation(&self) -> String {
        format!("{} {}", self.service, self.action)
    }

    fn body(&self, extra: &[(String, String)]) -> Result<String, PortError> {
        let mut all: Vec<(&str, &str)> = vec![
            ("Action", self.action),
            ("Version", self.service.api_version()),
        ];
        all.extend(self.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        all.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        serde_urlencoded::to_string(&all).map_err(|e| {
            PortError::new(self.operation(), ErrorKind::Invalid("cannot encode".into()))
                .with_source(e)
        })
    }
}

struct Inner {
    http: reqwest::Client,
    config: AwsConfig,
    credentials: CredentialsCache,
    bucket: RequestBucket,
    stats: ApiStats,
    redactor: Redactor,
}

/// The shared AWS client of one region. Clones share the credentials
/// cache, the request bucket and the counts.
#[derive(Clone)]
pub struct AwsClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AwsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AwsClient {
    /// A client for `config`.
    pub fn new(config: AwsConfig) -> Result<Self, AwsConfigError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(AwsConfigError::Http)?;
        let (burst, rate) = config.bucket;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                credentials: CredentialsCache::new(config.credentials.clone()),
                bucket: RequestBucket::new(burst, rate),
                stats: ApiStats::default(),
                redactor: Redactor::default(),
                config,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AwsConfig {
        &self.inner.config
    }

    /// Counts of the calls made, by `service Action`.
    pub fn stats(&self) -> &ApiStats {
        &self.inner.stats
    }

    /// The region's request bucket.
    pub fn bucket(&self) -> &RequestBucket {
        &self.inner.bucket
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.config.retry
    }

    /// Calls `request`, retrying as its idempotency allows, and returns
    /// the answer's body.
    pub async fn call(&self, request: &QueryRequest) -> Result<String, PortError> {
        self.call_with(request, &[]).await
    }

    async fn call_with(
        &self,
        request: &QueryRequest,
        extra: &[(String, String)],
    ) -> Result<String, PortError> {
        let body = request.body(extra)?;
        let idempotent = request.idempotent;
        self.inner
            .config
            .retry
            .run(|| async {
                self.attempt(request, &body).await.map_err(|error| {
                    // Nothing happened on a throttled or unauthenticated
                    // call; after anything else a create may have.
                    let nothing_done = matches!(error.kind, ErrorKind::Throttled { .. })
                        || aws_error_code(&error).is_some_and(|c| {
                            c.starts_with("ExpiredToken") || c == "RequestExpired"
                        });
                    Verdict {
                        retry: idempotent || nothing_done,
                        error,
                    }
                })
            })
            .await
            .map_err(|v| v.error)
    }

    /// Calls `request` and reads the answer as `T`.
    pub async fn call_xml<T: DeserializeOwned>(
        &self,
        request: &QueryRequest,
    ) -> Result<T, PortError> {
        let body = self.call(request).await?;
        self.parse(request, &body)
    }

    /// Reads an answer `body` of `request` as `T`, or says why not
    /// (`BadResponse` with an excerpt, scrubbed of secrets).
    pub fn parse<T: DeserializeOwned>(
        &self,
        request: &QueryRequest,
        body: &str,
    ) -> Result<T, PortError> {
        xml::parse(body).map_err(|e| {
            PortError::new(
                request.operation(),
                ErrorKind::BadResponse(format!(
                    "cannot read the answer ({e}): {}",
                    excerpt(body.as_bytes(), &self.inner.redactor)
                )),
            )
            .with_source(e)
        })
    }

    /// Every page of `request`: the token of the next page is read from
    /// each answer by `next` and sent as `token_param` (`NextToken` for
    /// EC2 and Auto Scaling, `Marker` for ELBv2). Stops at 1,000 pages, so
    /// that a peer that repeats its token cannot loop forever.
    pub async fn pages<T: DeserializeOwned>(
        &self,
        request: &QueryRequest,
        token_param: &str,
        next: impl Fn(&T) -> Option<String>,
    ) -> Result<Vec<T>, PortError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..1000 {
            let extra: Vec<(String, String)> = token
                .iter()
                .map(|t| (token_param.to_owned(), t.clone()))
                .collect();
            let body = self.call_with(request, &extra).await?;
            let page: T = self.parse(request, &body)?;
            let following = next(&page).filter(|t| !t.is_empty());
            out.push(page);
            match following {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                Some(_) => {
                    return Err(PortError::new(
                        request.operation(),
                        ErrorKind::BadResponse("the next-page token repeats".into()),
                    ))
                }
                None => return Ok(out),
            }
        }
        Err(PortError::new(
            request.operation(),
            ErrorKind::BadResponse("more than 1,000 pages".into()),
        ))
    }

    async fn attempt(&self, request: &QueryRequest, body: &str) -> Result<String, PortError> {
        let inner = &self.inner;
        let op = request.operation();
        inner.bucket.acquire().await;
        let creds = inner
            .credentials
            .get()
            .await
            .map_err(|e| credentials_error(&op, e))?;
        inner.redactor.add(creds.secret_access_key());
        if let Some(t) = creds.session_token() {
            inner.redactor.add(t);
        }
        let url = inner.config.endpoint(request.service).clone();
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&inner.config.region)
            .name(request.service.signing_name())
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| {
                PortError::new(&op, ErrorKind::Invalid("cannot sign".into())).with_source(e)
            })?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            [("content-type", FORM)].into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .and_then(|r| sign(r, &params))
        .map_err(|e| {
            PortError::new(&op, ErrorKind::Invalid("cannot sign".into())).with_source(e)
        })?;
        let (instructions, _) = signable.into_parts();
        let mut http = inner
            .http
            .post(url)
            .header("content-type", FORM)
            .body(body.to_owned());
        for (name, value) in instructions.headers() {
            http = http.header(name, value);
        }
        inner.stats.record(op.clone());
        let answer = http.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "the connection failed"
            };
            PortError::temporary(&op, what).with_source(e)
        })?;
        let status = answer.status().as_u16();
        let retry_after = crate::retry_after::header_delay(answer.headers());
        let text = answer
            .text()
            .await
            .map_err(|e| PortError::temporary(&op, "the answer was cut off").with_source(e))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let parsed = xml::error_body(&text);
        let code = parsed
            .as_ref()
            .and_then(|p| p.code.clone())
            .unwrap_or_else(|| "(none)".into());
        let message = parsed
            .as_ref()
            .and_then(|p| p.message.as_deref())
            .map(|m| inner.redactor.scrub(m))
            .unwrap_or_else(|| excerpt(text.as_bytes(), &inner.redactor));
        let kind = kind_of(status, &code, &message, retry_after);
        if matches!(kind, ErrorKind::Throttled { .. }) {
            inner.bucket.throttled();
        }
        if code.starts_with("ExpiredToken") {
            inner.credentials.invalidate().await;
        }
        tracing::debug!(operation = %op, status, code = %code, "AWS call failed");
        Err(PortError::new(&op, kind).with_source(AwsApiError {
            service: request.service.signing_name(),
            action: request.action.to_owned(),
            status,
            code,
            message,
            request_id: parsed
                .and_then(|p| p.request_id)
                .unwrap_or_else(|| "(none)".into()),
        }))
    }
}

/// A failed attempt and whether the retry loop may repeat it.
struct Verdict {
    error: PortError,
    retry: bool,
}

impl Classify for Verdict {
    fn retry_class(&self) -> RetryClass {
        if self.retry {
            self.error.retry_class()
        } else {
            RetryClass::Permanent
        }
    }
}

fn credentials_error(op: &str, e: CredentialsError) -> PortError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let kind = match e {
        CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_) => {
            ErrorKind::Temporary(format!("credentials: {text}"))
        }
        _ => ErrorKind::Unauthorized(format!("credentials: {text}")),
    };
    PortError::new(op, kind)
}
