//! Every Argo Rollouts `Rollout` with a pod template (its own, or through `workloadRef` that of a
//! Deployment in the same file) in the shared corpus, turned into a
//! `sluice.dev` Rollout, goes through the engine: the first version deploys and becomes Healthy,
//! then a new template is released to the end (timed pauses elapse, `pause: {}` is promoted, an
//! endless experiment is promoted past) —
//! or the engine rejects it with an `InvalidSpec` naming the field. Never a panic, never stuck.
//!
//! The corpus is read from `../shared/corpus/argo-rollouts` beside the repository; the test is
//! skipped (with a note) where it is absent.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::Sim;
use k8s_openapi::api::apps::v1::Deployment;
use serde::Deserialize;
use sluice_api::{ARGO_API_VERSION, ArgoRollout, Rollout};
use sluice_release::ObservedWorkload;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/argo-rollouts")
}

/// The Argo Rollouts with a template (their own, or a Deployment's of the same file through
/// `workloadRef`) in one file, as (document number, rollout, the Deployment); reading stops at the
/// first document that is not YAML.
type Found = (
    usize,
    Result<ArgoRollout, serde_yaml::Error>,
    Option<ObservedWorkload>,
);

fn rollouts_with_template(text: &str) -> Vec<Found> {
    let mut values = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let Ok(value) = serde_yaml::Value::deserialize(doc) else {
            break;
        };
        values.push(value);
    }
    let kind = |v: &serde_yaml::Value| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned);
    let deployments: Vec<Deployment> = values
        .iter()
        .filter(|v| kind(v).as_deref() == Some("Deployment"))
        .filter_map(|v| serde_yaml::from_value(v.clone()).ok())
        .collect();
    let mut out = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let is_rollout = kind(&value).as_deref() == Some("Rollout")
            && value.get("apiVersion").and_then(|k| k.as_str()) == Some(ARGO_API_VERSION);
        let spec = value.get("spec");
        let workload = spec
            .and_then(|s| s.get("workloadRef"))
            .and_then(|w| w.get("name"))
            .and_then(|n| n.as_str())
            .and_then(|name| {
                deployments
                    .iter()
                    .find(|d| d.metadata.name.as_deref() == Some(name))
            })
            .map(|d| ObservedWorkload {
                name: d.metadata.name.clone().unwrap_or_default(),
                template: d.spec.template.clone(),
                selector: Some(d.spec.selector.clone()),
                replicas: d.spec.replicas.unwrap_or(1),
            });
        let has_template = spec.and_then(|s| s.get("template")).is_some();
        if is_rollout && (has_template || workload.is_some()) {
            out.push((i + 1, serde_yaml::from_value(value), workload));
        }
    }
    out
}

/// Releases a new template to the end; `Err` is the InvalidSpec message.
fn release(
    rollout: Rollout,
    workload: Option<ObservedWorkload>,
    label: &str,
) -> Result<usize, String> {
    let mut sim = Sim::new(rollout);
    sim.workload = workload;
    sim.settle();
    if sim.phase() == "Degraded" {
        return Err(sim.status().message.clone().unwrap_or_default());
    }
    assert_eq!(
        sim.phase(),
        "Healthy",
        "{label}: initial deploy: {:?}",
        sim.status()
    );
    let first = sim.stable();
    let template = match sim.workload.as_mut() {
        Some(workload) => &mut workload.template,
        None => sim.rollout.spec.template.as_mut().unwrap(),
    };
    template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default)
        .insert("corpus/release".into(), "2".into());
    let mut rounds = 0;
    let mut last_experiment = None;
    while sim.stable() == first || sim.stable() != sim.current() || sim.phase() != "Healthy" {
        rounds += 1;
        assert!(rounds < 100, "{label}: stuck: {:?}", sim.status());
        sim.settle();
        // The driver measures the runs; here every analysis passes (its outcomes have their own
        // tests in analysis_steps.rs), so the walk reaches the end of the steps.
        for run in &mut sim.analysis_runs {
            run.status.phase = sluice_analysis::AnalysisPhase::Successful;
        }
        let experiment = sim
            .status()
            .canary
            .as_ref()
            .and_then(|c| c.current_experiment.clone());
        if sim.phase() == "Paused" {
            sim.promote();
        } else if experiment.is_some() && experiment == last_experiment {
            // An experiment without duration or required analysis runs until promoted: Argo's
            // plugin then moves the step on.
            sim.skip_step();
        }
        last_experiment = experiment;
        sim.advance(3600);
    }
    assert_ne!(sim.stable(), first, "{label}");
    Ok(rounds)
}

#[test]
fn every_corpus_rollout_with_a_template_releases_or_is_rejected_naming_the_field() {
    let dir = corpus_dir();
    if !dir.is_dir() {
        eprintln!(
            "note: {} is absent; skipping the corpus test",
            dir.display()
        );
        return;
    }
    let mut files = Vec::new();
    sluice_e2e::paths::yaml_files(&dir, &mut files);
    let (mut released, mut rejected, mut unparsed, mut experiments) = (0, 0, 0, 0);
    for file in &files {
        let relative = file.strip_prefix(&dir).unwrap().display().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        for (document, parsed, workload) in rollouts_with_template(&text) {
            let label = format!("{relative} document {document}");
            let argo = match parsed {
                Ok(argo) => argo,
                Err(error) => {
                    // Only the manifests Argo's e2e tests expect to fail may not parse.
                    assert!(
                        relative.starts_with("test/e2e/expectedfailures/"),
                        "{label}: {error}"
                    );
                    unparsed += 1;
                    continue;
                }
            };
            let mut rollout = Rollout::from(argo);
            rollout.metadata.uid = Some("uid-1".into());
            let has_experiment = rollout
                .spec
                .strategy
                .canary
                .as_ref()
                .is_some_and(|c| c.steps.iter().any(|s| s.experiment.is_some()));
            match release(rollout, workload, &label) {
                Ok(_) => {
                    released += 1;
                    experiments += usize::from(has_experiment);
                }
                Err(message) => {
                    assert!(!has_experiment, "{label}: an experiment rollout: {message}");
                    let field = message.strip_prefix("InvalidSpec: ").unwrap_or("");
                    assert!(
                        field.starts_with("spec.") || field.starts_with("metadata."),
                        "{label}: {message}"
                    );
                    eprintln!("rejected {label}: {message}");
                    rejected += 1;
                }
            }
        }
    }
    eprintln!("{released} released, {rejected} rejected naming the field, {unparsed} not parsed");
    assert!(released >= 20, "only {released} released");
    // Argo's experiment examples and e2e manifests (baseline vs canary, preview, weighted
    // templates with analyses) all run.
    eprintln!("{experiments} with experiment steps released");
    assert!(
        experiments >= 10,
        "only {experiments} experiment rollouts released"
    );
}
