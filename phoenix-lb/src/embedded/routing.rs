//! Which member a new connection goes to.
//!
//! Least connections, ties broken round-robin: the proxy balances
//! connections, not requests, and connections here live from one request
//! (fresh) to many (keep-alive) or for seconds (a slow request), so the
//! count of open connections tracks load better than taking turns does.
//! It also fills a freshly attached pool at once (its members start at
//! zero) and steers around a slow member. It costs one atomic load per
//! member per new connection.
//!
//! Eligible members, best first:
//! 1. active and healthy;
//! 2. active and not yet checked (`Unknown`): a pool just swapped in is
//!    served before its first checks complete rather than refusing
//!    traffic;
//! 3. never draining or unhealthy ones.
//!
//! Within a tier, members whose last connect failed or that last closed a
//! connection holding an unanswered request (and that have not passed a
//! check or taken a connection since) go last. A member that just died
//! has no open connections left, the fewest of all: without this, least
//! connections would send it every new connection until its checks mark
//! it down, rather than at most one.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use phoenix_core::ports::MemberHealth;

use super::members::{MemberEntry, MemberSet};

/// How good a candidate is; lower is better: health tier, failed lately,
/// open connections.
type Rank = (u8, bool, u64);

/// The best eligible member of `set` not in `exclude`; `start` rotates the
/// tie-break.
pub(crate) fn pick(
    set: &MemberSet,
    exclude: &[Arc<MemberEntry>],
    start: usize,
) -> Option<Arc<MemberEntry>> {
    let n = set.slots.len();
    let mut best: Option<(Rank, &Arc<MemberEntry>)> = None;
    for i in 0..n {
        let slot = &set.slots[(start.wrapping_add(i)) % n];
        if !slot.is_active() {
            continue;
        }
        let entry = &slot.entry;
        if exclude.iter().any(|e| Arc::ptr_eq(e, entry)) {
            continue;
        }
        let tier = match entry.health() {
            MemberHealth::Healthy => 0,
            MemberHealth::Unknown => 1,
            MemberHealth::Unhealthy => continue,
        };
        let key = (
            tier,
            entry.recent_failures.load(Ordering::Relaxed) > 0,
            entry.active.load(Ordering::Relaxed),
        );
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, entry));
        }
    }
    best.map(|(_, e)| e.clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::SocketAddr;
    use std::time::Duration;

    use phoenix_core::id::ServerId;
    use phoenix_core::ports::Target;
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn set_of(names: &[&str]) -> MemberSet {
        let targets: Vec<Target> = names
            .iter()
            .zip(1u16..)
            .map(|(n, port)| Target {
                server: n.parse().unwrap(),
                endpoint: SocketAddr::from(([127, 0, 0, 1], port)),
            })
            .collect();
        MemberSet::default()
            .change(
                &targets,
                crate::embedded::members::Join::Active,
                &[],
                crate::embedded::members::Leave::Detach,
                Duration::ZERO,
                Instant::now(),
                &CancellationToken::new(),
            )
            .unwrap()
            .set
    }

    fn entry<'a>(set: &'a MemberSet, name: &str) -> &'a Arc<MemberEntry> {
        let id: ServerId = name.parse().unwrap();
        &set.get(&id).unwrap().entry
    }

    fn name(e: Option<Arc<MemberEntry>>) -> String {
        e.map_or_else(|| "-".to_owned(), |e| e.server.to_string())
    }

    #[test]
    fn healthy_first_then_unknown_never_unhealthy() {
        let set = set_of(&["a", "b", "c"]);
        entry(&set, "a").set_health(MemberHealth::Unhealthy);
        assert_ne!(name(pick(&set, &[], 0)), "a", "unknown beats unhealthy");
        entry(&set, "c").set_health(MemberHealth::Healthy);
        for start in 0..6 {
            assert_eq!(name(pick(&set, &[], start)), "c");
        }
        entry(&set, "b").set_health(MemberHealth::Unhealthy);
        entry(&set, "c").set_health(MemberHealth::Unhealthy);
        assert_eq!(name(pick(&set, &[], 0)), "-");
    }

    #[test]
    fn least_connections_with_rotating_ties() {
        let set = set_of(&["a", "b", "c"]);
        for n in ["a", "b", "c"] {
            entry(&set, n).set_health(MemberHealth::Healthy);
        }
        let firsts: Vec<String> = (0..3).map(|s| name(pick(&set, &[], s))).collect();
        assert_eq!(firsts, ["a", "b", "c"], "ties rotate");
        entry(&set, "a").active.store(2, Ordering::Relaxed);
        entry(&set, "b").active.store(1, Ordering::Relaxed);
        entry(&set, "c").active.store(3, Ordering::Relaxed);
        assert_eq!(name(pick(&set, &[], 0)), "b");
        let b = entry(&set, "b").clone();
        assert_eq!(
            name(pick(&set, &[b], 0)),
            "a",
            "excluded members are skipped"
        );
    }

    #[test]
    fn recently_failed_members_go_last_and_draining_ones_never() {
        let set = set_of(&["a", "b"]);
        entry(&set, "a").set_health(MemberHealth::Healthy);
        entry(&set, "b").set_health(MemberHealth::Healthy);
        entry(&set, "b").active.store(5, Ordering::Relaxed);
        entry(&set, "a").recent_failures.store(1, Ordering::Relaxed);
        assert_eq!(name(pick(&set, &[], 0)), "b");
        let b: ServerId = "b".parse().unwrap();
        let drained = set
            .change(
                &[],
                crate::embedded::members::Join::Active,
                &[b],
                crate::embedded::members::Leave::Detach,
                Duration::from_secs(1),
                Instant::now(),
                &CancellationToken::new(),
            )
            .unwrap()
            .set;
        assert_eq!(name(pick(&drained, &[], 0)), "a");
    }
}
