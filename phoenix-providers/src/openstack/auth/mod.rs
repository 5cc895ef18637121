//! Authentication: Rackspace identity v2.0 (API key or password) and
//! Keystone v3 (password or application credential, project or domain
//! scope). Either gives a [`Token`]: its secret value, its expiry and its
//! service catalog. The session keeps it in a [`TokenCache`].

mod keystone_v3;
mod rackspace_v2;
mod token_cache;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use phoenix_core::ports::PortError;
use secrecy::SecretString;

pub use token_cache::TokenCache;

use super::catalog::Catalog;
use super::config::{CloudConfig, Credentials};
use super::http::{classify, Outgoing, RawResponse, Transport};

/// A token and what came with it.
pub struct Token {
    pub(crate) value: SecretString,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) catalog: Catalog,
    pub(crate) project_id: Option<String>,
}

impl Token {
    /// When it expires, if the identity service said.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// Its service catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The project (tenant) it is scoped to, if any.
    pub fn project_id(&self) -> Option<&str> {
        self.project_id.as_deref()
    }

    /// True when it expires within `margin` of `now` (a token without an
    /// expiry never does).
    pub fn expires_within(&self, margin: Duration, now: DateTime<Utc>) -> bool {
        let margin = chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::MAX);
        self.expires_at
            .is_some_and(|at| at <= now.checked_add_signed(margin).unwrap_or(now))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .field("project_id", &self.project_id)
            .field("services", &self.catalog.services().len())
            .finish()
    }
}

/// Authenticates with the configured credentials.
pub(crate) async fn authenticate(
    transport: &Transport,
    config: &CloudConfig,
) -> Result<Token, PortError> {
    match config.credentials() {
        Credentials::RackspaceApiKey { .. } | Credentials::V2Password { .. } => {
            rackspace_v2::authenticate(transport, config).await
        }
        Credentials::V3Password { .. } | Credentials::V3ApplicationCredential { .. } => {
            keystone_v3::authenticate(transport, config).await
        }
    }
}

/// Parses an expiry: RFC 3339 with an offset (`2015-11-07T02:58:43.578887Z`,
/// Rackspace's `…-05:00`) or without one (UTC).
/// POSTs a token request to identity and returns the successful answer;
/// an error status is classified (a 401 here is wrong credentials).
async fn request_token(
    transport: &Transport,
    operation: &str,
    url: &str,
    body: &serde_json::Value,
    stat_key: &str,
) -> Result<RawResponse, PortError> {
    let url = reqwest::Url::parse(url).map_err(|e| {
        PortError::new(
            operation,
            phoenix_core::ports::ErrorKind::Invalid(format!("auth_url gives no valid URL: {e}")),
        )
    })?;
    let raw = transport
        .execute(Outgoing {
            method: reqwest::Method::POST,
            url,
            token: None,
            body: Some(("application/json", body)),
            headers: &[],
            stat_key: stat_key.into(),
            operation,
        })
        .await?;
    if !raw.is_success() {
        return Err(classify(
            raw.status,
            &raw.headers,
            &raw.body,
            operation.to_owned(),
            &transport.redactor,
        ));
    }
    Ok(raw)
}

pub(crate) fn parse_expiry(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_parse_in_every_published_form() {
        let z = parse_expiry("2015-11-07T02:58:43.578887Z").unwrap();
        assert_eq!(z.to_rfc3339(), "2015-11-07T02:58:43.578887+00:00");
        let offset = parse_expiry("2026-11-23T04:34:22.999-05:00").unwrap();
        assert_eq!(offset.to_rfc3339(), "2026-11-23T09:34:22.999+00:00");
        assert!(parse_expiry("2026-11-23T04:34:22").is_some());
        assert!(parse_expiry("tomorrow").is_none());
    }
}
