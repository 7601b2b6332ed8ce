//! The step engine for `sluice.dev` Rollouts: current status + live versions + now → next status.
//!
//! Pure. Argo's meaning throughout:
//! - stable = `status.stableRS`; on the first rollout (none yet) the oldest live hash becomes
//!   stable;
//! - canary = the newest live hash (by its newest pod's creation time) that is not stable; a new
//!   canary (or a replaced one) starts again at step 0;
//! - steps advance in order: `setWeight`, `setHeaderRoute`, `setMirrorRoute` take effect when
//!   reached (derivation reads them from the spec) and the engine moves on; a `pause` with a
//!   duration holds until it has elapsed (its start is the `Paused` condition's
//!   `lastTransitionTime`, as Argo keeps it in `pauseConditions[].startTime`); a `pause` without
//!   one holds until resumed by hand;
//! - after the last step the canary becomes stable (`stableRS = currentPodHash`), phase Healthy.
//!
//! The engine writes `currentStepIndex` as the index of the step it holds at (the number of
//! steps when all are done) and `canary.weights` as derivation computes them, so `kubectl get`
//! shows the weight: like Argo, in units of `trafficRouting.maxTrafficWeight` (default 100),
//! stable = maxTrafficWeight − canary. Pause durations are read as Argo reads them (whole
//! seconds; `"10"` is 10 s). Numbers from the spec are checked: a weight outside
//! 0..=maxTrafficWeight is an error naming its step.

use std::time::Duration;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use sluice_api::{
    Rollout, RolloutStatus, WeightScale,
    resource::{CanaryStatus, CanaryStep, RolloutCondition, TrafficWeights, WeightDestination},
    weight::MAX_TRAFFIC_WEIGHT_FIELD,
};

use crate::index::LiveHash;

pub const PHASE_PROGRESSING: &str = "Progressing";
pub const PHASE_PAUSED: &str = "Paused";
pub const PHASE_HEALTHY: &str = "Healthy";
pub const PHASE_DEGRADED: &str = "Degraded";
pub const CONDITION_PAUSED: &str = "Paused";
pub const CONDITION_INVALID_SPEC: &str = "InvalidSpec";

/// The engine's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub status: RolloutStatus,
    /// When a timed pause ends: reconcile again after this long.
    pub requeue_after: Option<Duration>,
    /// The canary in progress (`currentPodHash`, not stable) has no live pods and no newer
    /// version replaced it: its pods may be starting, restarting or not listed yet, so the
    /// engine cannot tell whether it is gone. Keep the status as it is — never reset a canary
    /// to stable (Healthy) because its pods are missing.
    pub hold: bool,
}

/// Computes the next status. `Err` names a field the engine cannot run with (a bad
/// `maxTrafficWeight`, a `setWeight` outside 0..=maxTrafficWeight, a pause with a bad duration) as
/// `(field, problem)`.
pub fn next_status(
    doc: &Rollout,
    live: &[LiveHash],
    now: Timestamp,
) -> Result<Step, (String, String)> {
    let steps: &[CanaryStep] = doc
        .spec
        .strategy
        .canary
        .as_ref()
        .map(|c| c.steps.as_slice())
        .unwrap_or_default();
    let scale = WeightScale::of(&doc.spec).map_err(|p| (MAX_TRAFFIC_WEIGHT_FIELD.to_owned(), p))?;
    let mut status = doc.status.clone().unwrap_or_default();
    status.observed_generation = doc.metadata.generation.map(|g| g.to_string());
    let done = i32::try_from(steps.len()).unwrap_or(i32::MAX);

    let mut by_age: Vec<&LiveHash> = live.iter().collect();
    by_age.sort_by(|a, b| (a.newest_pod, &a.hash).cmp(&(b.newest_pod, &b.hash)));
    let stable = match status.stable_rs.as_deref().filter(|h| !h.is_empty()) {
        Some(stable) => stable.to_owned(),
        None => match by_age.first() {
            Some(oldest) => oldest.hash.clone(),
            None => {
                status.phase = Some(PHASE_PROGRESSING.into());
                status.message = Some("waiting for pods selected by spec.selector".into());
                return Ok(Step {
                    status,
                    requeue_after: None,
                    hold: false,
                });
            }
        },
    };
    status.stable_rs = Some(stable.clone());

    let Some(canary) = by_age
        .iter()
        .rev()
        .find(|h| h.hash != stable)
        .map(|h| h.hash.clone())
    else {
        let in_progress = status
            .current_pod_hash
            .as_deref()
            .is_some_and(|h| !h.is_empty() && h != stable);
        if in_progress {
            return Ok(Step {
                status: doc.status.clone().unwrap_or_default(),
                requeue_after: None,
                hold: true,
            });
        }
        settle(&mut status, &stable, done, scale);
        return Ok(Step {
            status,
            requeue_after: None,
            hold: false,
        });
    };
    if status.current_pod_hash.as_deref() != Some(canary.as_str()) {
        status.current_pod_hash = Some(canary.clone());
        status.current_step_index = Some(0);
        remove_condition(&mut status.conditions, CONDITION_PAUSED);
    }

    let mut index = status.current_step_index.unwrap_or(0).clamp(0, done);
    let mut requeue_after = None;
    loop {
        let Some(step) = usize::try_from(index).ok().and_then(|i| steps.get(i)) else {
            // Every step done: promote.
            settle(&mut status, &canary, done, scale);
            return Ok(Step {
                status,
                requeue_after: None,
                hold: false,
            });
        };
        if let Some(pause) = &step.pause {
            let field = format!("spec.strategy.canary.steps[{index}].pause.duration");
            let duration = pause
                .duration_seconds()
                .map_err(|problem| (field, problem))?;
            let start = set_condition(
                &mut status.conditions,
                CONDITION_PAUSED,
                "CanaryPauseStep",
                &format!("paused at step {index}"),
                now,
            );
            match duration {
                None => break,
                Some(seconds) => {
                    // The start comes from the status: a time so late that the end is past
                    // jiff's range holds the pause, as a far end would.
                    let end = start.checked_add(SignedDuration::from_secs(i64::from(seconds)));
                    let left = end.map_or(SignedDuration::MAX, |end| end.duration_since(now));
                    if left.is_positive() {
                        requeue_after = Some(left.unsigned_abs());
                        break;
                    }
                }
            }
            remove_condition(&mut status.conditions, CONDITION_PAUSED);
        }
        index += 1;
    }
    status.current_step_index = Some(index);
    status.phase = Some(PHASE_PAUSED.into());
    status.message = Some(match requeue_after {
        Some(_) => format!("canary {canary}: paused at step {index}"),
        None => format!("canary {canary}: paused at step {index} until resumed"),
    });
    let (canary_weight, stable_weight) = weight_at(steps, index, scale)?;
    status.canary = Some(weights(&stable, &canary, canary_weight, stable_weight));
    Ok(Step {
        status,
        requeue_after,
        hold: false,
    })
}

/// No canary in progress: everything on `hash`, which is stable.
fn settle(status: &mut RolloutStatus, hash: &str, done: i32, scale: WeightScale) {
    status.stable_rs = Some(hash.to_owned());
    status.current_pod_hash = Some(hash.to_owned());
    status.current_step_index = Some(done);
    status.phase = Some(PHASE_HEALTHY.into());
    status.message = None;
    status.canary = Some(weights(hash, hash, 0, scale.max()));
    remove_condition(&mut status.conditions, CONDITION_PAUSED);
}

/// The weight of the last `setWeight` at or before the step in progress (as derivation reads
/// it) and stable's (maxTrafficWeight − it), in units of maxTrafficWeight. Every `setWeight` is
/// checked, reached or not.
fn weight_at(
    steps: &[CanaryStep],
    index: i32,
    scale: WeightScale,
) -> Result<(i32, i32), (String, String)> {
    for (i, step) in steps.iter().enumerate() {
        if let Some(weight) = step.set_weight {
            scale
                .check(weight)
                .map_err(|p| (format!("spec.strategy.canary.steps[{i}].setWeight"), p))?;
        }
    }
    let reached = usize::try_from(index).map_or(0, |i| i.saturating_add(1).min(steps.len()));
    let last = steps[..reached]
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, s)| s.set_weight.map(|w| (i, w)));
    let Some((i, canary)) = last else {
        return Ok((0, scale.max()));
    };
    let stable = scale
        .stable_weight(canary)
        .map_err(|p| (format!("spec.strategy.canary.steps[{i}].setWeight"), p))?;
    Ok((canary, stable))
}

/// Argo's `status.canary.weights`, in units of maxTrafficWeight.
fn weights(stable: &str, canary: &str, canary_weight: i32, stable_weight: i32) -> CanaryStatus {
    CanaryStatus {
        weights: Some(TrafficWeights {
            canary: WeightDestination {
                pod_template_hash: Some(canary.to_owned()),
                service_name: None,
                weight: canary_weight,
            },
            stable: Some(WeightDestination {
                pod_template_hash: Some(stable.to_owned()),
                service_name: None,
                weight: stable_weight,
            }),
            additional: Vec::new(),
        }),
        current_experiment: None,
    }
}

/// Marks the status as failing: phase Degraded and an `InvalidSpec` condition with `message`.
pub fn mark_invalid(status: &mut RolloutStatus, message: &str, now: Timestamp) {
    status.phase = Some(PHASE_DEGRADED.into());
    status.message = Some(message.to_owned());
    set_condition(
        &mut status.conditions,
        CONDITION_INVALID_SPEC,
        "InvalidSpec",
        message,
        now,
    );
}

pub fn clear_invalid(status: &mut RolloutStatus) {
    remove_condition(&mut status.conditions, CONDITION_INVALID_SPEC);
}

/// Sets a True condition of `type_`; keeps its `lastTransitionTime` if it was already True (so
/// a pause keeps its start). Returns that time.
fn set_condition(
    conditions: &mut Vec<RolloutCondition>,
    type_: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Timestamp {
    let existing = conditions.iter_mut().find(|c| c.type_ == type_);
    let since = existing
        .as_ref()
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map_or(now, |t| t.0);
    let condition = RolloutCondition {
        type_: type_.to_owned(),
        status: "True".into(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_update_time: None,
        last_transition_time: Some(Time(since)),
    };
    match existing {
        Some(slot) => *slot = condition,
        None => conditions.push(condition),
    }
    since
}

fn remove_condition(conditions: &mut Vec<RolloutCondition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

#[cfg(test)]
#[path = "steps_tests.rs"]
mod tests;
