//! Reading every VM (or template) of Phoenix's folder in one call: a
//! container view over the folder, made once per session, read with one
//! `RetrievePropertiesEx` per polling round, whatever the number of VMs.

use std::sync::Arc;

use phoenix_core::ports::PortError;
use tokio::sync::Mutex;

use super::client::VsphereClient;
use super::custom_fields::CustomFields;
use super::inventory::{Inventory, Placement};
use super::property_collector::{self, From, ObjectContent, Query};
use super::xml::MoRef;

/// The folder Phoenix's VMs and templates live in, with its view.
#[derive(Debug, Clone)]
pub struct Folder {
    client: VsphereClient,
    inventory: Arc<Inventory>,
    fields: Arc<CustomFields>,
    /// The view and the session generation it was made in.
    view: Arc<Mutex<Option<(u64, MoRef)>>>,
}

/// What one read of the folder returned and cost.
#[derive(Debug, Clone, Default)]
pub struct FolderRead {
    /// Every VM and template, with the properties asked for.
    pub objects: Vec<ObjectContent>,
    /// `RetrievePropertiesEx` and `ContinueRetrievePropertiesEx` calls
    /// the read made (1 for any number of VMs on vcsim; one per page on
    /// vCenter).
    pub property_calls: u64,
}

impl Folder {
    /// The folder of `client`'s configuration.
    pub fn new(client: VsphereClient) -> Self {
        Self {
            client,
            inventory: Arc::default(),
            fields: Arc::default(),
            view: Arc::default(),
        }
    }

    /// The client.
    pub fn client(&self) -> &VsphereClient {
        &self.client
    }

    /// The custom attribute definitions.
    pub fn fields(&self) -> &CustomFields {
        &self.fields
    }

    /// Where clones go.
    pub async fn placement(&self) -> Result<&Placement, PortError> {
        self.inventory.placement(&self.client).await
    }

    async fn view(&self, stale: Option<&MoRef>) -> Result<MoRef, PortError> {
        let generation = self.client.session_generation().await?;
        let mut v = self.view.lock().await;
        if let Some((g, view)) = v.as_ref() {
            if *g == generation && Some(view) != stale {
                return Ok(view.clone());
            }
        }
        let folder = self.placement().await?.folder.clone();
        let view =
            property_collector::container_view(&self.client, &folder, "VirtualMachine").await?;
        // The generation may have moved while the view was made; record
        // the one it was made in, read again.
        let generation = self.client.session_generation().await?;
        *v = Some((generation, view.clone()));
        Ok(view)
    }

    /// Reads `paths` of every VM and template in the folder.
    pub async fn read(&self, paths: &[&str]) -> Result<FolderRead, PortError> {
        let view = self.view(None).await?;
        let q = |view| Query {
            kind: "VirtualMachine",
            paths,
            from: From::View(view),
        };
        let (objects, property_calls) =
            match property_collector::retrieve_counted(&self.client, &q(&view)).await {
                // vCenter dropped the view (a new session after a re-login,
                // or someone destroyed it): make another one, once.
                Err(e) if e.is_not_found() => {
                    let view = self.view(Some(&view)).await?;
                    let (objects, calls) =
                        property_collector::retrieve_counted(&self.client, &q(&view)).await?;
                    (objects, calls + 1)
                }
                other => other?,
            };
        Ok(FolderRead {
            objects,
            property_calls,
        })
    }

    /// Reads `paths` of one object; `None` when it does not exist.
    pub async fn read_one(
        &self,
        obj: &MoRef,
        paths: &[&str],
    ) -> Result<Option<ObjectContent>, PortError> {
        let got = property_collector::retrieve(
            &self.client,
            &Query {
                kind: &obj.kind,
                paths,
                from: From::Object(obj),
            },
        )
        .await;
        match got {
            Ok(objects) => Ok(objects.into_iter().next()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}
