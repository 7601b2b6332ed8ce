//! Experiment steps (`steps[].experiment`, Argo's `RolloutExperimentStep`), run inside the rollout
//! (Argo creates an `Experiment` object; Sluice keeps its state in `status.experiment`, and asks
//! the Kubernetes driver to mirror it in an `Experiment` object: `experiment_object.rs`).
//!
//! ```text
//!  step reached ─► a ReplicaSet per template (`<experiment>-<template>`, a version of its own)
//!     all templates available ─► weighted templates get their share (status.dataPlane.traffic
//!                                .additional; stable gets what canary and these leave)
//!     every proxy ACKed it    ─► availableAt: `duration` counts, the analyses start
//!  duration passed (and required analyses Successful), or required analyses Successful
//!                 ─► Successful: the next step; traffic leaves the templates, and once every
//!                    proxy ACKed that, their ReplicaSets go to 0 and are deleted
//!  an analysis Failed / Error ─► abort (everything on stable in one push), as Argo does
//!  an analysis Inconclusive   ─► paused (`InconclusiveExperiment`) until promoted
//! ```
//!
//! Abort, `promote --full` and a promote that skips the step (Argo's plugin moves
//! `currentStepIndex` on when nothing is paused) end a running experiment the same way.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::core::v1::PodTemplateSpec,
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time},
};
use serde_json::json;
use sluice_analysis::AnalysisPhase;
use sluice_api::{
    experiment::{
        ExperimentAnalysis, ExperimentAnalysisRunStatus, ExperimentTemplateStatus,
        RolloutExperimentStatus,
    },
    resource::{AnalysisRunArgument, AnalysisTemplateRef, PauseCondition, WeightDestination},
};

use crate::{
    Action, Observed,
    conditions::pause_started,
    engine::Cx,
    hash::value_hash,
    observed::ObservedVersion,
    spec::{Invalid, Plan},
    time::{after, until},
};

/// Argo's pause reason for an inconclusive experiment.
pub const INCONCLUSIVE_EXPERIMENT: &str = "InconclusiveExperiment";

#[path = "experiment_checks.rs"]
mod checks;
use checks::invalid;
pub(crate) use checks::{Experiment, SpecRef, Template, check, check_weights};
#[path = "experiment_object.rs"]
mod object;
pub(crate) use object::sync as sync_object;
#[path = "experiment_scale.rs"]
mod replicas;
pub(crate) use replicas::scale;

/// The experiment of a canary's step: `<rollout>-<canary hash>-<step>`, as Argo names it (without
/// the revision: the hash names the version).
pub fn experiment_name(rollout: &str, canary: &str, step: usize) -> String {
    format!("{rollout}-{canary}-{step}")
}

/// One template of the experiment at hand, with its version.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub template: Template,
    pub hash: String,
    /// `<experiment>-<template>`.
    pub rs_name: String,
    pub pod_template: PodTemplateSpec,
    pub selector: LabelSelector,
}

/// The experiment of one step, resolved against the versions of this pass.
#[derive(Clone, Debug)]
pub(crate) struct Current {
    pub name: String,
    pub index: usize,
    pub experiment: Experiment,
    pub templates: Vec<Resolved>,
}

/// Resolves the experiment at step `index`: each template's pod template (the stable's or the
/// canary's, with the template's metadata), selector and version hash.
pub(crate) fn resolve(
    plan: &Plan<'_>,
    index: usize,
    experiment: &Experiment,
    (stable, canary): (&str, &str),
    versions: &[&ObservedVersion],
) -> Result<Current, Invalid> {
    let name = experiment_name(&plan.name, canary, index);
    let field = format!("spec.strategy.canary.steps[{index}].experiment");
    let mut templates: Vec<Resolved> = Vec::new();
    for (i, t) in experiment.templates.iter().enumerate() {
        let mut pod_template = match (t.spec_ref, plan.named) {
            (_, Some(_)) => PodTemplateSpec::default(),
            (SpecRef::Canary, None) => plan.template.clone(),
            (SpecRef::Stable, None) if stable == canary => plan.template.clone(),
            (SpecRef::Stable, None) => versions
                .iter()
                .find(|v| v.hash == stable)
                .and_then(|v| v.template.clone())
                .ok_or_else(|| {
                    invalid(
                        format!("{field}.templates[{i}].specRef"),
                        format!(
                            "the stable ReplicaSet ({stable}) and its pod template are not observed"
                        ),
                    )
                })?,
        };
        let mut selector = t.selector.clone().unwrap_or_else(|| plan.selector.clone());
        if !t.metadata.labels.is_empty() || !t.metadata.annotations.is_empty() {
            let meta = pod_template
                .metadata
                .get_or_insert_with(ObjectMeta::default);
            let labels = meta.labels.get_or_insert_with(BTreeMap::new);
            let selector_labels = selector.match_labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in &t.metadata.labels {
                labels.insert(k.clone(), v.clone());
                selector_labels.insert(k.clone(), v.clone());
            }
            let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
            for (k, v) in &t.metadata.annotations {
                annotations.insert(k.clone(), v.clone());
            }
        }
        let hash = match &t.version {
            Some(version) if version == stable || version == canary => {
                return Err(invalid(
                    format!("{field}.templates[{i}].version"),
                    format!(
                        "{version:?} is the stable or the canary version: a template runs a version of its own"
                    ),
                ));
            }
            Some(version) => version.clone(),
            // Argo hashes the copied pod template alone, so a `specRef: canary` template without
            // extra labels gets the canary's hash and its pods are counted as the canary's.
            // Sluice routes by hash (a version is a cluster), so each template is a version of
            // its own: its hash covers the experiment's name (which holds the canary's hash and
            // the step), the template's name and its pod template, and a salt is added in the
            // (32-bit) case where it still equals the stable's, the canary's or another
            // template's hash.
            None => {
                let mut salt = 0u32;
                loop {
                    let mut value = json!({
                        "experiment": name,
                        "template": t.name,
                        "podTemplate": serde_json::to_value(&pod_template).unwrap_or_default(),
                    });
                    if salt > 0
                        && let Some(map) = value.as_object_mut()
                    {
                        map.insert("salt".into(), json!(salt));
                    }
                    let hash = value_hash(&value);
                    if hash != stable && hash != canary && !templates.iter().any(|r| r.hash == hash)
                    {
                        break hash;
                    }
                    salt = salt.saturating_add(1);
                }
            }
        };
        templates.push(Resolved {
            template: t.clone(),
            rs_name: format!("{name}-{}", t.name),
            hash,
            pod_template,
            selector,
        });
    }
    Ok(Current {
        name,
        index,
        experiment: experiment.clone(),
        templates,
    })
}

fn observed_of<'a>(r: &Resolved, versions: &[&'a ObservedVersion]) -> Option<&'a ObservedVersion> {
    versions.iter().copied().find(|v| v.name == r.rs_name)
}

/// Every template has all its replicas available.
fn all_available(current: &Current, versions: &[&ObservedVersion]) -> bool {
    current
        .templates
        .iter()
        .all(|r| observed_of(r, versions).is_some_and(|v| v.available >= r.template.replicas))
}

/// Whether the experiment is still running (its ReplicaSets wanted) by its last status.
fn running_phase(phase: &str) -> bool {
    matches!(phase, "" | "Pending" | "Running" | "Inconclusive")
}

/// The templates' shares of live traffic: only once every template is available (Argo routes to
/// an experiment once it is Running), never to a template without available pods, and not while
/// an inconclusive experiment waits.
pub(crate) fn weights(
    current: &Current,
    status: Option<&RolloutExperimentStatus>,
    versions: &[&ObservedVersion],
) -> Vec<WeightDestination> {
    let phase = status
        .filter(|s| s.name == current.name)
        .map_or("", |s| s.phase.as_str());
    if !matches!(phase, "" | "Pending" | "Running") || !all_available(current, versions) {
        return Vec::new();
    }
    current
        .templates
        .iter()
        .filter(|r| r.template.weight.is_some_and(|w| w > 0))
        .filter(|r| observed_of(r, versions).is_some_and(|v| v.available > 0))
        .map(|r| WeightDestination {
            pod_template_hash: Some(r.hash.clone()),
            service_name: None,
            weight: r.template.weight.unwrap_or(0),
        })
        .collect()
}

/// The AnalysisRun of one of the experiment's analyses: `<experiment>-<analysis>` (Argo's name).
pub fn analysis_run_name(experiment: &str, analysis: &str) -> String {
    format!("{experiment}-{analysis}")
}

/// The experiment's step in the loop: `true` when it is done (Successful, or an inconclusive
/// one promoted). `weights_acked`: the step's traffic, the templates' weights included, is
/// published and acknowledged by every proxy.
pub(crate) fn step(
    cx: &mut Cx,
    observed: &Observed,
    current: &Current,
    versions: &[&ObservedVersion],
    (stable, canary): (&str, &str),
    weights_acked: bool,
) -> bool {
    // A completed experiment whose step is reached again (a retry after an abort) runs anew.
    let mut status = match cx.status.experiment.take() {
        Some(s) if s.name == current.name && running_phase(&s.phase) => s,
        _ => {
            cx.event(
                false,
                "ExperimentCreated",
                format!("Created experiment {}", current.name),
            );
            RolloutExperimentStatus {
                name: current.name.clone(),
                step_index: crate::engine::index_i32(current.index),
                phase: "Pending".into(),
                ..RolloutExperimentStatus::default()
            }
        }
    };
    let done = step_status(
        cx,
        observed,
        current,
        versions,
        (stable, canary),
        weights_acked,
        &mut status,
    );
    cx.status.experiment = Some(status);
    done
}

fn step_status(
    cx: &mut Cx,
    observed: &Observed,
    current: &Current,
    versions: &[&ObservedVersion],
    (stable, canary): (&str, &str),
    weights_acked: bool,
    status: &mut RolloutExperimentStatus,
) -> bool {
    status.template_statuses = current
        .templates
        .iter()
        .map(|r| ExperimentTemplateStatus {
            name: r.template.name.clone(),
            pod_template_hash: r.hash.clone(),
            replicas: r.template.replicas,
            available_replicas: observed_of(r, versions).map_or(0, |v| v.available),
        })
        .collect();
    let available_at = match &status.available_at {
        Some(t) => t.0,
        None if all_available(current, versions) && weights_acked => {
            status.available_at = Some(Time(cx.now));
            status.phase = "Running".into();
            cx.event(
                false,
                "ExperimentRunning",
                format!(
                    "Experiment {}: every template available and its traffic acknowledged",
                    current.name
                ),
            );
            cx.now
        }
        None => {
            status.message = Some("templates are becoming available".into());
            return false;
        }
    };
    // The analyses, from availableAt on.
    let templates: BTreeMap<&str, &Resolved> = current
        .templates
        .iter()
        .map(|r| (r.template.name.as_str(), r))
        .collect();
    let mut runs: Vec<(bool, AnalysisPhase, String)> = Vec::new();
    status.analysis_runs.clear();
    for analysis in &current.experiment.analyses {
        let run_name = analysis_run_name(&current.name, &analysis.name);
        let (phase, message) = match observed.analysis_runs.iter().find(|r| r.name == run_name) {
            Some(run) => (run.status.phase, crate::analysis::reason(run)),
            None => {
                start_run(
                    cx,
                    &run_name,
                    analysis,
                    current,
                    &templates,
                    available_at,
                    (stable, canary),
                );
                (AnalysisPhase::Pending, String::new())
            }
        };
        status.analysis_runs.push(ExperimentAnalysisRunStatus {
            name: analysis.name.clone(),
            analysis_run: run_name,
            phase: phase.to_string(),
        });
        runs.push((analysis.required_for_completion, phase, message));
    }
    let worst = runs
        .iter()
        .max_by_key(|(_, phase, _)| badness(*phase))
        .filter(|(_, phase, _)| {
            matches!(
                phase,
                AnalysisPhase::Failed | AnalysisPhase::Error | AnalysisPhase::Inconclusive
            )
        });
    let has_required = runs.iter().any(|(required, _, _)| *required);
    let required_done = has_required
        && runs
            .iter()
            .filter(|(required, _, _)| *required)
            .all(|(_, phase, _)| *phase == AnalysisPhase::Successful);
    let duration_passed = match current.experiment.duration {
        None => false,
        Some(duration) => match until(cx.now, after(available_at, duration)) {
            Some(left) => {
                cx.requeue(left);
                false
            }
            None => true,
        },
    };
    if let Some((_, phase, message)) = worst {
        status.phase = phase.to_string();
        status.message = Some(message.clone());
        return match phase {
            AnalysisPhase::Inconclusive => inconclusive(cx, &current.name, message),
            _ => {
                cx.status.abort = true;
                cx.status.aborted_at = Some(Time(cx.now));
                cx.event(
                    true,
                    "RolloutAborted",
                    format!(
                        "Rollout aborted: experiment {} {phase}: {message}",
                        current.name
                    ),
                );
                cx.requeue(Duration::ZERO);
                false
            }
        };
    }
    let successful = if duration_passed {
        !has_required || required_done
    } else {
        required_done
    };
    if successful {
        status.phase = "Successful".into();
        status.message = Some(if duration_passed {
            "the duration passed".into()
        } else {
            "every required analysis succeeded".into()
        });
        cx.event(
            false,
            "ExperimentCompleted",
            format!("Experiment {} Successful", current.name),
        );
        return true;
    }
    status.message = None;
    false
}

/// Argo's order of analysis phases from best to worst.
fn badness(phase: AnalysisPhase) -> u8 {
    match phase {
        AnalysisPhase::Successful => 0,
        AnalysisPhase::Running => 1,
        AnalysisPhase::Pending => 2,
        AnalysisPhase::Inconclusive => 3,
        AnalysisPhase::Error => 4,
        AnalysisPhase::Failed => 5,
    }
}

/// Paused until a user promotes, as an inconclusive analysis step.
fn inconclusive(cx: &mut Cx, name: &str, message: &str) -> bool {
    let status = &mut cx.status;
    if pause_started(&status.pause_conditions, INCONCLUSIVE_EXPERIMENT).is_some() {
        return false;
    }
    if status.controller_pause {
        // The pause condition was removed by a user (promote): go on.
        status.controller_pause = false;
        return true;
    }
    status.pause_conditions.push(PauseCondition {
        reason: INCONCLUSIVE_EXPERIMENT.into(),
        start_time: Time(cx.now),
    });
    status.controller_pause = true;
    // Again at once: the templates' weights go while it waits.
    cx.requeue(Duration::ZERO);
    cx.event(
        true,
        INCONCLUSIVE_EXPERIMENT,
        format!("Rollout paused: experiment {name} Inconclusive: {message}"),
    );
    false
}

#[allow(clippy::too_many_arguments)]
fn start_run(
    cx: &mut Cx,
    run_name: &str,
    analysis: &ExperimentAnalysis,
    current: &Current,
    templates: &BTreeMap<&str, &Resolved>,
    available_at: k8s_openapi::jiff::Timestamp,
    (stable, canary): (&str, &str),
) {
    if cx
        .actions
        .iter()
        .any(|a| matches!(a, Action::StartAnalysisRun { name, .. } if name == run_name))
    {
        return;
    }
    let finished_at = current
        .experiment
        .duration
        .map(|d| after(available_at, d).to_string());
    let resolve = |tag: &str| -> Option<String> {
        match tag {
            "experiment.availableAt" => Some(available_at.to_string()),
            "experiment.finishedAt" => finished_at.clone(),
            _ => {
                let rest = tag.strip_prefix("templates.")?;
                let (name, field) = rest.split_once('.')?;
                let r = templates.get(name)?;
                match field {
                    "podTemplateHash" => Some(r.hash.clone()),
                    "replicaset.name" => Some(r.rs_name.clone()),
                    _ => None,
                }
            }
        }
    };
    let args = analysis
        .args
        .iter()
        .map(|arg| AnalysisRunArgument {
            value: arg.value.as_ref().map(|v| substitute(v, &resolve)),
            ..arg.clone()
        })
        .collect();
    cx.actions.push(Action::StartAnalysisRun {
        name: run_name.to_owned(),
        canary_hash: canary.to_owned(),
        stable_hash: stable.to_owned(),
        step_index: current.index,
        background: false,
        templates: vec![AnalysisTemplateRef {
            template_name: analysis.template_name.clone(),
            cluster_scope: analysis.cluster_scope.unwrap_or(false),
        }],
        args,
        options: current.experiment.options.clone(),
    });
    cx.event(
        false,
        "AnalysisRunRunning",
        format!(
            "Experiment {} analysis {} started as {run_name}",
            current.name, analysis.name
        ),
    );
}

/// Replaces each `{{tag}}` that `resolve` knows (the spec check refused the others).
fn substitute(value: &str, resolve: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("{{") {
        let after_open = &rest[start + 2..];
        let Some(end) = after_open.find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let tag = after_open[..end].trim();
        match resolve(tag) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after_open[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Whether the running experiment waits for pods.
pub(crate) fn waiting_on_pods(current: &Current, versions: &[&ObservedVersion]) -> bool {
    !all_available(current, versions)
}

/// Whether the experiment of `current` still runs by its status (created and not completed).
pub(crate) fn still_running(current: &Current, status: Option<&RolloutExperimentStatus>) -> bool {
    status.is_some_and(|s| s.name == current.name && running_phase(&s.phase))
}

/// The analysis runs the running experiment waits on.
pub(crate) fn wanted_runs(current: &Current) -> Vec<String> {
    current
        .experiment
        .analyses
        .iter()
        .map(|a| analysis_run_name(&current.name, &a.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_replaces_the_known_tags() {
        let resolve = |t: &str| (t == "a").then(|| "1".to_owned());
        assert_eq!(substitute("x{{a}}y{{ a }}{{b}}z", &resolve), "x1y1{{b}}z");
    }
}
