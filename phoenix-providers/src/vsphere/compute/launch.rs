//! Launching one slot: prepare the boot payload, clone (or adopt the
//! clone of an earlier attempt), write the guestinfo, the custom
//! attributes, power on.

use std::collections::HashMap;

use phoenix_core::id::ServerId;
use phoenix_core::labels::keys;
use phoenix_core::model::{Server, ServerStatus};
use phoenix_core::ports::{BootPayload, ErrorKind, LaunchRequest, PortError};
use secrecy::ExposeSecret;

use super::{CloneMode, VsphereCompute};
use crate::vsphere::client::SoapCall;
use crate::vsphere::fault;
use crate::vsphere::inventory;
use crate::vsphere::network;
use crate::vsphere::tasks;
use crate::vsphere::vm::{self, VmSummary};
use crate::vsphere::xml::{el, MoRef};

/// The labels of a launch, guestinfo payload validated.
pub(super) struct Prepared<'a> {
    request: &'a LaunchRequest,
    name: String,
    guestinfo: Vec<(&'a str, &'a str)>,
}

impl VsphereCompute {
    pub(super) fn prepare<'a>(&self, r: &'a LaunchRequest) -> Result<Prepared<'a>, PortError> {
        let name = vm::vm_name(r);
        let op = format!("vsphere launch {name}");
        let BootPayload::Guestinfo { properties } = &r.boot else {
            return Err(PortError::new(
                op,
                ErrorKind::Invalid(format!(
                    "vSphere takes guestinfo properties, not a {:?} payload",
                    r.boot.format()
                )),
            ));
        };
        let mut guestinfo = Vec::with_capacity(properties.len());
        for (k, v) in properties {
            if !k.starts_with("guestinfo.") || k.starts_with(vm::RESERVED_PREFIX) {
                return Err(PortError::new(
                    op,
                    ErrorKind::Invalid(format!(
                        "boot key {k:?}: only guestinfo.* keys outside guestinfo.phoenix.* are allowed"
                    )),
                ));
            }
            guestinfo.push((k.as_str(), v.expose_secret()));
        }
        Ok(Prepared {
            request: r,
            name,
            guestinfo,
        })
    }

    async fn launch_one(
        &self,
        p: &Prepared<'_>,
        existing: &HashMap<String, VmSummary>,
    ) -> Result<Server, PortError> {
        let client = self.client();
        let r = p.request;
        let op = format!("vsphere launch {}", p.name);
        // The launch time written in the clone's spec: the returned server
        // must not claim a later one (a launch time is never younger than
        // the truth).
        let mut cloned_at = None;
        let (vm, found) = match existing.get(&p.name) {
            Some(s) => (
                MoRef::new("VirtualMachine", s.server.id.as_str()),
                Some(s.clone()),
            ),
            None => match self.clone_vm(p).await {
                Ok((vm, at)) => {
                    cloned_at = Some(at);
                    (vm, None)
                }
                // Cloned meanwhile by another attempt of this launch (or a
                // namesake: its token is checked below).
                Err(e) if fault::fault_type(&e) == Some("DuplicateName") => {
                    let folder = self.folder.placement().await?.folder.clone();
                    let vm = inventory::find_child(client, &folder, &p.name)
                        .await?
                        .ok_or(e)?;
                    let s = self.summary_of(&vm, &op).await?;
                    (vm, s)
                }
                Err(e) => return Err(e),
            },
        };
        let found = found.as_ref();
        if let Some(s) = found {
            // Adopt only our own: the same token, never a namesake.
            if s.server.labels.get(keys::TOKEN) != Some(r.token.as_str()) {
                return Err(PortError::new(
                    op,
                    ErrorKind::Conflict(format!(
                        "VM {} ({}) exists with another token",
                        p.name, s.server.id
                    )),
                ));
            }
        }
        let powered_on = found.is_some_and(|s| s.power_state == "poweredOn");
        if !powered_on {
            self.reconfigure(&vm, p).await?;
        }
        if self.custom_attributes {
            for (k, v) in r.labels.iter() {
                if found.is_some_and(|s| s.server.labels.get(k) == Some(v)) && powered_on {
                    continue;
                }
                self.folder.fields().set(client, &vm, k, v).await?;
            }
        }
        if !powered_on {
            let call = SoapCall::new("PowerOnVM_Task", &vm, "");
            match tasks::run(client, &call).await {
                Ok(_) => {}
                // Already on: the end we want.
                Err(e) if fault::fault_type(&e) == Some("InvalidPowerState") => {}
                Err(e) => return Err(e),
            }
        }
        let id = ServerId::new(vm.value.clone()).map_err(|e| {
            PortError::new(
                &op,
                ErrorKind::BadResponse(format!("VM id {:?}: {e}", vm.value)),
            )
        })?;
        Ok(Server {
            id,
            name: p.name.clone(),
            addresses: found
                .map(|s| s.server.addresses.clone())
                .unwrap_or_default(),
            service_port: None,
            status: found
                .filter(|s| s.power_state == "poweredOn")
                .map_or(ServerStatus::Building, |s| s.server.status.clone()),
            launched_at: cloned_at.or_else(|| found.and_then(|s| s.server.launched_at)),
            image: Some(r.image.clone()),
            labels: r.labels.clone(),
        })
    }

    pub(super) async fn launch_prepared(
        &self,
        p: Result<Prepared<'_>, PortError>,
        existing: &HashMap<String, VmSummary>,
    ) -> Result<Server, PortError> {
        self.launch_one(&p?, existing).await
    }

    /// Clones the slot's VM; returns it and the launch time its spec
    /// recorded.
    async fn clone_vm(
        &self,
        p: &Prepared<'_>,
    ) -> Result<(MoRef, chrono::DateTime<chrono::Utc>), PortError> {
        let client = self.client();
        let r = p.request;
        let template = MoRef::new("VirtualMachine", r.image.as_str());
        let placement = self.folder.placement().await?.clone();
        let pool = match placement.pool {
            Some(pool) => pool,
            None => self
                .folder
                .read_one(&template, &["resourcePool"])
                .await?
                .and_then(|o| o.moref("resourcePool"))
                .ok_or_else(|| {
                    PortError::new(
                        format!("vsphere launch {}", p.name),
                        ErrorKind::Invalid(format!(
                            "image {} is a template (no resource pool of its own): set GOVC_RESOURCE_POOL",
                            r.image
                        )),
                    )
                })?,
        };
        let snapshot = match self.mode {
            CloneMode::Full => None,
            CloneMode::Linked => Some(
                self.folder
                    .read_one(&template, &["snapshot.currentSnapshot"])
                    .await?
                    .and_then(|o| o.moref("snapshot.currentSnapshot"))
                    .ok_or_else(|| {
                        PortError::new(
                            format!("vsphere launch {}", p.name),
                            ErrorKind::Invalid(format!(
                                "a linked clone needs a snapshot on template {}",
                                r.image
                            )),
                        )
                    })?,
            ),
        };
        let launched_at = chrono::Utc::now();
        let mut extra: Vec<(String, String)> = r
            .labels
            .iter()
            .map(|(k, v)| (vm::label_key(k), v.to_owned()))
            .collect();
        extra.push((vm::LAUNCHED_AT.to_owned(), launched_at.to_rfc3339()));
        extra.push((vm::IMAGE.to_owned(), r.image.as_str().to_owned()));
        let mut location = String::new();
        if let Some(ds) = &placement.datastore {
            location.push_str(&ds.to_xml("datastore"));
        }
        if snapshot.is_some() {
            // vcsim (0.24) copies the disks whatever diskMoveType says.
            location.push_str("<diskMoveType>createNewChildDiskBacking</diskMoveType>");
        }
        location.push_str(&pool.to_xml("pool"));
        if let Some(nic) = self.nic_change(&template).await? {
            location.push_str(&nic);
        }
        let args = format!(
            "{}{}<spec><location>{location}</location><template>false</template>\
             <config>{}</config><powerOn>false</powerOn>{}</spec>",
            placement.folder.to_xml("folder"),
            el("name", &p.name),
            vm::extra_config(extra.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            snapshot.map(|s| s.to_xml("snapshot")).unwrap_or_default(),
        );
        let call = SoapCall::new("CloneVM_Task", &template, args).not_idempotent();
        let result = tasks::run(client, &call).await?;
        let vm = result
            .as_ref()
            .and_then(MoRef::from_element)
            .ok_or_else(|| {
                PortError::new(
                    call.operation(),
                    ErrorKind::BadResponse("the clone task named no VM".into()),
                )
            })?;
        Ok((vm, launched_at))
    }

    /// The device change connecting the template's first card to the
    /// configured network, if one is configured.
    async fn nic_change(&self, template: &MoRef) -> Result<Option<String>, PortError> {
        let client = self.client();
        let Some(name) = client.config().network() else {
            return Ok(None);
        };
        let backing = self
            .network
            .get_or_try_init(|| async {
                let dc = self.folder.placement().await?.datacenter_path.clone();
                network::resolve(client, &self.folder, &dc, name)
                    .await
                    .map(Some)
            })
            .await?;
        let Some(backing) = backing else {
            return Ok(None);
        };
        let mut nics = self.nics.lock().await;
        if let Some(edit) = nics.get(&template.value) {
            return Ok(Some(edit.clone()));
        }
        let devices = self
            .folder
            .read_one(template, &["config.hardware.device"])
            .await?;
        let edit = devices
            .as_ref()
            .and_then(|d| d.props.get("config.hardware.device"))
            .and_then(|d| network::nic_edit(d, backing))
            .ok_or_else(|| {
                PortError::new(
                    format!("vsphere launch from {}", template.value),
                    ErrorKind::Invalid(format!(
                        "template {} has no network card to connect to {name}",
                        template.value
                    )),
                )
            })?;
        nics.insert(template.value.clone(), edit.clone());
        Ok(Some(edit))
    }

    async fn reconfigure(&self, vm: &MoRef, p: &Prepared<'_>) -> Result<(), PortError> {
        let mut pairs = p.guestinfo.clone();
        let fake_ip;
        if self.vcsim_guest_ips {
            fake_ip = fake_address(&p.name);
            pairs.push(("SET.guest.ipAddress", fake_ip.as_str()));
        }
        let r = p.request;
        let annotation = format!(
            "Phoenix: pool {} slot {} (release {}). Replaced, never patched.",
            r.labels.get(keys::POOL).unwrap_or("?"),
            r.labels.get(keys::SLOT).unwrap_or("?"),
            r.labels.get(keys::RELEASE).unwrap_or("?"),
        );
        // vcsim (0.24) appends these on every reconfigure instead of
        // replacing them; readers take the last value. vCenter replaces.
        // The annotation is set here, not in the clone's spec, which
        // vcsim's clone ignores (vCenter honours it).
        let args = format!(
            "<spec>{}{}</spec>",
            el("annotation", &annotation),
            vm::extra_config(pairs)
        );
        let call = SoapCall::new("ReconfigVM_Task", vm, args);
        tasks::run(self.client(), &call).await.map(|_| ())
    }
}

/// A stand-in guest address for vcsim, stable per VM name.
fn fake_address(name: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(name.as_bytes());
    format!("10.{}.{}.{}", d[0], d[1], d[2].max(1))
}
