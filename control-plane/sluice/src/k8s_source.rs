//! Kubernetes mode's source: `sluice-k8s` watches Rollouts, Pods and Services and publishes the
//! traffic state; this feeds it into the store, the same way the file source does.

use std::{future::Future, sync::Arc};

use anyhow::Context as _;
use clap::Args;
use sluice_model::TrafficState;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::serve::App;

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

/// Starts the watches. The store becomes ready when every watch has listed once.
pub async fn start(
    app: Arc<App>,
    args: &K8sArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
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
    let (tx, mut rx) = watch::channel(TrafficState::default());
    let (errors_tx, mut errors_rx) = mpsc::channel::<sluice_k8s::SourceError>(64);

    let states = app.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let state = rx.borrow_and_update().clone();
            info!(
                rollouts = state.rollouts.len(),
                "traffic state from Kubernetes"
            );
            states.store.lock().await.set_source(state);
            states.publish().await;
        }
    });
    let errors = app.clone();
    tokio::spawn(async move {
        while let Some(error) = errors_rx.recv().await {
            // The index keeps serving the rollout's last good state; report where users look.
            warn!(%error, "rollout rejected; its last good state keeps serving");
            errors.metrics.source_error();
            errors
                .store
                .lock()
                .await
                .set_source_error(error.to_string());
        }
    });
    Ok(tokio::spawn(async move {
        sluice_k8s::run(client, config, tx, errors_tx, shutdown)
            .await
            .context("Kubernetes source")
    }))
}
