//! The measurement state machine, pure: (plan, previous status, new measurements, now) → new
//! status and the time of the next measurement. A port of Argo's analysis controller
//! (`analysis/analysis.go`: `generateMetricTasks`, `runMeasurements`' bookkeeping,
//! `assessRunStatus`, `assessMetricStatus`, `calculateNextReconcileTime`,
//! `garbageCollectMeasurements`) without its I/O.
//!
//! ```text
//!  due(plan, status, now) ──► metrics to measure now ──► providers (I/O) ──► measurements
//!  advance(plan, status, measurements, terminate, now) ──► Advanced { status, next_at }
//! ```

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    plan::{ERROR_RETRY_INTERVAL, PlannedMetric, RunPlan},
    resource::{AnalysisPhase, AnalysisRunStatus, Measurement, MetricResult, RunSummary},
};

/// The result of [`advance`].
#[derive(Clone, Debug, PartialEq)]
pub struct Advanced {
    pub status: AnalysisRunStatus,
    /// When a measurement is next due; `None` when the run is complete or waits on nothing.
    pub next_at: Option<Timestamp>,
}

fn after(start: Timestamp, duration: Duration) -> Timestamp {
    k8s_openapi::jiff::SignedDuration::try_from(duration)
        .ok()
        .and_then(|d| start.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn result<'a>(status: &'a AnalysisRunStatus, name: &str) -> Option<&'a MetricResult> {
    status.metric_results.iter().find(|r| r.name == name)
}

/// Argo's `IsTerminating`: asked to stop, or a metric (not dry-run) ended Failed, Error or
/// Inconclusive.
pub fn is_terminating(status: &AnalysisRunStatus, terminate: bool) -> bool {
    terminate
        || status.metric_results.iter().any(|r| {
            !r.dry_run
                && matches!(
                    r.phase,
                    AnalysisPhase::Failed | AnalysisPhase::Error | AnalysisPhase::Inconclusive
                )
        })
}

/// The metrics (indices into `plan.metrics`) to measure now (Argo's `generateMetricTasks`).
/// None once the run is complete or terminating.
pub fn due(
    plan: &RunPlan,
    status: &AnalysisRunStatus,
    terminate: bool,
    now: Timestamp,
) -> Vec<usize> {
    if status.phase.completed() || is_terminating(status, terminate) {
        return Vec::new();
    }
    let started = status.started_at.as_ref().map_or(now, |t| t.0);
    let mut tasks = Vec::new();
    for (index, metric) in plan.metrics.iter().enumerate() {
        let previous = result(status, metric.name());
        if previous.is_some_and(|r| r.phase.completed()) {
            continue;
        }
        let last = previous.and_then(|r| r.measurements.last());
        let Some(last) = last else {
            if let Some(delay) = metric.initial_delay
                && after(started, delay) > now
            {
                continue;
            }
            tasks.push(index);
            continue;
        };
        if let (Some(count), Some(r)) = (metric.effective_count, previous)
            && r.count >= count
        {
            continue;
        }
        let interval = if last.phase == AnalysisPhase::Error {
            ERROR_RETRY_INTERVAL
        } else {
            metric.interval.unwrap_or(ERROR_RETRY_INTERVAL)
        };
        let finished = last.finished_at.as_ref().map_or(now, |t| t.0);
        // Argo: strictly after `finishedAt + interval`; `>=` here so a timer set to that exact
        // instant does not wait one more round.
        if now >= after(finished, interval) {
            tasks.push(index);
        }
    }
    tasks
}

/// Records `measurements` (metric name, completed measurement) and assesses the run. A complete
/// run is returned unchanged. `terminate` is the run's `spec.terminate`.
pub fn advance(
    plan: &RunPlan,
    previous: &AnalysisRunStatus,
    measurements: Vec<(String, Measurement)>,
    terminate: bool,
    now: Timestamp,
) -> Advanced {
    if previous.phase.completed() {
        return Advanced {
            status: previous.clone(),
            next_at: None,
        };
    }
    let mut status = previous.clone();
    for (name, measurement) in measurements {
        record(plan, &mut status, &name, measurement, now);
    }
    if status.started_at.is_none() {
        status.started_at = Some(Time(now));
    }
    let mut terminating = is_terminating(&status, terminate);
    let (mut phase, mut message) = assess(plan, &mut status, terminating, terminate);
    // Argo re-reconciles at once after a metric fails (the status update is an event): the other
    // metrics then end as terminated in the same pass here.
    if !phase.completed() && !terminating && is_terminating(&status, terminate) {
        terminating = true;
        (phase, message) = assess(plan, &mut status, terminating, terminate);
    }
    if phase != status.phase {
        status.phase = phase;
        status.message = message;
        if phase.completed() && status.completed_at.is_none() {
            status.completed_at = Some(Time(now));
        }
    }
    for result in &mut status.metric_results {
        let limit = plan
            .metrics
            .iter()
            .find(|m| m.name() == result.name)
            .map_or(crate::plan::DEFAULT_MEASUREMENT_HISTORY_LIMIT, |m| {
                m.retention
            });
        let excess = result.measurements.len().saturating_sub(limit);
        result.measurements.drain(..excess);
    }
    let next_at = if status.phase.completed() {
        None
    } else {
        next_measurement(plan, &status, now)
    };
    Advanced { status, next_at }
}

/// `runMeasurements`' bookkeeping for one completed measurement.
fn record(
    plan: &RunPlan,
    status: &mut AnalysisRunStatus,
    name: &str,
    mut measurement: Measurement,
    now: Timestamp,
) {
    let dry_run = plan.metrics.iter().any(|m| m.name() == name && m.dry_run);
    let index = match status.metric_results.iter().position(|r| r.name == name) {
        Some(i) => i,
        None => {
            status.metric_results.push(MetricResult {
                name: name.to_string(),
                phase: AnalysisPhase::Running,
                dry_run,
                ..MetricResult::default()
            });
            status.metric_results.len() - 1
        }
    };
    let r = &mut status.metric_results[index];
    if measurement.phase.completed() && measurement.finished_at.is_none() {
        measurement.finished_at = Some(Time(now));
    }
    let inc = |n: &mut i32| *n = n.saturating_add(1);
    match measurement.phase {
        AnalysisPhase::Successful => {
            inc(&mut r.successful);
            inc(&mut r.count);
            r.consecutive_error = 0;
            inc(&mut r.consecutive_success);
        }
        AnalysisPhase::Failed | AnalysisPhase::Inconclusive => {
            if measurement.phase == AnalysisPhase::Failed {
                inc(&mut r.failed);
            } else {
                inc(&mut r.inconclusive);
            }
            inc(&mut r.count);
            r.consecutive_error = 0;
            r.consecutive_success = 0;
        }
        AnalysisPhase::Error => {
            inc(&mut r.error);
            inc(&mut r.consecutive_error);
            r.consecutive_success = 0;
        }
        AnalysisPhase::Pending | AnalysisPhase::Running => {}
    }
    r.measurements.push(measurement);
}

/// Argo's `assessRunStatus`: updates each metric's phase and the summaries; returns the run's
/// phase and message.
fn assess(
    plan: &RunPlan,
    status: &mut AnalysisRunStatus,
    terminating: bool,
    terminate: bool,
) -> (AnalysisPhase, String) {
    let mut worst: Option<AnalysisPhase> = None;
    let mut worst_message = if terminate {
        "Run Terminated".to_string()
    } else {
        String::new()
    };
    let mut everything_completed = true;
    let mut summary = RunSummary::default();
    let mut dry_summary = RunSummary::default();
    for metric in &plan.metrics {
        let target = if metric.dry_run {
            &mut dry_summary
        } else {
            &mut summary
        };
        target.count = target.count.saturating_add(1);
        let Some(r) = status
            .metric_results
            .iter_mut()
            .find(|r| r.name == metric.name())
        else {
            everything_completed = false;
            continue;
        };
        let phase = metric_phase(metric, r, terminating);
        if r.phase != phase {
            if let Some(last) = r.measurements.last() {
                r.message.clone_from(&last.message);
            }
            r.phase = phase;
        }
        if !phase.completed() {
            everything_completed = false;
            continue;
        }
        let (limit_phase, limit_message) = limits_reached(metric, r);
        let target = if metric.dry_run {
            &mut dry_summary
        } else {
            &mut summary
        };
        let counter = match limit_phase {
            Some(AnalysisPhase::Error) => &mut target.error,
            Some(AnalysisPhase::Failed) => &mut target.failed,
            Some(AnalysisPhase::Inconclusive) => &mut target.inconclusive,
            _ => &mut target.successful,
        };
        *counter = counter.saturating_add(1);
        if metric.dry_run {
            worst.get_or_insert(AnalysisPhase::Successful);
            if !limit_message.is_empty() {
                r.message = format!("Metric assessed {phase} due to {limit_message}");
            }
        } else if worst.is_none_or(|w| phase.badness() > w.badness()) {
            worst = Some(phase);
            if !limit_message.is_empty() {
                worst_message = format!(
                    "Metric \"{}\" assessed {phase} due to {limit_message}",
                    metric.name()
                );
                if !r.message.is_empty() {
                    worst_message.push_str(&format!(": \"Error Message: {}\"", r.message));
                }
            }
        }
    }
    status.run_summary = summary;
    status.dry_run_summary = Some(dry_summary);
    let worst_message = worst_message.trim().to_string();
    if terminating {
        return (worst.unwrap_or(AnalysisPhase::Successful), worst_message);
    }
    match worst {
        Some(worst) if everything_completed => (worst, worst_message),
        _ => (AnalysisPhase::Running, String::new()),
    }
}

/// Argo's `assessMetricStatus`.
fn metric_phase(metric: &PlannedMetric, r: &MetricResult, terminating: bool) -> AnalysisPhase {
    if r.phase.completed() {
        return r.phase;
    }
    let Some(last) = r.measurements.last() else {
        return if terminating {
            AnalysisPhase::Successful
        } else {
            AnalysisPhase::Pending
        };
    };
    if !last.phase.completed() {
        return AnalysisPhase::Running;
    }
    if let (Some(phase), _) = limits_reached(metric, r) {
        return phase;
    }
    if metric.consecutive_success_limit > 0
        && r.consecutive_success >= metric.consecutive_success_limit
    {
        return AnalysisPhase::Successful;
    }
    if let Some(count) = metric.effective_count
        && r.count >= count
    {
        let failure_applicable = metric.failure_limit >= 0;
        let success_applicable = metric.consecutive_success_limit > 0;
        return match (failure_applicable, success_applicable) {
            (true, true) => AnalysisPhase::Inconclusive,
            (false, true) => AnalysisPhase::Failed,
            _ => AnalysisPhase::Successful,
        };
    }
    if terminating {
        AnalysisPhase::Successful
    } else {
        AnalysisPhase::Running
    }
}

/// Argo's `assessMetricFailureInconclusiveOrError`: the limit a metric went past, if any (the last
/// checked wins, as in Argo: Error over Inconclusive over Failed), and why.
fn limits_reached(metric: &PlannedMetric, r: &MetricResult) -> (Option<AnalysisPhase>, String) {
    let mut phase = None;
    let mut message = String::new();
    if metric.failure_limit >= 0 && r.failed > metric.failure_limit {
        phase = Some(AnalysisPhase::Failed);
        message = format!(
            "failed ({}) > failureLimit ({})",
            r.failed, metric.failure_limit
        );
    }
    if r.inconclusive > metric.inconclusive_limit {
        phase = Some(AnalysisPhase::Inconclusive);
        message = format!(
            "inconclusive ({}) > inconclusiveLimit ({})",
            r.inconclusive, metric.inconclusive_limit
        );
    }
    if r.consecutive_error > metric.consecutive_error_limit {
        phase = Some(AnalysisPhase::Error);
        message = format!(
            "consecutiveErrors ({}) > consecutiveErrorLimit ({})",
            r.consecutive_error, metric.consecutive_error_limit
        );
    }
    (phase, message)
}

/// Argo's `calculateNextReconcileTime`: the earliest time a metric is due.
fn next_measurement(
    plan: &RunPlan,
    status: &AnalysisRunStatus,
    now: Timestamp,
) -> Option<Timestamp> {
    let started = status.started_at.as_ref().map_or(now, |t| t.0);
    let mut next: Option<Timestamp> = None;
    let mut earliest = |t: Timestamp| {
        if next.is_none_or(|n| t < n) {
            next = Some(t);
        }
    };
    for metric in &plan.metrics {
        let r = result(status, metric.name());
        if r.is_some_and(|r| r.phase.completed()) {
            continue;
        }
        let Some(last) = r.and_then(|r| r.measurements.last()) else {
            // Not measured yet: due at the end of its initial delay (or now).
            earliest(metric.initial_delay.map_or(now, |d| after(started, d)));
            continue;
        };
        let Some(finished) = &last.finished_at else {
            continue;
        };
        if let (Some(count), Some(r)) = (metric.effective_count, r)
            && r.count >= count
        {
            continue;
        }
        let interval = if last.phase == AnalysisPhase::Error {
            ERROR_RETRY_INTERVAL
        } else if let Some(interval) = metric.interval {
            interval
        } else {
            continue;
        };
        earliest(after(finished.0, interval));
    }
    next
}
