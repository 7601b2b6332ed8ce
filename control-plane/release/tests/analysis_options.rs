//! Argo's `dryRun`, `measurementRetention` and `analysisRunMetadata` of the rollout's analyses
//! (`steps[].analysis`, `strategy.canary.analysis`: Argo's `RolloutAnalysis`) and of an
//! experiment step: every run the engine starts carries them, and dry-run metrics never fail a
//! run, so never an experiment.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::Sim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sluice_analysis::{
    AnalysisDocument, AnalysisPhase, AnalysisRunStatus, Measurement, PodHashes, advance,
    parse_analysis_documents, plan_run,
};
use sluice_api::resource::{AnalysisRunMetadata, DryRun, MeasurementRetention};
use sluice_release::{Action, analysis::RunOptions};

/// The options of every run started so far, by name.
fn options(sim: &Sim) -> Vec<(String, RunOptions)> {
    sim.actions
        .iter()
        .filter_map(|a| match a {
            Action::StartAnalysisRun { name, options, .. } => Some((name.clone(), options.clone())),
            _ => None,
        })
        .collect()
}

fn metadata() -> AnalysisRunMetadata {
    AnalysisRunMetadata {
        labels: BTreeMap::from([("team".to_owned(), "checkout".to_owned())]),
        annotations: BTreeMap::from([("owner".to_owned(), "sre".to_owned())]),
    }
}

const METADATA: &str = "analysisRunMetadata: {labels: {team: checkout}, annotations: {owner: sre}}";

#[test]
fn an_analysis_step_run_carries_the_rules_and_the_metadata() {
    let steps = format!(
        "[{{setWeight: 20}}, {{analysis: {{templates: [{{templateName: success-rate}}], \
         dryRun: [{{metricName: latency}}], measurementRetention: [{{metricName: '.*', limit: 20}}], \
         {METADATA}}}}}, {{setWeight: 60}}]"
    );
    let mut sim = Sim::with_stable("app:1", &steps);
    sim.set_image("app:2");
    sim.settle();
    let started = options(&sim);
    assert_eq!(started.len(), 1, "{started:?}");
    let (name, options) = &started[0];
    assert_eq!(name, &format!("demo-{}-1", sim.current()));
    assert_eq!(
        options,
        &RunOptions {
            dry_run: vec![DryRun {
                metric_name: "latency".into()
            }],
            measurement_retention: vec![MeasurementRetention {
                metric_name: ".*".into(),
                limit: 20
            }],
            metadata: metadata(),
        }
    );
}

#[test]
fn a_background_run_carries_them_too() {
    let mut sim = Sim::with_stable("app:1", "[{setWeight: 20}, {pause: {}}]");
    let canary = sim
        .rollout
        .spec
        .strategy
        .canary
        .as_mut()
        .expect("a canary strategy");
    canary.analysis = Some(sluice_api::resource::AnalysisRef {
        templates: vec![sluice_api::resource::AnalysisTemplateRef {
            template_name: "success-rate".into(),
            cluster_scope: false,
        }],
        dry_run: vec![DryRun {
            metric_name: "*".into(),
        }],
        analysis_run_metadata: Some(metadata()),
        ..Default::default()
    });
    sim.set_image("app:2");
    sim.settle();
    let started = options(&sim);
    assert_eq!(started.len(), 1, "{started:?}");
    assert!(started[0].0.ends_with("-background"), "{started:?}");
    assert_eq!(started[0].1.dry_run.len(), 1);
    assert_eq!(started[0].1.metadata, metadata());
}

const EXPERIMENT: &str = "[{experiment: {templates: [\
    {name: baseline, specRef: stable, weight: 10}, {name: canary, specRef: canary, weight: 10}], \
    analyses: [{name: compare, templateName: compare, requiredForCompletion: true}], \
    dryRun: [{metricName: latency}], \
    analysisRunMetadata: {labels: {team: checkout}, annotations: {owner: sre}}}}, {pause: {}}]";

/// The `compare` template: a success rate and a latency, the latency failing.
fn compare_run_phase(options: &RunOptions) -> AnalysisPhase {
    let text = "apiVersion: sluice.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: compare}\n\
        spec:\n  metrics:\n  - name: rate\n    successCondition: result[0] >= 0.95\n    \
        provider: {prometheus: {address: 'http://127.0.0.1:1', query: up}}\n  - name: latency\n    \
        successCondition: result[0] < 20\n    \
        provider: {prometheus: {address: 'http://127.0.0.1:1', query: up}}\n";
    let docs = parse_analysis_documents(text).unwrap();
    let AnalysisDocument::Template(template) = &docs[0] else {
        panic!("not a template")
    };
    let rules = options.rules_template();
    let specs: Vec<_> = rules.iter().chain([&template.spec]).collect();
    let plan = plan_run(&specs, &[], &PodHashes::default()).unwrap();
    let now = common::t0();
    let m = |phase, value: &str| Measurement {
        phase,
        started_at: Some(Time(now)),
        finished_at: Some(Time(now)),
        value: value.into(),
        ..Measurement::default()
    };
    advance(
        &plan,
        &AnalysisRunStatus::default(),
        vec![
            ("rate".into(), m(AnalysisPhase::Successful, "[1]")),
            ("latency".into(), m(AnalysisPhase::Failed, "[40]")),
        ],
        false,
        now,
    )
    .status
    .phase
}

#[test]
fn dry_run_metrics_never_fail_an_experiment() {
    let mut sim = Sim::with_stable("app:1", EXPERIMENT);
    sim.set_image("app:2");
    sim.settle();
    let started = options(&sim);
    assert_eq!(started.len(), 1, "{started:?}");
    let (name, options) = started[0].clone();
    assert_eq!(options.metadata, metadata());
    // Without the step's rule the failing latency fails the run (and would abort).
    assert_eq!(
        compare_run_phase(&RunOptions::default()),
        AnalysisPhase::Failed
    );
    let phase = compare_run_phase(&options);
    assert_eq!(phase, AnalysisPhase::Successful);
    let run = sim
        .analysis_runs
        .iter_mut()
        .find(|r| r.name == name)
        .unwrap();
    run.status.phase = phase;
    sim.settle();
    assert!(!sim.status().abort);
    assert_eq!(
        sim.status().experiment.as_ref().unwrap().phase,
        "Successful"
    );
    assert_eq!(sim.step(), 1, "the next step");
}
