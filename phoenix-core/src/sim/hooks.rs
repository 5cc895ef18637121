use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::{HookReport, HookTarget, PortError, ServerHooks};

use super::compute::lock;
use super::world::World;

/// Drain and warm-up hooks that take time, as real ones do (sessions
/// handed over, caches filled): a drain takes up to the configured hook
/// time, a warm-up a sixth of it. They always succeed; failing hooks are
/// tested elsewhere.
#[derive(Debug, Clone)]
pub struct SimHooks {
    pub(crate) world: Arc<Mutex<World>>,
}

impl SimHooks {
    async fn take(&self, share: u32) -> HookReport {
        let d = {
            let mut w = lock(&self.world);
            w.stats.hook_calls += 1;
            let longest = w.config.hook_time / share.max(1);
            w.between(Duration::ZERO, longest)
        };
        tokio::time::sleep(d).await;
        HookReport {
            done: 1,
            failed: 0,
            detail: format!("took {}", crate::time::human(d)),
        }
    }
}

#[async_trait]
impl ServerHooks for SimHooks {
    async fn warm_up(&self, _target: &HookTarget) -> Result<HookReport, PortError> {
        Ok(self.take(6).await)
    }

    async fn drain(&self, _target: &HookTarget) -> Result<HookReport, PortError> {
        Ok(self.take(1).await)
    }
}
