//! Typed records kept in the [`StateStore`]: a deployment's header, its
//! pools, releases, operation journals and images, and the key layout.
//!
//! Every commit that touches a deployment also bumps its `generation`, so
//! a plan can record the generation it was made against and `apply` can
//! refuse it if anything changed since.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::id::{DeploymentId, ImageId, OperationId, PoolId, ReleaseLabel, RoleName};
use crate::model::{Deployment, Image, Pool, PoolState, Release};
use crate::ports::{Commit, EventAppend, Expect, StateStore, StoreError, Write};
use crate::time::Timestamp;

/// Key layout.
pub mod key {
    use super::*;

    /// A deployment's header.
    pub fn deployment(d: &DeploymentId) -> String {
        format!("deployments/{d}")
    }
    /// Prefix of a deployment's pools.
    pub fn pools_prefix(d: &DeploymentId) -> String {
        format!("deployments/{d}/pools/")
    }
    /// One pool.
    pub fn pool(d: &DeploymentId, p: &PoolId) -> String {
        format!("deployments/{d}/pools/{p}")
    }
    /// One release.
    pub fn release(d: &DeploymentId, r: &ReleaseLabel) -> String {
        format!("deployments/{d}/releases/{r}")
    }
    /// Prefix of a deployment's releases.
    pub fn releases_prefix(d: &DeploymentId) -> String {
        format!("deployments/{d}/releases/")
    }
    /// One operation's journal.
    pub fn operation(d: &DeploymentId, o: &OperationId) -> String {
        format!("deployments/{d}/operations/{o}")
    }
    /// One operation's plan (written once).
    pub fn operation_plan(d: &DeploymentId, o: &OperationId) -> String {
        format!("deployments/{d}/operations/{o}/plan")
    }
    /// Prefix of a deployment's operation journals.
    pub fn operations_prefix(d: &DeploymentId) -> String {
        format!("deployments/{d}/operations/")
    }
    /// A deployment's pending pre-emption request.
    pub fn preempt(d: &DeploymentId) -> String {
        format!("deployments/{d}/preempt")
    }
    /// Prefix of the image records.
    pub const IMAGES_PREFIX: &str = "images/";
    /// One image.
    pub fn image(i: &ImageId) -> String {
        format!("{IMAGES_PREFIX}{i}")
    }
    /// A deployment's event stream.
    pub fn events(d: &DeploymentId) -> String {
        format!("deployments/{d}")
    }
    /// A deployment's lease (one writer).
    pub fn lease(d: &DeploymentId) -> String {
        format!("deployments/{d}")
    }
}

/// A deployment's header record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// The deployment.
    pub deployment: Deployment,
    /// Bumped by every commit touching this deployment.
    pub generation: u64,
    /// The unfinished operation, if any: it must be resumed before
    /// anything else runs.
    pub active_operation: Option<OperationId>,
    /// Every pool ever created, oldest first.
    pub pools: Vec<PoolId>,
    /// Every operation, oldest first.
    pub operations: Vec<OperationId>,
    /// Sequence for pool ids.
    pub next_pool_seq: u64,
    /// Recent server replacements, for the refresh rate budget (records
    /// written before charges were keyed by step; kept until they age out).
    pub replacements: Vec<Timestamp>,
    /// Charges against the refresh's replacement-rate budget.
    #[serde(default)]
    pub budget: Vec<BudgetCharge>,
}

/// Replacements charged against the budget by one step of one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetCharge {
    /// When.
    pub at: Timestamp,
    /// The operation.
    pub operation: OperationId,
    /// Its step (0-based).
    pub step: usize,
    /// How many replacements.
    pub count: usize,
}

impl DeploymentRecord {
    /// A fresh header.
    pub fn new(deployment: Deployment) -> Self {
        Self {
            deployment,
            generation: 1,
            active_operation: None,
            pools: Vec::new(),
            operations: Vec::new(),
            next_pool_seq: 1,
            replacements: Vec::new(),
            budget: Vec::new(),
        }
    }
}

/// Errors of the typed record layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record did not decode.
    #[error("record {key} does not decode as {what}")]
    Decode {
        /// Key.
        key: String,
        /// Expected type.
        what: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A record did not encode.
    #[error("record {key} does not encode")]
    Encode {
        /// Key.
        key: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The deployment is not registered.
    #[error("deployment {0} is not registered")]
    UnknownDeployment(DeploymentId),
    /// The deployment exists with a different definition.
    #[error("deployment {0} is already registered with a different definition")]
    DeploymentExists(DeploymentId),
    /// A release label was reused for different content.
    #[error("release {label} of {deployment} already exists with different content; releases are immutable")]
    ReleaseConflict {
        /// Deployment.
        deployment: DeploymentId,
        /// Label.
        label: ReleaseLabel,
    },
}

/// Decodes a JSON record.
pub fn decode<T: DeserializeOwned>(
    key: &str,
    what: &'static str,
    bytes: &[u8],
) -> Result<T, RecordError> {
    serde_json::from_slice(bytes).map_err(|source| RecordError::Decode {
        key: key.to_owned(),
        what,
        source,
    })
}

/// Encodes a JSON record into a buffer of exactly its size.
///
/// The record is measured first and then written: a pool of ten thousand
/// slots is megabytes, and a buffer grown by doubling would hold up to
/// twice that, copy it as it grows, and keep the spare capacity for as
/// long as the store keeps the record.
pub fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, RecordError> {
    let fail = |source| RecordError::Encode {
        key: key.to_owned(),
        source,
    };
    let mut size = ByteCount(0);
    serde_json::to_writer(&mut size, value).map_err(fail)?;
    let mut out = Vec::with_capacity(size.0);
    serde_json::to_writer(&mut out, value).map_err(fail)?;
    Ok(out)
}

/// A writer that only counts what it is given.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A record with the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    /// The record.
    pub value: T,
    /// Its version.
    pub version: u64,
}

/// Everything recorded about one deployment, read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The header.
    pub record: Stored<DeploymentRecord>,
    /// Pools by id.
    pub pools: BTreeMap<PoolId, Stored<Pool>>,
    /// Releases by label.
    pub releases: BTreeMap<ReleaseLabel, Release>,
}

impl Snapshot {
    /// Releases in the order they were recorded (oldest first).
    pub fn releases_in_order(&self) -> Vec<&Release> {
        let mut all: Vec<&Release> = self.releases.values().collect();
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.label.cmp(&b.label)));
        all
    }
}

impl Snapshot {
    /// The deployment.
    pub fn deployment(&self) -> &Deployment {
        &self.record.value.deployment
    }

    /// The generation this snapshot was read at.
    pub fn generation(&self) -> u64 {
        self.record.value.generation
    }

    /// A pool.
    pub fn pool(&self, id: &PoolId) -> Option<&Pool> {
        self.pools.get(id).map(|s| &s.value)
    }

    /// Pools of a role, oldest first (creation order).
    pub fn pools_of<'a>(&'a self, role: &'a RoleName) -> impl Iterator<Item = &'a Pool> + 'a {
        self.record
            .value
            .pools
            .iter()
            .filter_map(|id| self.pool(id))
            .filter(move |p| &p.role == role)
    }

    /// The live pools of a role (normally one; two during a rolling
    /// replacement).
    pub fn live_pools<'a>(&'a self, role: &'a RoleName) -> impl Iterator<Item = &'a Pool> + 'a {
        self.pools_of(role).filter(|p| p.state == PoolState::Live)
    }

    /// The most recently created live pool of a role.
    pub fn live_pool<'a>(&'a self, role: &'a RoleName) -> Option<&'a Pool> {
        self.live_pools(role).last()
    }

    /// The pool that owns this server, with the slot index: a server held
    /// by one of its slots, or one it gave up on and has not terminated
    /// yet. A server recorded as terminated that still exists is owned by
    /// nobody: it is an orphan (reconcile reports it and removes it on
    /// request), never "owned" forever.
    pub fn owner_of(&self, server: &crate::id::ServerId) -> Option<(&Pool, Option<u32>)> {
        self.pools.values().find_map(|p| {
            let p = &p.value;
            if let Some(slot) = p.slot_of(server) {
                if slot.state.is_in_service() {
                    return Some((p, Some(slot.index)));
                }
            }
            p.discarded
                .iter()
                .any(|d| &d.server == server && !d.terminated)
                .then_some((p, None))
        })
    }

    /// The pool and slot a lost launch's token belongs to, for a server
    /// that appears late.
    pub fn lost_launch(&self, token: &str) -> Option<(&Pool, &crate::model::LostLaunch)> {
        self.pools.values().find_map(|p| {
            let p = &p.value;
            p.lost
                .iter()
                .find(|l| l.token.as_str() == token)
                .map(|l| (p, l))
        })
    }
}

/// Typed access to the records of the store.
#[derive(Clone)]
pub struct Records {
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").finish_non_exhaustive()
    }
}

impl Records {
    /// Wraps a store.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self { store }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// Reads one typed record.
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
        what: &'static str,
    ) -> Result<Option<Stored<T>>, RecordError> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(v) => Ok(Some(Stored {
                value: decode(key, what, &v.value)?,
                version: v.version,
            })),
        }
    }

    /// Registers a deployment, or confirms an identical registration.
    pub async fn register_deployment(
        &self,
        deployment: &Deployment,
    ) -> Result<Stored<DeploymentRecord>, RecordError> {
        let k = key::deployment(&deployment.id);
        if let Some(existing) = self.get::<DeploymentRecord>(&k, "deployment").await? {
            if &existing.value.deployment == deployment {
                return Ok(existing);
            }
            return Err(RecordError::DeploymentExists(deployment.id.clone()));
        }
        let record = DeploymentRecord::new(deployment.clone());
        let versions = self
            .store
            .commit(Commit {
                fence: None,
                writes: vec![Write {
                    key: k.clone(),
                    expect: Expect::Absent,
                    value: Some(encode(&k, &record)?),
                }],
                events: vec![],
            })
            .await?;
        Ok(Stored {
            value: record,
            version: versions.first().copied().unwrap_or(1),
        })
    }

    /// Reads everything recorded about a deployment.
    pub async fn snapshot(&self, deployment: &DeploymentId) -> Result<Snapshot, RecordError> {
        let k = key::deployment(deployment);
        let record = self
            .get::<DeploymentRecord>(&k, "deployment")
            .await?
            .ok_or_else(|| RecordError::UnknownDeployment(deployment.clone()))?;
        let mut pools = BTreeMap::new();
        for (k, v) in self.store.list(&key::pools_prefix(deployment)).await? {
            let pool: Pool = decode(&k, "pool", &v.value)?;
            pools.insert(
                pool.id.clone(),
                Stored {
                    value: pool,
                    version: v.version,
                },
            );
        }
        let mut releases = BTreeMap::new();
        for (k, v) in self.store.list(&key::releases_prefix(deployment)).await? {
            let release: Release = decode(&k, "release", &v.value)?;
            releases.insert(release.label.clone(), release);
        }
        Ok(Snapshot {
            record,
            pools,
            releases,
        })
    }

    /// Records a release. Recording the same content again succeeds;
    /// different content under an existing label is refused. Releases live
    /// beside the deployment header, not in it, so recording one never
    /// disturbs an operation in flight.
    pub async fn record_release(&self, release: &Release) -> Result<(), RecordError> {
        let rk = key::release(&release.deployment, &release.label);
        if let Some(existing) = self.get::<Release>(&rk, "release").await? {
            return if existing.value.same_content(release) {
                Ok(())
            } else {
                Err(RecordError::ReleaseConflict {
                    deployment: release.deployment.clone(),
                    label: release.label.clone(),
                })
            };
        }
        if self
            .store
            .get(&key::deployment(&release.deployment))
            .await?
            .is_none()
        {
            return Err(RecordError::UnknownDeployment(release.deployment.clone()));
        }
        let written = self
            .store
            .commit(Commit {
                fence: None,
                writes: vec![Write {
                    key: rk.clone(),
                    expect: Expect::Absent,
                    value: Some(encode(&rk, release)?),
                }],
                events: vec![],
            })
            .await;
        match written {
            Ok(_) => Ok(()),
            // Someone recorded the same label at the same moment: compare.
            Err(StoreError::Conflict { .. }) => match self.get::<Release>(&rk, "release").await? {
                Some(existing) if existing.value.same_content(release) => Ok(()),
                _ => Err(RecordError::ReleaseConflict {
                    deployment: release.deployment.clone(),
                    label: release.label.clone(),
                }),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Reads an image record.
    pub async fn image(&self, id: &ImageId) -> Result<Option<Stored<Image>>, RecordError> {
        self.get(&key::image(id), "image").await
    }

    /// Every image record, in id order.
    pub async fn images(&self) -> Result<Vec<Stored<Image>>, RecordError> {
        let mut out = Vec::new();
        for (k, v) in self.store.list(key::IMAGES_PREFIX).await? {
            let image: Image = decode(&k, "image", &v.value)?;
            out.push(Stored {
                value: image,
                version: v.version,
            });
        }
        out.sort_by(|a, b| a.value.id.cmp(&b.value.id));
        Ok(out)
    }

    /// Writes an image record with compare-and-swap.
    pub async fn put_image(&self, image: &Image, expect: Expect) -> Result<u64, RecordError> {
        let k = key::image(&image.id);
        let versions = self
            .store
            .commit(Commit {
                fence: None,
                writes: vec![Write {
                    key: k.clone(),
                    expect,
                    value: Some(encode(&k, image)?),
                }],
                events: vec![],
            })
            .await?;
        Ok(versions.first().copied().unwrap_or_default())
    }

    /// Appends events outside any operation (for example image lifecycle
    /// changes).
    pub async fn append_events(&self, events: Vec<EventAppend>) -> Result<(), RecordError> {
        self.store
            .commit(Commit {
                fence: None,
                writes: vec![],
                events,
            })
            .await?;
        Ok(())
    }
}
