//! Rendered user data checked by the real cloud-init (Debian's package,
//! installed by `scripts/peers/cloud-init.sh`, found through
//! `PHOENIX_CLOUD_INIT`):
//!
//! * every user data, in every cloud format, is split into parts by
//!   cloud-init's own `UserDataProcessor` (which gunzips and walks
//!   multi-part MIME; vSphere guestinfo is first decoded by its VMware
//!   datasource's `decode`), and no part may be of an unknown type;
//! * every `text/cloud-config` part passes `cloud-init schema
//!   --config-file` (which works unprivileged, prints `Valid cloud-config:
//!   FILE` and exits 0 on success, exits 1 with the errors on standard
//!   error otherwise; it does not read MIME, hence the split);
//! * every `text/x-shellscript` part starts with `#!` and passes `sh -n`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use phoenix_config::render::vsphere;
use phoenix_config::ConfigSet;
use phoenix_core::ports::{BootFormat, BootPayload};
use secrecy::ExposeSecret;

struct Part {
    kind: String,
    path: PathBuf,
}

struct Peer {
    cloud_init: PathBuf,
    python: PathBuf,
    helper: PathBuf,
    scratch: tempfile::TempDir,
}

impl Peer {
    fn from_env() -> Self {
        let cloud_init = PathBuf::from(std::env::var("PHOENIX_CLOUD_INIT").expect(
            "PHOENIX_CLOUD_INIT is not set: run scripts/test (its cloud-init peer sets it)",
        ));
        // cloud-init's Python package lives with the interpreter its
        // launcher names.
        let launcher = std::fs::read_to_string(&cloud_init).unwrap();
        let shebang = launcher.lines().next().unwrap_or_default();
        let python = PathBuf::from(
            shebang
                .trim_start_matches("#!")
                .split_whitespace()
                .next()
                .unwrap(),
        );
        Self {
            cloud_init,
            python,
            helper: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peer/cloud_init_parts.py"),
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.scratch.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Splits user data with cloud-init's own parser.
    fn parts(&self, label: &str, user_data: &[u8], vmware_encoding: Option<&str>) -> Vec<Part> {
        let source = self.file(&format!("{label}.userdata"), user_data);
        let out = self.scratch.path().join(format!("{label}.parts"));
        std::fs::create_dir_all(&out).unwrap();
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.helper).arg("parts").arg(&source).arg(&out);
        if let Some(enc) = vmware_encoding {
            cmd.arg(enc);
        }
        let output = cmd.output().unwrap();
        assert!(
            output.status.success(),
            "{label}: cloud-init's parser failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                Part {
                    kind: v["type"].as_str().unwrap().to_owned(),
                    path: PathBuf::from(v["path"].as_str().unwrap()),
                }
            })
            .collect()
    }

    /// `cloud-init schema --config-file`: (passed, its output).
    fn schema(&self, file: &Path) -> (bool, String) {
        let output = Command::new(&self.cloud_init)
            .arg("schema")
            .arg("--config-file")
            .arg(file)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (
            output.status.success() && text.contains("Valid cloud-config"),
            text,
        )
    }

    /// Checks every part; returns their types.
    fn check(&self, label: &str, user_data: &[u8], vmware_encoding: Option<&str>) -> Vec<String> {
        let parts = self.parts(label, user_data, vmware_encoding);
        assert!(!parts.is_empty(), "{label}: no parts");
        for part in &parts {
            match part.kind.as_str() {
                "text/cloud-config" => {
                    let (ok, out) = self.schema(&part.path);
                    assert!(ok, "{label}: cloud-init schema refused it:\n{out}");
                }
                "text/x-shellscript" => {
                    let text = std::fs::read_to_string(&part.path).unwrap();
                    assert!(text.starts_with("#!"), "{label}: script without #!");
                    let status = Command::new("sh")
                        .arg("-n")
                        .arg(&part.path)
                        .status()
                        .unwrap();
                    assert!(status.success(), "{label}: sh -n failed");
                }
                other => panic!("{label}: cloud-init does not know part type {other}"),
            }
        }
        parts.into_iter().map(|p| p.kind).collect()
    }

    /// Every cloud format of one server: checks them all; returns the part
    /// types of the plain cloud-init user data and the raw EC2 bytes.
    async fn check_server(
        &self,
        config: &ConfigSet,
        env: &str,
        role: &str,
    ) -> (Vec<String>, Vec<u8>) {
        let label = format!("{env}-{role}");
        let ctx = support::context(env, role, "v1", 1);
        let render = |format| config.render(&ctx, format);
        let BootPayload::CloudInit { user_data } = render(BootFormat::CloudInit).await.unwrap()
        else {
            panic!()
        };
        let kinds = self.check(
            &format!("{label}-cloudinit"),
            user_data.expose_secret(),
            None,
        );

        let BootPayload::AwsUserData { base64 } = render(BootFormat::AwsUserData).await.unwrap()
        else {
            panic!()
        };
        let aws = base64::engine::general_purpose::STANDARD
            .decode(base64.expose_secret())
            .unwrap();
        assert_eq!(self.check(&format!("{label}-aws"), &aws, None), kinds);

        let BootPayload::OpenStack { user_data, .. } = render(BootFormat::OpenStack).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(
            self.check(&format!("{label}-nova"), user_data.expose_secret(), None),
            kinds
        );

        let BootPayload::Guestinfo { properties } =
            render(BootFormat::VsphereGuestinfo).await.unwrap()
        else {
            panic!()
        };
        let enc = properties[vsphere::USERDATA_ENCODING]
            .expose_secret()
            .to_owned();
        let data = properties[vsphere::USERDATA]
            .expose_secret()
            .as_bytes()
            .to_vec();
        assert_eq!(
            self.check(&format!("{label}-vsphere"), &data, Some(&enc)),
            kinds
        );
        let meta_file = self.file(
            &format!("{label}.metadata"),
            properties[vsphere::METADATA].expose_secret().as_bytes(),
        );
        let output = Command::new(&self.python)
            .arg(&self.helper)
            .arg("vmware-metadata")
            .arg(&meta_file)
            .arg(properties[vsphere::METADATA_ENCODING].expose_secret())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let meta: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(meta["instance-id"], ctx.server_name.as_str());
        (kinds, aws)
    }
}

#[tokio::test]
#[ignore = "needs cloud-init: run the full test script"]
async fn the_sample_matrix_is_valid_for_cloud_init() {
    let peer = Peer::from_env();
    let config = ConfigSet::load(support::sample_dir()).unwrap();
    let mut multipart = 0;
    for env in config.environments() {
        for role in config.roles() {
            let (kinds, _) = peer
                .check_server(&config, env.as_str(), role.as_str())
                .await;
            if kinds.iter().any(|k| k == "text/x-shellscript") {
                multipart += 1;
                assert_eq!(kinds[0], "text/cloud-config");
            }
        }
    }
    assert_eq!(
        multipart,
        config.environments().len(),
        "backend servers carry a script"
    );
}

const FIXTURE_BASE: &str = r#"
[values]
port = 8080
tags = ["a", "b"]

[env]
PORT = "{{ values.port }}"
QUOTED = "it's \"quoted\" $HOME `x` \\ back"
TOKEN = "{{ secrets.token }}"

[labels]
team = "shop"

[users.app]
system = true
groups = ["adm"]
shell = "/usr/sbin/nologin"
home = "/var/lib/app"

[files.conf]
path = "/etc/app/app.conf"
mode = 0o640
owner = "app:app"
template = """
port = {{ values.port }}
tags = {{ values.tags | join(",") }}
multi: line
  indented: "yes"
# {{ server_name }} #{{ index }}
"""

[files.unicode]
path = "/etc/app/ünïcode.txt"
content = "grüße — ✓\n\ttab and : colon - dash\n"

[files.empty]
path = "/etc/app/empty"
content = ""

[commands.boot]
when = "boot"
argv = ["sh", "-c", "echo booting {{ server_name }} >> /var/log/boot.log"]

[commands.run]
shell = "systemctl enable --now app.service && echo 'done: {{ environment }}'"

[secrets.token]
file = "token.secret"
scope = ["prod", "staging", "ci-*"]
"#;

#[tokio::test]
#[ignore = "needs cloud-init: run the full test script"]
async fn a_matrix_with_files_scripts_users_and_gzip_is_valid_for_cloud_init() {
    let peer = Peer::from_env();
    let big = format!(
        "[files.big]\npath = \"/opt/app/big.txt\"\ncontent = \"{}\"\n",
        "line of a large but compressible file\\n".repeat(1500)
    );
    let (_dir, config) = support::load(&[
        ("base.toml", FIXTURE_BASE),
        ("token.secret", "t0k3n: with 'yaml' \"specials\"\n- and a list marker"),
        ("env/prod.toml", "[openstack]\nconfig_drive = true\n"),
        ("env/staging.toml", "[values]\nport = 9090\n"),
        ("env/ci-7.toml", "unset = [\"users\", \"files.conf.owner\"]\n"),
        ("role/web.toml", ""),
        (
            "role/worker.toml",
            "[scripts.first]\norder = 1\ncontent = \"#!/bin/sh\\necho first\\n\"\n\
             [scripts.second]\norder = 2\ntemplate = \"#!/bin/bash\\nset -euo pipefail\\necho {{ role }} on {{ environment }}\\n\"\n",
        ),
        ("role/big.toml", &big),
    ]);
    for env in ["prod", "staging", "ci-7"] {
        let (kinds, _) = peer.check_server(&config, env, "web").await;
        assert_eq!(kinds, ["text/cloud-config"]);
        let (kinds, _) = peer.check_server(&config, env, "worker").await;
        assert_eq!(
            kinds,
            [
                "text/cloud-config",
                "text/x-shellscript",
                "text/x-shellscript"
            ]
        );
        let (kinds, aws) = peer.check_server(&config, env, "big").await;
        assert_eq!(kinds, ["text/cloud-config"]);
        assert_eq!(
            &aws[..2],
            &[0x1f, 0x8b],
            "{env}/big: EC2 user data should be gzipped"
        );
    }
}

#[test]
#[ignore = "needs cloud-init: run the full test script"]
fn the_validator_rejects_what_is_not_valid_cloud_config() {
    let peer = Peer::from_env();
    let bad = peer.file(
        "bad.yaml",
        b"#cloud-config\nwrite_files:\n  - path: /x\n    permissions: 644\nruncmd: 5\n",
    );
    let (ok, out) = peer.schema(&bad);
    assert!(!ok, "{out}");
    assert!(out.contains("runcmd"), "{out}");
    let headerless = peer.file("headerless.yaml", b"runcmd: [ls]\n");
    assert!(!peer.schema(&headerless).0);
    let parts = peer.parts("garbage", b"neither cloud-config nor MIME", None);
    assert_eq!(parts[0].kind, "text/x-not-multipart");
}
