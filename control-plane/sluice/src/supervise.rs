//! Supervision of the control plane's background tasks: a task that panics or returns an error
//! is never silent. It is logged (naming the task), counted in
//! `sluice_task_failures_total{task}`, shown by `/readyz` while it is down, and then either
//! restarted (with a capped exponential backoff) or, for tasks that cannot be restarted (the
//! servers, which own their listening sockets), it ends the process with an error.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info};

use crate::metrics::Metrics;

/// What to do when a task fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Start it again after a backoff (doubling from `first` up to `max`).
    Restart { first: Duration, max: Duration },
    /// End the process: [`Supervisor::fatal`] resolves with the failure.
    Exit,
}

impl OnFailure {
    /// Restart after 100 ms, doubling up to 30 s.
    pub const RESTART: OnFailure = OnFailure::Restart {
        first: Duration::from_millis(100),
        max: Duration::from_secs(30),
    };
}

/// Cheap to clone; every clone reports to the same place.
#[derive(Clone, Debug)]
pub struct Supervisor {
    metrics: Metrics,
    /// Tasks that are down now (failed, waiting to restart, or fatal), with their last failure.
    down: Arc<Mutex<BTreeMap<&'static str, String>>>,
    /// The first failure of an [`OnFailure::Exit`] task.
    fatal: Arc<watch::Sender<Option<String>>>,
}

impl Supervisor {
    pub fn new(metrics: Metrics) -> Self {
        Supervisor {
            metrics,
            down: Arc::default(),
            fatal: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Runs `make()` as task `name` until it returns `Ok(())` (its normal end, e.g. on shutdown).
    /// Each failure (error or panic) is reported; then the task is restarted with a fresh
    /// `make()` or, with [`OnFailure::Exit`], the process is asked to end.
    pub fn spawn<F, Fut>(
        &self,
        name: &'static str,
        on_failure: OnFailure,
        mut make: F,
    ) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let supervisor = self.clone();
        tokio::spawn(async move {
            let mut backoff = match on_failure {
                OnFailure::Restart { first, .. } => first,
                OnFailure::Exit => Duration::ZERO,
            };
            loop {
                // Its own task, so that a panic ends only it and comes back as a JoinError.
                let failure = match tokio::spawn(make()).await {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) if e.is_panic() => {
                        format!("panicked: {}", panic_message(e.into_panic()))
                    }
                    Err(e) => format!("cancelled: {e}"),
                };
                supervisor.report(name, &failure);
                match on_failure {
                    OnFailure::Exit => {
                        error!(task = name, error = %failure, "background task failed; the process ends");
                        supervisor.fatal.send_if_modified(|fatal| {
                            let first = fatal.is_none();
                            if first {
                                *fatal = Some(format!("{name}: {failure}"));
                            }
                            first
                        });
                        return;
                    }
                    OnFailure::Restart { max, .. } => {
                        error!(task = name, error = %failure, restart_in = ?backoff, "background task failed; restarting it");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(max);
                        supervisor.up(name);
                        info!(task = name, "background task restarted");
                    }
                }
            }
        })
    }

    /// [`Self::spawn`] for a future that can run only once (it owns a listening socket, say):
    /// its failure ends the process.
    pub fn spawn_once<Fut>(&self, name: &'static str, task: Fut) -> JoinHandle<()>
    where
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let mut task = Some(task);
        self.spawn(name, OnFailure::Exit, move || {
            let once = task.take();
            async move {
                match once {
                    Some(task) => task.await,
                    None => Err(anyhow::anyhow!("cannot be restarted")),
                }
            }
        })
    }

    fn report(&self, name: &'static str, failure: &str) {
        self.metrics.task_failure(name);
        self.down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, failure.to_owned());
    }

    fn up(&self, name: &'static str) {
        self.down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// The tasks that are down now and why, for `/readyz`.
    pub fn down(&self) -> Vec<(&'static str, String)> {
        self.down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, why)| (*name, why.clone()))
            .collect()
    }

    /// Resolves with the first failure of an [`OnFailure::Exit`] task.
    pub async fn fatal(&self) -> String {
        let mut rx = self.fatal.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(fatal) => fatal.clone().unwrap_or_default(),
            // Cannot happen (we hold the sender); never resolve rather than invent a failure.
            Err(_) => std::future::pending().await,
        }
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(message) => *message,
        Err(panic) => panic
            .downcast_ref::<&str>()
            .map_or_else(|| "(not a string)".to_owned(), |m| (*m).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn failures(metrics: &Metrics, task: &str) -> u64 {
        let text = metrics.encode();
        let line = format!("sluice_task_failures_total{{task=\"{task}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// A task that panics twice is reported each time (counter, `/readyz` while down) and
    /// restarted; once it runs cleanly it is up again.
    #[tokio::test]
    async fn a_panicking_task_is_reported_and_restarted() {
        let metrics = Metrics::new();
        let supervisor = Supervisor::new(metrics.clone());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = watch::channel(false);
        let counted = runs.clone();
        let handle = supervisor.spawn(
            "reload",
            OnFailure::Restart {
                first: Duration::from_millis(200),
                max: Duration::from_millis(400),
            },
            move || {
                let run = counted.fetch_add(1, Ordering::SeqCst);
                let mut released = released.clone();
                async move {
                    if run < 2 {
                        panic!("overflow in run {run}");
                    }
                    let _ = released.wait_for(|r| *r).await;
                    Ok(())
                }
            },
        );
        // Down while waiting to restart, with the panic's message.
        tokio::time::timeout(Duration::from_secs(10), async {
            while supervisor.down().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("reported down");
        let down = supervisor.down();
        assert_eq!(down[0].0, "reload");
        assert!(
            down[0].1.contains("panicked: overflow in run 0"),
            "{down:?}"
        );

        tokio::time::timeout(Duration::from_secs(10), async {
            while runs.load(Ordering::SeqCst) < 3 || !supervisor.down().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("restarted and up");
        assert_eq!(failures(&metrics, "reload"), 2);
        release.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("ends")
            .expect("supervisor task");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "a clean end is not restarted"
        );
    }

    /// A task that cannot be restarted ends the process: `fatal` resolves with its error.
    #[tokio::test]
    async fn a_failing_server_is_fatal() {
        let metrics = Metrics::new();
        let supervisor = Supervisor::new(metrics.clone());
        supervisor.spawn_once("HTTP server", async {
            Err(anyhow::anyhow!("accept: too many open files"))
        });
        let fatal = tokio::time::timeout(Duration::from_secs(10), supervisor.fatal())
            .await
            .expect("fatal");
        assert_eq!(fatal, "HTTP server: accept: too many open files");
        assert_eq!(failures(&metrics, "HTTP server"), 1);
        assert_eq!(supervisor.down()[0].0, "HTTP server");
    }
}
