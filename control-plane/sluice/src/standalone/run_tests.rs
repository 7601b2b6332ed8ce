//! The standalone engine's pure pass: a release through spec.version, commands, a restart.
#![allow(clippy::unwrap_used)]

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use sluice_api::Rollout;
use sluice_release::ProxyAck;

use super::*;
use crate::standalone::state::{self, StateFile};

fn doc(version: &str) -> Rollout {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "demo"},
        "spec": {
            "version": version, "hosts": ["demo.local"],
            "staticEndpoints": {"v1": ["127.0.0.1:8001"], "v2": ["127.0.0.1:8002"]},
            "strategy": {"canary": {"steps": [
                {"setWeight": 10}, {"pause": {"duration": "30s"}}, {"setWeight": 50}, {"pause": {}}
            ]}}
        }
    }))
    .expect("rollout")
}

fn t(seconds: i64) -> Timestamp {
    "2026-01-01T00:00:00Z"
        .parse::<Timestamp>()
        .expect("time")
        .checked_add(SignedDuration::from_secs(seconds))
        .expect("time")
}

/// One proxy that has ACKed whatever is published.
fn acked(record: &RolloutRecord) -> Vec<ProxyAck> {
    vec![ProxyAck {
        node_id: "envoy".into(),
        acked_generation: record
            .status
            .as_ref()
            .and_then(|s| s.data_plane.as_ref())
            .map(|d| d.generation),
        nacked: None,
    }]
}

/// Runs until the published traffic is ACKed and nothing moves.
fn settle(doc: &Rollout, record: &mut RolloutRecord, now: Timestamp) -> Option<Duration> {
    let mut requeue = None;
    for _ in 0..5 {
        requeue = run("default/demo", doc, record, &acked(record), now);
    }
    requeue
}

fn weight(record: &RolloutRecord) -> (Option<String>, i32) {
    let traffic = &record
        .status
        .as_ref()
        .unwrap()
        .data_plane
        .as_ref()
        .unwrap()
        .traffic;
    (traffic.canary.clone(), traffic.canary_weight)
}

fn step(record: &RolloutRecord) -> Option<i32> {
    record.status.as_ref().and_then(|s| s.current_step_index)
}

#[test]
fn a_release_through_spec_version_with_a_restart_and_promote() {
    let mut record = RolloutRecord::default();
    settle(&doc("v1"), &mut record, t(0));
    assert_eq!(
        traffic_status(&doc("v1"), &record).stable_rs.as_deref(),
        Some("v1")
    );
    assert_eq!(record.versions.len(), 1);
    assert_eq!(
        record.events.first().map(|e| e.reason.as_str()),
        Some("RolloutUpdated")
    );

    let v2 = doc("v2");
    let requeue = settle(&v2, &mut record, t(1));
    assert_eq!(
        (weight(&record), step(&record)),
        ((Some("v2".into()), 10), Some(1))
    );
    assert_eq!(
        requeue,
        Some(Duration::from_secs(30)),
        "the timed pause is a timer"
    );

    // A restart: the record goes through the state file and comes back; the step holds.
    let mut file = StateFile {
        format: state::FORMAT,
        ..StateFile::default()
    };
    file.rollouts.insert("default/demo".into(), record.clone());
    let text = serde_json::to_string(&file).expect("json");
    let mut record = state::parse(&text, "state").expect("parses").rollouts["default/demo"].clone();
    settle(&v2, &mut record, t(2));
    assert_eq!(
        (weight(&record), step(&record)),
        ((Some("v2".into()), 10), Some(1))
    );

    settle(&v2, &mut record, t(31));
    assert_eq!(
        (weight(&record), step(&record)),
        ((Some("v2".into()), 50), Some(3))
    );
    let status = traffic_status(&v2, &record);
    assert_eq!(
        (
            status.stable_rs.as_deref(),
            status.current_pod_hash.as_deref()
        ),
        (Some("v1"), Some("v2"))
    );

    apply_command(&mut record, Command::Promote { full: false }, t(40));
    settle(&v2, &mut record, t(40));
    assert_eq!(weight(&record), (None, 0));
    assert_eq!(
        record.status.as_ref().unwrap().stable_rs.as_deref(),
        Some("v2")
    );
    assert_eq!(
        record.status.as_ref().unwrap().phase.as_deref(),
        Some("Healthy")
    );
    assert_eq!(record.commands[0].command, "promote");
    // The old version is scaled to 0 after scaleDownDelaySeconds (30 s): it gets no traffic.
    settle(&v2, &mut record, t(71));
    let v1 = record.versions.iter().find(|v| v.hash == "v1").unwrap();
    assert_eq!(v1.desired, 0);
}

#[test]
fn abort_then_retry_and_the_gate_holds_without_acks() {
    let mut record = RolloutRecord::default();
    settle(&doc("v1"), &mut record, t(0));
    let v2 = doc("v2");
    settle(&v2, &mut record, t(1));
    apply_command(&mut record, Command::Abort, t(2));
    settle(&v2, &mut record, t(2));
    assert_eq!(weight(&record), (None, 0));
    assert_eq!(
        record.status.as_ref().unwrap().phase.as_deref(),
        Some("Degraded")
    );
    assert_eq!(
        traffic_status(&v2, &record).current_pod_hash.as_deref(),
        Some("v1")
    );
    apply_command(&mut record, Command::Retry, t(3));
    // No proxy ACKs: the 10 % step is published but not done, so the pause does not start.
    let silent = vec![ProxyAck {
        node_id: "envoy".into(),
        acked_generation: None,
        nacked: None,
    }];
    run("default/demo", &v2, &mut record, &silent, t(3));
    assert_eq!(
        (weight(&record), step(&record)),
        ((Some("v2".into()), 10), Some(0))
    );
    let data_plane = record.status.as_ref().unwrap().data_plane.clone().unwrap();
    assert_eq!((data_plane.acknowledged, data_plane.proxies), (0, 1));
    settle(&v2, &mut record, t(4));
    assert_eq!(step(&record), Some(1));
}

#[test]
fn pause_holds_until_promote() {
    let mut record = RolloutRecord::default();
    settle(&doc("v1"), &mut record, t(0));
    apply_command(&mut record, Command::Pause, t(0));
    let v2 = doc("v2");
    settle(&v2, &mut record, t(1));
    assert!(engine_rollout(&v2, &record).spec.paused);
    settle(&v2, &mut record, t(100));
    assert_eq!(step(&record), Some(0));
    apply_command(&mut record, Command::Promote { full: true }, t(101));
    settle(&v2, &mut record, t(101));
    assert_eq!(
        record.status.as_ref().unwrap().stable_rs.as_deref(),
        Some("v2")
    );
}

#[test]
fn published_additional_weights_reach_the_derived_status() {
    use sluice_api::resource::{PublishedTraffic, WeightDestination};
    let traffic = PublishedTraffic {
        stable: "aaa".into(),
        canary: Some("bbb".into()),
        canary_weight: 10,
        additional: vec![WeightDestination {
            pod_template_hash: Some("ccc".into()),
            service_name: Some("baseline".into()),
            weight: 10,
        }],
        ..PublishedTraffic::default()
    };
    let canary = super::with_published_additional(None, &traffic).expect("weights");
    let weights = canary.weights.expect("weights");
    assert_eq!(weights.canary.weight, 10);
    assert_eq!(weights.additional, traffic.additional);
    let none = PublishedTraffic::default();
    assert_eq!(super::with_published_additional(None, &none), None);
}

fn with_field_ref_analysis(version: &str, field_path: &str) -> Rollout {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "demo", "labels": {"app": "shop"}},
        "spec": {
            "version": version, "hosts": ["demo.local"],
            "staticEndpoints": {"v1": ["127.0.0.1:8001"], "v2": ["127.0.0.1:8002"]},
            "strategy": {"canary": {"steps": [
                {"setWeight": 10},
                {"analysis": {"templates": [{"templateName": "success-rate"}], "args": [
                    {"name": "app", "valueFrom": {"fieldRef": {"fieldPath": field_path}}},
                    {"name": "version", "valueFrom": {"podTemplateHashValue": "Latest"}}
                ]}}
            ]}}
        }
    }))
    .expect("rollout")
}

#[test]
fn a_field_ref_argument_is_read_from_the_rollout_when_the_run_starts() {
    let mut record = RolloutRecord::default();
    let path = "metadata.labels['app']";
    settle(&with_field_ref_analysis("v1", path), &mut record, t(0));
    settle(&with_field_ref_analysis("v2", path), &mut record, t(1));
    let run = record.analysis_runs.first().expect("a run");
    assert_eq!(run.args[0].name, "app");
    assert_eq!(run.args[0].value.as_deref(), Some("shop"), "{run:?}");
    assert!(run.args[0].value_from.is_none());
    assert!(
        run.args[1].value_from.is_some(),
        "podTemplateHashValue is left to the plan"
    );
    assert!(!run.status.phase.completed(), "{run:?}");
}

#[test]
fn a_field_ref_that_does_not_resolve_ends_the_run_as_error_naming_the_argument() {
    let mut record = RolloutRecord::default();
    let path = "spec.nothing";
    settle(&with_field_ref_analysis("v1", path), &mut record, t(0));
    settle(&with_field_ref_analysis("v2", path), &mut record, t(1));
    let run = record.analysis_runs.first().expect("a run");
    assert_eq!(
        run.status.phase,
        sluice_analysis::AnalysisPhase::Error,
        "{run:?}"
    );
    assert!(
        run.status.message.contains("args.app") && run.status.message.contains("spec.nothing"),
        "{}",
        run.status.message
    );
    let status = record.status.as_ref().expect("status");
    assert!(status.abort, "the engine aborts on the Error: {status:?}");
}

/// A standalone experiment: each template names the `staticEndpoints` version that runs it.
fn experiment_doc(version: &str, experiment: serde_json::Value) -> Rollout {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "demo"},
        "spec": {
            "version": version, "hosts": ["demo.local"],
            "staticEndpoints": {
                "v1": ["127.0.0.1:8001"], "v2": ["127.0.0.1:8002"],
                "v1-baseline": ["127.0.0.1:8003"], "v2-canary": ["127.0.0.1:8004"]
            },
            "strategy": {"canary": {"steps": [
                {"setWeight": 20}, {"experiment": experiment}, {"setWeight": 50}, {"pause": {}}
            ]}}
        }
    }))
    .expect("rollout")
}

#[test]
fn an_experiment_runs_its_templates_on_their_static_versions() {
    let experiment = serde_json::json!({"duration": "60s", "templates": [
        {"name": "baseline", "specRef": "stable", "version": "v1-baseline", "weight": 10},
        {"name": "canary", "specRef": "canary", "version": "v2-canary", "weight": 10}
    ]});
    let mut record = RolloutRecord::default();
    settle(&experiment_doc("v1", experiment.clone()), &mut record, t(0));
    let v2 = experiment_doc("v2", experiment);
    let requeue = settle(&v2, &mut record, t(1));
    assert_eq!(step(&record), Some(1));
    assert_eq!(
        requeue,
        Some(Duration::from_secs(60)),
        "the duration is a timer"
    );
    let running: Vec<(&str, &str, Option<&str>)> = record
        .versions
        .iter()
        .filter(|v| v.experiment.is_some())
        .map(|v| (v.name.as_str(), v.hash.as_str(), v.experiment.as_deref()))
        .collect();
    assert_eq!(
        running,
        vec![
            ("demo-v2-1-baseline", "v1-baseline", Some("demo-v2-1")),
            ("demo-v2-1-canary", "v2-canary", Some("demo-v2-1")),
        ]
    );
    // What the traffic derivation reads: the templates' shares beside the canary's.
    let weights = traffic_status(&v2, &record)
        .canary
        .and_then(|c| c.weights)
        .unwrap();
    let shares: Vec<(Option<&str>, i32)> = weights
        .additional
        .iter()
        .map(|w| (w.pod_template_hash.as_deref(), w.weight))
        .collect();
    assert_eq!(
        shares,
        vec![(Some("v1-baseline"), 10), (Some("v2-canary"), 10)]
    );
    assert_eq!(
        (weights.canary.weight, weights.stable.unwrap().weight),
        (20, 60)
    );

    // The state file keeps which versions run the experiment.
    let mut file = StateFile {
        format: state::FORMAT,
        ..StateFile::default()
    };
    file.rollouts.insert("default/demo".into(), record.clone());
    let text = serde_json::to_string(&file).expect("json");
    let mut record = state::parse(&text, "state").expect("parses").rollouts["default/demo"].clone();

    settle(&v2, &mut record, t(61));
    assert_eq!(step(&record), Some(3), "setWeight 50, at the pause");
    assert!(
        record.versions.iter().all(|v| v.experiment.is_none()),
        "removed"
    );
    assert_eq!(weight(&record), (Some("v2".into()), 50));
}

#[test]
fn promote_moves_past_an_endless_experiment() {
    let experiment = serde_json::json!({"templates": [
        {"name": "preview", "specRef": "canary", "version": "v2-canary"}
    ]});
    let mut record = RolloutRecord::default();
    settle(&experiment_doc("v1", experiment.clone()), &mut record, t(0));
    let v2 = experiment_doc("v2", experiment);
    settle(&v2, &mut record, t(1));
    settle(&v2, &mut record, t(86_400));
    assert_eq!(
        step(&record),
        Some(1),
        "no duration, no analysis: it runs on"
    );
    apply_command(&mut record, Command::Promote { full: false }, t(86_401));
    settle(&v2, &mut record, t(86_401));
    assert_eq!(step(&record), Some(3));
    assert!(record.versions.iter().all(|v| v.experiment.is_none()));
}

#[test]
fn a_template_without_its_own_static_version_is_rejected_naming_the_field() {
    let experiment = serde_json::json!({"templates": [
        {"name": "baseline", "specRef": "stable", "version": "v1"}
    ]});
    let mut record = RolloutRecord::default();
    settle(&experiment_doc("v1", experiment.clone()), &mut record, t(0));
    let message = record.status.as_ref().unwrap().message.clone().unwrap();
    assert!(
        message.contains("spec.strategy.canary.steps[1].experiment.templates[0].version"),
        "{message}"
    );
    let missing = serde_json::json!({"templates": [{"name": "baseline", "specRef": "stable"}]});
    settle(&experiment_doc("v1", missing), &mut record, t(1));
    let message = record.status.as_ref().unwrap().message.clone().unwrap();
    assert!(
        message.contains("templates[0].version: is required"),
        "{message}"
    );
}
