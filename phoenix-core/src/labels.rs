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
///
/// Every server carries seven of them and a cloud answers with thousands of
/// servers at once, so they are packed: every key and value in one string,
/// in key order, with where each starts. That is two allocations of some
/// 250 bytes for Phoenix's labels, against fourteen strings and a tree node
/// of about a kilobyte for a map. It serialises as a JSON object.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels {
    /// Keys and values, one after the other, in key order.
    text: String,
    /// Where each label's key and value start in `text`; a value ends
    /// where the next key starts.
    starts: Vec<(usize, usize)>,
}

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
        let slot = slot.to_string();
        Self::from_sorted_unique(&mut [
            (keys::DEPLOYMENT, deployment.as_str()),
            (keys::ENVIRONMENT, environment.as_str()),
            (keys::ROLE, role.as_str()),
            (keys::RELEASE, release.as_str()),
            (keys::POOL, pool.as_str()),
            (keys::SLOT, slot.as_str()),
            (keys::TOKEN, token.as_str()),
        ])
    }

    /// Packs labels with distinct keys (sorting them first).
    fn from_sorted_unique(labels: &mut [(&str, &str)]) -> Self {
        labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let size = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut text = String::with_capacity(size);
        let mut starts = Vec::with_capacity(labels.len());
        for (k, v) in labels.iter() {
            let key = text.len();
            text.push_str(k);
            starts.push((key, text.len()));
            text.push_str(v);
        }
        Self { text, starts }
    }

    /// The `i`th label, in key order.
    fn entry(&self, i: usize) -> Option<(&str, &str)> {
        let &(key, value) = self.starts.get(i)?;
        let end = self.starts.get(i + 1).map_or(self.text.len(), |n| n.0);
        Some((self.text.get(key..value)?, self.text.get(value..end)?))
    }

    /// Sets a label, replacing any previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        let mut all: Vec<(&str, &str)> = self.iter().filter(|(k, _)| *k != key).collect();
        all.push((&key, &value));
        *self = Self::from_sorted_unique(&mut all);
    }

    /// The value of a label.
    pub fn get(&self, key: &str) -> Option<&str> {
        let i = self
            .starts
            .binary_search_by(|&(k, v)| self.text.get(k..v).unwrap_or_default().cmp(key))
            .ok()?;
        self.entry(i).map(|(_, v)| v)
    }

    /// Iterates in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..self.starts.len()).filter_map(|i| self.entry(i))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
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
            .all(|(k, v)| self.get(k).is_some_and(|own| own == v))
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A map decides which of repeated keys wins, as before.
        let map = BTreeMap::<String, String>::deserialize(deserializer)?;
        Ok(map.into_iter().collect())
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<T: IntoIterator<Item = (String, String)>>(iter: T) -> Self {
        // The last value of a repeated key wins, as in a map.
        let map: BTreeMap<String, String> = iter.into_iter().collect();
        let mut all: Vec<(&str, &str)> =
            map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::from_sorted_unique(&mut all)
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

    #[test]
    fn packed_labels_behave_as_a_sorted_map() {
        let mut labels = Labels::new();
        assert!(labels.is_empty() && labels.get("a").is_none());
        labels.insert("b", "2");
        labels.insert("a", "");
        labels.insert("c", "3");
        labels.insert("b", "two");
        let all: Vec<(&str, &str)> = labels.iter().collect();
        assert_eq!(all, vec![("a", ""), ("b", "two"), ("c", "3")]);
        assert_eq!(labels.get("a"), Some(""));
        assert_eq!(labels.get("b"), Some("two"));
        assert_eq!(labels.get("bb"), None);
        assert_eq!(labels.len(), 3);
        let json = serde_json::to_string(&labels).unwrap();
        assert_eq!(json, r#"{"a":"","b":"two","c":"3"}"#);
        let back: Labels = serde_json::from_str(&json).unwrap();
        assert_eq!(back, labels);
        assert_eq!(format!("{labels:?}"), r#"{"a": "", "b": "two", "c": "3"}"#);
        let collected: Labels = vec![
            ("c".to_owned(), "3".to_owned()),
            ("b".into(), "two".into()),
            ("a".into(), "".into()),
        ]
        .into_iter()
        .collect();
        assert_eq!(collected, labels, "equal however built");
    }

    #[test]
    fn server_labels_read_back() {
        let token = IdempotencyToken::new("tok").unwrap();
        let labels = Labels::for_server(
            &DeploymentId::new("shop").unwrap(),
            &EnvironmentName::new("prod").unwrap(),
            &RoleName::new("web").unwrap(),
            &ReleaseLabel::new("v1").unwrap(),
            &PoolId::new("web-v1-1").unwrap(),
            7,
            &token,
        );
        assert_eq!(labels.len(), 7);
        assert_eq!(labels.slot(), Some(7));
        assert_eq!(labels.token(), Some(token));
        assert_eq!(labels.pool().unwrap().as_str(), "web-v1-1");
        assert_eq!(labels.get(keys::DEPLOYMENT), Some("shop"));
    }
}
