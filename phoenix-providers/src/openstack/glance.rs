//! [`OpenStackImages`]: the `Images` port on Glance v2, or on the Nova
//! images API where the catalog has no image service.
//!
//! - **List** and **get**: `GET /v2/images` (paginated by `marker`) and
//!   `GET /v2/images/{id}`; or `GET /images/detail` and `GET /images/{id}`
//!   on Nova.
//! - **Bake** from a server: Nova's `createImage` server action, with the
//!   version, base and properties as image metadata; the new image's id
//!   comes in the body (`image_id`, microversion 2.45 and later) or in the
//!   `Location` header. Mimic answers `createImage` without a usable
//!   location, so this is tested against the request and response samples
//!   of the Nova API reference instead (`tests/openstack_reference.rs`).
//! - **Properties** for lifecycle and promotion (`phoenix-image-state`,
//!   …): a JSON-patch `PATCH /v2/images/{id}`, or
//!   `POST /images/{id}/metadata` on Nova. Turn them off with
//!   [`OpenStackImagesBuilder::write_properties`] where releases use images
//!   the account does not own (public base images), which the cloud refuses
//!   to tag.
//! - **Delete**: `DELETE`, an image already gone counting as deleted.
//!
//! An image's lifecycle state is its `phoenix-image-state` property when
//! set, otherwise derived from the cloud's status (`queued`/`saving` →
//! building, `active` → built, `killed`/`deleted` → deleted).
//!
//! ```no_run
//! use phoenix_core::ports::Images;
//! use phoenix_providers::openstack::{CloudConfig, ImageApi, OpenStackImages, Session};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::new(CloudConfig::from_env()?)?;
//! let images = OpenStackImages::builder(session).api(ImageApi::Glance).build();
//! for image in images.list().await? {
//!     println!("{} {} ({})", image.id, image.name, image.state);
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use phoenix_core::id::ImageId;
use phoenix_core::model::{Image, ImageState};
use phoenix_core::ports::{
    BakeRequest, BakeSource, ErrorKind, ImageCapabilities, Images, PortError,
};
use serde_json::{json, Map, Value};
use tokio::sync::OnceCell;

use super::auth::parse_expiry;
use super::http::{ApiRequest, ApiResponse, Retry, Session};
use super::pagination::{self, Page};

/// The property holding an image's Phoenix lifecycle state.
pub const STATE_PROPERTY: &str = "phoenix-image-state";
/// The property holding an image's version.
pub const VERSION_PROPERTY: &str = "phoenix-version";
/// The property holding the image an image was baked from.
pub const BASE_PROPERTY: &str = "phoenix-base";

/// Which API serves images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageApi {
    /// Glance v2 (catalog type `image`).
    Glance,
    /// The Nova images API (`/images` on the compute endpoint), for clouds
    /// without Glance in the catalog.
    NovaImages,
}

/// Builds [`OpenStackImages`].
#[derive(Debug)]
pub struct OpenStackImagesBuilder {
    session: Session,
    api: Option<ImageApi>,
    write_properties: bool,
    page_size: usize,
}

impl OpenStackImagesBuilder {
    /// Uses this API (default: Glance when the catalog has an image
    /// service, otherwise the Nova images API).
    pub fn api(mut self, api: ImageApi) -> Self {
        self.api = Some(api);
        self
    }

    /// Whether to write lifecycle and promotion properties (default true).
    pub fn write_properties(mut self, on: bool) -> Self {
        self.write_properties = on;
        self
    }

    /// Images per page when listing (default 500).
    pub fn page_size(mut self, size: usize) -> Self {
        self.page_size = size.max(1);
        self
    }

    /// Builds the adapter.
    pub fn build(self) -> OpenStackImages {
        let chosen = OnceCell::new_with(self.api);
        OpenStackImages {
            session: self.session,
            api: chosen,
            write_properties: self.write_properties,
            page_size: self.page_size,
        }
    }
}

/// The `Images` port on Glance v2 or the Nova images API.
#[derive(Debug)]
pub struct OpenStackImages {
    session: Session,
    api: OnceCell<ImageApi>,
    write_properties: bool,
    page_size: usize,
}

/// Glance's own fields: everything else at the top level is a property.
const GLANCE_CORE: &[&str] = &[
    "id",
    "name",
    "status",
    "visibility",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "container_format",
    "disk_format",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "owner",
    "direct_url",
    "locations",
];

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    parse_expiry(text).or_else(|| {
        // Mimic's Nova images carry `1972-01-01_15-59-11`.
        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d_%H-%M-%S")
            .ok()
            .map(|n| n.and_utc())
    })
}

fn state_from_status(status: &str) -> ImageState {
    match status.to_ascii_lowercase().as_str() {
        "active" => ImageState::Built,
        "deactivated" => ImageState::Deprecated,
        "killed" | "deleted" | "pending_delete" | "error" => ImageState::Deleted,
        _ => ImageState::Building,
    }
}

fn image_from(
    id: &str,
    name: &str,
    status: &str,
    created: Option<&str>,
    properties: BTreeMap<String, String>,
    digest: Option<String>,
    operation: &str,
) -> Result<Image, PortError> {
    let id = ImageId::new(id).map_err(|e| {
        PortError::new(
            operation,
            ErrorKind::BadResponse(format!("image id {id:?} is unusable: {e}")),
        )
    })?;
    let state = properties
        .get(STATE_PROPERTY)
        .and_then(|s| serde_json::from_value::<ImageState>(json!(s)).ok())
        .unwrap_or_else(|| state_from_status(status));
    Ok(Image {
        id,
        name: name.to_owned(),
        version: properties
            .get(VERSION_PROPERTY)
            .or_else(|| properties.get("version"))
            .cloned()
            .unwrap_or_default(),
        base: properties.get(BASE_PROPERTY).cloned(),
        digest,
        state,
        created_at: created
            .and_then(parse_time)
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
        evidence: Vec::new(),
        properties,
    })
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn glance_image(v: &Map<String, Value>, operation: &str) -> Result<Image, PortError> {
    let field = |k: &str| v.get(k).and_then(Value::as_str);
    let id = field("id").ok_or_else(|| {
        PortError::new(
            operation,
            ErrorKind::BadResponse("a Glance image has no id".into()),
        )
    })?;
    let properties: BTreeMap<String, String> = v
        .iter()
        .filter(|(k, _)| !GLANCE_CORE.contains(&k.as_str()))
        .filter_map(|(k, x)| Some((k.clone(), text_of(x)?)))
        .collect();
    let digest = match (field("os_hash_algo"), field("os_hash_value")) {
        (Some(algo), Some(value)) if !value.is_empty() => Some(format!("{algo}:{value}")),
        _ => field("checksum")
            .filter(|c| !c.is_empty())
            .map(|c| format!("md5:{c}")),
    };
    image_from(
        id,
        field("name").unwrap_or_default(),
        field("status").unwrap_or_default(),
        field("created_at"),
        properties,
        digest,
        operation,
    )
}

fn nova_image(v: &Map<String, Value>, operation: &str) -> Result<Image, PortError> {
    let field = |k: &str| v.get(k).and_then(Value::as_str);
    let id = field("id").ok_or_else(|| {
        PortError::new(
            operation,
            ErrorKind::BadResponse("a Nova image has no id".into()),
        )
    })?;
    let properties: BTreeMap<String, String> = v
        .get("metadata")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, x)| Some((k.clone(), text_of(x)?)))
                .collect()
        })
        .unwrap_or_default();
    image_from(
        id,
        field("name").unwrap_or_default(),
        field("status").unwrap_or_default(),
        field("created"),
        properties,
        None,
        operation,
    )
}

fn objects<'a>(body: &'a Value, key: &str, operation: &str) -> Result<&'a Vec<Value>, PortError> {
    body.get(key).and_then(Value::as_array).ok_or_else(|| {
        PortError::new(
            operation,
            ErrorKind::BadResponse(format!("the answer has no `{key}` list")),
        )
    })
}

fn as_object<'a>(v: &'a Value, operation: &str) -> Result<&'a Map<String, Value>, PortError> {
    v.as_object().ok_or_else(|| {
        PortError::new(
            operation,
            ErrorKind::BadResponse("an image is not a JSON object".into()),
        )
    })
}

/// One page of an image list (`{"images": [...]}` in both APIs), each
/// image read by `read`.
fn image_page(
    body: &Value,
    more: bool,
    read: fn(&Map<String, Value>, &str) -> Result<Image, PortError>,
    operation: &str,
) -> Result<Page<Image>, PortError> {
    let raw = objects(body, "images", operation)?;
    let items = raw
        .iter()
        .map(|item| read(as_object(item, operation)?, operation))
        .collect::<Result<_, _>>()?;
    Ok(Page {
        items,
        last_id: pagination::last_id(raw),
        more,
    })
}

/// Escapes a property name for a JSON pointer.
fn pointer(key: &str) -> String {
    format!("/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// The new image's id from a `createImage` answer: the body's `image_id`
/// (microversion 2.45+) or the last segment of a `Location` naming an
/// image URL.
pub fn created_image_id(response: &ApiResponse) -> Result<String, String> {
    if let Ok(v) = serde_json::from_slice::<Value>(response.body()) {
        if let Some(id) = v.get("image_id").and_then(Value::as_str) {
            return Ok(id.to_owned());
        }
    }
    let location = response
        .header("location")
        .ok_or("createImage answered with neither an image_id nor a Location")?;
    let path = reqwest::Url::parse(location)
        .map(|u| u.path().to_owned())
        .map_err(|_| format!("createImage answered with an unusable Location {location:?}"))?;
    let mut segments = path.rsplit('/').filter(|s| !s.is_empty());
    match (segments.next(), segments.next()) {
        (Some(id), Some("images")) => Ok(id.to_owned()),
        _ => Err(format!(
            "createImage answered with a Location that names no image: {location:?}"
        )),
    }
}

impl OpenStackImages {
    /// Starts building an adapter over a session.
    pub fn builder(session: Session) -> OpenStackImagesBuilder {
        OpenStackImagesBuilder {
            session,
            api: None,
            write_properties: true,
            page_size: 500,
        }
    }

    /// The API in use (chosen from the catalog on first use unless set).
    pub async fn api(&self) -> Result<ImageApi, PortError> {
        self.api
            .get_or_try_init(|| async {
                match self.session.endpoint("image").await {
                    Ok(_) => Ok(ImageApi::Glance),
                    Err(e) if matches!(e.kind, ErrorKind::Unsupported(_)) => {
                        Ok(ImageApi::NovaImages)
                    }
                    Err(e) => Err(e),
                }
            })
            .await
            .copied()
    }

    fn glance(template: &'static str, path: String) -> ApiRequest {
        ApiRequest::get("image", template, path).version("v2")
    }

    async fn list_glance(&self) -> Result<Vec<Image>, PortError> {
        let op = "glance: listing images";
        let listing = pagination::by_marker(op, |marker| async move {
            let mut req = Self::glance("/images", "/images".into())
                .query("limit", self.page_size.to_string())
                .operation(op);
            if let Some(m) = marker {
                req = req.query("marker", m);
            }
            let body: Value = self.session.send(req).await?.json()?;
            let more = body.get("next").and_then(Value::as_str).is_some();
            image_page(&body, more, glance_image, op)
        })
        .await?;
        Ok(listing.items)
    }

    async fn list_nova(&self) -> Result<Vec<Image>, PortError> {
        let op = "nova: listing images";
        let listing = pagination::by_marker(op, |marker| async move {
            let mut req = ApiRequest::get("compute", "/images/detail", "/images/detail".into())
                .query("limit", self.page_size.to_string())
                .operation(op);
            if let Some(m) = marker {
                req = req.query("marker", m);
            }
            let body: Value = self.session.send(req).await?.json()?;
            let more = pagination::has_next_link(&body, "images_links");
            image_page(&body, more, nova_image, op)
        })
        .await?;
        Ok(listing.items)
    }
}

#[async_trait]
impl Images for OpenStackImages {
    fn capabilities(&self) -> ImageCapabilities {
        ImageCapabilities {
            bake_from_server: true,
            bake_from_artifact: false,
            properties: self.write_properties,
        }
    }

    async fn list(&self) -> Result<Vec<Image>, PortError> {
        match self.api().await? {
            ImageApi::Glance => self.list_glance().await,
            ImageApi::NovaImages => self.list_nova().await,
        }
    }

    async fn get(&self, id: &ImageId) -> Result<Image, PortError> {
        match self.api().await? {
            ImageApi::Glance => {
                let op = format!("glance: reading image {id}");
                let body: Value = self
                    .session
                    .send(Self::glance("/images/{id}", format!("/images/{id}")).operation(&op))
                    .await?
                    .json()?;
                glance_image(as_object(&body, &op)?, &op)
            }
            ImageApi::NovaImages => {
                let op = format!("nova: reading image {id}");
                let body: Value = self
                    .session
                    .send(
                        ApiRequest::get("compute", "/images/{id}", format!("/images/{id}"))
                            .operation(&op),
                    )
                    .await?
                    .json()?;
                let image = body.get("image").ok_or_else(|| {
                    PortError::new(
                        op.clone(),
                        ErrorKind::BadResponse("the answer has no `image`".into()),
                    )
                })?;
                nova_image(as_object(image, &op)?, &op)
            }
        }
    }

    async fn bake(&self, request: &BakeRequest) -> Result<Image, PortError> {
        let op = format!("nova: creating image {} from a server", request.name);
        let server = match &request.source {
            BakeSource::Server(id) => id,
            BakeSource::Artifact(_) => {
                return Err(PortError::new(
                    op,
                    ErrorKind::Unsupported(
                        "OpenStack images are baked from servers (createImage), not artifacts"
                            .into(),
                    ),
                ))
            }
        };
        let mut metadata = request.properties.clone();
        metadata.insert(VERSION_PROPERTY.into(), request.version.clone());
        if let Some(base) = &request.base {
            metadata.insert(BASE_PROPERTY.into(), base.clone());
        }
        metadata.insert(STATE_PROPERTY.into(), ImageState::Building.to_string());
        let body = json!({"createImage": {"name": request.name, "metadata": metadata}});
        let answer = self
            .session
            .send(
                ApiRequest::post(
                    "compute",
                    "/servers/{id}/action",
                    format!("/servers/{server}/action"),
                    body,
                )
                .retry(Retry::ThrottledOnly)
                .operation(&op),
            )
            .await?;
        let id = created_image_id(&answer)
            .map_err(|m| PortError::new(op.clone(), ErrorKind::BadResponse(m)))?;
        image_from(&id, &request.name, "queued", None, metadata, None, &op).map(|mut image| {
            image.created_at = Utc::now();
            image
        })
    }

    async fn set_properties(
        &self,
        id: &ImageId,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), PortError> {
        if !self.write_properties {
            return Err(PortError::new(
                format!("setting properties of image {id}"),
                ErrorKind::Unsupported("writing image properties is turned off".into()),
            ));
        }
        if properties.is_empty() {
            return Ok(());
        }
        match self.api().await? {
            ImageApi::Glance => {
                // "add" replaces a property that exists (Glance's JSON
                // patch semantics), so one call sets every property.
                let patch: Vec<Value> = properties
                    .iter()
                    .map(|(k, v)| json!({"op": "add", "path": pointer(k), "value": v}))
                    .collect();
                self.session
                    .send(
                        ApiRequest::patch(
                            "image",
                            "/images/{id}",
                            format!("/images/{id}"),
                            Value::Array(patch),
                        )
                        .version("v2")
                        .retry(Retry::Idempotent)
                        .operation(format!("glance: setting properties of image {id}")),
                    )
                    .await?;
            }
            ImageApi::NovaImages => {
                self.session
                    .send(
                        ApiRequest::post(
                            "compute",
                            "/images/{id}/metadata",
                            format!("/images/{id}/metadata"),
                            json!({ "metadata": properties }),
                        )
                        .retry(Retry::Idempotent)
                        .operation(format!("nova: setting metadata of image {id}")),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn delete(&self, id: &ImageId) -> Result<(), PortError> {
        let req = match self.api().await? {
            ImageApi::Glance => {
                ApiRequest::delete("image", "/images/{id}", format!("/images/{id}"))
                    .version("v2")
                    .operation(format!("glance: deleting image {id}"))
            }
            ImageApi::NovaImages => {
                ApiRequest::delete("compute", "/images/{id}", format!("/images/{id}"))
                    .operation(format!("nova: deleting image {id}"))
            }
        };
        match self.session.send(req).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glance_images_map_properties_digest_and_state() {
        // The image-show response sample of the Glance v2 API reference,
        // with a Phoenix property added.
        let v = json!({
            "status": "active", "name": "cirros-0.3.2-x86_64-disk", "tags": [],
            "container_format": "bare", "created_at": "2014-05-05T17:15:10Z",
            "disk_format": "qcow2", "updated_at": "2014-05-05T17:15:11Z",
            "visibility": "public", "self": "/v2/images/1bea47ed-f6a9-463b-b423-14b9cca9ad27",
            "min_disk": 0, "protected": false, "id": "1bea47ed-f6a9-463b-b423-14b9cca9ad27",
            "file": "/v2/images/1bea47ed-f6a9-463b-b423-14b9cca9ad27/file",
            "checksum": "64d7c1cd2b6f60c92c14662941cb7913",
            "owner": "5ef70662f8b34079a6eddb8da9d75fe8", "size": 13167616, "min_ram": 0,
            "schema": "/v2/schemas/image", "virtual_size": null,
            "phoenix-image-state": "certified", "phoenix-version": "2026.1"
        });
        let img = glance_image(v.as_object().unwrap(), "t").unwrap();
        assert_eq!(img.state, ImageState::Certified);
        assert_eq!(img.version, "2026.1");
        assert_eq!(
            img.digest.as_deref(),
            Some("md5:64d7c1cd2b6f60c92c14662941cb7913")
        );
        assert!(!img.properties.contains_key("checksum"));
        assert_eq!(img.properties["min_disk"], "0");
        assert_eq!(img.created_at.to_rfc3339(), "2014-05-05T17:15:10+00:00");
        assert_eq!(state_from_status("queued"), ImageState::Building);
    }

    #[test]
    fn json_pointers_are_escaped() {
        assert_eq!(pointer("a/b~c"), "/a~1b~0c");
    }

    #[test]
    fn mimic_timestamps_parse() {
        assert!(parse_time("1972-01-01_15-59-11").is_some());
    }
}
