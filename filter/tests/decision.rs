//! The per-request decision: header routes, stickiness, weighted draw, and their properties.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::HashSet;

use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_filter::decision::{bucket, metric_slots};
use sluice_filter::metrics::counter_names;
use sluice_filter::policy::Rollout;
use sluice_filter::{CompiledPolicy, Decision, Reason, RequestView, decide};

/// Request headers for tests; records which names the decision asked for.
#[derive(Default)]
struct Headers {
    pairs: Vec<(String, Vec<u8>)>,
    asked: RefCell<Vec<String>>,
}

impl Headers {
    fn new(pairs: &[(&str, &str)]) -> Self {
        Self {
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            asked: RefCell::default(),
        }
    }
}

impl RequestView for Headers {
    fn for_each_value(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        self.asked.borrow_mut().push(name.to_owned());
        for (_, value) in self.pairs.iter().filter(|(k, _)| k == name) {
            each(value);
        }
    }
}

/// Compiles one rollout: `extra` fields are merged over a three-version rollout
/// (stable `aaa`, canary `bbb`, also `ccc`).
fn rollout(extra: Value) -> Rollout {
    let mut r = json!({
        "name": "default/demo",
        "hosts": ["demo.local"],
        "versions": ["aaa", "bbb", "ccc"],
        "stableHash": "aaa",
        "canaryHash": "bbb",
    });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    let policy = json!({ "rollouts": [r] }).to_string();
    let mut p = CompiledPolicy::from_bytes(policy.as_bytes()).expect("valid test policy");
    p.rollouts.remove(0)
}

fn hash_of(r: &Rollout, d: &Decision) -> String {
    r.hash(d.version).to_owned()
}

fn rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(42)
}

type HeaderPairs<'a> = &'a [(&'a str, &'a str)];

fn routes() -> Rollout {
    rollout(json!({
        "canaryWeightBp": 0,
        "headerRoutes": [
            {"name": "exact", "matches": [{"name": "x-canary", "exact": "1"}], "canary": true},
            {"name": "prefix", "matches": [{"name": "x-team", "prefix": "qa-"}], "hash": "ccc"},
            {"name": "regex", "matches": [{"name": "x-user", "regex": "[a-c]+[0-9]"}], "hash": "bbb"},
            {"name": "and", "matches": [
                {"name": "x-a", "present": true},
                {"name": "x-b", "exact": "yes"}
            ], "hash": "ccc"}
        ]
    }))
}

#[test]
fn header_routes_match_each_kind() {
    let r = routes();
    let cases: &[(HeaderPairs, &str, Reason)] = &[
        (&[("x-canary", "1")], "bbb", Reason::Header),
        (&[("x-canary", "11")], "aaa", Reason::Weight),
        (&[("x-team", "qa-blue")], "ccc", Reason::Header),
        (&[("x-team", "dev-qa-")], "aaa", Reason::Weight),
        (&[("x-user", "abc7")], "bbb", Reason::Header),
        (&[("x-user", "abc7x")], "aaa", Reason::Weight),
        (&[("x-user", "zabc7")], "aaa", Reason::Weight),
        (&[("x-a", ""), ("x-b", "yes")], "ccc", Reason::Header),
        (&[("x-a", "")], "aaa", Reason::Weight),
        (&[("x-b", "yes")], "aaa", Reason::Weight),
        // First matching route wins.
        (
            &[("x-team", "qa-1"), ("x-canary", "1")],
            "bbb",
            Reason::Header,
        ),
        (&[], "aaa", Reason::Weight),
    ];
    for (headers, want, reason) in cases {
        let d = decide(&r, &Headers::new(headers), &mut rng());
        assert_eq!(
            (hash_of(&r, &d).as_str(), d.reason),
            (*want, *reason),
            "headers {headers:?}"
        );
        assert_eq!(d.set_cookie, None);
    }
}

#[test]
fn regex_does_not_match_non_utf8_values() {
    let r = routes();
    let h = Headers {
        pairs: vec![("x-user".into(), b"ab\xff1".to_vec())],
        ..Default::default()
    };
    assert_eq!(decide(&r, &h, &mut rng()).reason, Reason::Weight);
}

#[test]
fn only_needed_headers_are_read() {
    let r = rollout(json!({"canaryWeightBp": 5000}));
    let h = Headers::new(&[("x-canary", "1")]);
    decide(&r, &h, &mut rng());
    assert!(h.asked.borrow().is_empty(), "asked {:?}", h.asked.borrow());

    let r = routes();
    let h = Headers::new(&[("x-canary", "1")]);
    decide(&r, &h, &mut rng());
    assert_eq!(*h.asked.borrow(), ["x-canary"]);
}

#[test]
fn weight_edges() {
    let mut rng = rng();
    let never = rollout(json!({"canaryWeightBp": 0}));
    let always = rollout(json!({"canaryWeightBp": 10000}));
    // Policy validation rejects a weight without a canary; the decision still never panics on it.
    let mut no_canary = rollout(json!({"canaryWeightBp": 5000}));
    no_canary.canary = None;
    for _ in 0..2000 {
        let h = Headers::default();
        assert_eq!(hash_of(&never, &decide(&never, &h, &mut rng)), "aaa");
        assert_eq!(hash_of(&always, &decide(&always, &h, &mut rng)), "bbb");
        assert_eq!(
            hash_of(&no_canary, &decide(&no_canary, &h, &mut rng)),
            "aaa"
        );
    }
    let sticky_never = rollout(json!({"canaryWeightBp": 0, "stickiness": {"header": "x-user"}}));
    let sticky_always =
        rollout(json!({"canaryWeightBp": 10000, "stickiness": {"header": "x-user"}}));
    for i in 0..2000 {
        let h = Headers::new(&[("x-user", &format!("user-{i}"))]);
        assert_eq!(
            hash_of(&sticky_never, &decide(&sticky_never, &h, &mut rng)),
            "aaa"
        );
        assert_eq!(
            hash_of(&sticky_always, &decide(&sticky_always, &h, &mut rng)),
            "bbb"
        );
    }
}

#[test]
fn header_stickiness() {
    let r = rollout(json!({"canaryWeightBp": 5000, "stickiness": {"header": "x-user"}}));
    let mut rng = rng();
    for user in ["alice", "bob", "carol", "dave"] {
        let h = Headers::new(&[("x-user", user)]);
        let first = decide(&r, &h, &mut rng);
        assert_eq!(first.reason, Reason::Sticky);
        let want = if bucket(user.as_bytes()) < 5000 {
            "bbb"
        } else {
            "aaa"
        };
        assert_eq!(hash_of(&r, &first), want, "user {user}");
        for _ in 0..50 {
            assert_eq!(decide(&r, &h, &mut rng), first);
        }
    }
    // Absent or empty key: a random draw.
    assert_eq!(
        decide(&r, &Headers::default(), &mut rng).reason,
        Reason::Weight
    );
    assert_eq!(
        decide(&r, &Headers::new(&[("x-user", "")]), &mut rng).reason,
        Reason::Weight
    );
}

#[test]
fn cookie_stickiness() {
    let r = rollout(json!({
        "canaryWeightBp": 5000,
        "stickiness": {"cookie": {"name": "sluice", "maxAgeSeconds": 600}}
    }));
    let mut rng = rng();

    let h = Headers::new(&[("cookie", "theme=dark; sluice=user-42")]);
    let d = decide(&r, &h, &mut rng);
    assert_eq!((d.reason, d.set_cookie.as_deref()), (Reason::Sticky, None));
    let want = if bucket(b"user-42") < 5000 {
        "bbb"
    } else {
        "aaa"
    };
    assert_eq!(hash_of(&r, &d), want);

    for headers in [
        &[][..],
        &[("cookie", "theme=dark")][..],
        &[("cookie", "sluice=")][..],
    ] {
        let d = decide(&r, &Headers::new(headers), &mut rng);
        assert_eq!(d.reason, Reason::Sticky);
        let cookie = d.set_cookie.clone().expect("a new key is handed out");
        let key = cookie
            .strip_prefix("sluice=")
            .and_then(|c| c.strip_suffix("; Path=/; Max-Age=600; HttpOnly; SameSite=Lax"))
            .expect("cookie format");
        assert_eq!(key.len(), 16);
        // The client's next request, carrying the new cookie, lands on the same version.
        let again = decide(
            &r,
            &Headers::new(&[("cookie", &format!("sluice={key}"))]),
            &mut rng,
        );
        assert_eq!((again.version, again.set_cookie), (d.version, None));
    }

    let session = rollout(json!({"stickiness": {"cookie": {"name": "s"}}}));
    let d = decide(&session, &Headers::default(), &mut rng);
    assert!(
        d.set_cookie
            .unwrap()
            .ends_with("; Path=/; HttpOnly; SameSite=Lax")
    );
}

/// Issue 7: `x-canary: 1` and `x-canary: 0` on two lines are one value, "1,0", as Envoy's route
/// HeaderMatcher sees them; the result does not depend on header order.
#[test]
fn repeated_headers_are_matched_joined_like_envoy_routes() {
    let r = routes();
    for pairs in [
        &[("x-canary", "1"), ("x-canary", "0")][..],
        &[("x-canary", "0"), ("x-canary", "1")][..],
    ] {
        let d = decide(&r, &Headers::new(pairs), &mut rng());
        assert_eq!(
            (hash_of(&r, &d).as_str(), d.reason),
            ("aaa", Reason::Weight),
            "{pairs:?}"
        );
    }
    // The joined value is what prefix and regex see too.
    let joined = rollout(json!({"headerRoutes": [
        {"name": "p", "matches": [{"name": "x-canary", "prefix": "1,"}], "canary": true},
        {"name": "r", "matches": [{"name": "x-team", "regex": "a,b"}], "hash": "ccc"},
    ]}));
    let d = decide(
        &joined,
        &Headers::new(&[("x-canary", "1"), ("x-canary", "0")]),
        &mut rng(),
    );
    assert_eq!(hash_of(&joined, &d), "bbb");
    let d = decide(
        &joined,
        &Headers::new(&[("x-team", "a"), ("x-team", "b")]),
        &mut rng(),
    );
    assert_eq!(hash_of(&joined, &d), "ccc");
    // The sticky header's key is the joined value as well.
    let sticky = rollout(json!({"canaryWeightBp": 5000, "stickiness": {"header": "x-user"}}));
    let d = decide(
        &sticky,
        &Headers::new(&[("x-user", "u1"), ("x-user", "u2")]),
        &mut rng(),
    );
    let want = if bucket(b"u1,u2") < 5000 {
        "bbb"
    } else {
        "aaa"
    };
    assert_eq!(hash_of(&sticky, &d), want);
}

/// Issue 7: two HTTP/1.1 `Cookie:` lines with the sticky key in the second one keep the key.
#[test]
fn sticky_cookie_is_found_in_any_cookie_field() {
    let r = rollout(json!({
        "canaryWeightBp": 5000,
        "stickiness": {"cookie": {"name": "sluice", "maxAgeSeconds": 600}}
    }));
    let want = if bucket(b"user-42") < 5000 {
        "bbb"
    } else {
        "aaa"
    };
    for pairs in [
        &[("cookie", "theme=dark"), ("cookie", "sluice=user-42")][..],
        &[
            ("cookie", "theme=dark"),
            ("cookie", "lang=en; sluice=user-42"),
        ][..],
        &[("cookie", "sluice=user-42"), ("cookie", "sluice=other")][..],
    ] {
        let d = decide(&r, &Headers::new(pairs), &mut rng());
        assert_eq!(
            (d.reason, d.set_cookie.as_deref()),
            (Reason::Sticky, None),
            "{pairs:?}"
        );
        assert_eq!(hash_of(&r, &d), want, "{pairs:?}");
    }
}

#[test]
fn sticky_cookie_attributes_follow_the_policy() {
    let r = rollout(json!({"stickiness": {"cookie": {
        "name": "__Host-sluice", "maxAgeSeconds": 60, "secure": true, "sameSite": "Strict"
    }}}));
    let d = decide(&r, &Headers::default(), &mut rng());
    let cookie = d.set_cookie.expect("a new key");
    assert!(
        cookie.starts_with("__Host-sluice=")
            && cookie.ends_with("; Path=/; Max-Age=60; Secure; HttpOnly; SameSite=Strict"),
        "{cookie}"
    );
}

#[test]
fn header_routes_come_before_stickiness() {
    let r = rollout(json!({
        "canaryWeightBp": 0,
        "headerRoutes": [{"name": "pin", "matches": [{"name": "x-pin", "present": true}], "hash": "ccc"}],
        "stickiness": {"cookie": {"name": "sluice"}}
    }));
    let d = decide(&r, &Headers::new(&[("x-pin", "1")]), &mut rng());
    assert_eq!(
        (hash_of(&r, &d).as_str(), d.reason, d.set_cookie),
        ("ccc", Reason::Header, None)
    );
}

#[test]
fn metric_slots_are_unique_and_match_counter_names() {
    let r = routes();
    let names = counter_names(&r);
    assert_eq!(names.len(), 9);
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), 9);
    for (slot, (version, reason)) in metric_slots(&r).enumerate() {
        let d = Decision {
            version,
            reason,
            set_cookie: None,
        };
        assert_eq!(d.metric_slot(), slot);
        assert_eq!(
            names[slot],
            format!(
                "sluice_requests_total.rollout.default_demo.version.{}.reason.{}",
                r.hash(version),
                reason.label()
            )
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Keys spread evenly over 100 groups of 100 buckets (chi-square, df = 99; the bound is far
    /// beyond the 1e-6 tail so a correct hash practically never fails).
    #[test]
    fn buckets_are_uniform(seed in any::<u64>()) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let n = 100_000usize;
        let mut counts = [0u32; 100];
        for _ in 0..n {
            let key = format!("user-{:x}", rng.u64(..));
            counts[(bucket(key.as_bytes()) / 100) as usize] += 1;
        }
        let expected = n as f64 / 100.0;
        let chi2: f64 = counts.iter().map(|&c| (f64::from(c) - expected).powi(2) / expected).sum();
        prop_assert!(chi2 < 200.0, "chi-square {chi2}");
    }

    /// The random draw sends weight/10000 of the traffic to the canary, within 4 sigma.
    #[test]
    fn random_draw_share(weight in 1u32..10_000, seed in any::<u64>()) {
        let r = rollout(json!({"canaryWeightBp": weight}));
        let mut rng = fastrand::Rng::with_seed(seed);
        let n = 20_000f64;
        let canary = (0..n as usize)
            .filter(|_| decide(&r, &Headers::default(), &mut rng).version == 1)
            .count() as f64;
        let p = f64::from(weight) / 10_000.0;
        let sigma = (n * p * (1.0 - p)).sqrt();
        prop_assert!((canary - n * p).abs() <= 4.0 * sigma + 1.0,
            "weight {weight}: {canary} of {n}, expected {}", n * p);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A client in the canary at weight w stays in the canary at any w' >= w.
    #[test]
    fn stickiness_is_monotonic_in_weight(key in proptest::collection::vec(any::<u8>(), 1..64),
                                         w in 0u32..=10_000, dw in 0u32..=10_000) {
        let w2 = (w + dw).min(10_000);
        let low = rollout(json!({"canaryWeightBp": w, "stickiness": {"header": "x-user"}}));
        let high = rollout(json!({"canaryWeightBp": w2, "stickiness": {"header": "x-user"}}));
        let h = Headers { pairs: vec![("x-user".into(), key)], ..Default::default() };
        let mut rng = fastrand::Rng::with_seed(1);
        let at_low = decide(&low, &h, &mut rng);
        let at_high = decide(&high, &h, &mut rng);
        prop_assert_eq!(at_low.reason, Reason::Sticky);
        if at_low.version == 1 {
            prop_assert_eq!(at_high.version, 1);
        }
    }

    /// Any header bytes, any cookies, any number of headers: a decision, never a panic.
    #[test]
    fn arbitrary_headers_never_panic(
        pairs in proptest::collection::vec(
            (prop_oneof![
                Just("cookie".to_string()), Just("x-canary".to_string()),
                Just("x-team".to_string()), Just("x-user".to_string()),
                Just("x-a".to_string()), Just("x-b".to_string()), "[a-z-]{1,12}"
            ], proptest::collection::vec(any::<u8>(), 0..64)),
            0..3000),
        seed in any::<u64>(),
    ) {
        let mut with_cookie = routes();
        with_cookie.stickiness = Some(sluice_filter::policy::Sticky::Cookie(
            sluice_filter::policy::StickyCookie {
                name: "sluice".into(), max_age_seconds: 1, secure: false,
                same_site: sluice_proto::rules::SameSite::Lax,
            }));
        let h = Headers { pairs, ..Default::default() };
        let mut rng = fastrand::Rng::with_seed(seed);
        for r in [&routes(), &with_cookie] {
            let d = decide(r, &h, &mut rng);
            prop_assert!(d.version < r.versions.len());
        }
    }
}
