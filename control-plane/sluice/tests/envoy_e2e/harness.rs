//! The pieces every test needs: the `sluice` control plane as a child process (killed on drop,
//! restartable on the same ports), its rollouts file, real Envoys bootstrapped by `sluice
//! bootstrap`, admin/status calls, and keep-alive HTTP clients.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use sluice_e2e::client::http_get;
use sluice_e2e::{Envoy, Req, Resp, free_port, send_all};
use sluice_proto::admin::v1::{
    ProxyStatus, SetWeightRequest, StatusRequest, StatusResponse, admin_client::AdminClient,
};
use tempfile::TempDir;
use tokio::time::Instant;

pub const ROLLOUT: &str = "default/demo";
pub const HOST: &str = "demo.local";
pub const STABLE: &str = "6d4f8b7c9a";
pub const CANARY: &str = "7c9b2d5f6b";
pub const THIRD: &str = "8e1a3c5d7f";
/// The type URL of the ECDS resource (the filter's policy).
pub const ECDS_TYPE: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
/// Weights live in the routes: a weight change is an RDS change only.
pub const RDS_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Delta Envoys get each rollout's routes as a virtual host of its own (VHDS).
pub const VHDS_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";
/// Generous bound for anything to become ready on a loaded 2-core machine.
pub const READY: Duration = Duration::from_secs(60);
/// Keep-alive connections per load run.
pub const CONNECTIONS: usize = 4;
/// The admin API's bearer token (its file is in the control plane's temp dir).
pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// The control plane's addresses, chosen before it starts so a restart reuses them.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub xds: SocketAddr,
    pub admin: SocketAddr,
    pub http: SocketAddr,
}

impl Ports {
    pub fn free() -> anyhow::Result<Self> {
        let port = || -> anyhow::Result<SocketAddr> {
            Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
        };
        Ok(Self {
            xds: port()?,
            admin: port()?,
            http: port()?,
        })
    }
}

/// A running `sluice serve` in standalone mode. Dropping it kills the process.
#[derive(Debug)]
pub struct ControlPlane {
    pub ports: Ports,
    dir: TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl ControlPlane {
    /// Writes the rollouts file and starts the control plane on fresh ports.
    pub async fn start(rollouts_yaml: &str, extra_args: &[String]) -> anyhow::Result<Self> {
        Self::start_on(Ports::free()?, rollouts_yaml, extra_args).await
    }

    /// Like [`ControlPlane::start`] on the given ports (e.g. when `--wasm-url` names the HTTP port).
    pub async fn start_on(
        ports: Ports,
        rollouts_yaml: &str,
        extra_args: &[String],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-cp-e2e-")
            .tempdir()
            .context("creating the control plane's temp dir")?;
        let file = dir.path().join("rollouts.yaml");
        std::fs::write(&file, rollouts_yaml).context("writing the rollouts file")?;
        let token_file = dir.path().join("admin-token");
        std::fs::write(&token_file, ADMIN_TOKEN).context("writing the admin token file")?;
        let wasm = sluice_e2e::filter_wasm()?;
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--file".into(),
            file.display().to_string(),
            "--wasm".into(),
            wasm.display().to_string(),
            "--xds-addr".into(),
            ports.xds.to_string(),
            "--admin-addr".into(),
            ports.admin.to_string(),
            "--http-addr".into(),
            ports.http.to_string(),
            // Every Envoy names its own listener in its bootstrap; this default is unused.
            "--envoy-listener".into(),
            format!("127.0.0.1:{}", free_port()?),
            "--log".into(),
            // E2E_SLUICE_LOG=debug to see the control plane's side of a failing test.
            std::env::var("E2E_SLUICE_LOG").unwrap_or_else(|_| "info".into()),
            "--admin-token-file".into(),
            token_file.display().to_string(),
        ];
        args.extend(extra_args.iter().cloned());
        let mut cp = Self {
            ports,
            dir,
            args,
            child: None,
        };
        cp.spawn_and_wait(true).await?;
        Ok(cp)
    }

    /// The rollouts file the control plane watches.
    pub fn file(&self) -> PathBuf {
        self.dir.path().join("rollouts.yaml")
    }

    /// Replaces the rollouts file atomically (write a temp file, rename over), as editors and
    /// config tools do.
    pub fn write_file(&self, yaml: &str) -> anyhow::Result<()> {
        let tmp = self.dir.path().join("rollouts.yaml.tmp");
        std::fs::write(&tmp, yaml).context("writing the temp rollouts file")?;
        std::fs::rename(&tmp, self.file()).context("renaming over the rollouts file")
    }

    /// SIGKILL, no graceful shutdown.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("killing the control plane")?;
            child.wait().context("reaping the control plane")?;
        }
        Ok(())
    }

    /// Starts it again with the same arguments and ports.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn_and_wait(true).await
    }

    /// Starts it again (same arguments and ports) on a file it will not accept: waits until its
    /// HTTP server answers, not until it is ready.
    pub async fn restart_not_ready(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn_and_wait(false).await
    }

    /// Starts the process and waits for `/readyz` to say 200 (`ready`) or to answer at all.
    async fn spawn_and_wait(&mut self, ready: bool) -> anyhow::Result<()> {
        let log_path = self.dir.path().join("sluice.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .context("opening the control plane's log")?;
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cloning the log handle")?)
            .stderr(log)
            .spawn()
            .context("starting sluice serve")?;
        self.child = Some(child);
        let deadline = Instant::now() + READY;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("polling sluice")?
            {
                bail!("sluice serve exited ({status}); its log:\n{}", self.log());
            }
            match http_get(self.ports.http, "/readyz").await {
                Ok((200, _)) => return Ok(()),
                Ok(_) if !ready => return Ok(()),
                _ => {}
            }
            if Instant::now() > deadline {
                bail!(
                    "sluice serve not ready after {READY:?}; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sluice.log")).unwrap_or_default()
    }

    /// GET on the HTTP server (`/readyz`, `/metrics`): (status, body).
    pub async fn http(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.ports.http, path).await
    }

    async fn admin(&self) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
        AdminClient::connect(format!("http://{}", self.ports.admin))
            .await
            .with_context(|| format!("connecting to the admin API at {}", self.ports.admin))
    }

    pub async fn status(&self) -> anyhow::Result<StatusResponse> {
        Ok(self
            .admin()
            .await?
            .status(authorized(StatusRequest {}))
            .await
            .context("admin Status")?
            .into_inner())
    }

    /// Admin override of the canary weight, in percent.
    pub async fn set_weight(&self, percent: u32) -> anyhow::Result<()> {
        self.admin()
            .await?
            .set_weight(authorized(SetWeightRequest {
                rollout: ROLLOUT.into(),
                weight_bp: percent * 100,
            }))
            .await
            .with_context(|| format!("admin SetWeight {percent} %"))?;
        Ok(())
    }

    /// Runs the `sluice` CLI against this control plane's admin API; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .args(["--admin", &format!("http://{}", self.ports.admin)])
            .arg("--token-file")
            .arg(self.dir.path().join("admin-token"))
            .output()
            .context("running the sluice CLI")?;
        if !output.status.success() {
            bail!(
                "sluice {args:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The proxy called `node_id` once every resource type it has been sent is ACKed and
    /// `done(proxy)` holds.
    pub async fn wait_synced(
        &self,
        node_id: &str,
        mut done: impl FnMut(&ProxyStatus) -> bool,
    ) -> anyhow::Result<ProxyStatus> {
        let deadline = Instant::now() + READY;
        let mut last = None;
        loop {
            if let Ok(status) = self.status().await {
                let proxy = status.proxies.into_iter().find(|p| p.node_id == node_id);
                if let Some(proxy) = &proxy
                    && proxy.types.len() >= 5
                    && proxy.types.iter().all(|t| {
                        // A proxy that reconnects with the current versions is sent nothing.
                        !t.acked_version.is_empty()
                            && (t.sent_version.is_empty() || t.acked_version == t.sent_version)
                    })
                    && done(proxy)
                {
                    return Ok(proxy.clone());
                }
                last = proxy;
            }
            if Instant::now() > deadline {
                bail!("proxy {node_id} not synced after {READY:?}; last seen: {last:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `message` with the admin bearer token.
pub fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {ADMIN_TOKEN}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it already exited.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The ACKed version of one resource type ("" when none).
pub fn acked(proxy: &ProxyStatus, type_url: &str) -> String {
    proxy
        .types
        .iter()
        .find(|t| t.type_url == type_url)
        .map(|t| t.acked_version.clone())
        .unwrap_or_default()
}

/// The ACKed versions of the types that carry the weights: the route configuration, and for a
/// delta Envoy the virtual hosts (VHDS) too.
pub fn routes_acked(proxy: &ProxyStatus) -> String {
    format!("{}|{}", acked(proxy, RDS_TYPE), acked(proxy, VHDS_TYPE))
}

/// Every type's ACKed version.
pub fn acked_all(proxy: &ProxyStatus) -> BTreeMap<String, String> {
    proxy
        .types
        .iter()
        .map(|t| (t.type_url.clone(), t.acked_version.clone()))
        .collect()
}

/// The demo rollout as a standalone rollouts file document.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// Hash → upstream address, for `spec.staticEndpoints`.
    pub versions: Vec<(String, SocketAddr)>,
    pub stable: String,
    /// `status.currentPodHash`; None means no canary (current = stable).
    pub canary: Option<String>,
    /// The `setWeight` step's percent (written as given, so invalid values can be tested).
    pub weight: i64,
    /// Whether the `setHeaderRoute` step (x-canary: 1 → canary) is reached.
    pub header_route: bool,
    /// `stickiness.header`.
    pub sticky_header: Option<String>,
}

impl Rollout {
    /// Stable and canary, each with its upstream.
    pub fn two(stable: SocketAddr, canary: SocketAddr, weight: i64) -> Self {
        Self {
            versions: vec![(STABLE.into(), stable), (CANARY.into(), canary)],
            stable: STABLE.into(),
            canary: Some(CANARY.into()),
            weight,
            header_route: false,
            sticky_header: None,
        }
    }

    pub fn weight(mut self, weight: i64) -> Self {
        self.weight = weight;
        self
    }

    /// The YAML: steps `setWeight`, `setHeaderRoute` (when wanted) and a final pause, with the
    /// status at that pause so every step before it is reached.
    pub fn yaml(&self) -> String {
        let mut steps = format!("        - setWeight: {}\n", self.weight);
        if self.header_route {
            steps.push_str(
                "        - setHeaderRoute:\n\
                 \x20           name: testers\n\
                 \x20           match:\n\
                 \x20             - headerName: x-canary\n\
                 \x20               headerValue: {exact: \"1\"}\n",
            );
        }
        steps.push_str("        - pause: {}\n");
        let pause_index = if self.header_route { 2 } else { 1 };
        let sticky = match &self.sticky_header {
            Some(header) => format!("      stickiness:\n        header: {header}\n"),
            None => String::new(),
        };
        let endpoints: String = self
            .versions
            .iter()
            .map(|(hash, addr)| format!("    \"{hash}\": [\"{addr}\"]\n"))
            .collect();
        let current = self.canary.as_deref().unwrap_or(&self.stable);
        format!(
            "apiVersion: sluice.dev/v1alpha1\n\
             kind: Rollout\n\
             metadata:\n  name: demo\n  namespace: default\n\
             spec:\n  hosts: [{HOST}]\n\
             \x20 staticEndpoints:\n{endpoints}\
             \x20 strategy:\n    canary:\n{sticky}      steps:\n{steps}\
             status:\n  stableRS: \"{}\"\n  currentPodHash: \"{current}\"\n  currentStepIndex: {pause_index}\n",
            self.stable
        )
    }
}

/// A real Envoy that knows only the control plane, and the address of its HTTP listener.
#[derive(Debug)]
pub struct Proxy {
    pub envoy: Envoy,
    pub node_id: String,
    pub listener: SocketAddr,
}

/// How to bootstrap an Envoy.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyOptions {
    pub delta: bool,
    /// Fetch the filter module from the control plane's HTTP server.
    pub wasm_server: bool,
    /// Run the native filter build (`sluice bootstrap --filter native`).
    pub native: bool,
}

impl Proxy {
    /// Bootstraps with `sluice bootstrap` and starts Envoy (admin LIVE). The listener may still
    /// be warming: use [`Proxy::wait_serving`] before sending traffic.
    pub async fn start(
        cp: &ControlPlane,
        node_id: &str,
        options: ProxyOptions,
    ) -> anyhow::Result<Self> {
        Self::start_with(cp, node_id, options, &[]).await
    }

    /// [`Proxy::start`] with more `sluice bootstrap` arguments (e.g. xDS TLS).
    pub async fn start_with(
        cp: &ControlPlane,
        node_id: &str,
        options: ProxyOptions,
        bootstrap_args: &[String],
    ) -> anyhow::Result<Self> {
        let listener = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut args = vec![
            "bootstrap".to_string(),
            "--xds".into(),
            cp.ports.xds.to_string(),
            "--node-id".into(),
            node_id.into(),
            "--listener".into(),
            listener.to_string(),
            "--admin".into(),
            "127.0.0.1:0".into(),
        ];
        if options.delta {
            args.push("--delta".into());
        }
        if options.wasm_server {
            args.push("--wasm-server".into());
            args.push(cp.ports.http.to_string());
        }
        args.extend(bootstrap_args.iter().cloned());
        if options.native {
            args.push("--filter".into());
            args.push("native".into());
        }
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .output()
            .context("running sluice bootstrap")?;
        if !output.status.success() {
            bail!(
                "sluice bootstrap failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let bootstrap = String::from_utf8(output.stdout).context("bootstrap is not UTF-8")?;
        let envoy = Envoy::start(&bootstrap).await?;
        Ok(Self {
            envoy,
            node_id: node_id.into(),
            listener,
        })
    }

    /// Starts an Envoy and waits until its listener answers 200 from one of the rollout's
    /// upstreams.
    pub async fn start_serving(
        cp: &ControlPlane,
        node_id: &str,
        options: ProxyOptions,
    ) -> anyhow::Result<Self> {
        let mut proxy = Self::start(cp, node_id, options).await?;
        proxy.wait_serving().await?;
        Ok(proxy)
    }

    pub async fn wait_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY;
        loop {
            self.envoy.ensure_running()?;
            let last = match sluice_e2e::send_one(self.listener, Req::get(HOST)).await {
                Ok(response) if response.status == 200 && response.upstream().is_some() => {
                    return Ok(());
                }
                Ok(response) => format!("status {}", response.status),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "Envoy {} listener {} not serving after {READY:?} (last: {last}); its log:\n{}",
                    self.node_id,
                    self.listener,
                    self.envoy.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends the requests over [`CONNECTIONS`] keep-alive connections.
    pub async fn send(&self, requests: Vec<Req>) -> anyhow::Result<Vec<Resp>> {
        send_all(self.listener, requests, CONNECTIONS).await
    }

    /// The filter's decision counters once `done` holds for them. The filter adds its counts to
    /// Envoy's counters in batches (about once a second), so they lag the traffic.
    pub async fn wait_decisions(
        &mut self,
        mut done: impl FnMut(&BTreeMap<(String, String), u64>) -> bool,
    ) -> anyhow::Result<BTreeMap<(String, String), u64>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let decisions = self.decisions().await?;
            if done(&decisions) {
                return Ok(decisions);
            }
            if Instant::now() > deadline {
                bail!("filter decision counters never got there: {decisions:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The filter's decision counters (`wasmcustom.sluice_requests_total...`), by
    /// (version, reason), summed over rollouts.
    pub async fn decisions(&mut self) -> anyhow::Result<BTreeMap<(String, String), u64>> {
        let body = self
            .envoy
            .admin_get("/stats?filter=sluice_requests_total")
            .await?;
        let mut counts = BTreeMap::new();
        for line in body.lines() {
            let Some((name, value)) = line.split_once(": ") else {
                continue;
            };
            let parts: Vec<&str> = name.split('.').collect();
            let field = |key: &str| {
                parts
                    .iter()
                    .position(|p| *p == key)
                    .and_then(|i| parts.get(i + 1))
                    .map(|s| s.to_string())
            };
            if let (Some(version), Some(reason), Ok(value)) = (
                field("version"),
                field("reason"),
                value.trim().parse::<u64>(),
            ) {
                *counts.entry((version, reason)).or_default() += value;
            }
        }
        Ok(counts)
    }
}

/// Responses per upstream; fails on any non-200 or a response without `x-upstream`.
pub fn by_upstream(responses: &[Resp]) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for (i, response) in responses.iter().enumerate() {
        let Some(upstream) = response.upstream().filter(|_| response.status == 200) else {
            bail!(
                "response {i}: status {} without an upstream: {:?}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
        };
        *counts.entry(upstream.to_string()).or_default() += 1;
    }
    Ok(counts)
}

/// Retries `check` every 50 ms until it returns Some, or fails after `timeout` with `what`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = String::new();
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = format!("{error:#}"),
        }
        if Instant::now() > deadline {
            bail!("{what}: not true after {timeout:?} {last_error}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where the tests write their reports: `<target>/e2e`.
pub fn report_dir() -> anyhow::Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || sluice_e2e::workspace_root().join("target"),
        PathBuf::from,
    );
    let dir = target.join("e2e");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Writes `text` to `path` (for reports).
pub fn write_report(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
