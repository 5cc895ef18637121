//! Planned failures on the stacks this crate composes: [`LocalChaos`]
//! fails the local stack's server processes, and [`target_for`] picks the
//! right [`ChaosTarget`] for a [`Stack`] (the local one, or the compute
//! port of a cloud).
//!
//! The drill itself is [`phoenix_core::chaos`]; `phoenix chaos` runs it
//! from the command line.

#[cfg(feature = "local")]
pub use local::LocalChaos;
use phoenix_core::chaos::{ChaosTarget, ComputeTarget};

use crate::Stack;

#[cfg(feature = "local")]
mod local {
    use async_trait::async_trait;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use phoenix_core::chaos::{ChaosTarget, FailureKind};
    use phoenix_core::model::Server;
    use phoenix_core::ports::{Compute, ErrorKind, PortError};

    use crate::local::LocalStack;

    /// Fails the local stack's servers: a kill sends `SIGKILL` to the server's
    /// process (a crash: the provider still records it running, only the
    /// balancer's checks notice), a stop stops it through the local provider
    /// (`SIGTERM`, the way a cloud powers a server off).
    #[derive(Debug, Clone, Copy)]
    pub struct LocalChaos<'a> {
        stack: &'a LocalStack,
    }

    impl<'a> LocalChaos<'a> {
        /// Over a local stack.
        pub fn new(stack: &'a LocalStack) -> Self {
            Self { stack }
        }
    }

    #[async_trait]
    impl ChaosTarget for LocalChaos<'_> {
        fn name(&self) -> &str {
            "local processes"
        }

        async fn inject(&self, server: &Server, kind: FailureKind) -> Result<(), PortError> {
            match kind {
                FailureKind::Kill => {
                    let pid = self.stack.server_pid(&server.id).ok_or_else(|| {
                        PortError::not_found(
                            "chaos: kill a local server",
                            format!("no process is recorded for {}", server.id),
                        )
                    })?;
                    kill(Pid::from_raw(pid), Signal::SIGKILL).map_err(|e| {
                        PortError::new(
                            "chaos: kill a local server",
                            ErrorKind::Invalid(format!("SIGKILL to process {pid}: {e}")),
                        )
                    })
                }
                FailureKind::Stop => self.stack.compute.stop(&server.id).await,
            }
        }
    }
}

/// A stack's chaos target: its local processes, or its cloud's compute
/// port (terminate for a kill, stop for a stop).
pub fn target_for(stack: &Stack) -> Box<dyn ChaosTarget + '_> {
    #[cfg(feature = "local")]
    if let Some(local) = stack.local() {
        return Box::new(LocalChaos::new(local));
    }
    Box::new(ComputeTarget::new(stack.phoenix().ports().compute.clone()))
}
