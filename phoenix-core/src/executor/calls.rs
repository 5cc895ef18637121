//! How a run calls its ports: every attempt first makes sure the lease is
//! still ours, then runs within a deadline (the policy's call timeout, cut
//! to what is left of the lease), and failed attempts are retried with the
//! policy's backoff, sleeping in pieces that keep the lease alive. A hung
//! describe, balancer read or probe cannot block an operation forever, and
//! no call of an orchestrator that lost its lease goes out.

use std::future::Future;
use std::time::Duration;

use crate::ports::{PortError, RetryClass};
use crate::records::RecordError;
use crate::retry::{Classify, RetryPolicy};

use super::error::{Interruption, StepError};
use super::lease::LeaseKeeper;

/// The gate every port call of a run goes through.
#[derive(Clone, Debug)]
pub(crate) struct Calls {
    pub(crate) keeper: LeaseKeeper,
    retry: RetryPolicy,
    timeout: Duration,
    /// How often a backoff looks for pre-emption requests.
    poll: Duration,
}

/// Why one attempt failed.
enum Attempt {
    Port(PortError),
    Stop(Interruption),
}

impl Classify for Attempt {
    fn retry_class(&self) -> RetryClass {
        match self {
            Self::Port(e) => e.retry_class(),
            Self::Stop(_) => RetryClass::Permanent,
        }
    }
}

/// A store call that failed or outlived its deadline.
enum StoreAttempt {
    Store(RecordError),
    Stop(Interruption),
}

impl Classify for StoreAttempt {
    fn retry_class(&self) -> RetryClass {
        match self {
            Self::Store(e) => e.retry_class(),
            Self::Stop(_) => RetryClass::Permanent,
        }
    }
}

impl Calls {
    pub(crate) fn new(
        keeper: LeaseKeeper,
        retry: RetryPolicy,
        timeout: Duration,
        poll: Duration,
    ) -> Self {
        Self {
            keeper,
            retry,
            timeout,
            poll,
        }
    }

    /// The retry policy (for callers that loop themselves).
    pub(crate) fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Sleeps a backoff, keeping the lease and watching for pre-emption.
    pub(crate) async fn backoff(&self, d: Duration) {
        self.keeper.sleep(d, self.poll).await;
    }

    /// The deadline of the next call: the policy's, never past the lease.
    pub(crate) async fn deadline(&self) -> Result<Duration, Interruption> {
        if let Some(p) = self.keeper.preempted() {
            return Err(p);
        }
        let usable = self.keeper.ensure().await?;
        Ok(self.timeout.min(usable).max(Duration::from_millis(1)))
    }

    /// One attempt, with no retry: the lease, then the call within its
    /// deadline. A call past its deadline is a temporary failure (its
    /// effect, if any, is unknown).
    pub(crate) async fn once<T, Fut>(
        &self,
        context: &str,
        call: Fut,
    ) -> Result<Result<T, PortError>, Interruption>
    where
        Fut: Future<Output = Result<T, PortError>>,
    {
        let deadline = self.deadline().await?;
        Ok(within(deadline, context, call).await)
    }

    /// One attempt of a destructive call that relies on a balancer read
    /// taken at `read_at`: like [`Calls::once`], but nothing is sent
    /// (`None`) when the read grew older than `limit` while the lease was
    /// checked or earlier calls ran. The caller reads again.
    pub(crate) async fn once_fresh<T, Fut>(
        &self,
        context: &str,
        read_at: tokio::time::Instant,
        limit: Duration,
        call: Fut,
    ) -> Result<Option<Result<T, PortError>>, Interruption>
    where
        Fut: Future<Output = Result<T, PortError>>,
    {
        let deadline = self.deadline().await?;
        if read_at.elapsed() > limit {
            return Ok(None);
        }
        Ok(Some(within(deadline, context, call).await))
    }

    /// A call retried under the policy. A lost lease stops it at once.
    pub(crate) async fn call<T, F, Fut>(&self, context: &str, mut f: F) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PortError>>,
    {
        let keeper = self.keeper.clone();
        let poll = self.poll;
        let result = self
            .retry
            .run_sleeping(
                move |d| {
                    let keeper = keeper.clone();
                    async move { keeper.sleep(d, poll).await }
                },
                || {
                    let call = f();
                    async move {
                        match self.once(context, call).await {
                            Ok(Ok(v)) => Ok(v),
                            Ok(Err(e)) => Err(Attempt::Port(e)),
                            Err(i) => Err(Attempt::Stop(i)),
                        }
                    }
                },
            )
            .await;
        match result {
            Ok(v) => Ok(v),
            Err(Attempt::Port(e)) => Err(StepError::port(context, e)),
            Err(Attempt::Stop(i)) => Err(StepError::Interrupted(i)),
        }
    }

    /// A store call retried under the policy, each attempt within the
    /// deadline (a commit that lands after its deadline is refused by its
    /// fence or its versions).
    pub(crate) async fn store<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, Interruption>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RecordError>>,
    {
        let keeper = self.keeper.clone();
        let poll = self.poll;
        let result = self
            .retry
            .run_sleeping(
                move |d| {
                    let keeper = keeper.clone();
                    async move { keeper.sleep(d, poll).await }
                },
                || {
                    let call = f();
                    async move {
                        // Committing is never pre-empted: the run records
                        // what it did before it stops. Its deadline is the
                        // policy's alone: a commit that lands after the
                        // lease lapsed is refused by its fencing token, so
                        // the lease need not bound it.
                        self.keeper.ensure().await.map_err(StoreAttempt::Stop)?;
                        let deadline = self.timeout;
                        match tokio::time::timeout(deadline, call).await {
                            Ok(r) => r.map_err(StoreAttempt::Store),
                            Err(_) => Err(StoreAttempt::Store(RecordError::Store(
                                crate::ports::StoreError::Unavailable {
                                    operation: what.to_owned(),
                                    source: format!(
                                        "no answer within {}",
                                        crate::time::human(deadline)
                                    )
                                    .into(),
                                },
                            ))),
                        }
                    }
                },
            )
            .await;
        match result {
            Ok(v) => Ok(v),
            Err(StoreAttempt::Store(e)) => Err(e.into()),
            Err(StoreAttempt::Stop(i)) => Err(i),
        }
    }
}

/// A call within its deadline; past it, a temporary failure (its effect,
/// if any, is unknown).
async fn within<T, Fut>(deadline: Duration, context: &str, call: Fut) -> Result<T, PortError>
where
    Fut: Future<Output = Result<T, PortError>>,
{
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r,
        Err(_) => Err(PortError::temporary(
            context,
            format!("no answer within {}", crate::time::human(deadline)),
        )),
    }
}
