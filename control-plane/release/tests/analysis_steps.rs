//! Analysis steps: the step starts its AnalysisRun and waits; Successful → next step; Failed or
//! Error → abort (all traffic to stable, the message naming the metric and its last values);
//! Inconclusive → paused until promoted.

mod common;

use common::Sim;
use sluice_analysis::{AnalysisPhase, AnalysisRunStatus, Measurement, MetricResult};
use sluice_release::{Action, INCONCLUSIVE_ANALYSIS_RUN};

const STEPS: &str =
    "[{setWeight: 20}, {analysis: {templates: [{templateName: success-rate}]}}, {setWeight: 60}]";

fn started(sim: &Sim) -> Vec<String> {
    sim.actions
        .iter()
        .filter_map(|a| match a {
            Action::StartAnalysisRun { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn finish(sim: &mut Sim, phase: AnalysisPhase, message: &str, values: &[&str]) {
    let run = sim.analysis_runs.last_mut().expect("a run");
    run.status = AnalysisRunStatus {
        phase,
        message: message.into(),
        metric_results: vec![MetricResult {
            name: "success-rate".into(),
            phase,
            measurements: values
                .iter()
                .map(|v| Measurement {
                    phase,
                    value: (*v).into(),
                    ..Measurement::default()
                })
                .collect(),
            ..MetricResult::default()
        }],
        ..AnalysisRunStatus::default()
    };
}

fn canary_at_analysis() -> (Sim, String) {
    let mut sim = Sim::with_stable("app:1", STEPS);
    let stable = sim.stable();
    sim.set_image("app:2");
    sim.settle();
    (sim, stable)
}

#[test]
fn the_step_starts_its_run_once_and_waits() {
    let (mut sim, _) = canary_at_analysis();
    let canary = sim.current();
    assert_eq!(sim.step(), 1);
    assert_eq!(started(&sim), vec![format!("demo-{canary}-1")]);
    assert_eq!(sim.traffic().canary_weight, 20);
    sim.advance(600);
    sim.settle();
    assert_eq!(sim.step(), 1, "still waiting on the run");
    assert_eq!(started(&sim).len(), 1, "started once");
}

#[test]
fn a_successful_run_takes_the_next_step() {
    let (mut sim, _) = canary_at_analysis();
    finish(&mut sim, AnalysisPhase::Successful, "", &["[0.99]"]);
    sim.settle();
    let canary = sim.current();
    assert_eq!(sim.stable(), canary, "all steps done: promoted");
}

#[test]
fn a_failed_run_aborts_naming_the_metric_and_its_values() {
    let (mut sim, stable) = canary_at_analysis();
    finish(
        &mut sim,
        AnalysisPhase::Failed,
        "Metric \"success-rate\" assessed Failed due to failed (2) > failureLimit (1)",
        &["[0.81]", "[0.79]"],
    );
    sim.settle();
    let traffic = sim.traffic();
    assert_eq!(
        (traffic.stable.as_str(), traffic.canary_weight),
        (stable.as_str(), 0)
    );
    assert_eq!(sim.phase(), "Degraded");
    let message = sim.status().message.clone().unwrap_or_default();
    assert!(message.starts_with("RolloutAborted"), "{message}");
    assert!(
        message.contains("Metric \"success-rate\" assessed Failed"),
        "{message}"
    );
    assert!(
        message.contains("success-rate last values [0.81], [0.79]"),
        "{message}"
    );
}

#[test]
fn an_error_run_aborts_too() {
    let (mut sim, stable) = canary_at_analysis();
    finish(
        &mut sim,
        AnalysisPhase::Error,
        "Metric \"success-rate\" assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4)",
        &[],
    );
    sim.settle();
    assert_eq!(sim.traffic().stable, stable);
    assert!(sim.status().abort);
}

#[test]
fn an_inconclusive_run_pauses_until_promoted() {
    let (mut sim, _) = canary_at_analysis();
    finish(&mut sim, AnalysisPhase::Inconclusive, "", &["[0.9]"]);
    sim.settle();
    assert_eq!(sim.step(), 1);
    assert!(
        sim.status()
            .pause_conditions
            .iter()
            .any(|p| p.reason == INCONCLUSIVE_ANALYSIS_RUN)
    );
    assert_eq!(sim.phase(), "Paused");
    sim.promote();
    sim.settle();
    assert_eq!(
        sim.stable(),
        sim.current(),
        "promoted past the inconclusive analysis"
    );
}
