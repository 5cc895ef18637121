//! AWS's default credential chain as `AwsConfig::from_env` uses it: one
//! source after another, in AWS's order, with the ECS, IMDSv2 and STS endpoints
//! served by small HTTP servers on 127.0.0.1. One test, run in order: the
//! chain reads the process environment, which the scenarios change.

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use phoenix_providers::aws::credentials::{default_chain, default_region, ProvideCredentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request the server saw: method, path and headers (lower-cased).
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
}

type Route = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

/// A one-request-per-connection HTTP/1.1 server on 127.0.0.1 (every answer
/// carries the TTL header IMDSv2 gives its session tokens).
async fn serve(route: Route) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (route, log) = (route.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let mut lines = head.split("\r\n");
                let mut first = lines.next().unwrap_or_default().split(' ');
                let req = Seen {
                    method: first.next().unwrap_or_default().to_owned(),
                    path: first.next().unwrap_or_default().to_owned(),
                    headers: lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect(),
                };
                let (status, body) = route(&req);
                log.lock().unwrap().push(req);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

/// STS's answer to `action`, with role credentials.
fn sts_answer(action: &str) -> String {
    format!(
        "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><{action}Result>\
<Credentials><AccessKeyId>AKIDSTS</AccessKeyId><SecretAccessKey>sts-secret-value</SecretAccessKey>\
<SessionToken>sts-token-value</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>\
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/deploy/phoenix</Arn><AssumedRoleId>AROA:phoenix</AssumedRoleId></AssumedRoleUser>\
</{action}Result></{action}Response>"
    )
}

const VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ROLE_SESSION_NAME",
];

/// A clean environment: no credentials anywhere, files of our own (empty
/// unless given), IMDS off.
fn clean(dir: &std::path::Path, config: &str, credentials: &str) {
    for v in VARS {
        std::env::remove_var(v);
    }
    let (c, k) = (dir.join("config"), dir.join("credentials"));
    std::fs::write(&c, config).unwrap();
    std::fs::write(&k, credentials).unwrap();
    std::env::set_var("AWS_CONFIG_FILE", &c);
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &k);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
}

async fn access_key(profile: &str) -> Result<(String, String), String> {
    let chain = default_chain(profile);
    match chain.provide_credentials().await {
        Ok(c) => Ok((c.access_key_id().to_owned(), format!("{c:?}"))),
        Err(e) => Err(phoenix_core::error_chain(&e)),
    }
}

#[tokio::test]
async fn the_default_chain_tries_each_source_in_awss_order() {
    let dir = tempfile::tempdir().unwrap();

    // 1. The environment comes first, even with a profile configured.
    clean(
        dir.path(),
        "",
        "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = file-secret\n",
    );
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDENV");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "env-secret-value");
    let (key, shown) = access_key("default").await.unwrap();
    assert_eq!(key, "AKIDENV");
    assert!(!shown.contains("env-secret-value"), "redacted: {shown}");

    // 2. Then the shared files, for the profile named (`[profile x]` in
    //    config, `[x]` in credentials), with the profile's region.
    clean(
        dir.path(),
        "[profile ci]\nregion = eu-north-1\n",
        "[ci]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret-value\n",
    );
    std::env::set_var("AWS_PROFILE", "ci");
    let (key, shown) = access_key("ci").await.unwrap();
    assert_eq!(key, "AKIDPROFILE");
    assert!(!shown.contains("profile-secret-value"), "redacted: {shown}");
    assert_eq!(default_region("ci").await.as_deref(), Some("eu-north-1"));

    // 3. A profile's credential_process.
    clean(
        dir.path(),
        "[profile proc]\ncredential_process = printf '{\"Version\":1,\"AccessKeyId\":\"AKIDPROC\",\"SecretAccessKey\":\"proc-secret-value\"}'\n",
        "",
    );
    let (key, _) = access_key("proc").await.unwrap();
    assert_eq!(key, "AKIDPROC");
    clean(
        dir.path(),
        "[profile broken]\ncredential_process = sh -c 'echo nope >&2; exit 3'\n",
        "",
    );
    let e = access_key("broken").await.unwrap_err();
    assert!(e.contains("credential") || e.contains("process"), "{e}");

    // 4. ECS container credentials (full URI and authorization token).
    let (ecs, ecs_seen) = serve(Arc::new(|req: &Seen| match req.path.as_str() {
        "/creds" => (
            200,
            r#"{"AccessKeyId":"AKIDECS","SecretAccessKey":"ecs-secret-value","Token":"ecs-token-value","Expiration":"2099-01-01T00:00:00Z"}"#.into(),
        ),
        _ => (404, "{}".into()),
    }))
    .await;
    clean(dir.path(), "", "");
    std::env::set_var("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{ecs}/creds"));
    std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN", "container-auth-value");
    let (key, shown) = access_key("default").await.unwrap();
    assert_eq!(key, "AKIDECS");
    assert!(
        !shown.contains("ecs-secret-value") && !shown.contains("ecs-token-value"),
        "redacted: {shown}"
    );
    let seen = ecs_seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some("container-auth-value")
    );

    // 5. IMDSv2: a session token first (PUT), then the role, then its
    //    credentials, each with the token.
    let (imds, imds_seen) = serve(Arc::new(|req: &Seen| {
        let token_ok = req.headers.get("x-aws-ec2-metadata-token").map(String::as_str)
            == Some("imds-session-token");
        match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/latest/api/token") => (200, "imds-session-token".into()),
            (_, _) if !token_ok => (401, String::new()),
            ("GET", "/latest/meta-data/iam/security-credentials/") => (200, "web-role".into()),
            ("GET", "/latest/meta-data/iam/security-credentials/web-role") => (
                200,
                r#"{"Code":"Success","LastUpdated":"2026-12-03T00:00:00Z","Type":"AWS-HMAC","AccessKeyId":"AKIDIMDS","SecretAccessKey":"imds-secret-value","Token":"imds-token-value","Expiration":"2099-01-01T00:00:00Z"}"#.into(),
            ),
            _ => (404, String::new()),
        }
    }))
    .await;
    clean(dir.path(), "", "");
    std::env::remove_var("AWS_EC2_METADATA_DISABLED");
    std::env::set_var("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds);
    let (key, shown) = access_key("default").await.unwrap();
    assert_eq!(key, "AKIDIMDS");
    assert!(!shown.contains("imds-secret-value"), "redacted: {shown}");
    let seen = imds_seen.lock().unwrap().clone();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("PUT", "/latest/api/token")
    );
    assert!(seen[0]
        .headers
        .contains_key("x-aws-ec2-metadata-token-ttl-seconds"));

    // 7. Roles through STS (at AWS_ENDPOINT_URL_STS): a web identity
    //    token from the environment (an unsigned call), and a profile's
    //    role_arn with a source_profile (signed with the source's keys).
    let (sts, sts_seen) = serve(Arc::new(|_: &Seen| (200, sts_answer("AssumeRole")))).await;
    clean(
        dir.path(),
        "[profile deploy]\nrole_arn = arn:aws:iam::123456789012:role/deploy\nsource_profile = base\nregion = us-east-1\n",
        "[base]\naws_access_key_id = AKIDBASE\naws_secret_access_key = base-secret-value\n",
    );
    std::env::set_var("AWS_ENDPOINT_URL_STS", &sts);
    std::env::set_var("AWS_REGION", "us-east-1");
    let (key, shown) = access_key("deploy").await.unwrap();
    assert_eq!(key, "AKIDSTS", "the role's credentials, not the source's");
    assert!(!shown.contains("sts-secret-value"), "redacted: {shown}");
    let seen = sts_seen.lock().unwrap().clone();
    let auth = seen[0]
        .headers
        .get("authorization")
        .cloned()
        .unwrap_or_default();
    assert!(
        auth.contains("Credential=AKIDBASE/"),
        "signed with the source profile: {auth}"
    );
    let (sts, sts_seen) = serve(Arc::new(|_: &Seen| {
        (200, sts_answer("AssumeRoleWithWebIdentity"))
    }))
    .await;
    clean(dir.path(), "", "");
    let token = dir.path().join("token");
    std::fs::write(&token, "web-identity-jwt-value").unwrap();
    std::env::set_var("AWS_ENDPOINT_URL_STS", &sts);
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_WEB_IDENTITY_TOKEN_FILE", &token);
    std::env::set_var("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/ci");
    let (key, _) = access_key("default").await.unwrap();
    assert_eq!(key, "AKIDSTS");
    let seen = sts_seen.lock().unwrap().clone();
    assert!(
        !seen[0].headers.contains_key("authorization"),
        "a web identity call is not signed"
    );

    // 6. Nothing anywhere: an error, not a panic, and no secret in it.
    clean(dir.path(), "", "");
    let e = access_key("default").await.unwrap_err();
    assert!(!e.is_empty());
    for v in VARS {
        std::env::remove_var(v);
    }
}
