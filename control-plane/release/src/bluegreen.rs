//! Argo's blue/green strategy (`spec.strategy.blueGreen`, rollout/bluegreen.go) as a pure step of
//! the engine: the new version runs beside the active one and is reachable on the preview hosts;
//! promotion switches the active hosts to it in one push; the old version is scaled down only
//! after every proxy has ACKed the switch, and then after `scaleDownDelaySeconds`.
//!
//! ```text
//!  new version ─► scaled to previewReplicaCount (default replicas)
//!     │ fully available
//!     ▼
//!  preview hosts → new (published; ACKed by every proxy)
//!     │ autoPromotionEnabled (default) ─────────────────────────────┐
//!     │ false, or autoPromotionSeconds: pause BlueGreenPause        │
//!     │   promote (pause cleared) / autoPromotionSeconds elapsed ───┤
//!     ▼                                                             ▼
//!     │ prePromotionAnalysis: its run must be Successful first (Failed: abort)
//!     ▼
//!  promotion: scaled to replicas, fully available ─► switch: active hosts → new (stableRS = new)
//!     │ postPromotionAnalysis: stableRS stays the previous version (at full size) until the
//!     │ run, started once every proxy ACKed the switch, is Successful; Failed: abort
//!     ▼
//!     old version: kept while a proxy may route to it, then scaleDownDelaySeconds, then 0;
//!     beyond scaleDownDelayRevisionLimit older versions go to 0 at once
//!  abort: everything on stableRS (one push: after a switch, back to the previous version); the
//!     new one goes after abortScaleDownDelaySeconds
//! ```
//!
//! The analysis runs: [`crate::bluegreen_analysis`].

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sluice_api::{
    bluegreen::{BlueGreenStatus, BlueGreenStrategy},
    resource::{AnalysisRef, PauseCondition, PublishedTraffic},
};

use crate::{
    Observed,
    bluegreen_analysis::{self as runs, Gate, Promotion},
    conditions::pause_started,
    engine::Cx,
    observed::ObservedVersion,
    spec::Invalid,
    time::{after, until},
};

/// Argo's pause reason for the blue/green pause before promotion.
pub const BLUE_GREEN_PAUSE: &str = "BlueGreenPause";
const FIELD: &str = "spec.strategy.blueGreen";

/// The checked `blueGreen` fields the engine runs (the delays live in the plan). The default is
/// Argo's: automatic promotion, the preview at full size, no revision limit.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BlueGreen {
    pub auto_promotion_enabled: bool,
    /// Zero: no automatic promotion after a pause.
    pub auto_promotion: Duration,
    pub preview_replicas: Option<i32>,
    pub revision_limit: Option<usize>,
    /// `prePromotionAnalysis`, each template named.
    pub pre_promotion: Option<AnalysisRef>,
    /// `postPromotionAnalysis`, each template named.
    pub post_promotion: Option<AnalysisRef>,
}

impl Default for BlueGreen {
    fn default() -> Self {
        BlueGreen {
            auto_promotion_enabled: true,
            auto_promotion: Duration::ZERO,
            preview_replicas: None,
            revision_limit: None,
            pre_promotion: None,
            post_promotion: None,
        }
    }
}

/// Checks `spec.strategy.blueGreen`.
pub(crate) fn check(spec: &BlueGreenStrategy) -> Result<BlueGreen, Invalid> {
    if spec.active_service.is_empty() {
        return Err(Invalid {
            field: format!("{FIELD}.activeService"),
            problem: "is required".into(),
        });
    }
    if spec.preview_service.as_deref() == Some(spec.active_service.as_str()) {
        return Err(Invalid {
            field: format!("{FIELD}.previewService"),
            problem: "must differ from activeService".into(),
        });
    }
    let non_negative = |name: &str, v: Option<i32>| match v {
        Some(v) if v < 0 => Err(Invalid {
            field: format!("{FIELD}.{name}"),
            problem: format!("{v} is negative"),
        }),
        v => Ok(v),
    };
    let seconds = non_negative("autoPromotionSeconds", spec.auto_promotion_seconds)?.unwrap_or(0);
    let analysis = |name: &str, analysis: &Option<AnalysisRef>| match analysis {
        Some(a) => {
            crate::spec::check_templates(&format!("{FIELD}.{name}"), a).map(|()| Some(a.clone()))
        }
        None => Ok(None),
    };
    Ok(BlueGreen {
        auto_promotion_enabled: spec.auto_promotion_enabled.unwrap_or(true),
        auto_promotion: Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
        preview_replicas: non_negative("previewReplicaCount", spec.preview_replica_count)?,
        revision_limit: non_negative(
            "scaleDownDelayRevisionLimit",
            spec.scale_down_delay_revision_limit,
        )?
        .map(|l| usize::try_from(l).unwrap_or(0)),
        pre_promotion: analysis("prePromotionAnalysis", &spec.pre_promotion_analysis)?,
        post_promotion: analysis("postPromotionAnalysis", &spec.post_promotion_analysis)?,
    })
}

/// What the blue/green step decided for this pass.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Outcome {
    /// `stableRS` after this pass: the new version once promoted (at the switch, or with
    /// `postPromotionAnalysis` when its run succeeded).
    pub active: String,
    pub traffic: PublishedTraffic,
    /// Replicas of the versions the rollout runs; others follow the scale-down rules.
    pub targets: BTreeMap<String, i32>,
    pub waiting_on_pods: bool,
    /// The analysis runs the rollout waits on (others still running are terminated).
    pub wanted_runs: Vec<String>,
}

/// What the step needs to know besides the status in `cx`.
pub(crate) struct Input<'a> {
    pub bg: &'a BlueGreen,
    /// The rollout's name (its runs are named after it).
    pub name: &'a str,
    pub replicas: i32,
    /// `stableRS`: the version the active hosts route to before the switch.
    pub active: &'a str,
    pub new: &'a str,
    pub available: &'a dyn Fn(&str) -> i32,
    pub paused: bool,
    /// Whether `traffic` is what is published and every proxy ACKed it.
    pub traffic_done: &'a dyn Fn(&PublishedTraffic) -> bool,
    pub observed: &'a Observed,
}

impl Input<'_> {
    fn run<'a>(&'a self, which: Promotion, analysis: &'a AnalysisRef) -> runs::Run<'a> {
        runs::Run {
            rollout: self.name,
            stable: self.active,
            new: self.new,
            which,
            analysis,
        }
    }
}

/// One pass of a blue/green release of `new` beside `active` (not aborted).
pub(crate) fn step(cx: &mut Cx, input: &Input<'_>) -> Outcome {
    let bg = input.bg;
    runs::retry(cx, input.name, input.new);
    let preview_replicas = bg.preview_replicas.unwrap_or(input.replicas);
    let new_available = (input.available)(input.new);
    let preview = PublishedTraffic {
        stable: input.active.to_owned(),
        preview: Some(input.new.to_owned()),
        ..PublishedTraffic::default()
    };
    let mut outcome = Outcome {
        active: input.active.to_owned(),
        traffic: PublishedTraffic {
            stable: input.active.to_owned(),
            ..PublishedTraffic::default()
        },
        targets: BTreeMap::from([
            (input.active.to_owned(), input.replicas),
            (input.new.to_owned(), preview_replicas),
        ]),
        waiting_on_pods: false,
        wanted_runs: Vec::new(),
    };
    // Switched already (Argo reads the active Service's selector): the post-promotion phase.
    let switched = cx
        .status
        .blue_green
        .as_ref()
        .and_then(|b| b.active_selector.as_deref())
        == Some(input.new);
    if switched {
        return after_switch(cx, input, outcome);
    }
    // The preview hosts route to the new version once it can serve them all.
    if new_available < preview_replicas.max(1) {
        outcome.waiting_on_pods = true;
        return outcome;
    }
    outcome.traffic = preview.clone();
    if !(input.traffic_done)(&preview) {
        return outcome;
    }
    // Argo: the pre-promotion run comes before the pause, and promotion (automatic too) waits
    // for it; `promote --full` skips it.
    if let Some(analysis) = &bg.pre_promotion
        && !cx.status.promote_full
        && runs::gate(
            cx,
            input.observed,
            &input.run(Promotion::Pre, analysis),
            &mut outcome.wanted_runs,
        ) == Gate::Hold
    {
        return outcome;
    }
    if input.paused || !promoted(cx, bg) {
        return outcome;
    }
    // Promotion: the new version at full size first, then the switch.
    outcome.targets.insert(input.new.to_owned(), input.replicas);
    if new_available < input.replicas {
        outcome.waiting_on_pods = true;
        return outcome;
    }
    cx.event(
        false,
        "SwitchService",
        format!(
            "Switched the active hosts from {} to {}",
            input.active, input.new
        ),
    );
    cx.status
        .pause_conditions
        .retain(|p| p.reason != BLUE_GREEN_PAUSE);
    cx.status.controller_pause = false;
    outcome.traffic = PublishedTraffic {
        stable: input.new.to_owned(),
        ..PublishedTraffic::default()
    };
    outcome.waiting_on_pods = false;
    if bg.post_promotion.is_some() && !cx.status.promote_full {
        // stableRS stays the previous version, at full size, until the post-promotion run
        // succeeds: an abort switches the active hosts back to it.
        outcome.targets.insert(input.new.to_owned(), input.replicas);
        return outcome;
    }
    promote(cx, input, outcome)
}

/// After the switch, with `postPromotionAnalysis`: both versions at full size, the active hosts
/// on the new one; its run starts once every proxy has ACKed the switch, and its success makes
/// the new version `stableRS`.
fn after_switch(cx: &mut Cx, input: &Input<'_>, mut outcome: Outcome) -> Outcome {
    outcome.traffic = PublishedTraffic {
        stable: input.new.to_owned(),
        ..PublishedTraffic::default()
    };
    outcome.targets.insert(input.new.to_owned(), input.replicas);
    outcome.waiting_on_pods = (input.available)(input.new) < input.replicas;
    let analysis = match &input.bg.post_promotion {
        Some(analysis) if !cx.status.promote_full => analysis,
        // `promote --full`, or the analysis was removed from the spec: promoted now.
        _ => return promote(cx, input, outcome),
    };
    if !(input.traffic_done)(&outcome.traffic) {
        return outcome;
    }
    match runs::gate(
        cx,
        input.observed,
        &input.run(Promotion::Post, analysis),
        &mut outcome.wanted_runs,
    ) {
        Gate::Passed => {
            outcome.wanted_runs.clear();
            promote(cx, input, outcome)
        }
        Gate::Hold => outcome,
    }
}

/// The new version becomes `stableRS`: the previous one is left to the scale-down rules.
fn promote(cx: &mut Cx, input: &Input<'_>, mut outcome: Outcome) -> Outcome {
    if input.bg.post_promotion.is_some() {
        cx.event(
            false,
            "RolloutPromoted",
            format!(
                "Promoted: {} is stable (the previous version {} is scaled down after its delay)",
                input.new, input.active
            ),
        );
    }
    cx.status.stable_rs = Some(input.new.to_owned());
    cx.status
        .pause_conditions
        .retain(|p| p.reason != BLUE_GREEN_PAUSE);
    cx.status.controller_pause = false;
    cx.status.promote_full = false;
    outcome.active = input.new.to_owned();
    outcome.traffic = PublishedTraffic {
        stable: input.new.to_owned(),
        ..PublishedTraffic::default()
    };
    outcome.targets = BTreeMap::from([(input.new.to_owned(), input.replicas)]);
    outcome.waiting_on_pods = false;
    outcome
}

/// Whether the rollout may promote now: at once with auto-promotion; else after the
/// `BlueGreenPause` is cleared by `promote` (or `autoPromotionSeconds` after it began).
fn promoted(cx: &mut Cx, bg: &BlueGreen) -> bool {
    if cx.status.promote_full {
        return true;
    }
    let auto_after = bg.auto_promotion_enabled && !bg.auto_promotion.is_zero();
    if bg.auto_promotion_enabled && !auto_after {
        return true;
    }
    match pause_started(&cx.status.pause_conditions, BLUE_GREEN_PAUSE) {
        // Not paused yet: pause now (Argo's controller pause).
        None if !cx.status.controller_pause => {
            cx.status.pause_conditions.push(PauseCondition {
                reason: BLUE_GREEN_PAUSE.into(),
                start_time: Time(cx.now),
            });
            cx.status.controller_pause = true;
            cx.event(
                false,
                "RolloutPaused",
                "Rollout paused before promotion (BlueGreenPause)".into(),
            );
            if auto_after {
                cx.requeue(bg.auto_promotion);
            }
            false
        }
        // The pause condition was cleared while the controller's pause stands: promoted.
        None => true,
        // autoPromotionEnabled: false waits for `promote` alone.
        Some(started) if auto_after => match until(cx.now, after(started, bg.auto_promotion)) {
            Some(left) => {
                cx.requeue(left);
                false
            }
            None => true,
        },
        Some(_) => false,
    }
}

/// Argo's `scaleDownDelayRevisionLimit`: of the old versions still running, only the newest
/// `limit` wait out their delay; the others go to 0 now (they get no traffic).
pub(crate) fn revision_limit(
    bg: &BlueGreen,
    versions: &[&ObservedVersion],
    targets: &mut BTreeMap<String, i32>,
) {
    let Some(limit) = bg.revision_limit else {
        return;
    };
    let mut old: Vec<&&ObservedVersion> = versions
        .iter()
        .filter(|v| !targets.contains_key(&v.hash) && v.desired > 0)
        .collect();
    old.sort_by(|a, b| {
        b.revision
            .cmp(&a.revision)
            .then_with(|| a.name.cmp(&b.name))
    });
    for v in old.into_iter().skip(limit) {
        targets.insert(v.hash.clone(), 0);
    }
}

/// Argo's `status.blueGreen` for what is published: the active hosts' hash, and the preview's
/// (the active one when there is no preview).
pub(crate) fn status(traffic: &PublishedTraffic) -> BlueGreenStatus {
    BlueGreenStatus {
        active_selector: Some(traffic.stable.clone()),
        preview_selector: Some(traffic.preview.clone().unwrap_or(traffic.stable.clone())),
        ..BlueGreenStatus::default()
    }
}

/// The `status.blueGreen` to write: [`status`] of what is published, and the promotion runs of
/// `current` (the newest version) from `previous` (this pass's), their phases as observed.
pub(crate) fn full_status(
    traffic: &PublishedTraffic,
    previous: Option<&BlueGreenStatus>,
    observed: &Observed,
    rollout: &str,
    current: &str,
) -> BlueGreenStatus {
    let mut out = status(traffic);
    runs::refresh(previous, observed, rollout, current, &mut out);
    out
}

#[cfg(test)]
#[path = "bluegreen_tests.rs"]
mod tests;
