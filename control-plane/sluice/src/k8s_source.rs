//! Kubernetes mode's source: `sluice-k8s` watches Rollouts, Pods and Services and publishes the
//! traffic state; this feeds it into the store, the same way the file source does.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use sluice_model::TrafficState;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{serve::App, supervise::OnFailure};

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
        // The data-plane gate is not wired in Kubernetes mode yet: without `data_plane` the
        // release engine sees no proxies and takes a step without waiting for ACKs. Wiring it
        // needs, per proxy in `app.registry`, the newest `status.dataPlane.generation` of each
        // rollout carried by the xDS versions it ACKed (a history "snapshot version → traffic
        // generations"), and for several replicas a per-replica report object the leader reads.
        data_plane: None,
        ..Default::default()
    };
    let supervisor = app.supervisor.clone();
    Ok(
        supervisor.spawn("Kubernetes source", OnFailure::RESTART, move || {
            run(
                app.clone(),
                client.clone(),
                config.clone(),
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
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (tx, mut rx) = watch::channel(TrafficState::default());
    let (errors_tx, mut errors_rx) = mpsc::channel::<sluice_k8s::SourceError>(64);
    let states = async {
        // The source notifies only once every watch has listed.
        while rx.changed().await.is_ok() {
            let state = rx.borrow_and_update().clone();
            info!(
                rollouts = state.rollouts.len(),
                "traffic state from Kubernetes"
            );
            app.store.lock().await.set_source(state);
            app.publish().await;
        }
    };
    let errors = async {
        while let Some(error) = errors_rx.recv().await {
            // The index keeps serving the rollout's last good state; report where users look.
            warn!(%error, "rollout rejected; its last good state keeps serving");
            app.metrics.source_error();
            app.store.lock().await.set_source_error(error.to_string());
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
    // The loops end when the source returns (it drops the senders).
    let (result, (), ()) = tokio::join!(source, states, errors);
    result
}
