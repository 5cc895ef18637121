//! Keystone v3: `POST /v3/auth/tokens` with the `password` or
//! `application_credential` method and a project or domain scope; the
//! token comes in the `X-Subject-Token` header, the expiry and catalog in
//! the body.

use phoenix_core::ports::{ErrorKind, PortError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_expiry, Token};
use crate::openstack::catalog::{Catalog, V3Service};
use crate::openstack::config::{
    ApplicationCredentialRef, CloudConfig, Credentials, DomainRef, ProjectRef, Scope, UserRef,
};
use crate::openstack::http::Transport;

#[derive(Deserialize)]
struct Answer {
    token: TokenBody,
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    catalog: Vec<V3Service>,
    #[serde(default)]
    project: Option<Project>,
}

#[derive(Deserialize)]
struct Project {
    id: String,
}

fn domain(d: &DomainRef) -> Value {
    match d {
        DomainRef::Id(id) => json!({ "id": id }),
        DomainRef::Name(name) => json!({ "name": name }),
    }
}

fn user(u: &UserRef) -> Value {
    match u {
        UserRef::Id(id) => json!({ "id": id }),
        UserRef::Name { name, domain: d } => json!({ "name": name, "domain": domain(d) }),
    }
}

fn request_body(credentials: &Credentials) -> Option<Value> {
    match credentials {
        Credentials::V3Password {
            user: u,
            password,
            scope,
        } => {
            let mut user_body = user(u);
            user_body["password"] = json!(password.expose_secret());
            let mut auth = json!({
                "identity": {"methods": ["password"], "password": {"user": user_body}}
            });
            match scope {
                Scope::Unscoped => {}
                Scope::Project(ProjectRef::Id(id)) => {
                    auth["scope"] = json!({"project": {"id": id}});
                }
                Scope::Project(ProjectRef::Name { name, domain: d }) => {
                    auth["scope"] = json!({"project": {"name": name, "domain": domain(d)}});
                }
                Scope::Domain(d) => auth["scope"] = json!({ "domain": domain(d) }),
            }
            Some(json!({ "auth": auth }))
        }
        Credentials::V3ApplicationCredential { credential, secret } => {
            let mut cred = match credential {
                ApplicationCredentialRef::Id(id) => json!({ "id": id }),
                ApplicationCredentialRef::Name { name, user: u } => {
                    json!({ "name": name, "user": user(u) })
                }
            };
            cred["secret"] = json!(secret.expose_secret());
            Some(json!({"auth": {"identity": {
                "methods": ["application_credential"],
                "application_credential": cred,
            }}}))
        }
        _ => None,
    }
}

pub(super) async fn authenticate(
    transport: &Transport,
    config: &CloudConfig,
) -> Result<Token, PortError> {
    let operation = format!(
        "keystone v3: authenticating {}",
        config.credentials().principal()
    );
    let Some(body) = request_body(config.credentials()) else {
        return Err(PortError::new(
            operation,
            ErrorKind::Invalid("these credentials are not for Keystone v3".into()),
        ));
    };
    let raw = super::request_token(
        transport,
        &operation,
        &config.v3_tokens_url(),
        &body,
        "identity POST /v3/auth/tokens",
    )
    .await?;
    let value = raw
        .headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(|v| SecretString::from(v.to_owned()))
        .ok_or_else(|| {
            PortError::new(
                operation.clone(),
                ErrorKind::BadResponse(format!(
                    "HTTP {} answer has no X-Subject-Token header",
                    raw.status
                )),
            )
        })?;
    transport.redactor.add(value.expose_secret());
    let answer: Answer = serde_json::from_slice(&raw.body).map_err(|e| {
        PortError::new(
            operation.clone(),
            ErrorKind::BadResponse(format!(
                "HTTP {} answer is not a Keystone v3 token ({e})",
                raw.status
            )),
        )
    })?;
    let expires_at = match answer.token.expires_at.as_deref() {
        Some(text) => Some(parse_expiry(text).ok_or_else(|| {
            PortError::new(
                operation.clone(),
                ErrorKind::BadResponse(format!("expires_at {text:?} is not a timestamp")),
            )
        })?),
        None => None,
    };
    Ok(Token {
        value,
        expires_at,
        catalog: Catalog::from_v3(answer.token.catalog),
        project_id: answer.token.project.map(|p| p.id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The request bodies of the Keystone v3 API reference
    // (auth-password-project-scoped, auth-application-credential-id and
    // -name requests).
    #[test]
    fn bodies_follow_the_api_reference() {
        let c = Credentials::password_v3("admin", "Default", "devstacker", "demo", "Default");
        assert_eq!(
            request_body(&c).unwrap(),
            json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": "admin", "domain": {"name": "Default"}, "password": "devstacker"}}},
                "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}
            }})
        );
        let d = Credentials::V3Password {
            user: UserRef::Id("ee4dfb6e5540447cb3741905149d9b6e".into()),
            password: SecretString::from("devstacker".to_owned()),
            scope: Scope::Domain(DomainRef::Id("default".into())),
        };
        assert_eq!(
            request_body(&d).unwrap()["auth"]["scope"],
            json!({"domain": {"id": "default"}})
        );
        let a = Credentials::application_credential(
            "423f19a4ac1e4f48bbb4180756e6eb6c",
            "rEaqvJka48mpv",
        );
        assert_eq!(
            request_body(&a).unwrap(),
            json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"id": "423f19a4ac1e4f48bbb4180756e6eb6c",
                                           "secret": "rEaqvJka48mpv"}}}})
        );
        let n = Credentials::V3ApplicationCredential {
            credential: ApplicationCredentialRef::Name {
                name: "monitoring".into(),
                user: UserRef::Id("423f19a4ac1e4f48bbb4180756e6eb6c".into()),
            },
            secret: SecretString::from("rEaqvJka48mpv".to_owned()),
        };
        assert_eq!(
            request_body(&n).unwrap()["auth"]["identity"]["application_credential"],
            json!({"name": "monitoring", "secret": "rEaqvJka48mpv",
                   "user": {"id": "423f19a4ac1e4f48bbb4180756e6eb6c"}})
        );
    }
}
