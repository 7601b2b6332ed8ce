//! A/B/n through a real Envoy: an experiment's baseline beside the canary. A standalone rollouts
//! file in manual mode (the status written in the file, as Argo's controller would write it:
//! `status.canary.weights.additional`) with stable, canary at 10 % and a baseline at 10 % splits
//! 80/10/10 within 4 σ on both filter builds (Wasm and native), with zero failed requests; sticky
//! keys keep their version when the canary's weight grows (canary keys stay on the canary,
//! baseline keys on the baseline).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use sluice_e2e::{Req, Upstream, check_binomial};

use crate::harness::{
    CANARY, ControlPlane, HOST, Proxy, ProxyOptions, STABLE, THIRD, by_upstream, routes_acked,
};

/// The baseline's hash (an experiment template's ReplicaSet).
const BASELINE: &str = THIRD;
/// Requests per split check.
const REQUESTS: usize = 4_000;
/// Distinct sticky keys, and requests per key.
const USERS: usize = 300;
const PER_USER: usize = 2;
const NODES: [&str; 2] = ["experiment-wasm", "experiment-native"];

/// The rollouts file: canary at `canary` %, baseline at 10 %, sticky by `x-user-id`.
fn rollouts_yaml(upstreams: &[(&str, SocketAddr)], canary: u32) -> String {
    let endpoints: String = upstreams
        .iter()
        .map(|(hash, addr)| format!("    \"{hash}\": [\"{addr}\"]\n"))
        .collect();
    format!(
        "apiVersion: sluice.dev/v1alpha1\n\
         kind: Rollout\n\
         metadata: {{name: demo, namespace: default}}\n\
         spec:\n  hosts: [{HOST}]\n\
         \x20 staticEndpoints:\n{endpoints}\
         \x20 strategy:\n    canary:\n      stickiness: {{header: x-user-id}}\n\
         \x20     steps: [{{setWeight: {canary}}}, {{pause: {{}}}}]\n\
         status:\n  stableRS: \"{STABLE}\"\n  currentPodHash: \"{CANARY}\"\n  currentStepIndex: 1\n\
         \x20 canary:\n    weights:\n\
         \x20     canary: {{podTemplateHash: \"{CANARY}\", weight: {canary}}}\n\
         \x20     stable: {{podTemplateHash: \"{STABLE}\", weight: {stable}}}\n\
         \x20     additional:\n\
         \x20       - {{podTemplateHash: \"{BASELINE}\", serviceName: demo-baseline, weight: 10}}\n",
        stable = 90 - canary,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiment_splits_80_10_10_on_both_builds_and_keys_stay() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let baseline = Upstream::start(BASELINE).await?;
    let upstreams = [
        (STABLE, stable.addr()),
        (CANARY, canary.addr()),
        (BASELINE, baseline.addr()),
    ];
    let module = sluice_e2e::filter_native()?;
    let cp = ControlPlane::start(
        &rollouts_yaml(&upstreams, 10),
        &["--envoy-native-path".into(), module.display().to_string()],
    )
    .await?;
    let mut proxies = Vec::new();
    for (node, native) in NODES.into_iter().zip([false, true]) {
        let options = ProxyOptions {
            native,
            ..Default::default()
        };
        proxies.push(Proxy::start_serving(&cp, node, options).await?);
    }
    let mut before = Vec::new();
    for node in NODES {
        before.push(routes_acked(&cp.wait_synced(node, |_| true).await?));
    }

    let mut sticky_at_10 = Vec::new();
    for proxy in &proxies {
        check_split(proxy, &[(STABLE, 0.8), (CANARY, 0.1), (BASELINE, 0.1)]).await?;
        sticky_at_10.push(sticky(proxy).await?);
    }

    // The canary grows to 30 %; the baseline keeps 10 %.
    cp.write_file(&rollouts_yaml(&upstreams, 30))?;
    for (node, before) in NODES.into_iter().zip(before) {
        cp.wait_synced(node, |p| routes_acked(p) != before).await?;
    }
    for (proxy, at_10) in proxies.iter().zip(&sticky_at_10) {
        check_split(proxy, &[(STABLE, 0.6), (CANARY, 0.3), (BASELINE, 0.1)]).await?;
        let at_30 = sticky(proxy).await?;
        let mut moved_to_canary = 0;
        for (user, version) in at_10 {
            let now = &at_30[user];
            match version.as_str() {
                CANARY | BASELINE => assert_eq!(
                    now, version,
                    "{}: {user} left {version} when the canary grew",
                    proxy.node_id
                ),
                _ => {
                    assert_ne!(
                        now, BASELINE,
                        "{}: {user} moved to the baseline",
                        proxy.node_id
                    );
                    moved_to_canary += usize::from(now == CANARY);
                }
            }
        }
        assert!(
            moved_to_canary > 0,
            "{}: no key joined the canary",
            proxy.node_id
        );
    }
    Ok(())
}

/// Sends [`REQUESTS`] plain requests (every one must succeed) and checks each version's share.
async fn check_split(proxy: &Proxy, shares: &[(&str, f64)]) -> anyhow::Result<()> {
    let counts = by_upstream(&proxy.send(vec![Req::get(HOST); REQUESTS]).await?)?;
    eprintln!("{}: {counts:?}", proxy.node_id);
    let total: u64 = counts.values().sum();
    assert_eq!(total, REQUESTS as u64, "{}: {counts:?}", proxy.node_id);
    for (version, p) in shares {
        check_binomial(
            &format!("{}: share of {version}", proxy.node_id),
            counts.get(*version).copied().unwrap_or(0),
            REQUESTS as u64,
            *p,
        )?;
    }
    Ok(())
}

/// Sends [`PER_USER`] requests per sticky key; each key must stay on one version. Key → version.
async fn sticky(proxy: &Proxy) -> anyhow::Result<BTreeMap<String, String>> {
    let requests: Vec<Req> = (0..USERS * PER_USER)
        .map(|i| Req::get(HOST).header("x-user-id", &format!("user-{}", i % USERS)))
        .collect();
    let responses = proxy.send(requests).await?;
    by_upstream(&responses)?;
    let mut version_of: BTreeMap<String, String> = BTreeMap::new();
    for (i, response) in responses.iter().enumerate() {
        let user = format!("user-{}", i % USERS);
        let upstream = response.upstream().unwrap_or_default().to_string();
        let first = version_of.entry(user.clone()).or_insert(upstream.clone());
        assert_eq!(
            *first, upstream,
            "{}: {user} moved between versions",
            proxy.node_id
        );
    }
    Ok(version_of)
}

/// Filter-only mode (a hand-written static Envoy config, the policy in JSON): the filter itself
/// splits among the three versions (`additionalWeights`, the core's `version_of_bucket`), on
/// both builds. The config's fallback route sends everything to stable, so every request on the
/// canary or the baseline was the filter's decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_alone_splits_80_10_10_on_both_builds_and_keys_stay() -> anyhow::Result<()> {
    use sluice_e2e::demo::{self, PINNED, Upstreams};
    use sluice_e2e::{Envoy, FilterModule, FilterSetup, config::LISTENER, send_all};

    let upstreams = Upstreams::start().await?;
    let policy = |canary_bp: u32| {
        demo::policy(
            canary_bp,
            serde_json::json!({
                "additionalWeights": [{"name": "baseline", "hash": PINNED, "weightBp": 1000}],
                "stickiness": {"header": "x-user-id"},
            }),
        )
    };
    let modules = [
        FilterModule::Wasm(sluice_e2e::filter_wasm()?),
        FilterModule::Native(sluice_e2e::filter_native()?),
    ];
    for module in modules {
        let build = match &module {
            FilterModule::Wasm(_) => "wasm",
            FilterModule::Native(_) => "native",
        };
        let mut keys_at = Vec::new();
        for (canary_bp, shares) in [(1000u32, [0.8, 0.1, 0.1]), (3000, [0.6, 0.3, 0.1])] {
            let mut config = upstreams.rollout_config(Some(&policy(canary_bp)), [100, 0, 0], 0)?;
            config.filter = Some(FilterSetup {
                module: module.clone(),
                policy_json: policy(canary_bp).to_string(),
            });
            let mut envoy = Envoy::start(&config.render()).await?;
            let addr = envoy.listener_addr(LISTENER).await?;
            let responses = send_all(addr, vec![Req::get(HOST); REQUESTS], 4).await?;
            envoy.ensure_running()?;
            let counts = by_upstream(&responses)?;
            eprintln!("filter-only {build} at {canary_bp} bp: {counts:?}");
            for (version, p) in [demo::STABLE, demo::CANARY, PINNED].into_iter().zip(shares) {
                check_binomial(
                    &format!("filter-only {build} at {canary_bp} bp: share of {version}"),
                    counts.get(version).copied().unwrap_or(0),
                    REQUESTS as u64,
                    p,
                )?;
            }
            let keyed: Vec<Req> = (0..USERS)
                .map(|i| Req::get(HOST).header("x-user-id", &format!("user-{i}")))
                .collect();
            let responses = send_all(addr, keyed, 4).await?;
            by_upstream(&responses)?;
            let versions: Vec<String> = responses
                .iter()
                .map(|r| r.upstream().unwrap_or_default().to_string())
                .collect();
            keys_at.push(versions);
        }
        for (user, (at_10, at_30)) in keys_at[0].iter().zip(&keys_at[1]).enumerate() {
            if at_10 == demo::CANARY || at_10 == PINNED {
                assert_eq!(at_30, at_10, "{build}: user-{user} left {at_10}");
            } else {
                assert_ne!(at_30, PINNED, "{build}: user-{user} moved to the baseline");
            }
        }
    }
    Ok(())
}
