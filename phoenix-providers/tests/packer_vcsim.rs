//! Packer's `vsphere-clone` builder against vcsim: with `communicator:
//! none` it clones a VM over the vSphere API and needs no guest, so it
//! runs against the simulator. Its artifact id is the new VM's name;
//! [`PackerImages`] registers it through [`VsphereImages`] (which clones
//! it into a Phoenix template with its attributes) by the inventory path
//! the id prefix makes of it. Needs packer (`scripts/peers/packer.sh`) and
//! vcsim (`scripts/peers/vcsim.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use phoenix_core::ports::{BakeRequest, BakeSource, Images};
use phoenix_core::retry::RetryPolicy;
use phoenix_providers::packer::{
    channel_sink, BakeEvent, PackerImages, Registration, ARTIFACT_PROPERTY, BUILDER_ID_PROPERTY,
    TEMPLATE_DIGEST_PROPERTY,
};
use phoenix_providers::vsphere::{Thumbprint, VsphereClient, VsphereConfig, VsphereImages};

const NEEDS_VCSIM: &str = "PHOENIX_VCSIM_URL is set by scripts/test (scripts/peers/vcsim.sh)";

#[tokio::test]
#[ignore = "needs packer and vcsim: run the full test script"]
async fn vsphere_clone_against_vcsim_becomes_a_phoenix_template() {
    let url = std::env::var("PHOENIX_VCSIM_URL").expect(NEEDS_VCSIM);
    let thumbprint = std::env::var("PHOENIX_VCSIM_THUMBPRINT").expect(NEEDS_VCSIM);
    let packer = std::env::var_os("PHOENIX_PACKER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("packer"));
    let config = VsphereConfig::builder(&url)
        .unwrap()
        .thumbprint(Thumbprint::parse(&thumbprint).unwrap())
        .datacenter("DC0")
        .resource_pool("DC0_C0/Resources")
        .task_poll(Duration::from_millis(20))
        .retry(RetryPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let images = VsphereImages::builder(VsphereClient::new(config).unwrap()).build();

    // Packer talks to the same vcsim (user and password from the URL;
    // vcsim's certificate is self-signed).
    let parsed = url.strip_prefix("https://").unwrap();
    let (userinfo, rest) = parsed.split_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    let server = rest.trim_end_matches("/sdk");
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("clone.json");
    let t = serde_json::json!({
        "variables": { "server": "", "user": "", "password": "", "vm_name": "" },
        "sensitive-variables": ["password"],
        "builders": [{
            "type": "vsphere-clone",
            "vcenter_server": "{{user `server`}}",
            "username": "{{user `user`}}",
            "password": "{{user `password`}}",
            "insecure_connection": true,
            "datacenter": "DC0",
            "cluster": "DC0_C0",
            "host": "DC0_C0_H0",
            "datastore": "LocalDS_0",
            "template": "DC0_C0_RP0_VM0",
            "vm_name": "{{user `vm_name`}}",
            "communicator": "none"
        }]
    });
    std::fs::write(&template, serde_json::to_vec_pretty(&t).unwrap()).unwrap();
    let version = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let (sink, mut rx) = channel_sink();
    let packer_images = PackerImages::builder()
        .packer(packer)
        .template(&template)
        .var("server", server)
        .var("user", user)
        .var("password", password)
        .var("vm_name", format!("packer-shop-{version}"))
        .log_dir(dir.path().join("logs"))
        .registration(Registration::BakeId)
        .id_prefix("/DC0/vm/")
        .events(sink)
        .inner(std::sync::Arc::new(images.clone()))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let bake = packer_images
        .build(&BakeRequest {
            source: BakeSource::Artifact(String::new()),
            name: "shop".into(),
            version: version.clone(),
            base: Some("DC0_C0_RP0_VM0".into()),
            properties: BTreeMap::new(),
        })
        .await
        .unwrap();
    eprintln!(
        "vsphere-clone on vcsim: VM {} registered as template {} in {} ms (packer {})",
        bake.artifact.id.as_deref().unwrap_or("?"),
        bake.image.id,
        started.elapsed().as_millis(),
        bake.packer_version
    );
    assert_eq!(
        bake.artifact.id.as_deref(),
        Some(format!("packer-shop-{version}").as_str())
    );
    assert_eq!(
        bake.artifact.builder_id.as_deref(),
        Some("jetbrains.vsphere")
    );

    let image = images.get(&bake.image.id).await.unwrap();
    assert_eq!(image.name, "shop");
    assert_eq!(image.version, version);
    assert_eq!(
        image.properties[ARTIFACT_PROPERTY],
        format!("packer-shop-{version}")
    );
    assert_eq!(image.properties[BUILDER_ID_PROPERTY], "jetbrains.vsphere");
    assert!(image.properties[TEMPLATE_DIGEST_PROPERTY].starts_with("sha256:"));
    // The password went to packer as a variable, never into the log.
    let log = std::fs::read_to_string(&bake.log).unwrap();
    assert!(!log.contains(password), "{log}");
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    assert!(events.iter().any(|e| matches!(
        e,
        BakeEvent::Progress { text, .. } if text.contains("Cloning VM")
    )));
    images.delete(&bake.image.id).await.unwrap();
}
