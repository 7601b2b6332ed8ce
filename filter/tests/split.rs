//! Weights in the routes (`bucketHeader`): the filter hands the router a bucket, and the router's
//! rule (canary iff bucket < weight, canary cluster first) picks the version the filter's own
//! decision would have picked.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_filter::decision::{Draw, bucket, draw};
use sluice_filter::metrics::{SPLIT_VERSION, Tally, split_slot};
use sluice_filter::policy::Rollout;
use sluice_filter::split::{Outcome, outcome};
use sluice_filter::{CompiledPolicy, PolicyError, Reason, RequestView, decide};

struct Headers(Vec<(&'static str, String)>);

impl RequestView for Headers {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_bytes().to_vec())
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
