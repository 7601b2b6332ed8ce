//! The runner: one task per AnalysisRun that takes its measurements when they are due and reports
//! every new status. The rules are the pure state machine ([`due`], [`advance`]); this is the thin
//! async loop around it: measure what is due (the providers, concurrently), advance, report, then
//! sleep until the machine's `next_at` or until the run is terminated — a timer, never a poll.
//!
//! ```text
//!  driver ──spawn(plan, status)──► task: due → measure → advance → RunUpdate ──► driver (channel)
//!         ──RunHandle::terminate──►       (ends the run as Argo's spec.terminate: Successful
//!                                           unless a metric already failed, "Run Terminated")
//! ```
//!
//! A run resumes from any status (a restarted driver passes the status it kept): the machine
//! measures again what is due by the recorded `finishedAt` + interval, so a restart neither loses
//! nor repeats a measurement that was recorded.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};

use crate::{
    machine::{advance, due},
    plan::RunPlan,
    provider::measure,
    resource::AnalysisRunStatus,
};

/// The HTTP client the providers use (drivers make one and share it between runs).
pub use reqwest::Client as HttpClient;

/// A run's new status, for its driver.
#[derive(Clone, Debug, PartialEq)]
pub struct RunUpdate {
    /// The run's name (the driver's key).
    pub name: String,
    pub status: AnalysisRunStatus,
}

/// A running run. Dropping it stops the task without terminating the run (a driver shutting down
/// keeps the run Running, to be resumed).
#[derive(Debug)]
pub struct RunHandle {
    terminate: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunHandle {
    /// Asks the run to end (Argo's `spec.terminate: true`); the task reports the final status.
    pub fn terminate(&self) {
        self.terminate.send_replace(true);
    }

    /// The task has ended (the run completed, or its driver is gone).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for RunHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts measuring `plan` from `status` (a fresh run: the default status). Every change of the
/// status is sent on `updates` as a [`RunUpdate`] named `name`; the task ends when the run is
/// complete or `updates` is closed. `terminate` starts it already terminated.
pub fn spawn(
    name: String,
    plan: RunPlan,
    status: AnalysisRunStatus,
    terminate: bool,
    client: reqwest::Client,
    updates: mpsc::UnboundedSender<RunUpdate>,
) -> RunHandle {
    let (tx, rx) = watch::channel(terminate);
    let task = tokio::spawn(execute(name, plan, status, client, rx, updates));
    RunHandle {
        terminate: tx,
        task,
    }
}

/// The time from `now` to `at` (zero when past).
fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

async fn execute(
    name: String,
    plan: RunPlan,
    mut status: AnalysisRunStatus,
    client: reqwest::Client,
    mut terminate: watch::Receiver<bool>,
    updates: mpsc::UnboundedSender<RunUpdate>,
) {
    let mut first = true;
    loop {
        let now = Timestamp::now();
        let tasks = due(&plan, &status, *terminate.borrow(), now);
        let measurements = futures::future::join_all(tasks.into_iter().filter_map(|i| {
            let metric = plan.metrics.get(i)?;
            let client = &client;
            Some(async move {
                let taken = measure(client, metric, Timestamp::now).await;
                (metric.name().to_owned(), taken)
            })
        }))
        .await;
        // A terminate that came during the measurements counts now.
        let stop = *terminate.borrow_and_update();
        let next = advance(&plan, &status, measurements, stop, Timestamp::now());
        if first || next.status != status {
            first = false;
            status = next.status;
            tracing::debug!(run = %name, phase = %status.phase, "analysis run status");
            let update = RunUpdate {
                name: name.clone(),
                status: status.clone(),
            };
            if updates.send(update).is_err() {
                return;
            }
        }
        if status.phase.completed() {
            tracing::info!(run = %name, phase = %status.phase, message = %status.message, "analysis run completed");
            return;
        }
        let sleep = next
            .next_at
            .map(|at| tokio::time::sleep(until(Timestamp::now(), at)));
        tokio::select! {
            () = async { if let Some(s) = sleep { s.await } else { std::future::pending().await } } => {}
            changed = terminate.changed() => {
                if changed.is_err() {
                    // The handle was dropped: the driver is gone; the run stays as recorded.
                    return;
                }
            }
        }
    }
}
