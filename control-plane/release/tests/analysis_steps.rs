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

fn args_of(sim: &Sim, run: &str) -> Vec<sluice_api::resource::AnalysisRunArgument> {
    sim.actions
        .iter()
        .find_map(|a| match a {
            Action::StartAnalysisRun { name, args, .. } if name == run => Some(args.clone()),
            _ => None,
        })
        .expect("the run was started")
}

fn terminated(sim: &Sim) -> Vec<String> {
    sim.actions
        .iter()
        .filter_map(|a| match a {
            Action::TerminateAnalysisRun { name } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_steps_arguments_and_hashes_reach_the_driver() {
    let steps = "[{setWeight: 20}, {analysis: {templates: [{templateName: success-rate}], \
                 args: [{name: version, valueFrom: {podTemplateHashValue: Latest}}, {name: service, value: web}]}}]";
    let mut sim = Sim::with_stable("app:1", steps);
    let stable = sim.stable();
    sim.set_image("app:2");
    sim.settle();
    let canary = sim.current();
    let run = format!("demo-{canary}-1");
    let args = args_of(&sim, &run);
    assert_eq!(args.len(), 2, "{args:?}");
    assert_eq!(
        args[0]
            .value_from
            .as_ref()
            .and_then(|v| v.pod_template_hash_value.as_deref()),
        Some("Latest")
    );
    assert_eq!(args[1].value.as_deref(), Some("web"));
    let hashes = sim.actions.iter().find_map(|a| match a {
        Action::StartAnalysisRun {
            name,
            canary_hash,
            stable_hash,
            background,
            ..
        } if *name == run => Some((canary_hash.clone(), stable_hash.clone(), *background)),
        _ => None,
    });
    assert_eq!(hashes, Some((canary, stable, false)));
}

#[test]
fn an_aborted_rollout_terminates_its_running_run() {
    let (mut sim, _) = canary_at_analysis();
    let run = started(&sim).pop().expect("a run");
    assert!(terminated(&sim).is_empty(), "the step waits on it");
    sim.abort();
    sim.settle();
    assert_eq!(terminated(&sim), vec![run]);
}

fn with_background(steps: &str, starting_step: i32) -> Sim {
    let mut sim = Sim::with_stable("app:1", steps);
    let canary = sim
        .rollout
        .spec
        .strategy
        .canary
        .as_mut()
        .expect("a canary strategy");
    canary.analysis = Some(sluice_api::resource::AnalysisRef {
        templates: vec![sluice_api::resource::AnalysisTemplateRef {
            template_name: "success-rate".into(),
            cluster_scope: false,
        }],
        args: Vec::new(),
        starting_step: Some(starting_step),
        ..Default::default()
    });
    sim.settle();
    sim
}

#[test]
fn background_analysis_starts_at_its_starting_step() {
    let mut sim = with_background(
        "[{setWeight: 20}, {pause: {}}, {setWeight: 60}, {pause: {}}]",
        2,
    );
    sim.set_image("app:2");
    sim.settle();
    assert_eq!(sim.step(), 1);
    assert!(
        started(&sim).is_empty(),
        "not before step 2: {:?}",
        started(&sim)
    );
    sim.promote();
    sim.settle();
    let canary = sim.current();
    assert_eq!(sim.step(), 3);
    assert_eq!(started(&sim), vec![format!("demo-{canary}-background")]);
    // It runs beside the steps: promoting past the last pause promotes the canary and stops it.
    sim.promote();
    sim.settle();
    assert_eq!(sim.stable(), canary);
    assert_eq!(terminated(&sim), vec![format!("demo-{canary}-background")]);
}

#[test]
fn a_failed_background_run_aborts_the_rollout() {
    let mut sim = with_background("[{setWeight: 20}, {pause: {}}]", 0);
    let stable = sim.stable();
    sim.set_image("app:2");
    sim.settle();
    assert_eq!(started(&sim).len(), 1, "{:?}", started(&sim));
    finish(
        &mut sim,
        AnalysisPhase::Failed,
        "Metric \"success-rate\" assessed Failed due to failed (1) > failureLimit (0)",
        &["[0.8]"],
    );
    sim.settle();
    assert!(sim.status().abort);
    assert_eq!(sim.phase(), "Degraded");
    assert_eq!(sim.traffic().stable, stable);
    assert_eq!(sim.traffic().canary_weight, 0);
    let message = sim.status().message.clone().unwrap_or_default();
    assert!(
        message.contains("success-rate last values [0.8]"),
        "{message}"
    );
}

#[test]
fn a_starting_step_past_the_steps_is_invalid() {
    let sim = with_background("[{setWeight: 20}]", 5);
    assert_eq!(sim.phase(), "Degraded");
    let message = sim.status().message.clone().unwrap_or_default();
    assert!(message.contains("startingStep"), "{message}");
}

/// Argo's retry measures again: the run that failed is not the answer any more. Before, the
/// retried canary found the same Failed run at its analysis step and aborted again at once.
#[test]
fn retry_after_a_failed_run_measures_again() {
    let (mut sim, stable) = canary_at_analysis();
    let canary = sim.current();
    let run = format!("demo-{canary}-1");
    finish(&mut sim, AnalysisPhase::Failed, "failed", &["[0.5]"]);
    sim.settle();
    assert!(sim.status().abort);
    assert_eq!(sim.traffic().stable, stable);

    sim.retry();
    sim.settle();
    assert!(!sim.status().abort, "{:?}", sim.status());
    assert!(
        sim.actions
            .iter()
            .any(|a| matches!(a, Action::DeleteAnalysisRun { name } if *name == run)),
        "{:?}",
        sim.actions
    );
    assert!(sim.events().iter().any(|e| e.contains("RolloutRetried")));
    // The steps again: 20 %, and the analysis step started anew and waiting.
    assert_eq!((sim.step(), sim.traffic().canary_weight), (1, 20));
    assert_eq!(sim.analysis_runs.len(), 1, "{:?}", sim.analysis_runs);
    assert_eq!(sim.analysis_runs[0].name, run);
    assert!(
        !sim.analysis_runs[0].status.phase.completed(),
        "measuring again"
    );
    finish(&mut sim, AnalysisPhase::Successful, "", &["[0.99]"]);
    sim.settle();
    assert_eq!(sim.stable(), canary, "measured good this time: promoted");
}

/// Argo: promote resumes past an inconclusive background run, which is replaced by a new run
/// (not re-read as a new pause); the steps go on, and a later pause step still holds.
#[test]
fn promoting_past_an_inconclusive_background_run_resumes_with_a_new_run() {
    let mut sim = with_background(
        "[{setWeight: 20}, {setWeight: 40}, {pause: {duration: 60s}}, {setWeight: 60}, {pause: {}}]",
        0,
    );
    sim.set_image("app:2");
    sim.settle();
    let canary = sim.current();
    let first = format!("demo-{canary}-background");
    assert_eq!(started(&sim), vec![first.clone()]);
    assert_eq!(sim.step(), 2, "at the timed pause");
    finish(&mut sim, AnalysisPhase::Inconclusive, "", &["[0.9]"]);
    sim.settle();
    assert_eq!(sim.phase(), "Paused");
    assert!(
        sim.status()
            .pause_conditions
            .iter()
            .any(|p| p.reason == INCONCLUSIVE_ANALYSIS_RUN)
    );
    sim.promote();
    sim.settle();
    sim.advance(1);
    sim.settle();
    let second = format!("demo-{canary}-background-2");
    assert_eq!(
        started(&sim),
        vec![first.clone(), second.clone()],
        "a new background run"
    );
    assert!(
        !sim.status()
            .pause_conditions
            .iter()
            .any(|p| p.reason == INCONCLUSIVE_ANALYSIS_RUN),
        "not paused again for the run promoted past: {:?}",
        sim.status().pause_conditions
    );
    // The promote ended the timed pause too; the steps go on to the indefinite pause, which
    // holds (the promote is not read twice).
    assert_eq!(sim.step(), 4);
    assert_eq!(sim.phase(), "Paused");
    sim.advance(600);
    sim.settle();
    assert_eq!(sim.step(), 4, "pause {{}} holds until promoted");
    assert!(terminated(&sim).is_empty(), "the new run is wanted");
    // The new run is what counts now: when it fails, the rollout aborts.
    finish(&mut sim, AnalysisPhase::Failed, "failed", &["[0.5]"]);
    sim.settle();
    assert!(sim.status().abort);
}

/// The promote past an inconclusive background run is spent in its pass: when no pause step
/// takes it (here the steps wait on a step's run), a later `pause: {}` still holds.
#[test]
fn a_promote_past_an_inconclusive_background_run_does_not_skip_a_later_pause() {
    let mut sim = with_background(
        "[{setWeight: 20}, {analysis: {templates: [{templateName: step-check}]}}, {pause: {}}]",
        0,
    );
    sim.set_image("app:2");
    sim.settle();
    let canary = sim.current();
    assert_eq!(sim.step(), 1, "waiting on the step's run");
    let background = sim
        .analysis_runs
        .iter()
        .position(|r| r.name == format!("demo-{canary}-background"))
        .expect("the background run");
    let run = sim.analysis_runs.remove(background);
    sim.analysis_runs.push(run);
    finish(&mut sim, AnalysisPhase::Inconclusive, "", &["[0.9]"]);
    sim.settle();
    assert_eq!(sim.phase(), "Paused");
    sim.promote();
    sim.settle();
    // A later pass (the driver reconciles again after the status write) reads the run anew.
    sim.advance(1);
    sim.settle();
    assert_eq!(sim.step(), 1, "still waiting on the step's run");
    assert_ne!(sim.phase(), "Paused");
    let step_run = sim
        .analysis_runs
        .iter()
        .position(|r| r.name == format!("demo-{canary}-1"))
        .expect("the step's run");
    let run = sim.analysis_runs.remove(step_run);
    sim.analysis_runs.push(run);
    finish(&mut sim, AnalysisPhase::Successful, "", &["[1]"]);
    sim.settle();
    assert_eq!(sim.step(), 2, "at pause {{}}");
    assert_eq!(sim.phase(), "Paused", "the pause holds");
    assert_ne!(sim.stable(), canary);
}
