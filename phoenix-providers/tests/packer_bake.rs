//! Baking through Packer (issue 15, item 1) with Debian's `packer`: a
//! template whose `null` builder and `shell-local` provisioner need no
//! cloud builds a directory with an executable entrypoint, which
//! [`PackerImages`] registers through [`LocalImages`] with its provenance.
//! The tests that run packer are ignored in plain `cargo test`; the test
//! script installs packer (`scripts/peers/packer.sh`) and runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use phoenix_core::ports::{BakeRequest, BakeSource, ErrorKind, Images};
use phoenix_providers::local::LocalImages;
use phoenix_providers::packer::{
    channel_sink, BakeEvent, PackerError, PackerImages, BASE_IMAGE_PROPERTY, BUILDER_ID_PROPERTY,
    BUILD_LOG_PROPERTY, PACKER_VERSION_PROPERTY, TEMPLATE_DIGEST_PROPERTY,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedReceiver;

const NEEDS: &str = "needs packer: run the full test script";

fn packer() -> PathBuf {
    std::env::var_os("PHOENIX_PACKER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("packer"))
}

/// A JSON template (packer 1.6 reads JSON and HCL2): the `null` builder
/// with no communicator, a `shell-local` provisioner running `script`,
/// and, when `files` is set, the `artifice` post-processor reporting the
/// built files as the artifact.
fn template(dir: &Path, name: &str, script: &[&str], files: &[&str]) -> PathBuf {
    let mut t = serde_json::json!({
        "variables": { "name": "app", "version": "0", "out": "", "greeting": "hi" },
        "builders": [{ "type": "null", "communicator": "none" }],
        "provisioners": [{ "type": "shell-local", "inline": script }],
    });
    if !files.is_empty() {
        t["post-processors"] = serde_json::json!([{ "type": "artifice", "files": files }]);
    }
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&t).unwrap()).unwrap();
    path
}

const APP: &[&str] = &[
    "mkdir -p {{user `out`}}",
    "printf '#!/bin/sh\\necho \"%s\"\\n' '{{user `greeting`}}' > {{user `out`}}/entrypoint",
    "chmod 755 {{user `out`}}/entrypoint",
    "echo '{{user `name`}} {{user `version`}}' > {{user `out`}}/VERSION",
    "echo 'built {{user `name`}} {{user `version`}}: {{user `greeting`}}'",
];
const APP_FILES: &[&str] = &["{{user `out`}}/entrypoint", "{{user `out`}}/VERSION"];

struct Setup {
    dir: tempfile::TempDir,
    local: Arc<LocalImages>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(
        LocalImages::builder()
            .root(dir.path().join("local"))
            .build()
            .unwrap(),
    );
    Setup { dir, local }
}

fn images(s: &Setup, template: &Path) -> (PackerImages, UnboundedReceiver<BakeEvent>) {
    let (sink, rx) = channel_sink();
    let images = PackerImages::builder()
        .packer(packer())
        .template(template)
        .name_var("name")
        .version_var("version")
        .var("out", s.dir.path().join("build").display().to_string())
        .log_dir(s.dir.path().join("logs"))
        .events(sink)
        .cancel_grace(Duration::from_secs(2))
        .inner(s.local.clone())
        .build()
        .unwrap();
    (images, rx)
}

fn request(version: &str) -> BakeRequest {
    BakeRequest {
        source: BakeSource::Artifact(String::new()),
        name: "shop".into(),
        version: version.into(),
        base: Some("debian-12".into()),
        properties: BTreeMap::from([
            ("team".to_owned(), "payments".to_owned()),
            // A release's variable; its comma crosses packer's escaping.
            ("packer-var.greeting".to_owned(), "hello, world".to_owned()),
        ]),
    }
}

fn drain(rx: &mut UnboundedReceiver<BakeEvent>) -> Vec<BakeEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test]
#[ignore = "needs packer: run the full test script"]
async fn a_null_build_is_registered_as_a_local_image_with_its_provenance() {
    let _ = NEEDS;
    let s = setup();
    let t = template(s.dir.path(), "app.json", APP, APP_FILES);
    let (packer_images, mut rx) = images(&s, &t);

    let started = std::time::Instant::now();
    let bake = packer_images.build(&request("1.0.0")).await.unwrap();
    let took = started.elapsed();
    let image = &bake.image;
    eprintln!(
        "packer {} baked {} ({}) in {} ms; log {}",
        bake.packer_version,
        image.id,
        image.digest.as_deref().unwrap_or("?"),
        took.as_millis(),
        bake.log.display()
    );

    // The image: name, version, base, content digest, in the local store.
    assert_eq!(
        (image.name.as_str(), image.version.as_str()),
        ("shop", "1.0.0")
    );
    assert_eq!(image.base.as_deref(), Some("debian-12"));
    assert!(image.digest.as_deref().unwrap().starts_with("sha256:"));
    s.local.verify(&image.id).await.unwrap();
    let dir = s.local.directory(&image.id).unwrap();
    let run = std::process::Command::new(dir.join("entrypoint"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello, world\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("VERSION")).unwrap(),
        "shop 1.0.0\n"
    );

    // Its provenance, as properties on the image.
    let p = &packer_images.get(&image.id).await.unwrap().properties;
    let digest: String = Sha256::digest(std::fs::read(&t).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(p[TEMPLATE_DIGEST_PROPERTY], format!("sha256:{digest}"));
    assert_eq!(p[PACKER_VERSION_PROPERTY], bake.packer_version);
    assert!(
        p[PACKER_VERSION_PROPERTY].starts_with("1."),
        "{}",
        p[PACKER_VERSION_PROPERTY]
    );
    assert_eq!(p[BASE_IMAGE_PROPERTY], "debian-12");
    assert_eq!(p[BUILD_LOG_PROPERTY], bake.log.display().to_string());
    assert_eq!(p[BUILDER_ID_PROPERTY], "packer.post-processor.artifice");
    assert_eq!(p["team"], "payments");
    assert!(!p.contains_key("packer-var.greeting"), "{p:?}");

    // The build log: packer's whole machine-readable output.
    let log = std::fs::read_to_string(&bake.log).unwrap();
    assert!(
        log.contains(",artifact,1,builder-id,packer.post-processor.artifice"),
        "{log}"
    );
    assert!(
        log.contains("built shop 1.0.0: hello%!(PACKER_COMMA) world"),
        "{log}"
    );
    assert!(log.contains("# packer exited: exit status: 0"), "{log}");
    assert!(
        !log.contains("hello, world"),
        "variable values stay out of the header: {log}"
    );
    assert_eq!(bake.artifacts.len(), 2, "the null builder's and artifice's");

    // The events, in order: started, progress (unescaped), artifacts,
    // registering, finished.
    let events = drain(&mut rx);
    for e in &events {
        eprintln!("  event: {e}");
    }
    assert!(matches!(events.first(), Some(BakeEvent::Started { .. })));
    assert!(events.iter().any(|e| matches!(
        e,
        BakeEvent::Progress { text, .. } if text.contains("built shop 1.0.0: hello, world")
    )));
    let artifacts = events
        .iter()
        .filter(|e| matches!(e, BakeEvent::Artifact(_)))
        .count();
    assert_eq!(artifacts, 2);
    assert!(events
        .iter()
        .any(|e| matches!(e, BakeEvent::Registering { .. })));
    assert!(matches!(
        events.last(),
        Some(BakeEvent::Finished { image: id, .. }) if *id == image.id
    ));
    eprintln!("{} events", events.len());

    // The same content, name and version again: the same image (the local
    // store is content-addressed), with a new build log.
    let again = packer_images.bake(&request("1.0.0")).await.unwrap();
    assert_eq!(again.id, image.id);
}

#[tokio::test]
#[ignore = "needs packer: run the full test script"]
async fn failures_are_typed_and_name_what_failed() {
    let s = setup();

    // A provisioner that fails: the build failed, packer's error named.
    let failing = template(
        s.dir.path(),
        "failing.json",
        &[
            "echo 'compiling the app'",
            "echo 'no space left, giving up' >&2",
            "exit 3",
        ],
        APP_FILES,
    );
    let (pi, mut rx) = images(&s, &failing);
    match pi.build(&request("2")).await {
        Err(PackerError::BuildFailed {
            status,
            errors,
            log,
            transient,
            ..
        }) => {
            assert_eq!(status, "1");
            assert!(
                errors.iter().any(|e| e.contains("non-zero exit status: 3")),
                "{errors:?}"
            );
            assert!(!transient);
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(text.contains("compiling the app"), "{text}");
        }
        other => panic!("expected a build failure, got {other:?}"),
    }
    let events = drain(&mut rx);
    assert!(events
        .iter()
        .any(|e| matches!(e, BakeEvent::BuildError { target: Some(t), .. } if t == "null")));
    assert!(
        matches!(events.last(), Some(BakeEvent::Failed { error }) if error.contains("exit status: 3"))
    );
    let port = pi.bake(&request("2")).await.unwrap_err();
    assert!(!port.is_retryable(), "{port}");
    assert!(port.chain().contains("failing.json"), "{}", port.chain());

    // A template that does not parse: invalid, with packer's reason.
    let broken = s.dir.path().join("broken.json");
    std::fs::write(&broken, "{\"builders\": [{\"type\": \"null\"").unwrap();
    let (pi, _rx) = images(&s, &broken);
    let err = pi.build(&request("3")).await.unwrap_err();
    match &err {
        PackerError::TemplateInvalid { errors, status, .. } => {
            assert_eq!(status, "1");
            assert!(errors[0].contains("Failed to parse template"), "{errors:?}");
        }
        other => panic!("expected an invalid template, got {other:?}"),
    }
    assert!(matches!(err.kind(), ErrorKind::Invalid(_)));

    // An unknown builder: invalid too.
    let unknown = s.dir.path().join("unknown.json");
    std::fs::write(&unknown, r#"{"builders": [{"type": "no-such-builder"}]}"#).unwrap();
    let (pi, _rx) = images(&s, &unknown);
    match pi.build(&request("4")).await {
        Err(PackerError::TemplateInvalid { errors, .. }) => {
            assert!(
                errors.iter().any(|e| e.contains("no-such-builder")),
                "{errors:?}"
            )
        }
        other => panic!("expected an invalid template, got {other:?}"),
    }

    // A build that succeeds without an artifact to register (the null
    // builder exports nothing): no artifact, and what packer reported.
    let nothing = template(s.dir.path(), "nothing.json", &["true"], &[]);
    let (pi, _rx) = images(&s, &nothing);
    match pi.build(&request("5")).await {
        Err(PackerError::NoArtifact { reported, log, .. }) => {
            assert!(reported.contains("fnoeding.null"), "{reported}");
            assert!(log.exists());
        }
        other => panic!("expected no artifact, got {other:?}"),
    }

    // An artifact the store refuses (not executable): a registration
    // error carrying the store's reason.
    let plain = template(
        s.dir.path(),
        "plain.json",
        &[
            "mkdir -p {{user `out`}}",
            "echo data > {{user `out`}}/notes.txt",
        ],
        &["{{user `out`}}/notes.txt"],
    );
    let (pi, _rx) = images(&s, &plain);
    match pi.build(&request("6")).await {
        Err(PackerError::Registration { artifact, source }) => {
            assert!(artifact.ends_with("notes.txt"), "{artifact}");
            assert!(
                source.chain().contains("not executable"),
                "{}",
                source.chain()
            );
        }
        other => panic!("expected a registration error, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs packer: run the full test script"]
async fn dropping_a_bake_interrupts_packer() {
    let s = setup();
    let pid_file = s.dir.path().join("provisioner.pid");
    let script = format!("echo $$ > {}; sleep 60", pid_file.display());
    let t = template(s.dir.path(), "slow.json", &[script.as_str()], APP_FILES);
    let (pi, _rx) = images(&s, &t);
    let task = tokio::spawn(async move { pi.build(&request("7")).await });
    let pid = loop {
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if let Ok(pid) = text.trim().parse::<u32>() {
                break pid;
            }
        }
        assert!(!task.is_finished(), "the build ended early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    task.abort();
    let _ = task.await;
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    };
    let started = std::time::Instant::now();
    while alive(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the provisioner (pid {pid}) outlived its cancelled bake"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "provisioner gone {} ms after the bake was dropped",
        started.elapsed().as_millis()
    );
}

#[tokio::test]
async fn a_missing_packer_is_named() {
    let s = setup();
    let t = template(s.dir.path(), "app.json", APP, APP_FILES);
    let pi = PackerImages::builder()
        .packer("/nonexistent/packer")
        .template(&t)
        .inner(s.local.clone())
        .build()
        .unwrap();
    let err = pi.build(&request("1")).await.unwrap_err();
    assert!(matches!(err, PackerError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/packer"), "{err}");
    let port = pi.bake(&request("1")).await.unwrap_err();
    assert!(matches!(port.kind, ErrorKind::Unsupported(_)), "{port}");
    assert!(!port.is_retryable());
}

/// An HCL2 template directory (`tests/packer-hcl`): the variables go in
/// the same JSON variables file, the digest covers the directory's
/// template files.
#[tokio::test]
#[ignore = "needs packer: run the full test script"]
async fn an_hcl2_template_directory_bakes_too() {
    let s = setup();
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/packer-hcl");
    let (sink, _rx) = channel_sink();
    let pi = PackerImages::builder()
        .packer(packer())
        .template(&template)
        .name_var("name")
        .version_var("version")
        .var("out", s.dir.path().join("build").display().to_string())
        .log_dir(s.dir.path().join("logs"))
        .events(sink)
        .inner(s.local.clone())
        .build()
        .unwrap();
    let bake = pi.build(&request("2.0.0")).await.unwrap();
    let dir = s.local.directory(&bake.image.id).unwrap();
    let run = std::process::Command::new(dir.join("entrypoint"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello, world\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("VERSION")).unwrap(),
        "shop 2.0.0\n"
    );
    let digest = &bake.image.properties[TEMPLATE_DIGEST_PROPERTY];
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert_eq!(bake.template_digest, *digest);
}
