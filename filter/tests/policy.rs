//! Policy decoding (JSON and protobuf), validation errors and the compiled form.
#![allow(clippy::unwrap_used)]

use prost::Message;
use serde_json::{Value, json};
use sluice_filter::policy::{MatchKind, Sticky, StickyCookie};
use sluice_filter::{CompiledPolicy, PolicyError};
use sluice_proto::rules::{SameSite, cases};
use sluice_proto::v1 as pb;

fn base() -> Value {
    json!({
        "rollouts": [{
            "name": "default/demo",
            "hosts": ["demo.local", "demo.example"],
            "versions": ["aaa", "bbb", "ccc"],
            "stableHash": "aaa",
            "canaryHash": "bbb",
            "canaryWeightBp": 2500,
            "headerRoutes": [
                {"name": "testers", "matches": [{"name": "x-canary", "exact": "1"}], "canary": true},
                {"name": "pin", "matches": [{"name": "x-pin", "regex": "c+"}], "hash": "ccc"}
            ],
            "stickiness": {"cookie": {"name": "sluice", "maxAgeSeconds": 60}}
        }, {
            "name": "default/other",
            "hosts": ["other.local"],
            "versions": ["x1"],
            "stableHash": "x1"
        }]
    })
}

fn compile(v: &Value) -> Result<CompiledPolicy, PolicyError> {
    CompiledPolicy::from_bytes(v.to_string().as_bytes())
}

/// Applies `edit` to the base policy and returns the compile error's message.
fn error_after(edit: impl FnOnce(&mut Value)) -> String {
    let mut v = base();
    edit(&mut v);
    compile(&v)
        .expect_err("policy must be rejected")
        .to_string()
}

#[test]
fn json_policy_compiles() {
    let p = compile(&base()).expect("valid policy");
    assert_eq!(p.routing_header, "x-sluice-hash");
    assert_eq!(p.rollouts.len(), 2);
    let (i, r) = p.rollout_for_host("DEMO.local:443").expect("host served");
    assert_eq!((i, r.name.as_str()), (0, "default/demo"));
    assert_eq!(p.rollout_for_host("demo.example").map(|(i, _)| i), Some(0));
    assert_eq!(p.rollout_for_host("other.local").map(|(i, _)| i), Some(1));
    assert!(p.rollout_for_host("nope.local").is_none());
    assert_eq!((r.stable, r.canary, r.weight_bp), (0, Some(1), 2500));
    assert_eq!(r.header_routes[0].target, 1);
    assert_eq!(r.header_routes[0].matches[0].header, "x-canary");
    assert_eq!(r.header_routes[1].target, 2);
    match &r.header_routes[1].matches[0].kind {
        MatchKind::Regex(re) => {
            assert!(re.is_match("ccc"));
            assert!(!re.is_match("xccc"), "regex must be anchored");
        }
        other => panic!("expected regex, got {other:?}"),
    }
    assert_eq!(
        r.stickiness,
        Some(Sticky::Cookie(StickyCookie {
            name: "sluice".into(),
            max_age_seconds: 60,
            secure: false,
            same_site: SameSite::Lax,
        }))
    );
    assert_eq!(p.rollouts[1].canary, None);
}

#[test]
fn protobuf_policy_compiles() {
    let policy = pb::FilterPolicy {
        routing_header: "x-version".into(),
        bucket_header: String::new(),
        schema_version: 0,
        rollouts: vec![pb::RolloutPolicy {
            name: "prod/api".into(),
            hosts: vec!["api.local".into()],
            versions: vec!["s".into(), "c".into()],
            stable_hash: "s".into(),
            canary_hash: "c".into(),
            canary_weight_bp: 10_000,
            header_routes: vec![],
            stickiness: Some(pb::Stickiness {
                key: Some(pb::stickiness::Key::Header("x-user".into())),
            }),
            additional_weights: vec![],
        }],
    };
    let p = CompiledPolicy::from_bytes(&policy.encode_to_vec()).expect("valid protobuf");
    assert_eq!(p.routing_header, "x-version");
    let (_, r) = p.rollout_for_host("api.local").expect("host served");
    assert_eq!(r.weight_bp, 10_000);
    assert_eq!(r.stickiness, Some(Sticky::Header("x-user".into())));
}

#[test]
fn empty_configuration_is_an_empty_policy() {
    let p = CompiledPolicy::from_bytes(b"").expect("empty protobuf is a valid, empty policy");
    assert!(p.rollouts.is_empty());
    let p = CompiledPolicy::from_bytes(b"  \n{}").expect("empty JSON object");
    assert!(p.rollouts.is_empty());
}

#[test]
fn decode_errors() {
    let e = CompiledPolicy::from_bytes(br#"{"rollouts": [], "bogus": 1}"#).unwrap_err();
    assert!(matches!(e, PolicyError::Json(_)), "{e}");
    assert!(e.to_string().contains("bogus"), "{e}");
    let e = CompiledPolicy::from_bytes(b"\xff\xff\xff").unwrap_err();
    assert!(matches!(e, PolicyError::Protobuf(_)), "{e}");
}

/// A change to the base policy.
type Edit = Box<dyn FnOnce(&mut Value)>;

#[test]
fn validation_errors_name_the_rollout_and_field() {
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["routingHeader"] = json!("X-Upper")),
            "policy: routingHeader:",
        ),
        (
            Box::new(|v| v["routingHeader"] = json!("bad header")),
            "policy: routingHeader:",
        ),
        (
            Box::new(|v| v["rollouts"][1]["name"] = json!("")),
            r#"rollouts[1]: name: "" is not a rollout name"#,
        ),
        (
            Box::new(|v| v["rollouts"][1]["name"] = json!("default/demo")),
            r#"rollout "default/demo": name: duplicate of rollouts[0]"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["hosts"] = json!([])),
            r#"rollout "default/demo": hosts:"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["hosts"][1] = json!("")),
            r#"rollout "default/demo": hosts[1]: "" is not a lower-case DNS name"#,
        ),
        (
            Box::new(|v| v["rollouts"][1]["hosts"] = json!(["x.local", "demo.local"])),
            r#"rollout "default/other": hosts[1]: "demo.local" is also served by rollout "default/demo""#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["hosts"] = json!(["a.local", "A.local"])),
            r#"rollout "default/demo": hosts[1]"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["versions"] = json!([])),
            r#"rollout "default/demo": versions:"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["versions"][2] = json!("")),
            r#"rollout "default/demo": versions[2]:"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["versions"][2] = json!("a b")),
            r#"rollout "default/demo": versions[2]:"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["versions"][2] = json!("aaa")),
            r#"rollout "default/demo": versions[2]: duplicate "aaa""#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["stableHash"] = json!("zzz")),
            r#"rollout "default/demo": stableHash: "zzz" is not one of versions"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["stableHash"] = json!("")),
            r#"rollout "default/demo": stableHash:"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["canaryHash"] = json!("zzz")),
            r#"rollout "default/demo": canaryHash: "zzz" is not one of versions"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["canaryWeightBp"] = json!(12000)),
            r#"rollout "default/demo": canaryWeightBp: 12000 is above 10000"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["headerRoutes"][0]["matches"] = json!([])),
            r#"rollout "default/demo": headerRoutes[0].matches: at least one match is required"#,
        ),
        (
            Box::new(|v| {
                v["rollouts"][0]["headerRoutes"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("hash");
            }),
            r#"rollout "default/demo": headerRoutes[1]: a target"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["headerRoutes"][1]["hash"] = json!("zzz")),
            r#"rollout "default/demo": headerRoutes[1].hash: "zzz" is not one of versions"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["headerRoutes"][0]["canary"] = json!(false)),
            r#"rollout "default/demo": headerRoutes[0].canary: false"#,
        ),
        (
            Box::new(|v| {
                v["rollouts"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("canaryHash");
                v["rollouts"][0]["canaryWeightBp"] = json!(0);
            }),
            r#"rollout "default/demo": headerRoutes[0].canary: the rollout has no canaryHash"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["headerRoutes"][1]["matches"][0]["regex"] = json!("(")),
            r#"rollout "default/demo": headerRoutes[1].matches[0].regex:"#,
        ),
        (
            // Balanced only after wrapping: must be rejected, not silently change meaning.
            Box::new(|v| {
                v["rollouts"][0]["headerRoutes"][1]["matches"][0]["regex"] = json!("a)|(b")
            }),
            r#"rollout "default/demo": headerRoutes[1].matches[0].regex:"#,
        ),
        (
            Box::new(|v| {
                v["rollouts"][0]["headerRoutes"][1]["matches"] =
                    json!([{"name": "x-a", "present": true}, {"name": "", "exact": "1"}]);
            }),
            r#"rollout "default/demo": headerRoutes[1].matches[1].name:"#,
        ),
        (
            Box::new(|v| {
                v["rollouts"][0]["headerRoutes"][1]["matches"] = json!([{"name": "x-a"}]);
            }),
            r#"rollout "default/demo": headerRoutes[1].matches[0]: one of exact, prefix, regex or present"#,
        ),
        (
            Box::new(|v| {
                v["rollouts"][0]["headerRoutes"][1]["matches"] =
                    json!([{"name": "x-a", "present": false}]);
            }),
            r#"rollout "default/demo": headerRoutes[1].matches[0].present:"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["stickiness"] = json!({"cookie": {"name": ""}})),
            r#"rollout "default/demo": stickiness.cookie.name:"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["stickiness"] = json!({"cookie": {"name": "a;b"}})),
            r#"rollout "default/demo": stickiness.cookie.name:"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["stickiness"] = json!({"header": "x user"})),
            r#"rollout "default/demo": stickiness.header:"#,
        ),
        (
            Box::new(|v| {
                v["rollouts"][0]["headerRoutes"][1]["matches"] =
                    json!([{"name": "x-sluice-hash", "exact": "ccc"}]);
            }),
            r#"rollout "default/demo": headerRoutes[1].matches[0].name: "x-sluice-hash" is the routing header"#,
        ),
        (
            Box::new(|v| {
                v["routingHeader"] = json!("x-version");
                v["rollouts"][0]["stickiness"] = json!({"header": "x-version"});
            }),
            r#"rollout "default/demo": stickiness.header: "x-version" is the routing header"#,
        ),
        (
            Box::new(|v| v["rollouts"][0]["stickiness"] = json!({})),
            r#"rollout "default/demo": stickiness: a key"#,
        ),
    ];
    for (edit, want) in cases {
        let got = error_after(edit);
        assert!(got.starts_with(want), "got {got:?}, want prefix {want:?}");
    }
}

/// The shared table of `sluice_proto::rules::cases`, through the filter's policy validation: the
/// control plane's model validation runs the same table (sluice-model), so both accept the same.
#[test]
fn shared_rule_cases_hold_for_the_filter() {
    fn check(what: &str, ok: bool, field: &str, edit: impl FnOnce(&mut Value)) {
        let mut v = base();
        edit(&mut v);
        match compile(&v) {
            Ok(_) => assert!(ok, "{what}: accepted, must be rejected"),
            Err(e) => {
                assert!(!ok, "{what}: rejected, must be accepted: {e}");
                let e = e.to_string();
                assert!(
                    e.contains(&format!(": {field}")),
                    "{what}: {e} must name {field}"
                );
            }
        }
    }
    for (host, ok) in cases::HOSTS {
        check(&format!("host {host:?}"), *ok, "hosts[0]", |v| {
            v["rollouts"][0]["hosts"] = json!([host])
        });
    }
    for (hash, ok) in cases::HASHES {
        check(&format!("hash {hash:?}"), *ok, "versions[2]", |v| {
            v["rollouts"][0]["versions"][2] = json!(hash);
            v["rollouts"][0]["headerRoutes"][1]["hash"] = json!(hash);
        });
    }
    for (name, ok) in cases::HEADER_NAMES {
        check(
            &format!("header {name:?}"),
            *ok,
            "headerRoutes[0].matches[0].name",
            |v| v["rollouts"][0]["headerRoutes"][0]["matches"][0]["name"] = json!(name),
        );
        check(
            &format!("sticky header {name:?}"),
            *ok,
            "stickiness.header",
            |v| v["rollouts"][0]["stickiness"] = json!({"header": name}),
        );
    }
    for (name, ok) in cases::ROLLOUT_NAMES {
        check(&format!("rollout name {name:?}"), *ok, "name", |v| {
            v["rollouts"] = json!([v["rollouts"][0].clone()]);
            v["rollouts"][0]["name"] = json!(name);
        });
    }
    for (weight, ok) in cases::WEIGHTS {
        check(&format!("weight {weight}"), *ok, "canaryWeightBp", |v| {
            v["rollouts"][0]["canaryWeightBp"] = json!(weight)
        });
    }
    for (re, ok) in cases::REGEXES {
        check(
            &format!("regex {re:?}"),
            *ok,
            "headerRoutes[1].matches[0].regex",
            |v| v["rollouts"][0]["headerRoutes"][1]["matches"][0]["regex"] = json!(re),
        );
    }
    for (name, secure, same_site, ok) in cases::COOKIES {
        let what = format!("cookie {name:?} secure={secure} sameSite={same_site:?}");
        check(
            &what,
            *ok,
            "stickiness.cookie.",
            |v| {
                v["rollouts"][0]["stickiness"] =
                    json!({"cookie": {"name": name, "secure": secure, "sameSite": same_site}})
            },
        );
    }
}

/// Issue 7: a wildcard host was accepted and matched literally (never); it is rejected now, as
/// the control plane rejects it, with the rollout and field named.
#[test]
fn wildcard_hosts_are_rejected() {
    let e = error_after(|v| v["rollouts"][0]["hosts"] = json!(["*.example.com"]));
    assert!(
        e.starts_with(r#"rollout "default/demo": hosts[0]: "*.example.com" is a wildcard"#),
        "{e}"
    );
}

/// Issue 7: `__Host-`/`__Secure-` cookies without Secure are dropped by browsers: rejected.
#[test]
fn prefixed_cookies_must_be_secure() {
    for name in ["__Host-sluice", "__Secure-sluice"] {
        let e = error_after(|v| v["rollouts"][0]["stickiness"] = json!({"cookie": {"name": name}}));
        assert!(
            e.starts_with(r#"rollout "default/demo": stickiness.cookie.secure: false, but"#),
            "{e}"
        );
    }
    let e = error_after(|v| {
        v["rollouts"][0]["stickiness"] = json!({"cookie": {"name": "s", "sameSite": "None"}})
    });
    assert!(
        e.contains("stickiness.cookie.secure") && e.contains("SameSite=None"),
        "{e}"
    );
}

#[test]
fn canary_hash_may_be_absent_with_hash_routes() {
    let mut v = base();
    let r = v["rollouts"][0].as_object_mut().unwrap();
    r.remove("canaryHash");
    r.insert("canaryWeightBp".into(), json!(0));
    r["headerRoutes"] =
        json!([{"name": "a", "matches": [{"name": "x-a", "prefix": ""}], "hash": "ccc"}]);
    let p = compile(&v).expect("valid without canary");
    assert_eq!(p.rollouts[0].canary, None);
}
