//! Waiting for vSphere tasks (`CloneVM_Task`, `PowerOnVM_Task`, …) with a
//! deadline: the task's `info` is read until it is `success` or `error`,
//! sleeping through `tokio::time` between reads; an error becomes a
//! [`PortError`] classified by its fault type, with vSphere's message.
//!
//! vcsim finishes every task inside the call that starts it, so the first
//! read already sees the end; vCenter runs them for seconds to minutes
//! (a full clone copies disks), and the reads back off from
//! `task_poll` up to ten times that.

use std::time::Duration;

use phoenix_core::ports::{ErrorKind, PortError};
use tokio::time::Instant;

use super::client::{bad_answer, SoapCall, VsphereClient};
use super::fault::{self, VsphereFault};
use super::property_collector::{self, From, Query};
use super::xml::{Element, MoRef};

/// Starts `call` (a `…_Task` method) and waits for its task; returns the
/// task's result element, if it has one (`CloneVM_Task`: the new VM).
pub async fn run(client: &VsphereClient, call: &SoapCall) -> Result<Option<Element>, PortError> {
    let answer = client.call(call).await?;
    let task = answer
        .child("returnval")
        .and_then(MoRef::from_element)
        .ok_or_else(|| bad_answer(call, "no task in the answer"))?;
    wait(client, &task, call).await
}

/// Waits for `task`, started by `call`, within the configured deadline.
pub async fn wait(
    client: &VsphereClient,
    task: &MoRef,
    call: &SoapCall,
) -> Result<Option<Element>, PortError> {
    let deadline = Instant::now() + client.config().task_deadline;
    let base = client.config().task_poll;
    let mut delay = base;
    loop {
        let info = property_collector::retrieve(
            client,
            &Query {
                kind: "Task",
                paths: &["info.state", "info.error", "info.result"],
                from: From::Object(task),
            },
        )
        .await?;
        let info = info
            .into_iter()
            .next()
            .ok_or_else(|| bad_answer(call, "the task vanished before it ended"))?;
        match info.text("info.state") {
            Some("success") => return Ok(info.props.get("info.result").cloned()),
            Some("error") => {
                let (fault_type, message) = info
                    .props
                    .get("info.error")
                    .map(fault::read_task_error)
                    .unwrap_or_else(|| ("(none)".into(), "the task failed".into()));
                return Err(fault::port_error(
                    &call.operation(),
                    VsphereFault {
                        method: call.method().to_owned(),
                        fault_type,
                        message: client.scrub(&message),
                    },
                ));
            }
            Some("queued" | "running") => {}
            other => {
                return Err(bad_answer(
                    call,
                    &format!("the task is in an unknown state {other:?}"),
                ))
            }
        }
        let now = Instant::now();
        if now >= deadline {
            // The task may still finish: the caller reads the inventory
            // again rather than assuming either outcome.
            return Err(PortError::new(
                call.operation(),
                ErrorKind::Temporary(format!(
                    "task {} still running after {:?}",
                    task.value,
                    client.config().task_deadline
                )),
            ));
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(base * 10).max(Duration::from_millis(1));
    }
}
