use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::id::ImageId;
use crate::model::{Image, ImageState};
use crate::ports::{BakeRequest, ImageCapabilities, Images, PortError};

use super::compute::{api_fault, lock};
use super::world::World;

/// The simulated image back end.
#[derive(Debug, Clone)]
pub struct SimImages {
    pub(crate) world: Arc<Mutex<World>>,
}

#[async_trait]
impl Images for SimImages {
    fn capabilities(&self) -> ImageCapabilities {
        ImageCapabilities {
            bake_from_server: true,
            bake_from_artifact: true,
            properties: true,
        }
    }

    async fn list(&self) -> Result<Vec<Image>, PortError> {
        let mut w = lock(&self.world);
        api_fault(&mut w, "sim: list images")?;
        Ok(w.images.values().cloned().collect())
    }

    async fn get(&self, id: &ImageId) -> Result<Image, PortError> {
        let mut w = lock(&self.world);
        api_fault(&mut w, "sim: get image")?;
        w.images
            .get(id)
            .filter(|i| i.state != ImageState::Deleted)
            .cloned()
            .ok_or_else(|| PortError::not_found("sim: get image", id.to_string()))
    }

    async fn bake(&self, request: &BakeRequest) -> Result<Image, PortError> {
        let mut w = lock(&self.world);
        api_fault(&mut w, "sim: bake image")?;
        let id = ImageId::from_valid(format!("img-{:04}", w.next_image));
        w.next_image += 1;
        // The provider's own metadata may claim any state; certification
        // is decided by evidence, never by this property.
        let state = request
            .properties
            .get("phoenix-image-state")
            .and_then(|s| parse_state(s))
            .unwrap_or(ImageState::Built);
        let image = Image {
            id: id.clone(),
            name: request.name.clone(),
            version: request.version.clone(),
            base: request.base.clone(),
            digest: Some(crate::fingerprint_of(&format!(
                "{}:{}",
                request.name, request.version
            ))),
            state,
            created_at: w.timestamp(),
            evidence: Vec::new(),
            properties: request.properties.clone(),
        };
        w.images.insert(id, image.clone());
        Ok(image)
    }

    async fn set_properties(
        &self,
        id: &ImageId,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), PortError> {
        let mut w = lock(&self.world);
        api_fault(&mut w, "sim: tag image")?;
        let image = w
            .images
            .get_mut(id)
            .ok_or_else(|| PortError::not_found("sim: tag image", id.to_string()))?;
        image.properties.extend(properties.clone());
        Ok(())
    }

    async fn delete(&self, id: &ImageId) -> Result<(), PortError> {
        let mut w = lock(&self.world);
        api_fault(&mut w, "sim: delete image")?;
        if let Some(image) = w.images.get_mut(id) {
            image.state = ImageState::Deleted;
        }
        Ok(())
    }
}

fn parse_state(s: &str) -> Option<ImageState> {
    use ImageState::*;
    [
        Building, Built, Tested, Certified, Released, Deprecated, Deleted,
    ]
    .into_iter()
    .find(|state| state.to_string() == s)
}
