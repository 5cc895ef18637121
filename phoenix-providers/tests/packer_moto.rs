//! Packer's `amazon-ebs` builder against moto: with `communicator: none`
//! it needs no SSH, so the whole EC2 side of a bake runs against moto
//! (keypair, security group, RunInstances, StopInstances, CreateImage,
//! waiters, clean-up). [`PackerImages`] adopts the AMI through
//! [`Ec2Images`] and tags it with its provenance. Needs packer
//! (`scripts/peers/packer.sh`) and moto (`scripts/peers/moto.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use phoenix_core::model::ImageState;
use phoenix_core::ports::{BakeRequest, BakeSource, Images};
use phoenix_providers::aws::{Ec2Images, QueryRequest, Service};
use phoenix_providers::packer::{
    channel_sink, BakeEvent, PackerImages, Registration, ARTIFACT_PROPERTY, BUILDER_ID_PROPERTY,
    PACKER_VERSION_PROPERTY, TEMPLATE_DIGEST_PROPERTY,
};

#[tokio::test]
#[ignore = "needs packer and moto: run the full test script"]
async fn amazon_ebs_against_moto_is_adopted_as_an_ami() {
    let url = std::env::var("PHOENIX_MOTO_URL").expect("PHOENIX_MOTO_URL (scripts/peers/moto.sh)");
    let packer = std::env::var_os("PHOENIX_PACKER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("packer"));
    let client = phoenix_providers::aws::testing::moto_client(&url, 3).unwrap();
    // One of moto's stock AMIs as the base.
    let body = client
        .call(&QueryRequest::new(Service::Ec2, "DescribeImages").param("Owner.1", "amazon"))
        .await
        .unwrap();
    let start = body.find("<imageId>").unwrap() + "<imageId>".len();
    let end = start + body[start..].find('<').unwrap();
    let base = body[start..end].to_owned();

    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("ebs.json");
    let t = serde_json::json!({
        "variables": { "endpoint": "", "source_ami": "", "version": "" },
        "builders": [{
            "type": "amazon-ebs",
            "region": "eu-west-1",
            "access_key": "AKIDMOTO",
            "secret_key": "moto-secret-key",
            "custom_endpoint_ec2": "{{user `endpoint`}}",
            "skip_credential_validation": true,
            "skip_metadata_api_check": true,
            "skip_region_validation": true,
            "source_ami": "{{user `source_ami`}}",
            "instance_type": "t3.micro",
            "ami_name": "phoenix-shop-{{user `version`}}-{{timestamp}}",
            "communicator": "none"
        }]
    });
    std::fs::write(&template, serde_json::to_vec_pretty(&t).unwrap()).unwrap();

    let images = Ec2Images::builder(client.clone()).build();
    let (sink, mut rx) = channel_sink();
    let packer_images = PackerImages::builder()
        .packer(packer)
        .template(&template)
        .var("endpoint", &url)
        .base_var("source_ami")
        .version_var("version")
        .log_dir(dir.path().join("logs"))
        .registration(Registration::AdoptId)
        .builder_id("mitchellh.amazonebs")
        .events(sink)
        .inner(std::sync::Arc::new(images.clone()))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let bake = packer_images
        .build(&BakeRequest {
            source: BakeSource::Artifact(String::new()),
            name: "shop".into(),
            version: "7".into(),
            base: Some(base.clone()),
            properties: BTreeMap::new(),
        })
        .await
        .unwrap();
    eprintln!(
        "amazon-ebs on moto: AMI {} from {base} in {} ms (packer {})",
        bake.image.id,
        started.elapsed().as_millis(),
        bake.packer_version
    );
    let raw = bake.artifact.id.clone().unwrap();
    assert!(raw.starts_with("eu-west-1:ami-"), "{raw}");
    assert_eq!(format!("eu-west-1:{}", bake.image.id), raw);

    // The AMI as EC2 describes it: the adapter's name, version, base and
    // state, and the provenance tags.
    let ami = images.get(&bake.image.id).await.unwrap();
    assert_eq!((ami.name.as_str(), ami.version.as_str()), ("shop", "7"));
    assert_eq!(ami.base.as_deref(), Some(base.as_str()));
    assert_eq!(ami.state, ImageState::Built);
    assert_eq!(ami.properties[ARTIFACT_PROPERTY], raw);
    assert_eq!(ami.properties[BUILDER_ID_PROPERTY], "mitchellh.amazonebs");
    assert!(ami.properties[TEMPLATE_DIGEST_PROPERTY].starts_with("sha256:"));
    assert_eq!(ami.properties[PACKER_VERSION_PROPERTY], bake.packer_version);
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    assert!(events.iter().any(|e| matches!(
        e,
        BakeEvent::Progress { text, .. } if text.contains("Creating AMI phoenix-shop-7")
    )));
    assert!(matches!(events.last(), Some(BakeEvent::Finished { .. })));

    // Packer cleaned up after itself: its builder instance is terminated.
    let body = client
        .call(
            &QueryRequest::new(Service::Ec2, "DescribeInstances")
                .param("Filter.1.Name", "image-id")
                .param("Filter.1.Value.1", &base)
                .param("Filter.2.Name", "instance-state-name")
                .param("Filter.2.Value.1", "running"),
        )
        .await
        .unwrap();
    assert!(!body.contains("Packer Builder"), "{body}");
    images.delete(&bake.image.id).await.unwrap();
}
