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

/// Calls made by a `Compute::describe`: one per polling round of the
/// executor, and it should cost the same for one server as for a thousand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DescribeStats {
    /// `describe` calls (one per polling round of the executor).
    pub calls: u64,
    /// HTTP requests they made.
    pub requests: u64,
    /// The most HTTP requests one `describe` made.
    pub max_requests_per_call: u64,
    /// The most servers one `describe` asked about.
    pub max_ids_per_call: u64,
}

impl DescribeStats {
    /// Counts one `describe` of `ids` servers that took `requests` HTTP
    /// requests.
    pub fn record(&mut self, requests: u64, ids: usize) {
        self.calls += 1;
        self.requests += requests;
        self.max_requests_per_call = self.max_requests_per_call.max(requests);
        self.max_ids_per_call = self.max_ids_per_call.max(ids as u64);
    }
}
