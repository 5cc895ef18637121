//! What an OpenStack answer means: the classification of failed answers
//! into [`PortError`] kinds, the delay a throttled answer asks for
//! (Retry-After in seconds or as an HTTP date, or Rackspace's
//! `overLimit.retryAfter`), the message of an error body in each service's
//! shape, and the scrubbing of secrets from every text taken from an
//! answer.

use std::time::Duration;

use phoenix_core::ports::{ErrorKind, PortError};
use reqwest::header::HeaderMap;

use super::auth;
use crate::redact::{excerpt, Redactor};

/// The message an OpenStack error body carries: Nova's
/// `{"badRequest": {"message": …}}`, Keystone's `{"error": {"message": …}}`,
/// Neutron's `{"NeutronError": {"message": …}}`, Octavia's `faultstring`,
/// Cloud Load Balancers' top-level `message`.
fn api_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = |v: &serde_json::Value| -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(a) => {
                let parts: Vec<String> = a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect();
                (!parts.is_empty()).then(|| parts.join("; "))
            }
            _ => None,
        }
    };
    let obj = v.as_object()?;
    for key in ["message", "faultstring", "description"] {
        if let Some(m) = obj.get(key).and_then(text) {
            return Some(m);
        }
    }
    obj.values()
        .filter_map(|inner| inner.as_object())
        .find_map(|inner| inner.get("message").and_then(text))
}

/// The delay a throttled answer asks for: the Retry-After header (seconds
/// or an HTTP date), else Rackspace's `overLimit.retryAfter` in the body.
pub(crate) fn retry_after(headers: &HeaderMap, body: &[u8]) -> Option<Duration> {
    let parse = |text: &str| -> Option<Duration> {
        crate::retry_after::parse(text).or_else(|| {
            let at = auth::parse_expiry(text.trim())?;
            Some((at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO))
        })
    };
    if let Some(d) = crate::retry_after::header_delay(headers) {
        return Some(d);
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let found = v
        .as_object()?
        .values()
        .filter_map(|x| x.get("retryAfter"))
        .next()?
        .clone();
    match found {
        serde_json::Value::Number(n) => n.as_u64().map(Duration::from_secs),
        serde_json::Value::String(s) => parse(&s),
        _ => None,
    }
}

/// Classifies a failed answer.
pub(crate) fn classify(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    operation: String,
    redactor: &Redactor,
) -> PortError {
    let message = api_message(body)
        .map(|m| redactor.scrub(&m))
        .unwrap_or_else(|| excerpt(body, redactor));
    let detail = format!("HTTP {status}: {message}");
    let kind = match status {
        429 | 413 => {
            // Cloud Load Balancers answers 413 for a duplicate node, which
            // no wait fixes.
            if message.contains("Duplicate nodes") || message.contains("must not exceed") {
                ErrorKind::Invalid(detail.clone())
            } else {
                return PortError::throttled(operation, retry_after(headers, body))
                    .with_source(ApiFailure { status, detail });
            }
        }
        400 => ErrorKind::Invalid(detail.clone()),
        401 => ErrorKind::Unauthorized(detail.clone()),
        // Nova answers 403 for exhausted quotas and metadata limits: the
        // request is refused, not the credentials.
        403 if message.contains("Quota exceeded") || message.contains("Maximum number") => {
            ErrorKind::Invalid(detail.clone())
        }
        403 => ErrorKind::Unauthorized(detail.clone()),
        404 => ErrorKind::NotFound(detail.clone()),
        409 | 422 => ErrorKind::Temporary(detail.clone()),
        500..=599 => ErrorKind::Temporary(detail.clone()),
        _ => ErrorKind::Permanent(detail.clone()),
    };
    PortError::new(operation, kind).with_source(ApiFailure { status, detail })
}

/// The HTTP answer behind an error, kept as its cause.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
struct ApiFailure {
    status: u16,
    detail: String,
}

/// The HTTP status of the answer that caused `error`, if an answer did.
pub fn http_status(error: &PortError) -> Option<u16> {
    error
        .source
        .as_ref()?
        .downcast_ref::<ApiFailure>()
        .map(|f| f.status)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_in_seconds_dates_and_bodies() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, b""), Some(Duration::from_secs(7)));
        let soon = chrono::Utc::now() + chrono::Duration::seconds(30);
        let date = soon.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        h.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        let d = retry_after(&h, b"").unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h, b""), Some(Duration::ZERO));
        let body =
            br#"{"overLimit": {"code": 413, "message": "OverLimit Retry...", "retryAfter": "12"}}"#;
        assert_eq!(
            retry_after(&HeaderMap::new(), body),
            Some(Duration::from_secs(12))
        );
    }

    #[test]
    fn classification_follows_the_status() {
        let r = Redactor::default();
        r.add("canary-token-123");
        let h = HeaderMap::new();
        let c = |status, body: &[u8]| classify(status, &h, body, "op".into(), &r);
        assert!(matches!(
            c(429, b"").kind,
            ErrorKind::Throttled { retry_after: None }
        ));
        assert!(matches!(c(503, b"").kind, ErrorKind::Temporary(_)));
        assert!(matches!(c(422, b"{}").kind, ErrorKind::Temporary(_)));
        assert!(matches!(c(409, b"{}").kind, ErrorKind::Temporary(_)));
        assert!(c(404, b"").is_not_found());
        assert!(matches!(c(400, b"").kind, ErrorKind::Invalid(_)));
        assert!(matches!(c(403, b"").kind, ErrorKind::Unauthorized(_)));
        assert!(matches!(c(418, b"").kind, ErrorKind::Permanent(_)));
        let nova = br#"{"badRequest": {"message": "Invalid flavorRef provided.", "code": 400}}"#;
        assert!(c(400, nova)
            .to_string()
            .contains("Invalid flavorRef provided."));
        let leak = br#"{"error": {"message": "token canary-token-123 is bad", "code": 401}}"#;
        let e = c(401, leak).to_string();
        assert!(
            !e.contains("canary-token-123") && e.contains("[REDACTED]"),
            "{e}"
        );
        let dup = br#"{"message": "Duplicate nodes detected. One or more nodes already configured on load balancer.", "code": 413}"#;
        assert!(matches!(c(413, dup).kind, ErrorKind::Invalid(_)));
    }
}
