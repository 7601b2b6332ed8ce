//! Scoping with real Envoys (node metadata `sluice.scope`, written by `sluice bootstrap
//! --scope`): a sidecar scoped to the demo host receives only the demo rollout — another
//! rollout's host is a 404 on it —, an unscoped gateway receives both; a weight change of the
//! other rollout reaches the gateway and sends the sidecar nothing, one of the demo rollout
//! reaches both. Over state-of-the-world and delta ADS.

use std::time::Duration;

use sluice_e2e::{Req, Upstream};

use crate::harness::{ControlPlane, HOST, Proxy, ProxyOptions, Rollout, routes_acked};

const OTHER_HOST: &str = "other.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_sidecar_receives_only_its_rollouts_sotw() -> anyhow::Result<()> {
    scope_scenario(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_sidecar_receives_only_its_rollouts_delta() -> anyhow::Result<()> {
    scope_scenario(true).await
}

/// A second rollout, `default/other` on other.local.
fn other_yaml(stable: std::net::SocketAddr, canary: std::net::SocketAddr, weight: u32) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\n\
         kind: Rollout\n\
         metadata:\n  name: other\n  namespace: default\n\
         spec:\n  hosts: [{OTHER_HOST}]\n\
         \x20 staticEndpoints:\n    \"5a5a5a5a5a\": [\"{stable}\"]\n    \"4b4b4b4b4b\": [\"{canary}\"]\n\
         \x20 strategy:\n    canary:\n      steps:\n        - setWeight: {weight}\n        - pause: {{}}\n\
         status:\n  stableRS: \"5a5a5a5a5a\"\n  currentPodHash: \"4b4b4b4b4b\"\n  currentStepIndex: 1\n"
    )
}

async fn scope_scenario(delta: bool) -> anyhow::Result<()> {
    let stable = Upstream::start("stable").await?;
    let canary = Upstream::start("canary").await?;
    let other = Upstream::start("other").await?;
    let other_canary = Upstream::start("other-canary").await?;
    let demo = Rollout::two(stable.addr(), canary.addr(), 10);
    let file = |demo_weight: i64, other_weight: u32| {
        format!(
            "{}---\n{}",
            demo.clone().weight(demo_weight).yaml(),
            other_yaml(other.addr(), other_canary.addr(), other_weight)
        )
    };
    let cp = ControlPlane::start(&file(10, 10), &[]).await?;
    let flavour = if delta { "delta" } else { "sotw" };
    let (sidecar_id, gateway_id) = (format!("sidecar-{flavour}"), format!("gateway-{flavour}"));
    let options = ProxyOptions {
        delta,
        ..Default::default()
    };
    let mut sidecar =
        Proxy::start_with(&cp, &sidecar_id, options, &["--scope".into(), HOST.into()]).await?;
    sidecar.wait_serving().await?;
    let gateway = Proxy::start_serving(&cp, &gateway_id, options).await?;
    let sidecar_synced = cp.wait_synced(&sidecar_id, |_| true).await?;
    let gateway_synced = cp.wait_synced(&gateway_id, |_| true).await?;

    // The gateway routes both hosts; the sidecar has no route for the other one.
    let response = sluice_e2e::send_one(gateway.listener, Req::get(OTHER_HOST)).await?;
    assert_eq!(response.status, 200);
    assert!(
        matches!(response.upstream(), Some("other" | "other-canary")),
        "{:?}",
        response.upstream()
    );
    let response = sluice_e2e::send_one(sidecar.listener, Req::get(OTHER_HOST)).await?;
    assert_eq!(
        response.status, 404,
        "the sidecar is not scoped to {OTHER_HOST}"
    );
    let response = sluice_e2e::send_one(sidecar.listener, Req::get(HOST)).await?;
    assert_eq!(response.status, 200);

    // The other rollout's weight moves: the gateway gets new routes, the sidecar nothing.
    let sidecar_routes = routes_acked(&sidecar_synced);
    let gateway_routes = routes_acked(&gateway_synced);
    cp.write_file(&file(10, 60))?;
    let gateway_now = cp
        .wait_synced(&gateway_id, |p| routes_acked(p) != gateway_routes)
        .await?;
    // Give a (wrong) push to the sidecar time to arrive before looking.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sidecar_now = cp.wait_synced(&sidecar_id, |_| true).await?;
    assert_eq!(
        sidecar_now.types, sidecar_synced.types,
        "the sidecar was sent something for a rollout outside its scope"
    );

    // The demo rollout's weight moves: both get it.
    cp.write_file(&file(50, 60))?;
    cp.wait_synced(&gateway_id, |p| {
        routes_acked(p) != routes_acked(&gateway_now)
    })
    .await?;
    cp.wait_synced(&sidecar_id, |p| routes_acked(p) != sidecar_routes)
        .await?;
    Ok(())
}
