//! Rendering for every boot mechanism, scopes and fingerprints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine;
use phoenix_config::render::aws::EC2_USER_DATA_LIMIT;
use phoenix_config::render::vsphere;
use phoenix_config::{ConfigError, ConfigSet};
use phoenix_core::ports::{BootConfig, BootFormat, BootPayload, ErrorKind};
use secrecy::ExposeSecret;
use support::{context, load};

const BASE: &str = r#"
[values]
port = 8080
debug = false

[env]
PORT = "{{ values.port }}"
DB_PASSWORD = "{{ secrets.db }}"

[labels]
team = "shop"
slot = "{{ index }}"

[users.shop]
system = true

[files.app]
path = "/etc/shop/app.conf"
mode = 0o640
owner = "shop:shop"
template = "port={{ values.port }} debug={{ values.debug }} server={{ server_name }}\n"

[files.tls]
path = "/etc/ssl/private/shop.key"
mode = "0600"
template = "{{ secrets.db }}"

[commands.early]
when = "boot"
shell = "echo early"

[commands.start]
argv = ["systemctl", "start", "shop-{{ role }}"]

[secrets.db]
file = "db.secret"
scope = ["prod", "ci-*"]
version = "7"
"#;

fn files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("base.toml", BASE),
        ("db.secret", "pa55word"),
        ("env/prod.toml", "[openstack]\nconfig_drive = true\n"),
        ("env/staging.toml", ""),
        ("env/ci-3.toml", ""),
        ("role/web.toml", ""),
        (
            "role/worker.toml",
            "[scripts.warm]\ncontent = \"#!/bin/sh\\necho warm\\n\"\n",
        ),
    ]
}

async fn render(config: &ConfigSet, env: &str, role: &str, format: BootFormat) -> BootPayload {
    config
        .render(&context(env, role, "v1", 2), format)
        .await
        .unwrap()
}

fn user_data(payload: BootPayload) -> Vec<u8> {
    match payload {
        BootPayload::CloudInit { user_data } => user_data.expose_secret().to_vec(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn local_payload_has_relative_files_and_the_environment() {
    let (_dir, config) = load(&files());
    let BootPayload::Local { files, env } =
        render(&config, "prod", "worker", BootFormat::Local).await
    else {
        panic!("not local")
    };
    let by_path: BTreeMap<&str, &phoenix_core::ports::BootFile> =
        files.iter().map(|f| (f.path.as_str(), f)).collect();
    let app = by_path["etc/shop/app.conf"];
    assert_eq!(app.mode, 0o640);
    assert_eq!(
        app.content.expose_secret(),
        b"port=8080 debug=false server=prod-worker-2\n"
    );
    assert_eq!(
        by_path["etc/ssl/private/shop.key"].content.expose_secret(),
        b"pa55word"
    );
    assert!(by_path.contains_key(".phoenix/bootcmd.sh"));
    assert_eq!(
        by_path[".phoenix/runcmd.sh"].content.expose_secret(),
        b"#!/bin/sh\nset -e\n'systemctl' 'start' 'shop-worker'\n"
    );
    assert!(by_path.contains_key(".phoenix/scripts/010-warm.sh"));
    assert_eq!(env["PORT"].expose_secret(), "8080");
    assert_eq!(env["DB_PASSWORD"].expose_secret(), "pa55word");
    assert_eq!(env["PHOENIX_ENVIRONMENT"].expose_secret(), "prod");
    assert_eq!(env["PHOENIX_INDEX"].expose_secret(), "2");
    assert_eq!(env["PHOENIX_SERVER"].expose_secret(), "prod-worker-2");
}

#[tokio::test]
async fn cloud_config_carries_files_commands_users_and_environment() {
    let (_dir, config) = load(&files());
    let data = user_data(render(&config, "prod", "web", BootFormat::CloudInit).await);
    let text = String::from_utf8(data).unwrap();
    assert!(text.starts_with("#cloud-config\n"), "{text}");
    let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(doc["users"][0], "default");
    assert_eq!(doc["users"][1]["name"], "shop");
    assert_eq!(doc["users"][1]["system"], true);
    let files = doc["write_files"].as_array().unwrap();
    let app = files
        .iter()
        .find(|f| f["path"] == "/etc/shop/app.conf")
        .unwrap();
    assert_eq!(app["permissions"], "0640");
    assert_eq!(app["owner"], "shop:shop");
    assert_eq!(app["defer"], true, "owned by a user cloud-init creates");
    let tls = files
        .iter()
        .find(|f| f["path"] == "/etc/ssl/private/shop.key")
        .unwrap();
    assert_eq!(tls["content"], "pa55word");
    assert!(tls.get("defer").is_none());
    let env = files
        .iter()
        .find(|f| f["path"] == phoenix_config::DEFAULT_ENV_FILE)
        .unwrap();
    assert_eq!(env["permissions"], "0600");
    let env_text = env["content"].as_str().unwrap();
    assert!(
        env_text.contains("PORT=\"8080\"\n") && env_text.contains("PHOENIX_ROLE=\"web\"\n"),
        "{env_text}"
    );
    assert_eq!(doc["bootcmd"][0], "echo early");
    assert_eq!(
        doc["runcmd"][0],
        serde_json::json!(["systemctl", "start", "shop-web"])
    );
}

#[tokio::test]
async fn scripts_make_a_multipart_message() {
    let (_dir, config) = load(&files());
    let data = user_data(render(&config, "prod", "worker", BootFormat::CloudInit).await);
    let text = String::from_utf8(data).unwrap();
    assert!(
        text.starts_with("Content-Type: multipart/mixed; boundary="),
        "{text}"
    );
    assert!(text.contains("Content-Type: text/cloud-config"));
    assert!(text.contains("Content-Type: text/x-shellscript"));
    assert!(text.contains("filename=\"010-warm.sh\""));
}

#[tokio::test]
async fn rendering_is_deterministic() {
    let (_dir, config) = load(&files());
    for format in [
        BootFormat::CloudInit,
        BootFormat::AwsUserData,
        BootFormat::OpenStack,
        BootFormat::VsphereGuestinfo,
    ] {
        let a = render(&config, "prod", "worker", format).await;
        let b = render(&config, "prod", "worker", format).await;
        let bytes = |p: &BootPayload| match p {
            BootPayload::CloudInit { user_data } => user_data.expose_secret().to_vec(),
            BootPayload::AwsUserData { base64 } => base64.expose_secret().as_bytes().to_vec(),
            BootPayload::OpenStack { user_data, .. } => user_data.expose_secret().to_vec(),
            BootPayload::Guestinfo { properties } => properties
                .values()
                .flat_map(|v| v.expose_secret().as_bytes().to_vec())
                .collect(),
            BootPayload::Local { .. } => Vec::new(),
        };
        assert_eq!(bytes(&a), bytes(&b), "{format:?}");
    }
}

#[tokio::test]
async fn aws_user_data_is_base64_gzipped_when_large_and_refused_when_too_large() {
    let (_dir, config) = load(&files());
    let BootPayload::AwsUserData { base64 } =
        render(&config, "prod", "web", BootFormat::AwsUserData).await
    else {
        panic!()
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(base64.expose_secret())
        .unwrap();
    assert!(raw.starts_with(b"#cloud-config"));

    // 40 kB of repetitive content: gzip makes it fit.
    let big = format!(
        "[files.big]\npath = \"/big\"\ncontent = \"{}\"\n",
        "all work and no play ".repeat(2000)
    );
    let mut f = files();
    f.push(("role/big.toml", &big));
    let (_dir, config) = load(&f);
    let BootPayload::AwsUserData { base64 } =
        render(&config, "prod", "big", BootFormat::AwsUserData).await
    else {
        panic!()
    };
    let zipped = base64::engine::general_purpose::STANDARD
        .decode(base64.expose_secret())
        .unwrap();
    assert!(zipped.len() <= EC2_USER_DATA_LIMIT);
    let mut back = String::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_string(&mut back)
        .unwrap();
    assert!(back.starts_with("#cloud-config") && back.contains("all work and no play"));

    // 60 kB that gzip cannot bring under 16 KiB.
    let mut x: u64 = 88172645463325252;
    let noise: String = (0..60_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .filter(|c| *c != '"' && *c != '\\')
        .collect();
    let huge = format!("[files.huge]\npath = \"/huge\"\ncontent = \"{noise}\"\n");
    let mut f = files();
    f.push(("role/huge.toml", &huge));
    let (_dir, config) = load(&f);
    let e = config
        .render(&context("prod", "huge", "v1", 0), BootFormat::AwsUserData)
        .await
        .unwrap_err();
    assert!(matches!(e, ConfigError::Limit { .. }), "{e}");
    assert!(e.to_string().contains("16384-byte limit"), "{e}");
    // The same configuration fits Nova's larger limit.
    config
        .render(&context("prod", "huge", "v1", 0), BootFormat::OpenStack)
        .await
        .unwrap();
}

#[tokio::test]
async fn openstack_gets_labels_as_metadata_and_the_config_drive_flag() {
    let (_dir, config) = load(&files());
    let BootPayload::OpenStack {
        user_data,
        metadata,
        config_drive,
    } = render(&config, "prod", "web", BootFormat::OpenStack).await
    else {
        panic!()
    };
    assert!(user_data.expose_secret().starts_with(b"#cloud-config"));
    assert_eq!(metadata["team"], "shop");
    assert_eq!(metadata["slot"], "2");
    assert!(config_drive);
    let BootPayload::OpenStack { config_drive, .. } =
        render(&config, "ci-3", "web", BootFormat::OpenStack).await
    else {
        panic!()
    };
    assert!(!config_drive);

    let long = format!("[labels]\nlong = \"{}\"\n", "x".repeat(256));
    let mut f = files();
    f.push(("role/long.toml", &long));
    let (_dir, config) = load(&f);
    let e = config
        .render(&context("prod", "long", "v1", 0), BootFormat::OpenStack)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("`long`") && e.contains("255"), "{e}");
}

#[tokio::test]
async fn vsphere_guestinfo_decodes_to_the_cloud_init_user_data() {
    let (_dir, config) = load(&files());
    let expected = user_data(render(&config, "prod", "worker", BootFormat::CloudInit).await);
    let BootPayload::Guestinfo { properties } =
        render(&config, "prod", "worker", BootFormat::VsphereGuestinfo).await
    else {
        panic!()
    };
    let get = |k: &str| properties[k].expose_secret().to_owned();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(get(vsphere::USERDATA))
        .unwrap();
    let decoded = match get(vsphere::USERDATA_ENCODING).as_str() {
        "gzip+base64" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        "base64" => raw,
        other => panic!("{other}"),
    };
    assert_eq!(decoded, expected);
    assert_eq!(get(vsphere::METADATA_ENCODING), "base64");
    let meta: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(get(vsphere::METADATA))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["instance-id"], "prod-worker-2");
    assert_eq!(meta["local-hostname"], "prod-worker-2");
}

#[tokio::test]
async fn secrets_outside_their_scope_are_refused_before_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("command-ran");
    let base = format!(
        "[env]\nTOKEN = \"{{{{ secrets.token }}}}\"\n[secrets.token]\ncommand = [\"sh\", \"-c\", \"touch '{}'; printf canary-value\"]\nscope = [\"prod\"]\n",
        marker.display()
    );
    support::write_tree(
        dir.path(),
        &[
            ("base.toml", &base),
            ("env/prod.toml", ""),
            ("env/staging.toml", ""),
            ("role/web.toml", ""),
        ],
    );
    let config = ConfigSet::load(dir.path()).unwrap();
    let e = config
        .render(&context("staging", "web", "v1", 0), BootFormat::Local)
        .await
        .unwrap_err();
    assert!(
        !marker.exists(),
        "the secret command ran for an environment out of scope"
    );
    assert!(matches!(e, ConfigError::SecretOutOfScope { .. }));
    let text = format!("{e} {e:?}");
    assert!(text.contains("token") && text.contains("staging"), "{text}");
    assert!(!text.contains("canary-value"));

    let port = BootConfig::render(
        &config,
        &context("staging", "web", "v1", 0),
        BootFormat::Local,
    )
    .await
    .unwrap_err();
    assert!(matches!(port.kind, ErrorKind::Invalid(_)), "{port}");
    assert!(port.chain().contains("secret `token`") && port.chain().contains("staging"));

    // In scope, the command runs (once, however many servers).
    for i in 0..3 {
        config
            .render(&context("prod", "web", "v1", i), BootFormat::Local)
            .await
            .unwrap();
    }
    assert!(marker.exists());
}

#[test]
fn fingerprints_hold_identities_and_versions_never_values() {
    let fp = |files: &[(&str, &str)], env: &str| {
        let (_dir, config) = load(files);
        config
            .fingerprint(
                &env.parse().unwrap(),
                &"web".parse().unwrap(),
                &"v1".parse().unwrap(),
            )
            .unwrap()
    };
    let base = files();
    let reference = fp(&base, "prod");
    assert_eq!(
        reference,
        fp(&base, "prod"),
        "same inputs, same fingerprint"
    );
    assert_ne!(reference, fp(&base, "ci-3"));

    let mut rotated_value = base.clone();
    rotated_value.retain(|(p, _)| *p != "db.secret");
    rotated_value.push(("db.secret", "another value"));
    assert_eq!(
        reference,
        fp(&rotated_value, "prod"),
        "values never enter it"
    );

    let bumped = BASE.replace("version = \"7\"", "version = \"8\"");
    let mut versioned = base.clone();
    versioned.retain(|(p, _)| *p != "base.toml");
    versioned.push(("base.toml", &bumped));
    assert_ne!(reference, fp(&versioned, "prod"), "versions do");

    let changed = BASE.replace("port = 8080", "port = 8081");
    let mut content = base.clone();
    content.retain(|(p, _)| *p != "base.toml");
    content.push(("base.toml", &changed));
    assert_ne!(reference, fp(&content, "prod"), "content does");

    let (_dir, config) = load(&base);
    let preview = config
        .preview(
            &"prod".parse().unwrap(),
            &"web".parse().unwrap(),
            &"v1".parse().unwrap(),
        )
        .unwrap();
    assert_eq!(preview.env["DB_PASSWORD"], "«secret db@7»");
    assert_eq!(preview.secrets["db"], "db@7 from file:db.secret");
    let shown = serde_json::to_string(&preview).unwrap();
    assert!(!shown.contains("pa55word"));
}

#[tokio::test]
async fn unknown_environments_and_roles_are_not_found() {
    let (_dir, config) = load(&files());
    let e = BootConfig::render(&config, &context("qa", "web", "v1", 0), BootFormat::Local)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = config
        .render(&context("prod", "db", "v1", 0), BootFormat::Local)
        .await
        .unwrap_err();
    assert!(matches!(e, ConfigError::UnknownRole(_)), "{e}");
}
