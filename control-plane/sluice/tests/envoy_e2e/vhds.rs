//! The per-change payload with real Envoys (issue 12): 50 rollouts, an unscoped delta-xDS
//! gateway (routes as VHDS virtual hosts) and an unscoped state-of-the-world one (the whole route
//! configuration) on the same control plane. A weight change of one rollout sends the delta
//! Envoy one small virtual host (counted by the server's `sluice_xds_sent_*` metrics), the SotW
//! Envoy the whole route configuration; both split traffic at the new weight, and weight changes
//! and a rollout coming and going under load fail no request on the delta Envoy. A first sync
//! larger than one delta response (64 KiB) reaches a real Envoy in parts.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_e2e::{Req, Upstream, parse_prometheus};

use crate::harness::{
    CANARY, ControlPlane, HOST, Proxy, ProxyOptions, RDS_TYPE, Rollout, STABLE, VHDS_TYPE,
    by_upstream, eventually,
};
use crate::load::Load;

/// Rollouts besides the demo one.
const OTHERS: usize = 49;

/// Rollout `default/r<i>` on `r<i>.local`, 10 % to its canary.
fn other_yaml(i: usize, stable: SocketAddr, canary: SocketAddr) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\n\
         kind: Rollout\n\
         metadata:\n  name: r{i}\n  namespace: default\n\
         spec:\n  hosts: [r{i}.local]\n\
         \x20 staticEndpoints:\n    \"5a5a5a5a5a\": [\"{stable}\"]\n    \"4b4b4b4b4b\": [\"{canary}\"]\n\
         \x20 strategy:\n    canary:\n      steps:\n        - setWeight: 10\n        - pause: {{}}\n\
         status:\n  stableRS: \"5a5a5a5a5a\"\n  currentPodHash: \"4b4b4b4b4b\"\n  currentStepIndex: 1\n"
    )
}

const CDS_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// The delta-xDS gateway `gateway-delta`, serving.
async fn start_delta_gateway(cp: &ControlPlane) -> anyhow::Result<Proxy> {
    Proxy::start_serving(
        cp,
        "gateway-delta",
        ProxyOptions {
            delta: true,
            ..Default::default()
        },
    )
    .await
}

/// Waits until `gateway-delta` is synced with a VHDS subscription; its status then.
async fn wait_vhds(cp: &ControlPlane) -> anyhow::Result<sluice_proto::admin::v1::ProxyStatus> {
    cp.wait_synced("gateway-delta", |p| {
        p.types.iter().any(|t| t.type_url == VHDS_TYPE)
    })
    .await
}

/// Responses of one type pushed so far, from `/metrics`.
async fn pushes(cp: &ControlPlane, type_url: &str) -> anyhow::Result<f64> {
    let (_, metrics) = cp.http("/metrics").await?;
    Ok(parse_prometheus(&metrics)
        .iter()
        .filter(|s| s.name.starts_with("sluice_xds_pushes") && s.mentions(type_url))
        .map(|s| s.value)
        .sum())
}

/// (bytes, resources) sent so far of one type, from `/metrics`.
async fn sent(cp: &ControlPlane, type_url: &str) -> anyhow::Result<(f64, f64)> {
    let (_, metrics) = cp.http("/metrics").await?;
    let samples = parse_prometheus(&metrics);
    let total = |name: &str| {
        samples
            .iter()
            .filter(|s| s.name.starts_with(name) && s.mentions(type_url))
            .map(|s| s.value)
            .sum::<f64>()
    };
    Ok((
        total("sluice_xds_sent_bytes"),
        total("sluice_xds_sent_resources"),
    ))
}

/// The canary's share of 400 requests through `proxy`; fails on any non-200.
async fn canary_share(proxy: &Proxy) -> anyhow::Result<f64> {
    let responses = proxy
        .send((0..400).map(|_| Req::get(HOST)).collect())
        .await?;
    let counts = by_upstream(&responses)?;
    Ok(counts.get(CANARY).copied().unwrap_or(0) as f64 / responses.len() as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_change_sends_delta_envoys_one_virtual_host() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let demo = Rollout::two(stable.addr(), canary.addr(), 10);
    let file = |demo_weight: i64, others: usize| {
        let mut yaml = demo.clone().weight(demo_weight).yaml();
        for i in 0..others {
            yaml.push_str("---\n");
            yaml.push_str(&other_yaml(i, stable.addr(), canary.addr()));
        }
        yaml
    };
    let cp = ControlPlane::start(&file(10, OTHERS), &[]).await?;
    let delta = start_delta_gateway(&cp).await?;
    let sotw = Proxy::start_serving(&cp, "gateway-sotw", ProxyOptions::default()).await?;
    let delta_synced = wait_vhds(&cp).await?;
    cp.wait_synced("gateway-sotw", |_| true).await?;
    assert!(
        delta_synced.types.iter().any(|t| t.type_url == VHDS_TYPE),
        "the delta Envoy subscribed to VHDS: {delta_synced:#?}"
    );
    // Every rollout's host routes on both (the virtual hosts arrived over VHDS on one).
    for proxy in [&delta, &sotw] {
        let response = sluice_e2e::send_one(proxy.listener, Req::get("r48.local")).await?;
        assert_eq!(response.status, 200);
    }

    // One weight change: the delta Envoy gets one virtual host, the SotW one every rollout's.
    let vhds_before = sent(&cp, VHDS_TYPE).await?;
    let rds_before = sent(&cp, RDS_TYPE).await?;
    cp.write_file(&file(50, OTHERS))?;
    let delta_before = crate::harness::acked(&delta_synced, VHDS_TYPE);
    cp.wait_synced("gateway-delta", |p| {
        crate::harness::acked(p, VHDS_TYPE) != delta_before
    })
    .await?;
    let vhds = eventually(
        "the VHDS push is counted",
        Duration::from_secs(10),
        async || {
            let now = sent(&cp, VHDS_TYPE).await?;
            Ok((now.1 > vhds_before.1).then_some(now))
        },
    )
    .await?;
    let rds = eventually(
        "the SotW RDS push is counted",
        Duration::from_secs(30),
        async || {
            let now = sent(&cp, RDS_TYPE).await?;
            Ok((now.1 > rds_before.1).then_some(now))
        },
    )
    .await?;
    let (vhds_bytes, vhds_resources) = (vhds.0 - vhds_before.0, vhds.1 - vhds_before.1);
    let (rds_bytes, rds_resources) = (rds.0 - rds_before.0, rds.1 - rds_before.1);
    eprintln!(
        "one weight change at {} rollouts: delta Envoy {vhds_bytes} bytes in {vhds_resources} VHDS \
         resource(s); SotW Envoy {rds_bytes} bytes in {rds_resources} route configuration(s)",
        OTHERS + 1
    );
    assert_eq!(vhds_resources, 1.0, "one virtual host for the delta Envoy");
    assert!(vhds_bytes < 2_000.0, "{vhds_bytes} bytes");
    assert_eq!(
        rds_resources, 1.0,
        "the route configuration for the SotW Envoy only"
    );
    assert!(
        rds_bytes > 20.0 * vhds_bytes,
        "the SotW Envoy gets every rollout's routes: {rds_bytes} vs {vhds_bytes} bytes"
    );
    // Both split at the new weight.
    for (name, proxy) in [("delta", &delta), ("sotw", &sotw)] {
        let share = eventually("50 % to the canary", Duration::from_secs(30), async || {
            let share = canary_share(proxy).await?;
            Ok(((0.40..=0.60).contains(&share)).then_some(share))
        })
        .await?;
        eprintln!("{name}: canary share {share:.2} at 50 %");
    }

    // Churn under load on the delta Envoy: weights move, a rollout goes and comes back.
    let load = Load::start(delta.listener, 4);
    eventually("load running", Duration::from_secs(30), async || {
        Ok((load.tally().ok() > 100).then_some(()))
    })
    .await?;
    for i in 0..12 {
        let others = if i == 6 { OTHERS - 1 } else { OTHERS };
        cp.write_file(&file((i * 37 + 11) % 101, others))?;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    cp.write_file(&file(0, OTHERS))?;
    cp.wait_synced("gateway-delta", |_| true).await?;
    // At 0 % every request goes to stable once the last change is in.
    eventually("0 % reached", Duration::from_secs(30), async || {
        Ok((canary_share(&delta).await? == 0.0).then_some(()))
    })
    .await?;
    let tally = load.stop();
    eprintln!(
        "under churn: {} ok, {} failed",
        tally.ok(),
        tally.failures()
    );
    assert_eq!(tally.failures(), 0, "requests failed under churn");
    assert!(tally.ok() > 100);
    // The SotW Envoy converged too.
    cp.wait_synced("gateway-sotw", |_| true).await?;
    assert_eq!(canary_share(&sotw).await?, 0.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_larger_than_one_response_reaches_envoy_in_parts() -> anyhow::Result<()> {
    // 400 rollouts of two clusters each: the clusters alone are well over 64 KiB.
    const MANY: usize = 400;
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let mut yaml = Rollout::two(stable.addr(), canary.addr(), 10).yaml();
    for i in 0..MANY {
        yaml.push_str("---\n");
        yaml.push_str(&other_yaml(i, stable.addr(), canary.addr()));
    }
    let cp = ControlPlane::start(&yaml, &[]).await?;
    let delta = start_delta_gateway(&cp).await?;
    wait_vhds(&cp).await?;
    let (cds_bytes, cds_resources) = sent(&cp, CDS_TYPE).await?;
    let cds_pushes = pushes(&cp, CDS_TYPE).await?;
    let (vhds_bytes, _) = sent(&cp, VHDS_TYPE).await?;
    let vhds_pushes = pushes(&cp, VHDS_TYPE).await?;
    eprintln!(
        "first sync of {} rollouts: {cds_resources} clusters, {cds_bytes} bytes in {cds_pushes} \
         CDS responses; {vhds_bytes} bytes of virtual hosts in {vhds_pushes} VHDS responses",
        MANY + 1
    );
    assert!(cds_bytes > 65_536.0, "{cds_bytes} bytes of clusters");
    assert!(
        cds_pushes >= 2.0,
        "the clusters went out in parts: {cds_pushes}"
    );
    assert!(vhds_pushes >= 2.0, "the virtual hosts too: {vhds_pushes}");
    // Every part arrived and applied: the first, last and demo rollouts all route, at 10 %.
    for host in ["r0.local", "r199.local", "r399.local", HOST] {
        let response = sluice_e2e::send_one(delta.listener, Req::get(host)).await?;
        assert_eq!(response.status, 200, "{host}");
    }
    let share = canary_share(&delta).await?;
    assert!((0.03..=0.2).contains(&share), "canary share {share}");
    Ok(())
}
