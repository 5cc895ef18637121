use std::sync::Arc;

use async_trait::async_trait;
use phoenix_core::ports::{Commit, StateStore, StoreError};
use phoenix_core::store_layer::{CommitInterceptor, Intercepted};

/// Kills its own process with SIGKILL at a chosen commit, before or after
/// the write lands: how the fault tests kill a real orchestrator at every
/// journaled step. Armed by the environment variables
/// `PHOENIX_CRASH_AT_COMMIT=N` and `PHOENIX_CRASH_BEFORE_WRITE=1`.
///
/// It can also freeze the process instead: `PHOENIX_STOP_AT_COMMIT=N`
/// sends it SIGSTOP just before its N-th commit reaches the store (after
/// the executor last renewed its lease), the way a VM paused by its host
/// or a process stuck in a long GC stalls; SIGCONT lets it go on and write.
/// The lease tests use it to show that a holder that comes back after
/// another took over has its write fenced off.
#[derive(Debug, Clone, Copy, Default)]
pub struct KillSwitch {
    at: Option<u64>,
    before_write: bool,
    stop_at: Option<u64>,
}

/// The local stack's store: the kill switch over the configured store.
pub type KillSwitchStore = Intercepted<KillSwitch>;

impl KillSwitch {
    /// Wraps `store`, armed from the environment (disarmed without it).
    pub fn from_env(store: Arc<dyn StateStore>) -> KillSwitchStore {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
        let at = number("PHOENIX_CRASH_AT_COMMIT");
        let stop_at = number("PHOENIX_STOP_AT_COMMIT");
        let before_write = std::env::var("PHOENIX_CRASH_BEFORE_WRITE").is_ok_and(|v| v == "1");
        Intercepted::new(
            store,
            KillSwitch {
                at,
                before_write,
                stop_at,
            },
        )
    }

    fn die() -> ! {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; this only runs if the kill was refused.
        std::process::abort()
    }

    fn freeze() {
        // Returns once someone sends SIGCONT.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGSTOP);
    }
}

#[async_trait]
impl CommitInterceptor for KillSwitch {
    async fn commit(
        &self,
        n: u64,
        commit: Commit,
        next: &dyn StateStore,
    ) -> Result<Vec<u64>, StoreError> {
        if self.stop_at == Some(n) {
            Self::freeze();
        }
        let armed = self.at == Some(n);
        if armed && self.before_write {
            Self::die();
        }
        let result = next.commit(commit).await;
        if armed {
            Self::die();
        }
        result
    }
}
