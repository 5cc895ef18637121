//! The local image store: baking, idempotence, read-only content,
//! verification naming the changed file, properties and deletion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{bake_demo, bake_request, empty_boot, launch_one, request, Root, DEMO_APP};
use phoenix_core::id::{ImageId, ServerId};
use phoenix_core::model::ImageState;
use phoenix_core::ports::{BakeSource, Compute, ErrorKind, Images};
use phoenix_providers::local::{ImageChange, LocalError, ENTRYPOINT_PROPERTY, STATE_PROPERTY};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// An artifact directory: an executable `bin/run` and a config file.
fn artifact(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("artifact");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::create_dir_all(src.join("config")).unwrap();
    std::fs::write(src.join("bin/run"), "#!/bin/sh\nexec sleep 100\n").unwrap();
    std::fs::set_permissions(src.join("bin/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(src.join("config/app.conf"), "threads = 4\n").unwrap();
    src
}

#[tokio::test]
async fn baking_is_idempotent_read_only_and_content_addressed() {
    let root = Root::new();
    let images = root.images();
    let a = images
        .bake(&bake_request(Path::new(DEMO_APP), "demo", "1"))
        .await
        .unwrap();
    let b = images
        .bake(&bake_request(Path::new(DEMO_APP), "demo", "1"))
        .await
        .unwrap();
    assert_eq!(
        a, b,
        "the same content, name and version bake to the same image"
    );
    assert_eq!(a.state, ImageState::Built);
    assert!(a.id.as_str().starts_with("img-"));
    let digest = a.digest.clone().unwrap();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let v2 = images
        .bake(&bake_request(Path::new(DEMO_APP), "demo", "2"))
        .await
        .unwrap();
    assert_ne!(v2.id, a.id, "another version is another image");
    assert_eq!(v2.digest, a.digest, "of the same content");
    assert_eq!(images.list().await.unwrap().len(), 2);

    let dir = images.directory(&a.id).unwrap();
    assert_eq!(mode(&dir), 0o555);
    assert_eq!(mode(&dir.join("entrypoint")), 0o555);
    assert_eq!(mode(&dir.join("manifest.json")), 0o444);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["name"], "demo");
    assert_eq!(manifest["version"], "1");
    assert_eq!(manifest["digest"], digest.as_str());
    assert_eq!(manifest["files"][0]["path"], "entrypoint");
    assert_eq!(manifest["files"][0]["sha256"].as_str().unwrap().len(), 64);
    assert!(manifest["created_at"].is_string());
    images.verify(&a.id).await.unwrap();
}

#[tokio::test]
async fn a_modified_image_is_refused_naming_the_file() {
    let root = Root::new();
    let images = root.images();
    let mut req = bake_request(&artifact(root.path()), "app", "1");
    req.properties
        .insert(ENTRYPOINT_PROPERTY.into(), "bin/run".into());
    let image = images.bake(&req).await.unwrap();
    let dir = images.directory(&image.id).unwrap();
    assert_eq!(mode(&dir.join("config/app.conf")), 0o444);
    assert_eq!(mode(&dir.join("bin")), 0o555);

    // Tamper: make the file writable first, as an intruder would.
    let conf = dir.join("config/app.conf");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&conf, "threads = 400\n").unwrap();

    let err = images.verify(&image.id).await.unwrap_err();
    assert!(err.chain().contains("config/app.conf"), "{}", err.chain());
    let local = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<LocalError>())
        .unwrap();
    assert!(
        matches!(local, LocalError::ImageModified { change: ImageChange::Modified { path }, .. } if path == "config/app.conf"),
        "{local:?}"
    );

    let compute = root.compute();
    let result = compute
        .launch(&[request(&image.id, "tampered", 0, empty_boot())])
        .await
        .remove(0);
    let err = result.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Permanent(_)), "{err}");
    assert!(err.chain().contains("config/app.conf"), "{}", err.chain());
    assert!(
        std::fs::read_dir(root.path().join("servers"))
            .unwrap()
            .next()
            .is_none(),
        "a refused launch leaves nothing behind"
    );

    // Restoring the content and mode makes it launchable again; a file
    // added to the image is named as well.
    std::fs::write(&conf, "threads = 4\n").unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o444)).unwrap();
    images.verify(&image.id).await.unwrap();
    std::fs::set_permissions(dir.join("config"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("config/extra.conf"), "x").unwrap();
    let err = images.verify(&image.id).await.unwrap_err();
    assert!(
        err.chain().contains("\"config/extra.conf\" was added"),
        "{}",
        err.chain()
    );
}

#[tokio::test]
async fn a_changed_entrypoint_binary_is_named() {
    let root = Root::new();
    let images = root.images();
    let id = bake_demo(&images, "1").await;
    let entry = images.directory(&id).unwrap().join("entrypoint");
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&entry)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"\0"))
        .unwrap();
    let err = root
        .compute()
        .launch(&[request(&id, "p", 0, empty_boot())])
        .await
        .remove(0)
        .unwrap_err();
    assert!(
        err.chain().contains("\"entrypoint\" changed"),
        "{}",
        err.chain()
    );
}

#[tokio::test]
async fn properties_live_outside_the_image_and_carry_the_state() {
    let root = Root::new();
    let images = root.images();
    let id = bake_demo(&images, "1").await;
    let mut props = BTreeMap::new();
    props.insert(STATE_PROPERTY.to_owned(), "certified".to_owned());
    props.insert("owner".to_owned(), "team-web".to_owned());
    images.set_properties(&id, &props).await.unwrap();
    let img = images.get(&id).await.unwrap();
    assert_eq!(img.state, ImageState::Certified);
    assert_eq!(
        img.properties.get("owner").map(String::as_str),
        Some("team-web")
    );
    images.verify(&id).await.unwrap();

    let mut bad = BTreeMap::new();
    bad.insert(STATE_PROPERTY.to_owned(), "shiny".to_owned());
    let err = images.set_properties(&id, &bad).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Invalid(_)), "{err}");
    let unknown = ImageId::new("img-0000000000000000").unwrap();
    assert!(images
        .set_properties(&unknown, &props)
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn delete_removes_image_and_sidecar_and_is_idempotent() {
    let root = Root::new();
    let images = root.images();
    let id = bake_demo(&images, "1").await;
    images.delete(&id).await.unwrap();
    assert!(images.get(&id).await.unwrap_err().is_not_found());
    assert!(images.list().await.unwrap().is_empty());
    assert!(std::fs::read_dir(root.path().join("images"))
        .unwrap()
        .next()
        .is_none());
    images.delete(&id).await.unwrap();
    let err = root
        .compute()
        .launch(&[request(&id, "p", 0, empty_boot())])
        .await
        .remove(0)
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn bad_bakes_are_refused_clearly() {
    let root = Root::new();
    let images = root.images();
    let mut from_server = bake_request(Path::new(DEMO_APP), "demo", "1");
    from_server.source = BakeSource::Server(ServerId::new("srv-1").unwrap());
    let err = images.bake(&from_server).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unsupported(_)), "{err}");

    let missing = images
        .bake(&bake_request(&root.path().join("nope"), "x", "1"))
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing}");

    let plain = root.path().join("plain.txt");
    std::fs::write(&plain, "not a program").unwrap();
    let err = images
        .bake(&bake_request(&plain, "x", "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::Invalid(_)) && err.chain().contains("not executable"),
        "{err}"
    );

    // A directory without the entrypoint.
    let src = artifact(root.path());
    let err = images
        .bake(&bake_request(&src, "x", "1"))
        .await
        .unwrap_err();
    assert!(
        err.chain().contains("no entrypoint \"entrypoint\""),
        "{}",
        err.chain()
    );

    // A link would let content change without the digest seeing it.
    std::os::unix::fs::symlink("/etc/hostname", src.join("link")).unwrap();
    let mut req = bake_request(&src, "x", "1");
    req.properties
        .insert(ENTRYPOINT_PROPERTY.into(), "bin/run".into());
    let err = images.bake(&req).await.unwrap_err();
    assert!(err.chain().contains("link"), "{}", err.chain());

    let err = images
        .bake(&bake_request(Path::new(DEMO_APP), "", "1"))
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Invalid(_)), "{err}");
    assert!(
        images.list().await.unwrap().is_empty(),
        "failed bakes leave no image"
    );
    let leftovers: Vec<_> = std::fs::read_dir(root.path().join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "no staging left: {leftovers:?}");
}

#[tokio::test]
async fn launch_of_a_good_image_works_after_verification() {
    let root = Root::new();
    let images = root.images();
    let id = common::bake_script(&images, root.path(), "idle", "exec sleep 100").await;
    let compute = root.compute();
    let s = launch_one(&compute, request(&id, "ok", 0, empty_boot())).await;
    assert_eq!(s.image.as_ref(), Some(&id));
    compute.terminate(&s.id).await.unwrap();
}

#[tokio::test]
async fn local_images_conform() {
    use phoenix_core::conformance::images::{run, ImagesFixture};
    let root = Root::new();
    let build = tempfile::tempdir().unwrap();
    let app = build.path().join("app.sh");
    std::fs::write(&app, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
    run(
        &root.images(),
        &ImagesFixture {
            bake_from: Some(BakeSource::Artifact(app.display().to_string())),
            existing: None,
        },
    )
    .await;
}
