//! The Sluice filter in a real Envoy, in front of three real upstreams (stable, canary and a
//! third live version, "pinned"; see `sluice_e2e::demo`): weights, header routes, stickiness, the
//! internal header's protection, route-cache clearing, counters and the fallback route.
//!
//! Needs the release module (`make wasm`) and the Envoy binary (see `sluice_e2e::paths`).

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, ensure};
use serde_json::json;
use sluice_e2e::demo::{
    CANARY, CONNECTIONS, HOST, PINNED, Rig, STABLE, count, header_routes, policy, repeat,
};
use sluice_e2e::stats::CounterKey;
use sluice_e2e::{Req, Resp, check_binomial, send_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_traffic_within_four_binomial_deviations() -> anyhow::Result<()> {
    const N: usize = 5000;
    for weight_bp in [0, 1000, 5000, 10_000] {
        // The fallback route alone would split 50/50, so exact 0 % and 100 % are the filter's.
        let mut rig = Rig::start(Some(&policy(weight_bp, json!({}))), [50, 50, 0]).await?;
        let responses = rig.send(repeat(Req::get(HOST), N)).await?;
        let canary = count(&responses, CANARY);
        let p = f64::from(weight_bp) / 10_000.0;
        check_binomial(
            &format!("canary share at {weight_bp} bp"),
            canary,
            N as u64,
            p,
        )?;
        assert_eq!(
            canary + count(&responses, STABLE),
            N as u64,
            "only stable and canary serve"
        );
        assert_eq!(rig.upstreams.canary.requests(), canary);
        // The routing header the upstream saw is the version that served it.
        for response in &responses {
            assert_eq!(response.seen_hash(), response.upstream());
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_routes_win_at_any_weight_and_can_pin_a_third_version() -> anyhow::Result<()> {
    const N: usize = 500;
    for weight_bp in [0, 5000, 10_000] {
        let mut rig = Rig::start(Some(&policy(weight_bp, header_routes())), [100, 0, 0]).await?;
        let testers = rig
            .send(repeat(Req::get(HOST).header("x-canary", "1"), N))
            .await?;
        assert_eq!(
            count(&testers, CANARY),
            N as u64,
            "testers at {weight_bp} bp"
        );

        let pinned = rig
            .send(repeat(Req::get(HOST).header("x-pin", "anything"), N))
            .await?;
        assert_eq!(count(&pinned, PINNED), N as u64, "pinned at {weight_bp} bp");

        // A value the route does not match falls through to the weight.
        let others = rig
            .send(repeat(Req::get(HOST).header("x-canary", "2"), N))
            .await?;
        assert_eq!(count(&others, PINNED), 0);
        let p = f64::from(weight_bp) / 10_000.0;
        check_binomial("non-matching header", count(&others, CANARY), N as u64, p)?;
    }
    Ok(())
}

/// Sends each key's request `times` times (interleaved, so a key's requests travel on different
/// connections and workers) and returns the version each key got; fails if a key moved.
async fn versions_by_key(
    rig: &mut Rig,
    keys: &[String],
    times: usize,
) -> anyhow::Result<HashMap<String, String>> {
    let requests: Vec<Req> = (0..times)
        .flat_map(|_| keys.iter().map(|key| Req::get(HOST).header("x-user", key)))
        .collect();
    let responses = rig.send(requests).await?;
    let mut by_key: HashMap<String, String> = HashMap::new();
    for (i, response) in responses.iter().enumerate() {
        let key = &keys[i % keys.len()];
        let upstream = response.upstream().context("no upstream")?.to_string();
        if let Some(earlier) = by_key.insert(key.clone(), upstream.clone()) {
            ensure!(
                earlier == upstream,
                "key {key} moved from {earlier} to {upstream}"
            );
        }
    }
    Ok(by_key)
}

fn canary_share(by_key: &HashMap<String, String>) -> f64 {
    let canary = by_key.values().filter(|version| *version == CANARY).count();
    canary as f64 / by_key.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_header_keys_split_by_weight_stay_put_and_only_move_to_canary() -> anyhow::Result<()>
{
    let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let sticky = json!({"stickiness": {"header": "x-user"}});

    let mut at_20 = Rig::start(Some(&policy(2000, sticky.clone())), [50, 50, 0]).await?;
    let before = versions_by_key(&mut at_20, &keys, 3).await?;
    drop(at_20);
    let share = canary_share(&before);
    assert!(
        (share - 0.20).abs() <= 0.02,
        "canary share at 20 %: {share}"
    );

    let mut at_50 = Rig::start(Some(&policy(5000, sticky)), [50, 50, 0]).await?;
    let after = versions_by_key(&mut at_50, &keys, 3).await?;
    let share = canary_share(&after);
    assert!(
        (share - 0.50).abs() <= 0.02,
        "canary share at 50 %: {share}"
    );

    for key in &keys {
        if before[key] == CANARY {
            assert_eq!(
                after[key], CANARY,
                "raising the weight moved {key} back to stable"
            );
        }
    }
    Ok(())
}

/// The `name=value` part of a Set-Cookie header.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap_or_default().trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_is_set_once_and_keeps_the_version() -> anyhow::Result<()> {
    const CLIENTS: usize = 400;
    let sticky = json!({"stickiness": {"cookie": {"name": "sluice", "maxAgeSeconds": 3600}}});
    let mut rig = Rig::start(Some(&policy(5000, sticky)), [50, 50, 0]).await?;

    // First visits: no cookie, so each gets a fresh key and a Set-Cookie.
    let first = rig.send(repeat(Req::get(HOST), CLIENTS)).await?;
    let mut cookies = Vec::new();
    for response in &first {
        let set_cookie = response.header_all("set-cookie");
        assert_eq!(
            set_cookie.len(),
            1,
            "one Set-Cookie on a first visit: {response:?}"
        );
        let value = set_cookie[0];
        let pair = cookie_pair(value);
        let key = pair
            .strip_prefix("sluice=")
            .context("cookie named sluice")?;
        assert!(
            key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "key of 16 hex digits: {value}"
        );
        assert_eq!(
            value,
            format!("{pair}; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax")
        );
        cookies.push((pair.to_string(), response.upstream().unwrap_or_default()));
    }
    let distinct: std::collections::HashSet<_> = cookies.iter().map(|(pair, _)| pair).collect();
    assert_eq!(distinct.len(), CLIENTS, "every new client gets its own key");
    let canary = count(&first, CANARY);
    check_binomial("first visits on canary", canary, CLIENTS as u64, 0.5)?;

    // Return visits send the cookie (alone, and among other cookies): same version, no new cookie.
    let returns: Vec<Req> = cookies
        .iter()
        .flat_map(|(pair, _)| {
            [
                Req::get(HOST).header("cookie", pair),
                Req::get(HOST).header("cookie", &format!("theme=dark; {pair}; lang=en")),
                Req::get(HOST).header("cookie", pair),
            ]
        })
        .collect();
    let responses = rig.send(returns).await?;
    for (i, response) in responses.iter().enumerate() {
        let (pair, version) = &cookies[i / 3];
        assert_eq!(
            response.upstream(),
            Some(*version),
            "return visit with {pair}"
        );
        assert!(
            response.header("set-cookie").is_none(),
            "no new Set-Cookie when {pair} is sent: {response:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_routing_header_has_no_effect() -> anyhow::Result<()> {
    const N: usize = 300;
    // The fallback would send everything to canary: stable answers only if the filter re-routes.
    let mut rig = Rig::start(Some(&policy(0, json!({}))), [0, 100, 0]).await?;
    for forged in [CANARY, PINNED, "no-such-hash"] {
        let responses = rig
            .send(repeat(Req::get(HOST).header("x-sluice-hash", forged), N))
            .await?;
        assert_eq!(count(&responses, STABLE), N as u64, "client sent {forged}");
        for response in &responses {
            assert_eq!(response.seen_hash(), Some(STABLE), "client sent {forged}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_decision_reroutes_past_the_fallback_route() -> anyhow::Result<()> {
    const N: usize = 500;
    // The weighted fallback is 100 % stable; only re-routing on the header the filter writes (which
    // needs the route cache cleared) can bring requests to canary or pinned.
    let mut rig = Rig::start(Some(&policy(0, header_routes())), [100, 0, 0]).await?;
    let to_canary = rig
        .send(repeat(Req::get(HOST).header("x-canary", "1"), N))
        .await?;
    assert_eq!(count(&to_canary, CANARY), N as u64);
    let to_pinned = rig
        .send(repeat(Req::get(HOST).header("x-pin", ""), N))
        .await?;
    assert_eq!(count(&to_pinned, PINNED), N as u64);
    drop(rig);

    // The same with the weight: 100 % canary against a 100 % stable fallback.
    let mut rig = Rig::start(Some(&policy(10_000, json!({}))), [100, 0, 0]).await?;
    let responses = rig.send(repeat(Req::get(HOST), N)).await?;
    assert_eq!(count(&responses, CANARY), N as u64);
    Ok(())
}

/// Sum of the counters whose (rollout, version, reason) pass `keep`.
fn sum_where(counters: &BTreeMap<CounterKey, u64>, keep: impl Fn(&str, &str, &str) -> bool) -> u64 {
    counters
        .iter()
        .filter(|((rollout, version, reason), _)| keep(rollout, version, reason))
        .map(|(_, value)| value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_per_rollout_version_and_reason_add_up() -> anyhow::Result<()> {
    let mut extra = header_routes();
    if let Some(extra) = extra.as_object_mut() {
        extra.insert("stickiness".to_string(), json!({"header": "x-user"}));
    }
    let mut rig = Rig::start(Some(&policy(3000, extra)), [50, 50, 0]).await?;
    let mut requests = repeat(Req::get(HOST), 2000);
    requests.extend(repeat(Req::get(HOST).header("x-canary", "1"), 300));
    requests.extend(repeat(Req::get(HOST).header("x-pin", "1"), 200));
    requests.extend((0..500).map(|i| Req::get(HOST).header("x-user", &format!("u{i}"))));
    // Another host: not a rollout, not counted.
    requests.extend(repeat(Req::get("other.local"), 100));
    let total_for_rollout = 2000 + 300 + 200 + 500;

    let responses = send_all(rig.addr, requests, CONNECTIONS).await?;
    rig.envoy.ensure_running()?;
    let served: Vec<&Resp> = responses.iter().filter(|r| r.status == 200).collect();
    assert_eq!(served.len(), total_for_rollout);

    let counters = rig
        .envoy
        .sluice_counters_reaching(total_for_rollout as u64)
        .await?;
    // Bounded: one counter per (version, reason) of the one rollout, 3 x 3.
    assert_eq!(counters.len(), 9, "{counters:#?}");
    assert!(
        counters
            .keys()
            .all(|(rollout, _, _)| rollout == "default_demo")
    );
    assert_eq!(
        sum_where(&counters, |_, _, _| true),
        total_for_rollout as u64,
        "all requests counted: {counters:#?}"
    );
    for upstream in [
        &rig.upstreams.stable,
        &rig.upstreams.canary,
        &rig.upstreams.pinned,
    ] {
        assert_eq!(
            sum_where(&counters, |_, version, _| version == upstream.name()),
            upstream.requests(),
            "counters of {}: {counters:#?}",
            upstream.name()
        );
    }
    let reason = |want: &str| sum_where(&counters, |_, _, reason| reason == want);
    assert_eq!(reason("header"), 500, "{counters:#?}");
    assert_eq!(reason("sticky"), 500, "{counters:#?}");
    assert_eq!(reason("weight"), 2000, "{counters:#?}");
    let at =
        |version: &str, why: &str| counters[&("default_demo".into(), version.into(), why.into())];
    assert_eq!(at(CANARY, "header"), 300);
    assert_eq!(at(PINNED, "header"), 200);
    assert_eq!(
        at(PINNED, "weight") + at(PINNED, "sticky") + at(STABLE, "header"),
        0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_filter_the_fallback_route_still_splits() -> anyhow::Result<()> {
    const N: usize = 5000;
    let mut rig = Rig::start(None, [70, 30, 0]).await?;
    let responses = rig.send(repeat(Req::get(HOST), N)).await?;
    check_binomial(
        "fallback canary share",
        count(&responses, CANARY),
        N as u64,
        0.3,
    )?;
    assert_eq!(
        count(&responses, STABLE) + count(&responses, CANARY),
        N as u64
    );
    Ok(())
}
