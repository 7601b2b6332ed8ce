//! Per node, the control plane pushes the filter build the Envoy asked for in its bootstrap
//! (`sluice bootstrap --filter native|wasm` → node metadata `sluice.filter`), both over ECDS with
//! the same policy: a Wasm node and a native node behind one control plane route alike, count
//! alike, and each runs its own build.

use sluice_e2e::{Req, Upstream, check_binomial};

use crate::harness::{
    CANARY, ControlPlane, ECDS_TYPE, HOST, Proxy, ProxyOptions, RDS_TYPE, Rollout, STABLE, acked,
    by_upstream,
};

const REQUESTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_gets_the_filter_build_it_asks_for() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    // Weight 0: the native fallback route sends everything to stable, so only a filter that ran
    // can send the header route's requests to the canary.
    let mut rollout = Rollout::two(stable.addr(), canary.addr(), 0);
    rollout.header_route = true;
    let module = sluice_e2e::filter_native()?;
    let cp = ControlPlane::start(
        &rollout.yaml(),
        &["--envoy-native-path".into(), module.display().to_string()],
    )
    .await?;
    let mut wasm = Proxy::start_serving(&cp, "wasm-node", ProxyOptions::default()).await?;
    let mut native = Proxy::start_serving(
        &cp,
        "native-node",
        ProxyOptions {
            native: true,
            ..Default::default()
        },
    )
    .await?;
    for node in ["wasm-node", "native-node"] {
        let synced = cp.wait_synced(node, |_| true).await?;
        assert!(!acked(&synced, ECDS_TYPE).is_empty(), "{node}: no ECDS ACK");
    }

    for proxy in [&mut wasm, &mut native] {
        let testers: Vec<Req> = (0..REQUESTS)
            .map(|_| Req::get(HOST).header("x-canary", "1"))
            .collect();
        let counts = by_upstream(&proxy.send(testers).await?)?;
        assert_eq!(
            counts.get(CANARY),
            Some(&(REQUESTS as u64)),
            "{}: {counts:?}",
            proxy.node_id
        );
        let others = by_upstream(&proxy.send(vec![Req::get(HOST); REQUESTS]).await?)?;
        assert_eq!(
            others.get(STABLE),
            Some(&(REQUESTS as u64)),
            "{}: {others:?}",
            proxy.node_id
        );
        // Same counter names in /stats for both builds.
        let key = (CANARY.to_string(), "header".to_string());
        proxy
            .wait_decisions(|d| d.get(&key).copied().unwrap_or(0) >= REQUESTS as u64)
            .await?;
    }

    // Each runs the build it asked for.
    let dynamic = "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";
    let wasm_type = "envoy.extensions.filters.http.wasm.v3.Wasm";
    let dump = native
        .envoy
        .admin_get("/config_dump?resource=ecds_filters")
        .await?;
    assert!(
        dump.contains(dynamic) && !dump.contains(wasm_type),
        "native node: {dump}"
    );
    let dump = wasm
        .envoy
        .admin_get("/config_dump?resource=ecds_filters")
        .await?;
    assert!(
        dump.contains(wasm_type) && !dump.contains(dynamic),
        "Wasm node: {dump}"
    );

    // A weight: in the routes only (the policy's stays 0). Both builds hand the router a bucket
    // (`x-sluice-bucket`) and the weighted route splits; a build that applied the policy's own
    // weight would pin every request to stable.
    let mut before = Vec::new();
    for node in ["wasm-node", "native-node"] {
        before.push(acked(&cp.wait_synced(node, |_| true).await?, RDS_TYPE));
    }
    cp.write_file(&rollout.clone().weight(50).yaml())?;
    for (node, before) in ["wasm-node", "native-node"].into_iter().zip(before) {
        cp.wait_synced(node, |p| acked(p, RDS_TYPE) != before)
            .await?;
    }
    for proxy in [&mut wasm, &mut native] {
        let counts = by_upstream(&proxy.send(vec![Req::get(HOST); 1_000]).await?)?;
        let what = format!("{}: canary share at weight 50", proxy.node_id);
        check_binomial(&what, counts.get(CANARY).copied().unwrap_or(0), 1_000, 0.5)?;
        // Counted as split decisions: the router, not the filter, picked the version.
        let key = ("_split".to_string(), "weight".to_string());
        proxy
            .wait_decisions(|d| d.get(&key).copied().unwrap_or(0) >= 1_000)
            .await?;
    }
    Ok(())
}
