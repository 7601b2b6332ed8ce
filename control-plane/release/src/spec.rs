//! The rollout's spec, checked and with Argo's defaults applied: what the engine runs. A spec the
//! engine cannot run is an [`Invalid`] naming the field (the rollout's `InvalidSpec` condition).

use std::{sync::LazyLock, time::Duration};

use k8s_openapi::{
    api::core::v1::PodTemplateSpec, apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use sluice_api::{
    Rollout,
    resource::{CanaryStep, SetHeaderRoute, SetMirrorRoute},
};

use crate::{Observed, hash::value_hash};

/// Argo's defaults.
pub const DEFAULT_SCALE_DOWN_DELAY_SECONDS: i32 = 30;
pub const DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS: i32 = 30;
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

/// A field the engine cannot run, in the document's terms (`spec.strategy.canary.steps[2]...`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// One step. Argo allows one of `setWeight`, `pause`, `experiment`, `analysis` per step, with
/// `setCanaryScale`, `setHeaderRoute` and `setMirrorRoute` beside it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Step {
    pub set_weight: Option<i32>,
    /// `Some(None)`: until promoted.
    pub pause: Option<Option<Duration>>,
    pub set_canary_scale: Option<CanaryScale>,
    pub set_header_route: Option<SetHeaderRoute>,
    pub set_mirror_route: Option<SetMirrorRoute>,
    /// An analysis step: the templates and arguments of its run.
    pub analysis: Option<sluice_api::resource::AnalysisRef>,
    /// An experiment step.
    pub experiment: Option<crate::experiment::Experiment>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum CanaryScale {
    Replicas(i32),
    Weight(i32),
    MatchTrafficWeight,
}

/// The checked spec.
#[derive(Clone, Debug)]
pub(crate) struct Plan<'a> {
    pub name: String,
    pub replicas: i32,
    pub template: &'a PodTemplateSpec,
    /// `spec.version` (standalone mode): the version is named, not hashed from `template` (which
    /// is then empty).
    pub named: Option<&'a str>,
    /// With `workloadRef`: the Deployment's name and how it is scaled down.
    pub workload_scale_down: Option<(String, WorkloadScaleDown)>,
    pub selector: &'a LabelSelector,
    /// `spec.selector` as a label-selector string (`status.selector`).
    pub selector_string: String,
    pub steps: Vec<Step>,
    /// Argo's `currentStepHash`.
    pub steps_hash: String,
    pub scale_down_delay: Duration,
    pub abort_scale_down_delay: Duration,
    pub progress_deadline: Duration,
    pub progress_deadline_abort: bool,
    pub history_limit: usize,
    pub rollback_window: usize,
    /// `spec.strategy.blueGreen`, checked (no steps then).
    pub blue_green: Option<crate::bluegreen::BlueGreen>,
    /// `spec.strategy.canary.analysis` (background analysis) and its starting step.
    pub background: Option<(sluice_api::resource::AnalysisRef, usize)>,
}

fn non_negative(field: &str, value: Option<i32>, default: i32) -> Result<i32, Invalid> {
    match value.unwrap_or(default) {
        v if v >= 0 => Ok(v),
        v => Err(invalid(field, format!("{v} is negative"))),
    }
}

fn seconds(value: i32) -> Duration {
    Duration::from_secs(u64::try_from(value).unwrap_or(0))
}

/// Checks the spec as the engine reads it, without running it (`sluice rollouts lint`): `Err` is
/// the first field it cannot run. `observed` supplies the `workloadRef` Deployment, if any.
pub fn check(rollout: &Rollout, observed: &Observed) -> Result<(), Invalid> {
    plan(rollout, observed).map(drop)
}

/// Checks the spec. With `workloadRef`, the template (and, without `spec.selector`, the selector)
/// come from the observed Deployment.
pub(crate) fn plan<'a>(rollout: &'a Rollout, observed: &'a Observed) -> Result<Plan<'a>, Invalid> {
    let spec = &rollout.spec;
    let name = match rollout.metadata.name.as_deref() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => return Err(invalid("metadata.name", "is required")),
    };
    if let Some(version) = spec.version.as_deref() {
        return named_plan(rollout, name, version);
    }
    let (template, workload_selector, workload_scale_down) = match &spec.workload_ref {
        None => (
            spec.template
                .as_ref()
                .ok_or_else(|| invalid("spec.template", "is required"))?,
            None,
            None,
        ),
        Some(reference) => {
            let (template, selector, scale_down) =
                workload(spec.template.is_some(), reference, observed)?;
            (template, selector, Some(scale_down))
        }
    };
    let selector = spec
        .selector
        .as_ref()
        .or(workload_selector)
        .ok_or_else(|| invalid("spec.selector", "is required"))?;
    let selector_string = crate::selector::check(selector, template)?;
    strategy_plan(
        rollout,
        name,
        template,
        None,
        selector,
        selector_string,
        workload_scale_down,
    )
}

static EMPTY_TEMPLATE: LazyLock<PodTemplateSpec> = LazyLock::new(PodTemplateSpec::default);
static EMPTY_SELECTOR: LazyLock<LabelSelector> = LazyLock::new(LabelSelector::default);

/// A rollout whose version is named by `spec.version` (standalone mode: a key of
/// `spec.staticEndpoints`) instead of hashed from a pod template. Changing it starts a canary as a
/// new template does.
fn named_plan<'a>(
    rollout: &'a Rollout,
    name: String,
    version: &'a str,
) -> Result<Plan<'a>, Invalid> {
    let spec = &rollout.spec;
    if spec.template.is_some() {
        return Err(invalid(
            "spec.template",
            "must be empty when spec.version names the version",
        ));
    }
    if spec.workload_ref.is_some() {
        return Err(invalid(
            "spec.workloadRef",
            "must be empty when spec.version names the version",
        ));
    }
    if version.is_empty() {
        return Err(invalid("spec.version", "is empty"));
    }
    if !spec.static_endpoints.contains_key(version) {
        let known: Vec<&str> = spec.static_endpoints.keys().map(String::as_str).collect();
        return Err(invalid(
            "spec.version",
            format!("{version:?} is not a key of spec.staticEndpoints ({known:?})"),
        ));
    }
    let selector = spec.selector.as_ref().unwrap_or(&EMPTY_SELECTOR);
    strategy_plan(
        rollout,
        name,
        &EMPTY_TEMPLATE,
        Some(version),
        selector,
        String::new(),
        None,
    )
}

/// The checks and defaults common to both ways of naming a version.
fn strategy_plan<'a>(
    rollout: &'a Rollout,
    name: String,
    template: &'a PodTemplateSpec,
    named: Option<&'a str>,
    selector: &'a LabelSelector,
    selector_string: String,
    workload_scale_down: Option<(String, WorkloadScaleDown)>,
) -> Result<Plan<'a>, Invalid> {
    let spec = &rollout.spec;
    let replicas = non_negative("spec.replicas", spec.replicas, 1)?;
    // The engine counts step weights in percent; Argo's other totals are not run by it yet.
    let scale = sluice_api::weight::WeightScale::of(spec)
        .map_err(|problem| invalid(sluice_api::weight::MAX_TRAFFIC_WEIGHT_FIELD, problem))?;
    if scale.max() != sluice_api::weight::DEFAULT_MAX_TRAFFIC_WEIGHT {
        return Err(invalid(
            sluice_api::weight::MAX_TRAFFIC_WEIGHT_FIELD,
            "the release engine runs steps in percent only (maxTrafficWeight 100)",
        ));
    }
    // Blue/green runs no steps; its delays are its own fields.
    let no_canary = sluice_api::resource::CanaryStrategy::default();
    let (canary, blue_green, delays) = match (&spec.strategy.canary, &spec.strategy.blue_green) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "spec.strategy",
                "set one of canary or blueGreen, not both",
            ));
        }
        (Some(canary), None) => (
            canary,
            None,
            (
                "canary",
                canary.scale_down_delay_seconds,
                canary.abort_scale_down_delay_seconds,
            ),
        ),
        (None, Some(bg)) => (
            &no_canary,
            Some(crate::bluegreen::check(bg)?),
            (
                "blueGreen",
                bg.scale_down_delay_seconds,
                bg.abort_scale_down_delay_seconds,
            ),
        ),
        (None, None) => {
            return Err(invalid("spec.strategy", "is required: canary or blueGreen"));
        }
    };
    let background = match &canary.analysis {
        None => None,
        Some(analysis) => {
            check_templates("spec.strategy.canary.analysis", analysis)?;
            let start = analysis.starting_step.unwrap_or(0);
            let start = usize::try_from(start)
                .ok()
                .filter(|s| *s <= canary.steps.len())
                .ok_or_else(|| {
                    invalid(
                        "spec.strategy.canary.analysis.startingStep",
                        format!("{start} is not a step index (0 to {})", canary.steps.len()),
                    )
                })?;
            Some((analysis.clone(), start))
        }
    };
    let static_keys: Vec<&str> = spec.static_endpoints.keys().map(String::as_str).collect();
    let steps = canary
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            parse_step(
                &format!("spec.strategy.canary.steps[{i}]"),
                step,
                named,
                &static_keys,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    crate::experiment::check_weights(&steps)?;
    let steps_hash = value_hash(&serde_json::to_value(&canary.steps).unwrap_or_default());
    let progress = non_negative(
        "spec.progressDeadlineSeconds",
        spec.progress_deadline_seconds,
        DEFAULT_PROGRESS_DEADLINE_SECONDS,
    )?;
    if progress <= spec.min_ready_seconds.unwrap_or(0) {
        return Err(invalid(
            "spec.progressDeadlineSeconds",
            "must be greater than spec.minReadySeconds",
        ));
    }
    let window = spec.rollback_window.as_ref().map(|w| w.revisions);
    Ok(Plan {
        name,
        workload_scale_down,
        replicas,
        template,
        named,
        selector,
        selector_string,
        steps,
        steps_hash,
        scale_down_delay: seconds(non_negative(
            &format!("spec.strategy.{}.scaleDownDelaySeconds", delays.0),
            delays.1,
            DEFAULT_SCALE_DOWN_DELAY_SECONDS,
        )?),
        abort_scale_down_delay: seconds(non_negative(
            &format!("spec.strategy.{}.abortScaleDownDelaySeconds", delays.0),
            delays.2,
            DEFAULT_ABORT_SCALE_DOWN_DELAY_SECONDS,
        )?),
        blue_green,
        background,
        progress_deadline: seconds(progress),
        progress_deadline_abort: spec.progress_deadline_abort,
        history_limit: usize::try_from(non_negative(
            "spec.revisionHistoryLimit",
            spec.revision_history_limit,
            DEFAULT_REVISION_HISTORY_LIMIT,
        )?)
        .unwrap_or(0),
        rollback_window: usize::try_from(non_negative("spec.rollbackWindow.revisions", window, 0)?)
            .unwrap_or(0),
    })
}

/// Argo's `workloadRef.scaleDown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkloadScaleDown {
    Never,
    OnSuccess,
    Progressively,
}

type Workload<'a> = (
    &'a PodTemplateSpec,
    Option<&'a LabelSelector>,
    (String, WorkloadScaleDown),
);

/// The Deployment a `workloadRef` names, as observed.
fn workload<'a>(
    has_template: bool,
    reference: &sluice_api::resource::WorkloadRef,
    observed: &'a Observed,
) -> Result<Workload<'a>, Invalid> {
    if has_template {
        return Err(invalid(
            "spec.template",
            "must be empty when spec.workloadRef is set",
        ));
    }
    if reference.kind.as_deref() != Some("Deployment") {
        return Err(invalid(
            "spec.workloadRef.kind",
            format!(
                "{:?} is not \"Deployment\"",
                reference.kind.as_deref().unwrap_or("")
            ),
        ));
    }
    if reference
        .api_version
        .as_deref()
        .is_some_and(|v| v != "apps/v1")
    {
        return Err(invalid(
            "spec.workloadRef.apiVersion",
            "must be \"apps/v1\"",
        ));
    }
    let name = reference
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("spec.workloadRef.name", "is required"))?;
    let scale_down = match reference.scale_down.as_deref() {
        None | Some("never") => WorkloadScaleDown::Never,
        Some("onsuccess") => WorkloadScaleDown::OnSuccess,
        Some("progressively") => WorkloadScaleDown::Progressively,
        Some(other) => {
            return Err(invalid(
                "spec.workloadRef.scaleDown",
                format!("{other:?} is not never, onsuccess or progressively"),
            ));
        }
    };
    let deployment = observed
        .workload
        .as_ref()
        .filter(|w| w.name == name)
        .ok_or_else(|| {
            invalid(
                "spec.workloadRef.name",
                format!("Deployment {name:?} not found"),
            )
        })?;
    Ok((
        &deployment.template,
        deployment.selector.as_ref(),
        (name.to_owned(), scale_down),
    ))
}

/// An analysis reference names at least one template, each by name.
pub(crate) fn check_templates(
    field: &str,
    analysis: &sluice_api::resource::AnalysisRef,
) -> Result<(), Invalid> {
    if analysis.templates.is_empty()
        || analysis
            .templates
            .iter()
            .any(|t| t.template_name.is_empty())
    {
        return Err(invalid(
            format!("{field}.templates"),
            "names no template (templateName is required)",
        ));
    }
    Ok(())
}

/// One step, checked as Argo's validation does (and rejecting what the engine cannot run yet).
fn parse_step(
    field: &str,
    step: &CanaryStep,
    named: Option<&str>,
    static_keys: &[&str],
) -> Result<Step, Invalid> {
    if let Some(analysis) = &step.analysis {
        check_templates(&format!("{field}.analysis"), analysis)?;
    }
    let kinds = usize::from(step.set_weight.is_some())
        + usize::from(step.pause.is_some())
        + usize::from(step.analysis.is_some())
        + usize::from(step.experiment.is_some());
    if kinds > 1 {
        return Err(invalid(
            field,
            "a step sets at most one of setWeight, pause, experiment, analysis (as in Argo)",
        ));
    }
    let mut out = Step {
        analysis: step.analysis.clone(),
        experiment: step
            .experiment
            .as_ref()
            .map(|e| {
                crate::experiment::check(&format!("{field}.experiment"), e, named, static_keys)
            })
            .transpose()?,
        ..Step::default()
    };
    if let Some(weight) = step.set_weight {
        if !(0..=100).contains(&weight) {
            return Err(invalid(
                format!("{field}.setWeight"),
                format!("{weight} is not between 0 and 100"),
            ));
        }
        out.set_weight = Some(weight);
    }
    if let Some(pause) = &step.pause {
        let seconds = pause
            .duration_seconds()
            .map_err(|problem| invalid(format!("{field}.pause.duration"), problem))?;
        out.pause = Some(seconds.map(|s| Duration::from_secs(u64::from(s))));
    }
    if let Some(scale) = &step.set_canary_scale {
        out.set_canary_scale = Some(canary_scale(&format!("{field}.setCanaryScale"), scale)?);
    }
    if let Some(route) = &step.set_header_route {
        if route.name.is_empty() {
            return Err(invalid(
                format!("{field}.setHeaderRoute.name"),
                "is required",
            ));
        }
        out.set_header_route = Some(route.clone());
    }
    if let Some(route) = &step.set_mirror_route {
        if route.name.is_empty() {
            return Err(invalid(
                format!("{field}.setMirrorRoute.name"),
                "is required",
            ));
        }
        if let Some(p) = route.percentage
            && !(0..=100).contains(&p)
        {
            return Err(invalid(
                format!("{field}.setMirrorRoute.percentage"),
                format!("{p} is not between 0 and 100"),
            ));
        }
        out.set_mirror_route = Some(route.clone());
    }
    if out == Step::default() {
        return Err(invalid(
            field,
            "a step must set one of setWeight, pause, experiment, analysis, setCanaryScale, \
             setHeaderRoute, setMirrorRoute (step plugins are not supported)",
        ));
    }
    Ok(out)
}

fn canary_scale(
    field: &str,
    scale: &sluice_api::resource::SetCanaryScale,
) -> Result<CanaryScale, Invalid> {
    match (scale.replicas, scale.weight, scale.match_traffic_weight) {
        (Some(r), None, false) if r >= 0 => Ok(CanaryScale::Replicas(r)),
        (Some(r), None, false) => Err(invalid(
            format!("{field}.replicas"),
            format!("{r} is negative"),
        )),
        (None, Some(w), false) if (0..=100).contains(&w) => Ok(CanaryScale::Weight(w)),
        (None, Some(w), false) => Err(invalid(
            format!("{field}.weight"),
            format!("{w} is not between 0 and 100"),
        )),
        (None, None, true) => Ok(CanaryScale::MatchTrafficWeight),
        _ => Err(invalid(
            field,
            "set exactly one of replicas, weight, matchTrafficWeight",
        )),
    }
}

/// `ceil(replicas × percent / 100)`, as Argo computes the canary's replicas.
pub(crate) fn replicas_for_weight(replicas: i32, percent: i32) -> i32 {
    let product = i64::from(replicas) * i64::from(percent.clamp(0, 100));
    i32::try_from((product + 99) / 100).unwrap_or(replicas)
}
