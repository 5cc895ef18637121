//! What is stored about an image: the immutable manifest inside the image
//! directory, and the mutable sidecar (properties, lifecycle state) next
//! to it.

use std::collections::BTreeMap;

use phoenix_core::id::ImageId;
use phoenix_core::model::{Image, ImageState};
use phoenix_core::time::Timestamp;
use serde::{Deserialize, Serialize};

use super::digest::FileEntry;
use super::error::LocalError;

/// The manifest file name inside an image directory (reserved: an artifact
/// may not carry a top-level file of that name).
pub(crate) const MANIFEST_FILE: &str = "manifest.json";

/// The property that holds an image's lifecycle state.
pub const STATE_PROPERTY: &str = "phoenix-image-state";

/// The bake property naming the entrypoint inside an artifact directory
/// (default `entrypoint`).
pub const ENTRYPOINT_PROPERTY: &str = "phoenix-local-entrypoint";

/// The entrypoint name when [`ENTRYPOINT_PROPERTY`] is not given.
pub const DEFAULT_ENTRYPOINT: &str = "entrypoint";

const FORMAT: u32 = 1;

/// `images/<id>/manifest.json`: written once at bake time, read-only after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// Format of this file.
    pub(crate) format: u32,
    /// The image id (derived from the digest, name and version).
    pub(crate) id: ImageId,
    /// Name.
    pub(crate) name: String,
    /// Version.
    pub(crate) version: String,
    /// What it was baked from, when known.
    pub(crate) base: Option<String>,
    /// Bake time.
    pub(crate) created_at: Timestamp,
    /// Entrypoint, relative to the image directory.
    pub(crate) entrypoint: String,
    /// `sha256:<hex>` over the canonical listing of `files`.
    pub(crate) digest: String,
    /// Every file with its mode and digest, sorted by path.
    pub(crate) files: Vec<FileEntry>,
}

impl Manifest {
    /// A new manifest at the current format.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: ImageId,
        name: String,
        version: String,
        base: Option<String>,
        created_at: Timestamp,
        entrypoint: String,
        digest: String,
        files: Vec<FileEntry>,
    ) -> Self {
        Self {
            format: FORMAT,
            id,
            name,
            version,
            base,
            created_at,
            entrypoint,
            digest,
            files,
        }
    }

    /// The port's view of this image with the sidecar's properties.
    pub(crate) fn to_image(&self, meta: &ImageMeta) -> Result<Image, LocalError> {
        Ok(Image {
            id: self.id.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
            base: self.base.clone(),
            digest: Some(self.digest.clone()),
            state: meta.state()?,
            created_at: self.created_at,
            evidence: Vec::new(),
            properties: meta.properties.clone(),
        })
    }
}

/// `images/<id>.meta.json`: the mutable part, outside the immutable
/// directory so that tagging never touches the image's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageMeta {
    /// Properties, including [`STATE_PROPERTY`].
    pub(crate) properties: BTreeMap<String, String>,
}

impl ImageMeta {
    /// The lifecycle state: [`STATE_PROPERTY`], `built` when unset.
    pub(crate) fn state(&self) -> Result<ImageState, LocalError> {
        match self.properties.get(STATE_PROPERTY) {
            None => Ok(ImageState::Built),
            Some(v) => parse_state(v),
        }
    }
}

/// Parses a lifecycle state as `ImageState`'s `Display` writes it.
pub(crate) fn parse_state(value: &str) -> Result<ImageState, LocalError> {
    use ImageState::*;
    [Building, Built, Tested, Certified, Released, Deprecated, Deleted]
        .into_iter()
        .find(|s| s.to_string() == value)
        .ok_or_else(|| {
            LocalError::invalid(
                format!("property {STATE_PROPERTY}={value:?}"),
                "not an image lifecycle state (building, built, tested, certified, released, deprecated, deleted)",
            )
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn state_comes_from_the_property() {
        let mut meta = ImageMeta::default();
        assert_eq!(meta.state().unwrap(), ImageState::Built);
        meta.properties
            .insert(STATE_PROPERTY.into(), "certified".into());
        assert_eq!(meta.state().unwrap(), ImageState::Certified);
        meta.properties
            .insert(STATE_PROPERTY.into(), "shiny".into());
        assert!(meta.state().is_err());
    }
}
