//! `setMirrorRoute` steps derived into mirror routes: added, replaced, removed, gone at promotion
//! and abort; errors naming the step's field; the corpus' Istio mirror example as a sluice.dev
//! Rollout.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use sluice_model::{HeaderMatch, MatchKind, MirrorRoute, RequestMatch, RolloutState, Version};

use crate::{ApiError, Rollout, derive_rollout};

// The steps of the corpus' test/e2e/mirror-route/istio-mirror-host.yaml, plus headers and a regex.
const STEPS: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: demo, namespace: shop}
spec:
  hosts: [demo.local]
  strategy:
    canary:
      steps:
        - setWeight: 20                                   # 0
        - setMirrorRoute:                                 # 1
            name: mirror-route-1
            percentage: 100
            match:
              - path: {prefix: /}
        - setMirrorRoute:                                 # 2
            name: mirror-route-2
            percentage: 80
            match:
              - path: {prefix: /}
                method: {exact: GET}
              - headers: {X-Debug: {regex: "on|yes"}}
        - pause: {}                                       # 3
        - setMirrorRoute:                                 # 4
            name: mirror-route-1
            match:
              - path: {prefix: /rewrite}
        - pause: {}                                       # 5
        - setWeight: 40                                   # 6
        - setMirrorRoute: {name: mirror-route-1}          # 7
        - pause: {}                                       # 8
status:
  stableRS: aaa
  currentPodHash: bbb
"#;

fn at_step(yaml: &str, index: i32) -> Rollout {
    let mut rollout: Rollout = serde_yaml::from_str(yaml).expect("test rollout parses");
    rollout.status.as_mut().expect("status").current_step_index = Some(index);
    rollout
}

fn versions() -> BTreeMap<String, Version> {
    ["aaa", "bbb"]
        .into_iter()
        .map(|h| (h.to_owned(), Version::default()))
        .collect()
}

fn derived(rollout: &Rollout) -> RolloutState {
    derive_rollout(rollout, &versions(), &[]).expect("derives")
}

fn names(state: &RolloutState) -> Vec<(&str, u32)> {
    state
        .mirror_routes
        .iter()
        .map(|r| (r.name.as_str(), r.percent))
        .collect()
}

#[test]
fn mirror_routes_are_added_replaced_in_place_and_removed_by_steps() {
    assert_eq!(names(&derived(&at_step(STEPS, 0))), []);
    assert_eq!(
        names(&derived(&at_step(STEPS, 1))),
        [("mirror-route-1", 100)]
    );
    let at3 = derived(&at_step(STEPS, 3));
    assert_eq!(
        names(&at3),
        [("mirror-route-1", 100), ("mirror-route-2", 80)]
    );
    assert_eq!(
        at3.mirror_routes[1],
        MirrorRoute {
            name: "mirror-route-2".into(),
            matches: vec![
                RequestMatch {
                    method: Some(MatchKind::Exact("GET".into())),
                    path: Some(MatchKind::Prefix("/".into())),
                    headers: vec![],
                },
                RequestMatch {
                    method: None,
                    path: None,
                    headers: vec![HeaderMatch {
                        name: "x-debug".into(),
                        kind: MatchKind::Regex("on|yes".into()),
                    }],
                },
            ],
            percent: 80,
        }
    );
    // Set again: replaced where it stood, so the order of precedence does not change.
    let at4 = derived(&at_step(STEPS, 4));
    assert_eq!(
        names(&at4),
        [("mirror-route-1", 100), ("mirror-route-2", 80)]
    );
    assert_eq!(
        at4.mirror_routes[0].matches[0].path,
        Some(MatchKind::Prefix("/rewrite".into()))
    );
    // A step with only a name removes the route.
    assert_eq!(
        names(&derived(&at_step(STEPS, 7))),
        [("mirror-route-2", 80)]
    );
    assert_eq!(
        names(&derived(&at_step(STEPS, 8))),
        [("mirror-route-2", 80)]
    );
}

#[test]
fn mirror_routes_go_at_promotion_and_at_abort() {
    // Every step done: the canary takes all the traffic and is being promoted.
    let done = derived(&at_step(STEPS, 9));
    assert!(done.mirror_routes.is_empty(), "{:?}", done.mirror_routes);
    let mut aborted = at_step(STEPS, 3);
    aborted.status.as_mut().unwrap().abort = true;
    assert!(derived(&aborted).mirror_routes.is_empty());
    // No canary: nothing to mirror to.
    let mut no_canary = at_step(STEPS, 3);
    no_canary.status.as_mut().unwrap().current_pod_hash = Some("aaa".into());
    assert!(derived(&no_canary).mirror_routes.is_empty());
}

#[test]
fn percentage_defaults_to_all_matching_requests() {
    let yaml = STEPS.replace("            percentage: 100\n", "");
    assert_eq!(
        names(&derived(&at_step(&yaml, 1))),
        [("mirror-route-1", 100)]
    );
}

fn failing_field(rollout: &Rollout) -> String {
    match derive_rollout(rollout, &versions(), &[]) {
        Err(ApiError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn errors_name_the_step_field_at_fault_even_before_the_step_is_reached() {
    let step = "spec.strategy.canary.steps[2].setMirrorRoute";
    for (from, to, field) in [
        (
            "percentage: 80",
            "percentage: 101",
            format!("{step}.percentage"),
        ),
        (
            "percentage: 80",
            "percentage: -1",
            format!("{step}.percentage"),
        ),
        (
            "method: {exact: GET}",
            "method: {exact: GET, prefix: G}",
            format!("{step}.match[0].method"),
        ),
        (
            "method: {exact: GET}",
            "method: {}",
            format!("{step}.match[0].method"),
        ),
        (
            "regex: \"on|yes\"",
            "regex: \"(on\"",
            format!("{step}.match[1].headers[\"X-Debug\"]"),
        ),
        (
            "method: {exact: GET}",
            "method: {regex: \"[\"}",
            format!("{step}.match[0].method"),
        ),
        (
            "X-Debug:",
            "\"bad header\":",
            format!("{step}.match[1].headers"),
        ),
        ("name: mirror-route-2", "name: \"\"", format!("{step}.name")),
    ] {
        let yaml = STEPS.replace(from, to);
        assert_ne!(yaml, STEPS, "{from}");
        // At step 0 the broken step is not reached yet: still an error.
        assert_eq!(failing_field(&at_step(&yaml, 0)), field, "{to}");
        assert_eq!(failing_field(&at_step(&yaml, 3)), field, "{to}");
    }
}

#[test]
fn the_corpus_mirror_example_runs_as_a_sluice_rollout() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpus/argo-rollouts/examples/istio/istio-mirror.yaml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skipped: no corpus at {}", path.display());
        return;
    };
    let mut found = 0;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        if value.get("kind").and_then(|k| k.as_str()) != Some("Rollout") {
            continue;
        }
        let yaml = serde_yaml::to_string(&value)
            .unwrap()
            .replace("argoproj.io/v1alpha1", crate::SLUICE_API_VERSION);
        let mut rollout: Rollout = serde_yaml::from_str(&yaml).unwrap();
        rollout.spec.hosts = vec!["istio-host-split.com".into()];
        rollout.status = Some(crate::RolloutStatus {
            stable_rs: Some("aaa".into()),
            current_pod_hash: Some("bbb".into()),
            current_step_index: Some(2),
            ..Default::default()
        });
        let state = derived(&rollout);
        assert_eq!(
            state.mirror_routes,
            vec![MirrorRoute {
                name: "mirror-route".into(),
                matches: vec![RequestMatch {
                    method: Some(MatchKind::Exact("POST".into())),
                    path: Some(MatchKind::Prefix("/color".into())),
                    headers: vec![],
                }],
                percent: 50,
            }]
        );
        found += 1;
    }
    assert_eq!(found, 1, "one Rollout in {}", path.display());
}
