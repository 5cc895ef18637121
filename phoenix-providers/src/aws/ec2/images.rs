//! `Images` on AMIs: bake with `CreateImage` from a builder instance and
//! wait for `available` (with a deadline), keep Phoenix's lifecycle state,
//! version, base and evidence as AMI tags, list the account's own AMIs,
//! and deregister an AMI together with its snapshots.
//!
//! An AMI's id names immutable content, so it is also the image's digest:
//! certification evidence recorded for it cannot describe anything else.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::id::ImageId;
use phoenix_core::model::{Image, ImageState};
use phoenix_core::ports::{
    BakeRequest, BakeSource, ErrorKind, ImageCapabilities, Images, PortError,
};
use serde::Deserialize;

use super::instance::Tag;
use crate::aws::config::Service;
use crate::aws::error::aws_error_code;
use crate::aws::query::{AwsClient, QueryRequest};
use crate::aws::xml::Items;

/// The tag holding an image's Phoenix lifecycle state.
pub const STATE_TAG: &str = "phoenix-image-state";
/// The tag holding an image's version.
pub const VERSION_TAG: &str = "phoenix-version";
/// The tag holding the image an image was baked from.
pub const BASE_TAG: &str = "phoenix-base";
/// The tag holding an image's Phoenix name.
pub const NAME_TAG: &str = "phoenix-image";

#[derive(Debug, Clone, Deserialize)]
struct Ebs {
    #[serde(rename = "snapshotId", default)]
    snapshot_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct BlockDevice {
    #[serde(default)]
    ebs: Option<Ebs>,
}

#[derive(Debug, Clone, Deserialize)]
struct StateReason {
    #[serde(default)]
    message: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ami {
    image_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    image_state: String,
    #[serde(default)]
    creation_date: Option<String>,
    #[serde(default)]
    state_reason: Option<StateReason>,
    #[serde(default)]
    block_device_mapping: Items<BlockDevice>,
    #[serde(default)]
    tag_set: Items<Tag>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeImages {
    #[serde(default)]
    images_set: Items<Ami>,
    #[serde(default)]
    next_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateImage {
    image_id: String,
}

impl Ami {
    fn tags(&self) -> BTreeMap<String, String> {
        self.tag_set
            .items
            .iter()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect()
    }

    fn snapshots(&self) -> Vec<String> {
        self.block_device_mapping
            .items
            .iter()
            .filter_map(|b| b.ebs.as_ref()?.snapshot_id.clone())
            .collect()
    }

    fn to_image(&self, operation: &str) -> Result<Image, PortError> {
        let id = ImageId::new(self.image_id.clone()).map_err(|e| {
            PortError::new(
                operation,
                ErrorKind::BadResponse(format!("AMI id {:?} is unusable: {e}", self.image_id)),
            )
        })?;
        let tags = self.tags();
        let state = match self.image_state.as_str() {
            "pending" => ImageState::Building,
            "failed" | "error" | "invalid" | "deregistered" => ImageState::Deleted,
            "disabled" => ImageState::Deprecated,
            _ => tags
                .get(STATE_TAG)
                .and_then(|s| serde_json::from_value(serde_json::Value::String(s.clone())).ok())
                .unwrap_or(ImageState::Built),
        };
        Ok(Image {
            name: tags
                .get(NAME_TAG)
                .cloned()
                .unwrap_or_else(|| self.name.clone()),
            version: tags.get(VERSION_TAG).cloned().unwrap_or_default(),
            base: tags.get(BASE_TAG).cloned(),
            // AMIs are immutable: the id names the content.
            digest: Some(self.image_id.clone()),
            state,
            created_at: self
                .creation_date
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or(chrono::DateTime::UNIX_EPOCH, |t| {
                    t.with_timezone(&chrono::Utc)
                }),
            evidence: Vec::new(),
            properties: tags,
            id,
        })
    }
}

/// `Images` on the account's AMIs.
#[derive(Debug, Clone)]
pub struct Ec2Images {
    client: AwsClient,
    bake_within: Duration,
    poll: Duration,
    no_reboot: bool,
}

/// Builds [`Ec2Images`].
#[derive(Debug, Clone)]
pub struct Ec2ImagesBuilder {
    inner: Ec2Images,
}

impl Ec2ImagesBuilder {
    /// How long a bake may take before it is given up (default 60 min;
    /// the AMI is then left `pending` under its tags, for reap).
    pub fn bake_within(mut self, d: Duration) -> Self {
        self.inner.bake_within = d;
        self
    }

    /// How often to look at a bake (default 15 s).
    pub fn poll(mut self, d: Duration) -> Self {
        self.inner.poll = d;
        self
    }

    /// Bake without rebooting the builder (default false: a reboot gives
    /// a consistent file system).
    pub fn no_reboot(mut self, yes: bool) -> Self {
        self.inner.no_reboot = yes;
        self
    }

    /// The adapter.
    pub fn build(self) -> Ec2Images {
        self.inner
    }
}

/// An AMI name EC2 accepts: 3 to 128 of letters, digits and `()./_-`,
/// spaces, apostrophes, `@`, brackets.
fn ami_name(name: &str, version: &str) -> String {
    let raw = format!("{name}-{version}");
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "()./_-@[] '".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    while out.len() < 3 {
        out.push('_');
    }
    out
}

impl Ec2Images {
    /// Starts a builder over a shared client.
    pub fn builder(client: AwsClient) -> Ec2ImagesBuilder {
        Ec2ImagesBuilder {
            inner: Self {
                client,
                bake_within: Duration::from_secs(3600),
                poll: Duration::from_secs(15),
                no_reboot: false,
            },
        }
    }

    async fn describe(&self, q: QueryRequest) -> Result<Vec<Ami>, PortError> {
        let pages: Vec<DescribeImages> = self
            .client
            .pages(&q, "NextToken", |p: &DescribeImages| p.next_token.clone())
            .await?;
        Ok(pages.into_iter().flat_map(|p| p.images_set.items).collect())
    }

    async fn ami(&self, id: &ImageId) -> Result<Ami, PortError> {
        let q = QueryRequest::new(Service::Ec2, "DescribeImages").param("ImageId.1", id.as_str());
        let op = format!("ec2 DescribeImages {id}");
        let found = self.describe(q).await?.into_iter().next();
        match found {
            Some(a) if a.image_state != "deregistered" => Ok(a),
            _ => Err(PortError::not_found(op, format!("AMI {id}"))),
        }
    }

    async fn tag(&self, id: &str, tags: &BTreeMap<String, String>) -> Result<(), PortError> {
        let mut q = QueryRequest::new(Service::Ec2, "CreateTags").param("ResourceId.1", id);
        for (i, (k, v)) in tags.iter().enumerate() {
            q = q
                .param(format!("Tag.{}.Key", i + 1), k)
                .param(format!("Tag.{}.Value", i + 1), v);
        }
        self.client.call(&q).await.map(drop)
    }
}

#[async_trait]
impl Images for Ec2Images {
    fn capabilities(&self) -> ImageCapabilities {
        ImageCapabilities {
            bake_from_server: true,
            bake_from_artifact: false,
            properties: true,
        }
    }

    async fn list(&self) -> Result<Vec<Image>, PortError> {
        let q = QueryRequest::new(Service::Ec2, "DescribeImages")
            .param("Owner.1", "self")
            .param("MaxResults", "1000");
        self.describe(q)
            .await?
            .iter()
            .filter(|a| a.image_state != "deregistered")
            .map(|a| a.to_image("ec2 DescribeImages"))
            .collect()
    }

    async fn get(&self, id: &ImageId) -> Result<Image, PortError> {
        match self.ami(id).await {
            Err(e) if aws_error_code(&e).is_some_and(|c| c.starts_with("InvalidAMIID")) => Err(
                PortError::not_found(format!("ec2 DescribeImages {id}"), format!("AMI {id}"))
                    .with_source(e),
            ),
            other => other?.to_image(&format!("ec2 DescribeImages {id}")),
        }
    }

    async fn bake(&self, request: &BakeRequest) -> Result<Image, PortError> {
        let op = format!("ec2 CreateImage {}-{}", request.name, request.version);
        let BakeSource::Server(builder) = &request.source else {
            return Err(PortError::new(
                op,
                ErrorKind::Unsupported(
                    "EC2 bakes AMIs from a builder instance; bake artifacts with Packer".into(),
                ),
            ));
        };
        let mut tags = request.properties.clone();
        tags.insert(NAME_TAG.into(), request.name.clone());
        tags.insert(VERSION_TAG.into(), request.version.clone());
        tags.insert(STATE_TAG.into(), "building".into());
        if let Some(base) = &request.base {
            tags.insert(BASE_TAG.into(), base.clone());
        }
        let mut q = QueryRequest::new(Service::Ec2, "CreateImage")
            // A retried CreateImage fails on the duplicate name instead of
            // baking twice; the caller looks the name up.
            .not_idempotent()
            .param("InstanceId", builder.as_str())
            .param("Name", ami_name(&request.name, &request.version))
            .param("NoReboot", if self.no_reboot { "true" } else { "false" });
        // Snapshots are tagged once the AMI names them: a snapshot
        // TagSpecification is not accepted everywhere (moto refuses it).
        q = q.param("TagSpecification.1.ResourceType", "image");
        for (i, (k, v)) in tags.iter().enumerate() {
            q = q
                .param(format!("TagSpecification.1.Tag.{}.Key", i + 1), k)
                .param(format!("TagSpecification.1.Tag.{}.Value", i + 1), v);
        }
        let created: CreateImage = self.client.call_xml(&q).await?;
        let id = ImageId::new(created.image_id.clone()).map_err(|e| {
            PortError::new(
                &op,
                ErrorKind::BadResponse(format!("AMI id {:?} is unusable: {e}", created.image_id)),
            )
        })?;
        let deadline = tokio::time::Instant::now() + self.bake_within;
        loop {
            let ami = match self.ami(&id).await {
                Ok(a) => Some(a),
                // Not visible yet: eventual consistency right after create.
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e),
            };
            match ami.as_ref().map(|a| a.image_state.as_str()) {
                Some("available") => {
                    // Snapshots carry the image's tags, so that costs and
                    // leftovers can be attributed.
                    for snap in ami.as_ref().map(Ami::snapshots).unwrap_or_default() {
                        self.tag(&snap, &tags).await?;
                    }
                    let mut built = BTreeMap::new();
                    built.insert(STATE_TAG.to_owned(), "built".to_owned());
                    self.tag(id.as_str(), &built).await?;
                    return self.get(&id).await;
                }
                Some("failed" | "error" | "invalid") => {
                    let why = ami
                        .and_then(|a| a.state_reason.map(|r| r.message))
                        .unwrap_or_default();
                    return Err(PortError::permanent(
                        &op,
                        format!("AMI {id} failed to bake: {why}"),
                    ));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PortError::temporary(
                    &op,
                    format!(
                        "AMI {id} is not available after {}s; it stays tagged {STATE_TAG}=building for reap",
                        self.bake_within.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn set_properties(
        &self,
        id: &ImageId,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), PortError> {
        self.tag(id.as_str(), properties).await
    }

    async fn delete(&self, id: &ImageId) -> Result<(), PortError> {
        let ami = match self.ami(id).await {
            Ok(a) => a,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if aws_error_code(&e).is_some_and(|c| c.starts_with("InvalidAMIID")) => {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        let q = QueryRequest::new(Service::Ec2, "DeregisterImage").param("ImageId", id.as_str());
        match self.client.call(&q).await {
            Ok(_) => {}
            Err(e) if aws_error_code(&e).is_some_and(|c| c.starts_with("InvalidAMIID")) => {}
            Err(e) => return Err(e),
        }
        // The snapshots outlive the AMI and cost money: delete them too.
        for snap in ami.snapshots() {
            let q = QueryRequest::new(Service::Ec2, "DeleteSnapshot").param("SnapshotId", &snap);
            match self.client.call(&q).await {
                Ok(_) => {}
                Err(e) if aws_error_code(&e).is_some_and(|c| c.starts_with("InvalidSnapshot")) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_names_are_what_ec2_accepts() {
        assert_eq!(ami_name("web", "2026.12.03-1"), "web-2026.12.03-1");
        assert_eq!(ami_name("web", "v1+build:7"), "web-v1-build-7");
        assert_eq!(ami_name("", ""), "-__");
        assert_eq!(ami_name(&"x".repeat(200), "1").len(), 128);
    }

    #[test]
    fn states_and_tags_read_back() {
        let a: DescribeImages = crate::aws::xml::parse(
            "<DescribeImagesResponse><imagesSet><item><imageId>ami-1</imageId><name>web-1</name>\
<imageState>available</imageState><creationDate>2026-12-03T23:34:31.000Z</creationDate>\
<blockDeviceMapping><item><ebs><snapshotId>snap-1</snapshotId></ebs></item><item><virtualName>ephemeral0</virtualName></item></blockDeviceMapping>\
<tagSet><item><key>phoenix-image-state</key><value>certified</value></item><item><key>phoenix-version</key><value>1</value></item><item><key>phoenix-image</key><value>web</value></item></tagSet>\
</item></imagesSet></DescribeImagesResponse>",
        )
        .unwrap();
        let ami = &a.images_set.items[0];
        assert_eq!(ami.snapshots(), ["snap-1"]);
        let i = ami.to_image("t").unwrap();
        assert_eq!(i.state, ImageState::Certified);
        assert_eq!((i.name.as_str(), i.version.as_str()), ("web", "1"));
        assert_eq!(i.digest.as_deref(), Some("ami-1"));
    }
}
