//! Pre-emption: an emergency rollback asks whatever operation runs on the
//! deployment to stop at its next safe point (between steps, or in any
//! wait: a poll, a bake, the replacement budget), instead of waiting up
//! to an hour for a throttled refresh to finish. The request is a record
//! beside the deployment; it lapses by itself if its author dies.

use serde::{Deserialize, Serialize};

use crate::id::DeploymentId;
use crate::ports::{Commit, Expect, StateStore, Write};
use crate::records::{decode, encode, key, RecordError};
use crate::time::Timestamp;

/// A request that the running operation stop for an emergency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreemptRequest {
    /// Who asks (the emergency's lease holder).
    pub by: String,
    /// Why.
    pub reason: String,
    /// When it was asked.
    pub at: Timestamp,
    /// When it lapses if nobody acts on it.
    pub until: Timestamp,
}

impl PreemptRequest {
    /// True while it is to be honoured.
    pub fn in_force(&self, now: Timestamp) -> bool {
        now < self.until
    }
}

/// The pending request of a deployment, if any.
pub(crate) async fn pending(
    store: &dyn StateStore,
    deployment: &DeploymentId,
) -> Result<Option<PreemptRequest>, RecordError> {
    let k = key::preempt(deployment);
    match store.get(&k).await? {
        None => Ok(None),
        Some(v) => decode(&k, "pre-emption request", &v.value).map(Some),
    }
}

/// Records a request (replacing an older one).
pub(crate) async fn request(
    store: &dyn StateStore,
    deployment: &DeploymentId,
    request: &PreemptRequest,
) -> Result<(), RecordError> {
    let k = key::preempt(deployment);
    store
        .commit(Commit {
            fence: None,
            writes: vec![Write {
                value: Some(encode(&k, request)?),
                key: k,
                expect: Expect::Any,
            }],
            events: vec![],
        })
        .await?;
    Ok(())
}

/// The write that withdraws a request (in the commit that starts the
/// emergency operation, or when it gives up).
pub(crate) fn withdraw(deployment: &DeploymentId) -> Write {
    Write {
        key: key::preempt(deployment),
        expect: Expect::Any,
        value: None,
    }
}
