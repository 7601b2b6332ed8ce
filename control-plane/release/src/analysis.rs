//! Analysis steps (`steps[].analysis`): the step waits for its AnalysisRun, which the driver
//! starts ([`Action::StartAnalysisRun`]), measures (the `sluice-analysis` providers) and reports
//! back in [`Observed::analysis_runs`]. Argo's outcome: Successful → the next step; Failed or
//! Error → abort, the rollout's message naming the metric and its last values; Inconclusive →
//! paused (`InconclusiveAnalysisRun`) until a user promotes.
//!
//! Background analysis (`strategy.canary.analysis`) runs beside the steps from `startingStep`
//! until the canary is promoted; Failed or Error aborts at once, Inconclusive pauses.
//!
//! Blue/green's `prePromotionAnalysis` and `postPromotionAnalysis` wait on their runs the same
//! way (`wait_on`; [`crate::bluegreen_analysis`] names them and decides when they run).
//!
//! A run the rollout no longer waits on (promoted, aborted, a newer version, its step passed) that
//! is still running is stopped: [`Action::TerminateAnalysisRun`].

use sluice_analysis::{AnalysisPhase, AnalysisRunStatus, AnalysisTemplateSpec};
use sluice_api::resource::{
    AnalysisRef, AnalysisRunMetadata, DryRun, MeasurementRetention, PauseCondition,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{Action, Observed, conditions::pause_started, engine::Cx};

/// Argo's pause reason for an inconclusive run.
pub const INCONCLUSIVE_ANALYSIS_RUN: &str = "InconclusiveAnalysisRun";

/// An AnalysisRun of this rollout, as the driver sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedAnalysisRun {
    /// [`run_name`].
    pub name: String,
    /// The canary (pod-template hash) it analyses.
    pub canary_hash: String,
    /// The step that started it.
    pub step_index: usize,
    pub status: AnalysisRunStatus,
}

/// What a run takes from the rollout (or the experiment step) beside its templates and
/// arguments: Argo's `dryRun` and `measurementRetention` rules, merged with the templates' own
/// when the run is planned, and `analysisRunMetadata` for the AnalysisRun object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunOptions {
    pub dry_run: Vec<DryRun>,
    pub measurement_retention: Vec<MeasurementRetention>,
    pub metadata: AnalysisRunMetadata,
}

impl RunOptions {
    /// A rollout analysis' (`steps[].analysis`, `strategy.canary.analysis`, blue/green's
    /// promotion analyses: Argo's `RolloutAnalysis`).
    pub fn of(analysis: &AnalysisRef) -> Self {
        RunOptions {
            dry_run: analysis.dry_run.clone(),
            measurement_retention: analysis.measurement_retention.clone(),
            metadata: analysis.analysis_run_metadata.clone().unwrap_or_default(),
        }
    }

    /// The rules as a template without metrics, planned beside the run's templates (Argo's
    /// `NewAnalysisRunFromTemplates` merges the rollout's rules with the templates'); the
    /// run's spec then carries them, so a resumed run keeps them. `None` without rules.
    pub fn rules_template(&self) -> Option<AnalysisTemplateSpec> {
        if self.dry_run.is_empty() && self.measurement_retention.is_empty() {
            return None;
        }
        Some(AnalysisTemplateSpec {
            dry_run: self
                .dry_run
                .iter()
                .map(|r| sluice_analysis::resource::DryRun {
                    metric_name: r.metric_name.clone(),
                })
                .collect(),
            measurement_retention: self
                .measurement_retention
                .iter()
                .map(|r| sluice_analysis::resource::MeasurementRetention {
                    metric_name: r.metric_name.clone(),
                    limit: r.limit,
                })
                .collect(),
            ..AnalysisTemplateSpec::default()
        })
    }
}

/// The run of a step: `<rollout>-<hash>-<step>` (Argo adds the revision; the hash names it).
pub fn run_name(rollout: &str, hash: &str, step_index: usize) -> String {
    format!("{rollout}-{hash}-{step_index}")
}

/// The background run of a canary: `<rollout>-<hash>-background`.
pub fn background_run_name(rollout: &str, hash: &str) -> String {
    format!("{rollout}-{hash}-background")
}

/// Which run is asked for: a step's or the background one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum RunKind {
    Step(usize),
    /// From this starting step.
    Background(usize),
}

/// Where an analysis step stands.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum StepAnalysis {
    Wait,
    Done,
    /// The run failed: abort with this reason.
    Abort(String),
    Paused,
}

/// The step's run: started when missing, and its outcome.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step(
    cx: &mut Cx,
    observed: &Observed,
    rollout: &str,
    stable: &str,
    canary: &str,
    kind: RunKind,
    analysis: &AnalysisRef,
) -> StepAnalysis {
    let (name, index, background) = match kind {
        RunKind::Step(index) => (run_name(rollout, canary, index), index, false),
        RunKind::Background(start) => (
            current_background_run(cx, observed, rollout, canary),
            start,
            true,
        ),
    };
    let what = if background { "Background" } else { "Step" };
    wait_on(
        cx,
        observed,
        &RunRequest {
            name: &name,
            what,
            stable,
            canary,
            step_index: index,
            background,
            analysis,
        },
    )
}

/// A run the rollout waits on (a step's, the background one, a blue/green promotion's).
pub(crate) struct RunRequest<'a> {
    pub name: &'a str,
    /// For the event: `Step`, `Background`, `PrePromotion`, `PostPromotion`.
    pub what: &'a str,
    pub stable: &'a str,
    pub canary: &'a str,
    pub step_index: usize,
    pub background: bool,
    pub analysis: &'a AnalysisRef,
}

/// The run: started when missing, and its outcome (Argo's: Successful → done, Failed or Error →
/// abort, Inconclusive → paused until promoted).
pub(crate) fn wait_on(cx: &mut Cx, observed: &Observed, request: &RunRequest<'_>) -> StepAnalysis {
    let name = request.name;
    let Some(run) = observed.analysis_runs.iter().find(|r| r.name == name) else {
        if !cx
            .actions
            .iter()
            .any(|a| matches!(a, Action::StartAnalysisRun { name: n, .. } if n == name))
        {
            cx.actions.push(Action::StartAnalysisRun {
                name: name.to_owned(),
                canary_hash: request.canary.to_owned(),
                stable_hash: request.stable.to_owned(),
                step_index: request.step_index,
                background: request.background,
                templates: request.analysis.templates.clone(),
                args: request.analysis.args.clone(),
                options: RunOptions::of(request.analysis),
            });
            cx.event(
                false,
                "AnalysisRunRunning",
                format!("{} analysis run {name} started", request.what),
            );
        }
        return StepAnalysis::Wait;
    };
    match run.status.phase {
        AnalysisPhase::Pending | AnalysisPhase::Running => StepAnalysis::Wait,
        AnalysisPhase::Successful => StepAnalysis::Done,
        AnalysisPhase::Failed | AnalysisPhase::Error => StepAnalysis::Abort(reason(run)),
        AnalysisPhase::Inconclusive => {
            let status = &mut cx.status;
            if pause_started(&status.pause_conditions, INCONCLUSIVE_ANALYSIS_RUN).is_some() {
                return StepAnalysis::Paused;
            }
            // (A background run promoted past was replaced: `replace_resumed_background`.)
            if status.controller_pause && !request.background {
                // The pause condition was removed by a user (promote): go on.
                status.controller_pause = false;
                return StepAnalysis::Done;
            }
            status.pause_conditions.push(PauseCondition {
                reason: INCONCLUSIVE_ANALYSIS_RUN.into(),
                start_time: Time(cx.now),
            });
            status.controller_pause = true;
            cx.event(
                true,
                INCONCLUSIVE_ANALYSIS_RUN,
                format!("Rollout paused: {}", reason(run)),
            );
            StepAnalysis::Paused
        }
    }
}

/// The current background run of a canary: the newest of `<rollout>-<hash>-background`,
/// `…-background-2`, … observed or being started (each promote past an inconclusive one starts
/// the next).
pub(crate) fn current_background_run(
    cx: &Cx,
    observed: &Observed,
    rollout: &str,
    canary: &str,
) -> String {
    let base = background_run_name(rollout, canary);
    let generation = |name: &str| -> Option<u32> {
        let rest = name.strip_prefix(&base)?;
        if rest.is_empty() {
            return Some(1);
        }
        rest.strip_prefix('-')?.parse().ok()
    };
    let pending = cx.actions.iter().filter_map(|a| match a {
        Action::StartAnalysisRun { name, .. } => Some(name.as_str()),
        _ => None,
    });
    let newest = observed
        .analysis_runs
        .iter()
        .map(|r| r.name.as_str())
        .chain(pending)
        .filter_map(generation)
        .max()
        .unwrap_or(1);
    if newest <= 1 {
        base
    } else {
        format!("{base}-{newest}")
    }
}

/// Argo (`needsNewAnalysisRun`): a user who promotes past an inconclusive background run (the
/// controller's pause conditions removed while `controllerPause` is still set) resumes the
/// steps, and the run is replaced by a new one rather than read again as a new pause. Called
/// before the steps consume the promote.
pub(crate) fn replace_resumed_background(
    cx: &mut Cx,
    observed: &Observed,
    rollout: &str,
    (stable, canary): (&str, &str),
    start: usize,
    analysis: &AnalysisRef,
) {
    if !cx.status.controller_pause || !cx.status.pause_conditions.is_empty() {
        return;
    }
    let current = current_background_run(cx, observed, rollout, canary);
    let Some(run) = observed.analysis_runs.iter().find(|r| r.name == current) else {
        return;
    };
    if run.status.phase != AnalysisPhase::Inconclusive {
        return;
    }
    let generation = current
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<u32>().ok())
        .unwrap_or(1);
    let name = format!(
        "{}-{}",
        background_run_name(rollout, canary),
        generation.saturating_add(1)
    );
    cx.actions.push(Action::StartAnalysisRun {
        name: name.clone(),
        canary_hash: canary.to_owned(),
        stable_hash: stable.to_owned(),
        step_index: start,
        background: true,
        templates: analysis.templates.clone(),
        args: analysis.args.clone(),
        options: RunOptions::of(analysis),
    });
    cx.event(
        false,
        "AnalysisRunRunning",
        format!("Background analysis run {name} started: promoted past the inconclusive {current}"),
    );
}

/// Why a run ended as it did: its message and each failing metric's last values.
pub fn reason(run: &ObservedAnalysisRun) -> String {
    let mut text = format!("AnalysisRun {} {}", run.name, run.status.phase);
    if !run.status.message.is_empty() {
        text.push_str(&format!(": {}", run.status.message));
    }
    let failing: Vec<String> = run
        .status
        .metric_results
        .iter()
        .filter(|m| {
            !m.dry_run
                && matches!(
                    m.phase,
                    AnalysisPhase::Failed | AnalysisPhase::Error | AnalysisPhase::Inconclusive
                )
        })
        .map(|m| {
            let values: Vec<&str> = m
                .measurements
                .iter()
                .rev()
                .take(3)
                .rev()
                .map(|x| {
                    if x.value.is_empty() {
                        x.message.as_str()
                    } else {
                        x.value.as_str()
                    }
                })
                .collect();
            format!("{} last values {}", m.name, values.join(", "))
        })
        .collect();
    if !failing.is_empty() {
        text.push_str(&format!(" ({})", failing.join("; ")));
    }
    text
}

/// The reason of the failed run that aborted this canary (the last one observed), for the
/// rollout's message.
pub(crate) fn abort_reason(observed: &Observed, rollout: &str, canary: &str) -> Option<String> {
    let prefix = format!("{rollout}-{canary}-");
    observed
        .analysis_runs
        .iter()
        // The newest: after a retry an earlier attempt's failure is not the reason.
        .rfind(|r| {
            r.canary_hash == canary
                && r.name.starts_with(&prefix)
                && matches!(r.status.phase, AnalysisPhase::Failed | AnalysisPhase::Error)
        })
        .map(reason)
}

/// Stops every running run of this rollout not in `wanted` (the names the rollout waits on now).
pub(crate) fn terminate_unwanted(cx: &mut Cx, observed: &Observed, wanted: &[String]) {
    for run in &observed.analysis_runs {
        if !run.status.phase.completed() && !wanted.contains(&run.name) {
            cx.actions.push(Action::TerminateAnalysisRun {
                name: run.name.clone(),
            });
        }
    }
}
