//! The `Experiment` object of an experiment step (`Action::SyncExperiment`): asked for when the
//! step starts with the resolved templates (each with its own hash), duration and analyses
//! (arguments resolved); its status follows `status.experiment` on each change (Pending →
//! Running → Successful; Failed on a failed analysis; terminated on abort), and a pass that
//! changes nothing asks for nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::Sim;
use sluice_analysis::AnalysisPhase;
use sluice_api::experiment_object::{ExperimentSpec, ExperimentStatus};
use sluice_release::Action;

const STEPS: &str = "[{setWeight: 20}, {experiment: {duration: 5m, templates: [\
    {name: baseline, specRef: stable, weight: 10}, {name: canary, specRef: canary, replicas: 2}], \
    analyses: [{name: compare, templateName: compare-success-rate, requiredForCompletion: true, \
    args: [{name: baseline-hash, value: '{{templates.baseline.podTemplateHash}}'}]}]}}, \
    {setWeight: 60}, {pause: {}}]";

type Synced = (String, Option<ExperimentSpec>, bool, ExperimentStatus);

fn synced(actions: &[Action]) -> Vec<Synced> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SyncExperiment {
                name,
                spec,
                terminate,
                status,
                owner,
                canary_hash,
            } => {
                assert_eq!(
                    (owner.kind.as_str(), owner.name.as_str(), owner.controller),
                    ("Rollout", "demo", Some(true))
                );
                assert_eq!(owner.block_owner_deletion, Some(true));
                assert!(name.starts_with(&format!("demo-{canary_hash}-")), "{name}");
                Some((
                    name.clone(),
                    spec.as_deref().cloned(),
                    *terminate,
                    status.clone(),
                ))
            }
            _ => None,
        })
        .collect()
}

fn phases(sim: &Sim) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, _, _, status) in synced(&sim.actions) {
        if out.last() != Some(&status.phase) {
            out.push(status.phase);
        }
    }
    out
}

fn set_run(sim: &mut Sim, name: &str, phase: AnalysisPhase) {
    let run = sim
        .analysis_runs
        .iter_mut()
        .find(|r| r.name == name)
        .unwrap();
    run.status.phase = phase;
    run.status.message = format!("run {phase}");
}

fn at_experiment() -> (Sim, String) {
    let mut sim = Sim::with_stable("app:1", STEPS);
    sim.set_image("app:2");
    sim.settle();
    let name = format!("demo-{}-1", sim.current());
    (sim, name)
}

#[test]
fn the_object_is_the_resolved_step_and_its_status_follows_the_run_to_successful() {
    let (mut sim, name) = at_experiment();
    let all = synced(&sim.actions);
    let (first_name, spec, terminate, status) = all.first().cloned().unwrap();
    assert_eq!(first_name, name);
    assert!(!terminate);
    assert_eq!(status.phase, "Pending");
    let spec = spec.expect("the spec while it runs");
    assert_eq!(spec.duration.as_deref(), Some("5m"));
    let names: Vec<(&str, Option<i32>)> = spec
        .templates
        .iter()
        .map(|t| (t.name.as_str(), t.replicas))
        .collect();
    assert_eq!(names, [("baseline", Some(1)), ("canary", Some(2))]);
    let experiment = sim.status().experiment.clone().unwrap();
    for (t, s) in spec.templates.iter().zip(&experiment.template_statuses) {
        let hash = &s.pod_template_hash;
        let label = |m: Option<&std::collections::BTreeMap<String, String>>| {
            m.and_then(|l| l.get("rollouts-pod-template-hash")).cloned()
        };
        assert_eq!(
            label(t.template.metadata.as_ref().unwrap().labels.as_ref()).as_ref(),
            Some(hash)
        );
        assert_eq!(
            label(t.selector.as_ref().unwrap().match_labels.as_ref()).as_ref(),
            Some(hash)
        );
    }
    assert_ne!(
        experiment.template_statuses[0].pod_template_hash,
        experiment.template_statuses[1].pod_template_hash
    );
    let arg = &spec.analyses[0].args[0];
    assert_eq!(
        arg.value.as_deref(),
        Some(experiment.template_statuses[0].pod_template_hash.as_str()),
        "{{{{templates.baseline.podTemplateHash}}}} resolved"
    );
    assert!(spec.analyses[0].required_for_completion);
    // The last object asked for is the status of now: Running, availableAt set.
    let (_, _, _, last) = synced(&sim.actions).last().cloned().unwrap();
    assert_eq!(last, ExperimentStatus::from(&experiment));
    assert_eq!(last.phase, "Running");
    assert!(last.available_at.is_some());
    // A pass that changes nothing asks for nothing.
    let out = sim.pass();
    assert!(synced(&out.actions).is_empty(), "{:?}", out.actions);

    set_run(
        &mut sim,
        &format!("{name}-compare"),
        AnalysisPhase::Successful,
    );
    sim.settle();
    assert_eq!(phases(&sim), ["Pending", "Running", "Successful"]);
    let (_, spec, terminate, status) = synced(&sim.actions).last().cloned().unwrap();
    assert_eq!((spec, terminate), (None, false), "the step is over");
    assert_eq!(status.phase, "Successful");
    assert_eq!(status.analysis_runs[0].phase, "Successful");
}

#[test]
fn a_failed_analysis_leaves_the_object_failed() {
    let (mut sim, name) = at_experiment();
    set_run(&mut sim, &format!("{name}-compare"), AnalysisPhase::Failed);
    sim.settle();
    assert!(sim.status().abort);
    assert_eq!(phases(&sim), ["Pending", "Running", "Failed"]);
    let (_, _, terminate, status) = synced(&sim.actions).last().cloned().unwrap();
    assert!(!terminate);
    assert!(status.message.unwrap().contains("run Failed"));
}

#[test]
fn an_abort_terminates_the_object() {
    let (mut sim, _) = at_experiment();
    sim.abort();
    sim.settle();
    let (_, spec, terminate, status) = synced(&sim.actions).last().cloned().unwrap();
    assert_eq!((spec, terminate), (None, true));
    assert_eq!(status.phase, "Successful");
    assert!(status.message.unwrap().contains("aborted"));
}
