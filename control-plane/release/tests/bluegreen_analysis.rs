//! Blue/green `prePromotionAnalysis` and `postPromotionAnalysis` through the engine, one
//! transition per test in the simulated world of `common` (Argo's rollout/analysis.go):
//! pre-promotion success → promote, failure → abort with nothing switched; post-promotion failure
//! → the active hosts back on the previous version in one push, which was never scaled down;
//! success → the previous version goes after its delay; runs no longer waited on are terminated;
//! a retry starts the runs again.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Sim, rollout};
use sluice_analysis::{AnalysisPhase, AnalysisRunStatus, Measurement, MetricResult};
use sluice_api::{Rollout, bluegreen::RolloutAnalysisRunStatus};
use sluice_release::{Action, BLUE_GREEN_PAUSE, INCONCLUSIVE_ANALYSIS_RUN};

const PRE: &str = "prePromotionAnalysis: {templates: [{templateName: smoke}], \
                   args: [{name: new, valueFrom: {podTemplateHashValue: Latest}}, \
                          {name: old, valueFrom: {podTemplateHashValue: Stable}}]}";
const POST: &str = "postPromotionAnalysis: {templates: [{templateName: success-rate}]}";

fn blue_green(fields: &str) -> Rollout {
    let mut r = rollout(2, "app:1", "[]");
    r.spec.strategy.canary = None;
    r.spec.strategy.blue_green = Some(
        serde_yaml::from_str(&format!(
            "{{activeService: demo-active, previewService: demo-preview, {fields}}}"
        ))
        .unwrap(),
    );
    r
}

/// Healthy at app:1, then app:2 reconciled until it waits: (sim, old hash, new hash).
fn released(fields: &str) -> (Sim, String, String) {
    let mut sim = Sim::new(blue_green(fields));
    sim.settle();
    assert_eq!(sim.phase(), "Healthy");
    let old = sim.stable();
    sim.set_image("app:2");
    sim.settle();
    let new = sim.current();
    assert_ne!(old, new);
    (sim, old, new)
}

fn started(sim: &Sim) -> Vec<String> {
    sim.actions
        .iter()
        .filter_map(|a| match a {
            Action::StartAnalysisRun { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn terminated(sim: &Sim) -> Vec<String> {
    sim.actions
        .iter()
        .filter_map(|a| match a {
            Action::TerminateAnalysisRun { name } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// Ends the run `name` with `phase` (one metric, one measurement of `value`).
fn finish(sim: &mut Sim, name: &str, phase: AnalysisPhase, value: &str) {
    let run = sim
        .analysis_runs
        .iter_mut()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no run {name}"));
    run.status = AnalysisRunStatus {
        phase,
        message: format!("Metric \"m\" assessed {phase}"),
        metric_results: vec![MetricResult {
            name: "m".into(),
            phase,
            measurements: vec![Measurement {
                phase,
                value: value.into(),
                ..Measurement::default()
            }],
            ..MetricResult::default()
        }],
        ..AnalysisRunStatus::default()
    };
}

fn run_status(sim: &Sim, post: bool) -> Option<RolloutAnalysisRunStatus> {
    let bg = sim.status().blue_green.clone().unwrap();
    if post {
        bg.post_promotion_analysis_run_status
    } else {
        bg.pre_promotion_analysis_run_status
    }
}

/// Whether any published generation routed the active hosts to `hash`.
fn ever_active(sim: &Sim, hash: &str) -> bool {
    sim.published.iter().any(|(_, t)| t.stable == hash)
}

/// The replicas every ScaleReplicaSet action gave the version `hash`.
fn scaled(sim: &Sim, hash: &str) -> Vec<i32> {
    sim.actions
        .iter()
        .filter_map(|a| match a {
            Action::ScaleReplicaSet { name, replicas } if name.ends_with(hash) => Some(*replicas),
            _ => None,
        })
        .collect()
}

#[test]
fn the_pre_promotion_run_starts_on_the_acked_preview_and_holds_automatic_promotion() {
    let (mut sim, old, new) = released(PRE);
    let run = format!("demo-{new}-pre");
    assert_eq!(started(&sim), vec![run.clone()]);
    // Against the preview: published (the active hosts on the old version) before the run.
    assert_eq!(sim.traffic().preview.as_deref(), Some(new.as_str()));
    assert_eq!(sim.traffic().stable, old);
    // `Latest` is the new version, `Stable` the active one.
    let (canary_hash, stable_hash, args) = sim
        .actions
        .iter()
        .find_map(|a| match a {
            Action::StartAnalysisRun {
                canary_hash,
                stable_hash,
                args,
                ..
            } => Some((canary_hash.clone(), stable_hash.clone(), args.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!((canary_hash, stable_hash), (new.clone(), old.clone()));
    assert_eq!(args.len(), 2);
    // Automatic promotion waits for the run, however long it takes.
    sim.advance(3600);
    sim.settle();
    assert_eq!(sim.stable(), old);
    assert!(!ever_active(&sim, &new));
    assert_eq!(sim.phase(), "Progressing");
    assert_eq!(
        sim.status().message.as_deref(),
        Some("active service cutover pending")
    );
    assert_eq!(
        run_status(&sim, false),
        Some(RolloutAnalysisRunStatus {
            name: run.clone(),
            status: "Running".into(),
            message: String::new(),
        }),
        "status.blueGreen.prePromotionAnalysisRunStatus as Argo writes it"
    );
    assert_eq!(started(&sim).len(), 1, "started once");
    finish(&mut sim, &run, AnalysisPhase::Successful, "[1]");
    sim.settle();
    assert_eq!(sim.stable(), new, "promoted");
    assert_eq!(sim.traffic().stable, new);
    assert_eq!(sim.phase(), "Healthy");
    assert_eq!(run_status(&sim, false).unwrap().status, "Successful");
    assert!(terminated(&sim).is_empty(), "{:?}", terminated(&sim));
}

#[test]
fn the_blue_green_pause_comes_after_a_successful_pre_promotion_run() {
    let (mut sim, old, new) = released(&format!("autoPromotionEnabled: false, {PRE}"));
    assert!(
        sim.status().pause_conditions.is_empty(),
        "no pause while the run runs (Argo)"
    );
    finish(
        &mut sim,
        &format!("demo-{new}-pre"),
        AnalysisPhase::Successful,
        "[1]",
    );
    sim.settle();
    assert_eq!(sim.status().pause_conditions[0].reason, BLUE_GREEN_PAUSE);
    assert_eq!(sim.stable(), old);
    sim.promote();
    sim.settle();
    assert_eq!(sim.stable(), new);
}

#[test]
fn a_failed_pre_promotion_run_aborts_and_nothing_is_switched() {
    let (mut sim, old, new) = released(&format!("abortScaleDownDelaySeconds: 10, {PRE}"));
    let run = format!("demo-{new}-pre");
    finish(&mut sim, &run, AnalysisPhase::Failed, "[0.5]");
    sim.settle();
    assert!(sim.status().abort);
    assert_eq!(sim.phase(), "Degraded");
    assert_eq!(sim.stable(), old);
    assert_eq!(sim.traffic().stable, old);
    assert_eq!(sim.traffic().preview, None);
    assert!(
        !ever_active(&sim, &new),
        "the active hosts never left {old}"
    );
    let message = sim.status().message.clone().unwrap();
    assert!(
        message.starts_with("RolloutAborted") && message.contains(&run),
        "{message}"
    );
    assert!(
        sim.events()
            .iter()
            .any(|e| e.contains("Blue/green pre-promotion analysis phase error/failed")),
        "{:?}",
        sim.events()
    );
    assert_eq!(run_status(&sim, false).unwrap().status, "Failed");
    assert_eq!(sim.version(&old).desired, 2);
    sim.advance(11);
    sim.settle();
    assert_eq!(
        sim.version(&new).desired,
        0,
        "after abortScaleDownDelaySeconds"
    );
}

#[test]
fn a_retry_after_a_failed_pre_promotion_run_runs_it_again() {
    let (mut sim, _, new) = released(PRE);
    finish(
        &mut sim,
        &format!("demo-{new}-pre"),
        AnalysisPhase::Failed,
        "[0.5]",
    );
    sim.settle();
    sim.retry();
    sim.settle();
    let again = format!("demo-{new}-pre.2");
    assert_eq!(started(&sim).last(), Some(&again));
    assert_eq!(sim.status().aborted_at, None);
    assert_eq!(sim.phase(), "Progressing");
    finish(&mut sim, &again, AnalysisPhase::Successful, "[1]");
    sim.settle();
    assert_eq!(sim.stable(), new);
}

#[test]
fn the_post_promotion_run_starts_once_every_proxy_acked_the_switch() {
    let mut sim = Sim::new(blue_green(POST));
    sim.settle();
    let old = sim.stable();
    sim.set_image("app:2");
    // ACK everything up to the switch, not the switch itself.
    sim.auto_ack = false;
    for _ in 0..20 {
        sim.pass();
        if sim.traffic().stable != old {
            break;
        }
        sim.ack_all();
    }
    let new = sim.current();
    assert_eq!(sim.traffic().stable, new, "switched");
    assert_eq!(sim.stable(), old, "stableRS stays the previous version");
    for _ in 0..3 {
        sim.pass();
    }
    assert!(started(&sim).is_empty(), "not before the switch is ACKed");
    sim.ack_all();
    sim.settle();
    assert_eq!(started(&sim), vec![format!("demo-{new}-post")]);
    assert_eq!(sim.stable(), old);
    assert_eq!(
        sim.status().message.as_deref(),
        Some("waiting for analysis to complete")
    );
}

#[test]
fn a_failed_post_promotion_run_switches_back_in_one_push_and_the_old_version_was_never_scaled_down()
{
    let (mut sim, old, new) = released(&format!("scaleDownDelaySeconds: 5, {POST}"));
    let run = format!("demo-{new}-post");
    assert_eq!(started(&sim), vec![run.clone()]);
    assert_eq!(sim.traffic().stable, new, "switched");
    assert_eq!(sim.stable(), old);
    // Far past scaleDownDelaySeconds, the previous version keeps all its pods.
    sim.advance(600);
    sim.settle();
    assert_eq!(sim.version(&old).desired, 2);
    assert_eq!(sim.version(&new).desired, 2);
    let before = sim.status().data_plane.clone().unwrap().generation;
    finish(&mut sim, &run, AnalysisPhase::Failed, "[0.8]");
    sim.settle();
    let dp = sim.status().data_plane.clone().unwrap();
    assert_eq!(dp.traffic.stable, old, "the active hosts are back");
    assert_eq!(dp.generation, before + 1, "in one push");
    assert!(sim.status().abort);
    assert_eq!(sim.stable(), old);
    assert_eq!(sim.phase(), "Degraded");
    let bg = sim.status().blue_green.clone().unwrap();
    assert_eq!(bg.active_selector.as_deref(), Some(old.as_str()));
    assert_eq!(
        bg.post_promotion_analysis_run_status.unwrap().status,
        "Failed"
    );
    let message = sim.status().message.clone().unwrap();
    assert!(
        message.contains(&run) && message.contains("[0.8]"),
        "{message}"
    );
    assert!(
        scaled(&sim, &old).is_empty(),
        "the previous version was never scaled: {:?}",
        scaled(&sim, &old)
    );
    assert_eq!(sim.version(&old).desired, 2);
}

#[test]
fn a_successful_post_promotion_run_promotes_and_the_old_version_goes_after_its_delay() {
    let (mut sim, old, new) = released(&format!("scaleDownDelaySeconds: 30, {POST}"));
    sim.advance(100);
    sim.settle();
    assert_eq!(sim.version(&old).desired, 2, "the delay waits for the run");
    finish(
        &mut sim,
        &format!("demo-{new}-post"),
        AnalysisPhase::Successful,
        "[1]",
    );
    sim.settle();
    assert_eq!(sim.stable(), new);
    assert_eq!(sim.phase(), "Healthy");
    assert_eq!(run_status(&sim, true).unwrap().status, "Successful");
    sim.advance(29);
    sim.settle();
    assert_eq!(sim.version(&old).desired, 2);
    sim.advance(2);
    sim.settle();
    assert_eq!(sim.version(&old).desired, 0);
    assert!(terminated(&sim).is_empty(), "{:?}", terminated(&sim));
}

#[test]
fn an_inconclusive_post_promotion_run_pauses_until_promoted() {
    let (mut sim, old, new) = released(POST);
    finish(
        &mut sim,
        &format!("demo-{new}-post"),
        AnalysisPhase::Inconclusive,
        "[0.9]",
    );
    sim.settle();
    assert_eq!(sim.phase(), "Paused");
    assert_eq!(
        sim.status().pause_conditions[0].reason,
        INCONCLUSIVE_ANALYSIS_RUN
    );
    assert_eq!(sim.stable(), old);
    assert_eq!(sim.version(&old).desired, 2);
    // Promoted past it, Argo measures again: a new run, which decides.
    sim.promote();
    sim.settle();
    let again = format!("demo-{new}-post.2");
    assert_eq!(started(&sim).last(), Some(&again));
    assert_eq!(sim.stable(), old);
    finish(&mut sim, &again, AnalysisPhase::Successful, "[1]");
    sim.settle();
    assert_eq!(sim.stable(), new);
}

#[test]
fn promoting_past_an_inconclusive_pre_promotion_run_reaches_the_blue_green_pause() {
    let (mut sim, old, new) = released(&format!("autoPromotionEnabled: false, {PRE}"));
    finish(
        &mut sim,
        &format!("demo-{new}-pre"),
        AnalysisPhase::Inconclusive,
        "[0.9]",
    );
    sim.settle();
    assert_eq!(
        sim.status().pause_conditions[0].reason,
        INCONCLUSIVE_ANALYSIS_RUN
    );
    sim.promote();
    sim.settle();
    let again = format!("demo-{new}-pre.2");
    assert_eq!(started(&sim).last(), Some(&again));
    finish(&mut sim, &again, AnalysisPhase::Successful, "[1]");
    sim.settle();
    assert_eq!(sim.status().pause_conditions[0].reason, BLUE_GREEN_PAUSE);
    assert_eq!(sim.stable(), old);
    // One promote of the BlueGreenPause promotes (the inconclusive run is not asked again).
    sim.promote();
    sim.settle();
    assert_eq!(sim.stable(), new);
}

#[test]
fn runs_no_longer_waited_on_are_terminated() {
    // A newer version while the pre-promotion run runs.
    let (mut sim, _, new) = released(PRE);
    sim.set_image("app:3");
    sim.settle();
    let newest = sim.current();
    assert_ne!(newest, new);
    assert_eq!(terminated(&sim), vec![format!("demo-{new}-pre")]);
    assert_eq!(
        run_status(&sim, false).unwrap().name,
        format!("demo-{newest}-pre"),
        "the status names the newest version's run"
    );
    // An abort while the post-promotion run runs: switched back, the run stopped.
    let (mut sim, old, new) = released(POST);
    sim.abort();
    sim.settle();
    assert_eq!(terminated(&sim), vec![format!("demo-{new}-post")]);
    assert_eq!(sim.traffic().stable, old);
    // promote --full skips both runs.
    let (mut sim, _, new) = released(&format!("{PRE}, {POST}"));
    sim.promote_full();
    sim.settle();
    assert_eq!(terminated(&sim), vec![format!("demo-{new}-pre")]);
    assert_eq!(sim.stable(), new);
    assert_eq!(started(&sim).len(), 1, "{:?}", started(&sim));
}

#[test]
fn a_retry_after_a_post_promotion_failure_runs_both_again() {
    let (mut sim, old, new) = released(&format!("{PRE}, {POST}"));
    finish(
        &mut sim,
        &format!("demo-{new}-pre"),
        AnalysisPhase::Successful,
        "[1]",
    );
    sim.settle();
    finish(
        &mut sim,
        &format!("demo-{new}-post"),
        AnalysisPhase::Failed,
        "[0.1]",
    );
    sim.settle();
    assert_eq!(sim.traffic().stable, old);
    sim.retry();
    sim.settle();
    assert_eq!(started(&sim).last(), Some(&format!("demo-{new}-pre.2")));
    finish(
        &mut sim,
        &format!("demo-{new}-pre.2"),
        AnalysisPhase::Successful,
        "[1]",
    );
    sim.settle();
    assert_eq!(sim.traffic().stable, new, "switched again");
    assert_eq!(started(&sim).last(), Some(&format!("demo-{new}-post.2")));
    finish(
        &mut sim,
        &format!("demo-{new}-post.2"),
        AnalysisPhase::Successful,
        "[1]",
    );
    sim.settle();
    assert_eq!(sim.stable(), new);
    assert_eq!(sim.phase(), "Healthy");
}

#[test]
fn the_abort_message_names_the_newest_failed_attempt() {
    let (mut sim, old, new) = released(PRE);
    finish(
        &mut sim,
        &format!("demo-{new}-pre"),
        AnalysisPhase::Failed,
        "[0.5]",
    );
    sim.settle();
    sim.retry();
    sim.settle();
    let again = format!("demo-{new}-pre.2");
    finish(&mut sim, &again, AnalysisPhase::Error, "[0.4]");
    sim.settle();
    assert!(sim.status().abort);
    assert_eq!(sim.traffic().stable, old);
    let message = sim.status().message.clone().unwrap();
    assert!(
        message.contains(&format!("AnalysisRun {again} Error")),
        "{message}"
    );
    assert_eq!(run_status(&sim, false).unwrap().name, again);
}
