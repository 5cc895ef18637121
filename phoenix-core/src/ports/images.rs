use std::collections::BTreeMap;

use async_trait::async_trait;

use super::PortError;
use crate::id::{ImageId, ServerId};
use crate::model::Image;

/// What an image back end can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageCapabilities {
    /// Can bake an image from a running server.
    pub bake_from_server: bool,
    /// Can bake an image from a build artifact.
    pub bake_from_artifact: bool,
    /// Can store properties (tags) on images.
    pub properties: bool,
}

/// Where a baked image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BakeSource {
    /// A running (or stopped) server.
    Server(ServerId),
    /// A provider-specific build artifact reference (a directory for the
    /// local provider, a disk file, an OVA).
    Artifact(String),
}

/// A request to bake an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakeRequest {
    /// Source.
    pub source: BakeSource,
    /// Image name.
    pub name: String,
    /// Image version.
    pub version: String,
    /// The image it derives from, if known.
    pub base: Option<String>,
    /// Properties to set.
    pub properties: BTreeMap<String, String>,
}

/// Lists, bakes, tags and deletes images.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Images: Send + Sync {
    /// What this back end can do.
    fn capabilities(&self) -> ImageCapabilities;

    /// Every image visible to this account.
    async fn list(&self) -> Result<Vec<Image>, PortError>;

    /// One image; `ErrorKind::NotFound` when it does not exist.
    async fn get(&self, id: &ImageId) -> Result<Image, PortError>;

    /// Bakes a new image. It may still be `Building` when this returns.
    async fn bake(&self, request: &BakeRequest) -> Result<Image, PortError>;

    /// Sets properties (lifecycle state, promotion tags) on an image.
    async fn set_properties(
        &self,
        id: &ImageId,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), PortError>;

    /// Deletes an image. Deleting one that is gone succeeds.
    async fn delete(&self, id: &ImageId) -> Result<(), PortError>;
}
