//! The pushed policy splits traffic as configured: weights within binomial tolerance, a header
//! route sends every matching request to the canary, stickiness keeps each key on one version —
//! over state-of-the-world and over delta ADS.

use std::collections::BTreeMap;

use sluice_e2e::{Req, Upstream, check_binomial};

use crate::harness::{
    CANARY, ControlPlane, HOST, Proxy, ProxyOptions, Rollout, STABLE, by_upstream, routes_acked,
};

/// Requests per weight check.
const SPLIT_REQUESTS: usize = 5_000;
/// Distinct sticky keys, and requests per key.
const USERS: usize = 300;
const PER_USER: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_header_route_and_stickiness_sotw() -> anyhow::Result<()> {
    split_scenario(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_header_route_and_stickiness_delta() -> anyhow::Result<()> {
    split_scenario(true).await
}

async fn split_scenario(delta: bool) -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let mut rollout = Rollout::two(stable.addr(), canary.addr(), 10);
    rollout.header_route = true;
    rollout.sticky_header = Some("x-user-id".into());
    let cp = ControlPlane::start(&rollout.yaml(), &[]).await?;
    let node = if delta { "split-delta" } else { "split-sotw" };
    let mut proxy = Proxy::start_serving(
        &cp,
        node,
        ProxyOptions {
            delta,
            ..Default::default()
        },
    )
    .await?;
    let synced = cp.wait_synced(node, |_| true).await?;
    assert_eq!(
        synced.delta, delta,
        "status must say which ADS flavour the proxy uses"
    );

    check_split(&proxy, 0.10).await?;
    let sticky_at_10 = check_sticky(&proxy, 0.10).await?;

    let before = routes_acked(&synced);
    cp.write_file(&rollout.clone().weight(50).yaml())?;
    cp.wait_synced(node, |p| routes_acked(p) != before).await?;
    check_split(&proxy, 0.50).await?;
    let sticky_at_50 = check_sticky(&proxy, 0.50).await?;
    // Raising the weight only moves keys onto the canary, never off it.
    for (user, version) in &sticky_at_10 {
        if version == CANARY {
            assert_eq!(sticky_at_50[user], CANARY, "{user} left the canary at 50 %");
        }
    }

    // The header route (its setHeaderRoute step is reached) wins over weight and stickiness.
    let routed: Vec<Req> = (0..500)
        .map(|i| {
            Req::get(HOST)
                .header("x-canary", "1")
                .header("x-user-id", &format!("user-{i}"))
        })
        .collect();
    let counts = by_upstream(&proxy.send(routed).await?)?;
    assert_eq!(
        counts.get(CANARY),
        Some(&500),
        "x-canary: 1 → canary: {counts:?}"
    );
    // A non-matching value is split as usual.
    let other: Vec<Req> = (0..500)
        .map(|_| Req::get(HOST).header("x-canary", "2"))
        .collect();
    let counts = by_upstream(&proxy.send(other).await?)?;
    check_binomial(
        "x-canary: 2 at 50 %",
        counts.get(CANARY).copied().unwrap_or(0),
        500,
        0.5,
    )?;

    // The filter, not the native fallback route, made the decisions.
    let header_key = (CANARY.to_string(), "header".to_string());
    let decisions = proxy
        .wait_decisions(|d| d.get(&header_key) >= Some(&500))
        .await?;
    for reason in ["weight", "sticky", "header"] {
        let n: u64 = decisions
            .iter()
            .filter(|((_, r), _)| r == reason)
            .map(|(_, n)| n)
            .sum();
        assert!(n > 0, "no filter decisions by {reason}: {decisions:?}");
    }
    Ok(())
}

/// Sends [`SPLIT_REQUESTS`] plain requests and checks the canary's share.
async fn check_split(proxy: &Proxy, p: f64) -> anyhow::Result<()> {
    let requests = vec![Req::get(HOST); SPLIT_REQUESTS];
    let counts = by_upstream(&proxy.send(requests).await?)?;
    let on_canary = counts.get(CANARY).copied().unwrap_or(0);
    eprintln!("weight {p}: {counts:?}");
    check_binomial(
        &format!("canary share at weight {p}"),
        on_canary,
        SPLIT_REQUESTS as u64,
        p,
    )
}

/// Sends [`PER_USER`] requests per sticky key; checks each key stays on one version and the
/// share of keys on the canary. Returns key → version.
async fn check_sticky(proxy: &Proxy, p: f64) -> anyhow::Result<BTreeMap<String, String>> {
    let requests: Vec<Req> = (0..USERS * PER_USER)
        .map(|i| Req::get(HOST).header("x-user-id", &format!("user-{}", i % USERS)))
        .collect();
    let responses = proxy.send(requests).await?;
    by_upstream(&responses)?;
    let mut version_of: BTreeMap<String, String> = BTreeMap::new();
    for (i, response) in responses.iter().enumerate() {
        let user = format!("user-{}", i % USERS);
        let upstream = response.upstream().unwrap_or_default().to_string();
        if let Some(first) = version_of.get(&user) {
            assert_eq!(
                first, &upstream,
                "{user} moved between versions at weight {p}"
            );
        } else {
            version_of.insert(user, upstream);
        }
    }
    let on_canary = version_of.values().filter(|v| *v == CANARY).count() as u64;
    check_binomial(
        &format!("sticky keys on the canary at weight {p}"),
        on_canary,
        USERS as u64,
        p,
    )?;
    Ok(version_of)
}
