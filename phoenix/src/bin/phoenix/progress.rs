//! The live display of an operation: a bar of steps and the current step
//! on a terminal (indicatif), plain lines otherwise — both on stderr, so
//! that stdout stays the command's result.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use phoenix::core::events::{Event, EventKind};
use phoenix::Phoenix;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running display.
pub(crate) struct Progress {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// One line for an event worth a line, `None` for the others.
fn line(e: &Event) -> Option<String> {
    Some(match &e.kind {
        EventKind::OperationStarted { summary, steps, .. } => {
            format!("started: {summary} ({steps} steps)")
        }
        EventKind::OperationResumed { step, rolling_back } => format!(
            "resumed at step {}{}",
            step + 1,
            if *rolling_back { " (rolling back)" } else { "" }
        ),
        EventKind::OperationFinished { outcome, error } => format!(
            "finished: {outcome:?}{}",
            error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
        EventKind::StepStarted {
            index,
            rollback,
            step,
        } => format!(
            "{}step {}: {step}",
            if *rollback { "rollback " } else { "" },
            index + 1
        ),
        EventKind::StepFailed { index, error, .. } => format!("step {} FAILED: {error}", index + 1),
        EventKind::RollbackStarted { reason, steps } => {
            format!("rolling back ({steps} steps): {reason}")
        }
        EventKind::GuardRefused { invariant, detail } => {
            format!("guard refused ({invariant}): {detail}")
        }
        EventKind::ServerLaunched { pool, server, .. } => format!("  {server} launched in {pool}"),
        EventKind::ServerVerified { server, .. } => format!("  {server} healthy and smoke-tested"),
        EventKind::ServerAttached { server, .. } => format!("  {server} takes traffic"),
        EventKind::ServerDetached { server, .. } => format!("  {server} detached, draining"),
        EventKind::ServerTerminated { server, .. } => format!("  {server} terminated"),
        EventKind::LaunchFailed { slot, reason, .. } => {
            format!("  launch of slot {slot} failed: {reason}")
        }
        EventKind::ServerMissing { server, .. } => format!("  {server} is missing"),
        EventKind::PoolStateChanged { pool, from, to } => format!("  pool {pool}: {from} → {to}"),
        _ => return None,
    })
}

impl Progress {
    /// Starts showing the events of `phoenix` (nothing when `quiet`).
    pub(crate) fn start(phoenix: &Phoenix, quiet: bool) -> Self {
        if quiet {
            return Self {
                stop: None,
                task: None,
            };
        }
        let mut events = phoenix.subscribe();
        let (tx, mut rx) = oneshot::channel();
        let terminal = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let bar = terminal.then(|| {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            });
            loop {
                let event = tokio::select! {
                    _ = &mut rx => break,
                    e = events.recv() => e,
                };
                let e = match event {
                    Ok(e) => e,
                    Err(RecvError::Lagged(n)) => {
                        eprintln!("  ({n} events not shown)");
                        continue;
                    }
                    Err(RecvError::Closed) => break,
                };
                if let Some(bar) = &bar {
                    match &e.kind {
                        EventKind::OperationStarted { steps, .. }
                        | EventKind::RollbackStarted { steps, .. } => {
                            bar.set_length(*steps as u64);
                            bar.set_position(0);
                        }
                        EventKind::OperationResumed { step, .. } => {
                            bar.set_position(*step as u64);
                        }
                        EventKind::StepFinished { .. } => bar.inc(1),
                        _ => {}
                    }
                }
                let Some(text) = line(&e) else { continue };
                match &bar {
                    Some(bar) => {
                        if matches!(e.kind, EventKind::StepStarted { .. }) {
                            bar.set_message(text);
                        } else {
                            bar.println(text);
                        }
                    }
                    None => eprintln!("{} {text}", e.at.format("%H:%M:%S%.3f")),
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        Self {
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the display, after the events already sent are shown.
    pub(crate) async fn finish(mut self) {
        // Let the last events of the operation reach the display.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
