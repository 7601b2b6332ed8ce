//! What the Kubernetes-mode end-to-end tests share: the demo Rollout's pieces, `sluice serve
//! --kubernetes` and `sluice rollouts` against the in-memory API server of the test support
//! (`sluice_e2e::kube_api`), an Envoy bootstrapped by `sluice bootstrap`, and steady traffic
//! through it, counted per upstream.
//!
//! Each test file includes it with `mod kube_support;`; a file uses only part of it.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use sluice_e2e::{
    Envoy, Req, free_port,
    kube_api::{ApiServer, Key},
    send_all, send_one,
};

pub const HOST: &str = "demo.example.com";
pub const ROLLOUT: &str = "sluice.dev/v1alpha1/rollouts";
pub const REPLICA_SETS: &str = "apps/v1/replicasets";
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Kills a process when the test ends, also on failure.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pod template's `containers`: one container `demo` running `image`, port `http`.
pub fn container(image: &str) -> Value {
    json!([{"name": "demo", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}])
}

/// A Service `name` in `demo` selecting the demo pods (`app: demo`), port `http`.
pub fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "demo"},
           "spec": {"selector": {"app": "demo"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
}

/// Creates `object` in the API server's `resource` (a plural such as `services`).
pub fn create(server: &ApiServer, resource: &str, object: Value) -> anyhow::Result<()> {
    server
        .create(resource, object)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("creating {resource}: {e:?}"))
}

/// The Rollout `demo/demo`.
pub fn key() -> Key {
    Key::new(ROLLOUT, "demo", "demo")
}

/// The Rollout's `status` (`null` while it has none).
pub fn status(server: &ApiServer) -> Value {
    server
        .get(&key())
        .and_then(|r| r.get("status").cloned())
        .unwrap_or(Value::Null)
}

/// Waits up to [`TIMEOUT`] for `done`; the error shows the Rollout as it was.
pub async fn until(
    what: &str,
    server: &ApiServer,
    done: impl Fn(&ApiServer) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while !done(server) {
        if Instant::now() > deadline {
            bail!(
                "timed out waiting for {what}; the rollout: {:#}",
                server.get(&key()).unwrap_or(Value::Null)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The addresses of one control plane (kept when it is restarted).
#[derive(Clone, Copy)]
pub struct Ports {
    pub xds: u16,
    pub admin: u16,
    pub http: u16,
    pub envoy_listener: u16,
}

impl Ports {
    pub fn free() -> anyhow::Result<Self> {
        Ok(Ports {
            xds: free_port()?,
            admin: free_port()?,
            http: free_port()?,
            envoy_listener: free_port()?,
        })
    }
}

/// One `sluice serve --kubernetes --namespace demo` process, its output appended to `log`.
pub struct ControlPlane {
    pub process: Guard,
    pub ports: Ports,
    pub log: PathBuf,
}

impl ControlPlane {
    /// Starts it with the API server's `kubeconfig`; `lease_identity` runs it as a replica with
    /// leader election (Leases in `demo`).
    pub fn start(
        kubeconfig: &Path,
        log: &Path,
        ports: Ports,
        lease_identity: Option<&str>,
    ) -> anyhow::Result<Self> {
        let wasm = sluice_e2e::filter_wasm()?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command.args(["serve", "--kubernetes", "--namespace", "demo"]);
        if let Some(identity) = lease_identity {
            command.args(["--lease-namespace", "demo", "--lease-identity", identity]);
        }
        let process = command
            .arg("--wasm")
            .arg(&wasm)
            .args(["--xds-addr", &format!("127.0.0.1:{}", ports.xds)])
            .args(["--admin-addr", &format!("127.0.0.1:{}", ports.admin)])
            .args(["--http-addr", &format!("127.0.0.1:{}", ports.http)])
            .args([
                "--envoy-listener",
                &format!("127.0.0.1:{}", ports.envoy_listener),
            ])
            .arg("--admin-status-unauthenticated")
            .args(["--log", "info"])
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting sluice serve")?;
        Ok(ControlPlane {
            process: Guard(process),
            ports,
            log: log.to_owned(),
        })
    }

    /// Everything it logged so far (also what earlier processes appended to the same file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// Waits until its `/readyz` answers 200 (every watch listed, a state published).
    pub async fn ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let mut req = Req::get("127.0.0.1");
            req.path = "/readyz".into();
            let at = SocketAddr::from(([127, 0, 0, 1], self.ports.http));
            if send_one(at, req).await.is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the control plane never became ready\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An Envoy bootstrapped by `sluice bootstrap --xds 127.0.0.1:<xds> --node-id <node_id>`, and the
/// address of its listener.
pub async fn bootstrapped_envoy(xds: u16, node_id: &str) -> anyhow::Result<(Envoy, SocketAddr)> {
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let bootstrap = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["bootstrap", "--xds", &format!("127.0.0.1:{xds}")])
        .args(["--node-id", node_id, "--listener", &listener.to_string()])
        .args(["--admin", "127.0.0.1:0"])
        .output()?;
    anyhow::ensure!(
        bootstrap.status.success(),
        "sluice bootstrap failed: {bootstrap:?}"
    );
    let envoy = Envoy::start(&String::from_utf8(bootstrap.stdout)?).await?;
    Ok((envoy, listener))
}

/// Waits until a request for `host` through `listener` is answered 200 by `upstream`; on time-out
/// the error carries `logs()`.
pub async fn until_upstream(
    listener: SocketAddr,
    host: &str,
    upstream: &str,
    logs: impl Fn() -> String,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match send_one(listener, Req::get(host)).await {
            Ok(r) if r.status == 200 && r.upstream() == Some(upstream) => return Ok(()),
            other if Instant::now() > deadline => {
                bail!(
                    "{host} never answered from {upstream}: {other:?}\n{}",
                    logs()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `sluice rollouts -n demo ARGS...` with the in-memory API server's kubeconfig: the user's
/// commands, as the README gives them (they patch what kubectl-argo-rollouts patches).
pub fn rollouts_cli(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["rollouts", "-n", "demo"])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "sluice rollouts {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Steady traffic to [`HOST`] through Envoy until stopped: answers per upstream, and failures.
#[derive(Default)]
pub struct Load {
    by_upstream: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// A running [`Load`] and its task.
pub struct Traffic {
    pub load: Arc<Load>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(listener: SocketAddr) -> Traffic {
        let load = Arc::new(Load::default());
        let task_load = Arc::clone(&load);
        let task = tokio::spawn(async move {
            while !task_load.stop.load(Ordering::Relaxed) {
                let requests = (0..40).map(|_| Req::get(HOST)).collect();
                match send_all(listener, requests, 2).await {
                    Ok(responses) => {
                        for r in responses {
                            match r.upstream().filter(|_| r.status == 200) {
                                Some(u) => {
                                    *lock(&task_load.by_upstream)
                                        .entry(u.to_owned())
                                        .or_default() += 1;
                                }
                                None => lock(&task_load.failures).push(format!(
                                    "status {}: {}",
                                    r.status,
                                    String::from_utf8_lossy(&r.body)
                                )),
                            }
                        }
                    }
                    Err(error) => lock(&task_load.failures).push(format!("{error:#}")),
                }
            }
        });
        Traffic { load, task }
    }

    /// Answers per upstream since the last call.
    pub fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *lock(&self.by_upstream))
    }
}

impl Traffic {
    /// Waits until a batch of traffic (at least 100 answers in 0.7 s) shows `done` for its
    /// answers per upstream; returns that batch.
    pub async fn until(
        &self,
        what: &str,
        done: impl Fn(&BTreeMap<String, u64>) -> bool,
    ) -> anyhow::Result<BTreeMap<String, u64>> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let _ = self.load.take();
            tokio::time::sleep(Duration::from_millis(700)).await;
            let seen = self.load.take();
            if seen.values().sum::<u64>() >= 100 && done(&seen) {
                return Ok(seen);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}: last {seen:?}");
            }
        }
    }

    /// Stops the traffic; an error unless every request was answered 200.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.load.stop.store(true, Ordering::Relaxed);
        self.task.await?;
        let failures = lock(&self.load.failures).clone();
        anyhow::ensure!(
            failures.is_empty(),
            "{} failed requests, first: {:?}",
            failures.len(),
            failures.first()
        );
        Ok(())
    }
}

/// Whether `seen` splits between upstreams `a` and `b` with each at 30 % or more (a wide margin
/// around 50 % for a few hundred requests).
pub fn about_half(seen: &BTreeMap<String, u64>, a: &str, b: &str) -> bool {
    let (a, b) = (
        seen.get(a).copied().unwrap_or(0),
        seen.get(b).copied().unwrap_or(0),
    );
    let total = a + b;
    total > 0 && a * 10 >= total * 3 && b * 10 >= total * 3
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`) to process `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {signal} {pid}");
    Ok(())
}
