//! `reconcile`: one pass of the release engine.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use sluice_api::{
    Rollout, RolloutStatus,
    resource::{DataPlaneStatus, PublishedTraffic},
};

use crate::{
    Action, Observed, bluegreen,
    canary::{self, at_step},
    conditions::{self, INVALID_SPEC, PHASE_DEGRADED},
    experiment,
    hash::pod_template_hash,
    observed::ObservedVersion,
    restart,
    spec::{self, Invalid, Plan, WorkloadScaleDown},
    status, versions,
};

/// The engine's answer: the status to write, the actions to execute, and when to run it again
/// (besides when anything observed changes).
#[derive(Clone, Debug, PartialEq)]
pub struct Reconciled {
    pub status: RolloutStatus,
    pub actions: Vec<Action>,
    pub requeue_after: Option<Duration>,
}

/// The pass in progress.
#[derive(Debug)]
pub(crate) struct Cx {
    pub status: RolloutStatus,
    pub actions: Vec<Action>,
    pub requeue_after: Option<Duration>,
    pub now: Timestamp,
}

impl Cx {
    pub fn event(&mut self, warning: bool, reason: &str, message: String) {
        self.actions.push(Action::Event {
            warning,
            reason: reason.to_owned(),
            message,
        });
    }

    /// Run again within `after` (the earliest of all requests wins).
    pub fn requeue(&mut self, after: Duration) {
        self.requeue_after = Some(self.requeue_after.map_or(after, |r| r.min(after)));
    }
}

/// One pass: the rollout (spec, metadata and its last status), what is observed, and the time →
/// the next status, the actions and when to look again. Pure and deterministic; never fails: a
/// spec it cannot run becomes an `InvalidSpec` condition naming the field (phase Degraded).
pub fn reconcile(rollout: &Rollout, observed: &Observed, now: Timestamp) -> Reconciled {
    let mut cx = Cx {
        status: rollout.status.clone().unwrap_or_default(),
        actions: Vec::new(),
        requeue_after: None,
        now,
    };
    cx.status.observed_generation = rollout.metadata.generation.map(|g| g.to_string());
    match spec::plan(rollout, observed).and_then(|plan| run(&mut cx, rollout, &plan, observed)) {
        Ok(()) => conditions::remove(&mut cx.status.conditions, INVALID_SPEC),
        Err(invalid) => mark_invalid(&mut cx, &invalid),
    }
    Reconciled {
        status: cx.status,
        actions: cx.actions,
        requeue_after: cx.requeue_after,
    }
}

fn mark_invalid(cx: &mut Cx, invalid: &Invalid) {
    let message = format!("InvalidSpec: {invalid}");
    if conditions::set(
        &mut cx.status.conditions,
        INVALID_SPEC,
        "True",
        INVALID_SPEC,
        &invalid.to_string(),
        cx.now,
        false,
    ) || cx.status.message.as_deref() != Some(&message)
    {
        cx.event(true, INVALID_SPEC, message.clone());
    }
    cx.status.phase = Some(PHASE_DEGRADED.into());
    cx.status.message = Some(message);
}

fn run(
    cx: &mut Cx,
    rollout: &Rollout,
    plan: &Plan<'_>,
    observed: &Observed,
) -> Result<(), Invalid> {
    cx.status.selector = Some(plan.selector_string.clone());
    let experiment_before = cx.status.experiment.clone();
    let hash = match plan.named {
        Some(version) => version.to_owned(),
        None => pod_template_hash(plan.template, cx.status.collision_count).map_err(|problem| {
            Invalid {
                field: "spec.template".into(),
                problem,
            }
        })?,
    };
    let rs_name = format!("{}-{hash}", plan.name);
    if observed
        .versions
        .iter()
        .any(|v| v.name == rs_name && !v.controlled)
    {
        // Kubernetes' answer to a hash collision: hash again with a bumped count.
        let count = cx
            .status
            .collision_count
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(Invalid {
                field: "status.collisionCount".into(),
                problem: "overflows".into(),
            })?;
        cx.status.collision_count = Some(count);
        cx.event(true, "HashCollision", format!("ReplicaSet {rs_name:?} exists and is not controlled by this rollout: collisionCount is now {count}"));
        cx.requeue(Duration::ZERO);
        return Ok(());
    }
    // An experiment's ReplicaSets are no revisions of the rollout: `experiment` runs them.
    let versions: Vec<&ObservedVersion> = observed
        .versions
        .iter()
        .filter(|v| v.controlled && v.experiment.is_none())
        .collect();
    let experiment_versions: Vec<&ObservedVersion> = observed
        .versions
        .iter()
        .filter(|v| v.controlled && v.experiment.is_some())
        .collect();
    let mut running_experiment: Option<experiment::Current> = None;
    let find = |h: &str| versions.iter().copied().find(|v| v.hash == h);
    let max_revision = versions
        .iter()
        .filter_map(|v| v.revision)
        .max()
        .unwrap_or(0);
    let steps = plan.steps.len();

    // Stable: status.stableRS while its ReplicaSet exists; the first version becomes stable at
    // once, without steps (Argo's initial deploy).
    let stable = match cx
        .status
        .stable_rs
        .clone()
        .filter(|s| !s.is_empty() && (find(s).is_some() || *s == hash))
    {
        Some(stable) => stable,
        None => {
            cx.status.stable_rs = Some(hash.clone());
            cx.status.current_pod_hash = Some(hash.clone());
            cx.status.current_step_index = Some(index_i32(steps));
            cx.status.current_step_hash = Some(plan.steps_hash.clone());
            cx.event(
                false,
                "RolloutUpdated",
                format!("Initial deploy of revision {}: no steps", max_revision + 1),
            );
            hash.clone()
        }
    };
    // Blue/green promotion runs retry as their next attempt (bluegreen_analysis.rs).
    let retried = plan
        .blue_green
        .is_none()
        .then(|| retry(cx, observed, &hash, &stable))
        .flatten();
    let observed = retried.as_ref().unwrap_or(observed);
    let new_template = cx.status.current_pod_hash.as_deref() != Some(&hash);
    if new_template {
        new_version(cx, plan, &hash, &stable, &versions, max_revision);
    } else if hash != stable && cx.status.current_step_hash.as_deref() != Some(&plan.steps_hash) {
        // Argo: changed steps restart the canary.
        cx.status.current_step_hash = Some(plan.steps_hash.clone());
        cx.status.current_step_index = Some(0);
        cx.status.pause_conditions.clear();
        cx.status.controller_pause = false;
        cx.event(
            false,
            "RolloutUpdated",
            "Steps changed: the canary starts again at step 0".into(),
        );
    }

    let published = cx.status.data_plane.clone().unwrap_or_default();
    let ack = observed.data_plane.summary(published.generation);
    let traffic_done = |t: &PublishedTraffic| published.traffic == *t && ack.complete();
    let available = |h: &str| find(h).map_or(0, |v| v.available);

    let mut targets: BTreeMap<String, i32> = BTreeMap::new();
    let mut stable = stable;
    let desired_traffic;
    let mut waiting_on_pods = false;
    let canary = (hash != stable).then(|| hash.clone());
    let mut keep_canary = None;
    // The analysis runs the rollout waits on after this pass; others still running are stopped.
    let mut wanted_runs: Vec<String> = Vec::new();
    match canary {
        Some(canary) if cx.status.abort => {
            // Aborted: everything back on stable in one push; the canary's pods stay for
            // abortScaleDownDelaySeconds (0: for good).
            if cx.status.aborted_at.is_none() {
                cx.status.aborted_at = Some(Time(cx.now));
            }
            cx.status.current_step_index = Some(0);
            cx.status.pause_conditions.clear();
            cx.status.controller_pause = false;
            targets.insert(stable.clone(), plan.replicas);
            desired_traffic = PublishedTraffic {
                stable: stable.clone(),
                ..PublishedTraffic::default()
            };
            keep_canary = Some(canary);
        }
        Some(new) if plan.blue_green.is_some() => {
            let out = bluegreen::step(
                cx,
                &bluegreen::Input {
                    bg: &plan.blue_green.clone().unwrap_or_default(),
                    name: &plan.name,
                    replicas: plan.replicas,
                    active: &stable,
                    new: &new,
                    available: &available,
                    paused: rollout.spec.paused,
                    traffic_done: &traffic_done,
                    observed,
                },
            );
            (stable, desired_traffic, targets, waiting_on_pods) =
                (out.active, out.traffic, out.targets, out.waiting_on_pods);
            wanted_runs = out.wanted_runs;
        }
        Some(canary) => {
            let index = if cx.status.promote_full {
                steps
            } else {
                usize::try_from(cx.status.current_step_index.unwrap_or(0))
                    .unwrap_or(0)
                    .min(steps)
            };
            // An inconclusive background run holds the steps too (a step's holds its step).
            let paused = rollout.spec.paused
                || conditions::pause_started(
                    &cx.status.pause_conditions,
                    crate::INCONCLUSIVE_ANALYSIS_RUN,
                )
                .is_some();
            if let Some((background, start)) = &plan.background
                && !cx.status.abort
                && index >= *start
            {
                crate::analysis::replace_resumed_background(
                    cx,
                    observed,
                    &plan.name,
                    (&stable, &canary),
                    *start,
                    background,
                );
            }
            let canary_available = available(&canary);
            let ready = |at: &canary::AtStep, done: bool| {
                canary_available >= canary::canary_replicas(plan, at, done)
            };
            // The experiments of the steps from here on, resolved against this pass' versions.
            let mut experiments = BTreeMap::new();
            for (i, step) in plan.steps.iter().enumerate().skip(index) {
                if let Some(e) = &step.experiment {
                    experiments.insert(
                        i,
                        experiment::resolve(plan, i, e, (&stable, &canary), &versions)?,
                    );
                }
            }
            let experiment_status = cx.status.experiment.clone();
            let traffic_for = |at: &canary::AtStep, index: usize, done: bool| {
                let mut traffic = canary::traffic(
                    &stable,
                    &canary,
                    at,
                    ready(at, done),
                    canary_available,
                    &published.traffic,
                );
                if let Some(current) = experiments.get(&index).filter(|_| !done) {
                    traffic.additional = experiment::weights(
                        current,
                        experiment_status.as_ref(),
                        &experiment_versions,
                    );
                }
                traffic
            };
            let progress = canary::take_steps(
                cx,
                plan,
                observed,
                (&stable, &canary),
                index,
                paused,
                ready,
                |at, i| traffic_done(&traffic_for(at, i, false)),
                |cx, i| {
                    experiments.get(&i).is_some_and(|current| {
                        let weights_acked =
                            traffic_done(&traffic_for(&at_step(&plan.steps, i), i, false));
                        experiment::step(
                            cx,
                            observed,
                            current,
                            &experiment_versions,
                            (&stable, &canary),
                            weights_acked,
                        )
                    })
                },
            );
            if plan
                .steps
                .get(progress.index)
                .is_some_and(|s| s.analysis.is_some())
            {
                wanted_runs.push(crate::analysis::run_name(
                    &plan.name,
                    &canary,
                    progress.index,
                ));
            }
            if let Some((background, start)) = &plan.background
                && !progress.promote
                && !cx.status.abort
                && progress.index >= *start
            {
                wanted_runs.push(crate::analysis::current_background_run(
                    cx, observed, &plan.name, &canary,
                ));
                canary::analysis_done(
                    cx,
                    plan,
                    observed,
                    (&stable, &canary),
                    crate::analysis::RunKind::Background(*start),
                    background,
                );
            }
            // Argo: `controllerPause` is set only while a controller pause condition is; a
            // promote not consumed by a pause step this pass must not skip a later one.
            if cx.status.pause_conditions.is_empty() {
                cx.status.controller_pause = false;
            }
            cx.status.current_step_index = Some(index_i32(progress.index));
            if !progress.promote && !cx.status.abort {
                running_experiment = experiments
                    .get(&progress.index)
                    .filter(|c| experiment::still_running(c, cx.status.experiment.as_ref()))
                    .cloned();
            }
            if let Some(current) = &running_experiment {
                wanted_runs.extend(experiment::wanted_runs(current));
            }
            if progress.promote {
                cx.event(
                    false,
                    "RolloutPromoted",
                    format!("Promoted: {canary} is stable after {steps} steps"),
                );
                cx.status.stable_rs = Some(canary.clone());
                cx.status.promote_full = false;
                cx.status.pause_conditions.clear();
                cx.status.controller_pause = false;
                stable = canary;
                targets.insert(stable.clone(), plan.replicas);
                desired_traffic = PublishedTraffic {
                    stable: stable.clone(),
                    ..PublishedTraffic::default()
                };
                waiting_on_pods = available(&stable) < plan.replicas;
            } else {
                let all_done = progress.index >= steps;
                let at = at_step(&plan.steps, progress.index);
                desired_traffic = traffic_for(&at, progress.index, all_done);
                // A lower weight leaves the canary its pods until every proxy has the new one.
                let held = if published.traffic.canary.as_deref() != Some(&canary) {
                    0
                } else if ack.complete() {
                    published.traffic.canary_weight
                } else {
                    published
                        .traffic
                        .canary_weight
                        .max(published.held_canary_weight)
                };
                // (With setCanaryScale the user chose the canary's size.)
                let still_routed = match at.scale {
                    None => spec::replicas_for_weight(plan.replicas, held),
                    Some(_) => 0,
                };
                let canary_target = canary::canary_replicas(plan, &at, all_done).max(still_routed);
                targets.insert(stable.clone(), plan.replicas);
                targets.insert(canary.clone(), canary_target);
                waiting_on_pods = canary_available < canary_target
                    || available(&stable) < plan.replicas
                    || running_experiment
                        .as_ref()
                        .is_some_and(|c| experiment::waiting_on_pods(c, &experiment_versions));
            }
        }
        None => {
            cx.status.current_step_index = Some(index_i32(steps));
            cx.status.pause_conditions.clear();
            cx.status.controller_pause = false;
            cx.status.promote_full = false;
            cx.status.abort = false;
            cx.status.aborted_at = None;
            targets.insert(stable.clone(), plan.replicas);
            desired_traffic = PublishedTraffic {
                stable: stable.clone(),
                ..PublishedTraffic::default()
            };
            waiting_on_pods = available(&stable) < plan.replicas;
        }
    }
    crate::analysis::terminate_unwanted(cx, observed, &wanted_runs);
    if let Some(bg) = &plan.blue_green {
        bluegreen::revision_limit(bg, &versions, &mut targets);
        cx.status.blue_green = Some(bluegreen::full_status(
            &desired_traffic,
            cx.status.blue_green.as_ref(),
            observed,
            &plan.name,
            &hash,
        ));
    }
    let data_plane = publish(cx, published, desired_traffic, observed);
    let ack = observed.data_plane.summary(data_plane.generation);
    versions::scale(
        cx,
        rollout,
        plan,
        &hash,
        &versions,
        &mut targets,
        keep_canary.as_deref(),
        &data_plane,
        ack.complete(),
        max_revision,
    );
    experiment::scale(
        cx,
        rollout,
        running_experiment.as_ref(),
        &experiment_versions,
        &data_plane.traffic,
        ack.complete(),
    );
    experiment::sync_object(
        cx,
        rollout,
        experiment_before.as_ref(),
        running_experiment.as_ref(),
    );
    cx.status.data_plane = Some(data_plane);
    restart::step(
        cx,
        rollout.spec.restart_at.as_ref().map(|t| t.0),
        &restart_order(&versions, &stable, &hash),
        &observed.pods,
        new_template,
    );
    status::finish(
        cx,
        rollout,
        plan,
        &hash,
        &stable,
        &versions,
        waiting_on_pods,
        &ack,
        observed,
    );
    if let Some(canary) = cx.status.canary.as_mut() {
        canary.current_experiment = running_experiment.map(|c| c.name);
    }
    scale_workload(cx, plan, &versions, observed);
    Ok(())
}

/// Argo's `workloadRef.scaleDown`: `onsuccess` scales the Deployment to 0 once the rollout is
/// Healthy; `progressively` takes from it as many replicas as the rollout has available; `never`
/// leaves it alone.
fn scale_workload(
    cx: &mut Cx,
    plan: &Plan<'_>,
    versions: &[&ObservedVersion],
    observed: &Observed,
) {
    let (Some((name, mode)), Some(deployment)) = (&plan.workload_scale_down, &observed.workload)
    else {
        return;
    };
    let available = versions
        .iter()
        .fold(0i32, |sum, v| sum.saturating_add(v.available));
    let healthy = cx.status.phase.as_deref() == Some(conditions::PHASE_HEALTHY);
    let target = match mode {
        WorkloadScaleDown::Never => return,
        WorkloadScaleDown::OnSuccess if healthy => 0,
        WorkloadScaleDown::OnSuccess => return,
        WorkloadScaleDown::Progressively => plan.replicas.saturating_sub(available).max(0),
    };
    if target < deployment.replicas {
        cx.actions.push(Action::ScaleDeployment {
            name: name.clone(),
            replicas: target,
        });
        cx.event(
            false,
            "ScalingDeployment",
            format!(
                "Scaled Deployment {name} from {} to {target} (workloadRef)",
                deployment.replicas
            ),
        );
    }
}

/// A new template (or a rollback to an older one): a canary at step 0, or no steps at all when
/// going back to stable or to a revision within `rollbackWindow`.
fn new_version(
    cx: &mut Cx,
    plan: &Plan<'_>,
    hash: &str,
    stable: &str,
    versions: &[&ObservedVersion],
    max_revision: u64,
) {
    let steps = plan.steps.len();
    let existing = versions.iter().find(|v| v.hash == hash);
    let status = &mut cx.status;
    status.current_pod_hash = Some(hash.to_owned());
    status.current_step_hash = Some(plan.steps_hash.clone());
    status.pause_conditions.clear();
    status.controller_pause = false;
    status.abort = false;
    status.aborted_at = None;
    status.promote_full = false;
    let within_window = existing.and_then(|v| v.revision).is_some_and(|revision| {
        // Argo counts the window with the current revision: `revisions: 3` from revision 5
        // reaches back to 4 and 3 (1 and 2 newer revisions).
        let newer = versions
            .iter()
            .filter(|v| v.revision.is_some_and(|r| r > revision))
            .count();
        newer >= 1 && newer < plan.rollback_window
    });
    let skip = hash == stable || within_window;
    status.current_step_index = Some(if skip { index_i32(steps) } else { 0 });
    if let Some(v) = existing
        && v.revision.is_none_or(|r| r < max_revision)
    {
        cx.actions.push(Action::SetRevision {
            name: v.name.clone(),
            revision: max_revision + 1,
        });
    }
    let why = if hash == stable {
        "back to the stable version".to_owned()
    } else if within_window {
        format!(
            "rollback within rollbackWindow ({} revisions): steps skipped",
            plan.rollback_window
        )
    } else {
        "canary at step 0".to_owned()
    };
    cx.event(
        false,
        "RolloutUpdated",
        format!(
            "Rollout updated to revision {} ({hash}): {why}",
            max_revision + 1
        ),
    );
}

/// Publishes `desired` when it differs from what was published: one generation more.
fn publish(
    cx: &mut Cx,
    mut data_plane: DataPlaneStatus,
    desired: PublishedTraffic,
    observed: &Observed,
) -> DataPlaneStatus {
    if data_plane.traffic != desired || data_plane.published_at.is_none() {
        // What proxies may still hold of this canary until the new generation is ACKed.
        let previous = &data_plane.traffic;
        data_plane.held_canary_weight = if previous.canary != desired.canary {
            0
        } else if observed
            .data_plane
            .summary(data_plane.generation)
            .complete()
        {
            previous.canary_weight
        } else {
            previous.canary_weight.max(data_plane.held_canary_weight)
        };
        data_plane.generation = data_plane.generation.saturating_add(1);
        data_plane.traffic = desired.clone();
        data_plane.published_at = Some(Time(cx.now));
        cx.actions.push(Action::PublishTraffic {
            generation: data_plane.generation,
            traffic: desired,
        });
    }
    let ack = observed.data_plane.summary(data_plane.generation);
    data_plane.acknowledged = i32::try_from(ack.acknowledged).unwrap_or(i32::MAX);
    data_plane.proxies = i32::try_from(ack.proxies).unwrap_or(i32::MAX);
    data_plane
}

/// Argo's restart order: the stable ReplicaSet, the new one, then the others from the oldest
/// revision.
fn restart_order<'a>(
    versions: &[&'a ObservedVersion],
    stable: &str,
    new: &str,
) -> Vec<&'a ObservedVersion> {
    let rank = |v: &ObservedVersion| match v.hash.as_str() {
        h if h == stable => (0, 0),
        h if h == new => (1, 0),
        _ => (2, v.revision.unwrap_or(0)),
    };
    let mut order = versions.to_vec();
    order.sort_by_key(|v| rank(v));
    order
}

pub(crate) fn index_i32(index: usize) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
}

/// A canary's `retry` (Argo: `status.abort` cleared by the user while the canary is aborted,
/// `abortedAt` still set): the canary starts again at step 0 and its runs that ended Failed, Error or
/// Inconclusive are not the answer any more — they are deleted
/// ([`Action::DeleteAnalysisRun`]) and left out of this pass, so each analysis measures again.
/// Returns the observed runs without them, `None` when this pass is no retry.
fn retry(cx: &mut Cx, observed: &Observed, hash: &str, stable: &str) -> Option<Observed> {
    if hash == stable || cx.status.abort || cx.status.aborted_at.is_none() {
        return None;
    }
    cx.status.aborted_at = None;
    let superseded = |run: &crate::ObservedAnalysisRun| {
        run.canary_hash == hash
            && matches!(
                run.status.phase,
                sluice_analysis::AnalysisPhase::Failed
                    | sluice_analysis::AnalysisPhase::Error
                    | sluice_analysis::AnalysisPhase::Inconclusive
            )
    };
    for run in observed.analysis_runs.iter().filter(|r| superseded(r)) {
        cx.actions.push(Action::DeleteAnalysisRun {
            name: run.name.clone(),
        });
    }
    cx.event(
        false,
        "RolloutRetried",
        "Rollout retried: the canary starts again at step 0".into(),
    );
    let mut observed = observed.clone();
    observed.analysis_runs.retain(|r| !superseded(r));
    Some(observed)
}
