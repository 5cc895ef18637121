//! Changes to resources that refuse changes while they update: a Cloud
//! Load Balancer answers 422 ("considered immutable") while it is
//! `PENDING_UPDATE`, an Octavia load balancer 409 while `PENDING_*`. A
//! change is retried with the session's policy for ordinary failures, and
//! on such a refusal waits, polling the resource's status, until it is
//! ready again, for a bounded time.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use phoenix_providers::openstack::busy::{change_when_ready, Patience};
//!
//! # async fn demo(session: phoenix_providers::openstack::Session) -> Result<(), phoenix_core::ports::PortError> {
//! let patience = Patience { wait: Duration::from_secs(300), poll: Duration::from_secs(2) };
//! change_when_ready(
//!     session.retry_policy(),
//!     patience,
//!     || async { Ok(()) },       // the change: read, compare, write
//!     || async { Ok(true) },     // is the resource ready (ACTIVE)?
//! )
//! .await?;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use phoenix_core::ports::{PortError, RetryClass};
use phoenix_core::retry::{Classify, RetryPolicy};

use super::http::http_status;

/// How long to wait for a busy resource, and how often to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// The longest wait for the resource to be ready again.
    pub wait: Duration,
    /// How often to poll its status.
    pub poll: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(300),
            poll: Duration::from_secs(2),
        }
    }
}

/// True for a refusal because the resource is busy (409, 422).
pub fn is_busy(error: &PortError) -> bool {
    matches!(http_status(error), Some(409 | 422))
}

enum Step {
    Busy(PortError),
    Failed(PortError),
}

impl Classify for Step {
    fn retry_class(&self) -> RetryClass {
        match self {
            // Waited for below, by polling, not by backoff.
            Self::Busy(_) => RetryClass::Permanent,
            Self::Failed(e) => e.retry_class(),
        }
    }
}

/// Runs `change` (retried by `policy`); when the resource refuses it as
/// busy, polls `ready` until it says true, then runs `change` again. The
/// change must be safe to repeat (read the state, then write the
/// difference). Fails with the last refusal once `patience.wait` is
/// spent, or with `ready`'s error (a resource in `ERROR`).
pub async fn change_when_ready<T, C, CF, R, RF>(
    policy: &RetryPolicy,
    patience: Patience,
    change: C,
    ready: R,
) -> Result<T, PortError>
where
    C: Fn() -> CF,
    CF: Future<Output = Result<T, PortError>>,
    R: Fn() -> RF,
    RF: Future<Output = Result<bool, PortError>>,
{
    let deadline = tokio::time::Instant::now() + patience.wait;
    loop {
        let outcome = policy
            .run(|| async {
                change().await.map_err(|e| {
                    if is_busy(&e) {
                        Step::Busy(e)
                    } else {
                        Step::Failed(e)
                    }
                })
            })
            .await;
        let refusal = match outcome {
            Ok(v) => return Ok(v),
            Err(Step::Failed(e)) => return Err(e),
            Err(Step::Busy(e)) => e,
        };
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(refusal);
            }
            tokio::time::sleep(patience.poll).await;
            if policy.run(&ready).await? {
                break;
            }
        }
    }
}
