//! What HAProxy measured of the traffic it sent to Phoenix's servers (a
//! canary gate's evidence), and their weights: `show stat` per-server
//! counters, `set server … weight N%`.

use std::time::Duration;

use phoenix_core::id::ServerId;
use phoenix_core::ports::TrafficStats;

use super::client::{cmd, Expect};
use super::names::member_name;
use super::parse::ServerStats;
use super::{HaproxyBalancer, HaproxyError};

/// One server's row as a canary gate reads it: HTTP responses in HTTP
/// mode (else sessions), failed ones being 5xx answers, failed responses
/// and failed connects; `rtime` as the mean latency.
pub(crate) fn traffic_of(row: &ServerStats) -> TrafficStats {
    let answered = if row.http_responses > 0 {
        row.http_responses
    } else {
        row.sessions_total
    };
    TrafficStats {
        requests: answered + row.connect_errors,
        errors: row.http_5xx + row.response_errors + row.connect_errors,
        mean_latency: row.response_time_ms.map(Duration::from_millis),
        p99_latency: None,
    }
}

impl HaproxyBalancer {
    /// The traffic counters of `servers` (those HAProxy holds), summed.
    ///
    /// # Errors
    ///
    /// As [`RuntimeApi::server_stats`](super::RuntimeApi::server_stats).
    pub async fn traffic(&self, servers: &[ServerId]) -> Result<TrafficStats, HaproxyError> {
        let rows = self.api.server_stats(self.backend()).await?;
        let names: Vec<String> = servers.iter().map(member_name).collect();
        let parts: Vec<TrafficStats> = rows
            .iter()
            .filter(|r| names.contains(&r.name))
            .map(traffic_of)
            .collect();
        Ok(TrafficStats::combine(&parts))
    }

    /// `set server <backend>/<name> weight <percent>%`: a share of each
    /// server's configured weight (100 restores it).
    ///
    /// # Errors
    ///
    /// The first command HAProxy refused.
    pub async fn weigh(&self, servers: &[ServerId], percent: u8) -> Result<(), HaproxyError> {
        let be = self.backend();
        let commands: Vec<(String, Expect)> = servers
            .iter()
            .map(|s| {
                (
                    cmd::set_weight_percent(be, &member_name(s), percent),
                    Expect::Empty,
                )
            })
            .collect();
        for result in self.api.run_checked(&commands).await? {
            result?;
        }
        Ok(())
    }
}
