//! Where VMs go: the datacenter, VM folder, resource pool and datastore
//! named in the configuration, resolved once to managed object references
//! through `SearchIndex.FindByInventoryPath` (paths as govc writes them:
//! absolute `/DC0/vm/phoenix`, or relative to the datacenter's folder of
//! that kind).

use phoenix_core::ports::{ErrorKind, PortError};
use tokio::sync::OnceCell;

use super::client::{SoapCall, VsphereClient};
use super::property_collector::{self, From, Query};
use super::xml::{el, MoRef};

/// The resolved placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The datacenter's inventory path (`/DC0`).
    pub datacenter_path: String,
    /// The VM folder clones and templates go to.
    pub folder: MoRef,
    /// The resource pool clones run in; `None`: the source VM's.
    pub pool: Option<MoRef>,
    /// The datastore for clones' disks; `None`: the source's.
    pub datastore: Option<MoRef>,
}

/// Resolves and caches the [`Placement`] of a client's configuration.
#[derive(Debug, Default)]
pub struct Inventory {
    placement: OnceCell<Placement>,
}

impl Inventory {
    /// The placement, resolved at the first call.
    pub async fn placement(&self, client: &VsphereClient) -> Result<&Placement, PortError> {
        self.placement.get_or_try_init(|| resolve(client)).await
    }
}

/// The object at an inventory path, if any.
pub async fn find_by_path(client: &VsphereClient, path: &str) -> Result<Option<MoRef>, PortError> {
    let si = client.content().await?.search_index.clone();
    let call = SoapCall::new("FindByInventoryPath", &si, el("inventoryPath", path));
    let answer = client.call(&call).await?;
    Ok(answer.child("returnval").and_then(MoRef::from_element))
}

/// The child of `folder` named `name`, if any.
pub async fn find_child(
    client: &VsphereClient,
    folder: &MoRef,
    name: &str,
) -> Result<Option<MoRef>, PortError> {
    let si = client.content().await?.search_index.clone();
    let args = format!("{}{}", folder.to_xml("entity"), el("name", name));
    let call = SoapCall::new("FindChild", &si, args);
    let answer = client.call(&call).await?;
    Ok(answer.child("returnval").and_then(MoRef::from_element))
}

fn not_found(what: &str, path: &str) -> PortError {
    PortError::new(
        "vsphere inventory",
        ErrorKind::Invalid(format!("{what} {path:?} does not exist")),
    )
}

fn under(dc: &str, kind: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{dc}/{kind}/{path}")
    }
}

async fn resolve(client: &VsphereClient) -> Result<Placement, PortError> {
    let cfg = client.config().clone();
    let dc = match cfg.datacenter() {
        Some(name) => {
            let path = if name.starts_with('/') {
                name.to_owned()
            } else {
                format!("/{name}")
            };
            find_by_path(client, &path)
                .await?
                .ok_or_else(|| not_found("datacenter", &path))?;
            path
        }
        None => only_datacenter(client).await?,
    };
    let folder_path = cfg
        .folder()
        .map_or_else(|| format!("{dc}/vm"), |f| under(&dc, "vm", f));
    let folder = find_by_path(client, &folder_path)
        .await?
        .ok_or_else(|| not_found("VM folder", &folder_path))?;
    let pool = match cfg.resource_pool() {
        Some(p) => {
            let path = under(&dc, "host", p);
            Some(
                find_by_path(client, &path)
                    .await?
                    .ok_or_else(|| not_found("resource pool", &path))?,
            )
        }
        None => None,
    };
    let datastore = match cfg.datastore() {
        Some(d) => {
            let path = under(&dc, "datastore", d);
            Some(
                find_by_path(client, &path)
                    .await?
                    .ok_or_else(|| not_found("datastore", &path))?,
            )
        }
        None => None,
    };
    Ok(Placement {
        datacenter_path: dc,
        folder,
        pool,
        datastore,
    })
}

/// The inventory path of the only datacenter; an error when there are
/// several (then `GOVC_DATACENTER` says which).
async fn only_datacenter(client: &VsphereClient) -> Result<String, PortError> {
    let root = client.content().await?.root_folder.clone();
    let view = property_collector::container_view(client, &root, "Datacenter").await?;
    let dcs = property_collector::retrieve(
        client,
        &Query {
            kind: "Datacenter",
            paths: &["name"],
            from: From::View(&view),
        },
    )
    .await?;
    let names: Vec<&str> = dcs.iter().filter_map(|d| d.text("name")).collect();
    match names.as_slice() {
        [one] => Ok(format!("/{one}")),
        [] => Err(PortError::new(
            "vsphere inventory",
            ErrorKind::Invalid("the inventory has no datacenter".into()),
        )),
        many => Err(PortError::new(
            "vsphere inventory",
            ErrorKind::Invalid(format!(
                "{} datacenters ({}): set GOVC_DATACENTER",
                many.len(),
                many.join(", ")
            )),
        )),
    }
}
