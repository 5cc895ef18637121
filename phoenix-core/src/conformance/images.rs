//! The `Images` contract.

use std::collections::BTreeMap;

use crate::id::ImageId;
use crate::ports::{BakeRequest, BakeSource, Images};

/// What the suite needs from the back end under test.
#[derive(Debug, Clone)]
pub struct ImagesFixture {
    /// Something to bake from (a build artifact or a server), if the back
    /// end can bake; without it, `existing` is used.
    pub bake_from: Option<BakeSource>,
    /// An image that exists, when the back end cannot bake (a public cloud
    /// image).
    pub existing: Option<ImageId>,
}

/// Runs every check. An image it bakes is deleted at the end.
pub async fn run(images: &dyn Images, f: &ImagesFixture) {
    let caps = images.capabilities();
    let unknown = ImageId::from_valid(super::unique("no-such-image"));
    let err = images
        .get(&unknown)
        .await
        .expect_err("an unknown image is an error");
    assert!(err.is_not_found(), "an unknown image is NotFound: {err}");

    let (id, baked) = match &f.bake_from {
        Some(source) => {
            assert!(
                match source {
                    BakeSource::Artifact(_) => caps.bake_from_artifact,
                    BakeSource::Server(_) => caps.bake_from_server,
                },
                "the fixture's bake source matches the capabilities"
            );
            let mut properties = BTreeMap::new();
            properties.insert("phoenix-conformance".to_owned(), "1".to_owned());
            let version = super::unique("v");
            let image = images
                .bake(&BakeRequest {
                    source: source.clone(),
                    name: "conformance".into(),
                    version: version.clone(),
                    base: None,
                    properties,
                })
                .await
                .unwrap_or_else(|e| panic!("bake failed: {e}"));
            assert_eq!(image.name, "conformance");
            assert_eq!(image.version, version);
            (image.id, true)
        }
        None => (
            f.existing
                .clone()
                .expect("the fixture names an image to bake from or an existing one"),
            false,
        ),
    };
    let got = images
        .get(&id)
        .await
        .unwrap_or_else(|e| panic!("get {id}: {e}"));
    assert_eq!(got.id, id, "get returns the image asked for");
    let listed = images.list().await.unwrap();
    assert!(listed.iter().any(|i| i.id == id), "list includes it");

    if caps.properties && baked {
        let mut props = BTreeMap::new();
        props.insert("phoenix-image-state".to_owned(), "certified".to_owned());
        images.set_properties(&id, &props).await.unwrap();
        let got = images.get(&id).await.unwrap();
        assert_eq!(
            got.properties
                .get("phoenix-image-state")
                .map(String::as_str),
            Some("certified"),
            "properties are kept"
        );
    }
    if baked {
        images.delete(&id).await.unwrap();
        let err = images.get(&id).await.expect_err("a deleted image is gone");
        assert!(err.is_not_found(), "{err}");
        images
            .delete(&id)
            .await
            .expect("deleting a deleted image succeeds");
    }
}
