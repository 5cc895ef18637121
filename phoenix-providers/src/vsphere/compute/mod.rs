//! `Compute` on vSphere VMs cloned from certified templates.
//!
//! - Launch: one `CloneVM_Task` per slot from the release's template into
//!   the configured folder and resource pool (a full clone, or a linked
//!   clone from the template's current snapshot), with Phoenix's labels,
//!   launch time and image in the clone's own `extraConfig`; then one
//!   `ReconfigVM_Task` with the boot payload's `guestinfo.*` (user data,
//!   its encoding and metadata, as cloud-init's VMware datasource reads
//!   them); then the labels as custom attributes; then `PowerOnVM_Task`.
//!   The guestinfo goes in before the first power-on because cloud-init
//!   reads it at first boot; the clone is asked not to power on
//!   (`powerOn` false), which also makes vcsim's ignoring that flag moot.
//!   No guest customisation spec is sent (vcsim ignores those too): the
//!   guest configures itself from the guestinfo, through cloud-init.
//! - Idempotency: a slot's VM name is derived from the deployment, pool,
//!   slot, attempt and token ([`vm_name`](super::vm::vm_name)), and the
//!   batch first reads the folder once: a VM of that name is adopted and
//!   brought to the same end (reconfigured and powered on if it is not),
//!   never cloned twice. vCenter refuses a second VM of one name in one
//!   folder (`DuplicateName`), which covers a clone racing another: the
//!   VM of that name is adopted if it carries the same token. vcsim
//!   (0.24) accepts the second clone (it renames its directory), so
//!   there the folder read is the only guard.
//! - Describe and list: one `RetrievePropertiesEx` over a container view
//!   of the folder per call, whatever the number of VMs
//!   ([`Folder`]).
//! - Stop and start power off and on (cold standby); terminate powers off
//!   first and destroys only a powered-off VM, and only one that carries
//!   Phoenix's token label: never a template or a VM Phoenix did not make.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use phoenix_core::id::ServerId;
use phoenix_core::labels::{keys, LabelSelector};
use phoenix_core::model::Server;
use phoenix_core::ports::{
    BootFormat, Compute, ComputeCapabilities, ErrorKind, LaunchRequest, PortError,
};

use super::client::{SoapCall, VsphereClient};
use super::custom_fields;
use super::fault;
use super::folder::Folder;
use super::network;
use super::tasks;
use super::vm::{self, ExtraConfigReads, VmSummary};
use super::xml::MoRef;
use crate::api_stats::DescribeStats;

mod launch;

use launch::Prepared;

/// How a launch copies the template's disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CloneMode {
    /// A full copy (independent of the template; slower on vCenter).
    #[default]
    Full,
    /// A linked clone: a child disk of the template's current snapshot
    /// (fast and small; the template must keep that snapshot).
    Linked,
}

/// `Compute` on vSphere VMs.
#[derive(Debug, Clone)]
pub struct VsphereCompute {
    folder: Folder,
    mode: CloneMode,
    custom_attributes: bool,
    concurrency: usize,
    launch_batch: usize,
    consistency_window: Duration,
    vcsim_guest_ips: bool,
    /// The property paths a polling round reads.
    paths: Vec<String>,
    describe_stats: Arc<Mutex<DescribeStats>>,
    /// Where `GOVC_NETWORK` is, resolved once.
    network: Arc<tokio::sync::OnceCell<Option<network::Backing>>>,
    /// Per template: the device change that connects its card there.
    nics: Arc<tokio::sync::Mutex<HashMap<String, String>>>,
}

/// Builds a [`VsphereCompute`].
#[derive(Debug, Clone)]
pub struct VsphereComputeBuilder {
    inner: VsphereCompute,
}

impl VsphereComputeBuilder {
    /// Full or linked clones (default full).
    pub fn clone_mode(mut self, mode: CloneMode) -> Self {
        self.inner.mode = mode;
        self
    }

    /// Whether labels are also written as custom attributes (default
    /// true; off where the role lacks `Global.SetCustomField` or on a bare
    /// ESXi: the guestinfo mirror carries them alone).
    pub fn custom_attributes(mut self, yes: bool) -> Self {
        self.inner.custom_attributes = yes;
        self
    }

    /// How many launches of a batch run at once (default 4: vCenter
    /// queues clones per host and datastore anyway).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.inner.concurrency = n.max(1);
        self
    }

    /// Most launches per call (default 20).
    pub fn launch_batch(mut self, n: usize) -> Self {
        self.inner.launch_batch = n.max(1);
        self
    }

    /// For vcsim only: gives each VM a guest address at launch through
    /// vcsim's `SET.guest.ipAddress` extraConfig alias, standing in for
    /// VMware Tools reporting the guest's address (vcsim's VMs have no
    /// guest). The addresses are fake (`10.x.y.z` from the VM name). On
    /// vCenter the key would be stored as an inert setting: never enable
    /// it there.
    pub fn vcsim_guest_ips(mut self, yes: bool) -> Self {
        self.inner.vcsim_guest_ips = yes;
        self
    }

    /// How polling rounds read Phoenix's guestinfo keys (default
    /// [`ExtraConfigReads::Indexed`]; vcsim needs
    /// [`ExtraConfigReads::Whole`]).
    pub fn extra_config_reads(mut self, reads: ExtraConfigReads) -> Self {
        self.inner.paths = vm::paths(reads);
        self
    }

    /// The adapter.
    pub fn build(self) -> VsphereCompute {
        self.inner
    }
}

impl VsphereCompute {
    /// Starts a builder over a shared client.
    pub fn builder(client: VsphereClient) -> VsphereComputeBuilder {
        VsphereComputeBuilder {
            inner: Self {
                folder: Folder::new(client),
                mode: CloneMode::Full,
                custom_attributes: true,
                concurrency: 4,
                launch_batch: 20,
                consistency_window: Duration::from_secs(2),
                vcsim_guest_ips: false,
                paths: vm::paths(ExtraConfigReads::default()),
                describe_stats: Arc::default(),
                network: Arc::default(),
                nics: Arc::default(),
            },
        }
    }

    /// The shared client (its counts and configuration).
    pub fn client(&self) -> &VsphereClient {
        self.folder.client()
    }

    /// Calls made by `describe` so far.
    pub fn describe_stats(&self) -> DescribeStats {
        *self
            .describe_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Starts counting `describe` calls from zero.
    pub fn reset_describe_stats(&self) {
        *self
            .describe_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = DescribeStats::default();
    }

    /// Every VM of the folder (templates excluded) with what one polling
    /// round knows of it: power state, tools status, boot time. One
    /// `RetrievePropertiesEx`.
    pub async fn summaries(&self) -> Result<Vec<VmSummary>, PortError> {
        Ok(self.poll().await?.0)
    }

    async fn poll(&self) -> Result<(Vec<VmSummary>, u64), PortError> {
        let paths: Vec<&str> = self.paths.iter().map(String::as_str).collect();
        let read = self.folder.read(&paths).await?;
        let names = if self.custom_attributes {
            self.folder.fields().names(self.client()).await?
        } else {
            BTreeMap::new()
        };
        let vms = read
            .objects
            .iter()
            .filter_map(|o| vm::summary(o, &custom_fields::values(o, &names)))
            .filter(|s| !s.template)
            .collect();
        Ok((vms, read.property_calls))
    }

    /// One VM as a polling round sees it; `None`: it does not exist.
    async fn summary_of(&self, vm: &MoRef, op: &str) -> Result<Option<VmSummary>, PortError> {
        let paths: Vec<&str> = self.paths.iter().map(String::as_str).collect();
        let Some(o) = self.folder.read_one(vm, &paths).await? else {
            return Ok(None);
        };
        let names = if self.custom_attributes {
            self.folder.fields().names(self.client()).await?
        } else {
            BTreeMap::new()
        };
        vm::summary(&o, &custom_fields::values(&o, &names))
            .map(Some)
            .ok_or_else(|| {
                PortError::new(
                    op,
                    ErrorKind::BadResponse(format!("VM {} is unreadable", vm.value)),
                )
            })
    }

    /// Reads a VM for a power or destroy call, refusing what Phoenix must
    /// not touch. `None`: it does not exist.
    async fn own_vm(&self, id: &ServerId, op: &str) -> Result<Option<VmSummary>, PortError> {
        let vm = MoRef::new("VirtualMachine", id.as_str());
        let Some(s) = self.summary_of(&vm, op).await? else {
            return Ok(None);
        };
        if s.template {
            return Err(PortError::new(
                op,
                ErrorKind::Invalid(format!("{id} is a template, not a server")),
            ));
        }
        if s.server.labels.get(keys::TOKEN).is_none() {
            return Err(PortError::new(
                op,
                ErrorKind::Invalid(format!(
                    "VM {id} ({}) carries no Phoenix token: Phoenix did not make it",
                    s.server.name
                )),
            ));
        }
        Ok(Some(s))
    }

    async fn power(&self, id: &ServerId, on: bool) -> Result<(), PortError> {
        let (method, want) = if on {
            ("PowerOnVM_Task", "poweredOn")
        } else {
            ("PowerOffVM_Task", "poweredOff")
        };
        let op = format!("vsphere {method} {id}");
        let s = self
            .own_vm(id, &op)
            .await?
            .ok_or_else(|| PortError::not_found(&op, format!("VM {id}")))?;
        if s.power_state == want {
            return Ok(());
        }
        let vm = MoRef::new("VirtualMachine", id.as_str());
        match tasks::run(self.client(), &SoapCall::new(method, &vm, "")).await {
            Ok(_) => Ok(()),
            // Reached that state meanwhile.
            Err(e) if fault::fault_type(&e) == Some("InvalidPowerState") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Compute for VsphereCompute {
    fn capabilities(&self) -> ComputeCapabilities {
        ComputeCapabilities {
            max_launch_batch: self.launch_batch,
            // One view read answers for every VM of the folder.
            max_describe_batch: 10_000,
            max_terminate_batch: 1,
            stop_start: true,
            // Names derived from the token make a repeated launch find
            // its VM.
            idempotent_launch: true,
            // A finished clone task means the VM is in the inventory;
            // the window covers a property collector answering from a
            // moment before.
            consistency_window: self.consistency_window,
            boot_format: BootFormat::VsphereGuestinfo,
        }
    }

    async fn launch(&self, requests: &[LaunchRequest]) -> Vec<Result<Server, PortError>> {
        let prepared: Vec<Result<Prepared<'_>, PortError>> =
            requests.iter().map(|r| self.prepare(r)).collect();
        // One read of the folder finds the batch's VMs that exist.
        let existing: HashMap<String, VmSummary> = match self.poll().await {
            Ok((vms, _)) => vms
                .into_iter()
                .map(|s| (s.server.name.clone(), s))
                .collect(),
            Err(e) => return requests.iter().map(|_| Err(e.for_another())).collect(),
        };
        let launches: Vec<_> = prepared
            .into_iter()
            .map(|p| self.launch_prepared(p, &existing))
            .collect();
        stream::iter(launches)
            .buffered(self.concurrency)
            .collect()
            .await
    }

    async fn describe(&self, ids: &[ServerId]) -> Result<Vec<Server>, PortError> {
        let (vms, calls) = self.poll().await?;
        self.describe_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(calls, ids.len());
        let wanted: std::collections::HashSet<&ServerId> = ids.iter().collect();
        Ok(vms
            .into_iter()
            .filter(|s| wanted.contains(&s.server.id))
            .map(|s| s.server)
            .collect())
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<Server>, PortError> {
        let (vms, _) = self.poll().await?;
        Ok(vms
            .into_iter()
            .filter(|s| s.server.labels.get(keys::TOKEN).is_some())
            .filter(|s| s.server.labels.matches(selector))
            .map(|s| s.server)
            .collect())
    }

    async fn stop(&self, id: &ServerId) -> Result<(), PortError> {
        self.power(id, false).await
    }

    async fn start(&self, id: &ServerId) -> Result<(), PortError> {
        self.power(id, true).await
    }

    async fn terminate(&self, id: &ServerId) -> Result<(), PortError> {
        let op = format!("vsphere terminate {id}");
        let Some(s) = self.own_vm(id, &op).await? else {
            return Ok(());
        };
        let vm = MoRef::new("VirtualMachine", id.as_str());
        let client = self.client();
        if s.power_state != "poweredOff" {
            match tasks::run(client, &SoapCall::new("PowerOffVM_Task", &vm, "")).await {
                Ok(_) => {}
                Err(e) if fault::fault_type(&e) == Some("InvalidPowerState") => {}
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        // Destroy only what is off: a VM someone powered on meanwhile
        // fails here with InvalidPowerState (a conflict), never forced.
        match tasks::run(client, &SoapCall::new("Destroy_Task", &vm, "")).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}
