//! The harness of the Kubernetes end-to-end test: manifests go through the same index the
//! watchers feed, the index's traffic state through the xDS translation into an in-process ADS
//! server, and from there into a real Envoy that routes to real loopback upstreams standing in
//! for the pods.
//!
//! ```text
//!  YAML (Rollout, Service, Pods) ─► manifests::apply_yaml ─► Index ─► state().traffic
//!        ─► translate ─► watch ─► AdsServer (127.0.0.1:0) ─ADS─► Envoy ─► Upstream per pod
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sluice_e2e::{
    Envoy, Req, Resp, check_binomial, filter_wasm, free_port, send_all, send_one, sluice_counters,
};
use sluice_k8s::{Index, TrafficState, manifests};
use sluice_xds::bootstrap::{BootstrapOptions, HostPort, Role, bootstrap_yaml};
use sluice_xds::registry::Registry;
use sluice_xds::server::AdsServer;
use sluice_xds::snapshot::Snapshot;
use sluice_xds::translate::{self, TranslateOptions, WasmSource};
use sluice_xds::type_url;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Generous bound for Envoy to take a new configuration or start serving on a noisy machine.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests per measured split.
pub const SPLIT_REQUESTS: usize = 2_000;
/// Keep-alive connections per batch of requests.
const CONNECTIONS: usize = 4;

/// The control plane's xDS half, in process: publishes translated states to an ADS server on
/// 127.0.0.1:0. Dropping it stops the server and its streams.
pub struct ControlPlane {
    pub addr: SocketAddr,
    pub registry: Registry,
    options: TranslateOptions,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ControlPlane {
    pub async fn start(initial: &TrafficState) -> anyhow::Result<Self> {
        let wasm = filter_wasm()?.to_string_lossy().into_owned();
        let options = TranslateOptions::new(WasmSource::Local { path: wasm });
        let first =
            translate::translate(initial, &options).context("translating the first state")?;
        let (snapshots, rx) = watch::channel(Some(Arc::new(first)));
        let registry = Registry::new();
        let node_options = options.clone();
        let ads = AdsServer::new(
            rx,
            // As `sluice serve` does: each Envoy gets the listener its node metadata asks for.
            Arc::new(move |metadata, snapshot: &Snapshot| {
                let mut own = snapshot.clone();
                own.insert(translate::listener_for_node(&node_options, metadata));
                own
            }),
            registry.clone(),
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the ADS listener")?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                // A dropped sender also means stop.
                let _ = stopped.await;
            };
            if let Err(error) = ads.serve(listener, shutdown).await {
                eprintln!("ADS server failed: {error}");
            }
        });
        Ok(ControlPlane {
            addr,
            registry,
            options,
            snapshots,
            stop: Some(stop),
            task,
        })
    }

    /// Translates and publishes `state`; returns the snapshot Envoy should end up with.
    pub fn publish(&self, state: &TrafficState) -> anyhow::Result<Arc<Snapshot>> {
        let snapshot = Arc::new(translate::translate(state, &self.options).context("translating")?);
        self.snapshots.send_replace(Some(Arc::clone(&snapshot)));
        Ok(snapshot)
    }

    /// Waits until `node` has ACKed every type of `snapshot` that Envoy holds whole (the
    /// listener differs per node, so it is left out).
    pub async fn wait_acked(&self, node: &str, snapshot: &Snapshot) -> anyhow::Result<()> {
        let deadline = Instant::now() + SYNC_TIMEOUT;
        let mut changes = self.registry.subscribe();
        let wanted: Vec<(&str, String)> = [
            type_url::CLUSTER,
            type_url::ENDPOINT,
            type_url::ROUTE,
            type_url::EXTENSION_CONFIG,
        ]
        .into_iter()
        // Envoy subscribes to no endpoints while there are no clusters.
        .filter(|t| snapshot.of_type(t).next().is_some())
        .map(|t| (t, snapshot.type_version(t)))
        .collect();
        loop {
            let proxies = self.registry.snapshot();
            let proxy = proxies.iter().find(|p| p.node_id == node);
            let missing: Vec<&str> = wanted
                .iter()
                .filter(|(t, version)| {
                    !proxy.is_some_and(|p| {
                        p.types
                            .iter()
                            .any(|s| s.type_url == *t && s.acked_version == *version)
                    })
                })
                .map(|(t, _)| *t)
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if let Some(nack) = proxy
                .into_iter()
                .flat_map(|p| &p.types)
                .find(|s| !s.last_nack.is_empty())
            {
                bail!("{node} NACKed {}: {}", nack.type_url, nack.last_nack);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("{node} has not ACKed {missing:?} after {SYNC_TIMEOUT:?}: {proxies:#?}");
            }
            // Wakes on any registry change; the timeout re-checks the deadline.
            let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), changes.changed()).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// A "cluster" without an API server: the index, the control plane and one Envoy.
pub struct World {
    pub index: Index,
    pub control_plane: ControlPlane,
    pub envoy: Envoy,
    pub listener: SocketAddr,
    node: String,
}

impl World {
    /// Applies `manifests`, starts the control plane on the resulting state and an Envoy
    /// bootstrapped to it, and waits until Envoy has that state.
    pub async fn start(node: &str, manifests: &str) -> anyhow::Result<Self> {
        let mut index = Index::default();
        let state = apply_checked(&mut index, manifests)?;
        let control_plane = ControlPlane::start(&state).await?;
        let mut options = BootstrapOptions::new(
            Role::Gateway,
            node,
            HostPort {
                host: "127.0.0.1".into(),
                port: control_plane.addr.port(),
            },
        );
        let listener = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        options.listener = Some(listener);
        options.admin = SocketAddr::from(([127, 0, 0, 1], 0));
        let envoy = Envoy::start(&bootstrap_yaml(&options)).await?;
        let mut world = World {
            index,
            control_plane,
            envoy,
            listener,
            node: node.to_owned(),
        };
        let snapshot = world.control_plane.publish(&state)?;
        world.sync(&snapshot).await?;
        Ok(world)
    }

    /// Applies more manifests (changed objects replace the old ones), publishes the new state
    /// and waits until Envoy has it.
    pub async fn apply(&mut self, manifests: &str) -> anyhow::Result<()> {
        let state = apply_checked(&mut self.index, manifests)?;
        self.publish(&state).await
    }

    /// Publishes the index's current state and waits until Envoy has it.
    pub async fn republish(&mut self) -> anyhow::Result<()> {
        let state = checked_state(&mut self.index)?;
        self.publish(&state).await
    }

    async fn publish(&mut self, state: &TrafficState) -> anyhow::Result<()> {
        let snapshot = self.control_plane.publish(state)?;
        self.sync(&snapshot).await
    }

    /// Waits for the ACKs, then for the listener to answer (it exists from the first sync on).
    async fn sync(&mut self, snapshot: &Snapshot) -> anyhow::Result<()> {
        self.control_plane
            .wait_acked(&self.node, snapshot)
            .await
            .with_context(|| format!("Envoy's log:\n{}", self.envoy.logs()))?;
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            self.envoy.ensure_running()?;
            match send_one(self.listener, Req::get("probe.invalid")).await {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() > deadline => {
                    bail!("listener {} not answering: {error:#}", self.listener)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub async fn send(&self, requests: Vec<Req>) -> anyhow::Result<Vec<Resp>> {
        send_all(self.listener, requests, CONNECTIONS).await
    }

    /// Sends `n` requests cycling through `hosts` (each with `headers`) and counts the answers
    /// per upstream; any answer that is not a 200 from an upstream fails.
    pub async fn by_upstream(
        &self,
        hosts: &[&str],
        headers: &[(&str, &str)],
        n: usize,
    ) -> anyhow::Result<BTreeMap<String, u64>> {
        let requests = (0..n)
            .map(|i| {
                headers
                    .iter()
                    .fold(Req::get(hosts[i % hosts.len()]), |r, (k, v)| r.header(k, v))
            })
            .collect();
        let mut counts = BTreeMap::new();
        for (i, response) in self.send(requests).await?.iter().enumerate() {
            let Some(upstream) = response.upstream().filter(|_| response.status == 200) else {
                bail!(
                    "request {i} (host {}): status {} without an upstream: {:?}",
                    hosts[i % hosts.len()],
                    response.status,
                    String::from_utf8_lossy(&response.body)
                );
            };
            *counts.entry(upstream.to_owned()).or_default() += 1;
        }
        Ok(counts)
    }

    /// Checks that `target`'s share of [`SPLIT_REQUESTS`] requests is within 4 binomial sigma
    /// of `p` (exact at 0 and 1) and that nothing else than `target` and `others` answered.
    pub async fn check_share(
        &self,
        what: &str,
        hosts: &[&str],
        headers: &[(&str, &str)],
        target: &str,
        others: &[&str],
        p: f64,
    ) -> anyhow::Result<BTreeMap<String, u64>> {
        let counts = self.by_upstream(hosts, headers, SPLIT_REQUESTS).await?;
        eprintln!("{what}: {counts:?}");
        if let Some(stray) = counts
            .keys()
            .find(|u| *u != target && !others.contains(&u.as_str()))
        {
            bail!("{what}: upstream {stray:?} answered: {counts:?}");
        }
        let on_target = counts.get(target).copied().unwrap_or(0);
        check_binomial(what, on_target, SPLIT_REQUESTS as u64, p)?;
        Ok(counts)
    }

    /// Waits until the filter's counters show at least `at_least` decisions for `reason`
    /// ("weight", "header", ...): the filter, not the native weighted fallback route, decided.
    /// The filter adds its counts to Envoy's in batches, so they lag the traffic.
    pub async fn wait_filter_decisions(
        &mut self,
        reason: &str,
        at_least: u64,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            let counters = sluice_counters(&self.envoy.stats_prometheus().await?)?;
            let decided: u64 = counters
                .iter()
                .filter(|((_, _, r), _)| r == reason)
                .map(|(_, n)| n)
                .sum();
            if decided >= at_least {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("fewer than {at_least} filter decisions by {reason}: {counters:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The status of one request to `host`.
    pub async fn status_of(&self, host: &str) -> anyhow::Result<u16> {
        Ok(send_one(self.listener, Req::get(host)).await?.status)
    }
}

fn apply_checked(index: &mut Index, manifests: &str) -> anyhow::Result<TrafficState> {
    manifests::apply_yaml(index, manifests)
        .map_err(|e| anyhow::anyhow!("applying manifests: {e}"))?;
    checked_state(index)
}

/// The index's traffic state; every manifest of these tests is valid, so any error fails.
fn checked_state(index: &mut Index) -> anyhow::Result<TrafficState> {
    let state = index.state();
    if !state.errors.is_empty() {
        bail!("the index reports errors: {:?}", state.errors);
    }
    Ok(state.traffic)
}

/// A Pod of `app` with template hash `hash`, on 127.0.0.1 with its container port `http` at
/// `port` (a real upstream's port), Ready or not.
pub fn pod(
    ns: &str,
    name: &str,
    app: &str,
    hash: &str,
    port: u16,
    ready: bool,
    created: &str,
) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  creationTimestamp: "{created}"
  labels:
    app: {app}
    rollouts-pod-template-hash: "{hash}"
spec:
  containers:
  - name: app
    image: registry.example/{app}:{hash}
    ports:
    - name: metrics
      containerPort: 9090
    - name: http
      containerPort: {port}
status:
  phase: Running
  podIP: 127.0.0.1
  conditions:
  - type: Ready
    status: "{ready}"
"#,
        ready = if ready { "True" } else { "False" },
    )
}

/// A ClusterIP Service of `app` on port 80 whose targetPort is the pods' named port `http`.
pub fn service(ns: &str, name: &str, app: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
spec:
  selector:
    app: {app}
  ports:
  - name: http
    port: 80
    targetPort: http
"#
    )
}
