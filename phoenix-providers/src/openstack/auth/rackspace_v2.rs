//! Identity v2.0 as Rackspace (and Mimic) speak it: `POST /v2.0/tokens`
//! with `RAX-KSKEY:apiKeyCredentials` (username and API key) or
//! `passwordCredentials`, answered by `access.token` and
//! `access.serviceCatalog`.

use phoenix_core::ports::{ErrorKind, PortError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::{parse_expiry, Token};
use crate::openstack::catalog::{Catalog, V2Service};
use crate::openstack::config::{CloudConfig, Credentials, TenantRef};
use crate::openstack::http::Transport;

#[derive(Deserialize)]
struct Answer {
    access: Access,
}

#[derive(Deserialize)]
struct Access {
    token: TokenBody,
    #[serde(rename = "serviceCatalog", default)]
    service_catalog: Vec<V2Service>,
    #[serde(default)]
    user: Option<User>,
}

#[derive(Deserialize)]
struct TokenBody {
    id: SecretString,
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    tenant: Option<Tenant>,
}

#[derive(Deserialize)]
struct Tenant {
    id: String,
}

#[derive(Deserialize)]
struct User {
    #[serde(rename = "RAX-AUTH:defaultRegion", default)]
    default_region: Option<String>,
}

fn request_body(credentials: &Credentials) -> Option<serde_json::Value> {
    let (mut auth, tenant) = match credentials {
        Credentials::RackspaceApiKey {
            username,
            api_key,
            tenant,
        } => (
            json!({"RAX-KSKEY:apiKeyCredentials": {
                "username": username,
                "apiKey": api_key.expose_secret(),
            }}),
            tenant,
        ),
        Credentials::V2Password {
            username,
            password,
            tenant,
        } => (
            json!({"passwordCredentials": {
                "username": username,
                "password": password.expose_secret(),
            }}),
            tenant,
        ),
        _ => return None,
    };
    match tenant {
        Some(TenantRef::Id(id)) => auth["tenantId"] = json!(id),
        Some(TenantRef::Name(name)) => auth["tenantName"] = json!(name),
        None => {}
    }
    Some(json!({ "auth": auth }))
}

pub(super) async fn authenticate(
    transport: &Transport,
    config: &CloudConfig,
) -> Result<Token, PortError> {
    let operation = format!(
        "identity v2.0: authenticating {}",
        config.credentials().principal()
    );
    let Some(body) = request_body(config.credentials()) else {
        return Err(PortError::new(
            operation,
            ErrorKind::Invalid("these credentials are not for identity v2.0".into()),
        ));
    };
    let raw = super::request_token(
        transport,
        &operation,
        &config.v2_tokens_url(),
        &body,
        "identity POST /v2.0/tokens",
    )
    .await?;
    let answer: Answer = serde_json::from_slice(&raw.body).map_err(|e| {
        // The body holds the token: name the field that failed, never show it.
        PortError::new(
            operation.clone(),
            ErrorKind::BadResponse(format!(
                "HTTP {} answer is not an identity v2.0 token ({})",
                raw.status,
                transport.redactor.scrub(&e.to_string())
            )),
        )
    })?;
    let Answer { access } = answer;
    let expires_at = match access.token.expires.as_deref() {
        Some(text) => Some(parse_expiry(text).ok_or_else(|| {
            PortError::new(
                operation.clone(),
                ErrorKind::BadResponse(format!("token expiry {text:?} is not a timestamp")),
            )
        })?),
        None => None,
    };
    let default_region = access.user.and_then(|u| u.default_region);
    Ok(Token {
        value: access.token.id,
        expires_at,
        catalog: Catalog::from_v2(access.service_catalog).with_default_region(default_region),
        project_id: access.token.tenant.map(|t| t.id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_the_rackspace_reference() {
        let c = Credentials::RackspaceApiKey {
            username: "alice".into(),
            api_key: SecretString::from("k-123".to_owned()),
            tenant: Some(TenantRef::Name("t1".into())),
        };
        assert_eq!(
            request_body(&c).unwrap(),
            json!({"auth": {"RAX-KSKEY:apiKeyCredentials": {"username": "alice", "apiKey": "k-123"},
                            "tenantName": "t1"}})
        );
        let p = Credentials::V2Password {
            username: "bob".into(),
            password: SecretString::from("pw".to_owned()),
            tenant: Some(TenantRef::Id("42".into())),
        };
        assert_eq!(
            request_body(&p).unwrap(),
            json!({"auth": {"passwordCredentials": {"username": "bob", "password": "pw"},
                            "tenantId": "42"}})
        );
        assert!(request_body(&Credentials::application_credential("i", "s")).is_none());
    }
}
