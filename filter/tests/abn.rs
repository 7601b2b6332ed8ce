//! A/B/n: additional weighted versions beside stable and canary (`additionalWeights`, schema 2).
//! The bucket rule ([`version_of_bucket`]): canary `[0, c)`, additional versions at the top of the
//! range in order, stable in between; stickiness stays monotonic for the canary.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use prost::Message;
use serde_json::{Value, json};
use sluice_filter::decision::{bucket, version_of_bucket};
use sluice_filter::policy::Rollout;
use sluice_filter::{CompiledPolicy, PolicyError, Reason, RequestView, decide};
use sluice_proto::v1 as pb;

#[derive(Default)]
struct Headers(Vec<(String, Vec<u8>)>);

impl RequestView for Headers {
    fn for_each_value(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        for (_, value) in self.0.iter().filter(|(k, _)| k == name) {
            each(value);
        }
    }
}

fn user(key: &[u8]) -> Headers {
    Headers(vec![("x-user".into(), key.to_vec())])
}

/// Versions `aaa` (stable, index 0), `bbb` (canary, 1), `ccc` (2), `ddd` (3); `extra` merged in.
fn policy(extra: Value) -> Result<CompiledPolicy, PolicyError> {
    let mut r = json!({
        "name": "default/demo",
        "hosts": ["demo.local"],
        "versions": ["aaa", "bbb", "ccc", "ddd"],
        "stableHash": "aaa",
        "canaryHash": "bbb",
    });
    let mut top = json!({});
    for (k, v) in extra.as_object().unwrap() {
        if k == "schemaVersion" {
            top[k] = v.clone();
        } else {
            r[k] = v.clone();
        }
    }
    top["rollouts"] = json!([r]);
    CompiledPolicy::from_bytes(top.to_string().as_bytes())
}

fn rollout(extra: Value) -> Rollout {
    policy(extra).expect("valid test policy").rollouts.remove(0)
}

fn error(extra: Value) -> String {
    policy(extra).unwrap_err().to_string()
}

/// Canary weight `c`, baseline `ccc` at `b`, `ddd` at `d` (omitted when 0), sticky by `x-user`.
fn experiment(c: u32, b: u32, d: u32) -> Rollout {
    let mut additional = vec![json!({"name": "baseline", "hash": "ccc", "weightBp": b})];
    if d > 0 {
        additional.push(json!({"name": "other", "hash": "ddd", "weightBp": d}));
    }
    rollout(json!({
        "canaryWeightBp": c,
        "additionalWeights": additional,
        "stickiness": {"header": "x-user"},
    }))
}

#[test]
fn additional_weights_are_compiled_in_order() {
    let r = experiment(1000, 1000, 500);
    let got: Vec<(&str, &str, u32)> = r
        .additional
        .iter()
        .map(|a| (a.name.as_str(), r.hash(a.version), a.weight_bp))
        .collect();
    assert_eq!(got, vec![("baseline", "ccc", 1000), ("other", "ddd", 500)]);
}

#[test]
fn additional_weights_are_checked_with_their_field() {
    let cases = [
        (
            json!({"additionalWeights": [{"hash": "zzz", "weightBp": 1}]}),
            "additionalWeights[0].hash: \"zzz\" is not one of versions",
        ),
        (
            json!({"additionalWeights": [{"hash": "aaa", "weightBp": 1}]}),
            "additionalWeights[0].hash: \"aaa\" is the stable hash",
        ),
        (
            json!({"additionalWeights": [{"hash": "bbb", "weightBp": 1}]}),
            "additionalWeights[0].hash: \"bbb\" is the canary hash",
        ),
        (
            json!({"additionalWeights": [{"hash": "ccc", "weightBp": 1}, {"hash": "ccc", "weightBp": 1}]}),
            "additionalWeights[1].hash: \"ccc\" is also additionalWeights[0]",
        ),
        (
            json!({"canaryWeightBp": 5000, "additionalWeights": [
                {"hash": "ccc", "weightBp": 4000}, {"hash": "ddd", "weightBp": 1001}]}),
            "additionalWeights[1].weightBp: 1001 brings",
        ),
        (
            json!({"additionalWeights": [{"hash": "ccc", "weightBp": 4294967295u32}]}),
            "additionalWeights[0].weightBp:",
        ),
    ];
    for (extra, want) in cases {
        let err = error(extra.clone());
        assert!(
            err.starts_with(&format!("rollout \"default/demo\": {want}")),
            "{extra}: {err}"
        );
    }
    let err = error(json!({"schemaVersion": 3}));
    assert!(
        err.starts_with("policy: schemaVersion: 3 is newer"),
        "{err}"
    );
    // Without a canary, an additional version still may take a share.
    let no_canary = rollout(json!({"canaryHash": "", "additionalWeights": [
        {"hash": "bbb", "weightBp": 2000}]}));
    assert_eq!(no_canary.hash(version_of_bucket(&no_canary, 9999)), "bbb");
    assert_eq!(no_canary.hash(version_of_bucket(&no_canary, 0)), "aaa");
}

#[test]
fn buckets_lay_out_canary_first_additional_last_stable_between() {
    let r = experiment(1000, 1000, 500);
    let mut counts = [0u32; 4];
    for b in 0..10_000 {
        counts[version_of_bucket(&r, b)] += 1;
    }
    assert_eq!(counts, [7500, 1000, 1000, 500]);
    let at = |b| r.hash(version_of_bucket(&r, b)).to_owned();
    assert_eq!(
        [
            at(0),
            at(999),
            at(1000),
            at(8499),
            at(8500),
            at(9499),
            at(9500),
            at(9999)
        ],
        ["bbb", "bbb", "aaa", "aaa", "ccc", "ccc", "ddd", "ddd"]
    );
    // Canary and additional versions take everything: no stable range at all.
    let full = experiment(8000, 1500, 500);
    assert_eq!(full.hash(version_of_bucket(&full, 7999)), "bbb");
    assert_eq!(full.hash(version_of_bucket(&full, 8000)), "ccc");
    assert_eq!(full.hash(version_of_bucket(&full, 10_000)), "ddd");
}

/// The experiment: stable 80 %, canary 10 %, baseline 10 % from random draws, within
/// 4 sigma of each share; each decision counts under its own version.
#[test]
fn random_draws_split_80_10_10() {
    let r = rollout(json!({"canaryWeightBp": 1000,
        "additionalWeights": [{"name": "baseline", "hash": "ccc", "weightBp": 1000}]}));
    let mut rng = fastrand::Rng::with_seed(7);
    let n = 50_000usize;
    let mut counts = [0usize; 4];
    for _ in 0..n {
        let d = decide(&r, &Headers::default(), &mut rng);
        assert_eq!(d.reason, Reason::Weight);
        assert_eq!(d.metric_slot() / Reason::ALL.len(), d.version);
        counts[d.version] += 1;
    }
    for (version, share) in [(0usize, 0.8f64), (1, 0.1), (2, 0.1), (3, 0.0)] {
        let expected = n as f64 * share;
        let sigma = (n as f64 * share * (1.0 - share)).sqrt();
        let got = counts[version] as f64;
        assert!(
            (got - expected).abs() <= 4.0 * sigma,
            "version {version}: {got} of {n}, expected {expected} ± {}",
            4.0 * sigma
        );
    }
}

/// What the filter decided before additional weights existed: canary iff bucket < weight, a
/// random draw only when 0 < weight < 10000.
fn old_rule(weight: u32, sticky: Option<u32>, rng: &mut fastrand::Rng) -> usize {
    let canary = match (sticky, weight) {
        (Some(b), _) => b < weight,
        (None, 0) => false,
        (None, 10_000..) => true,
        (None, w) => rng.u32(0..10_000) < w,
    };
    usize::from(canary)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The canary's buckets are [0, c) whatever the additional weights: a sticky key in the
    /// canary at weight c stays there at any c' >= c; a key of an additional version stays on it
    /// while only the canary weight moves; a key on stable goes to stable or the canary, never to
    /// an additional version; and no key in the canary's range goes anywhere else.
    #[test]
    fn stickiness_stays_monotonic_for_the_canary(
        key in proptest::collection::vec(any::<u8>(), 1..48),
        b in 0u32..=4000, d in 0u32..=2000, c in 0u32..=4000, dc in 0u32..=4000,
    ) {
        let c2 = (c + dc).min(10_000 - b - d);
        let low = experiment(c, b, d);
        let high = experiment(c2, b, d);
        let mut rng = fastrand::Rng::with_seed(1);
        let at_low = decide(&low, &user(&key), &mut rng);
        let at_high = decide(&high, &user(&key), &mut rng);
        prop_assert_eq!(at_low.reason, Reason::Sticky);
        let (v1, v2) = (low.hash(at_low.version), high.hash(at_high.version));
        match v1 {
            "bbb" => prop_assert_eq!(v2, "bbb"),
            "ccc" | "ddd" => prop_assert_eq!(v2, v1),
            _ => prop_assert!(v2 == "aaa" || v2 == "bbb", "stable key went to {}", v2),
        }
        if bucket(&key) < c {
            prop_assert_eq!(v1, "bbb");
        }
    }

    /// A policy without `additionalWeights` (an old policy, JSON or protobuf) decides exactly as
    /// the filter did before they existed, sticky or random, and draws the same numbers.
    #[test]
    fn an_old_policy_decides_as_before(
        w in prop_oneof![Just(0u32), Just(10_000u32), 0u32..=10_000],
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..32)),
        seed in any::<u64>(),
    ) {
        let old = pb::RolloutPolicy {
            name: "default/demo".into(),
            hosts: vec!["demo.local".into()],
            versions: vec!["aaa".into(), "bbb".into()],
            stable_hash: "aaa".into(),
            canary_hash: "bbb".into(),
            canary_weight_bp: w,
            stickiness: Some(pb::Stickiness {
                key: Some(pb::stickiness::Key::Header("x-user".into())),
            }),
            ..Default::default()
        };
        let bytes = pb::FilterPolicy { rollouts: vec![old], ..Default::default() }.encode_to_vec();
        let r = CompiledPolicy::from_bytes(&bytes).unwrap().rollouts.remove(0);
        prop_assert!(r.additional.is_empty());
        let h = key.as_deref().map_or_else(Headers::default, user);
        let (mut rng, mut old_rng) = (fastrand::Rng::with_seed(seed), fastrand::Rng::with_seed(seed));
        let d = decide(&r, &h, &mut rng);
        prop_assert_eq!(d.version, old_rule(w, key.as_deref().map(bucket), &mut old_rng));
        prop_assert_eq!(rng.u64(..), old_rng.u64(..), "the generator advanced differently");
    }
}
