//! The one SOAP client every vSphere adapter shares: a reqwest client with
//! the configured TLS trust, the `ServiceInstance` content, a session
//! (`SessionManager.Login`, its `vmware_soap_session` cookie, a new login
//! when vSphere answers `NotAuthenticated`, `Logout` when the last clone is
//! dropped), faults classified with their type kept, bounded jittered
//! retries of transient faults through the shared [`RetryPolicy`], and
//! counts of the calls made per method.
//!
//! Retries: a fault answer means vSphere refused the call, so a retryable
//! fault (`TaskInProgress`, `HostCommunication`, …) is retried for every
//! method; a timeout or a lost connection only for methods marked
//! idempotent, because a `CloneVM_Task` whose answer was lost may have
//! started (the caller looks for the clone by name first).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use phoenix_core::ports::{ErrorKind, PortError, RetryClass};
use phoenix_core::retry::{Classify, RetryPolicy};
use tokio::sync::{Mutex, OnceCell};

use super::config::{VsphereConfig, VsphereConfigError};
use super::fault::{self, VsphereFault};
use super::xml::{self, el, Element, MoRef};
use crate::api_stats::ApiStats;
use crate::redact::{excerpt, Redactor};

/// The vim25 version requests are written against: every vCenter and ESXi
/// from 6.5 to 8 accepts it.
const SOAP_ACTION: &str = "urn:vim25/6.5";
const COOKIE: &str = "vmware_soap_session";

/// The managed objects of the `ServiceInstance` the adapters use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContent {
    /// The inventory's root folder.
    pub root_folder: MoRef,
    /// The property collector.
    pub property_collector: MoRef,
    /// The view manager (container views).
    pub view_manager: MoRef,
    /// The session manager.
    pub session_manager: MoRef,
    /// The search index (inventory paths).
    pub search_index: MoRef,
    /// The custom fields manager (custom attributes), absent on a bare ESXi.
    pub custom_fields_manager: Option<MoRef>,
    /// `about.apiType`: `VirtualCenter` or `HostAgent`.
    pub api_type: String,
    /// `about.apiVersion`.
    pub api_version: String,
}

impl ServiceContent {
    fn read(returnval: &Element) -> Option<Self> {
        let r = |name: &str| returnval.child(name).and_then(MoRef::from_element);
        let about = returnval.child("about");
        Some(Self {
            root_folder: r("rootFolder")?,
            property_collector: r("propertyCollector")?,
            view_manager: r("viewManager")?,
            session_manager: r("sessionManager")?,
            search_index: r("searchIndex")?,
            custom_fields_manager: r("customFieldsManager"),
            api_type: about
                .and_then(|a| a.child_text("apiType"))
                .unwrap_or_default()
                .to_owned(),
            api_version: about
                .and_then(|a| a.child_text("apiVersion"))
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

/// One vim25 method call: the method, the object it is called on, its
/// arguments (XML, already escaped) and whether it is safe to repeat
/// after a lost answer. Its `Debug` shows the method and object only:
/// arguments may hold boot configuration.
#[derive(Clone)]
pub struct SoapCall {
    method: &'static str,
    this: MoRef,
    args: String,
    idempotent: bool,
}

impl std::fmt::Debug for SoapCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoapCall")
            .field("method", &self.method)
            .field("this", &self.this)
            .field("args", &format_args!("[{} bytes]", self.args.len()))
            .field("idempotent", &self.idempotent)
            .finish()
    }
}

impl SoapCall {
    /// A call of `method` on `this`, idempotent (retried after transient
    /// failures of any kind).
    pub fn new(method: &'static str, this: &MoRef, args: impl Into<String>) -> Self {
        Self {
            method,
            this: this.clone(),
            args: args.into(),
            idempotent: true,
        }
    }

    /// Marks the call as not safe to repeat after a lost answer (only
    /// fault answers, which mean nothing was done, are retried).
    pub fn not_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }

    /// The method.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The call's name in errors (`vsphere CloneVM_Task vm-42`).
    pub fn operation(&self) -> String {
        format!("vsphere {} {}", self.method, self.this.value)
    }
}

#[derive(Default)]
struct Session {
    cookie: Option<String>,
    /// Bumped at every login, so that a caller holding a stale cookie
    /// does not log in again after another caller already did.
    generation: u64,
}

struct Inner {
    http: reqwest::Client,
    config: VsphereConfig,
    content: OnceCell<ServiceContent>,
    session: Mutex<Session>,
    stats: ApiStats,
    redactor: Redactor,
    logins: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Sessions are a limited resource on vCenter (and hold views): give
        // this one back. Drop cannot wait, so the Logout is sent from a
        // task when a runtime is there to run it; otherwise vCenter's
        // idle timeout ends the session.
        let cookie = self.session.get_mut().cookie.take();
        let (Some(cookie), Some(content)) = (cookie, self.content.get()) else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let http = self.http.clone();
        let url = self.config.url.clone();
        let body = xml::envelope("Logout", &content.session_manager, "");
        handle.spawn(async move {
            let _ = http
                .post(url)
                .header("content-type", "text/xml; charset=utf-8")
                .header("soapaction", SOAP_ACTION)
                .header("cookie", format!("{COOKIE}={cookie}"))
                .body(body)
                .send()
                .await;
        });
    }
}

/// The shared vSphere client. Clones share the session, the service
/// content and the counts; the session is logged out when the last clone
/// is dropped.
#[derive(Clone)]
pub struct VsphereClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for VsphereClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsphereClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl VsphereClient {
    /// A client for `config`. It connects at its first call.
    pub fn new(config: VsphereConfig) -> Result<Self, VsphereConfigError> {
        let http = super::tls::http_client(&config)?;
        let redactor = Redactor::default();
        redactor.add(config.password());
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                content: OnceCell::new(),
                session: Mutex::new(Session::default()),
                stats: ApiStats::default(),
                redactor,
                logins: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VsphereConfig {
        &self.inner.config
    }

    /// Counts of the SOAP calls made, by `vsphere Method`, logins and
    /// retries included.
    pub fn stats(&self) -> &ApiStats {
        &self.inner.stats
    }

    /// How many times this client logged in (once, plus once per session
    /// vSphere dropped).
    pub fn logins(&self) -> u64 {
        self.inner.logins.load(Ordering::Relaxed)
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.config.retry
    }

    /// The `ServiceInstance` content (fetched once).
    pub async fn content(&self) -> Result<&ServiceContent, PortError> {
        self.inner
            .content
            .get_or_try_init(|| async {
                let si = MoRef::new("ServiceInstance", "ServiceInstance");
                let call = SoapCall::new("RetrieveServiceContent", &si, "");
                let answer = self.call_unauthenticated(&call).await?;
                answer
                    .child("returnval")
                    .and_then(ServiceContent::read)
                    .ok_or_else(|| bad_answer(&call, "no ServiceContent in the answer"))
            })
            .await
    }

    /// Logs out now (the next call logs in again).
    pub async fn logout(&self) -> Result<(), PortError> {
        let content = self.content().await?.clone();
        let cookie = self.inner.session.lock().await.cookie.clone();
        if cookie.is_none() {
            return Ok(());
        }
        let call = SoapCall::new("Logout", &content.session_manager, "");
        let result = self.send(&call, cookie.as_deref()).await.map(|_| ());
        self.inner.session.lock().await.cookie = None;
        result
    }

    /// Calls `call` in the session (logging in first, and again once if
    /// vSphere no longer knows the session), retrying transient faults as
    /// its idempotency allows. Returns the method's response element.
    pub async fn call(&self, call: &SoapCall) -> Result<Element, PortError> {
        self.content().await?;
        let idempotent = call.idempotent;
        self.inner
            .config
            .retry
            .run(|| async {
                self.attempt(call).await.map_err(|error| {
                    // A fault answer means vSphere did nothing.
                    let answered = fault::vsphere_fault(&error).is_some();
                    Verdict {
                        retry: idempotent || answered,
                        error,
                    }
                })
            })
            .await
            .map_err(|v| v.error)
    }

    async fn attempt(&self, call: &SoapCall) -> Result<Element, PortError> {
        let (cookie, generation) = self.session().await?;
        match self.send(call, Some(&cookie)).await {
            Err(e) if fault::fault_type(&e) == Some("NotAuthenticated") => {
                // The session expired or was terminated: log in again
                // (unless another caller already did) and repeat once.
                tracing::debug!(operation = %call.operation(), "session lost; logging in again");
                let cookie = self.relogin(generation).await?;
                self.send(call, Some(&cookie)).await
            }
            other => other,
        }
    }

    async fn call_unauthenticated(&self, call: &SoapCall) -> Result<Element, PortError> {
        self.inner
            .config
            .retry
            .run(|| async { self.send(call, None).await })
            .await
    }

    async fn session(&self) -> Result<(String, u64), PortError> {
        let mut s = self.inner.session.lock().await;
        if let Some(c) = &s.cookie {
            return Ok((c.clone(), s.generation));
        }
        let cookie = self.login().await?;
        s.cookie = Some(cookie.clone());
        s.generation += 1;
        Ok((cookie, s.generation))
    }

    async fn relogin(&self, seen: u64) -> Result<String, PortError> {
        let mut s = self.inner.session.lock().await;
        if s.generation != seen {
            if let Some(c) = &s.cookie {
                return Ok(c.clone());
            }
        }
        let cookie = self.login().await?;
        s.cookie = Some(cookie.clone());
        s.generation += 1;
        Ok(cookie)
    }

    /// The generation of the current session: it changes at every login,
    /// and with it everything vSphere keeps per session (container views).
    pub(crate) async fn session_generation(&self) -> Result<u64, PortError> {
        Ok(self.session().await?.1)
    }

    async fn login(&self) -> Result<String, PortError> {
        let content = self.content().await?.clone();
        let cfg = &self.inner.config;
        let args = format!(
            "{}{}",
            el("userName", &cfg.username),
            el("password", cfg.password())
        );
        let call = SoapCall::new("Login", &content.session_manager, args);
        let answer = self.post(&call, None).await?;
        // A refused login (InvalidLogin) is a fault without a cookie.
        self.read(&call, &answer.body)?;
        self.inner.logins.fetch_add(1, Ordering::Relaxed);
        let cookie = answer.cookie.ok_or_else(|| {
            bad_answer(&call, "the login answer set no vmware_soap_session cookie")
        })?;
        self.inner.redactor.add(&cookie);
        Ok(cookie)
    }

    async fn send(&self, call: &SoapCall, cookie: Option<&str>) -> Result<Element, PortError> {
        let answer = self.post(call, cookie).await?;
        self.read(call, &answer.body)
    }

    async fn post(&self, call: &SoapCall, cookie: Option<&str>) -> Result<Answer, PortError> {
        let inner = &self.inner;
        let op = call.operation();
        let body = xml::envelope(call.method, &call.this, &call.args);
        let mut request = inner
            .http
            .post(inner.config.url.clone())
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", SOAP_ACTION)
            .body(body);
        if let Some(c) = cookie {
            request = request.header("cookie", format!("{COOKIE}={c}"));
        }
        inner.stats.record(format!("vsphere {}", call.method));
        let answer = request.send().await.map_err(|e| {
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
        let cookie = answer
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session_cookie);
        let text = answer
            .text()
            .await
            .map_err(|e| PortError::temporary(&op, "the answer was cut off").with_source(e))?;
        // Faults come with HTTP 500; anything else non-2xx without a SOAP
        // body is the web server or a proxy talking.
        if !(200..300).contains(&status) && !text.contains("Fault") {
            let msg = format!(
                "HTTP {status}: {}",
                excerpt(text.as_bytes(), &inner.redactor)
            );
            let kind = match status {
                429 => ErrorKind::Throttled { retry_after: None },
                500..=599 => ErrorKind::Temporary(msg),
                401 | 403 => ErrorKind::Unauthorized(msg),
                404 => ErrorKind::Invalid(format!("no SDK at this URL: {msg}")),
                _ => ErrorKind::BadResponse(msg),
            };
            return Err(PortError::new(&op, kind));
        }
        Ok(Answer { body: text, cookie })
    }

    /// The response element of an answer, or its fault as an error.
    fn read(&self, call: &SoapCall, text: &str) -> Result<Element, PortError> {
        let op = call.operation();
        let envelope = xml::parse(text).map_err(|e| {
            PortError::new(
                &op,
                ErrorKind::BadResponse(format!(
                    "cannot read the answer ({e}): {}",
                    excerpt(text.as_bytes(), &self.inner.redactor)
                )),
            )
        })?;
        let body = xml::body(&envelope).map_err(|e| {
            PortError::new(
                &op,
                ErrorKind::BadResponse(format!(
                    "{e}: {}",
                    excerpt(text.as_bytes(), &self.inner.redactor)
                )),
            )
        })?;
        if body.name == "Fault" {
            let (fault_type, message) = fault::read_soap_fault(body);
            tracing::debug!(operation = %op, fault = %fault_type, "vSphere fault");
            return Err(fault::port_error(
                &op,
                VsphereFault {
                    method: call.method.to_owned(),
                    fault_type,
                    message: self.inner.redactor.scrub(&message),
                },
            ));
        }
        if let Some(fault_type) = unauthenticated_read(body) {
            // vcsim answers a property read in a session it no longer
            // knows with each property missing as NotAuthenticated rather
            // than a fault, as vCenter does: make it the fault, so the
            // session is renewed the same way.
            return Err(fault::port_error(
                &op,
                VsphereFault {
                    method: call.method.to_owned(),
                    fault_type,
                    message: "the session is not authenticated (property read)".into(),
                },
            ));
        }
        Ok(body.clone())
    }

    /// Scrubs known secrets from text taken from an answer.
    pub(crate) fn scrub(&self, text: &str) -> String {
        self.inner.redactor.scrub(text)
    }
}

struct Answer {
    body: String,
    cookie: Option<String>,
}

/// `NotAuthenticated` when a property read's answer reports its
/// properties missing for that reason.
fn unauthenticated_read(body: &Element) -> Option<String> {
    let r = body.child("returnval")?;
    r.children_named("objects")
        .flat_map(|o| o.children_named("missingSet"))
        .filter_map(|m| m.child("fault")?.child("fault")?.xsi_type())
        .find(|t| *t == "NotAuthenticated")
        .map(str::to_owned)
}

/// The session id in a `Set-Cookie` header, if it sets ours.
fn session_cookie(header: &str) -> Option<String> {
    let first = header.split(';').next()?.trim();
    let (name, value) = first.split_once('=')?;
    (name.trim() == COOKIE && !value.is_empty()).then(|| value.trim().to_owned())
}

pub(crate) fn bad_answer(call: &SoapCall, what: &str) -> PortError {
    PortError::new(call.operation(), ErrorKind::BadResponse(what.to_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookie_is_read_from_set_cookie() {
        assert_eq!(
            session_cookie("vmware_soap_session=\"52a1b2\"; Path=/; HttpOnly; Secure;"),
            Some("\"52a1b2\"".to_owned())
        );
        assert_eq!(session_cookie("other=1; Path=/"), None);
        assert_eq!(session_cookie("vmware_soap_session=; Path=/"), None);
    }

    #[test]
    fn a_call_shows_no_arguments() {
        let c = SoapCall::new(
            "ReconfigVM_Task",
            &MoRef::new("VirtualMachine", "vm-1"),
            "<spec>secret-user-data</spec>",
        );
        let d = format!("{c:?}");
        assert!(!d.contains("secret-user-data"), "{d}");
        assert_eq!(c.operation(), "vsphere ReconfigVM_Task vm-1");
    }

    #[tokio::test]
    async fn the_password_never_reaches_an_error() {
        // Nothing listens on port 9 of loopback: the login fails, and
        // neither the error nor the client's Debug shows the password.
        let cfg = VsphereConfig::builder("https://u:hunter2-secret@127.0.0.1:9/sdk")
            .unwrap()
            .retry(RetryPolicy::none())
            .build()
            .unwrap();
        let client = VsphereClient::new(cfg).unwrap();
        assert!(!format!("{client:?}").contains("hunter2"));
        let vm = MoRef::new("VirtualMachine", "vm-1");
        let e = client
            .call(&SoapCall::new("PowerOnVM_Task", &vm, ""))
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "a refused connection is transient: {e}");
        let chain = e.chain();
        assert!(!chain.contains("hunter2"), "{chain}");
        assert!(!format!("{e:?}").contains("hunter2"));
    }
}
