//! Draining: a detached member takes no new connections and leaves the set
//! once its open connections reach zero, or at its deadline, when the
//! balancer closes what remains. A standby member drains the same way but
//! stays in the set.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::members::MemberEntry;
use super::Shared;

/// Waits for `entry` to go idle or for `deadline`, then removes it, unless
/// `cancel` fires first (re-attached, detached again with an earlier
/// deadline, or shutdown).
pub(crate) async fn run(
    shared: Arc<Shared>,
    entry: Arc<MemberEntry>,
    cancel: CancellationToken,
    deadline: Instant,
) {
    loop {
        // Register for the wake-up before looking at the count, so that a
        // connection closing in between is not missed.
        let idle = entry.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        if entry.active.load(Ordering::SeqCst) == 0 {
            shared.remove_drained(&entry, &cancel, false);
            return;
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = &mut idle => {}
            () = tokio::time::sleep_until(deadline) => {
                shared.remove_drained(&entry, &cancel, true);
                return;
            }
        }
    }
}

/// Waits for standby `entry` to go idle or for `deadline`, then closes what
/// is still open (it stays in the set, under its checks), unless `cancel`
/// fires first (re-attached, detached, shutdown).
pub(crate) async fn close_standby(
    shared: Arc<Shared>,
    entry: Arc<MemberEntry>,
    cancel: CancellationToken,
    deadline: Instant,
) {
    loop {
        let idle = entry.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        if entry.active.load(Ordering::SeqCst) == 0 {
            return;
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = &mut idle => {}
            () = tokio::time::sleep_until(deadline) => {
                shared.cut_standby(&entry, &cancel);
                return;
            }
        }
    }
}
