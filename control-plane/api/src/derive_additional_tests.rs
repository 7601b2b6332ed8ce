//! `status.canary.weights.additional` → the model's additional weights (A/B/n).

use std::collections::BTreeMap;

use sluice_model::{Version, WeightDestination};

use super::*;
use crate::file::load_state;

/// Stable aaa, canary bbb at 10, baseline ccc at 10 (Argo's status shape); `extra` is appended
/// to the additional list, `max` is `maxTrafficWeight`.
fn experiment(additional: &str, max: i32) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: demo, namespace: shop}}
spec:
  hosts: [demo.local]
  strategy:
    canary:
      trafficRouting: {{maxTrafficWeight: {max}, nginx: {{stableIngress: x}}}}
      steps: [{{setWeight: 10}}, {{pause: {{}}}}]
status:
  stableRS: aaa
  currentPodHash: bbb
  currentStepIndex: 1
  canary:
    weights:
      canary: {{podTemplateHash: bbb, weight: {w}}}
      stable: {{podTemplateHash: aaa, weight: {s}}}
      additional: {additional}
"#,
        w = max / 10,
        s = max - 2 * (max / 10),
    )
}

fn doc(yaml: &str) -> Rollout {
    serde_yaml::from_str(yaml).expect("test rollout parses")
}

fn versions(hashes: &[&str]) -> BTreeMap<String, Version> {
    hashes
        .iter()
        .map(|h| (h.to_string(), Version::default()))
        .collect()
}

fn baseline(weight_bp: u32) -> WeightDestination {
    WeightDestination {
        name: "demo-baseline".into(),
        pod_template_hash: "ccc".into(),
        weight_bp,
    }
}

const BASELINE: &str = "[{podTemplateHash: ccc, serviceName: demo-baseline, weight: 10}]";

fn failing(yaml: &str) -> (String, String) {
    match derive_rollout(&doc(yaml), &versions(&["aaa", "bbb", "ccc"]), &[]) {
        Err(ApiError::Invalid { field, problem, .. }) => (field, problem),
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn argo_status_additional_weights_reach_the_model() {
    let all = versions(&["aaa", "bbb", "ccc"]);
    let state = derive_rollout(&doc(&experiment(BASELINE, 100)), &all, &[]).expect("derives");
    assert_eq!(state.canary_weight_bp, 1000);
    assert_eq!(state.additional_weights, vec![baseline(1000)]);
    // In units of maxTrafficWeight, like the canary's weight.
    let yaml = experiment(&BASELINE.replace("weight: 10", "weight: 100"), 1000);
    let state = derive_rollout(&doc(&yaml), &all, &[]).expect("derives");
    assert_eq!(state.additional_weights, vec![baseline(1000)]);
}

#[test]
fn an_aborted_rollout_or_a_version_without_pods_gets_no_additional_weight() {
    let mut aborted = doc(&experiment(BASELINE, 100));
    aborted.status.as_mut().expect("status").abort = true;
    let all = versions(&["aaa", "bbb", "ccc"]);
    let state = derive_rollout(&aborted, &all, &[]).expect("derives");
    assert!(state.additional_weights.is_empty());
    // Kubernetes: ccc has no ready pods (yet): nothing to send to, as for a canary.
    let state = derive_rollout(
        &doc(&experiment(BASELINE, 100)),
        &versions(&["aaa", "bbb"]),
        &[],
    )
    .expect("derives");
    assert!(state.additional_weights.is_empty());
}

#[test]
fn errors_name_the_status_entry_at_fault() {
    let cases = [
        (
            "[{weight: 10}]",
            "status.canary.weights.additional[0].podTemplateHash",
            "is required",
        ),
        (
            "[{podTemplateHash: ccc, weight: 101}]",
            "status.canary.weights.additional[0].weight",
            "101",
        ),
        (
            "[{podTemplateHash: aaa, weight: 10}]",
            "status.canary.weights.additional[0].podTemplateHash",
            "stable",
        ),
        (
            "[{podTemplateHash: bbb, weight: 10}]",
            "status.canary.weights.additional[0].podTemplateHash",
            "canary",
        ),
        (
            "[{podTemplateHash: ccc, weight: 10}, {podTemplateHash: ccc, weight: 1}]",
            "status.canary.weights.additional[1].podTemplateHash",
            "additionalWeights[0]",
        ),
        (
            "[{podTemplateHash: ccc, weight: 91}]",
            "status.canary.weights.additional[0].weight",
            "more than 10000",
        ),
    ];
    for (additional, field, problem) in cases {
        let (got_field, got_problem) = failing(&experiment(additional, 100));
        assert_eq!(got_field, field, "{additional}: {got_problem}");
        assert!(got_problem.contains(problem), "{additional}: {got_problem}");
    }
}

/// Standalone manual mode: the status written in the file, versions from `staticEndpoints`.
#[test]
fn a_hand_written_status_in_a_standalone_file_splits_among_three_versions() {
    let endpoints = "  staticEndpoints:\n    aaa: [\"127.0.0.1:9001\"]\n    bbb: [\"127.0.0.1:9002\"]\n    ccc: [\"127.0.0.1:9003\"]\n  strategy:\n";
    let text = experiment(BASELINE, 100).replace("  strategy:\n", endpoints);
    let state = load_state(&text, "rollouts.yaml").expect("valid file");
    let demo = &state.rollouts["shop/demo"];
    assert_eq!(demo.canary_weight_bp, 1000);
    assert_eq!(demo.additional_weights, vec![baseline(1000)]);
    // The file names every version it has: an entry without one is an error, not skipped.
    let text = experiment(&BASELINE.replace("ccc", "ddd"), 100).replace("  strategy:\n", endpoints);
    let error = load_state(&text, "rollouts.yaml")
        .expect_err("ddd has no endpoints")
        .to_string();
    assert!(
        error.contains(
            "status.canary.weights.additional[0].podTemplateHash: \"ddd\" has no entry in spec.staticEndpoints"
        ),
        "{error}"
    );
}
