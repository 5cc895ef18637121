//! Counts of the API calls an adapter makes, by a key that names the
//! service and the call, for figures such as "describe calls per polling
//! round". Shared by the HTTP back ends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Counts of API calls by service, method and path template, such as
/// `compute GET /servers/detail` or `ec2 DescribeInstances`. Every HTTP
/// request is counted, retries and authentication included.
#[derive(Debug, Clone, Default)]
pub struct ApiStats {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl ApiStats {
    pub(crate) fn record(&self, key: String) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry(key).or_default() += 1;
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The count of one key (`compute GET /servers/detail`).
    pub fn count(&self, key: &str) -> u64 {
        self.snapshot().get(key).copied().unwrap_or(0)
    }

    /// Every call so far.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Starts counting from zero.
    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
