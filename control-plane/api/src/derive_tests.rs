//! Derivation cases: weights from status and from steps, abort, all steps done, header routes
//! added, replaced and removed, and errors that name the document's fields.

use std::collections::BTreeMap;

use sluice_model::{HeaderMatch, MatchKind, RolloutState, RouteTarget, Stickiness, Version};

use super::*;

const STEPS: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: demo, namespace: shop}
spec:
  hosts: [Demo.Local]
  strategy:
    canary:
      steps:
        - setWeight: 10                       # 0
        - pause: {duration: 30s}              # 1
        - setWeight: 50                       # 2
        - setHeaderRoute:                     # 3
            name: testers
            match:
              - {headerName: X-Canary, headerValue: {exact: "1"}}
        - pause: {}                           # 4
        - setHeaderRoute:                     # 5
            name: testers
        - setWeight: 80                       # 6
status:
  stableRS: aaa
  currentPodHash: bbb
"#;

fn doc(yaml: &str) -> Rollout {
    serde_yaml::from_str(yaml).expect("test rollout parses")
}

fn versions() -> BTreeMap<String, Version> {
    ["aaa", "bbb", "ccc"]
        .into_iter()
        .map(|h| (h.to_owned(), Version::default()))
        .collect()
}

fn at_step(yaml: &str, index: i32) -> Rollout {
    let mut rollout = doc(yaml);
    rollout.status.as_mut().expect("status").current_step_index = Some(index);
    rollout
}

fn derived(rollout: &Rollout) -> RolloutState {
    derive_rollout(rollout, &versions(), &[]).expect("derives")
}

/// The field an error names, or a panic.
fn failing_field(rollout: &Rollout) -> String {
    match derive_rollout(rollout, &versions(), &[]) {
        Err(ApiError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn weight_is_the_last_set_weight_reached() {
    for (step, bp) in [(0, 1000), (1, 1000), (2, 5000), (4, 5000), (6, 8000)] {
        let state = derived(&at_step(STEPS, step));
        assert_eq!(state.canary_weight_bp, bp, "step {step}");
        assert_eq!(state.canary_hash.as_deref(), Some("bbb"));
        assert_eq!(state.stable_hash, "aaa");
    }
}

#[test]
fn no_set_weight_reached_means_zero_and_missing_index_means_step_zero() {
    let yaml = STEPS.replace("- setWeight: 10 ", "- pause: {} ");
    let mut rollout = doc(&yaml);
    assert_eq!(derived(&rollout).canary_weight_bp, 0);
    rollout.status.as_mut().expect("status").current_step_index = Some(1);
    assert_eq!(derived(&rollout).canary_weight_bp, 0);
}

#[test]
fn all_steps_done_sends_everything_to_the_canary() {
    let state = derived(&at_step(STEPS, 7));
    assert_eq!(state.canary_weight_bp, 10_000);
    let no_steps = doc(
        "metadata: {name: r}\nspec: {hosts: [r.local], strategy: {canary: {}}}\n\
         status: {stableRS: aaa, currentPodHash: bbb}",
    );
    assert_eq!(derived(&no_steps).canary_weight_bp, 10_000);
}

#[test]
fn status_weights_win_over_steps() {
    let mut rollout = at_step(STEPS, 2);
    let status = rollout.status.as_mut().expect("status");
    status.canary = Some(serde_yaml::from_str(
        "weights: {canary: {podTemplateHash: bbb, weight: 25}, stable: {podTemplateHash: aaa, weight: 75}}",
    ).expect("weights"));
    assert_eq!(derived(&rollout).canary_weight_bp, 2500);

    rollout.status.as_mut().expect("status").canary = Some(
        serde_yaml::from_str("weights: {canary: {weight: 101}, stable: {weight: 0}}")
            .expect("weights"),
    );
    assert_eq!(
        failing_field(&rollout),
        "status.canary.weights.canary.weight"
    );
}

#[test]
fn abort_sends_everything_to_stable_and_drops_header_routes() {
    let mut rollout = at_step(STEPS, 4);
    rollout.status.as_mut().expect("status").abort = true;
    let state = derived(&rollout);
    assert_eq!(state.canary_weight_bp, 0);
    assert_eq!(state.canary_hash.as_deref(), Some("bbb"));
    assert!(state.header_routes.is_empty());
}

#[test]
fn header_routes_are_added_and_removed_by_steps() {
    assert!(derived(&at_step(STEPS, 2)).header_routes.is_empty());
    let state = derived(&at_step(STEPS, 3));
    assert_eq!(state.header_routes.len(), 1);
    let route = &state.header_routes[0];
    assert_eq!(route.name, "testers");
    assert_eq!(route.target, RouteTarget::Canary);
    assert_eq!(
        route.matches,
        vec![HeaderMatch {
            name: "x-canary".into(),
            kind: MatchKind::Exact("1".into()),
        }]
    );
    assert!(derived(&at_step(STEPS, 5)).header_routes.is_empty());
}

#[test]
fn a_route_set_again_is_replaced_in_place() {
    let yaml = r#"
metadata: {name: r}
spec:
  hosts: [r.local]
  strategy:
    canary:
      steps:
        - setHeaderRoute: {name: one, match: [{headerName: a, headerValue: {prefix: x}}]}
        - setHeaderRoute: {name: two, match: [{headerName: b, headerValue: {regex: "y.*"}}]}
        - setHeaderRoute: {name: one, match: [{headerName: c, headerValue: {exact: z}}]}
status: {stableRS: aaa, currentPodHash: bbb, currentStepIndex: 2}
"#;
    let state = derived(&doc(yaml));
    let names: Vec<&str> = state
        .header_routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(state.header_routes[0].matches[0].name, "c");
    assert_eq!(
        state.header_routes[1].matches[0].kind,
        MatchKind::Regex("y.*".into())
    );
}

#[test]
fn without_a_canary_there_is_no_weight_and_no_route() {
    let mut rollout = at_step(STEPS, 4);
    rollout.status.as_mut().expect("status").current_pod_hash = Some("aaa".into());
    let state = derived(&rollout);
    assert_eq!(state.canary_hash, None);
    assert_eq!(state.canary_weight_bp, 0);
    assert!(state.header_routes.is_empty());
}

#[test]
fn blue_green_keeps_traffic_on_stable_until_promoted() {
    let rollout = doc(
        "metadata: {name: bg}\nspec: {hosts: [bg.local], strategy: {blueGreen: {activeService: a}}}\n\
         status: {stableRS: aaa, currentPodHash: bbb}",
    );
    let state = derived(&rollout);
    assert_eq!(state.canary_hash.as_deref(), Some("bbb"));
    assert_eq!(state.canary_weight_bp, 0);
}

#[test]
fn name_hosts_and_stickiness_come_from_the_document() {
    let mut rollout = at_step(STEPS, 0);
    rollout
        .spec
        .strategy
        .canary
        .as_mut()
        .expect("canary")
        .stickiness =
        Some(serde_yaml::from_str("cookie: {name: sluice, maxAgeSeconds: 60}").expect("cookie"));
    let state = derive_rollout(
        &rollout,
        &versions(),
        &["demo.local".into(), "Demo.Shop.Svc".into()],
    )
    .expect("derives");
    assert_eq!(state.name, "shop/demo");
    assert_eq!(state.hosts, ["demo.local", "demo.shop.svc"]);
    assert_eq!(
        state.stickiness,
        Stickiness::Cookie {
            name: "sluice".into(),
            max_age_seconds: 60,
            secure: false,
            same_site: SameSite::Lax,
        }
    );
    assert_eq!(state.versions, versions());

    rollout.metadata.namespace = None;
    rollout
        .spec
        .strategy
        .canary
        .as_mut()
        .expect("canary")
        .stickiness = Some(serde_yaml::from_str("header: X-User").expect("header"));
    let state = derived(&rollout);
    assert_eq!(state.name, "default/demo");
    assert_eq!(state.stickiness, Stickiness::Header("x-user".into()));
}

#[test]
fn errors_name_the_field_at_fault() {
    let cases: Vec<(&str, String)> = vec![
        (
            "status.stableRS",
            STEPS.replace("stableRS: aaa", "stableRS: zzz"),
        ),
        (
            "status.stableRS",
            STEPS.replace("stableRS: aaa", "phase: Healthy"),
        ),
        (
            "status.currentPodHash",
            STEPS.replace("currentPodHash: bbb", "currentPodHash: zzz"),
        ),
        (
            "spec.strategy.canary.steps[6].setWeight",
            STEPS.replace("setWeight: 80", "setWeight: 120"),
        ),
        (
            "spec.strategy.canary.steps[3].setHeaderRoute.match[0].headerValue.regex",
            STEPS.replace(r#"exact: "1""#, r#"regex: "(unclosed""#),
        ),
        (
            "spec.strategy.canary.steps[3].setHeaderRoute.match[0].headerValue",
            STEPS.replace(r#"exact: "1""#, r#"exact: "1", prefix: "2""#),
        ),
        (
            "spec.strategy.canary.steps[3].setHeaderRoute.match[0].headerName",
            STEPS.replace("headerName: X-Canary", "headerName: x canary"),
        ),
        (
            "spec.strategy.canary.steps[5].setHeaderRoute.name",
            STEPS.replace(
                "            name: testers\n        - setWeight",
                "            name: \"\"\n        - setWeight",
            ),
        ),
        (
            "spec.hosts[0]",
            STEPS.replace("[Demo.Local]", "[demo.local:8080]"),
        ),
        (
            "spec.hosts",
            STEPS.replace("hosts: [Demo.Local]", "hosts: []"),
        ),
        (
            "spec.strategy.canary.stickiness",
            STEPS.replace("    canary:\n", "    canary:\n      stickiness: {}\n"),
        ),
        (
            "spec.strategy.canary.stickiness.cookie.name",
            STEPS.replace(
                "    canary:\n",
                "    canary:\n      stickiness: {cookie: {name: \"a b\"}}\n",
            ),
        ),
        (
            // Browsers drop a __Host- cookie without Secure (issue 7).
            "spec.strategy.canary.stickiness.cookie.secure",
            STEPS.replace(
                "    canary:\n",
                "    canary:\n      stickiness: {cookie: {name: __Host-sluice}}\n",
            ),
        ),
        (
            "spec.strategy.canary.stickiness",
            STEPS.replace(
                "    canary:\n",
                "    canary:\n      stickiness: {cookie: {name: s, sameSite: Sometimes}}\n",
            ),
        ),
        ("metadata.name", STEPS.replace("name: demo,", "")),
    ];
    for (field, yaml) in cases {
        let rollout = at_step(&yaml, 4);
        assert_eq!(failing_field(&rollout), field, "{yaml}");
    }
    let rollout = at_step(STEPS, -1);
    assert_eq!(failing_field(&rollout), "status.currentStepIndex");
}

#[test]
fn error_messages_read_rollout_field_problem() {
    let rollout = at_step(&STEPS.replace(r#"exact: "1""#, r#"regex: "(a""#), 4);
    let message = derive_rollout(&rollout, &versions(), &[])
        .expect_err("bad regex")
        .to_string();
    assert!(
        message.starts_with(
            "rollout \"shop/demo\": spec.strategy.canary.steps[3].setHeaderRoute.match[0]\
             .headerValue.regex: \"(a\" is not a valid regex: "
        ),
        "{message}"
    );
}
