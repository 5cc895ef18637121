//! Credentials and tokens never show: a canary password, API key and
//! token are planted and looked for in `Debug` and `Display` output, in
//! errors (from services that echo them back) and in the logs. In its own
//! test binary so that no concurrent test shares the logging callsites.

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use phoenix_core::id::ServerId;
use phoenix_core::ports::{Compute, ErrorKind};
use phoenix_core::retry::RetryPolicy;
use phoenix_providers::openstack::testing::{MockApi, MockResponse};
use phoenix_providers::openstack::{CloudConfig, Credentials, NovaCompute, Session};
use serde_json::json;

const PROJECT: &str = "a6944d763bf64ee6a275f1263fae0352";
const SUBJECT_TOKEN: &str = "gAAAAABWHp-canary-subject-token-8c5d1b";

fn retry() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(2),
        max_retries: 3,
        jitter_seed: Some(1),
    }
}

/// A Keystone answering with a project-scoped token (the API reference's
/// sample, abridged to a compute endpoint).
fn keystone(api: &MockApi) {
    let base = api.url();
    api.on("POST", "/identity/v3/auth/tokens", move |_| {
        let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        MockResponse::json(201, json!({"token": {
            "methods": ["password"], "expires_at": expires,
            "project": {"domain": {"id": "default", "name": "Default"}, "id": PROJECT, "name": "admin"},
            "catalog": [{"endpoints": [{"region_id": "RegionOne", "region": "RegionOne",
                "url": format!("{base}/compute/v2.1/{PROJECT}"), "interface": "public", "id": "e1"}],
                "type": "compute", "id": "a226b3eeb5594f50bf8b6df94636ed28", "name": "nova"}]
        }}))
        .header("X-Subject-Token", &format!("{SUBJECT_TOKEN}-0"))
    });
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn canary_credentials_and_tokens_never_show() {
    const PASSWORD: &str = "canary-password-5d2e9f";
    const API_KEY: &str = "canary-api-key-77a1c3";
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let api = MockApi::start().await.unwrap();
    keystone(&api);
    // A Nova that echoes what it got, token included, in its error.
    api.on(
        "GET",
        &format!("/compute/v2.1/{PROJECT}/servers/detail"),
        |r| {
            let token = r.header("x-auth-token").unwrap_or_default().to_owned();
            MockResponse::json(
                400,
                json!({"badRequest": {"code": 400,
            "message": format!("bad token {token}")}}),
            )
        },
    );
    let config = CloudConfig::builder()
        .auth_url(format!("{}/identity/v3", api.url()))
        .credentials(Credentials::password_v3(
            "admin", "Default", PASSWORD, "admin", "Default",
        ))
        .build()
        .unwrap();
    let session = Session::builder(config.clone())
        .retry(retry())
        .build()
        .unwrap();
    let nova = NovaCompute::builder(session.clone()).build();
    let err = nova
        .describe(&[ServerId::new("s1").unwrap()])
        .await
        .unwrap_err();
    let token = format!("{SUBJECT_TOKEN}-0");
    let shown = [
        format!("{config:?}"),
        format!("{session:?}"),
        format!("{nova:?}"),
        format!("{:?}", session.token().await.unwrap()),
        err.to_string(),
        err.chain(),
        format!("{err:?}"),
    ];
    for s in &shown {
        assert!(!s.contains(PASSWORD) && !s.contains(&token), "{s}");
    }
    assert!(err.to_string().contains("[REDACTED]"), "{err}");

    // Rackspace: an identity service that echoes the API key in its 401.
    let rax = MockApi::start().await.unwrap();
    rax.on("POST", "/v2.0/tokens", |r| {
        let key = r.json()["auth"]["RAX-KSKEY:apiKeyCredentials"]["apiKey"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        MockResponse::json(
            401,
            json!({"unauthorized": {"code": 401,
            "message": format!("Username or api key {key} is invalid.")}}),
        )
    });
    let config = CloudConfig::builder()
        .auth_url(format!("{}/v2.0", rax.url()))
        .credentials(Credentials::rackspace_api_key("alice", API_KEY))
        .build()
        .unwrap();
    let session = Session::builder(config.clone())
        .retry(retry())
        .build()
        .unwrap();
    let err = session.endpoint("compute").await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unauthorized(_)), "{err}");
    for s in [format!("{config:?}"), err.to_string(), format!("{err:?}")] {
        assert!(!s.contains(API_KEY), "{s}");
    }
    let sent = rax.requests_to("POST", "/v2.0/tokens");
    assert_eq!(
        sent[0].json()["auth"]["RAX-KSKEY:apiKeyCredentials"]["username"],
        "alice"
    );

    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("openstack request"),
        "logging ran: {logged}"
    );
    for secret in [PASSWORD, API_KEY, token.as_str()] {
        assert!(!logged.contains(secret), "{logged}");
    }
}
