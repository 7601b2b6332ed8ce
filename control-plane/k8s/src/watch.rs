//! The I/O loop: kube watchers ([`streams`]) → the driver ([`driver`]: [`crate::Index`] +
//! [`crate::workloads::Workloads`]) → `watch::Sender<TrafficState>`; the leader runs the release
//! engine (or the older step engine) and hands its writes to [`crate::status_writer`]. This
//! module holds only the loop: which event wakes what (a watch change, the resync tick, an
//! AnalysisRun's update, a proxy's ACK, the engine's requeue, leadership).
//!
//! Rollouts are watched as `DynamicObject`s and parsed one by one ([`crate::parse`]), so one
//! malformed object is reported by name (with the path of the bad field) instead of breaking the
//! whole watch. When `manage_sluice_rollouts`, ReplicaSets and Deployments are watched too; like
//! every other watch they must have listed once before anything is published or written.

use std::{future::Future, time::Duration};

use futures::{FutureExt, StreamExt, stream::select_all};
use kube::{Api, Client};
use sluice_analysis::runner::RunUpdate;
use sluice_api::Rollout;
use sluice_model::TrafficState;
use sluice_release::DataPlane;
use tokio::sync::{mpsc, watch};

mod driver;
mod streams;

use driver::Driver;
use streams::{note_listed, streams};

use crate::{
    K8sError,
    ack_report::{self, AckReport, Published},
    analysis_runs::AnalysisRuns,
    index::SourceError,
    lease::{self, LeaseConfig},
    objects::RolloutRef,
};
pub use crate::{
    parse::parse_rollout,
    status_writer::{status_patch, write_status},
};

/// The data-plane gate's input: for a rollout and its `status.dataPlane`, the connected proxies
/// and the newest traffic generation each has acknowledged. The binary builds it from its xDS
/// connection registry; without one the engine sees no proxies (the gate is open).
pub type DataPlaneFn =
    std::sync::Arc<dyn Fn(&RolloutRef, &Rollout) -> DataPlane + Send + Sync + 'static>;

/// A [`DataPlaneFn`] that `Config` can carry (Debug, Clone).
#[derive(Clone)]
pub struct DataPlaneSource(pub DataPlaneFn);

impl std::fmt::Debug for DataPlaneSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataPlaneSource(..)")
    }
}

/// What to watch and what to do.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch these namespaces; empty: the whole cluster.
    pub namespaces: Vec<String>,
    /// Watch `sluice.dev` Rollouts (needs their CRD installed).
    pub sluice_rollouts: bool,
    /// Watch `argoproj.io` Rollouts, read-only (observe mode; needs Argo's CRD installed).
    pub observe_argo: bool,
    /// Run the release engine (Rollouts with a template or workloadRef: watches ReplicaSets and
    /// Deployments, creates and scales versions) or the older step engine (versions made by
    /// hand) for `sluice.dev` Rollouts and write their status (leader only).
    pub manage_sluice_rollouts: bool,
    pub cluster_domain: String,
    /// Leader election. `None`: this replica writes without election (one replica only).
    pub lease: Option<LeaseConfig>,
    /// How often the leader re-runs the older step engine (its timed pauses end on this tick).
    /// The release engine runs on changes and on the requeue it returns.
    pub resync: Duration,
    /// Names this replica in Events (e.g. the pod name).
    pub instance: Option<String>,
    /// What the connected proxies acknowledged (the data-plane gate); `None`: no proxies seen.
    pub data_plane: Option<DataPlaneSource>,
    /// This replica's proxies' acknowledgements (the data-plane gate, [`crate::ack_report`]):
    /// the leader counts them and re-runs the engine when they change; with a `lease`, every
    /// replica reports them in its Lease and the leader adds the other replicas' reports.
    pub acks: Option<watch::Receiver<AckReport>>,
    /// Receives each publication with the generations its traffic carries (the gate's input).
    pub published: Option<watch::Sender<Published>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespaces: Vec::new(),
            sluice_rollouts: true,
            observe_argo: false,
            manage_sluice_rollouts: true,
            cluster_domain: crate::DEFAULT_CLUSTER_DOMAIN.into(),
            lease: None,
            resync: Duration::from_secs(1),
            instance: None,
            data_plane: None,
            acks: None,
            published: None,
        }
    }
}

/// Watches until `shutdown`, publishing the traffic state on `tx` (only when it changed) and each
/// new or changed per-rollout error on `errors`. `tx` also notifies once when every watch has
/// finished its initial list, even if the state is unchanged: until then the state is partial,
/// and a control plane that served it would tell Envoys that rollouts vanished.
pub async fn run(
    client: Client,
    config: Config,
    tx: watch::Sender<TrafficState>,
    errors: mpsc::Sender<SourceError>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), K8sError> {
    if config.manage_sluice_rollouts && !config.sluice_rollouts {
        return Err(K8sError::Config(
            "managing sluice.dev Rollouts needs watching them (sluice_rollouts)".into(),
        ));
    }
    let (leader_tx, mut leader_rx) = watch::channel(config.lease.is_none());
    let (stop_elector, elector_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut elector = config.lease.clone().map(|lease_config| {
        let api = Api::namespaced(client.clone(), &lease_config.namespace);
        let stop = elector_stopped.map(|_| ());
        tokio::spawn(lease::elect(api, lease_config, leader_tx, stop))
    });

    let (stop_reporter, reporter_stopped) = tokio::sync::oneshot::channel::<()>();
    let reporter = match (&config.lease, &config.acks) {
        (Some(lease), Some(acks)) => {
            let report = ack_report::ReportConfig {
                namespace: lease.namespace.clone(),
                identity: lease.identity.clone(),
                duration: lease.lease_duration,
            };
            let api = Api::namespaced(client.clone(), &lease.namespace);
            let stop = reporter_stopped.map(|_| ());
            Some(tokio::spawn(ack_report::write_reports(
                api,
                report,
                acks.clone(),
                stop,
            )))
        }
        _ => None,
    };
    let mut local_acks = config.acks.clone();
    let streams = streams(&client, &config);
    let watches = streams.len();
    let mut listed = std::collections::BTreeSet::new();
    let mut announced_sync = false;
    let synced_tx = tx.clone();
    let mut changes = select_all(streams);
    let (run_updates, mut run_updates_rx) = mpsc::unbounded_channel::<RunUpdate>();
    let mut driver = Driver::new(client, config.clone(), leader_rx.clone(), tx, errors);
    driver.analysis = AnalysisRuns::new(run_updates);
    let mut tick = tokio::time::interval(config.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // The elector runs until told to stop: ending before is a failure, and a replica
            // that no longer renews its Lease must not go on writing as the leader.
            ended = task_end(&mut elector) => {
                let message = match ended {
                    Ok(()) => "it returned".to_owned(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(task = "lease election", %message, "the leader election task ended");
                return Err(K8sError::Task { task: "lease election", message });
            }
            Some(change) = changes.next() => {
                note_listed(&change, &mut listed);
                driver.apply(change);
                // Take whatever else is ready, then publish once.
                while let Some(Some(change)) = changes.next().now_or_never() {
                    note_listed(&change, &mut listed);
                    driver.apply(change);
                }
                if !announced_sync && listed.len() >= watches {
                    announced_sync = true;
                    driver.synced = true;
                    tracing::info!(watches, "initial lists done: the traffic state is complete");
                    driver.publish().await;
                    // Notify even if the state equals the channel's initial (empty) value.
                    synced_tx.send_modify(|_| {});
                } else {
                    driver.publish().await;
                }
                driver.reconcile_all().await;
            }
            _ = tick.tick() => driver.reconcile_legacy().await,
            // An AnalysisRun's new status: written to its object, then the engine looks again.
            Some(update) = run_updates_rx.recv() => {
                let mut changed = driver.run_update(update).await;
                while let Ok(update) = run_updates_rx.try_recv() {
                    changed |= driver.run_update(update).await;
                }
                if changed {
                    driver.reconcile_engine().await;
                }
            }
            // This replica's proxies acknowledged something: the engine looks again, once per
            // burst.
            () = acks_changed(&mut local_acks) => {
                let at = tokio::time::Instant::now() + Duration::from_millis(50);
                driver.wake_at = Some(driver.wake_at.map_or(at, |w| w.min(at)));
            }
            () = sleep_until(driver.wake_at) => {
                driver.wake_at = None;
                driver.reconcile_all().await;
            }
            Ok(()) = leader_rx.changed() => {
                if !*leader_rx.borrow_and_update() {
                    // The next leader resumes the runs.
                    driver.analysis.stop_all();
                } else {
                    // A new leader reports what is wrong again.
                    driver.evented.clear();
                    driver.publish().await;
                    driver.reconcile_all().await;
                }
            }
        }
    }
    let _ = stop_elector.send(());
    let _ = stop_reporter.send(());
    if let Some(reporter) = reporter {
        let _ = reporter.await;
    }
    if let Some(elector) = elector {
        let _ = elector.await;
    }
    Ok(())
}

/// Resolves at `at` (never without one).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when this replica's acknowledgements change (never without them, or once their
/// sender is gone).
async fn acks_changed(acks: &mut Option<watch::Receiver<AckReport>>) {
    let gone = match acks {
        Some(rx) => match rx.changed().await {
            Ok(()) => {
                rx.borrow_and_update();
                return;
            }
            Err(_) => true,
        },
        None => false,
    };
    if gone {
        *acks = None;
    }
    std::future::pending().await
}

/// Resolves when the task ends (never without a task).
async fn task_end(
    task: &mut Option<tokio::task::JoinHandle<()>>,
) -> Result<(), tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}
