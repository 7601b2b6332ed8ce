//! The canary's steps: where the rollout stands at a step index, and the loop that takes the steps
//! whose work is done (pods available, traffic acknowledged, pause over).

use std::time::Duration;

use sluice_api::resource::{PauseCondition, PublishedTraffic, SetHeaderRoute, SetMirrorRoute};

use crate::{
    conditions::{CANARY_PAUSE_STEP, pause_started},
    engine::Cx,
    spec::{CanaryScale, Plan, Step, replicas_for_weight},
    time::{after, until},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What the steps up to and including `index` set: Argo reads the weight of the last `setWeight`
/// reached, the scale of the last `setCanaryScale`, and the routes set (and not removed) so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct AtStep {
    pub weight: i32,
    pub scale: Option<CanaryScale>,
    pub header_routes: Vec<SetHeaderRoute>,
    pub mirror_routes: Vec<SetMirrorRoute>,
}

pub(crate) fn at_step(steps: &[Step], index: usize) -> AtStep {
    let mut at = AtStep::default();
    for step in steps.iter().take(index.saturating_add(1)) {
        match step.set_canary_scale {
            Some(CanaryScale::MatchTrafficWeight) => at.scale = None,
            Some(scale) => at.scale = Some(scale),
            None => {}
        }
        // A route step with only a name removes the route of that name.
        if let Some(route) = &step.set_header_route {
            at.header_routes.retain(|r| r.name != route.name);
            if !route.matches.is_empty() {
                at.header_routes.push(route.clone());
            }
        }
        if let Some(route) = &step.set_mirror_route {
            at.mirror_routes.retain(|r| r.name != route.name);
            if !route.matches.is_empty() {
                at.mirror_routes.push(route.clone());
            }
        }
        if let Some(weight) = step.set_weight {
            at.weight = weight;
        }
    }
    at
}

/// The canary's replicas at a step: the weight's share (rounded up) unless `setCanaryScale` says
/// otherwise; all of them once every step is done.
pub(crate) fn canary_replicas(plan: &Plan<'_>, at: &AtStep, all_done: bool) -> i32 {
    if all_done {
        return plan.replicas;
    }
    match at.scale {
        Some(CanaryScale::Replicas(r)) => r,
        Some(CanaryScale::Weight(w)) => replicas_for_weight(plan.replicas, w),
        Some(CanaryScale::MatchTrafficWeight) | None => {
            replicas_for_weight(plan.replicas, at.weight)
        }
    }
}

/// The traffic for a canary at a step. The weight moves to the step's only when the canary's
/// available pods can take it (all its replicas for the step are available); until then the
/// weight already published stays, and a canary without available pods gets no traffic at all.
pub(crate) fn traffic(
    stable: &str,
    canary: &str,
    at: &AtStep,
    canary_ready: bool,
    canary_available: i32,
    published: &PublishedTraffic,
) -> PublishedTraffic {
    let weight = if canary_available <= 0 {
        0
    } else if canary_ready {
        at.weight
    } else if published.canary.as_deref() == Some(canary) && published.stable == stable {
        published.canary_weight.min(at.weight)
    } else {
        0
    };
    let routed = canary_available > 0;
    PublishedTraffic {
        stable: stable.to_owned(),
        canary: Some(canary.to_owned()),
        canary_weight: weight,
        additional: Vec::new(),
        header_routes: if routed {
            at.header_routes.clone()
        } else {
            Vec::new()
        },
        mirror_routes: if routed {
            at.mirror_routes.clone()
        } else {
            Vec::new()
        },
        preview: None,
    }
}

/// The outcome of the step loop.
#[derive(Debug)]
pub(crate) struct Progress {
    pub index: usize,
    /// Every step done and the canary fully available: promote it.
    pub promote: bool,
}

/// Takes the steps whose work is done, from `index`. `ready(at, all_done)` says whether the
/// canary's pods can carry the step; `traffic_done(at, index)` whether the step's traffic is
/// published and acknowledged by every proxy; `experiment_done(cx, index)` runs an experiment
/// step and says whether it is done.
#[allow(clippy::too_many_arguments)]
pub(crate) fn take_steps(
    cx: &mut Cx,
    plan: &Plan<'_>,
    observed: &crate::Observed,
    (stable, canary): (&str, &str),
    mut index: usize,
    paused: bool,
    ready: impl Fn(&AtStep, bool) -> bool,
    traffic_done: impl Fn(&AtStep, usize) -> bool,
    mut experiment_done: impl FnMut(&mut Cx, usize) -> bool,
) -> Progress {
    loop {
        let at = at_step(&plan.steps, index);
        let Some(step) = plan.steps.get(index) else {
            return Progress {
                index,
                promote: !paused && ready(&at, true),
            };
        };
        if paused {
            return Progress {
                index,
                promote: false,
            };
        }
        // The step's pods and traffic first (a step may scale and route beside its weight or
        // pause), then its pause.
        let changes_traffic = step.set_weight.is_some()
            || step.set_header_route.is_some()
            || step.set_mirror_route.is_some();
        let done = ready(&at, false)
            && (!changes_traffic || traffic_done(&at, index))
            && (step.experiment.is_none() || experiment_done(cx, index))
            && step.analysis.as_ref().is_none_or(|analysis| {
                analysis_done(
                    cx,
                    plan,
                    observed,
                    (stable, canary),
                    crate::analysis::RunKind::Step(index),
                    analysis,
                )
            })
            && step
                .pause
                .is_none_or(|duration| pause_done(cx, index, duration));
        if !done {
            return Progress {
                index,
                promote: false,
            };
        }
        cx.event(
            false,
            "RolloutStepCompleted",
            format!(
                "Rollout step {} of {} completed",
                index + 1,
                plan.steps.len()
            ),
        );
        index += 1;
    }
}

/// Argo's pause: the first visit adds a `CanaryPauseStep` pause condition and sets
/// `controllerPause`; a timed pause ends when its time has elapsed; a pause whose condition a
/// user removed (`promote`) while `controllerPause` is still set is done.
fn pause_done(cx: &mut Cx, index: usize, duration: Option<Duration>) -> bool {
    let status = &mut cx.status;
    let Some(start) = pause_started(&status.pause_conditions, CANARY_PAUSE_STEP) else {
        if status.controller_pause {
            // Promoted by a user.
            status.controller_pause = false;
            return true;
        }
        status.pause_conditions.push(PauseCondition {
            reason: CANARY_PAUSE_STEP.into(),
            start_time: Time(cx.now),
        });
        status.controller_pause = true;
        cx.event(
            false,
            "RolloutPaused",
            format!("Rollout is paused at step {index} (CanaryPauseStep)"),
        );
        return pause_elapsed(cx, cx.now, duration);
    };
    pause_elapsed(cx, start, duration)
}

fn pause_elapsed(
    cx: &mut Cx,
    start: k8s_openapi::jiff::Timestamp,
    duration: Option<Duration>,
) -> bool {
    let Some(duration) = duration else {
        return false;
    };
    let end = after(start, duration);
    match until(cx.now, end) {
        Some(left) => {
            cx.requeue(left);
            false
        }
        None => {
            cx.status
                .pause_conditions
                .retain(|p| p.reason != CANARY_PAUSE_STEP);
            cx.status.controller_pause = false;
            cx.event(
                false,
                "RolloutResumed",
                "Rollout is resumed: the pause elapsed".to_owned(),
            );
            true
        }
    }
}

/// An analysis run (a step's or the background one): done when Successful; a failed run aborts
/// the rollout.
pub(crate) fn analysis_done(
    cx: &mut Cx,
    plan: &Plan<'_>,
    observed: &crate::Observed,
    (stable, canary): (&str, &str),
    kind: crate::analysis::RunKind,
    analysis: &sluice_api::resource::AnalysisRef,
) -> bool {
    use crate::analysis::StepAnalysis;
    match crate::analysis::step(cx, observed, &plan.name, stable, canary, kind, analysis) {
        StepAnalysis::Done => true,
        StepAnalysis::Wait | StepAnalysis::Paused => false,
        StepAnalysis::Abort(reason) => {
            cx.status.abort = true;
            cx.status.aborted_at = Some(Time(cx.now));
            cx.event(true, "RolloutAborted", format!("Rollout aborted: {reason}"));
            cx.requeue(Duration::ZERO);
            false
        }
    }
}
