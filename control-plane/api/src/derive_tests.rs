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
            "spec.strategy.canary.steps[1].pause.duration",
            STEPS.replace("duration: 30s", "duration: soon"),
        ),
        (
            "spec.strategy.canary.steps[1].pause.duration",
            STEPS.replace("duration: 30s", "duration: \"-5\""),
        ),
        (
            "spec.strategy.canary.trafficRouting.maxTrafficWeight",
            STEPS.replace(
                "    canary:\n",
                "    canary:\n      trafficRouting: {maxTrafficWeight: 0}\n",
            ),
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

// --- Argo's meaning of weights and status (issue 7, section 2) ---

/// `STEPS` with `trafficRouting.maxTrafficWeight` set.
fn with_max(max: i32, yaml: &str) -> String {
    yaml.replace(
        "    canary:\n",
        &format!("    canary:\n      trafficRouting: {{maxTrafficWeight: {max}, nginx: {{stableIngress: x}}}}\n"),
    )
}

#[test]
fn weights_count_in_units_of_max_traffic_weight() {
    let yaml = with_max(1000, &STEPS.replace("setWeight: 50", "setWeight: 500"));
    // setWeight 10 of 1000 is 1 %; 500 of 1000 is valid and 50 %.
    assert_eq!(derived(&at_step(&yaml, 0)).canary_weight_bp, 100);
    assert_eq!(derived(&at_step(&yaml, 2)).canary_weight_bp, 5000);
    let yaml = with_max(1000, &STEPS.replace("setWeight: 10 ", "setWeight: 100"));
    assert_eq!(derived(&at_step(&yaml, 0)).canary_weight_bp, 1000, "10 %");

    // An Argo manifest reads the same.
    let argo: crate::ArgoRollout =
        serde_yaml::from_str(&yaml.replace("sluice.dev/v1alpha1", "argoproj.io/v1alpha1"))
            .expect("argo rollout");
    let mut argo = Rollout::from(argo);
    argo.status.as_mut().expect("status").current_step_index = Some(0);
    assert_eq!(derived(&argo).canary_weight_bp, 1000);

    // Status weights too: 250 of 1000.
    let mut rollout = at_step(&yaml, 2);
    rollout.status.as_mut().expect("status").canary = Some(
        serde_yaml::from_str("weights: {canary: {podTemplateHash: bbb, weight: 250}, stable: {podTemplateHash: aaa, weight: 750}}")
            .expect("weights"),
    );
    assert_eq!(derived(&rollout).canary_weight_bp, 2500);

    // Above the total: an error naming the step, with the range in the message.
    let bad = at_step(
        &with_max(1000, &STEPS.replace("setWeight: 80", "setWeight: 1001")),
        0,
    );
    assert_eq!(
        failing_field(&bad),
        "spec.strategy.canary.steps[6].setWeight"
    );
    let message = derive_rollout(&bad, &versions(), &[])
        .expect_err("1001")
        .to_string();
    assert!(
        message.ends_with("1001 is outside 0..=1000 (maxTrafficWeight)"),
        "{message}"
    );
    // Without maxTrafficWeight, 500 is above 100.
    let bad = at_step(&STEPS.replace("setWeight: 50", "setWeight: 500"), 0);
    assert_eq!(
        failing_field(&bad),
        "spec.strategy.canary.steps[2].setWeight"
    );
}

#[test]
fn odd_totals_round_to_the_nearest_basis_point() {
    let yaml = "metadata: {name: r}\nspec:\n  hosts: [r.local]\n  strategy:\n    canary:\n      \
                trafficRouting: {maxTrafficWeight: 3}\n      steps: [{setWeight: 1}, {setWeight: 2}]\n\
                status: {stableRS: aaa, currentPodHash: bbb}";
    let state = derived(&at_step(yaml, 0));
    assert_eq!(state.canary_weight_bp, 3333);
    assert_eq!(state.version_weights_bp()["aaa"], 6667);
    assert_eq!(derived(&at_step(yaml, 1)).canary_weight_bp, 6667);
}

#[test]
fn huge_weights_are_errors_not_overflows() {
    // 42949673 × 100 overflows u32: a debug build panicked, a release build wrapped to 4 bp.
    for yaml in [
        STEPS.replace("setWeight: 80", "setWeight: 42949673"),
        STEPS.replace("setWeight: 80", "setWeight: 2147483647"),
        STEPS.replace("setWeight: 80", "setWeight: -2147483648"),
    ] {
        assert_eq!(
            failing_field(&at_step(&yaml, 0)),
            "spec.strategy.canary.steps[6].setWeight"
        );
    }
    let mut rollout = at_step(STEPS, 0);
    rollout.status.as_mut().expect("status").canary =
        Some(serde_yaml::from_str("weights: {canary: {weight: 42949673}}").expect("weights"));
    assert_eq!(
        failing_field(&rollout),
        "status.canary.weights.canary.weight"
    );
    let huge = at_step(&with_max(2_147_483_647, STEPS), 6);
    assert_eq!(
        derived(&huge).canary_weight_bp,
        0,
        "80 of 2^31-1 is 0.0000037 %"
    );
}

#[test]
fn recorded_weights_count_only_for_the_canary_they_name() {
    let yaml = STEPS.replace("setWeight: 10 ", "setWeight: 5 ");
    let mut rollout = at_step(&yaml, 0);
    let status = rollout.status.as_mut().expect("status");
    status.current_pod_hash = Some("ccc".into());
    status.canary = Some(
        serde_yaml::from_str(
            "weights: {canary: {podTemplateHash: bbb, weight: 30}, stable: {podTemplateHash: aaa, weight: 70}}",
        )
        .expect("weights"),
    );
    let state = derived(&rollout);
    assert_eq!(state.canary_hash.as_deref(), Some("ccc"));
    assert_eq!(state.canary_weight_bp, 500, "step 0's 5 %, not bbb's 30 %");

    // Weights that name the canary, or no hash at all (hand-written, without `stable`), count.
    for weights in [
        "weights: {canary: {podTemplateHash: ccc, weight: 30}}",
        "weights: {canary: {weight: 30}}",
    ] {
        rollout.status.as_mut().expect("status").canary =
            Some(serde_yaml::from_str(weights).expect("weights"));
        assert_eq!(derived(&rollout).canary_weight_bp, 3000, "{weights}");
    }
}

#[test]
fn a_canary_without_pods_routes_everything_to_stable() {
    let stable_only: BTreeMap<String, Version> = [("aaa".to_owned(), Version::default())].into();
    // A new version with no pods yet.
    let rollout = at_step(STEPS, 4);
    let state = derive_rollout(&rollout, &stable_only, &[]).expect("derives");
    assert_eq!(state.canary_hash, None);
    assert_eq!(state.canary_weight_bp, 0);
    assert!(state.header_routes.is_empty());
    assert_eq!(state.version_weights_bp()["aaa"], 10_000);
    // An aborted canary scaled to zero.
    let mut aborted = at_step(STEPS, 4);
    aborted.status.as_mut().expect("status").abort = true;
    let state = derive_rollout(&aborted, &stable_only, &[]).expect("derives");
    assert_eq!(state.canary_hash, None);
    assert_eq!(state.version_weights_bp()["aaa"], 10_000);
}

#[test]
fn pause_durations_are_read_as_argo_reads_them() {
    for duration in ["\"10\"", "10", "1.5h", "500ms", "\"+3\""] {
        let yaml = STEPS.replace("duration: 30s", &format!("duration: {duration}"));
        derived(&at_step(&yaml, 4));
    }
}
