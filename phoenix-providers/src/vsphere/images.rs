//! `Images` on vSphere templates.
//!
//! - Bake: clone the builder VM (or a base template) into the folder,
//!   powered off, its name and version in `guestinfo.phoenix.*`; customise
//!   it (an annotation saying what it is); power it off if it runs;
//!   optionally snapshot it (for linked clones); `MarkAsTemplate`; then the
//!   lifecycle state, version, base and bake time as custom attributes.
//!   A template of that name already in the folder with the same version
//!   is the same bake, finished or resumed, not a second one.
//! - List: the templates of the folder that carry the `phoenix-image`
//!   attribute (one `RetrievePropertiesEx`); get: any template by id.
//! - Set properties: one `SetField` per property (the lifecycle state, and
//!   test evidence where the caller passes it; the executor records
//!   evidence in the state store, the attribute is what an operator sees
//!   in the vSphere Client), and a line of history in the annotation.
//! - Delete: `Destroy_Task` of a Phoenix template; a template Phoenix did
//!   not bake is refused.
//!
//! A template's `config.instanceUuid` is its digest: evidence recorded
//! for one template cannot describe another, and marking a template back
//! into a VM and again into a template keeps it (so do not: bake anew).

use std::collections::BTreeMap;

use async_trait::async_trait;
use phoenix_core::id::ImageId;
use phoenix_core::model::{Image, ImageState};
use phoenix_core::ports::{
    BakeRequest, BakeSource, ErrorKind, ImageCapabilities, Images, PortError,
};

use super::client::{SoapCall, VsphereClient};
use super::custom_fields;
use super::fault;
use super::folder::Folder;
use super::inventory;
use super::property_collector::ObjectContent;
use super::tasks;
use super::vm;
use super::xml::{el, MoRef};

/// The custom attribute holding an image's Phoenix name (and marking the
/// template as Phoenix's).
pub const NAME_ATTR: &str = "phoenix-image";
/// The custom attribute holding an image's lifecycle state.
pub const STATE_ATTR: &str = "phoenix-image-state";
/// The custom attribute holding an image's version.
pub const VERSION_ATTR: &str = "phoenix-version";
/// The custom attribute holding the image it was baked from.
pub const BASE_ATTR: &str = "phoenix-base";
/// The custom attribute holding when it was baked (RFC 3339).
pub const BAKED_AT_ATTR: &str = "phoenix-baked-at";

const PATHS: &[&str] = &[
    "name",
    "config.template",
    "config.instanceUuid",
    "config.annotation",
    "customValue",
];

/// `Images` on vSphere templates.
#[derive(Debug, Clone)]
pub struct VsphereImages {
    folder: Folder,
    snapshot: bool,
}

/// Builds [`VsphereImages`].
#[derive(Debug, Clone)]
pub struct VsphereImagesBuilder {
    inner: VsphereImages,
}

impl VsphereImagesBuilder {
    /// Snapshot each baked template before marking it, so that
    /// [`CloneMode::Linked`](super::CloneMode::Linked) can clone from it
    /// (default false).
    pub fn snapshot_for_linked_clones(mut self, yes: bool) -> Self {
        self.inner.snapshot = yes;
        self
    }

    /// The adapter.
    pub fn build(self) -> VsphereImages {
        self.inner
    }
}

impl VsphereImages {
    /// Starts a builder over a shared client.
    pub fn builder(client: VsphereClient) -> VsphereImagesBuilder {
        VsphereImagesBuilder {
            inner: Self {
                folder: Folder::new(client),
                snapshot: false,
            },
        }
    }

    /// The shared client.
    pub fn client(&self) -> &VsphereClient {
        self.folder.client()
    }

    async fn to_image(&self, o: &ObjectContent) -> Result<Option<Image>, PortError> {
        if o.flag("config.template") != Some(true) {
            return Ok(None);
        }
        let names = self.folder.fields().names(self.client()).await?;
        let attrs = custom_fields::values(o, &names);
        let id = ImageId::new(o.obj.value.clone()).map_err(|e| {
            PortError::new(
                "vsphere images",
                ErrorKind::BadResponse(format!("template id {:?}: {e}", o.obj.value)),
            )
        })?;
        let vm_name = o.text("name").unwrap_or_default().to_owned();
        let state = attrs
            .get(STATE_ATTR)
            .and_then(|s| serde_json::from_value(serde_json::Value::String(s.clone())).ok())
            .unwrap_or(ImageState::Built);
        Ok(Some(Image {
            id,
            name: attrs.get(NAME_ATTR).cloned().unwrap_or(vm_name),
            version: attrs.get(VERSION_ATTR).cloned().unwrap_or_default(),
            base: attrs.get(BASE_ATTR).cloned(),
            digest: o
                .text("config.instanceUuid")
                .map(|u| format!("vsphere-uuid:{u}")),
            state,
            created_at: attrs
                .get(BAKED_AT_ATTR)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or(chrono::DateTime::UNIX_EPOCH, |t| {
                    t.with_timezone(&chrono::Utc)
                }),
            evidence: Vec::new(),
            properties: attrs,
        }))
    }

    async fn source(&self, source: &BakeSource) -> Result<MoRef, PortError> {
        match source {
            BakeSource::Server(id) => Ok(MoRef::new("VirtualMachine", id.as_str())),
            // An artifact is a base template: an inventory path or an id.
            BakeSource::Artifact(a) if a.starts_with('/') => {
                inventory::find_by_path(self.client(), a)
                    .await?
                    .ok_or_else(|| PortError::not_found("vsphere bake", format!("template {a}")))
            }
            BakeSource::Artifact(a) => Ok(MoRef::new("VirtualMachine", a.as_str())),
        }
    }

    /// Customises the clone (its annotation), powers it off, snapshots
    /// it if asked, and marks it as a template; a clone already marked
    /// (a resumed bake) is left as it is.
    async fn mark(
        &self,
        vm: &MoRef,
        request: &BakeRequest,
        annotation: &str,
    ) -> Result<(), PortError> {
        let client = self.client();
        let state = self
            .folder
            .read_one(vm, &["runtime.powerState", "config.template"])
            .await?;
        if state.as_ref().and_then(|s| s.flag("config.template")) == Some(true) {
            return Ok(());
        }
        // Set here rather than in the clone's spec, which vcsim's clone
        // ignores (vCenter honours it).
        let spec = format!("<spec>{}</spec>", el("annotation", annotation));
        tasks::run(client, &SoapCall::new("ReconfigVM_Task", vm, spec)).await?;
        if state.as_ref().and_then(|s| s.text("runtime.powerState")) != Some("poweredOff") {
            match tasks::run(client, &SoapCall::new("PowerOffVM_Task", vm, "")).await {
                Ok(_) => {}
                Err(e) if fault::fault_type(&e) == Some("InvalidPowerState") => {}
                Err(e) => return Err(e),
            }
        }
        if self.snapshot {
            let args = format!(
                "{}{}<memory>false</memory><quiesce>false</quiesce>",
                el("name", &format!("phoenix-{}", request.version)),
                el("description", "linked clones of this template start here"),
            );
            tasks::run(client, &SoapCall::new("CreateSnapshot_Task", vm, args)).await?;
        }
        client
            .call(&SoapCall::new("MarkAsTemplate", vm, ""))
            .await
            .map(|_| ())
    }
}

/// Most characters of annotation kept: the oldest history lines go first.
const ANNOTATION_MAX: usize = 4000;

/// `annotation` with `line` appended, its oldest history lines dropped
/// past [`ANNOTATION_MAX`] (the first line, what the template is, stays).
fn history(annotation: &str, line: &str) -> String {
    let mut lines: Vec<&str> = annotation.lines().collect();
    lines.push(line);
    while lines.len() > 2 && lines.iter().map(|l| l.len() + 1).sum::<usize>() > ANNOTATION_MAX {
        lines.remove(1);
    }
    lines.join("\n")
}

/// A template name vSphere accepts, from the image's name and version.
fn template_name(name: &str, version: &str) -> String {
    format!("{name}-{version}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(80)
        .collect()
}

#[async_trait]
impl Images for VsphereImages {
    fn capabilities(&self) -> ImageCapabilities {
        ImageCapabilities {
            bake_from_server: true,
            // A base template (inventory path or id) is the artifact.
            bake_from_artifact: true,
            properties: true,
        }
    }

    async fn list(&self) -> Result<Vec<Image>, PortError> {
        let read = self.folder.read(PATHS).await?;
        let mut out = Vec::new();
        for o in &read.objects {
            if let Some(i) = self.to_image(o).await? {
                if i.properties.contains_key(NAME_ATTR) {
                    out.push(i);
                }
            }
        }
        Ok(out)
    }

    async fn get(&self, id: &ImageId) -> Result<Image, PortError> {
        let op = format!("vsphere get image {id}");
        let vm = MoRef::new("VirtualMachine", id.as_str());
        let o = self
            .folder
            .read_one(&vm, PATHS)
            .await?
            .ok_or_else(|| PortError::not_found(&op, format!("template {id}")))?;
        self.to_image(&o)
            .await?
            .ok_or_else(|| PortError::not_found(&op, format!("{id} is not a template")))
    }

    async fn bake(&self, request: &BakeRequest) -> Result<Image, PortError> {
        let client = self.client();
        let name = template_name(&request.name, &request.version);
        let op = format!("vsphere bake {name}");
        let source = self.source(&request.source).await?;
        let placement = self.folder.placement().await?.clone();
        let existing = inventory::find_child(client, &placement.folder, &name).await?;
        let vm = match existing {
            Some(vm) => {
                // A bake of this name ran before: resume it if it is
                // ours, at this version.
                let attrs = self
                    .folder
                    .read_one(&vm, &["customValue", "config.extraConfig"])
                    .await?;
                let names = self.folder.fields().names(client).await?;
                let version = attrs
                    .as_ref()
                    .map(|o| custom_fields::values(o, &names))
                    .and_then(|a| a.get(VERSION_ATTR).cloned());
                let marker = attrs
                    .as_ref()
                    .map(vm::phoenix_extra_config)
                    .and_then(|e| e.get("guestinfo.phoenix.image-version").cloned());
                if version.as_deref() != Some(request.version.as_str())
                    && marker.as_deref() != Some(request.version.as_str())
                {
                    return Err(PortError::new(
                        op,
                        ErrorKind::Conflict(format!(
                            "{name} exists in the folder and is not this bake"
                        )),
                    ));
                }
                vm
            }
            None => {
                let pool = match &placement.pool {
                    Some(p) => p.to_xml("pool"),
                    None => self
                        .folder
                        .read_one(&source, &["resourcePool"])
                        .await?
                        .and_then(|o| o.moref("resourcePool"))
                        .map(|p| p.to_xml("pool"))
                        .ok_or_else(|| {
                            PortError::new(
                                &op,
                                ErrorKind::Invalid(
                                    "the source is a template: set GOVC_RESOURCE_POOL".into(),
                                ),
                            )
                        })?,
                };
                let datastore = placement
                    .datastore
                    .as_ref()
                    .map(|d| d.to_xml("datastore"))
                    .unwrap_or_default();
                let extra = vm::extra_config([
                    ("guestinfo.phoenix.image-name", request.name.as_str()),
                    ("guestinfo.phoenix.image-version", request.version.as_str()),
                ]);
                let args = format!(
                    "{}{}<spec><location>{datastore}{pool}</location><template>false</template>\
                     <config>{extra}</config><powerOn>false</powerOn></spec>",
                    placement.folder.to_xml("folder"),
                    el("name", &name),
                );
                let call = SoapCall::new("CloneVM_Task", &source, args).not_idempotent();
                tasks::run(client, &call)
                    .await?
                    .as_ref()
                    .and_then(MoRef::from_element)
                    .ok_or_else(|| {
                        PortError::new(
                            call.operation(),
                            ErrorKind::BadResponse("the clone task named no VM".into()),
                        )
                    })?
            }
        };
        let annotation = format!(
            "Phoenix image {} version {}, baked from {} at {}. Immutable: bake a new version instead of changing it.",
            request.name,
            request.version,
            request.base.as_deref().unwrap_or(&source.value),
            chrono::Utc::now().to_rfc3339(),
        );
        self.mark(&vm, request, &annotation).await?;
        let mut attrs: BTreeMap<&str, String> = BTreeMap::new();
        attrs.insert(NAME_ATTR, request.name.clone());
        attrs.insert(VERSION_ATTR, request.version.clone());
        attrs.insert(STATE_ATTR, ImageState::Built.to_string());
        attrs.insert(BAKED_AT_ATTR, chrono::Utc::now().to_rfc3339());
        attrs.insert(
            BASE_ATTR,
            request.base.clone().unwrap_or_else(|| source.value.clone()),
        );
        for (k, v) in &request.properties {
            attrs.insert(k.as_str(), v.clone());
        }
        for (k, v) in &attrs {
            self.folder.fields().set(client, &vm, k, v).await?;
        }
        let id = ImageId::new(vm.value.clone()).map_err(|e| {
            PortError::new(&op, ErrorKind::BadResponse(format!("template id: {e}")))
        })?;
        self.get(&id).await
    }

    async fn set_properties(
        &self,
        id: &ImageId,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), PortError> {
        let op = format!("vsphere set properties of {id}");
        let vm = MoRef::new("VirtualMachine", id.as_str());
        let o = self
            .folder
            .read_one(&vm, PATHS)
            .await?
            .filter(|o| o.flag("config.template") == Some(true))
            .ok_or_else(|| PortError::not_found(&op, format!("template {id}")))?;
        for (k, v) in properties {
            self.folder.fields().set(self.client(), &vm, k, v).await?;
        }
        // The annotation keeps the history (lifecycle moves, evidence) in
        // the vSphere Client, where the attributes show the latest only.
        let changes: Vec<String> = properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let annotation = history(
            o.text("config.annotation").unwrap_or_default(),
            &format!(
                "{}: {}",
                chrono::Utc::now().to_rfc3339(),
                changes.join(", ")
            ),
        );
        let call = SoapCall::new(
            "ReconfigVM_Task",
            &vm,
            format!("<spec>{}</spec>", el("annotation", &annotation)),
        );
        tasks::run(self.client(), &call).await.map(|_| ())
    }

    async fn delete(&self, id: &ImageId) -> Result<(), PortError> {
        let op = format!("vsphere delete image {id}");
        let image = match self.get(id).await {
            Ok(i) => i,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        if !image.properties.contains_key(NAME_ATTR) {
            return Err(PortError::new(
                op,
                ErrorKind::Invalid(format!(
                    "template {id} ({}) was not baked by Phoenix",
                    image.name
                )),
            ));
        }
        let vm = MoRef::new("VirtualMachine", id.as_str());
        match tasks::run(self.client(), &SoapCall::new("Destroy_Task", &vm, "")).await {
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
    fn the_annotation_keeps_a_bounded_history() {
        let mut a = "Phoenix image web version 1".to_owned();
        for i in 0..500 {
            a = history(&a, &format!("t{i}: phoenix-image-state=tested"));
        }
        assert!(a.len() <= ANNOTATION_MAX);
        assert!(a.starts_with("Phoenix image web version 1\n"));
        assert!(a.ends_with("t499: phoenix-image-state=tested"));
    }

    #[test]
    fn template_names_are_clean() {
        assert_eq!(template_name("web", "2026.12/1"), "web-2026.12-1");
        assert_eq!(template_name(&"a".repeat(100), "1").len(), 80);
    }
}
