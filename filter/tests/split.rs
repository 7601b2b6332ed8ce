//! Weights in the routes (`bucketHeader`): the filter hands the router a bucket, and the router's
//! rule (canary iff bucket < weight, canary cluster first) picks the version the filter's own
//! decision would have picked.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_filter::decision::{Draw, bucket, draw};
use sluice_filter::metrics::{SPLIT_VERSION, Tally, split_slot};
use sluice_filter::policy::Rollout;
use sluice_filter::split::{Outcome, Routing, Value as Written, outcome, route};
use sluice_filter::{CompiledPolicy, PolicyError, Reason, RequestView, decide};

struct Headers(Vec<(&'static str, String)>);

impl RequestView for Headers {
    fn for_each_value(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        for (_, value) in self.0.iter().filter(|(k, _)| *k == name) {
            each(value.as_bytes());
        }
    }
}

fn policy(bucket_header: &str, extra: Value) -> Result<CompiledPolicy, PolicyError> {
    let mut r = json!({
        "name": "default/demo",
        "hosts": ["demo.local"],
        "versions": ["aaa", "bbb"],
        "stableHash": "aaa",
        "canaryHash": "bbb",
        "headerRoutes": [{"name": "testers", "matches": [{"name": "x-canary", "exact": "1"}],
                          "canary": true}],
    });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    let p = json!({ "bucketHeader": bucket_header, "rollouts": [r] }).to_string();
    CompiledPolicy::from_bytes(p.as_bytes())
}

fn rollout(extra: Value) -> Rollout {
    policy("x-sluice-bucket", extra)
        .expect("valid test policy")
        .rollouts
        .remove(0)
}

/// The router's pick for a bucket: Envoy's weighted_clusters with the canary first.
fn router_picks_canary(bucket: u32, weight_bp: u32) -> bool {
    bucket % 10_000 < weight_bp
}

#[test]
fn bucket_header_is_compiled_and_checked() {
    let p = policy("x-sluice-bucket", json!({})).unwrap();
    assert_eq!(p.bucket_header.as_deref(), Some("x-sluice-bucket"));
    assert_eq!(policy("", json!({})).unwrap().bucket_header, None);
    for bad in ["X-Bucket", "bad header", "x-sluice-hash"] {
        let err = policy(bad, json!({})).unwrap_err().to_string();
        assert!(err.starts_with("policy: bucketHeader:"), "{bad}: {err}");
    }
}

#[test]
fn a_header_route_pins_the_version() {
    let r = rollout(json!({"stickiness": {"header": "x-user-id"}}));
    let h = Headers(vec![("x-canary", "1".into()), ("x-user-id", "u1".into())]);
    assert_eq!(
        outcome(&r, &h, &mut fastrand::Rng::with_seed(1)),
        Outcome::Version(1)
    );
}

#[test]
fn a_sticky_key_hands_over_its_bucket() {
    let r = rollout(json!({"stickiness": {"header": "x-user-id"}}));
    let h = Headers(vec![("x-user-id", "user-42".into())]);
    assert_eq!(
        outcome(&r, &h, &mut fastrand::Rng::with_seed(1)),
        Outcome::Bucket {
            bucket: bucket(b"user-42"),
            reason: Reason::Sticky,
            set_cookie: None,
        }
    );
}

#[test]
fn a_new_cookie_key_is_handed_out_with_its_bucket() {
    let r = rollout(json!({"stickiness": {"cookie": {"name": "sluice"}}}));
    let mut rng = fastrand::Rng::with_seed(7);
    let Outcome::Bucket {
        bucket: b,
        reason: Reason::Sticky,
        set_cookie: Some(cookie),
    } = outcome(&r, &Headers(vec![]), &mut rng)
    else {
        panic!("a new sticky cookie was expected");
    };
    let key = cookie
        .strip_prefix("sluice=")
        .and_then(|rest| rest.split(';').next())
        .unwrap();
    assert_eq!(b, bucket(key.as_bytes()));
}

#[test]
fn without_stickiness_the_bucket_is_drawn_uniformly() {
    let r = rollout(json!({}));
    let mut rng = fastrand::Rng::with_seed(3);
    let mut below_2500 = 0;
    for _ in 0..20_000 {
        match outcome(&r, &Headers(vec![]), &mut rng) {
            Outcome::Bucket {
                bucket,
                reason: Reason::Weight,
                set_cookie: None,
            } => {
                assert!(bucket < 10_000);
                below_2500 += u32::from(bucket < 2_500);
            }
            other => panic!("{other:?}"),
        }
    }
    // 25 % ± 5 standard deviations (σ ≈ 61).
    assert!((4_700..=5_300).contains(&below_2500), "{below_2500}");
}

proptest! {
    /// For any sticky key and weight, the router's pick from the handed-over bucket is the
    /// filter's own decision with that weight: moving the weights into the routes changes no
    /// client's version.
    #[test]
    fn the_router_picks_what_the_filter_would(key in "[a-zA-Z0-9-]{1,24}", weight in 0u32..=10_000) {
        let mut r = rollout(json!({"stickiness": {"header": "x-user-id"}}));
        r.weight_bp = weight;
        let h = Headers(vec![("x-user-id", key.clone())]);
        let own = decide(&r, &h, &mut fastrand::Rng::with_seed(1));
        let Draw::Sticky { bucket: b, .. } = draw(&r, &h, &mut fastrand::Rng::with_seed(1)) else {
            panic!("sticky expected");
        };
        let routed = if router_picks_canary(b, weight) { 1 } else { 0 };
        prop_assert_eq!(own.version, routed);
    }
}

#[test]
fn split_decisions_have_their_own_counters() {
    let p = policy("x-sluice-bucket", json!({})).unwrap();
    let names = Tally::counter_names(&p);
    let tally = Tally::new(&p);
    // 2 versions x 3 reasons + (split, sticky) + (split, weight).
    assert_eq!((names.len(), tally.len()), (8, 8));
    let r = &p.rollouts[0];
    assert_eq!(
        names[split_slot(r, Reason::Sticky)],
        format!("sluice_requests_total.rollout.default_demo.version.{SPLIT_VERSION}.reason.sticky")
    );
    assert_eq!(
        names[split_slot(r, Reason::Weight)],
        "sluice_requests_total.rollout.default_demo.version._split.reason.weight"
    );
    tally.record(0, split_slot(r, Reason::Weight));
    let mut drained = Vec::new();
    tally.drain(|i, n| drained.push((i, n)));
    assert_eq!(drained, [(7, 1)]);

    // Without the bucket header there are no split counters.
    let own = policy("", json!({})).unwrap();
    assert_eq!(Tally::counter_names(&own).len(), 6);
}

fn written(value: Written<'_>) -> String {
    value.with_bytes(|b| String::from_utf8(b.to_vec()).unwrap())
}

#[test]
fn values_are_written_as_hash_or_decimal_bucket() {
    assert_eq!(written(Written::Hash("bbb")), "bbb");
    for (bucket, text) in [(0, "0"), (7, "7"), (2_500, "2500"), (9_999, "9999")] {
        assert_eq!(written(Written::Bucket(bucket)), text);
    }
    assert_eq!(written(Written::Bucket(u32::MAX)), u32::MAX.to_string());
}

/// The one routing rule both glues (Wasm and native) apply, in bucket mode.
#[test]
fn route_in_bucket_mode_writes_the_bucket_or_pins_and_removes_it() {
    let p = policy(
        "x-sluice-bucket",
        json!({"stickiness": {"header": "x-user-id"}}),
    )
    .unwrap();
    let r = &p.rollouts[0];
    let mut rng = fastrand::Rng::with_seed(1);

    // A header route: the routing header, and a client-sent bucket header removed.
    let pinned = route(&p, r, &Headers(vec![("x-canary", "1".into())]), &mut rng);
    assert_eq!(
        pinned,
        Routing {
            header: "x-sluice-hash",
            value: Written::Hash("bbb"),
            remove: Some("x-sluice-bucket"),
            slot: 3,
            set_cookie: None,
        }
    );

    // A sticky key: its bucket, counted as a split decision.
    let sticky = route(&p, r, &Headers(vec![("x-user-id", "u7".into())]), &mut rng);
    assert_eq!(sticky.header, "x-sluice-bucket");
    assert_eq!(sticky.value, Written::Bucket(bucket(b"u7")));
    assert_eq!(sticky.remove, None);
    assert_eq!(sticky.slot, split_slot(r, Reason::Sticky));
}

/// Without a bucket header the filter decides the version itself, exactly as `decide` does.
#[test]
fn route_without_bucket_header_is_decide() {
    let p = policy("", json!({"stickiness": {"header": "x-user-id"}})).unwrap();
    let r = &p.rollouts[0];
    for key in ["a", "b", "c", "user-42"] {
        let h = Headers(vec![("x-user-id", key.into())]);
        let own = decide(r, &h, &mut fastrand::Rng::with_seed(1));
        let routed = route(&p, r, &h, &mut fastrand::Rng::with_seed(1));
        assert_eq!(routed.header, "x-sluice-hash");
        assert_eq!(routed.value, Written::Hash(r.hash(own.version)));
        assert_eq!((routed.remove, routed.slot), (None, own.metric_slot()));
    }
}

/// Issue 7 §4 rules hold on the bucket path too: every `Cookie` field is read, repeated headers
/// are joined before a header route tests them, and a new cookie carries its attributes.
#[test]
fn bucket_mode_reads_headers_and_cookies_by_the_shared_rules() {
    let cookie = json!({"stickiness": {"cookie": {"name": "__Host-sluice", "secure": true}}});
    let p = policy("x-sluice-bucket", cookie).unwrap();
    let r = &p.rollouts[0];
    let mut rng = fastrand::Rng::with_seed(5);

    let two_lines = Headers(vec![
        ("cookie", "a=1".into()),
        ("cookie", "b=2; __Host-sluice=key-9".into()),
    ]);
    let routed = route(&p, r, &two_lines, &mut rng);
    assert_eq!(routed.value, Written::Bucket(bucket(b"key-9")));
    assert_eq!(routed.set_cookie, None);

    let fresh = route(&p, r, &Headers(vec![]), &mut rng);
    let set = fresh.set_cookie.expect("a new sticky cookie");
    assert!(
        set.starts_with("__Host-sluice=") && set.contains("; Secure"),
        "{set}"
    );

    // `x-canary: 1` then `x-canary: 0` is `1,0` (as Envoy's route matching sees it): no match.
    let repeated = Headers(vec![("x-canary", "1".into()), ("x-canary", "0".into())]);
    let routed = route(&p, r, &repeated, &mut rng);
    assert_eq!(routed.header, "x-sluice-bucket");
}
