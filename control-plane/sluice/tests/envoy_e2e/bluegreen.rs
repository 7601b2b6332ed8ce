//! Blue/green through a real Envoy, standalone mode: `spec.version` names the new version, the
//! preview host answers it while the active host stays on the old one (the preview header rule
//! reaches the new one there), `promote` switches the active host in one push with no failed
//! request under load, and abort drops the preview; `autoPromotionSeconds` promotes by itself.

use std::time::Duration;

use sluice_api::RolloutStatus;
use sluice_e2e::{Req, Upstream};
use sluice_proto::admin::v1::command_request::Verb;

use crate::engine::{command, status, wait_until};
use crate::harness::{CANARY, ControlPlane, HOST, Proxy, ProxyOptions, STABLE, eventually};
use crate::load::Load;

const PREVIEW_HOST: &str = "preview.demo.local";
/// Generous: a loaded 2-core machine.
const WITHIN: Duration = Duration::from_secs(60);
/// Requests per probe of a host.
const N: usize = 40;

/// A blue/green rollout on demo.local, previewed on preview.demo.local, `x-preview: 1` reaching
/// the preview on demo.local. `promotion` holds the promotion fields.
fn rollouts_yaml(
    version: &str,
    promotion: &str,
    v1: std::net::SocketAddr,
    v2: std::net::SocketAddr,
) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: demo}}
spec:
  version: "{version}"
  hosts: [{HOST}]
  staticEndpoints:
    "{STABLE}": ["{v1}"]
    "{CANARY}": ["{v2}"]
  strategy:
    blueGreen:
      activeService: demo
      previewHosts: [{PREVIEW_HOST}]
      previewHeaderRoute:
        match:
          - headerName: x-preview
            headerValue: {{exact: "1"}}
      {promotion}
      scaleDownDelaySeconds: 2
      abortScaleDownDelaySeconds: 0
"#
    )
}

/// The engine's status: (phase, active, preview published, generation, ACKed by, proxies).
#[derive(Debug)]
struct Where {
    phase: String,
    active: String,
    preview: Option<String>,
    generation: i64,
    acked: bool,
    selectors: (Option<String>, Option<String>),
}

fn where_of(status: RolloutStatus) -> Where {
    let dp = status.data_plane.unwrap_or_default();
    let bg = status.blue_green.unwrap_or_default();
    Where {
        phase: status.phase.unwrap_or_default(),
        active: dp.traffic.stable,
        preview: dp.traffic.preview,
        generation: dp.generation,
        acked: dp.proxies == 1 && dp.acknowledged == 1,
        selectors: (bg.active_selector, bg.preview_selector),
    }
}

async fn where_now(cp: &ControlPlane) -> anyhow::Result<Where> {
    Ok(where_of(status(cp).await?))
}

async fn wait_for(
    cp: &ControlPlane,
    what: &str,
    check: impl Fn(&Where) -> bool,
) -> anyhow::Result<Where> {
    wait_until(cp, what, WITHIN, where_of, check).await
}

/// Sends `N` requests to `host` with `headers`; every one must be answered 200 by `expected`.
async fn all_answered_by(
    proxy: &Proxy,
    host: &str,
    headers: &[(&str, &str)],
    expected: &str,
) -> anyhow::Result<()> {
    let mut request = Req::get(host);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let responses = proxy.send(vec![request; N]).await?;
    for response in &responses {
        anyhow::ensure!(
            (response.status, response.upstream()) == (200, Some(expected)),
            "Host {host} {headers:?}: expected {expected}, got {} from {:?}",
            response.status,
            response.upstream()
        );
    }
    Ok(())
}

/// v1 active and ACKed, then `spec.version` v2: the preview is published and ACKed.
async fn preview_v2(
    cp: &ControlPlane,
    promotion: &str,
    v1: &Upstream,
    v2: &Upstream,
) -> anyhow::Result<Where> {
    wait_for(cp, "v1 active and ACKed", |w| {
        w.phase == "Healthy" && w.active == STABLE && w.acked
    })
    .await?;
    cp.write_file(&rollouts_yaml(CANARY, promotion, v1.addr(), v2.addr()))?;
    wait_for(cp, "v2 previewed, ACKed", |w| {
        w.preview.as_deref() == Some(CANARY) && w.acked
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_previews_then_switches_in_one_push_without_a_failed_request()
-> anyhow::Result<()> {
    let v1 = Upstream::start(STABLE).await?;
    let v2 = Upstream::start(CANARY).await?;
    let manual = "autoPromotionEnabled: false";
    let cp = ControlPlane::start(&rollouts_yaml(STABLE, manual, v1.addr(), v2.addr()), &[]).await?;
    let proxy = Proxy::start_serving(&cp, "bluegreen", ProxyOptions::default()).await?;
    cp.wait_synced("bluegreen", |_| true).await?;
    // Before any release the preview host shows the active version.
    all_answered_by(&proxy, PREVIEW_HOST, &[], STABLE).await?;
    let active_load = Load::start(proxy.listener, 3);

    let previewed = preview_v2(&cp, manual, &v1, &v2).await?;
    assert_eq!(previewed.phase, "Paused", "{previewed:?}");
    assert_eq!(
        previewed.selectors,
        (Some(STABLE.into()), Some(CANARY.into())),
        "status.blueGreen as Argo writes it"
    );
    all_answered_by(&proxy, PREVIEW_HOST, &[], CANARY).await?;
    all_answered_by(&proxy, HOST, &[], STABLE).await?;
    all_answered_by(&proxy, HOST, &[("x-preview", "1")], CANARY).await?;
    all_answered_by(&proxy, HOST, &[("x-preview", "0")], STABLE).await?;
    // A client cannot pick a version with the internal routing header, on either host.
    all_answered_by(&proxy, HOST, &[("x-sluice-hash", CANARY)], STABLE).await?;
    all_answered_by(&proxy, PREVIEW_HOST, &[("x-sluice-hash", STABLE)], CANARY).await?;
    let preview_load = Load::start_on_host(proxy.listener, 1, PREVIEW_HOST);
    // The pause holds: still v1 on the active host a moment later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(where_now(&cp).await?.active, STABLE);

    command(&cp, Verb::Promote).await?;
    let promoted = wait_for(&cp, "v2 active, ACKed", |w| {
        w.phase == "Healthy" && w.active == CANARY && w.acked
    })
    .await?;
    assert_eq!(promoted.preview, None, "{promoted:?}");
    assert_eq!(
        promoted.generation,
        previewed.generation + 1,
        "the switch is one push: {previewed:?} -> {promoted:?}"
    );
    assert_eq!(
        promoted.selectors,
        (Some(CANARY.into()), Some(CANARY.into()))
    );
    // Once the switch is ACKed (and Envoy's workers took it), v1 answers no more requests.
    let mut last = active_load.tally();
    eventually("only v2 answers the active host", WITHIN, async || {
        let now = active_load.tally();
        if now.ok() < last.ok() + 300 {
            return Ok(None);
        }
        let settled = now.count(STABLE) == last.count(STABLE);
        last = now;
        Ok(settled.then_some(()))
    })
    .await?;
    all_answered_by(&proxy, HOST, &[], CANARY).await?;
    all_answered_by(&proxy, PREVIEW_HOST, &[], CANARY).await?;

    let active = active_load.stop();
    let preview = preview_load.stop();
    for (host, tally) in [(HOST, &active), (PREVIEW_HOST, &preview)] {
        assert_eq!(
            tally.failures(),
            0,
            "{host}: failed requests: non-200 {:?}, errors {} ({:?})",
            tally.bad_status,
            tally.errors,
            tally.error_samples
        );
    }
    assert!(
        active.count(STABLE) > 0 && active.count(CANARY) > 0,
        "{active:?}"
    );
    assert!(
        preview.count(CANARY) > 0 && preview.count(STABLE) == 0,
        "the preview host stays on v2 across the switch: {preview:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_abort_drops_the_preview_and_the_active_host_stays() -> anyhow::Result<()> {
    let v1 = Upstream::start(STABLE).await?;
    let v2 = Upstream::start(CANARY).await?;
    let manual = "autoPromotionEnabled: false";
    let cp = ControlPlane::start(&rollouts_yaml(STABLE, manual, v1.addr(), v2.addr()), &[]).await?;
    let proxy = Proxy::start_serving(&cp, "bg-abort", ProxyOptions::default()).await?;
    cp.wait_synced("bg-abort", |_| true).await?;
    let load = Load::start(proxy.listener, 2);
    preview_v2(&cp, manual, &v1, &v2).await?;
    all_answered_by(&proxy, PREVIEW_HOST, &[], CANARY).await?;

    command(&cp, Verb::Abort).await?;
    let aborted = wait_for(&cp, "aborted, ACKed", |w| {
        w.phase == "Degraded" && w.preview.is_none() && w.acked
    })
    .await?;
    assert_eq!(aborted.active, STABLE, "{aborted:?}");
    all_answered_by(&proxy, PREVIEW_HOST, &[], STABLE).await?;
    all_answered_by(&proxy, HOST, &[("x-preview", "1")], STABLE).await?;
    let tally = load.stop();
    assert_eq!(tally.failures(), 0, "{tally:?}");
    assert_eq!(
        tally.count(CANARY),
        0,
        "the active host never left v1: {tally:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_auto_promotion_seconds_switches_by_itself() -> anyhow::Result<()> {
    let v1 = Upstream::start(STABLE).await?;
    let v2 = Upstream::start(CANARY).await?;
    let timed = "autoPromotionSeconds: 2";
    let cp = ControlPlane::start(&rollouts_yaml(STABLE, timed, v1.addr(), v2.addr()), &[]).await?;
    let proxy = Proxy::start_serving(&cp, "bg-auto", ProxyOptions::default()).await?;
    cp.wait_synced("bg-auto", |_| true).await?;
    let previewed = preview_v2(&cp, timed, &v1, &v2).await?;
    assert_eq!(previewed.active, STABLE, "{previewed:?}");
    let promoted = wait_for(&cp, "v2 active by itself, ACKed", |w| {
        w.phase == "Healthy" && w.active == CANARY && w.acked
    })
    .await?;
    assert_eq!(
        promoted.generation,
        previewed.generation + 1,
        "{promoted:?}"
    );
    all_answered_by(&proxy, HOST, &[], CANARY).await?;
    all_answered_by(&proxy, PREVIEW_HOST, &[], CANARY).await?;
    Ok(())
}
