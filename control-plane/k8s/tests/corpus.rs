//! Real manifests through the same parsing and index code as the watchers: every Argo Rollout of
//! the shared corpus (`../shared/corpus/argo-rollouts`, skipped with a note where absent), and
//! the example in deploy/kubernetes/example with pods standing in for a cluster.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use serde::Deserialize;
use sluice_k8s::{Index, RolloutApi, manifests::apply_yaml};

/// Pods of two versions for a rollout selecting `labels`, in `namespace`.
fn pods_for(namespace: &str, labels: &serde_yaml::Mapping) -> String {
    let labels = serde_json::to_string(labels).expect("labels");
    let mut out = String::new();
    for (i, hash) in ["stable1", "canary2"].iter().enumerate() {
        let mut pod_labels: serde_json::Value = serde_json::from_str(&labels).expect("json");
        pod_labels["rollouts-pod-template-hash"] = (*hash).into();
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: {namespace}, labels: {pod_labels}}}\n\
             spec: {{containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\n\
             status: {{podIP: 10.0.0.{}, conditions: [{{type: Ready, status: 'True'}}]}}\n",
            i + 1
        ));
    }
    out
}

#[test]
fn every_argo_rollout_of_the_corpus_goes_through_the_index() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/argo-rollouts");
    if !dir.is_dir() {
        eprintln!("note: {} is absent; corpus test skipped", dir.display());
        return;
    }
    let mut files = Vec::new();
    sluice_e2e::paths::yaml_files(&dir, &mut files);
    let (mut served, mut reported, mut rollouts) = (0, 0, 0);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for document in serde_yaml::Deserializer::from_str(&text) {
            // Not YAML (a malformed expected failure): the rest of the file is unreadable too.
            let Ok(mut value) = serde_yaml::Value::deserialize(document) else {
                break;
            };
            let field = |v: &serde_yaml::Value, k: &str| {
                v.get(k).and_then(|x| x.as_str()).map(str::to_owned)
            };
            if field(&value, "kind").as_deref() != Some("Rollout")
                || field(&value, "apiVersion").as_deref() != Some("argoproj.io/v1alpha1")
            {
                continue;
            }
            rollouts += 1;
            // Mid-canary, as Argo's status would say.
            value["status"] = serde_yaml::from_str(
                "{stableRS: stable1, currentPodHash: canary2, currentStepIndex: 1}",
            )
            .expect("status");
            let labels = value
                .get("spec")
                .and_then(|s| s.get("selector"))
                .and_then(|s| s.get("matchLabels"))
                .and_then(|l| l.as_mapping())
                .cloned()
                .unwrap_or_default();
            let namespace = value
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(|n| n.as_str())
                .unwrap_or("default")
                .to_owned();
            let mut index = Index::default();
            let yaml =
                serde_yaml::to_string(&value).expect("yaml") + &pods_for(&namespace, &labels);
            apply_yaml(&mut index, &yaml).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let state = index.state();
            assert!(state.traffic.validate().is_ok(), "{}", file.display());
            for error in &state.errors {
                assert_eq!(error.object.api, RolloutApi::Argo);
                // Named by field: mostly `spec.hosts` (no Service and no hosts: nothing to route).
                assert!(
                    ["spec.", "status.", "metadata."]
                        .iter()
                        .any(|f| error.message.contains(f)),
                    "{}: {error}",
                    file.display()
                );
            }
            served += state.traffic.rollouts.len();
            for error in &state.errors {
                eprintln!("reported: {error}");
            }
            reported += state.errors.len();
        }
    }
    eprintln!("corpus: {rollouts} Argo Rollouts, {served} served, {reported} reported");
    assert!(rollouts > 20, "corpus has Rollouts");
    assert_eq!(
        served + reported,
        rollouts,
        "each rollout is served or reported"
    );
    assert!(served >= 30, "corpus rollouts with services or hosts route");
}

#[test]
fn the_example_rollout_routes_once_pods_run() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/example");
    let mut index = Index::default();
    for file in ["rollout.yaml", "services.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("example");
        apply_yaml(&mut index, &text).expect("applies");
    }
    let labels: serde_yaml::Mapping = serde_yaml::from_str("{app: demo}").expect("labels");
    apply_yaml(&mut index, &pods_for("demo", &labels)).expect("pods");
    // As the step engine leaves it on the first reconcile.
    let object = sluice_k8s::RolloutRef::new(RolloutApi::Sluice, "demo", "demo");
    let reconciled =
        sluice_k8s::reconcile::reconcile(&index, &object, k8s_openapi::jiff::Timestamp::now())
            .expect("known rollout");
    let mut doc = index.rollout(&object).expect("parsed").clone();
    assert_eq!(
        reconciled.status.stable_rs.as_deref(),
        Some("canary2"),
        "same creation time: by name"
    );
    doc.status = Some(reconciled.status);
    index.apply_rollout(object, Ok(doc));
    let state = index.state();
    assert_eq!(state.errors, vec![]);
    let rollout = &state.traffic.rollouts["demo/demo"];
    assert!(rollout.hosts.contains(&"demo.example.com".to_owned()));
    assert!(
        rollout
            .hosts
            .contains(&"demo.demo.svc.cluster.local".to_owned())
    );
    assert_eq!(
        rollout.versions["canary2"].endpoints[0].port(),
        8080,
        "named targetPort http"
    );
}
