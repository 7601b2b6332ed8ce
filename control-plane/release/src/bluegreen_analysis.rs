//! Argo's `prePromotionAnalysis` and `postPromotionAnalysis` (rollout/analysis.go) for the
//! blue/green step: which run the rollout waits on, its outcome, a retry's new attempt, and the
//! `status.blueGreen.{pre,post}PromotionAnalysisRunStatus` fields as Argo writes them.
//!
//! ```text
//!  preview ACKed ─► pre run <rollout>-<hash>-pre ─ Successful ─► pause / promotion ─► switch
//!                     └ Failed | Error: abort (the active version never lost its traffic)
//!  switch ACKed ─► post run <rollout>-<hash>-post ─ Successful ─► stableRS = new; the previous
//!                     │                                          version's scale-down delay starts
//!                     └ Failed | Error: abort: the active hosts back to the previous version
//!  Inconclusive (either): paused (InconclusiveAnalysisRun); promote measures again (Argo: a
//!     new run, `<name>.2`, ...)
//!  retry (abort cleared): the runs the rollout had waited on start again as `<name>.2`, `.3` ...
//! ```
//!
//! Both runs analyse the new version as `Latest` against `stableRS` (the previous version, which
//! stays `stableRS` until the post-promotion run succeeds) as `Stable`, as Argo resolves
//! `podTemplateHashValue` for blue/green.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sluice_api::{
    bluegreen::{BlueGreenStatus, RolloutAnalysisRunStatus},
    resource::AnalysisRef,
};

use sluice_analysis::AnalysisPhase;

use crate::{
    INCONCLUSIVE_ANALYSIS_RUN, Observed,
    analysis::{RunRequest, StepAnalysis, wait_on},
    conditions::pause_started,
    engine::Cx,
};

/// The two runs of a blue/green release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Promotion {
    Pre,
    Post,
}

impl Promotion {
    fn infix(self) -> &'static str {
        match self {
            Promotion::Pre => "pre",
            Promotion::Post => "post",
        }
    }

    /// Argo's `rollout-type` label of the run.
    pub fn label(self) -> &'static str {
        match self {
            Promotion::Pre => "PrePromotion",
            Promotion::Post => "PostPromotion",
        }
    }

    fn slot(self, status: &mut BlueGreenStatus) -> &mut Option<RolloutAnalysisRunStatus> {
        match self {
            Promotion::Pre => &mut status.pre_promotion_analysis_run_status,
            Promotion::Post => &mut status.post_promotion_analysis_run_status,
        }
    }
}

/// The first run of `which` for version `hash`: `<rollout>-<hash>-pre` or `-post`.
pub fn promotion_run_name(rollout: &str, hash: &str, which: Promotion) -> String {
    format!("{rollout}-{hash}-{}", which.infix())
}

/// Which promotion run `name` (any attempt) is, for version `hash` of `rollout`.
pub fn promotion_of(name: &str, rollout: &str, hash: &str) -> Option<Promotion> {
    [Promotion::Pre, Promotion::Post]
        .into_iter()
        .find(|which| is_run_of(name, rollout, hash, *which))
}

/// Whether `name` is a run (any attempt) of `which` for `hash`.
fn is_run_of(name: &str, rollout: &str, hash: &str, which: Promotion) -> bool {
    let first = promotion_run_name(rollout, hash, which);
    name.strip_prefix(&first).is_some_and(|rest| {
        rest.is_empty()
            || rest
                .strip_prefix('.')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The next attempt after `name`: `<first>.2`, then `.3`, ... (Argo's collision counter).
fn next_attempt(name: &str, first: &str) -> String {
    let attempt = name
        .strip_prefix(first)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(1);
    format!("{first}.{}", attempt.saturating_add(1))
}

/// The run of `which` the rollout waits on: the one the status names when it is this version's,
/// else the first attempt.
fn current(cx: &mut Cx, rollout: &str, hash: &str, which: Promotion) -> String {
    let bg = cx.status.blue_green.get_or_insert_with(Default::default);
    match which.slot(bg) {
        Some(run) if is_run_of(&run.name, rollout, hash, which) => run.name.clone(),
        slot => {
            let name = promotion_run_name(rollout, hash, which);
            *slot = Some(RolloutAnalysisRunStatus {
                name: name.clone(),
                ..RolloutAnalysisRunStatus::default()
            });
            name
        }
    }
}

/// Where a promotion's run stands.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Gate {
    /// Successful (or promoted past an inconclusive result): go on.
    Passed,
    /// Running, paused as inconclusive, or just aborted.
    Hold,
}

/// The rollout's hashes and analysis for one promotion run.
pub(crate) struct Run<'a> {
    pub rollout: &'a str,
    /// `stableRS`: the previous version (`Stable` in the run's arguments).
    pub stable: &'a str,
    /// The new version (`Latest`).
    pub new: &'a str,
    pub which: Promotion,
    pub analysis: &'a AnalysisRef,
}

/// Waits on the run of `run.which` for the new version (started when missing); its name is
/// pushed on `wanted` (a run the rollout no longer waits on is terminated). Failed or Error
/// aborts the rollout, naming the run.
pub(crate) fn gate(
    cx: &mut Cx,
    observed: &Observed,
    run: &Run<'_>,
    wanted: &mut Vec<String>,
) -> Gate {
    let mut name = current(cx, run.rollout, run.new, run.which);
    let inconclusive = observed
        .analysis_runs
        .iter()
        .any(|r| r.name == name && r.status.phase == AnalysisPhase::Inconclusive);
    if inconclusive
        && cx.status.controller_pause
        && pause_started(&cx.status.pause_conditions, INCONCLUSIVE_ANALYSIS_RUN).is_none()
    {
        // Promoted past an inconclusive run: Argo measures again (a new run), so the promote
        // is not mistaken for one of the BlueGreenPause that may follow.
        name = next_attempt(&name, &promotion_run_name(run.rollout, run.new, run.which));
        cx.status.controller_pause = false;
        if let Some(slot) = cx.status.blue_green.as_mut().map(|bg| run.which.slot(bg)) {
            *slot = Some(RolloutAnalysisRunStatus {
                name: name.clone(),
                ..RolloutAnalysisRunStatus::default()
            });
        }
    }
    wanted.push(name.clone());
    let outcome = wait_on(
        cx,
        observed,
        &RunRequest {
            name: &name,
            what: run.which.label(),
            stable: run.stable,
            canary: run.new,
            step_index: 0,
            background: false,
            analysis: run.analysis,
        },
    );
    match outcome {
        StepAnalysis::Done => Gate::Passed,
        StepAnalysis::Wait | StepAnalysis::Paused => Gate::Hold,
        StepAnalysis::Abort(reason) => {
            let phase = match run.which {
                Promotion::Pre => "pre-promotion",
                Promotion::Post => "post-promotion",
            };
            cx.status.abort = true;
            cx.status.aborted_at = Some(Time(cx.now));
            cx.event(
                true,
                "RolloutAborted",
                format!(
                    "Rollout aborted: Blue/green {phase} analysis phase error/failed: {reason}"
                ),
            );
            cx.requeue(Duration::ZERO);
            Gate::Hold
        }
    }
}

/// Argo's retry (`abort` cleared while `abortedAt` is still set): the promotion runs this version
/// had started run again, each as its next attempt; `abortedAt` is cleared.
pub(crate) fn retry(cx: &mut Cx, rollout: &str, new: &str) {
    if cx.status.abort || cx.status.aborted_at.is_none() {
        return;
    }
    cx.status.aborted_at = None;
    let Some(bg) = cx.status.blue_green.as_mut() else {
        return;
    };
    for which in [Promotion::Pre, Promotion::Post] {
        if let Some(run) = which.slot(bg)
            && is_run_of(&run.name, rollout, new, which)
        {
            let next = next_attempt(&run.name, &promotion_run_name(rollout, new, which));
            *run = RolloutAnalysisRunStatus {
                name: next,
                ..RolloutAnalysisRunStatus::default()
            };
        }
    }
}

/// The run status fields for the status to write: those of `current` (the rollout's newest
/// version) with each run's phase and message as observed; a previous version's are dropped.
pub(crate) fn refresh(
    previous: Option<&BlueGreenStatus>,
    observed: &Observed,
    rollout: &str,
    current: &str,
    status: &mut BlueGreenStatus,
) {
    for which in [Promotion::Pre, Promotion::Post] {
        let mut slot = previous
            .and_then(|p| match which {
                Promotion::Pre => p.pre_promotion_analysis_run_status.clone(),
                Promotion::Post => p.post_promotion_analysis_run_status.clone(),
            })
            .filter(|run| is_run_of(&run.name, rollout, current, which));
        if let Some(run) = slot.as_mut()
            && let Some(seen) = observed.analysis_runs.iter().find(|r| r.name == run.name)
        {
            run.status = seen.status.phase.to_string();
            run.message.clone_from(&seen.status.message);
        }
        *which.slot(status) = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_named_as_argo_counts_collisions() {
        let first = promotion_run_name("demo", "abc", Promotion::Pre);
        assert_eq!(first, "demo-abc-pre");
        assert_eq!(next_attempt(&first, &first), "demo-abc-pre.2");
        assert_eq!(next_attempt("demo-abc-pre.2", &first), "demo-abc-pre.3");
        for (name, is) in [
            ("demo-abc-pre", true),
            ("demo-abc-pre.12", true),
            ("demo-abc-pre.", false),
            ("demo-abc-pre.x", false),
            ("demo-abc-post", false),
            ("demo-abd-pre", false),
            ("demo-abc-prefix", false),
        ] {
            assert_eq!(is_run_of(name, "demo", "abc", Promotion::Pre), is, "{name}");
        }
        assert_eq!(
            promotion_of("demo-abc-post.3", "demo", "abc"),
            Some(Promotion::Post)
        );
        assert_eq!(promotion_of("demo-abc-1", "demo", "abc"), None);
    }
}
