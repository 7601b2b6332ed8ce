//! One pass of the standalone release engine over one rollout: pure (the driver in `mod.rs` does
//! the I/O). The versions are the `spec.staticEndpoints` entries; the engine's actions are applied
//! to the rollout's [`RolloutRecord`]; commands change the record as Argo's plugin changes the
//! Rollout.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use sluice_api::{Rollout, RolloutStatus, bluegreen::BlueGreenStatus};
use sluice_release::{
    Action, DataPlane, Observed, ObservedVersion, ProxyAck, Reconciled, reconcile,
};
use tracing::{info, warn};

use super::state::{
    AnalysisRunRecord, CommandRecord, EventRecord, KEPT_COMMANDS, KEPT_EVENTS, KEPT_RUNS,
    RolloutRecord, VersionRecord, push_bounded,
};

/// Passes run at most per trigger while the engine asks to run again at once.
const MAX_PASSES: usize = 16;

/// A command of `sluice rollouts`, as Argo's plugin means it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Leave the current pause (and the user's pause); `full` skips the remaining steps.
    Promote { full: bool },
    /// All traffic back to stable.
    Abort,
    /// Clear an abort: the steps start again.
    Retry,
    /// Hold the rollout (`spec.paused`) until promoted.
    Pause,
}

impl Command {
    pub fn describe(self) -> &'static str {
        match self {
            Command::Promote { full: false } => "promote",
            Command::Promote { full: true } => "promote --full",
            Command::Abort => "abort",
            Command::Retry => "retry",
            Command::Pause => "pause",
        }
    }
}

/// Applies a command to the record (the next pass acts on it) and logs it in the record.
pub fn apply_command(record: &mut RolloutRecord, command: Command, now: Timestamp) {
    let status = record.status.get_or_insert_with(RolloutStatus::default);
    match command {
        // Argo: promote unpauses the spec and clears the pause conditions; --full sets
        // status.promoteFull.
        Command::Promote { full } => {
            record.paused = false;
            // Argo's plugin: with nothing paused, promote moves to the next step; here only
            // past an experiment (one without duration or required analysis runs until then).
            let in_experiment = status
                .canary
                .as_ref()
                .is_some_and(|c| c.current_experiment.is_some());
            if !full && status.pause_conditions.is_empty() && in_experiment {
                status.current_step_index = status.current_step_index.map(|i| i.saturating_add(1));
            }
            status.pause_conditions.clear();
            if full {
                status.promote_full = true;
            }
        }
        Command::Abort => status.abort = true,
        // Argo's retry measures again: the runs that failed are not the answer any more.
        Command::Retry => {
            status.abort = false;
            record.analysis_runs.retain(|r| {
                !matches!(
                    r.status.phase,
                    sluice_analysis::AnalysisPhase::Failed
                        | sluice_analysis::AnalysisPhase::Error
                        | sluice_analysis::AnalysisPhase::Inconclusive
                )
            });
        }
        Command::Pause => record.paused = true,
    }
    push_bounded(
        &mut record.commands,
        CommandRecord {
            at: Time(now),
            command: command.describe().to_owned(),
        },
        KEPT_COMMANDS,
    );
}

/// The rollout as the engine reads it: the file's spec, the record's status and the user's pause.
pub fn engine_rollout(doc: &Rollout, record: &RolloutRecord) -> Rollout {
    let mut rollout = doc.clone();
    rollout.status = record.status.clone();
    rollout.spec.paused |= record.paused;
    rollout
}

/// What the engine observes: each recorded version with as many available replicas as its static
/// endpoints (none when scaled to 0), and the proxies' acknowledgements.
pub fn observed(doc: &Rollout, record: &RolloutRecord, proxies: Vec<ProxyAck>) -> Observed {
    let versions = record
        .versions
        .iter()
        .map(|v| {
            let endpoints = doc
                .spec
                .static_endpoints
                .get(&v.hash)
                .map_or(0, |e| i32::try_from(e.len()).unwrap_or(i32::MAX));
            let available = if v.desired > 0 { endpoints } else { 0 };
            ObservedVersion {
                name: v.name.clone(),
                hash: v.hash.clone(),
                revision: v.revision,
                controlled: true,
                desired: v.desired,
                ready: available,
                available,
                scale_down_deadline: v.scale_down_deadline.as_ref().map(|t| t.0),
                experiment: v.experiment.clone(),
                // Static endpoints: no pod template (experiment templates name their version).
                template: None,
            }
        })
        .collect();
    Observed {
        versions,
        data_plane: DataPlane {
            proxies,
            ..DataPlane::default()
        },
        workload: None,
        analysis_runs: record
            .analysis_runs
            .iter()
            .map(|r| sluice_release::ObservedAnalysisRun {
                name: r.name.clone(),
                canary_hash: r.canary_hash.clone(),
                step_index: r.step_index,
                status: r.status.clone(),
            })
            .collect(),
        // Static endpoints: no pods (a restart finishes at once).
        pods: Vec::new(),
    }
}

/// Runs the engine on one rollout until it needs nothing at once (at most [`MAX_PASSES`]),
/// applying its actions to `record`. Returns when to run again.
pub fn run(
    name: &str,
    doc: &Rollout,
    record: &mut RolloutRecord,
    proxies: &[ProxyAck],
    now: Timestamp,
) -> Option<Duration> {
    let mut requeue = None;
    for _ in 0..MAX_PASSES {
        let out = reconcile(
            &engine_rollout(doc, record),
            &observed(doc, record, proxies.to_vec()),
            now,
        );
        let again = apply(name, &engine_rollout(doc, record), record, &out, now);
        requeue = out.requeue_after;
        if !again {
            break;
        }
    }
    requeue
}

/// Applies one pass's status and actions; true when another pass is due at once.
fn apply(
    name: &str,
    rollout: &Rollout,
    record: &mut RolloutRecord,
    out: &Reconciled,
    now: Timestamp,
) -> bool {
    record.status = Some(out.status.clone());
    let mut changed = false;
    for action in &out.actions {
        match action {
            Action::CreateReplicaSet(rs) => {
                let v = ObservedVersion::from_replica_set(rs, "");
                record.versions.push(VersionRecord {
                    name: v.name,
                    hash: v.hash,
                    revision: v.revision,
                    desired: rs.spec.replicas.unwrap_or(0),
                    scale_down_deadline: None,
                    experiment: v.experiment,
                });
                changed = true;
            }
            Action::ScaleReplicaSet { name: rs, replicas } => {
                if let Some(v) = record.versions.iter_mut().find(|v| v.name == *rs) {
                    v.desired = *replicas;
                    changed = true;
                }
            }
            Action::SetRevision { name: rs, revision } => {
                if let Some(v) = record.versions.iter_mut().find(|v| v.name == *rs) {
                    v.revision = Some(*revision);
                    changed = true;
                }
            }
            Action::SetScaleDownDeadline { name: rs, deadline } => {
                if let Some(v) = record.versions.iter_mut().find(|v| v.name == *rs) {
                    v.scale_down_deadline = deadline.map(Time);
                    changed = true;
                }
            }
            Action::DeleteReplicaSet { name: rs } => {
                record.versions.retain(|v| v.name != *rs);
                changed = true;
            }
            // Static endpoints have no pods to re-create: the engine observes none, so a
            // restart finishes at once and never evicts.
            Action::EvictPod { name: pod } => {
                warn!(
                    rollout = name,
                    pod, "a pod eviction has no meaning in standalone mode"
                );
            }
            // The driver publishes the status's dataPlane.traffic after the passes.
            Action::PublishTraffic {
                generation,
                traffic,
            } => {
                info!(rollout = name, generation, ?traffic, "traffic published");
            }
            // The driver (mod.rs) runs it: planned from the file's templates, measured by the
            // runner, its status kept in the record.
            Action::StartAnalysisRun {
                name: run,
                canary_hash,
                stable_hash,
                step_index,
                background,
                templates,
                args,
                options,
            } => {
                if !record.analysis_runs.iter().any(|r| r.name == *run) {
                    // `valueFrom.fieldRef` is read from the Rollout now, as Argo does when it
                    // creates the run; a path that does not resolve ends the run as Error.
                    let mut status = sluice_analysis::AnalysisRunStatus::default();
                    let args = sluice_analysis::resolve_field_refs(args, rollout).unwrap_or_else(
                        |error| {
                            let at = Time(now);
                            status.phase = sluice_analysis::AnalysisPhase::Error;
                            status.message = error.to_string();
                            status.started_at = Some(at.clone());
                            status.completed_at = Some(at);
                            args.clone()
                        },
                    );
                    record.analysis_runs.push(AnalysisRunRecord {
                        name: run.clone(),
                        canary_hash: canary_hash.clone(),
                        stable_hash: stable_hash.clone(),
                        step_index: *step_index,
                        background: *background,
                        templates: templates.clone(),
                        args,
                        dry_run: options.dry_run.clone(),
                        measurement_retention: options.measurement_retention.clone(),
                        terminate: false,
                        status,
                    });
                    forget_old_runs(&mut record.analysis_runs);
                    changed = true;
                }
            }
            Action::TerminateAnalysisRun { name: run } => {
                if let Some(r) = record.analysis_runs.iter_mut().find(|r| r.name == *run) {
                    r.terminate = true;
                }
            }
            Action::DeleteAnalysisRun { name: run } => {
                let before = record.analysis_runs.len();
                record.analysis_runs.retain(|r| r.name != *run);
                changed |= record.analysis_runs.len() != before;
            }
            // Standalone rollouts have no workloadRef (the engine rejects one beside spec.version).
            Action::ScaleDeployment { .. } => {}
            // The state file's status.experiment is the record: no Experiment object.
            Action::SyncExperiment { .. } => {}
            Action::Event {
                warning,
                reason,
                message,
            } => {
                if *warning {
                    warn!(rollout = name, reason, "{message}");
                } else {
                    info!(rollout = name, reason, "{message}");
                }
                push_bounded(
                    &mut record.events,
                    EventRecord {
                        at: Time(now),
                        warning: *warning,
                        reason: reason.clone(),
                        message: message.clone(),
                    },
                    KEPT_EVENTS,
                );
            }
        }
    }
    changed || out.requeue_after == Some(Duration::ZERO)
}

/// Keeps every running run and the newest [`KEPT_RUNS`] completed ones.
fn forget_old_runs(runs: &mut Vec<AnalysisRunRecord>) {
    let completed = runs.iter().filter(|r| r.status.phase.completed()).count();
    let mut excess = completed.saturating_sub(KEPT_RUNS);
    runs.retain(|r| {
        if excess > 0 && r.status.phase.completed() {
            excess -= 1;
            return false;
        }
        true
    });
}

/// The status the traffic derivation reads for a rollout run by the engine: where the published
/// traffic stands (stable, canary and weight), with the engine's step for the header routes.
pub fn traffic_status(doc: &Rollout, record: &RolloutRecord) -> RolloutStatus {
    let engine = record.status.clone().unwrap_or_default();
    let Some(data_plane) = engine
        .data_plane
        .as_ref()
        .filter(|d| !d.traffic.stable.is_empty())
    else {
        // Nothing published yet: everything on the version the file names.
        return RolloutStatus {
            stable_rs: doc.spec.version.clone(),
            ..RolloutStatus::default()
        };
    };
    let traffic = &data_plane.traffic;
    RolloutStatus {
        stable_rs: Some(traffic.stable.clone()),
        current_pod_hash: Some(
            traffic
                .canary
                .clone()
                .unwrap_or_else(|| traffic.stable.clone()),
        ),
        current_step_index: engine.current_step_index,
        canary: with_published_additional(engine.canary.clone(), traffic),
        // Blue/green: the preview hosts route to the published preview.
        blue_green: traffic.preview.as_ref().map(|preview| BlueGreenStatus {
            active_selector: Some(traffic.stable.clone()),
            preview_selector: Some(preview.clone()),
            ..BlueGreenStatus::default()
        }),
        ..RolloutStatus::default()
    }
}

/// Experiments: the versions beside stable and canary are served with the weights the engine
/// published (`dataPlane.traffic.additional`), which derivation reads from
/// `status.canary.weights.additional`.
fn with_published_additional(
    canary: Option<sluice_api::resource::CanaryStatus>,
    traffic: &sluice_api::resource::PublishedTraffic,
) -> Option<sluice_api::resource::CanaryStatus> {
    use sluice_api::resource::{TrafficWeights, WeightDestination};
    if traffic.additional.is_empty() {
        return canary;
    }
    let mut canary = canary.unwrap_or_default();
    let weights = canary.weights.get_or_insert_with(|| TrafficWeights {
        canary: WeightDestination {
            pod_template_hash: traffic.canary.clone(),
            service_name: None,
            weight: traffic.canary_weight,
        },
        ..TrafficWeights::default()
    });
    weights.additional = traffic.additional.clone();
    Some(canary)
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
