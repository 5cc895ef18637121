//! The delay a throttled HTTP answer asks for in its `Retry-After` header,
//! in seconds or as an HTTP date. Shared by the HTTP back ends.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// The `Retry-After` of an answer, if it has a usable one. A date in the
/// past is zero.
pub(crate) fn header_delay(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get("retry-after")?.to_str().ok()?;
    parse(text)
}

/// Seconds, or an HTTP (RFC 2822) date.
pub(crate) fn parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}
