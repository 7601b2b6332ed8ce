#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{Pod, Service};
use sluice_api::{ArgoRollout, Rollout};

use super::*;
use crate::objects::{RolloutApi, RolloutRef};

fn pod(ns: &str, name: &str, hash: &str, ip: &str, ready: bool) -> Pod {
    serde_yaml::from_str(&format!(
        r#"
metadata:
  name: {name}
  namespace: {ns}
  creationTimestamp: "2024-01-01T00:00:00Z"
  labels: {{app: demo, rollouts-pod-template-hash: "{hash}"}}
spec:
  containers:
  - name: app
    image: demo
    ports: [{{name: http, containerPort: 8080}}, {{name: admin, containerPort: 9090}}]
status:
  podIP: {ip}
  conditions: [{{type: Ready, status: "{}"}}]
"#,
        if ready { "True" } else { "False" }
    ))
    .expect("pod yaml")
}

fn service(ns: &str, name: &str, port: u16, target: &str) -> Service {
    serde_yaml::from_str(&format!(
        "metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{app: demo}}\n  ports: [{{port: {port}{target}}}]\n"
    ))
    .expect("service yaml")
}

/// An Argo rollout at `step` (of setWeight 20, pause, setWeight 50, pause) with `stable`/`canary`.
fn argo(ns: &str, name: &str, stable: &str, canary: &str, step: i32) -> Rollout {
    let argo: ArgoRollout = serde_yaml::from_str(&format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: demo}}}}
  strategy:
    canary:
      stableService: {name}-stable
      canaryService: {name}-canary
      steps: [{{setWeight: 20}}, {{pause: {{}}}}, {{setWeight: 50}}, {{pause: {{duration: 1m}}}}]
status:
  stableRS: "{stable}"
  currentPodHash: "{canary}"
  currentStepIndex: {step}
"#
    ))
    .expect("rollout yaml");
    argo.into()
}

fn argo_ref(ns: &str, name: &str) -> RolloutRef {
    RolloutRef::new(RolloutApi::Argo, ns, name)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

/// Two versions of `demo` in `prod`, two ready pods each, and its services.
fn demo_index() -> Index {
    let mut index = Index::default();
    index.apply_pod(&pod("prod", "s1", "aaa", "10.0.0.1", true));
    index.apply_pod(&pod("prod", "s2", "aaa", "10.0.0.2", true));
    index.apply_pod(&pod("prod", "c1", "bbb", "10.0.1.1", true));
    index.apply_service(&service("prod", "demo-stable", 80, ", targetPort: 8080"));
    index.apply_service(&service("prod", "demo-canary", 80, ", targetPort: 8080"));
    index.apply_rollout(
        argo_ref("prod", "demo"),
        Ok(argo("prod", "demo", "aaa", "bbb", 1)),
    );
    index
}

#[test]
fn argo_rollout_with_pods_and_services_becomes_a_rollout_state() {
    let mut index = demo_index();
    let state = index.state();
    assert_eq!(state.errors, vec![]);
    let rollout = &state.traffic.rollouts["prod/demo"];
    assert_eq!(rollout.stable_hash, "aaa");
    assert_eq!(rollout.canary_hash.as_deref(), Some("bbb"));
    assert_eq!(rollout.canary_weight_bp, 2000);
    assert_eq!(
        rollout.versions["aaa"].endpoints,
        vec![addr("10.0.0.1:8080"), addr("10.0.0.2:8080")]
    );
    assert_eq!(
        rollout.versions["bbb"].endpoints,
        vec![addr("10.0.1.1:8080")]
    );
    assert_eq!(
        rollout.hosts,
        [
            "demo-stable",
            "demo-stable.prod",
            "demo-stable.prod.svc",
            "demo-stable.prod.svc.cluster.local",
            "demo-canary",
            "demo-canary.prod",
            "demo-canary.prod.svc",
            "demo-canary.prod.svc.cluster.local",
        ]
    );
}

#[test]
fn the_split_follows_the_status_step_by_step() {
    let mut index = demo_index();
    for (step, weight) in [(0, 2000), (1, 2000), (2, 5000), (3, 5000), (4, 10_000)] {
        index.apply_rollout(
            argo_ref("prod", "demo"),
            Ok(argo("prod", "demo", "aaa", "bbb", step)),
        );
        let state = index.state();
        assert_eq!(
            state.traffic.rollouts["prod/demo"].canary_weight_bp, weight,
            "step {step}"
        );
    }
    // Promoted: the canary is stable, no canary left.
    index.apply_rollout(
        argo_ref("prod", "demo"),
        Ok(argo("prod", "demo", "bbb", "bbb", 4)),
    );
    let rollout = &index.state().traffic.rollouts["prod/demo"];
    assert_eq!(
        (rollout.stable_hash.as_str(), rollout.canary_hash.as_ref()),
        ("bbb", None)
    );
}

#[test]
fn target_ports_resolve_numeric_named_and_default() {
    for (target, port) in [
        ("", 80),
        (", targetPort: 9090", 9090),
        (", targetPort: admin", 9090),
    ] {
        let mut index = demo_index();
        index.apply_service(&service("prod", "demo-stable", 80, target));
        let state = index.state();
        let endpoints = &state.traffic.rollouts["prod/demo"].versions["aaa"].endpoints;
        assert_eq!(endpoints[0].port(), port, "targetPort {target:?}");
    }
    // A named port the pods lack: they are no endpoints (as in Kubernetes), the version stays.
    let mut index = demo_index();
    index.apply_service(&service("prod", "demo-stable", 80, ", targetPort: grpc"));
    let state = index.state();
    assert_eq!(
        state.traffic.rollouts["prod/demo"].versions["aaa"].endpoints,
        vec![]
    );
    // No service at all: the pods' first container port.
    let mut index = demo_index();
    index.delete_service("prod", "demo-stable");
    index.delete_service("prod", "demo-canary");
    let state = index.state();
    assert_eq!(
        state.traffic.rollouts["prod/demo"].versions["bbb"].endpoints[0].port(),
        8080
    );
}

#[test]
fn only_ready_live_selected_pods_of_the_namespace_are_endpoints() {
    let mut index = demo_index();
    index.apply_pod(&pod("prod", "s3", "aaa", "10.0.0.3", false));
    let mut terminating = pod("prod", "s4", "aaa", "10.0.0.4", true);
    terminating.metadata.deletion_timestamp = terminating.metadata.creation_timestamp.clone();
    index.apply_pod(&terminating);
    let mut other_app = pod("prod", "x1", "aaa", "10.0.0.5", true);
    other_app
        .metadata
        .labels
        .as_mut()
        .expect("labels")
        .insert("app".into(), "other".into());
    index.apply_pod(&other_app);
    index.apply_pod(&pod("staging", "s6", "aaa", "10.0.0.6", true));
    let mut no_ip = pod("prod", "s7", "aaa", "10.0.0.7", true);
    no_ip.status.as_mut().expect("status").pod_ip = None;
    index.apply_pod(&no_ip);
    let state = index.state();
    assert_eq!(
        state.traffic.rollouts["prod/demo"].versions["aaa"].endpoints,
        vec![addr("10.0.0.1:8080"), addr("10.0.0.2:8080")]
    );
    // Deleting and resetting pods.
    index.delete_pod("prod", "s1");
    let state = index.state();
    assert_eq!(
        state.traffic.rollouts["prod/demo"].versions["aaa"].endpoints,
        vec![addr("10.0.0.2:8080")]
    );
    index.reset_pods(Some("prod"), &[pod("prod", "s9", "aaa", "10.0.0.9", true)]);
    let state = index.state();
    // bbb has no pods any more: no canary, everything on stable's new pods.
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    let demo = &state.traffic.rollouts["prod/demo"];
    assert_eq!(demo.canary_hash, None);
    assert_eq!(demo.versions["aaa"].endpoints, vec![addr("10.0.0.9:8080")]);
    assert_eq!(demo.version_weights_bp()["aaa"], 10_000);
}

#[test]
fn an_invalid_rollout_keeps_its_last_good_state_and_is_reported() {
    let mut index = demo_index();
    let good = index.state().traffic;
    let mut bad = argo("prod", "demo", "aaa", "bbb", 2);
    bad.spec.strategy.canary.as_mut().expect("canary").steps[2].set_weight = Some(150);
    index.apply_rollout(argo_ref("prod", "demo"), Ok(bad));
    let state = index.state();
    assert_eq!(state.traffic, good);
    assert_eq!(state.errors.len(), 1);
    assert_eq!(state.errors[0].object, argo_ref("prod", "demo"));
    assert!(
        state.errors[0]
            .message
            .contains("spec.strategy.canary.steps[2].setWeight"),
        "{}",
        state.errors[0].message
    );
    // Still the last good one on the next computation, and unparsable objects too.
    index.apply_rollout(
        argo_ref("prod", "demo"),
        Err("spec.replicas: invalid type".into()),
    );
    let state = index.state();
    assert_eq!(state.traffic, good);
    assert_eq!(state.errors[0].message, "spec.replicas: invalid type");
    // Fixed: served again, no error.
    index.apply_rollout(
        argo_ref("prod", "demo"),
        Ok(argo("prod", "demo", "aaa", "bbb", 2)),
    );
    let state = index.state();
    assert_eq!(state.errors, vec![]);
    assert_eq!(state.traffic.rollouts["prod/demo"].canary_weight_bp, 5000);
    // Deleted: gone, and no last good state lingers.
    index.delete_rollout(&argo_ref("prod", "demo"));
    assert_eq!(index.state(), IndexState::default());
    index.apply_rollout(argo_ref("prod", "demo"), Err("bad".into()));
    assert_eq!(index.state().traffic, TrafficState::default());
}

#[test]
fn a_rollout_without_stable_version_yet_is_pending_not_an_error() {
    let mut index = demo_index();
    let mut pending = argo("prod", "demo", "aaa", "bbb", 0);
    pending.status = None;
    let object = RolloutRef::new(RolloutApi::Sluice, "prod", "demo");
    index.delete_rollout(&argo_ref("prod", "demo"));
    index.apply_rollout(object, Ok(pending));
    assert_eq!(index.state(), IndexState::default());
}

#[test]
fn a_host_claimed_twice_is_reported_on_the_later_rollout() {
    let mut index = demo_index();
    let mut other = argo("prod", "zzz", "aaa", "bbb", 0);
    other.spec.hosts = vec!["demo-stable.prod".into()];
    index.apply_rollout(argo_ref("prod", "zzz"), Ok(other));
    let state = index.state();
    assert_eq!(
        state.traffic.rollouts.keys().collect::<Vec<_>>(),
        ["prod/demo"]
    );
    assert_eq!(state.errors.len(), 1);
    assert_eq!(state.errors[0].object, argo_ref("prod", "zzz"));
    assert!(
        state.errors[0].message.contains("\"demo-stable.prod\""),
        "{}",
        state.errors[0].message
    );
    assert!(state.traffic.validate().is_ok());
}

#[test]
fn sluice_and_argo_rollouts_of_the_same_name_do_not_both_serve() {
    let mut index = demo_index();
    let sluice = RolloutRef::new(RolloutApi::Sluice, "prod", "demo");
    index.apply_rollout(sluice.clone(), Ok(argo("prod", "demo", "aaa", "bbb", 2)));
    let state = index.state();
    assert_eq!(
        state.traffic.rollouts["prod/demo"].canary_weight_bp, 5000,
        "sluice.dev wins"
    );
    assert_eq!(state.errors.len(), 1);
    assert_eq!(state.errors[0].object, argo_ref("prod", "demo"));
}

#[test]
fn reset_rollouts_drops_those_not_listed_in_the_scope() {
    let mut index = demo_index();
    index.apply_rollout(argo_ref("staging", "demo"), Err("bad".into()));
    index.reset_rollouts(RolloutApi::Argo, Some("staging"), vec![]);
    assert!(index.rollout(&argo_ref("prod", "demo")).is_some());
    assert_eq!(index.state().errors, vec![]);
    index.reset_rollouts(RolloutApi::Argo, None, vec![]);
    assert_eq!(index.state(), IndexState::default());
}

#[test]
fn live_hashes_report_the_newest_pod_of_each_hash() {
    let mut index = demo_index();
    let mut newer = pod("prod", "c2", "bbb", "10.0.1.2", false);
    newer.metadata.creation_timestamp =
        Some(serde_json::from_str("\"2024-02-01T00:00:00Z\"").expect("time"));
    index.apply_pod(&newer);
    let doc = index
        .rollout(&argo_ref("prod", "demo"))
        .expect("rollout")
        .clone();
    let live = index.live_hashes(&doc).expect("selector");
    assert_eq!(
        live.iter().map(|h| h.hash.as_str()).collect::<Vec<_>>(),
        ["aaa", "bbb"]
    );
    assert_eq!(
        live[1].newest_pod,
        newer.metadata.creation_timestamp.map(|t| t.0)
    );
}

#[test]
fn a_fresh_index_routes_an_aborted_rollout_without_canary_pods_to_stable() {
    // Argo scaled the aborted canary (bbb) to zero; a replica starting now has no last good state.
    let mut index = Index::default();
    index.apply_pod(&pod("prod", "s1", "aaa", "10.0.0.1", true));
    index.apply_service(&service("prod", "demo-stable", 80, ", targetPort: 8080"));
    let mut aborted = argo("prod", "demo", "aaa", "bbb", 2);
    aborted.status.as_mut().expect("status").abort = true;
    index.apply_rollout(argo_ref("prod", "demo"), Ok(aborted));
    let state = index.state();
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    let demo = &state.traffic.rollouts["prod/demo"];
    assert_eq!(demo.version_weights_bp()["aaa"], 10_000);
    assert!(demo.hosts.contains(&"demo-stable".to_owned()));
}
