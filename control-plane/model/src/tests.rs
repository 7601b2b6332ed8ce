//! Unit tests and property tests of validation, rendering, weights and overrides.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use prost::Message;
use sluice_proto::v1 as pb;

use crate::validate::compile_anchored;
use crate::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn demo() -> RolloutState {
    RolloutState {
        name: "default/demo".into(),
        hosts: vec!["demo.local".into(), "demo.default.svc".into()],
        versions: BTreeMap::from([
            (
                "aaa111".to_owned(),
                Version {
                    endpoints: vec![addr("127.0.0.1:8001"), addr("127.0.0.1:8002")],
                },
            ),
            (
                "bbb222".to_owned(),
                Version {
                    endpoints: vec![addr("127.0.0.1:8003")],
                },
            ),
        ]),
        stable_hash: "aaa111".into(),
        canary_hash: Some("bbb222".into()),
        canary_weight_bp: 2500,
        header_routes: vec![HeaderRoute {
            name: "testers".into(),
            matches: vec![
                HeaderMatch {
                    name: "x-canary".into(),
                    kind: MatchKind::Exact("1".into()),
                },
                HeaderMatch {
                    name: "user-agent".into(),
                    kind: MatchKind::Regex("firefox.*".into()),
                },
            ],
            target: RouteTarget::Canary,
        }],
        mirror_routes: Vec::new(),
        additional_weights: Vec::new(),
        preview: None,
        stickiness: Stickiness::Cookie {
            name: "sluice".into(),
            max_age_seconds: 3600,
            secure: false,
            same_site: SameSite::Lax,
        },
    }
}

fn state_of(rollouts: Vec<RolloutState>) -> TrafficState {
    TrafficState {
        rollouts: rollouts.into_iter().map(|r| (r.name.clone(), r)).collect(),
    }
}

/// The field path of the validation error, as text.
fn invalid_field(rollout: &RolloutState) -> String {
    match rollout.validate() {
        Err(ModelError::InvalidField { field, .. }) => field.to_string(),
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn the_demo_rollout_is_valid() {
    demo().validate().expect("valid");
    state_of(vec![demo()]).validate().expect("valid state");
}

/// A change that breaks one rule of a valid rollout.
type Breakage = Box<dyn Fn(&mut RolloutState)>;

#[test]
fn each_rule_names_its_field() {
    let cases: Vec<(&str, Breakage)> = vec![
        ("name", Box::new(|r| r.name.clear())),
        ("hosts", Box::new(|r| r.hosts.clear())),
        ("hosts[1]", Box::new(|r| r.hosts[1] = "Demo.local".into())),
        (
            "hosts[1]",
            Box::new(|r| r.hosts[1] = "demo.local:80".into()),
        ),
        ("hosts[1]", Box::new(|r| r.hosts[1] = "-demo".into())),
        ("hosts[1]", Box::new(|r| r.hosts[1] = "demo..local".into())),
        ("hosts[1]", Box::new(|r| r.hosts[1] = "demo.local".into())),
        ("versions", Box::new(|r| r.versions.clear())),
        (
            r#"versions["BAD"]"#,
            Box::new(|r| {
                r.versions.insert("BAD".into(), Version::default());
            }),
        ),
        (
            r#"versions["bbb222"].endpoints[1]"#,
            Box::new(|r| {
                let v = r.versions.get_mut("bbb222").expect("canary");
                v.endpoints.push(addr("127.0.0.1:8003"));
            }),
        ),
        (
            r#"versions["bbb222"].endpoints[0]"#,
            Box::new(|r| {
                let v = r.versions.get_mut("bbb222").expect("canary");
                v.endpoints[0] = addr("127.0.0.1:8001");
            }),
        ),
        ("stableHash", Box::new(|r| r.stable_hash = "ccc".into())),
        ("stableHash", Box::new(|r| r.stable_hash = String::new())),
        (
            "canaryHash",
            Box::new(|r| r.canary_hash = Some("ccc".into())),
        ),
        (
            "canaryHash",
            Box::new(|r| r.canary_hash = Some("aaa111".into())),
        ),
        ("canaryWeightBp", Box::new(|r| r.canary_weight_bp = 10_001)),
        (
            "canaryWeightBp",
            Box::new(|r| {
                r.canary_hash = None;
                r.header_routes.clear();
            }),
        ),
        (
            "headerRoutes[0].name",
            Box::new(|r| r.header_routes[0].name.clear()),
        ),
        (
            "headerRoutes[1].name",
            Box::new(|r| r.header_routes.push(r.header_routes[0].clone())),
        ),
        (
            "headerRoutes[0].matches",
            Box::new(|r| r.header_routes[0].matches.clear()),
        ),
        (
            "headerRoutes[0].matches[1].name",
            Box::new(|r| r.header_routes[0].matches[1].name = "User-Agent".into()),
        ),
        (
            "headerRoutes[0].matches[1].name",
            Box::new(|r| r.header_routes[0].matches[1].name = "user agent".into()),
        ),
        (
            "headerRoutes[0].matches[1].regex",
            Box::new(|r| r.header_routes[0].matches[1].kind = MatchKind::Regex("(a".into())),
        ),
        (
            "headerRoutes[0].target",
            Box::new(|r| {
                r.canary_hash = None;
                r.canary_weight_bp = 0;
            }),
        ),
        (
            "headerRoutes[0].target",
            Box::new(|r| r.header_routes[0].target = RouteTarget::Hash("zzz".into())),
        ),
        (
            "stickiness.header",
            Box::new(|r| r.stickiness = Stickiness::Header("X-User".into())),
        ),
        (
            "stickiness.cookie.name",
            Box::new(|r| {
                r.stickiness = Stickiness::Cookie {
                    name: "a=b".into(),
                    max_age_seconds: 0,
                    secure: false,
                    same_site: SameSite::Lax,
                }
            }),
        ),
        (
            "stickiness.cookie.secure",
            Box::new(|r| {
                r.stickiness = Stickiness::Cookie {
                    name: "__Host-sluice".into(),
                    max_age_seconds: 0,
                    secure: false,
                    same_site: SameSite::Lax,
                }
            }),
        ),
        (
            "hosts[0]",
            Box::new(|r| r.hosts[0] = "*.example.com".into()),
        ),
    ];
    for (want, break_it) in cases {
        let mut rollout = demo();
        break_it(&mut rollout);
        assert_eq!(invalid_field(&rollout), want, "{rollout:?}");
    }
}

#[test]
fn errors_read_as_rollout_field_problem() {
    let mut rollout = demo();
    rollout.header_routes[0].matches[1].kind = MatchKind::Regex("(a".into());
    let message = rollout.validate().expect_err("bad regex").to_string();
    assert!(
        message.starts_with(
            r#"rollout "default/demo": headerRoutes[0].matches[1].regex: "(a" is not a valid regex: "#
        ),
        "{message}"
    );
}

#[test]
fn routes_to_any_live_hash_and_pseudo_headers_are_valid() {
    let mut rollout = demo();
    rollout.header_routes[0].target = RouteTarget::Hash("aaa111".into());
    rollout.header_routes[0].matches[0] = HeaderMatch {
        name: ":path".into(),
        kind: MatchKind::Prefix("/beta".into()),
    };
    rollout.validate().expect("valid");
}

#[test]
fn a_host_may_belong_to_one_rollout_only() {
    let mut other = demo();
    other.name = "default/other".into();
    other.hosts = vec!["other.local".into(), "demo.local".into()];
    let err = state_of(vec![demo(), other])
        .validate()
        .expect_err("shared host");
    assert_eq!(
        err,
        ModelError::HostInTwoRollouts {
            host: "demo.local".into(),
            first: "default/demo".into(),
            second: "default/other".into(),
        }
    );
}

#[test]
fn rollouts_are_stored_under_their_name() {
    let mut state = state_of(vec![demo()]);
    let rollout = state.rollouts.remove("default/demo").expect("demo");
    state.rollouts.insert("default/else".into(), rollout);
    assert!(matches!(
        state.validate(),
        Err(ModelError::KeyMismatch { .. })
    ));
}

#[test]
fn version_weights_split_between_stable_and_canary() {
    let mut rollout = demo();
    rollout.versions.insert("ccc333".into(), Version::default());
    assert_eq!(
        rollout.version_weights_bp(),
        BTreeMap::from([
            ("aaa111".to_owned(), 7500),
            ("bbb222".to_owned(), 2500),
            ("ccc333".to_owned(), 0),
        ])
    );
    rollout.canary_hash = None;
    rollout.canary_weight_bp = 0;
    assert_eq!(rollout.version_weights_bp()["aaa111"], FULL_WEIGHT_BP);
}

#[test]
fn overrides_change_weight_promote_and_abort() {
    let mut rollout = demo();
    rollout
        .apply_override(Override::SetWeight(10_000))
        .expect("set");
    assert_eq!(rollout.canary_weight_bp, 10_000);

    let mut aborted = demo();
    aborted.apply_override(Override::Abort).expect("abort");
    assert_eq!(aborted.canary_weight_bp, 0);
    assert_eq!(aborted.canary_hash.as_deref(), Some("bbb222"));
    assert!(aborted.header_routes.is_empty());
    aborted.validate().expect("an aborted rollout is valid");

    rollout.header_routes.push(HeaderRoute {
        name: "pin-old".into(),
        matches: vec![HeaderMatch {
            name: "x-old".into(),
            kind: MatchKind::Present,
        }],
        target: RouteTarget::Hash("aaa111".into()),
    });
    rollout.apply_override(Override::Promote).expect("promote");
    assert_eq!(rollout.stable_hash, "bbb222");
    assert_eq!(rollout.canary_hash, None);
    assert_eq!(rollout.canary_weight_bp, 0);
    assert_eq!(rollout.header_routes.len(), 1, "routes to a hash are kept");
    rollout.validate().expect("a promoted rollout is valid");
}

#[test]
fn meaningless_overrides_are_refused_and_change_nothing() {
    let mut rollout = demo();
    let err = rollout
        .apply_override(Override::SetWeight(10_001))
        .expect_err("above 100 %");
    assert!(err.to_string().contains("above 10000"), "{err}");
    assert_eq!(rollout, demo());

    rollout.apply_override(Override::Promote).expect("promote");
    let promoted = rollout.clone();
    for op in [Override::Promote, Override::Abort, Override::SetWeight(5)] {
        let err = rollout.apply_override(op).expect_err("no canary");
        assert!(err.to_string().contains("there is no canary"), "{err}");
        assert_eq!(rollout, promoted);
    }
}

#[test]
fn render_maps_every_field() {
    let policy = policy::render(&state_of(vec![demo()]), "x-sluice-hash");
    let expected = pb::FilterPolicy {
        routing_header: "x-sluice-hash".into(),
        bucket_header: String::new(),
        schema_version: 0,
        rollouts: vec![pb::RolloutPolicy {
            name: "default/demo".into(),
            hosts: vec!["demo.local".into(), "demo.default.svc".into()],
            versions: vec!["aaa111".into(), "bbb222".into()],
            stable_hash: "aaa111".into(),
            canary_hash: "bbb222".into(),
            canary_weight_bp: 2500,
            header_routes: vec![pb::HeaderRoute {
                name: "testers".into(),
                matches: vec![
                    pb::HeaderMatch {
                        name: "x-canary".into(),
                        r#match: Some(pb::header_match::Match::Exact("1".into())),
                    },
                    pb::HeaderMatch {
                        name: "user-agent".into(),
                        r#match: Some(pb::header_match::Match::Regex("firefox.*".into())),
                    },
                ],
                target: Some(pb::header_route::Target::Canary(true)),
            }],
            stickiness: Some(pb::Stickiness {
                key: Some(pb::stickiness::Key::Cookie(pb::CookieStickiness {
                    name: "sluice".into(),
                    max_age_seconds: 3600,
                    secure: false,
                    same_site: "Lax".into(),
                })),
            }),
            additional_weights: vec![],
        }],
    };
    assert_eq!(policy, expected);

    let mut plain = demo();
    plain.canary_hash = None;
    plain.canary_weight_bp = 0;
    plain.header_routes.clear();
    plain.stickiness = Stickiness::None;
    let policy = policy::render(&state_of(vec![plain]), "x-v");
    assert_eq!(policy.rollouts[0].canary_hash, "");
    assert_eq!(policy.rollouts[0].stickiness, None);
}

// ---- property tests -------------------------------------------------------------------------

fn arb_hash() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,9}"
}

fn arb_header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,11}",
        Just(":path".to_owned()),
        Just(":authority".to_owned()),
    ]
}

fn arb_match_kind() -> impl Strategy<Value = MatchKind> {
    prop_oneof![
        ".{0,8}".prop_map(MatchKind::Exact),
        ".{0,8}".prop_map(MatchKind::Prefix),
        prop_oneof![
            Just("firefox.*".to_owned()),
            Just("(a|b)+".to_owned()),
            Just(r"\d{3}".to_owned()),
            "[a-z]{1,6}",
        ]
        .prop_map(MatchKind::Regex),
        Just(MatchKind::Present),
    ]
}

fn arb_stickiness() -> impl Strategy<Value = Stickiness> {
    prop_oneof![
        Just(Stickiness::None),
        arb_header_name().prop_map(Stickiness::Header),
        (
            "[A-Za-z0-9_.-]{1,10}",
            any::<u32>(),
            prop_oneof![
                Just(SameSite::Lax),
                Just(SameSite::Strict),
                Just(SameSite::None)
            ],
        )
            .prop_map(|(name, max_age_seconds, same_site)| Stickiness::Cookie {
                name,
                max_age_seconds,
                secure: true,
                same_site,
            }),
    ]
}

prop_compose! {
    /// A valid rollout: every rule holds by construction.
    fn arb_rollout(name: String)(
        hashes in prop::collection::btree_set(arb_hash(), 1..4),
        hosts in prop::collection::btree_set("[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,2}", 1..4),
        ports in prop::collection::btree_set(1u16.., 0..8),
        has_canary in any::<bool>(),
        weight in 0..=FULL_WEIGHT_BP,
        routes in prop::collection::vec(
            (prop::collection::vec((arb_header_name(), arb_match_kind()), 1..3), any::<bool>(), any::<prop::sample::Index>()),
            0..3,
        ),
        stickiness in arb_stickiness(),
    ) -> RolloutState {
        let hashes: Vec<String> = hashes.into_iter().collect();
        let mut versions: BTreeMap<String, Version> =
            hashes.iter().map(|h| (h.clone(), Version::default())).collect();
        for (i, port) in ports.into_iter().enumerate() {
            let hash = &hashes[i % hashes.len()];
            let version = versions.get_mut(hash).expect("generated hash");
            version.endpoints.push(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        let canary_hash = (has_canary && hashes.len() > 1).then(|| hashes[1].clone());
        let header_routes = routes
            .into_iter()
            .enumerate()
            .map(|(i, (matches, to_canary, pick))| HeaderRoute {
                name: format!("route-{i}"),
                matches: matches
                    .into_iter()
                    .map(|(name, kind)| HeaderMatch { name, kind })
                    .collect(),
                target: if to_canary && canary_hash.is_some() {
                    RouteTarget::Canary
                } else {
                    RouteTarget::Hash(pick.get(&hashes).clone())
                },
            })
            .collect();
        RolloutState {
            name: name.clone(),
            hosts: hosts.into_iter().collect(),
            versions,
            stable_hash: hashes[0].clone(),
            canary_weight_bp: if canary_hash.is_some() { weight } else { 0 },
            canary_hash,
            header_routes,
            mirror_routes: Vec::new(),
            additional_weights: Vec::new(),
            preview: None,
            stickiness,
        }
    }
}

fn arb_state() -> impl Strategy<Value = TrafficState> {
    (
        arb_rollout("default/a".into()),
        arb_rollout("shop/b".into()),
    )
        .prop_map(|(a, mut b)| {
            // Hosts are disjoint across rollouts by construction.
            b.hosts.retain(|h| !a.hosts.contains(h));
            b.hosts.push("b-only".into());
            state_of(vec![a, b])
        })
}

/// The rules the filter applies to a policy it receives (proto/sluice/v1/policy.proto).
fn filter_accepts(policy: &pb::FilterPolicy) -> Result<(), String> {
    let mut hosts = BTreeSet::new();
    for r in &policy.rollouts {
        let versions: BTreeSet<&String> = r.versions.iter().collect();
        if versions.len() != r.versions.len() || versions.is_empty() {
            return Err(format!("{}: versions", r.name));
        }
        for h in &r.hosts {
            if !hosts.insert(h.to_ascii_lowercase()) {
                return Err(format!("{}: host {h} twice", r.name));
            }
        }
        if !versions.contains(&r.stable_hash) {
            return Err(format!("{}: stable", r.name));
        }
        if !r.canary_hash.is_empty() && !versions.contains(&r.canary_hash) {
            return Err(format!("{}: canary", r.name));
        }
        if r.canary_weight_bp > FULL_WEIGHT_BP {
            return Err(format!("{}: weight", r.name));
        }
        for route in &r.header_routes {
            if route.matches.is_empty() {
                return Err(format!("{}: {} has no match", r.name, route.name));
            }
            match &route.target {
                Some(pb::header_route::Target::Canary(true)) if !r.canary_hash.is_empty() => {}
                Some(pb::header_route::Target::Hash(h)) if versions.contains(h) => {}
                other => return Err(format!("{}: target {other:?}", r.name)),
            }
            for m in &route.matches {
                match &m.r#match {
                    Some(pb::header_match::Match::Regex(re)) => {
                        compile_anchored(re).map_err(|e| e.to_string())?;
                    }
                    Some(_) => {}
                    None => return Err(format!("{}: match without kind", r.name)),
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn generated_states_are_valid_and_render_to_policies_the_filter_accepts(state in arb_state()) {
        prop_assert_eq!(state.validate(), Ok(()));
        let policy = policy::render(&state, "x-sluice-hash");
        prop_assert_eq!(filter_accepts(&policy), Ok(()));
        let bytes = policy.encode_to_vec();
        prop_assert_eq!(pb::FilterPolicy::decode(bytes.as_slice()).expect("decodes"), policy);
    }

    #[test]
    fn equal_states_render_identical_bytes(state in arb_state()) {
        // A clone rebuilt in reverse insertion order is equal, and must render the same bytes.
        let rebuilt = TrafficState { rollouts: state.rollouts.clone().into_iter().rev().collect() };
        prop_assert_eq!(&rebuilt, &state);
        prop_assert_eq!(
            policy::render(&state, "h").encode_to_vec(),
            policy::render(&rebuilt, "h").encode_to_vec()
        );
    }

    #[test]
    fn weights_always_sum_to_full(rollout in arb_rollout("default/w".into())) {
        let weights = rollout.version_weights_bp();
        prop_assert_eq!(weights.values().sum::<u32>(), FULL_WEIGHT_BP);
        prop_assert_eq!(weights.len(), rollout.versions.len());
    }

    #[test]
    fn overrides_keep_a_valid_rollout_valid(
        rollout in arb_rollout("default/o".into()),
        op in prop_oneof![
            (0..=FULL_WEIGHT_BP + 10).prop_map(Override::SetWeight),
            Just(Override::Promote),
            Just(Override::Abort),
        ],
    ) {
        let mut after = rollout.clone();
        match after.apply_override(op) {
            Ok(()) => prop_assert_eq!(after.validate(), Ok(())),
            Err(_) => prop_assert_eq!(after, rollout),
        }
    }

    #[test]
    fn weights_above_full_are_always_rejected(
        rollout in arb_rollout("default/x".into()),
        weight in FULL_WEIGHT_BP + 1..,
    ) {
        let mut rollout = rollout;
        rollout.canary_weight_bp = weight;
        prop_assert!(rollout.validate().is_err());
    }
}

/// The shared table of `sluice_proto::rules::cases`, through the model's validation: the filter's
/// policy validation runs the same table (filter/tests/policy.rs), so both accept the same.
#[test]
fn shared_rule_cases_hold_for_the_model() {
    use sluice_proto::rules::cases;
    fn check(what: &str, ok: bool, field: &str, edit: impl FnOnce(&mut RolloutState)) {
        let mut rollout = demo();
        edit(&mut rollout);
        match rollout.validate() {
            Ok(()) => assert!(ok, "{what}: accepted, must be rejected"),
            Err(ModelError::InvalidField { field: got, .. }) => {
                assert!(!ok, "{what}: rejected, must be accepted");
                assert!(
                    got.to_string().starts_with(field),
                    "{what}: {got} is not {field}"
                );
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
    for (host, ok) in cases::HOSTS {
        check(&format!("host {host:?}"), *ok, "hosts[0]", |r| {
            r.hosts = vec![(*host).to_owned()]
        });
    }
    for (host, ok) in cases::HOSTS {
        // Blue/green preview hosts follow the same rule (the filter never sees them: Envoy's
        // route domains do, from the same `route_domains`).
        let ok = *ok && *host != "demo.local";
        check(
            &format!("preview host {host:?}"),
            ok,
            "preview.hosts[0]",
            |r| {
                r.preview = Some(Preview {
                    hosts: vec![(*host).to_owned()],
                    hash: "bbb222".into(),
                })
            },
        );
    }
    for (hash, ok) in cases::HASHES {
        check(&format!("hash {hash:?}"), *ok, "versions", |r| {
            let version = r.versions.remove("bbb222").unwrap();
            r.versions.insert((*hash).to_owned(), version);
            r.canary_hash = Some((*hash).to_owned());
        });
    }
    for (name, ok) in cases::HEADER_NAMES {
        check(
            &format!("header {name:?}"),
            *ok,
            "headerRoutes[0].matches[0].name",
            |r| r.header_routes[0].matches[0].name = (*name).to_owned(),
        );
        check(
            &format!("sticky header {name:?}"),
            *ok,
            "stickiness.header",
            |r| r.stickiness = Stickiness::Header((*name).to_owned()),
        );
    }
    for (name, ok) in cases::ROLLOUT_NAMES {
        check(&format!("rollout name {name:?}"), *ok, "name", |r| {
            r.name = (*name).to_owned()
        });
    }
    for (weight, ok) in cases::WEIGHTS {
        check(&format!("weight {weight}"), *ok, "canaryWeightBp", |r| {
            r.canary_weight_bp = *weight
        });
    }
    for (re, ok) in cases::REGEXES {
        check(
            &format!("regex {re:?}"),
            *ok,
            "headerRoutes[0].matches[1].regex",
            |r| r.header_routes[0].matches[1].kind = MatchKind::Regex((*re).to_owned()),
        );
    }
    for (name, secure, same_site, ok) in cases::COOKIES {
        let what = format!("cookie {name:?} secure={secure} sameSite={same_site:?}");
        // The model holds a parsed SameSite; an unparsable one is rejected where it is parsed
        // (sluice-api derivation, the filter's policy decoding).
        let Ok(same_site) = SameSite::parse(same_site) else {
            assert!(!ok, "{what}: unparsable sameSite must be rejected");
            continue;
        };
        check(&what, *ok, "stickiness.cookie.", |r| {
            r.stickiness = Stickiness::Cookie {
                name: (*name).to_owned(),
                max_age_seconds: 0,
                secure: *secure,
                same_site,
            }
        });
    }
}

#[test]
fn a_preview_routes_its_hosts_to_a_live_version_and_its_hosts_are_the_rollouts() {
    let mut rollout = demo();
    rollout.preview = Some(Preview {
        hosts: vec!["preview.demo.local".into()],
        hash: "bbb222".into(),
    });
    rollout.validate().unwrap();
    let hosts: Vec<&String> = rollout.all_hosts().collect();
    assert_eq!(
        hosts,
        ["demo.local", "demo.default.svc", "preview.demo.local"]
    );

    // A host of another rollout's preview is claimed twice.
    let mut other = demo();
    other.name = "default/other".into();
    other.hosts = vec!["preview.demo.local".into()];
    let state = state_of(vec![rollout.clone(), other]);
    assert!(matches!(
        state.validate(),
        Err(ModelError::HostInTwoRollouts { host, .. }) if host == "preview.demo.local"
    ));

    for (edit, field, problem) in [
        (
            Box::new(|p: &mut Preview| p.hosts.clear()) as Box<dyn Fn(&mut Preview)>,
            "preview.hosts",
            "at least one host is required",
        ),
        (
            Box::new(|p: &mut Preview| p.hosts.push("demo.default.svc".into())),
            "preview.hosts[1]",
            "also one of the rollout's active hosts",
        ),
        (
            Box::new(|p: &mut Preview| p.hosts.push("preview.demo.local".into())),
            "preview.hosts[1]",
            "listed twice",
        ),
        (
            Box::new(|p: &mut Preview| p.hash = "ccc333".into()),
            "preview.hash",
            "is not one of the versions",
        ),
    ] {
        let mut bad = rollout.clone();
        edit(bad.preview.as_mut().unwrap());
        let Err(ModelError::InvalidField {
            field: got,
            problem: said,
            ..
        }) = bad.validate()
        else {
            panic!("{field}: accepted");
        };
        assert_eq!(got.to_string(), field);
        assert!(said.contains(problem), "{said}");
    }
}

#[test]
fn the_filter_policy_leaves_the_preview_hosts_out() {
    let mut rollout = demo();
    rollout.preview = Some(Preview {
        hosts: vec!["preview.demo.local".into()],
        hash: "bbb222".into(),
    });
    let policy = policy::render(&state_of(vec![rollout]), "x-sluice-hash");
    assert_eq!(policy.rollouts[0].hosts, ["demo.local", "demo.default.svc"]);
}
