//! The OpenStack clients against the request and response samples of the
//! OpenStack API reference, served by a scripted loopback server: Keystone
//! v3 (no emulator exists here), Nova's `createImage`, `os-stop` and
//! `os-start` (Mimic lacks them), Glance v2 image properties and deletion
//! (Mimic's Glance only lists), and the session's token cache, retries and
//! redaction.

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phoenix_core::id::{ImageId, ServerId};
use phoenix_core::ports::{BakeRequest, BakeSource, Compute, ErrorKind, Images};
use phoenix_core::retry::RetryPolicy;
use phoenix_providers::openstack::testing::{MockApi, MockResponse};
use phoenix_providers::openstack::{
    ApiRequest, CloudConfig, Credentials, ImageApi, Interface, NovaCompute, OpenStackImages,
    Session,
};
use serde_json::{json, Value};

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

fn endpoint(base: &str, path: &str, interface: &str) -> Value {
    json!({"region_id": "RegionOne", "url": format!("{base}{path}"), "region": "RegionOne",
           "interface": interface, "id": format!("{interface}-{path}")})
}

/// The auth-password-project-scoped response of the Keystone v3 API
/// reference, abridged to the services used here, its endpoints pointed
/// at the scripted server.
fn v3_token(base: &str, expires_at: &str) -> Value {
    json!({"token": {
        "methods": ["password"],
        "roles": [{"id": "51cc68287d524c759f47c811e6463340", "name": "admin"}],
        "expires_at": expires_at,
        "project": {"domain": {"id": "default", "name": "Default"},
                    "id": PROJECT, "name": "admin"},
        "is_domain": false,
        "catalog": [
            {"endpoints": [endpoint(base, "/identity/v3", "public")],
             "type": "identity", "id": "050726f278654128aba89757ae25950c", "name": "keystone"},
            {"endpoints": [
                endpoint(base, &format!("/compute/v2.1/{PROJECT}"), "public"),
                endpoint(base, &format!("/compute-internal/v2.1/{PROJECT}"), "internal"),
                endpoint(base, &format!("/compute-admin/v2.1/{PROJECT}"), "admin")],
             "type": "compute", "id": "a226b3eeb5594f50bf8b6df94636ed28", "name": "nova"},
            {"endpoints": [endpoint(base, "/image", "public")],
             "type": "image", "id": "d512f8860c0f45cf99b1c3cef86cfd97", "name": "glance"},
            {"endpoints": [endpoint(base, "/network/", "public")],
             "type": "network", "id": "67b993549db94296a853d635b48db3c9", "name": "neutron"}
        ],
        "user": {"domain": {"id": "default", "name": "Default"},
                 "id": "ee4dfb6e5540447cb3741905149d9b6e", "name": "admin",
                 "password_expires_at": null},
        "audit_ids": ["3T2dc1CGQxyJsHdDu1xkcw"],
        "issued_at": "2015-11-07T01:58:43.578929Z"
    }})
}

fn in_an_hour() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()
}

/// A Keystone that answers the reference's token response and counts
/// authentications.
fn keystone(
    api: &MockApi,
    expires_at: impl Fn() -> String + Send + Sync + 'static,
) -> Arc<AtomicUsize> {
    let base = api.url();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    api.on("POST", "/identity/v3/auth/tokens", move |_| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        MockResponse::json(201, v3_token(&base, &expires_at()))
            .header("X-Subject-Token", &format!("{SUBJECT_TOKEN}-{n}"))
    });
    count
}

fn v3_session(api: &MockApi, interface: Interface) -> Session {
    let config = CloudConfig::builder()
        .auth_url(format!("{}/identity/v3", api.url()))
        .credentials(Credentials::password_v3(
            "admin",
            "Default",
            "devstacker",
            "admin",
            "Default",
        ))
        .interface(interface)
        .build()
        .unwrap();
    Session::builder(config).retry(retry()).build().unwrap()
}

fn servers_page(ids: &[&str], status: &str) -> Value {
    json!({"servers": ids.iter().map(|id| json!({
        "id": id, "name": format!("web-{id}"), "status": status,
        "addresses": {"private": [{"addr": "192.168.0.3", "version": 4,
                                   "OS-EXT-IPS:type": "fixed"}]},
        "metadata": {"phoenix-pool": "web-v1-0"},
        "created": "2013-09-03T04:01:32Z",
        "OS-SRV-USG:launched_at": "2013-09-03T04:01:33.000000",
        "image": {"id": "70a599e0-31e7-49b7-b260-868f441e862b"},
        "fault": if status == "ERROR" { json!({"code": 500, "message": "No valid host was found."}) } else { Value::Null }
    })).collect::<Vec<_>>()})
}

#[tokio::test]
async fn keystone_v3_password_auth_follows_the_reference() {
    let api = MockApi::start().await.unwrap();
    let auths = keystone(&api, in_an_hour);
    api.on(
        "GET",
        &format!("/compute/v2.1/{PROJECT}/servers/detail"),
        |_| MockResponse::json(200, servers_page(&["s1"], "ACTIVE")),
    );
    let session = v3_session(&api, Interface::Public);
    let nova = NovaCompute::builder(session.clone()).build();
    let seen = nova
        .describe(&[ServerId::new("s1").unwrap()])
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].labels.get("phoenix-pool"), Some("web-v1-0"));
    nova.describe(&[ServerId::new("s1").unwrap()])
        .await
        .unwrap();
    assert_eq!(auths.load(Ordering::SeqCst), 1, "the token is cached");

    let auth = &api.requests_to("POST", "/identity/v3/auth/tokens")[0];
    // The auth-password-project-scoped request of the API reference.
    assert_eq!(
        auth.json(),
        json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"name": "Default"}, "password": "devstacker"}}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}
        }})
    );
    let listed = api.requests_to("GET", &format!("/compute/v2.1/{PROJECT}/servers/detail"));
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[0].header("x-auth-token"),
        Some(&*format!("{SUBJECT_TOKEN}-0"))
    );
    assert_eq!(listed[0].query_param("limit").as_deref(), Some("1000"));
    let token = session.token().await.unwrap();
    assert_eq!(token.project_id(), Some(PROJECT));
    assert!(token.expires_at().is_some());
}

#[tokio::test]
async fn application_credentials_and_the_internal_interface() {
    let api = MockApi::start().await.unwrap();
    keystone(&api, in_an_hour);
    api.on(
        "GET",
        &format!("/compute-internal/v2.1/{PROJECT}/servers/detail"),
        |_| MockResponse::json(200, json!({"servers": []})),
    );
    let config = CloudConfig::builder()
        .auth_url(format!("{}/identity", api.url()))
        .credentials(Credentials::application_credential(
            "423f19a4ac1e4f48bbb4180756e6eb6c",
            "rEaqvJka48mpv",
        ))
        .interface(Interface::Internal)
        .region("RegionOne")
        .build()
        .unwrap();
    let session = Session::builder(config).retry(retry()).build().unwrap();
    let nova = NovaCompute::builder(session).build();
    assert!(nova
        .list(&phoenix_core::labels::LabelSelector::new())
        .await
        .unwrap()
        .is_empty());
    let auth = &api.requests_to("POST", "/identity/v3/auth/tokens")[0];
    // The auth-application-credential-id request of the API reference.
    assert_eq!(
        auth.json(),
        json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": "423f19a4ac1e4f48bbb4180756e6eb6c",
                                       "secret": "rEaqvJka48mpv"}}}})
    );
}

#[tokio::test]
async fn a_401_re_authenticates_once_and_tokens_renew_before_expiry() {
    let api = MockApi::start().await.unwrap();
    // Tokens that expire within the renewal margin (5 minutes).
    let auths = keystone(&api, || {
        (chrono::Utc::now() + chrono::Duration::minutes(2)).to_rfc3339()
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    api.on("GET", &format!("/compute/v2.1/{PROJECT}/servers/detail"), move |_| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            MockResponse::json(401, json!({"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}))
        } else {
            MockResponse::json(200, json!({"servers": []}))
        }
    });
    let session = v3_session(&api, Interface::Public);
    let nova = NovaCompute::builder(session.clone()).build();
    let ids = [ServerId::new("s1").unwrap()];
    nova.describe(&ids).await.unwrap();
    // One authentication, a 401, a second authentication, the retry.
    assert_eq!(auths.load(Ordering::SeqCst), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let detail = api.requests_to("GET", &format!("/compute/v2.1/{PROJECT}/servers/detail"));
    assert_ne!(
        detail[0].header("x-auth-token"),
        detail[1].header("x-auth-token")
    );
    // Every call renews a token that expires within the margin.
    nova.describe(&ids).await.unwrap();
    assert_eq!(auths.load(Ordering::SeqCst), 3);

    // A cloud that keeps refusing the token: Unauthorized, after one
    // re-authentication only.
    let api = MockApi::start().await.unwrap();
    let auths = keystone(&api, in_an_hour);
    api.on(
        "GET",
        &format!("/compute/v2.1/{PROJECT}/servers/detail"),
        |_| MockResponse::json(401, json!({"error": {"code": 401, "message": "no"}})),
    );
    let nova = NovaCompute::builder(v3_session(&api, Interface::Public)).build();
    let err = nova.describe(&ids).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unauthorized(_)), "{err}");
    assert_eq!(auths.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn throttling_server_errors_and_garbage_are_classified() {
    let api = MockApi::start().await.unwrap();
    keystone(&api, in_an_hour);
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    api.on(
        "GET",
        &format!("/compute/v2.1/{PROJECT}/servers/detail"),
        move |_| match c.fetch_add(1, Ordering::SeqCst) {
            0 => MockResponse::json(
                429,
                json!({"overLimit": {"code": 429, "message": "slow down"}}),
            )
            .header("Retry-After", "1"),
            1 => MockResponse::json(
                503,
                json!({"computeFault": {"code": 503, "message": "busy"}}),
            ),
            _ => MockResponse::json(200, json!({"servers": []})),
        },
    );
    let session = v3_session(&api, Interface::Public);
    let nova = NovaCompute::builder(session.clone()).build();
    let started = Instant::now();
    nova.describe(&[ServerId::new("s").unwrap()]).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(n.load(Ordering::SeqCst), 3);

    api.on("GET", &format!("/compute/v2.1/{PROJECT}/servers/*"), |_| {
        MockResponse::raw(200, "<html>proxy error page</html>")
    });
    let err = nova.get(&ServerId::new("s1").unwrap()).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::BadResponse(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("nova: reading server s1") && text.contains("proxy error page"),
        "{text}"
    );

    let always = Arc::new(AtomicUsize::new(0));
    let a = always.clone();
    api.on(
        "DELETE",
        &format!("/compute/v2.1/{PROJECT}/servers/*"),
        move |_| {
            a.fetch_add(1, Ordering::SeqCst);
            MockResponse::empty(500)
        },
    );
    let err = nova
        .terminate(&ServerId::new("s1").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Temporary(_)), "{err}");
    assert_eq!(
        always.load(Ordering::SeqCst),
        4,
        "the first try and 3 retries"
    );
}

#[tokio::test]
async fn create_image_follows_the_nova_reference() {
    let api = MockApi::start().await.unwrap();
    keystone(&api, in_an_hour);
    let server = "0e7761dd-ee98-41f0-ba35-05994e446431";
    let image = "0e7761dd-ee98-41f0-ba35-05994e446432";
    // Before microversion 2.45 the image is named by the Location header.
    let location = format!("http://openstack.example.com/v2.1/{PROJECT}/images/{image}");
    api.on(
        "POST",
        &format!("/compute/v2.1/{PROJECT}/servers/*/action"),
        move |_| MockResponse::empty(202).header("Location", &location),
    );
    let session = v3_session(&api, Interface::Public);
    let images = OpenStackImages::builder(session.clone())
        .api(ImageApi::Glance)
        .build();
    let mut properties = BTreeMap::new();
    properties.insert("meta_var".to_owned(), "meta_val".to_owned());
    let baked = images
        .bake(&BakeRequest {
            source: BakeSource::Server(ServerId::new(server).unwrap()),
            name: "foo-image".into(),
            version: "2026.11.22-3".into(),
            base: Some("debian-12".into()),
            properties,
        })
        .await
        .unwrap();
    assert_eq!(baked.id.as_str(), image);
    assert_eq!(baked.state, phoenix_core::model::ImageState::Building);
    assert_eq!(baked.version, "2026.11.22-3");
    let sent = &api.requests_to("POST", &format!("/compute/v2.1/{PROJECT}/servers/*/action"))[0];
    assert_eq!(
        sent.path,
        format!("/compute/v2.1/{PROJECT}/servers/{server}/action")
    );
    // The createImage request sample, with Phoenix's metadata.
    assert_eq!(
        sent.json(),
        json!({"createImage": {"name": "foo-image", "metadata": {
            "meta_var": "meta_val", "phoenix-version": "2026.11.22-3",
            "phoenix-base": "debian-12", "phoenix-image-state": "building"}}})
    );

    // From 2.45 on the body carries it.
    api.on(
        "POST",
        &format!("/compute/v2.1/{PROJECT}/servers/*/action"),
        move |_| {
            MockResponse::json(
                202,
                json!({"image_id": "0e7761dd-ee98-41f0-ba35-05994e446433"}),
            )
        },
    );
    let baked = images
        .bake(&BakeRequest {
            source: BakeSource::Server(ServerId::new(server).unwrap()),
            name: "foo-image".into(),
            version: "2".into(),
            base: None,
            properties: BTreeMap::new(),
        })
        .await
        .unwrap();
    assert_eq!(baked.id.as_str(), "0e7761dd-ee98-41f0-ba35-05994e446433");
}

#[tokio::test]
async fn glance_properties_list_get_and_delete_follow_the_reference() {
    let api = MockApi::start().await.unwrap();
    keystone(&api, in_an_hour);
    let id = "1bea47ed-f6a9-463b-b423-14b9cca9ad27";
    let show = json!({
        "status": "active", "name": "cirros-0.3.2-x86_64-disk", "tags": [],
        "container_format": "bare", "created_at": "2014-05-05T17:15:10Z",
        "disk_format": "qcow2", "updated_at": "2014-05-05T17:15:11Z",
        "visibility": "public", "self": format!("/v2/images/{id}"), "min_disk": 0,
        "protected": false, "id": id, "file": format!("/v2/images/{id}/file"),
        "checksum": "64d7c1cd2b6f60c92c14662941cb7913",
        "os_hash_algo": "sha512",
        "os_hash_value": "073b4523583784fbe01daff81eba092a262ec37ba6d04dd3f52e4cd5c93eb8258af44881345ecda0e49f3d8cc6d2df6b050ff3e72681d723234aff9d17d0cf09",
        "owner": "5ef70662f8b34079a6eddb8da9d75fe8", "size": 13167616, "min_ram": 0,
        "schema": "/v2/schemas/image", "virtual_size": null
    });
    let page1 = json!({"images": [show.clone()], "schema": "/v2/schemas/images",
                       "first": "/v2/images", "next": format!("/v2/images?marker={id}")});
    let page2 = json!({"images": [], "schema": "/v2/schemas/images", "first": "/v2/images"});
    api.on("GET", "/image/v2/images", move |r| {
        if r.query_param("marker").is_some() {
            MockResponse::json(200, page2.clone())
        } else {
            MockResponse::json(200, page1.clone())
        }
    });
    let s = show.clone();
    api.on("GET", "/image/v2/images/*", move |r| {
        if r.path.ends_with(id) {
            MockResponse::json(200, s.clone())
        } else {
            MockResponse::raw(404, "<html><body><h1>404 Not Found</h1></body></html>")
        }
    });
    let patched = show.clone();
    api.on("PATCH", "/image/v2/images/*", move |_| {
        MockResponse::json(200, patched.clone())
    });
    api.on("DELETE", "/image/v2/images/*", |r| {
        if r.path.ends_with("gone") {
            MockResponse::raw(404, "Not Found")
        } else {
            MockResponse::empty(204)
        }
    });
    let session = v3_session(&api, Interface::Public);
    let images = OpenStackImages::builder(session.clone()).build();
    assert_eq!(images.api().await.unwrap(), ImageApi::Glance);
    let listed = images.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        api.requests_to("GET", "/image/v2/images").len(),
        2,
        "followed `next`"
    );
    let got = images.get(&ImageId::new(id).unwrap()).await.unwrap();
    assert!(got.digest.unwrap().starts_with("sha512:073b4523"));
    let missing = images
        .get(&ImageId::new("nope").unwrap())
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing}");

    let mut props = BTreeMap::new();
    props.insert("phoenix-image-state".to_owned(), "released".to_owned());
    props.insert("os/distro".to_owned(), "debian".to_owned());
    images
        .set_properties(&ImageId::new(id).unwrap(), &props)
        .await
        .unwrap();
    let patch = &api.requests_to("PATCH", "/image/v2/images/*")[0];
    assert_eq!(
        patch.header("content-type"),
        Some("application/openstack-images-v2.1-json-patch")
    );
    assert_eq!(
        patch.json(),
        json!([{"op": "add", "path": "/os~1distro", "value": "debian"},
               {"op": "add", "path": "/phoenix-image-state", "value": "released"}])
    );
    images.delete(&ImageId::new(id).unwrap()).await.unwrap();
    images.delete(&ImageId::new("gone").unwrap()).await.unwrap();
    assert_eq!(api.requests_to("DELETE", "/image/v2/images/*").len(), 2);

    let read_only = OpenStackImages::builder(session)
        .write_properties(false)
        .build();
    assert!(!read_only.capabilities().properties);
}

#[tokio::test]
async fn stop_and_start_follow_the_reference_and_tolerate_409() {
    let api = MockApi::start().await.unwrap();
    keystone(&api, in_an_hour);
    let already = Arc::new(Mutex::new(false));
    let a = already.clone();
    api.on(
        "POST",
        &format!("/compute/v2.1/{PROJECT}/servers/*/action"),
        move |r| {
            let stopped = *a.lock().unwrap();
            if r.json() == json!({"os-stop": null}) && stopped {
                MockResponse::json(
                    409,
                    json!({"conflictingRequest": {"code": 409,
                "message": "Cannot 'stop' instance s1 while it is in vm_state stopped"}}),
                )
            } else {
                MockResponse::empty(202)
            }
        },
    );
    api.on("GET", &format!("/compute/v2.1/{PROJECT}/servers/*"), |_| {
        let mut page = servers_page(&["s1"], "SHUTOFF");
        MockResponse::json(200, json!({"server": page["servers"][0].take()}))
    });
    let nova = NovaCompute::builder(v3_session(&api, Interface::Public)).build();
    let id = ServerId::new("s1").unwrap();
    nova.stop(&id).await.unwrap();
    *already.lock().unwrap() = true;
    nova.stop(&id).await.unwrap();
    nova.start(&id).await.unwrap();
    let bodies: Vec<Value> = api
        .requests_to("POST", &format!("/compute/v2.1/{PROJECT}/servers/*/action"))
        .iter()
        .map(|r| r.json())
        .collect();
    assert_eq!(
        bodies,
        [
            json!({"os-stop": null}),
            json!({"os-stop": null}),
            json!({"os-start": null})
        ]
    );
    let rackspace = NovaCompute::builder(v3_session(&api, Interface::Public))
        .stop_start(false)
        .build();
    let err = rackspace.stop(&id).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unsupported(_)), "{err}");
}

#[tokio::test]
async fn error_status_carries_the_fault_message() {
    let api = MockApi::start().await.unwrap();
    keystone(&api, in_an_hour);
    api.on(
        "GET",
        &format!("/compute/v2.1/{PROJECT}/servers/detail"),
        |_| MockResponse::json(200, servers_page(&["s1"], "ERROR")),
    );
    let nova = NovaCompute::builder(v3_session(&api, Interface::Public)).build();
    let seen = nova
        .describe(&[ServerId::new("s1").unwrap()])
        .await
        .unwrap();
    assert_eq!(
        seen[0].status,
        phoenix_core::model::ServerStatus::Error {
            message: "No valid host was found.".into()
        }
    );
}

#[tokio::test]
async fn rackspace_identity_v2_with_password_and_tenant() {
    let api = MockApi::start().await.unwrap();
    let base = api.url();
    api.on("POST", "/v2.0/tokens", move |_| {
        MockResponse::json(200, json!({"access": {
            "token": {"id": "tok-v2-1234", "expires": "2099-01-01T00:00:00.000-05:00",
                      "tenant": {"id": "123456", "name": "123456"}},
            "user": {"RAX-AUTH:defaultRegion": "DFW", "id": "1", "name": "bob"},
            "serviceCatalog": [
                {"name": "cloudServersOpenStack", "type": "compute", "endpoints": [
                    {"region": "DFW", "tenantId": "123456", "publicURL": format!("{base}/dfw/v2/123456")},
                    {"region": "ORD", "tenantId": "123456", "publicURL": format!("{base}/ord/v2/123456")}]},
                {"name": "cloudServersBehavior", "type": "compute", "endpoints": [
                    {"region": "DFW", "tenantId": "123456", "publicURL": format!("{base}/ctl/v2/123456")}]}
            ]}}))
    });
    let config = CloudConfig::builder()
        .auth_url(api.url())
        .credentials(Credentials::V2Password {
            username: "bob".into(),
            password: secrecy::SecretString::from("pw-1".to_owned()),
            tenant: Some(phoenix_providers::openstack::TenantRef::Name(
                "123456".into(),
            )),
        })
        .build()
        .unwrap();
    let session = Session::builder(config).retry(retry()).build().unwrap();
    // Two compute services, endpoints in two regions: the preferred name
    // and the user's default region decide.
    assert_eq!(
        session.endpoint("compute").await.unwrap(),
        format!("{}/dfw/v2/123456", api.url())
    );
    let sent = &api.requests_to("POST", "/v2.0/tokens")[0];
    assert_eq!(
        sent.json(),
        json!({"auth": {"passwordCredentials": {"username": "bob", "password": "pw-1"},
                        "tenantName": "123456"}})
    );
    let req = ApiRequest::get("compute", "/x", "/x".into()).service_name("cloudServersBehavior");
    api.on("GET", "/ctl/v2/123456/x", |_| {
        MockResponse::json(200, json!({}))
    });
    session.send(req).await.unwrap();
    assert_eq!(session.stats().count("identity POST /v2.0/tokens"), 1);
    assert_eq!(session.stats().count("compute GET /x"), 1);
}

#[tokio::test]
async fn create_server_follows_the_nova_reference() {
    use phoenix_core::id::{IdempotencyToken, OperationId, PoolId};
    use phoenix_core::labels::Labels;
    use phoenix_core::ports::{BootPayload, LaunchRequest};

    let api = MockApi::start().await.unwrap();
    keystone(&api, in_an_hour);
    // The create-server response sample.
    api.on("POST", &format!("/compute/v2.1/{PROJECT}/servers"), |_| {
        MockResponse::json(202, json!({"server": {
            "OS-DCF:diskConfig": "AUTO", "adminPass": "6NpUwoz2QDRN",
            "id": "f5dc173b-6804-445a-a6d8-c705dad5b5eb",
            "links": [{"href": "http://openstack.example.com/v2.1/servers/f5dc173b-6804-445a-a6d8-c705dad5b5eb",
                       "rel": "self"}],
            "security_groups": [{"name": "default"}]}}))
        .header("Location", "http://openstack.example.com/v2.1/servers/f5dc173b-6804-445a-a6d8-c705dad5b5eb")
    });
    let nova = NovaCompute::builder(v3_session(&api, Interface::Public))
        .flavor("1")
        .key_name("ops-key")
        .network("ff608d40-75e9-48cb-b745-77bb55b5eaf2")
        .microversion("2.45")
        .build();
    let token = IdempotencyToken::derive(
        &OperationId::new("op-1").unwrap(),
        &PoolId::new("web-v1-1").unwrap(),
        0,
        0,
    );
    let mut labels = Labels::new();
    labels.insert("phoenix-pool", "web-v1-1");
    labels.insert("phoenix-token", token.as_str());
    let mut metadata = BTreeMap::new();
    metadata.insert("team".to_owned(), "shop".to_owned());
    let server = nova
        .launch(&[LaunchRequest {
            name: "web-v1-1-0".into(),
            image: ImageId::new("70a599e0-31e7-49b7-b260-868f441e862b").unwrap(),
            flavor: None,
            boot: BootPayload::OpenStack {
                user_data: secrecy::SecretSlice::from(b"#cloud-config\n".to_vec()),
                metadata,
                config_drive: true,
            },
            labels,
            token: token.clone(),
        }])
        .await
        .remove(0)
        .unwrap();
    assert_eq!(server.id.as_str(), "f5dc173b-6804-445a-a6d8-c705dad5b5eb");
    assert_eq!(server.status, phoenix_core::model::ServerStatus::Building);
    assert!(
        !format!("{server:?}").contains("6NpUwoz2QDRN"),
        "adminPass is dropped"
    );
    let sent = &api.requests_to("POST", &format!("/compute/v2.1/{PROJECT}/servers"))[0];
    assert_eq!(sent.header("x-openstack-nova-api-version"), Some("2.45"));
    // The create-server request sample's fields, with Phoenix's.
    assert_eq!(
        sent.json(),
        json!({"server": {
            "name": "web-v1-1-0",
            "imageRef": "70a599e0-31e7-49b7-b260-868f441e862b",
            "flavorRef": "1",
            "metadata": {"team": "shop", "phoenix-pool": "web-v1-1", "phoenix-token": token.as_str()},
            "config_drive": true,
            "user_data": "I2Nsb3VkLWNvbmZpZwo=",
            "key_name": "ops-key",
            "networks": [{"uuid": "ff608d40-75e9-48cb-b745-77bb55b5eaf2"}]
        }})
    );
}

#[tokio::test]
async fn the_nova_images_api_serves_where_glance_is_absent() {
    let api = MockApi::start().await.unwrap();
    let config = api
        .serve_keystone_v3(&[("compute", &format!("/compute/v2.1/{PROJECT}"))])
        .unwrap();
    // The list-images-with-details response sample, abridged.
    api.on(
        "GET",
        &format!("/compute/v2.1/{PROJECT}/images/detail"),
        |_| {
            MockResponse::json(
                200,
                json!({"images": [{
            "OS-EXT-IMG-SIZE:size": 74185822, "created": "2011-01-01T01:02:03Z",
            "id": "70a599e0-31e7-49b7-b260-868f441e862b",
            "metadata": {"architecture": "x86_64", "auto_disk_config": "True",
                         "phoenix-image-state": "certified"},
            "minDisk": 0, "minRam": 0, "name": "fakeimage7", "progress": 100,
            "status": "ACTIVE", "updated": "2011-01-01T01:02:03Z"}]}),
            )
        },
    );
    api.on(
        "POST",
        &format!("/compute/v2.1/{PROJECT}/images/*/metadata"),
        |r| MockResponse::json(200, r.json()),
    );
    let session = Session::builder(config).retry(retry()).build().unwrap();
    let images = OpenStackImages::builder(session).build();
    assert_eq!(images.api().await.unwrap(), ImageApi::NovaImages);
    let listed = images.list().await.unwrap();
    assert_eq!(listed[0].state, phoenix_core::model::ImageState::Certified);
    assert_eq!(listed[0].properties["architecture"], "x86_64");
    let mut props = BTreeMap::new();
    props.insert("phoenix-image-state".to_owned(), "released".to_owned());
    images.set_properties(&listed[0].id, &props).await.unwrap();
    let sent = &api.requests_to(
        "POST",
        &format!("/compute/v2.1/{PROJECT}/images/*/metadata"),
    )[0];
    assert_eq!(
        sent.json(),
        json!({"metadata": {"phoenix-image-state": "released"}})
    );
}

/// A cloud that ignores `marker` answers every request with the first
/// page. Listing servers or images must fail on the second request with a
/// clear error, not fetch the same page until the page limit (100,000
/// copies in memory).
#[tokio::test]
async fn a_cloud_that_ignores_the_pagination_marker_is_an_error_not_a_loop() {
    let api = MockApi::start().await.unwrap();
    keystone(&api, in_an_hour);
    let servers = format!("/compute/v2.1/{PROJECT}/servers/detail");
    let mut page = servers_page(&["a1", "a2"], "ACTIVE");
    page["servers_links"] = json!([{"rel": "next",
        "href": format!("http://openstack.example.com/v2.1/{PROJECT}/servers/detail?marker=a2")}]);
    api.on("GET", &servers, move |_| {
        MockResponse::json(200, page.clone())
    });
    let image = |id: &str| {
        json!({"id": id, "name": "base", "status": "active", "visibility": "private",
               "created_at": "2014-05-05T17:15:10Z"})
    };
    let images_page = json!({"images": [image("i1"), image("i2")],
                             "next": "/v2/images?marker=i2"});
    api.on("GET", "/image/v2/images", move |_| {
        MockResponse::json(200, images_page.clone())
    });

    let session = v3_session(&api, Interface::Public);
    let nova = NovaCompute::builder(session.clone()).page_size(2).build();
    let err = nova.list_all().await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::BadResponse(_)), "{err}");
    assert!(
        err.to_string().contains("ignores the pagination marker"),
        "{err}"
    );
    let asked = api.requests_to("GET", &servers);
    assert_eq!(asked.len(), 2, "caught on the second page");
    assert_eq!(asked[1].query_param("marker").as_deref(), Some("a2"));

    let images = OpenStackImages::builder(session)
        .api(ImageApi::Glance)
        .build();
    let err = images.list().await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::BadResponse(_)), "{err}");
    assert_eq!(api.requests_to("GET", "/image/v2/images").len(), 2);
}
