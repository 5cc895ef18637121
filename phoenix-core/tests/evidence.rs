//! Certified means evidence (issue 15, item 2): evidence (suite, result,
//! time, digest, log reference) is kept in the records and on the
//! provider's image, only passing evidence for the image's own digest
//! certifies it, and the auditors' export is JSON holding every entry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::world;
use phoenix_core::model::{EvidenceReport, ImageState, TestEvidence};
use phoenix_core::phoenix::{CatalogError, EVIDENCE_COUNT_PROPERTY, EVIDENCE_PROPERTY};
use phoenix_core::ports::{BakeRequest, BakeSource, Images};
use phoenix_core::sim::SimConfig;

#[tokio::test(start_paused = true)]
async fn evidence_is_recorded_exported_and_only_its_digest_certifies() {
    let w = world(SimConfig::default(), 1).await;
    let images = w.cloud.images();
    let image = images
        .bake(&BakeRequest {
            source: BakeSource::Artifact("build-42".into()),
            name: "web".into(),
            version: "v42".into(),
            base: Some("debian-12".into()),
            properties: BTreeMap::from([("packer-version".to_owned(), "1.6.6".to_owned())]),
        })
        .await
        .unwrap();
    assert_eq!(image.state, ImageState::Built);
    w.phoenix.register_image(&image).await.unwrap();
    let digest = image.digest.clone().unwrap();

    // A passing run, but against other content (a rebuild).
    let elsewhere = TestEvidence::new("acceptance", w.cloud.now(), true)
        .with_details("42 checks")
        .with_digest("sha256:another-build")
        .with_log("https://ci.example/jobs/7/log");
    w.phoenix
        .record_evidence(&image.id, elsewhere)
        .await
        .unwrap();
    w.phoenix
        .promote(&image.id, ImageState::Tested)
        .await
        .unwrap();
    match w.phoenix.promote(&image.id, ImageState::Certified).await {
        Err(CatalogError::Transition(e)) => assert!(e.reason.contains("digest"), "{e}"),
        other => panic!("evidence for another digest certifies nothing, got {other:?}"),
    }
    let report = w.phoenix.evidence_report(&image.id).await.unwrap();
    assert!(!report.certifies);
    assert!(report.refusal.as_deref().unwrap().contains("digest"));

    // The provider's image carries the latest evidence too.
    let at_provider = images.get(&image.id).await.unwrap();
    let summary = &at_provider.properties[EVIDENCE_PROPERTY];
    assert!(
        summary.starts_with("acceptance passed at ") && summary.contains("sha256:another-build"),
        "{summary}"
    );
    assert!(
        summary.ends_with("log https://ci.example/jobs/7/log"),
        "{summary}"
    );
    assert_eq!(at_provider.properties[EVIDENCE_COUNT_PROPERTY], "1");

    // A passing run against its own digest (no digest given: the
    // catalog fills in the image's) certifies it.
    let own = TestEvidence::new("acceptance", w.cloud.now(), true).with_log("/var/log/ci/8.log");
    w.phoenix.record_evidence(&image.id, own).await.unwrap();
    w.phoenix
        .promote(&image.id, ImageState::Certified)
        .await
        .unwrap();

    // The export: JSON an auditor reads, every entry, the verdict.
    let reports = w.phoenix.evidence_reports().await.unwrap();
    let report = reports.iter().find(|r| r.image == image.id).unwrap();
    let json = serde_json::to_string_pretty(report).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["image"], image.id.as_str());
    assert_eq!(value["digest"], digest.as_str());
    assert_eq!(value["state"], "certified");
    assert_eq!(value["certifies"], true);
    assert_eq!(value["provenance"]["packer-version"], "1.6.6");
    let entries = value["evidence"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{json}");
    assert_eq!(entries[0]["for_this_digest"], false);
    assert_eq!(entries[0]["log"], "https://ci.example/jobs/7/log");
    assert_eq!(entries[0]["details"], "42 checks");
    assert_eq!(entries[1]["for_this_digest"], true);
    assert_eq!(entries[1]["digest"], digest.as_str());
    assert_eq!(entries[1]["log"], "/var/log/ci/8.log");
    assert_eq!(entries[1]["passed"], true);
    assert!(entries[1]["at"].as_str().is_some());
    let back: EvidenceReport = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, report);

    // A later failing run of the suite for its digest would withdraw the
    // verdict in the report (certified images take no more evidence).
    assert!(w
        .phoenix
        .record_evidence(
            &image.id,
            TestEvidence::new("acceptance", w.cloud.now(), false)
        )
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn an_image_only_the_provider_calls_certified_starts_as_built_in_the_records() {
    // A stock image another tool tagged certified (or released): Phoenix
    // has no record of it, so its first record sets the claim aside and
    // takes evidence like any built image.
    let w = world(SimConfig::default(), 1).await;
    let claimed = w.cloud.claimed_certified_image("base", "2026.12");
    let recorded = w
        .phoenix
        .record_evidence(
            &claimed.id,
            TestEvidence::new("acceptance", w.cloud.now(), true),
        )
        .await
        .unwrap();
    assert_eq!(recorded.state, ImageState::Built, "{recorded:?}");
    assert_eq!(
        recorded.evidence.len(),
        1,
        "only the evidence recorded here"
    );
    w.phoenix
        .promote(&claimed.id, ImageState::Tested)
        .await
        .unwrap();
    let certified = w
        .phoenix
        .promote(&claimed.id, ImageState::Certified)
        .await
        .unwrap();
    assert_eq!(certified.state, ImageState::Certified);
}
