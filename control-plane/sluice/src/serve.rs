//! `sluice serve`: wires the source, the store, the translation and the servers together.
//!
//! ```text
//!  source (standalone: file + release engine | Kubernetes: watches + leader's engine)
//!     │ SourceEvent::State (complete states only) / SourceEvent::Rejected
//!     ▼
//!  App::apply_source ─► Store (last good state, overrides, last error) ─► publish():
//!     translate ─► Snapshot ─► watch channel ─► ADS server ─► every Envoy
//! ```

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Args;
use sha2::{Digest, Sha256};
use sluice_model::TrafficState;
use sluice_proto::admin::v1::admin_server::AdminServer;
use sluice_xds::{
    registry::Registry,
    server::AdsServer,
    snapshot::Snapshot,
    translate::{self, NativeSource, TranslateOptions, WasmSource},
};
use tokio::{
    net::TcpListener,
    sync::{Mutex, watch},
};
use tracing::{error, info, warn};

use crate::{
    admin::AdminService,
    http,
    metrics::Metrics,
    store::Store,
    supervise::{OnFailure, Supervisor},
};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "kubernetes"])))]
pub struct ServeArgs {
    /// Standalone mode: the rollouts file (YAML Rollout documents with static endpoints),
    /// hot-reloaded on change.
    #[arg(long, env = "SLUICE_FILE")]
    pub file: Option<PathBuf>,
    /// Kubernetes mode: follow Rollouts, Pods and Services through the API server (in-cluster
    /// service account or kubeconfig).
    #[arg(long, env = "SLUICE_KUBERNETES")]
    pub kubernetes: bool,
    #[command(flatten)]
    pub k8s: crate::k8s_source::K8sArgs,
    #[command(flatten)]
    pub security: crate::auth::SecurityArgs,
    /// Address of the xDS (ADS) gRPC server that Envoys connect to.
    #[arg(long, env = "SLUICE_XDS_ADDR", default_value = "127.0.0.1:18000")]
    pub xds_addr: SocketAddr,
    /// Address of the admin/status gRPC API used by the CLI.
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "127.0.0.1:18001")]
    pub admin_addr: SocketAddr,
    /// Address of the HTTP server: /metrics, /healthz, /readyz and the filter module.
    #[arg(long, env = "SLUICE_HTTP_ADDR", default_value = "127.0.0.1:18002")]
    pub http_addr: SocketAddr,
    /// Listener address pushed to Envoys whose node metadata has no `sluice.listener`.
    #[arg(long, env = "SLUICE_ENVOY_LISTENER", default_value = "0.0.0.0:10000")]
    pub envoy_listener: SocketAddr,
    /// Internal request header that carries the chosen pod-template hash.
    #[arg(long, env = "SLUICE_ROUTING_HEADER", default_value = sluice_proto::DEFAULT_ROUTING_HEADER)]
    pub routing_header: String,
    /// The filter module (sluice_filter.wasm), served at /sluice_filter.wasm.
    #[arg(long, env = "SLUICE_WASM")]
    pub wasm: PathBuf,
    /// Where Envoys find the module on their own machine, when they load it from a file (default:
    /// the absolute --wasm path, right when Envoy runs beside the control plane).
    #[arg(long, env = "SLUICE_ENVOY_WASM_PATH", conflicts_with = "wasm_url")]
    pub envoy_wasm_path: Option<String>,
    /// For Envoys that run the native filter (`sluice bootstrap --filter native`): the path of
    /// libsluice_filter_native.so on their machine. Default: Envoy finds it on its
    /// ENVOY_DYNAMIC_MODULES_SEARCH_PATH.
    #[arg(long, env = "SLUICE_ENVOY_NATIVE_PATH")]
    pub envoy_native_path: Option<String>,
    /// Serve the module over HTTP instead of naming a local path: Envoys fetch it from this URL
    /// (through their `sluice_control_plane_http` bootstrap cluster) and check its sha256, so
    /// sidecars need no volume with the module. E.g. http://sluice:18002/sluice_filter.wasm
    #[arg(long, env = "SLUICE_WASM_URL")]
    pub wasm_url: Option<String>,
    /// Changes closer together than this are pushed as one.
    #[arg(long, env = "SLUICE_DEBOUNCE_MS", default_value_t = 20)]
    pub debounce_ms: u64,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "SLUICE_LOG", default_value = "info")]
    pub log: String,
}

/// What every server task shares.
pub struct App {
    pub store: Mutex<Store>,
    /// `None` until the store holds a first valid state: the ADS server sends nothing before.
    pub snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    pub metrics: Metrics,
    pub registry: Registry,
    pub wasm: Arc<Vec<u8>>,
    pub supervisor: Supervisor,
    /// Each Envoy's snapshot (its scope's share); the data-plane gate reads ACKs against it.
    pub nodes: Arc<sluice_xds::scope::NodeSnapshots>,
    /// Standalone mode: the release engine (its state file, commands, views).
    pub standalone: Option<Arc<crate::standalone::Standalone>>,
}

/// What a source (the rollouts file with its engine, or the Kubernetes watches) tells the
/// store. A source sends a state only when it is complete (the file loaded; every watch listed
/// once), so the first `State` is also the source's "synced".
#[derive(Debug)]
pub enum SourceEvent {
    /// A complete, valid traffic state. `still_rejected`: the newest input was refused and this
    /// is the last good one; its message stays shown (`sluice status`) until good input comes.
    State {
        state: TrafficState,
        still_rejected: Option<String>,
    },
    /// Input that cannot be served as written (file, object, field and why): logged, counted,
    /// shown; the last good state keeps serving.
    Rejected(String),
}

impl App {
    /// The one place source output reaches the store: applies `events` in order, then publishes
    /// once. Returns when the resulting snapshot (if any) is published.
    pub async fn apply_source(&self, events: impl IntoIterator<Item = SourceEvent>) {
        {
            let mut store = self.store.lock().await;
            for event in events {
                match event {
                    SourceEvent::State {
                        state,
                        still_rejected,
                    } => {
                        info!(
                            rollouts = state.rollouts.len(),
                            "traffic state from the source"
                        );
                        store.set_source(state);
                        if let Some(message) = still_rejected {
                            store.set_source_error(message);
                        }
                    }
                    SourceEvent::Rejected(message) => {
                        warn!(error = %message, "source input rejected; the last good state keeps serving");
                        self.metrics.source_error();
                        store.set_source_error(message);
                    }
                }
            }
        }
        self.publish().await;
    }

    /// Translates the store's effective state and publishes it if it changed. A translation
    /// error leaves the last snapshot serving. Nothing is published before the store holds a
    /// first valid state: Envoys keep what they have rather than get an empty configuration.
    pub async fn publish(&self) {
        let store = self.store.lock().await;
        let ready = store.is_ready();
        let state = store.effective();
        self.metrics.set_rollouts(state.rollouts.len());
        self.metrics.set_ready(ready);
        drop(store);
        if ready {
            self.publish_state(&state);
        }
    }

    fn publish_state(&self, state: &TrafficState) {
        // Re-encodes only the rollouts that changed (the cache is shared with the scopes').
        match self.nodes.translate(state) {
            Ok(snapshot) => {
                let version = snapshot.version();
                let changed = self.snapshots.send_if_modified(|current| {
                    if current.as_deref() == Some(&snapshot) {
                        return false;
                    }
                    *current = Some(Arc::new(snapshot));
                    true
                });
                if changed {
                    self.metrics.snapshot_published();
                    info!(%version, rollouts = state.rollouts.len(), "snapshot published");
                }
            }
            Err(e) => {
                error!(error = %e, "translation failed; the last snapshot keeps serving");
                self.metrics.source_error();
            }
        }
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .init();

    let wasm = std::fs::read(&args.wasm)
        .with_context(|| format!("reading the filter module {}", args.wasm.display()))?;
    let wasm_source = match &args.wasm_url {
        Some(uri) => WasmSource::Remote {
            uri: uri.clone(),
            cluster: sluice_xds::bootstrap::WASM_FETCH_CLUSTER.to_string(),
            sha256: hex::encode(Sha256::digest(&wasm)),
        },
        None => WasmSource::Local {
            path: match &args.envoy_wasm_path {
                Some(path) => path.clone(),
                None => std::path::absolute(&args.wasm)?.display().to_string(),
            },
        },
    };
    let options = TranslateOptions {
        listener_address: args.envoy_listener,
        routing_header: args.routing_header.clone(),
        wasm: wasm_source,
        native: match &args.envoy_native_path {
            Some(path) => NativeSource::Local { path: path.clone() },
            None => NativeSource::default(),
        },
    };

    let metrics = Metrics::new();
    let registry = Registry::with_callbacks(Arc::new(metrics.clone()));
    // Fail at start-up, not at the first publication, if the options cannot translate at all.
    translate::translate(&TrafficState::default(), &options)?;
    let (snapshots, snapshot_rx) = watch::channel(None);
    let supervisor = Supervisor::new(metrics.clone());
    // A corrupt state file stops the start: never a silent reset of a release in progress.
    let nodes = Arc::new(sluice_xds::scope::NodeSnapshots::new(options));
    let standalone = match &args.file {
        Some(file) => Some(crate::standalone::Standalone::open(file, nodes.clone())?),
        None => None,
    };
    let app = Arc::new(App {
        store: Mutex::new(Store::default()),
        snapshots,
        metrics,
        registry: registry.clone(),
        wasm: Arc::new(wasm),
        supervisor: supervisor.clone(),
        nodes: nodes.clone(),
        standalone: standalone.clone(),
    });

    // Shutdown: Ctrl-C or SIGTERM flips this; every server drains and returns.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    let on_signal = shutdown_tx.clone();
    supervisor.spawn_once("signal handler", async move {
        wait_for_signal().await;
        info!("shutting down: draining xDS streams");
        on_signal.send_replace(true);
        Ok(())
    });

    // The source: a file (loaded now, then followed) or the Kubernetes API. Each runs as a
    // supervised task, restarted if it fails.
    let source_task = match &args.file {
        Some(file) => {
            let standalone = standalone.clone().context("standalone engine")?;
            crate::standalone::start(&app, &standalone, file).await?;
            let (app, file, shutdown) = (app.clone(), file.clone(), shutdown_rx.clone());
            let debounce = Duration::from_millis(args.debounce_ms);
            let mut restarted = false;
            supervisor.spawn("release engine", OnFailure::RESTART, move || {
                // A restarted task reads the file again: edits made while it was down count.
                let reload = std::mem::replace(&mut restarted, true);
                crate::standalone::follow(
                    app.clone(),
                    standalone.clone(),
                    file.clone(),
                    debounce,
                    reload,
                    shutdown.clone(),
                )
            })
        }
        None => crate::k8s_source::start(app.clone(), &args.k8s, shutdown_rx.clone()).await?,
    };

    let ads = AdsServer::new(
        snapshot_rx,
        Arc::new(move |metadata, snapshot: &Snapshot| {
            // Each Envoy may ask for its own listener address (node metadata `sluice.listener`),
            // filter build (`sluice.filter`) and the rollouts it needs (`sluice.scope`).
            nodes.for_node(metadata, snapshot)
        }),
        registry,
    );
    let xds_listener = TcpListener::bind(args.xds_addr)
        .await
        .with_context(|| format!("binding the xDS address {}", args.xds_addr))?;
    let xds = ads.serve_tls(
        xds_listener,
        args.security.xds_tls()?,
        shutdown_signal(shutdown_rx.clone()),
    );
    let xds = supervisor.spawn_once("xDS server", async { xds.await.context("xDS server") });
    let admin_auth = Arc::new(crate::auth::AdminAuth::from_args(&args.security).await?);
    let mut admin = tonic::transport::Server::builder();
    if let Some(tls) = args.security.admin_tls()? {
        admin = admin
            .tls_config(tls)
            .context("the admin API's TLS configuration")?;
    }
    let admin = admin
        .add_service(AdminServer::new(AdminService::new(app.clone(), admin_auth)))
        .serve_with_shutdown(args.admin_addr, shutdown_signal(shutdown_rx.clone()));
    let admin = supervisor.spawn_once("admin server", async {
        admin.await.context("admin server")
    });
    let http = http::serve(
        app.clone(),
        args.http_addr,
        shutdown_signal(shutdown_rx.clone()),
    );
    let http = supervisor.spawn_once("HTTP server", async { http.await.context("HTTP server") });
    info!(xds = %args.xds_addr, admin = %args.admin_addr, http = %args.http_addr, file = ?args.file, kubernetes = args.kubernetes, "sluice control plane serving");

    // Until every task ended (after a signal) — or one that cannot be restarted failed: then
    // everything stops and the process exits with that error.
    let stopped = async {
        let _ = tokio::join!(xds, admin, http, source_task);
    };
    tokio::pin!(stopped);
    tokio::select! {
        () = &mut stopped => {
            info!("stopped");
            Ok(())
        }
        failure = supervisor.fatal() => {
            error!(%failure, "stopping: a task that cannot be restarted failed");
            shutdown_tx.send_replace(true);
            // Give the others a moment to drain; the error is the exit status either way.
            let _ = tokio::time::timeout(Duration::from_secs(5), stopped).await;
            Err(anyhow::anyhow!("{failure}"))
        }
    }
}

async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means shut down.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
