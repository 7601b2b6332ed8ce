//! The measurement state machine, one test per transition (Argo's analysis controller rules).

use std::time::Duration;

use AnalysisPhase::{Error, Failed, Inconclusive, Running, Successful};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use sluice_analysis::{
    AnalysisDocument, AnalysisPhase, AnalysisRunStatus, Measurement, PodHashes, RunPlan, advance,
    due, parse_analysis_documents, plan_run,
};

fn plan(metrics_yaml: &str) -> RunPlan {
    let doc = format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: t}}\nspec:\n{metrics_yaml}"
    );
    let docs = parse_analysis_documents(&doc).expect("template parses");
    let AnalysisDocument::Template(template) = &docs[0] else {
        panic!("not a template")
    };
    plan_run(&[&template.spec], &[], &PodHashes::default()).expect("plan")
}

fn metric(name: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    successCondition: result[0] >= 0.95\n    provider: {{prometheus: {{address: 'http://127.0.0.1:1', query: up}}}}\n{extra}"
    )
}

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("time")
}

fn at(seconds: u64) -> Timestamp {
    t0() + Duration::from_secs(seconds)
}

fn m(phase: AnalysisPhase, seconds: u64) -> Measurement {
    Measurement {
        phase,
        started_at: Some(Time(at(seconds))),
        finished_at: Some(Time(at(seconds))),
        value: "[0.9]".into(),
        ..Measurement::default()
    }
}

/// Feeds `phases` to metric `name`, one per `step` seconds, starting at t0.
fn feed(
    plan: &RunPlan,
    name: &str,
    phases: &[AnalysisPhase],
    step: u64,
) -> (AnalysisRunStatus, Option<Timestamp>) {
    let mut status = AnalysisRunStatus::default();
    let mut next = None;
    for (i, phase) in phases.iter().enumerate() {
        let now = at(step * i as u64);
        let advanced = advance(
            plan,
            &status,
            vec![(name.to_string(), m(*phase, step * i as u64))],
            false,
            now,
        );
        status = advanced.status;
        next = advanced.next_at;
    }
    (status, next)
}

#[test]
fn one_successful_measurement_completes_the_run() {
    let plan = plan(&format!("  metrics:\n{}", metric("rate", "")));
    assert_eq!(
        due(&plan, &AnalysisRunStatus::default(), false, t0()),
        vec![0]
    );
    let (status, next) = feed(&plan, "rate", &[Successful], 1);
    assert_eq!(status.phase, Successful);
    assert_eq!(status.metric_results[0].phase, Successful);
    assert_eq!(status.metric_results[0].count, 1);
    assert_eq!(status.run_summary.successful, 1);
    assert!(status.completed_at.is_some());
    assert_eq!(next, None);
    assert!(due(&plan, &status, false, at(100)).is_empty());
}

#[test]
fn one_failure_fails_with_the_default_failure_limit_of_zero() {
    let plan = plan(&format!("  metrics:\n{}", metric("rate", "")));
    let (status, _) = feed(&plan, "rate", &[Failed], 1);
    assert_eq!(status.phase, Failed);
    assert_eq!(
        status.message,
        "Metric \"rate\" assessed Failed due to failed (1) > failureLimit (0)"
    );
}

#[test]
fn failure_limit_allows_that_many_failures() {
    let plan = plan(&format!(
        "  metrics:\n{}",
        metric(
            "rate",
            "    interval: 30s\n    count: 5\n    failureLimit: 2\n"
        )
    ));
    let (status, next) = feed(&plan, "rate", &[Failed, Failed], 30);
    assert_eq!(status.phase, Running);
    assert_eq!(status.metric_results[0].failed, 2);
    assert_eq!(next, Some(at(60)));
    let (status, _) = feed(&plan, "rate", &[Failed, Failed, Failed], 30);
    assert_eq!(status.phase, Failed);
    // Failures within the limit, count reached: Successful.
    let (status, _) = feed(
        &plan,
        "rate",
        &[Failed, Successful, Failed, Successful, Successful],
        30,
    );
    assert_eq!(status.phase, Successful);
}

#[test]
fn inconclusive_past_its_limit() {
    let plan = plan(
        "  metrics:\n  - name: rate\n    successCondition: result[0] >= 0.95\n    failureCondition: result[0] < 0.5\n    interval: 10s\n    count: 3\n    inconclusiveLimit: 1\n    provider: {prometheus: {address: 'http://x', query: up}}\n",
    );
    let (status, _) = feed(&plan, "rate", &[Inconclusive], 10);
    assert_eq!(status.phase, Running);
    let (status, _) = feed(&plan, "rate", &[Inconclusive, Inconclusive], 10);
    assert_eq!(status.phase, Inconclusive);
    assert!(
        status
            .message
            .contains("inconclusive (2) > inconclusiveLimit (1)"),
        "{}",
        status.message
    );
}

#[test]
fn consecutive_errors_past_the_default_limit_of_four() {
    let plan = plan(&format!(
        "  metrics:\n{}",
        metric("rate", "    interval: 30s\n")
    ));
    let (status, next) = feed(&plan, "rate", &[Error, Error, Error, Error], 10);
    assert_eq!(status.phase, Running);
    assert_eq!(status.metric_results[0].consecutive_error, 4);
    // After an error the next try is 10 s later, not the 30 s interval.
    assert_eq!(next, Some(at(40)));
    let (status, _) = feed(&plan, "rate", &[Error, Error, Error, Error, Error], 10);
    assert_eq!(status.phase, Error);
    assert!(
        status
            .message
            .contains("consecutiveErrors (5) > consecutiveErrorLimit (4)")
    );
    // A good measurement in between resets the streak.
    let (status, _) = feed(
        &plan,
        "rate",
        &[Error, Error, Error, Successful, Error, Error],
        10,
    );
    assert_eq!(status.phase, Running);
    assert_eq!(status.metric_results[0].error, 5);
    assert_eq!(status.metric_results[0].consecutive_error, 2);
}

#[test]
fn consecutive_error_limit_zero_fails_on_the_first_error() {
    let plan = plan(&format!(
        "  metrics:\n{}",
        metric("rate", "    consecutiveErrorLimit: 0\n")
    ));
    let (status, _) = feed(&plan, "rate", &[Error], 1);
    assert_eq!(status.phase, Error);
}

#[test]
fn count_and_interval_schedule_measurements() {
    let plan = plan(&format!(
        "  metrics:\n{}",
        metric("rate", "    interval: 30s\n    count: 3\n")
    ));
    let (status, next) = feed(&plan, "rate", &[Successful], 30);
    assert_eq!(status.phase, Running);
    assert_eq!(next, Some(at(30)));
    assert!(due(&plan, &status, false, at(29)).is_empty());
    assert_eq!(due(&plan, &status, false, at(30)), vec![0]);
    let (status, next) = feed(&plan, "rate", &[Successful, Successful, Successful], 30);
    assert_eq!(status.phase, Successful);
    assert_eq!(status.metric_results[0].count, 3);
    assert_eq!(next, None);
}

#[test]
fn interval_without_count_runs_until_terminated() {
    let plan = plan(&format!(
        "  metrics:\n{}",
        metric("rate", "    interval: 10s\n")
    ));
    let (status, _) = feed(&plan, "rate", &[Successful; 20], 10);
    assert_eq!(status.phase, Running);
    let terminated = advance(&plan, &status, vec![], true, at(300));
    assert_eq!(terminated.status.phase, Successful);
    assert_eq!(terminated.status.message, "Run Terminated");
    assert!(due(&plan, &status, true, at(300)).is_empty());
}

#[test]
fn terminated_before_any_measurement_is_successful() {
    let plan = plan(&format!(
        "  metrics:\n{}",
        metric("rate", "    interval: 10s\n")
    ));
    let advanced = advance(&plan, &AnalysisRunStatus::default(), vec![], true, t0());
    assert_eq!(advanced.status.phase, Successful);
}

#[test]
fn initial_delay_waits_from_the_run_start() {
    let plan = plan(&format!(
        "  metrics:\n{}",
        metric("rate", "    initialDelay: 1m\n")
    ));
    let started = advance(&plan, &AnalysisRunStatus::default(), vec![], false, t0());
    assert_eq!(started.status.phase, Running);
    assert_eq!(started.next_at, Some(at(60)));
    assert!(due(&plan, &started.status, false, at(59)).is_empty());
    assert_eq!(due(&plan, &started.status, false, at(60)), vec![0]);
}

#[test]
fn dry_run_metrics_never_fail_the_run() {
    let plan = plan(&format!(
        "  dryRun: [{{metricName: latency}}]\n  metrics:\n{}{}",
        metric("rate", ""),
        metric("latency", "")
    ));
    let advanced = advance(
        &plan,
        &AnalysisRunStatus::default(),
        vec![
            ("rate".into(), m(Successful, 0)),
            ("latency".into(), m(Failed, 0)),
        ],
        false,
        t0(),
    );
    let status = advanced.status;
    assert_eq!(status.phase, Successful);
    let latency = status
        .metric_results
        .iter()
        .find(|r| r.name == "latency")
        .expect("latency");
    assert_eq!(latency.phase, Failed);
    assert!(latency.dry_run);
    assert_eq!(status.dry_run_summary.as_ref().map(|s| s.failed), Some(1));
    assert_eq!(status.run_summary.successful, 1);
}

#[test]
fn measurement_retention_keeps_the_latest() {
    let plan = plan(&format!(
        "  measurementRetention: [{{metricName: rate, limit: 2}}]\n  metrics:\n{}{}",
        metric("rate", "    interval: 10s\n"),
        metric("other", "    interval: 10s\n")
    ));
    let mut status = AnalysisRunStatus::default();
    for i in 0..12u64 {
        let now = at(10 * i);
        status = advance(
            &plan,
            &status,
            vec![
                ("rate".into(), m(Successful, 10 * i)),
                ("other".into(), m(Successful, 10 * i)),
            ],
            false,
            now,
        )
        .status;
    }
    let rate = &status.metric_results[0];
    assert_eq!(rate.measurements.len(), 2);
    assert_eq!(rate.measurements[1].finished_at, Some(Time(at(110))));
    assert_eq!(rate.count, 12);
    assert_eq!(
        status.metric_results[1].measurements.len(),
        10,
        "Argo's default history"
    );
}

#[test]
fn consecutive_success_limit_ends_the_metric_early() {
    let plan = plan(&format!(
        "  metrics:\n{}",
        metric(
            "rate",
            "    interval: 10s\n    count: 10\n    consecutiveSuccessLimit: 2\n    failureLimit: 3\n"
        )
    ));
    let (status, _) = feed(&plan, "rate", &[Failed, Successful, Successful], 10);
    assert_eq!(status.phase, Successful);
}

#[test]
fn a_failed_metric_stops_the_others_at_once() {
    let plan = plan(&format!(
        "  metrics:\n{}{}",
        metric("rate", ""),
        metric("background", "    interval: 10s\n")
    ));
    let advanced = advance(
        &plan,
        &AnalysisRunStatus::default(),
        vec![
            ("rate".into(), m(Failed, 0)),
            ("background".into(), m(Successful, 0)),
        ],
        false,
        t0(),
    );
    assert_eq!(advanced.status.phase, Failed);
    assert_eq!(advanced.next_at, None);
    assert!(due(&plan, &advanced.status, false, at(10)).is_empty());
}

#[test]
fn the_run_waits_for_every_metric_and_takes_the_worst() {
    let plan = plan(&format!(
        "  metrics:\n{}{}",
        metric("a", ""),
        metric("b", "    initialDelay: 30s\n")
    ));
    let first = advance(
        &plan,
        &AnalysisRunStatus::default(),
        vec![("a".into(), m(Successful, 0))],
        false,
        t0(),
    );
    assert_eq!(first.status.phase, Running);
    assert_eq!(first.next_at, Some(at(30)));
    let second = advance(
        &plan,
        &first.status,
        vec![("b".into(), m(Failed, 30))],
        false,
        at(30),
    );
    assert_eq!(second.status.phase, Failed);
    assert!(
        second.status.message.contains("Metric \"b\""),
        "{}",
        second.status.message
    );
}

#[test]
fn a_completed_run_does_not_change() {
    let plan = plan(&format!("  metrics:\n{}", metric("rate", "")));
    let (status, _) = feed(&plan, "rate", &[Failed], 1);
    let again = advance(
        &plan,
        &status,
        vec![("rate".into(), m(Successful, 5))],
        false,
        at(5),
    );
    assert_eq!(again.status, status);
}
