//! The [`Images`] port of the local provider.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use phoenix_core::id::ImageId;
use phoenix_core::model::Image;
use phoenix_core::ports::{BakeRequest, ImageCapabilities, Images, PortError};
use phoenix_core::time::{SharedClock, SystemClock};

use super::blocking::run_blocking;
use super::image_store::ImageStore;
use super::layout::{root_from_env, Layout, DEFAULT_ROOT};

/// Local images: immutable, content-addressed artifact directories under
/// `<root>/images/`.
///
/// [`bake`](Images::bake) takes [`BakeSource::Artifact`] naming an
/// executable file (it becomes the entrypoint) or a directory (copied
/// whole; its entrypoint is `entrypoint` unless the bake property
/// [`ENTRYPOINT_PROPERTY`] names another). The copy is made read-only and
/// described by a manifest with a SHA-256 per file; the image id is derived
/// from the content digest, the name and the version, so baking the same
/// content under the same name and version again returns the same image.
/// Properties and the lifecycle state ([`STATE_PROPERTY`]) live in a
/// sidecar file next to the image directory, never inside it.
///
/// [`BakeSource::Artifact`]: phoenix_core::ports::BakeSource::Artifact
/// [`ENTRYPOINT_PROPERTY`]: super::ENTRYPOINT_PROPERTY
/// [`STATE_PROPERTY`]: super::STATE_PROPERTY
#[derive(Debug, Clone)]
pub struct LocalImages {
    store: Arc<ImageStore>,
}

/// Builds a [`LocalImages`].
#[derive(Debug, Clone)]
pub struct LocalImagesBuilder {
    root: PathBuf,
    clock: SharedClock,
}

impl LocalImagesBuilder {
    /// The root directory (default `./.phoenix/local`).
    pub fn root(mut self, root: impl AsRef<Path>) -> Self {
        self.root = root.as_ref().to_path_buf();
        self
    }

    /// Where bake times come from (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Creates the root's directories if needed.
    pub fn build(self) -> Result<LocalImages, PortError> {
        let layout =
            Layout::open(&self.root).map_err(|e| e.into_port("local: open image store"))?;
        Ok(LocalImages {
            store: Arc::new(ImageStore::new(layout, self.clock)),
        })
    }
}

impl LocalImages {
    /// A builder with the default root `./.phoenix/local`.
    pub fn builder() -> LocalImagesBuilder {
        LocalImagesBuilder {
            root: PathBuf::from(DEFAULT_ROOT),
            clock: Arc::new(SystemClock),
        }
    }

    /// Opens the root named by `PHOENIX_LOCAL_ROOT` (default
    /// `./.phoenix/local`).
    pub fn from_env() -> Result<Self, PortError> {
        Self::builder().root(root_from_env()).build()
    }

    /// Checks an image's content against its manifest, as every launch
    /// does; the error names the file that changed.
    pub async fn verify(&self, id: &ImageId) -> Result<(), PortError> {
        let store = self.store.clone();
        let id = id.clone();
        run_blocking(format!("local: verify image {id}"), move || {
            store.verify(&id).map(|_| ())
        })
        .await
    }

    /// The directory of an image (read-only), whether or not it exists;
    /// `None` for ids this provider never makes.
    pub fn directory(&self, id: &ImageId) -> Option<PathBuf> {
        self.store.directory(id)
    }
}

#[async_trait]
impl Images for LocalImages {
    fn capabilities(&self) -> ImageCapabilities {
        ImageCapabilities {
            bake_from_server: false,
            bake_from_artifact: true,
            properties: true,
        }
    }

    async fn list(&self) -> Result<Vec<Image>, PortError> {
        let store = self.store.clone();
        run_blocking("local: list images".into(), move || store.list()).await
    }

    async fn get(&self, id: &ImageId) -> Result<Image, PortError> {
        let store = self.store.clone();
        let id = id.clone();
        run_blocking(format!("local: get image {id}"), move || store.get(&id)).await
    }

    async fn bake(&self, request: &BakeRequest) -> Result<Image, PortError> {
        let store = self.store.clone();
        let request = request.clone();
        run_blocking(
            format!("local: bake image {} {}", request.name, request.version),
            move || store.bake(&request),
        )
        .await
    }

    async fn set_properties(
        &self,
        id: &ImageId,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), PortError> {
        let store = self.store.clone();
        let id = id.clone();
        let properties = properties.clone();
        run_blocking(format!("local: tag image {id}"), move || {
            store.set_properties(&id, &properties)
        })
        .await
    }

    async fn delete(&self, id: &ImageId) -> Result<(), PortError> {
        let store = self.store.clone();
        let id = id.clone();
        run_blocking(format!("local: delete image {id}"), move || {
            store.delete(&id)
        })
        .await
    }
}
