//! The labels that tie a server to its deployment, environment, role,
//! release and pool, carried on the provider itself (tags, metadata, custom
//! attributes) so that the truth can be rebuilt from the cloud.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::{DeploymentId, EnvironmentName, IdempotencyToken, PoolId, ReleaseLabel, RoleName};

/// Well-known label keys. They use a `phoenix-` prefix and only characters
/// every provider accepts in tag and metadata keys.
pub mod keys {
    /// The deployment a server belongs to.
    pub const DEPLOYMENT: &str = "phoenix-deployment";
    /// The environment.
    pub const ENVIRONMENT: &str = "phoenix-environment";
    /// The role.
    pub const ROLE: &str = "phoenix-role";
    /// The release label.
    pub const RELEASE: &str = "phoenix-release";
    /// The pool.
    pub const POOL: &str = "phoenix-pool";
    /// The slot index within the pool.
    pub const SLOT: &str = "phoenix-slot";
    /// The launch idempotency token.
    pub const TOKEN: &str = "phoenix-token";
}

/// A sorted map of label keys to values. Sorted so that serialisation and
/// comparisons are deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Self::default()
    }

    /// The full set of Phoenix labels for one server slot.
    #[allow(clippy::too_many_arguments)]
    pub fn for_server(
        deployment: &DeploymentId,
        environment: &EnvironmentName,
        role: &RoleName,
        release: &ReleaseLabel,
        pool: &PoolId,
        slot: u32,
        token: &IdempotencyToken,
    ) -> Self {
        let mut labels = Self::new();
        labels.insert(keys::DEPLOYMENT, deployment.as_str());
        labels.insert(keys::ENVIRONMENT, environment.as_str());
        labels.insert(keys::ROLE, role.as_str());
        labels.insert(keys::RELEASE, release.as_str());
        labels.insert(keys::POOL, pool.as_str());
        labels.insert(keys::SLOT, slot.to_string());
        labels.insert(keys::TOKEN, token.as_str());
        labels
    }

    /// Sets a label, replacing any previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// The value of a label.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Iterates in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pool label, if present and valid.
    pub fn pool(&self) -> Option<PoolId> {
        self.get(keys::POOL).and_then(|v| PoolId::new(v).ok())
    }

    /// The release label, if present and valid.
    pub fn release(&self) -> Option<ReleaseLabel> {
        self.get(keys::RELEASE)
            .and_then(|v| ReleaseLabel::new(v).ok())
    }

    /// The slot index, if present and valid.
    pub fn slot(&self) -> Option<u32> {
        self.get(keys::SLOT).and_then(|v| v.parse().ok())
    }

    /// The idempotency token, if present and valid.
    pub fn token(&self) -> Option<IdempotencyToken> {
        self.get(keys::TOKEN)
            .and_then(|v| IdempotencyToken::new(v).ok())
    }

    /// True when every label of the selector is present with the same value.
    pub fn matches(&self, selector: &LabelSelector) -> bool {
        selector
            .0
            .iter()
            .all(|(k, v)| self.0.get(k).is_some_and(|own| own == v))
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<T: IntoIterator<Item = (String, String)>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Equality constraints on labels, as providers' list filters accept them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelector(BTreeMap<String, String>);

impl LabelSelector {
    /// Matches every labelled server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the constraint `key == value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Every server of a deployment.
    pub fn deployment(deployment: &DeploymentId) -> Self {
        Self::new().with(keys::DEPLOYMENT, deployment.as_str())
    }

    /// The constraints in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_matches_subset() {
        let dep = DeploymentId::new("shop").unwrap();
        let mut labels = Labels::new();
        labels.insert(keys::DEPLOYMENT, "shop");
        labels.insert(keys::ROLE, "web");
        assert!(labels.matches(&LabelSelector::deployment(&dep)));
        assert!(!labels.matches(&LabelSelector::deployment(&dep).with(keys::ROLE, "db")));
        assert_eq!(
            LabelSelector::deployment(&dep)
                .with(keys::ROLE, "web")
                .to_string(),
            "phoenix-deployment=shop,phoenix-role=web"
        );
    }
}
