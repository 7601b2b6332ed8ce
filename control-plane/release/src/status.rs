//! The end of a pass: Argo's status counts, conditions, phase and message, the progress deadline
//! and the data-plane gate's verdict.

use sluice_api::{
    Rollout,
    resource::{CanaryStatus, TrafficWeights, WeightDestination},
};

use crate::{
    Observed,
    conditions::{
        self, AVAILABLE, COMPLETED, PAUSED, PHASE_DEGRADED, PHASE_HEALTHY, PHASE_PAUSED,
        PHASE_PROGRESSING, PROGRESS_DEADLINE_EXCEEDED, PROGRESSING,
    },
    engine::Cx,
    observed::{AckSummary, ObservedVersion},
    spec::Plan,
    time::{after, until},
};

#[allow(clippy::too_many_arguments)]
pub(crate) fn finish(
    cx: &mut Cx,
    rollout: &Rollout,
    plan: &Plan<'_>,
    current: &str,
    stable: &str,
    versions: &[&ObservedVersion],
    waiting_on_pods: bool,
    ack: &AckSummary,
    observed: &Observed,
) {
    let old = rollout.status.clone().unwrap_or_default();
    let sum = |f: fn(&ObservedVersion) -> i32| {
        versions
            .iter()
            .fold(0i32, |acc, v| acc.saturating_add(f(v)))
    };
    let find = |h: &str| versions.iter().find(|v| v.hash == h);
    let status = &mut cx.status;
    status.replicas = Some(sum(|v| v.desired));
    status.updated_replicas = Some(find(current).map_or(0, |v| v.desired));
    status.ready_replicas = Some(sum(|v| v.ready));
    status.available_replicas = Some(sum(|v| v.available));
    let revision = find(current).and_then(|v| v.revision).unwrap_or_else(|| {
        versions
            .iter()
            .filter_map(|v| v.revision)
            .max()
            .unwrap_or(0)
            + 1
    });
    let rs_name = format!("{}-{current}", plan.name);

    let progressed = old.current_pod_hash != status.current_pod_hash
        || old.current_step_index != status.current_step_index
        || old.updated_replicas != status.updated_replicas
        || old.ready_replicas != status.ready_replicas
        || old.available_replicas != status.available_replicas
        || cx.actions.iter().any(|a| {
            matches!(
                a,
                crate::Action::CreateReplicaSet(_) | crate::Action::ScaleReplicaSet { .. }
            )
        });
    let paused = rollout.spec.paused || !status.pause_conditions.is_empty();
    let aborted = status.abort && current != stable;
    let exceeded = progress_deadline(
        cx,
        plan,
        &rs_name,
        waiting_on_pods,
        progressed,
        paused,
        aborted,
    );

    // The data-plane gate's verdict.
    let data_plane = cx.status.data_plane.get_or_insert_with(Default::default);
    // Some(time left before the ACK deadline), None once it has passed.
    let ack_time_left = data_plane
        .published_at
        .as_ref()
        .map(|t| until(cx.now, after(t.0, observed.data_plane.ack_deadline)));
    let dp_problem = if let Some((node, detail)) = &ack.nack {
        Some(format!(
            "DataPlaneNack: proxy {node:?} rejected traffic generation {}: {detail}",
            data_plane.generation
        ))
    } else if !ack.complete() {
        match ack_time_left {
            Some(None) => Some(format!(
                "DataPlaneLag: proxies {:?} have not acknowledged traffic generation {} within {} s",
                ack.waiting,
                data_plane.generation,
                observed.data_plane.ack_deadline.as_secs()
            )),
            Some(Some(left)) => {
                cx.requeue_after = Some(cx.requeue_after.map_or(left, |r| r.min(left)));
                None
            }
            None => None,
        }
    } else {
        None
    };
    let generation = data_plane.generation;
    if dp_problem.is_some() && data_plane.message != dp_problem {
        let message = dp_problem.clone().unwrap_or_default();
        cx.event(true, "DataPlaneDegraded", message);
    }
    if let Some(dp) = cx.status.data_plane.as_mut() {
        dp.message = dp_problem.clone();
    }

    let status = &mut cx.status;
    let stable_available = find(stable).map_or(0, |v| v.available);
    let (phase, message) = if aborted {
        (
            PHASE_DEGRADED,
            Some(
                match crate::analysis::abort_reason(observed, &plan.name, current) {
                    Some(reason) => format!(
                        "RolloutAborted: Rollout aborted update to revision {revision}: {reason}"
                    ),
                    None => {
                        format!("RolloutAborted: Rollout aborted update to revision {revision}")
                    }
                },
            ),
        )
    } else if exceeded {
        (
            PHASE_DEGRADED,
            Some(format!(
                "{PROGRESS_DEADLINE_EXCEEDED}: ReplicaSet {rs_name:?} has timed out progressing."
            )),
        )
    } else if let Some(problem) = dp_problem {
        (PHASE_DEGRADED, Some(problem))
    } else if rollout.spec.paused {
        (PHASE_PAUSED, Some("manually paused".to_owned()))
    } else if let Some(pause) = status.pause_conditions.first() {
        // Argo's message is the pause's reason: CanaryPauseStep, BlueGreenPause, ...
        (PHASE_PAUSED, Some(pause.reason.clone()))
    } else if waiting_on_pods {
        (
            PHASE_PROGRESSING,
            Some("updated replicas are still becoming available".to_owned()),
        )
    } else if !ack.complete() {
        (
            PHASE_PROGRESSING,
            Some(format!(
                "waiting for {} of {} proxies to acknowledge traffic generation {generation}",
                ack.waiting.len(),
                ack.proxies
            )),
        )
    } else if current != stable {
        // Argo's messages (rolloututil.go): blue/green waits for the switch, then for the
        // post-promotion analysis; a canary for its steps.
        let active = data_plane_active(status);
        let waiting = match &plan.blue_green {
            Some(_) if active != Some(current) => "active service cutover pending",
            Some(_) => "waiting for analysis to complete",
            None => "waiting for all steps to complete",
        };
        (PHASE_PROGRESSING, Some(waiting.to_owned()))
    } else {
        (PHASE_HEALTHY, None)
    };
    status.phase = Some(phase.to_owned());
    status.message = message;

    let now = cx.now;
    let conds = &mut status.conditions;
    if paused {
        let reason = match status.pause_conditions.first() {
            _ if rollout.spec.paused => "RolloutPaused",
            Some(pause) => pause.reason.as_str(),
            None => crate::conditions::CANARY_PAUSE_STEP,
        };
        conditions::set(
            conds,
            PAUSED,
            "True",
            reason,
            "Rollout is paused",
            now,
            false,
        );
    } else if conditions::get(conds, PAUSED).is_some() {
        conditions::set(
            conds,
            PAUSED,
            "False",
            "RolloutResumed",
            "Rollout is resumed",
            now,
            false,
        );
    }
    if stable_available >= plan.replicas {
        conditions::set(
            conds,
            AVAILABLE,
            "True",
            "AvailableReason",
            "Rollout has minimum availability",
            now,
            false,
        );
    } else {
        conditions::set(
            conds,
            AVAILABLE,
            "False",
            "AvailableReason",
            "Rollout does not have minimum availability",
            now,
            false,
        );
    }
    if phase == PHASE_HEALTHY {
        if conditions::set(
            conds,
            COMPLETED,
            "True",
            "RolloutCompleted",
            &format!("Rollout completed update to revision {revision}"),
            now,
            false,
        ) {
            cx.event(
                false,
                "RolloutCompleted",
                format!("Rollout completed update to revision {revision} ({current})"),
            );
        }
    } else {
        conditions::set(
            conds,
            COMPLETED,
            "False",
            "RolloutCompleted",
            "Rollout not completed",
            now,
            false,
        );
    }

    let traffic = &cx
        .status
        .data_plane
        .as_ref()
        .map(|d| d.traffic.clone())
        .unwrap_or_default();
    let canary_hash = traffic
        .canary
        .clone()
        .unwrap_or_else(|| traffic.stable.clone());
    // Stable gets what the canary and the experiment's templates leave.
    let others = traffic
        .additional
        .iter()
        .fold(traffic.canary_weight, |sum, w| sum.saturating_add(w.weight));
    cx.status.canary = Some(CanaryStatus {
        weights: Some(TrafficWeights {
            canary: WeightDestination {
                pod_template_hash: Some(canary_hash),
                service_name: None,
                weight: traffic.canary_weight,
            },
            stable: Some(WeightDestination {
                pod_template_hash: Some(traffic.stable.clone()),
                service_name: None,
                weight: 100i32.saturating_sub(others).max(0),
            }),
            additional: traffic.additional.clone(),
        }),
        current_experiment: None,
    });
}

/// Argo's progress deadline on the Progressing condition: `lastUpdateTime` moves with progress; a
/// rollout waiting for pods with no progress for `progressDeadlineSeconds` is
/// `ProgressDeadlineExceeded` (and aborted with `progressDeadlineAbort`). Paused time does not
/// count. Returns whether the deadline is exceeded.
fn progress_deadline(
    cx: &mut Cx,
    plan: &Plan<'_>,
    rs_name: &str,
    waiting: bool,
    progressed: bool,
    paused: bool,
    aborted: bool,
) -> bool {
    let now = cx.now;
    let conds = &mut cx.status.conditions;
    if aborted {
        conditions::set(
            conds,
            PROGRESSING,
            "False",
            "RolloutAborted",
            "Rollout is aborted",
            now,
            false,
        );
        return false;
    }
    if paused {
        conditions::set(
            conds,
            PROGRESSING,
            "Unknown",
            "RolloutPaused",
            "Rollout is paused",
            now,
            // Argo's SetRolloutCondition leaves an identical condition alone: a pause is not
            // progress, and a clock-only change would be written on every reconcile.
            false,
        );
        return false;
    }
    if !waiting {
        conditions::set(
            conds,
            PROGRESSING,
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet {rs_name:?} has successfully progressed."),
            now,
            false,
        );
        return false;
    }
    let current = conditions::get(conds, PROGRESSING);
    let already = current.is_some_and(|c| c.reason.as_deref() == Some(PROGRESS_DEADLINE_EXCEEDED));
    let since = current
        .filter(|c| c.status == "True" && c.reason.as_deref() == Some("ReplicaSetUpdated"))
        .and_then(|c| c.last_update_time.as_ref())
        .map(|t| t.0);
    if progressed || (since.is_none() && !already) {
        conditions::set(
            conds,
            PROGRESSING,
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet {rs_name:?} is progressing."),
            now,
            true,
        );
        cx.requeue(plan.progress_deadline);
        return false;
    }
    if already {
        return true;
    }
    let deadline = after(since.unwrap_or(now), plan.progress_deadline);
    if let Some(left) = until(now, deadline) {
        cx.requeue(left);
        return false;
    }
    let message = format!("ReplicaSet {rs_name:?} has timed out progressing.");
    conditions::set(
        conds,
        PROGRESSING,
        "False",
        PROGRESS_DEADLINE_EXCEEDED,
        &message,
        now,
        false,
    );
    cx.event(true, PROGRESS_DEADLINE_EXCEEDED, message);
    if plan.progress_deadline_abort
        && cx.status.current_pod_hash != cx.status.stable_rs
        && !cx.status.abort
    {
        cx.status.abort = true;
        cx.status.aborted_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        cx.event(
            true,
            "RolloutAborted",
            "Rollout aborted: progressDeadlineAbort".into(),
        );
        cx.requeue(std::time::Duration::ZERO);
    }
    true
}

/// The version the active hosts route to, as published.
fn data_plane_active(status: &sluice_api::RolloutStatus) -> Option<&str> {
    status
        .data_plane
        .as_ref()
        .map(|d| d.traffic.stable.as_str())
}
