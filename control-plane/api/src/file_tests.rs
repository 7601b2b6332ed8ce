//! The rollouts file: the shipped example loads, and every error names file, document and field.

use std::net::SocketAddr;

use sluice_model::Stickiness;

use super::*;

fn rollout_doc(name: &str, host: &str) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  hosts: [{host}]
  staticEndpoints:
    aaa: ["127.0.0.1:9001"]
    bbb: ["127.0.0.1:9002", "[::1]:9003"]
  strategy: {{canary: {{steps: [{{setWeight: 30}}, {{pause: {{}}}}]}}}}
status: {{stableRS: aaa, currentPodHash: bbb, currentStepIndex: 1}}
"#
    )
}

fn load_err(text: &str) -> String {
    load_state(text, "rollouts.yaml")
        .expect_err("must fail")
        .to_string()
}

#[test]
fn the_example_file_loads() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/standalone/rollouts.yaml"
    );
    let text = std::fs::read_to_string(path).expect("deploy/standalone/rollouts.yaml exists");
    let state = load_state(&text, path).expect("the example is valid");
    let demo = &state.rollouts["default/demo"];
    assert_eq!(demo.hosts, ["demo.local"]);
    // Run by the release engine (spec.version, no status): until it starts, all on that version.
    assert_eq!(demo.stable_hash, "5d9f7c6b48");
    assert_eq!(demo.canary_hash, None);
    assert_eq!(demo.canary_weight_bp, 0);
    assert_eq!(demo.stickiness, Stickiness::Header("x-user-id".into()));
    let stable: SocketAddr = "127.0.0.1:8001".parse().expect("addr");
    assert_eq!(demo.versions["5d9f7c6b48"].endpoints[0], stable);
    assert_eq!(demo.versions.len(), 2);
    // The README's release step: the other key of staticEndpoints.
    let released = text.replace("version: 5d9f7c6b48", "version: 7c8d9f5b6a");
    assert_ne!(released, text);
    load_state(&released, path).expect("releasing v2 is a valid file");
    // The README's warning: a status beside spec.version is refused, naming the field.
    let with_status = format!("{text}status: {{stableRS: 5d9f7c6b48}}\n");
    let error = load_state(&with_status, path)
        .expect_err("a status beside spec.version")
        .to_string();
    assert!(error.contains("status"), "{error}");
}

#[test]
fn several_rollouts_of_both_api_versions_load_and_empty_documents_are_skipped() {
    let text = format!(
        "---\n{}---\n# nothing here\n---\n{}",
        rollout_doc("one", "one.local"),
        rollout_doc("two", "two.local").replace(SLUICE_API_VERSION, ARGO_API_VERSION)
    );
    let rollouts = parse_rollouts_file(&text, "f").expect("parses");
    assert_eq!(rollouts.len(), 2);
    let state = load_state(&text, "f").expect("loads");
    let names: Vec<&String> = state.rollouts.keys().collect();
    assert_eq!(names, ["default/one", "default/two"]);
    assert_eq!(state.rollouts["default/two"].canary_weight_bp, 3000);
    assert_eq!(
        state.rollouts["default/two"].versions["bbb"]
            .endpoints
            .len(),
        2
    );
    assert!(load_state("", "f").expect("empty file").rollouts.is_empty());
}

#[test]
fn other_kinds_are_errors_naming_the_document() {
    let text = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: x}}\n",
        rollout_doc("one", "one.local")
    );
    assert_eq!(
        load_err(&text),
        "rollouts.yaml: document 2: found kind \"Service\" of apiVersion \"v1\"; expected kind \
         \"Rollout\" of apiVersion \"sluice.dev/v1alpha1\" or \"argoproj.io/v1alpha1\""
    );
    let text = rollout_doc("one", "one.local").replace("sluice.dev/v1alpha1", "sluice.dev/v2");
    assert!(
        load_err(&text)
            .contains("document 1: found kind \"Rollout\" of apiVersion \"sluice.dev/v2\"")
    );
}

#[test]
fn shape_errors_name_the_document_field_and_line() {
    let text = format!(
        "{}---\n{}",
        rollout_doc("one", "one.local"),
        rollout_doc("two", "two.local").replace("setWeight: 30", "setWeight: lots")
    );
    let message = load_err(&text);
    assert!(
        message.starts_with("rollouts.yaml: document 2: "),
        "{message}"
    );
    assert!(
        message.contains("spec.strategy.canary.steps[0].setWeight"),
        "{message}"
    );
    assert!(message.contains("line 20"), "{message}");

    let message = load_err("a: [unclosed\n");
    assert!(
        message.starts_with("rollouts.yaml: document 1: "),
        "{message}"
    );
}

#[test]
fn rule_errors_name_the_document_rollout_and_field() {
    let text = rollout_doc("one", "one.local").replace("\"127.0.0.1:9002\"", "\"localhost:80\"");
    assert_eq!(
        load_err(&text),
        "rollouts.yaml: document 1: rollout \"default/one\": spec.staticEndpoints[\"bbb\"][0]: \
         \"localhost:80\" is not an ip:port address"
    );
    let text = rollout_doc("one", "one.local").replace("    aaa: ", "    AAA: ");
    let message = load_err(&text);
    assert!(
        message.contains(
            "rollout \"default/one\": status.stableRS: \"aaa\" has no entry in spec.staticEndpoints"
        ),
        "{message}"
    );
    let text = rollout_doc("one", "one.local").replace("9002\"", "9001\"");
    let message = load_err(&text);
    assert!(
        message.contains("spec.staticEndpoints[\"bbb\"][0]: 127.0.0.1:9001 is also an endpoint"),
        "{message}"
    );
    let text = rollout_doc("one", "one.local")
        .replace("  staticEndpoints:\n", "  staticEndpoints:\n    BAD: []\n");
    assert!(
        load_err(&text)
            .contains("spec.staticEndpoints[\"BAD\"]: \"BAD\" is not a pod-template hash")
    );
}

#[test]
fn rollouts_must_be_unique_and_not_share_hosts() {
    let text = format!(
        "{}---\n{}",
        rollout_doc("one", "one.local"),
        rollout_doc("one", "other.local")
    );
    assert_eq!(
        load_err(&text),
        "rollouts.yaml: rollout \"default/one\" is defined twice, by documents 1 and 2"
    );
    let text = format!(
        "{}---\n{}",
        rollout_doc("one", "shared.local"),
        rollout_doc("two", "shared.local")
    );
    assert_eq!(
        load_err(&text),
        "rollouts.yaml: host \"shared.local\" is claimed by rollout \"default/one\" and by \
         rollout \"default/two\""
    );
}

#[test]
fn a_rollout_with_spec_version_has_no_status_in_the_file() {
    let with_version = rollout_doc("one", "one.local").replace(
        "  staticEndpoints:\n",
        "  version: bbb\n  staticEndpoints:\n",
    );
    let message = load_err(&with_version);
    assert!(
        message.contains("document 1")
            && message.contains("status: must be absent when spec.version"),
        "{message}"
    );
    // Without the status it loads as the engine starts it: everything on spec.version.
    let spec_only = with_version
        .lines()
        .filter(|l| !l.starts_with("status:"))
        .collect::<Vec<_>>()
        .join("\n");
    let state = load_state(&spec_only, "rollouts.yaml").expect("valid");
    let one = &state.rollouts["default/one"];
    assert_eq!(
        (one.stable_hash.as_str(), one.canary_hash.as_deref()),
        ("bbb", None)
    );
}
