//! Argo's status conditions (Progressing, Available, Paused, Completed, InvalidSpec) and phases.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use sluice_api::resource::{PauseCondition, RolloutCondition};

pub const PHASE_PROGRESSING: &str = "Progressing";
pub const PHASE_PAUSED: &str = "Paused";
pub const PHASE_HEALTHY: &str = "Healthy";
pub const PHASE_DEGRADED: &str = "Degraded";

pub const PROGRESSING: &str = "Progressing";
pub const AVAILABLE: &str = "Available";
pub const PAUSED: &str = "Paused";
pub const COMPLETED: &str = "Completed";
pub const INVALID_SPEC: &str = "InvalidSpec";

/// Argo's pause reason for a `pause` step.
pub const CANARY_PAUSE_STEP: &str = "CanaryPauseStep";
/// Argo's reason for a Progressing condition whose deadline passed.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// Sets condition `type_`; `lastTransitionTime` moves only when `status` changes, and
/// `lastUpdateTime` only when anything does unless `touch` (progress was made). Returns whether
/// the status changed (a transition).
pub(crate) fn set(
    conditions: &mut Vec<RolloutCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
    touch: bool,
) -> bool {
    let existing = conditions.iter_mut().find(|c| c.type_ == type_);
    let transition = existing.as_ref().is_none_or(|c| c.status != status);
    let changed = transition
        || existing.as_ref().is_some_and(|c| {
            c.reason.as_deref() != Some(reason) || c.message.as_deref() != Some(message)
        });
    let previous = existing
        .as_ref()
        .map(|c| (c.last_transition_time.clone(), c.last_update_time.clone()));
    let (transition_time, update_time) = match previous {
        Some((t, u)) if !transition => (t, if changed || touch { Some(Time(now)) } else { u }),
        _ => (Some(Time(now)), Some(Time(now))),
    };
    let condition = RolloutCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_update_time: update_time,
        last_transition_time: transition_time,
    };
    match existing {
        Some(slot) => *slot = condition,
        None => conditions.push(condition),
    }
    transition
}

pub(crate) fn get<'a>(
    conditions: &'a [RolloutCondition],
    type_: &str,
) -> Option<&'a RolloutCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub(crate) fn remove(conditions: &mut Vec<RolloutCondition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

pub(crate) fn pause_started(pauses: &[PauseCondition], reason: &str) -> Option<Timestamp> {
    pauses
        .iter()
        .find(|p| p.reason == reason)
        .map(|p| p.start_time.0)
}
