//! The standalone release engine end to end: a release through `spec.version` with a real Envoy
//! under load — 10 %, a timed pause that elapses, 50 %, `pause: {}`, a control-plane restart in
//! the middle (same step and weight after it), the PROMOTE command, v2 stable — and the abort
//! path; no failed request.

use std::time::Duration;

use sluice_api::RolloutStatus;
use sluice_e2e::Upstream;
use sluice_proto::admin::v1::command_request::Verb;

use crate::engine::{command, status, wait_until};
use crate::harness::{CANARY, ControlPlane, Proxy, ProxyOptions, STABLE, eventually};
use crate::load::Load;

/// Generous: a loaded 2-core machine.
const WITHIN: Duration = Duration::from_secs(60);

fn rollouts_yaml(
    version: &str,
    stable: std::net::SocketAddr,
    canary: std::net::SocketAddr,
) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: demo}}
spec:
  version: "{version}"
  hosts: [demo.local]
  staticEndpoints:
    "{STABLE}": ["{stable}"]
    "{CANARY}": ["{canary}"]
  strategy:
    canary:
      scaleDownDelaySeconds: 0
      abortScaleDownDelaySeconds: 0
      steps:
        - setWeight: 10
        - pause: {{duration: 2s}}
        - setWeight: 50
        - pause: {{}}
"#
    )
}

/// (phase, step, stable, canary, canary weight, ACKed by, proxies) of the engine's status.
type Where = (String, i32, String, Option<String>, i32, i32, i32);

fn where_of(status: RolloutStatus) -> Where {
    let dp = status.data_plane.unwrap_or_default();
    (
        status.phase.unwrap_or_default(),
        status.current_step_index.unwrap_or(-1),
        status.stable_rs.unwrap_or_default(),
        dp.traffic.canary,
        dp.traffic.canary_weight,
        dp.acknowledged,
        dp.proxies,
    )
}

async fn where_now(cp: &ControlPlane) -> anyhow::Result<Where> {
    Ok(where_of(status(cp).await?))
}

/// Waits until `check` holds on the engine's status.
async fn wait_for(
    cp: &ControlPlane,
    what: &str,
    check: impl Fn(&Where) -> bool,
) -> anyhow::Result<Where> {
    wait_until(cp, what, WITHIN, where_of, check).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_through_spec_version_survives_a_restart_and_is_promoted() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let mut cp =
        ControlPlane::start(&rollouts_yaml(STABLE, stable.addr(), canary.addr()), &[]).await?;
    let proxy = Proxy::start_serving(&cp, "release", ProxyOptions::default()).await?;
    cp.wait_synced("release", |_| true).await?;
    wait_for(&cp, "v1 stable and ACKed", |w| {
        w.0 == "Healthy" && w.2 == STABLE && w.5 == 1 && w.6 == 1
    })
    .await?;
    let load = Load::start(proxy.listener, 4);

    cp.write_file(&rollouts_yaml(CANARY, stable.addr(), canary.addr()))?;
    let at_10 = wait_for(&cp, "step 1 at 10 %", |w| {
        w.3.as_deref() == Some(CANARY) && w.1 >= 1
    })
    .await?;
    assert_eq!(
        (at_10.3.as_deref(), at_10.4),
        (Some(CANARY), 10),
        "{at_10:?}"
    );
    // The timed pause elapses on the engine's timer; then 50 % and `pause: {}` holds.
    let at_50 = wait_for(&cp, "step 3 at 50 %, ACKed", |w| w.1 == 3 && w.5 == 1).await?;
    assert_eq!(
        (at_50.0.as_str(), at_50.3.as_deref(), at_50.4),
        ("Paused", Some(CANARY), 50),
        "{at_50:?}"
    );
    eventually("the canary answers", WITHIN, async || {
        Ok((load.tally().count(CANARY) > 20).then_some(()))
    })
    .await?;

    // A restart in the middle of the canary: same step and weight (read from the state file).
    cp.restart().await?;
    let after = where_now(&cp).await?;
    assert_eq!(
        (after.1, after.2.as_str(), after.3.as_deref(), after.4),
        (3, STABLE, Some(CANARY), 50),
        "{after:?}"
    );
    cp.wait_synced("release", |_| true).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(where_now(&cp).await?.1, 3, "the pause {{}} still holds");

    command(&cp, Verb::Promote).await?;
    let done = wait_for(&cp, "v2 stable", |w| w.0 == "Healthy" && w.2 == CANARY).await?;
    assert_eq!((done.3.as_deref(), done.4), (None, 0), "{done:?}");
    // Once the promotion is ACKed (and Envoy's workers switched), only v2 answers: v1's count
    // stays put while 300 more requests are answered.
    let mut last = load.tally();
    eventually("only v2 answers", WITHIN, async || {
        let now = load.tally();
        if now.ok() < last.ok() + 300 {
            return Ok(None);
        }
        let settled = now.count(STABLE) == last.count(STABLE);
        last = now;
        Ok(settled.then_some(()))
    })
    .await?;
    let tally = load.stop();
    assert_eq!(
        tally.failures(),
        0,
        "failed requests: non-200 {:?}, errors {} ({:?})",
        tally.bad_status,
        tally.errors,
        tally.error_samples
    );
    assert!(
        tally.count(STABLE) > 0 && tally.count(CANARY) > 0,
        "{tally:?}"
    );
    Ok(())
}

/// With no Envoy connected the gate is open (0 of 0): the steps go on. Before, a pass that
/// published a generation waited for an ACK-driven wake-up that never came; the release sat at
/// step 0. An engine-run rollout also refuses the old in-memory overrides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_with_no_envoy_connected_takes_its_steps() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let cp = ControlPlane::start(&rollouts_yaml(STABLE, stable.addr(), canary.addr()), &[]).await?;
    wait_for(&cp, "v1 Healthy", |w| w.0 == "Healthy" && w.2 == STABLE).await?;
    cp.write_file(&rollouts_yaml(CANARY, stable.addr(), canary.addr()))?;
    let at_50 = wait_for(&cp, "step 3 (50 %, paused) with no proxy", |w| w.1 == 3).await?;
    assert_eq!(
        (at_50.0.as_str(), at_50.4, at_50.5, at_50.6),
        ("Paused", 50, 0, 0),
        "{at_50:?}"
    );
    let refused = cp
        .set_weight(90)
        .await
        .expect_err("an override of an engine-run rollout");
    assert!(
        format!("{refused:#}").contains("release engine"),
        "{refused:#}"
    );
    assert_eq!(where_now(&cp).await?.4, 50, "nothing changed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_sends_everything_back_to_stable_and_retry_starts_again() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let cp = ControlPlane::start(&rollouts_yaml(STABLE, stable.addr(), canary.addr()), &[]).await?;
    let proxy = Proxy::start_serving(&cp, "abort", ProxyOptions::default()).await?;
    cp.wait_synced("abort", |_| true).await?;
    let load = Load::start(proxy.listener, 2);
    cp.write_file(&rollouts_yaml(CANARY, stable.addr(), canary.addr()))?;
    wait_for(&cp, "the canary at 10 %", |w| {
        w.3.as_deref() == Some(CANARY) && w.4 == 10
    })
    .await?;

    command(&cp, Verb::Abort).await?;
    let aborted = wait_for(&cp, "aborted, ACKed", |w| w.0 == "Degraded" && w.5 == 1).await?;
    assert_eq!(
        (aborted.2.as_str(), aborted.3.as_deref(), aborted.4),
        (STABLE, None, 0)
    );
    let before = load.tally();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = load.tally();
    assert!(after.ok() > before.ok(), "traffic flows");
    assert_eq!(
        after.count(CANARY),
        before.count(CANARY),
        "no request reaches the canary after the abort is ACKed"
    );

    command(&cp, Verb::Retry).await?;
    wait_for(&cp, "the canary at 10 % again", |w| {
        w.3.as_deref() == Some(CANARY) && w.4 == 10
    })
    .await?;

    // A status beside spec.version is refused, naming the field; the last good state serves on.
    let with_status = rollouts_yaml(CANARY, stable.addr(), canary.addr())
        + &format!("status: {{stableRS: \"{STABLE}\"}}\n");
    cp.write_file(&with_status)?;
    let error = eventually("the file is rejected", WITHIN, async || {
        let error = cp.status().await?.last_source_error;
        Ok((!error.is_empty()).then_some(error))
    })
    .await?;
    assert!(
        error.contains("status: must be absent when spec.version"),
        "{error}"
    );
    let tally = load.stop();
    assert_eq!(tally.failures(), 0, "{tally:?}");
    Ok(())
}

/// `rollouts_yaml` with two `pause: {}` steps, and a second (hand-run) rollout on other.local.
fn two_rollouts_yaml(
    version: &str,
    stable: std::net::SocketAddr,
    canary: std::net::SocketAddr,
) -> String {
    let demo =
        rollouts_yaml(version, stable, canary).replace("- pause: {duration: 2s}", "- pause: {}");
    format!(
        "{demo}---\napiVersion: sluice.dev/v1alpha1\nkind: Rollout\n\
         metadata: {{name: other}}\n\
         spec:\n  hosts: [other.local]\n  staticEndpoints:\n    \"{STABLE}\": [\"{stable}\"]\n\
         status:\n  stableRS: \"{STABLE}\"\n"
    )
}

fn signal(proxy: &Proxy, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([signal, &proxy.envoy.pid().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {signal} {}", proxy.node_id);
    Ok(())
}

/// Scoped Envoys and the gate: an Envoy scoped to another rollout does not count for demo's
/// steps (frozen, it does not hold them); one scoped to demo does (frozen, the step waits for
/// it, "0 of 1"; thawed, it completes, "1 of 1").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_envoys_scoped_to_a_rollout_hold_its_steps() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let cp = ControlPlane::start(
        &two_rollouts_yaml(STABLE, stable.addr(), canary.addr()),
        &[],
    )
    .await?;
    let scope = |host: &str| vec!["--scope".to_string(), host.to_string()];
    let options = ProxyOptions::default();
    let mut mine = Proxy::start_with(&cp, "demo-sidecar", options, &scope("demo.local")).await?;
    mine.wait_serving().await?;
    let other = Proxy::start_with(&cp, "other-sidecar", options, &scope("other.local")).await?;
    cp.wait_synced("demo-sidecar", |_| true).await?;
    cp.wait_synced("other-sidecar", |_| true).await?;
    wait_for(&cp, "v1 stable, ACKed by the one Envoy scoped to it", |w| {
        w.0 == "Healthy" && w.2 == STABLE && w.5 == 1 && w.6 == 1
    })
    .await?;

    // The Envoy scoped to other.local, frozen, does not hold demo's first step.
    signal(&other, "-STOP")?;
    let first = async {
        cp.write_file(&two_rollouts_yaml(CANARY, stable.addr(), canary.addr()))?;
        wait_for(&cp, "step 1 (10 %) done, 1 of 1", |w| {
            w.0 == "Paused" && w.1 == 1 && w.4 == 10 && w.5 == 1 && w.6 == 1
        })
        .await
    }
    .await;
    signal(&other, "-CONT")?;
    first?;

    // The Envoy scoped to demo, frozen, holds the next one until it ACKs.
    signal(&mine, "-STOP")?;
    let held = async {
        command(&cp, Verb::Promote).await?;
        wait_for(&cp, "50 % published", |w| w.4 == 50).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        where_now(&cp).await
    }
    .await;
    signal(&mine, "-CONT")?;
    let held = held?;
    assert_eq!(
        (held.1, held.5, held.6),
        (2, 0, 1),
        "waits for demo-sidecar: {held:?}"
    );
    wait_for(
        &cp,
        "step 3 (50 %) done once demo-sidecar ACKed, 1 of 1",
        |w| w.0 == "Paused" && w.1 == 3 && w.4 == 50 && w.5 == 1 && w.6 == 1,
    )
    .await?;
    // demo-sidecar serves demo.local: the canary answers.
    eventually(
        "the canary answers through demo-sidecar",
        WITHIN,
        async || {
            let r = sluice_e2e::send_one(mine.listener, sluice_e2e::Req::get("demo.local")).await?;
            Ok((r.upstream() == Some(CANARY)).then_some(()))
        },
    )
    .await?;
    Ok(())
}
