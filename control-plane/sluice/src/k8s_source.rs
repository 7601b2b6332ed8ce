//! Kubernetes mode's source: `sluice-k8s` watches Rollouts, Pods and Services and publishes the
//! traffic state; its states and rejected objects become one stream of [`SourceEvent`]s that
//! [`App::apply_source`] applies to the store, as the standalone driver's passes do.
//!
//! The data-plane gate: the source also hands over each publication's generations
//! (`status.dataPlane.generation` per rollout); the [`Gate`] (the standalone driver's) records
//! them against the snapshots served, and turns this replica's registry into an
//! [`sluice_k8s::ack_report::AckReport`]: the leader counts it, and with a Lease every replica
//! reports it through the Kubernetes API for the leader to merge (`sluice_k8s::ack_report`).

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt as _;
use sluice_model::TrafficState;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use sluice_k8s::ack_report::{AckReport, Published, ReportedProxy};

use crate::{
    gate::Gate,
    serve::{App, SourceEvent},
    supervise::OnFailure,
};

/// A burst of ACKs (every type of every proxy) is one report.
const ACK_DEBOUNCE: Duration = Duration::from_millis(20);

#[derive(Debug, Args)]
pub struct K8sArgs {
    /// Watch only these namespaces (repeat or comma-separate); default: the whole cluster.
    #[arg(long = "namespace", env = "SLUICE_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Also route Argo Rollouts' `argoproj.io/v1alpha1` Rollouts, read-only (observe mode).
    #[arg(long, env = "SLUICE_OBSERVE_ARGO")]
    pub observe_argo: bool,
    /// Do not watch `sluice.dev` Rollouts (e.g. their CRD is not installed).
    #[arg(long, env = "SLUICE_NO_SLUICE_ROLLOUTS")]
    pub no_sluice_rollouts: bool,
    /// Namespace of the leader-election Lease; without it this replica writes status with no
    /// election (run one replica only).
    #[arg(long, env = "SLUICE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in Events (the pod name).
    #[arg(long, env = "SLUICE_LEASE_IDENTITY", default_value = "sluice")]
    pub lease_identity: String,
    /// The cluster's DNS domain, for the Service host names a rollout answers to.
    #[arg(long, env = "SLUICE_CLUSTER_DOMAIN", default_value = sluice_k8s::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
}

/// Starts the watches as a supervised task (restarted, with fresh lists and a fresh election,
/// if it fails). The store becomes ready when every watch has listed once; until then, and
/// while a restarted source relists, the store keeps its last good state.
pub async fn start(
    app: Arc<App>,
    args: &K8sArgs,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or kubeconfig)")?;
    let config = sluice_k8s::Config {
        namespaces: args.namespaces.clone(),
        sluice_rollouts: !args.no_sluice_rollouts,
        observe_argo: args.observe_argo,
        manage_sluice_rollouts: !args.no_sluice_rollouts,
        cluster_domain: args.cluster_domain.clone(),
        lease: args
            .lease_namespace
            .as_ref()
            .map(|ns| sluice_k8s::LeaseConfig::new(ns.clone(), args.lease_identity.clone())),
        instance: Some(args.lease_identity.clone()),
        ..Default::default()
    };
    let (published_tx, published_rx) = watch::channel(Published::default());
    let (acks_tx, acks_rx) = watch::channel(AckReport::default());
    let config = sluice_k8s::Config {
        published: Some(published_tx),
        acks: Some(acks_rx),
        ..config
    };
    let gate = Arc::new(std::sync::Mutex::new(Gate::new(app.nodes.clone())));
    let acks_tx = Arc::new(acks_tx);
    let supervisor = app.supervisor.clone();
    Ok(
        supervisor.spawn("Kubernetes source", OnFailure::RESTART, move || {
            let gate = GateFeed {
                gate: gate.clone(),
                published: published_rx.clone(),
                acks: acks_tx.clone(),
            };
            run(
                app.clone(),
                client.clone(),
                config.clone(),
                gate,
                shutdown.clone(),
            )
        }),
    )
}

/// One run of the Kubernetes source: the watches, and the two loops that move their states and
/// errors into the store, until shutdown or a failure.
async fn run(
    app: Arc<App>,
    client: kube::Client,
    config: sluice_k8s::Config,
    gate: GateFeed,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(TrafficState::default());
    let (errors_tx, errors_rx) = mpsc::channel::<sluice_k8s::SourceError>(64);
    // The source notifies states only once every watch has listed; a rejected rollout keeps
    // its last good state in the index, and the error is shown where users look.
    let states =
        tokio_stream::wrappers::WatchStream::from_changes(rx).map(|state| SourceEvent::State {
            state,
            still_rejected: None,
        });
    let rejected = tokio_stream::wrappers::ReceiverStream::new(errors_rx)
        .map(|error| SourceEvent::Rejected(error.to_string()));
    let events = async {
        let mut events = futures::stream::select(states, rejected);
        while let Some(event) = events.next().await {
            app.apply_source([event]).await;
        }
    };
    let source = async {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        sluice_k8s::run(client, config, tx, errors_tx, stop)
            .await
            .context("Kubernetes source")
    };
    // The loops end when the source returns (it drops the senders); the gate's, with it.
    let all = async {
        let (result, ()) = tokio::join!(source, events);
        result
    };
    tokio::select! {
        result = all => result,
        () = gate.run(&app) => anyhow::bail!("the data-plane gate lost the registry or the snapshots"),
    }
}

/// The gate's inputs and output for one run of the source.
struct GateFeed {
    gate: Arc<std::sync::Mutex<Gate>>,
    published: watch::Receiver<Published>,
    acks: Arc<watch::Sender<AckReport>>,
}

impl GateFeed {
    /// Records every publication against the snapshot served, and reports this replica's
    /// proxies after each change (a publication, a snapshot, an ACK, a connection).
    async fn run(mut self, app: &App) {
        let mut snapshots = app.snapshots.subscribe();
        let mut registry = app.registry.subscribe();
        loop {
            let record = tokio::select! {
                changed = snapshots.changed() => changed.is_ok().then_some(true),
                changed = self.published.changed() => changed.is_ok().then_some(true),
                changed = registry.changed() => {
                    tokio::time::sleep(ACK_DEBOUNCE).await;
                    changed.is_ok().then_some(false)
                }
            };
            let Some(record) = record else {
                return;
            };
            // A snapshot or a publication that arrived while an ACK burst was being waited out
            // must be recorded too: marking it seen without recording it would leave its
            // generations unacknowledged for good (the step held until DataPlaneLag).
            let record = record
                || snapshots.has_changed().unwrap_or(false)
                || self.published.has_changed().unwrap_or(false);
            registry.borrow_and_update();
            let snapshot = snapshots.borrow_and_update().clone();
            let report = {
                let mut gate = self
                    .gate
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if record && let Some(snapshot) = snapshot {
                    let published = self.published.borrow_and_update();
                    gate.record_matching(snapshot, &published.traffic, &published.generations);
                }
                gate.report(&app.registry.snapshot())
            };
            let report = AckReport {
                rollouts: report
                    .into_iter()
                    .map(|(rollout, acks)| {
                        (rollout, acks.iter().map(ReportedProxy::from).collect())
                    })
                    .collect(),
            };
            self.acks.send_if_modified(|current| {
                let changed = *current != report;
                if changed {
                    *current = report;
                }
                changed
            });
        }
    }
}
