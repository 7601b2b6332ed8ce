//! Experiment steps: each template runs as a ReplicaSet with a version hash of its own; weighted
//! templates get their share once available and only after the proxies ACKed it; the duration
//! and the required analyses decide the step; a failed analysis aborts in one push; the
//! ReplicaSets go only after the traffic left them (ACKed). Abort and promote end the step.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Sim, rollout};
use sluice_analysis::AnalysisPhase;
use sluice_api::resource::WeightDestination;
use sluice_release::{Action, INCONCLUSIVE_EXPERIMENT, ObservedVersion};

/// The seeds' baseline-vs-canary comparison: 20 % canary, then an experiment with a baseline
/// (stable's template) and a canary template at 10 % each, compared by a required analysis.
const BASELINE_VS_CANARY: &str = "[{setWeight: 20}, {experiment: {duration: 5m, templates: [\
    {name: baseline, specRef: stable, weight: 10}, {name: canary, specRef: canary, weight: 10}], \
    analyses: [{name: compare, templateName: compare-success-rate, requiredForCompletion: true, \
    args: [{name: baseline-hash, value: '{{templates.baseline.podTemplateHash}}'}, \
    {name: canary-hash, value: '{{ templates.canary.podTemplateHash }}'}, \
    {name: stable-hash, valueFrom: {podTemplateHashValue: Stable}}]}]}}, {setWeight: 60}, \
    {pause: {}}]";

fn at_experiment(steps: &str) -> Sim {
    let mut sim = Sim::with_stable("app:1", steps);
    sim.set_image("app:2");
    sim.settle();
    sim
}

fn experiment_versions(sim: &Sim) -> Vec<&ObservedVersion> {
    sim.versions
        .iter()
        .filter(|v| v.experiment.is_some())
        .collect()
}

fn template_hash(sim: &Sim, template: &str) -> String {
    let status = sim.status().experiment.clone().unwrap();
    status
        .template_statuses
        .iter()
        .find(|t| t.name == template)
        .unwrap()
        .pod_template_hash
        .clone()
}

/// (run name, its arguments as (name, value)).
type Started = Vec<(String, Vec<(String, Option<String>)>)>;

fn started(sim: &Sim) -> Started {
    sim.actions
        .iter()
        .filter_map(|a| match a {
            Action::StartAnalysisRun { name, args, .. } => Some((
                name.clone(),
                args.iter()
                    .map(|a| (a.name.clone(), a.value.clone()))
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

fn set_run(sim: &mut Sim, name: &str, phase: AnalysisPhase) {
    let run = sim
        .analysis_runs
        .iter_mut()
        .find(|r| r.name == name)
        .unwrap();
    run.status.phase = phase;
    run.status.message = format!("run {phase}");
}

fn weight(hash: &str, weight: i32) -> WeightDestination {
    WeightDestination {
        pod_template_hash: Some(hash.into()),
        service_name: None,
        weight,
    }
}

#[test]
fn templates_run_as_versions_of_their_own_and_get_their_share_with_the_hashes_resolved() {
    let sim = at_experiment(BASELINE_VS_CANARY);
    let (stable, canary) = (sim.stable(), sim.current());
    assert_eq!(sim.step(), 1);
    let name = format!("demo-{canary}-1");
    let exp = experiment_versions(&sim);
    assert_eq!(exp.len(), 2, "{exp:?}");
    let (baseline, canary_t) = (
        template_hash(&sim, "baseline"),
        template_hash(&sim, "canary"),
    );
    // Distinct versions, even the one from the canary's own template.
    for h in [&baseline, &canary_t] {
        assert!(*h != stable && *h != canary, "{h}");
    }
    assert_ne!(baseline, canary_t);
    let names: Vec<&str> = exp.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        vec![format!("{name}-baseline"), format!("{name}-canary")]
    );
    // The baseline runs the stable's pod template, the canary template the canary's.
    let created: Vec<_> = sim
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::CreateReplicaSet(rs) if rs.metadata.name.as_deref() == Some(names[0]) => {
                Some(rs.clone())
            }
            _ => None,
        })
        .collect();
    let image = created[0]
        .spec
        .template
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("app:1"));
    assert_eq!(
        created[0].spec.selector.match_labels.as_ref().unwrap()["rollouts-pod-template-hash"],
        baseline
    );

    let traffic = sim.traffic();
    assert_eq!(traffic.canary_weight, 20);
    assert_eq!(
        traffic.additional,
        vec![weight(&baseline, 10), weight(&canary_t, 10)]
    );
    let weights = sim.status().canary.clone().unwrap();
    assert_eq!(weights.current_experiment.as_deref(), Some(name.as_str()));
    let weights = weights.weights.unwrap();
    assert_eq!(
        weights.stable.unwrap().weight,
        60,
        "stable gets what is left"
    );
    assert_eq!(weights.additional, traffic.additional);
    let status = sim.status().experiment.clone().unwrap();
    assert_eq!(status.phase, "Running");
    assert!(status.available_at.is_some());

    let runs = started(&sim);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].0, format!("{name}-compare"));
    assert_eq!(
        runs[0].1,
        vec![
            ("baseline-hash".to_owned(), Some(baseline.clone())),
            ("canary-hash".to_owned(), Some(canary_t.clone())),
            ("stable-hash".to_owned(), None),
        ]
    );
    assert_eq!(sim.phase(), "Progressing");
}

#[test]
fn a_required_analysis_success_ends_the_experiment_and_its_replica_sets_go_after_the_ack() {
    let mut sim = at_experiment(BASELINE_VS_CANARY);
    let name = format!("demo-{}-1", sim.current());
    sim.auto_ack = false;
    set_run(
        &mut sim,
        &format!("{name}-compare"),
        AnalysisPhase::Successful,
    );
    sim.settle();
    assert_eq!(
        sim.step(),
        2,
        "the next step (setWeight 60 waits for its ACK)"
    );
    assert_eq!(
        sim.status().experiment.as_ref().unwrap().phase,
        "Successful"
    );
    assert_eq!(
        sim.status().canary.as_ref().unwrap().current_experiment,
        None
    );
    assert!(sim.traffic().additional.is_empty(), "traffic left them");
    // Not ACKed yet: the templates keep their pods.
    assert!(experiment_versions(&sim).iter().all(|v| v.desired == 1));
    sim.ack_all();
    sim.auto_ack = true;
    sim.settle();
    assert!(
        experiment_versions(&sim).is_empty(),
        "scaled to 0, then deleted"
    );
    assert_eq!(sim.deleted.len(), 2, "{:?}", sim.deleted);
    assert_eq!((sim.step(), sim.traffic().canary_weight), (3, 60));
}

#[test]
fn weights_wait_for_available_pods_and_the_duration_for_the_ack() {
    let mut sim = Sim::with_stable("app:1", BASELINE_VS_CANARY);
    sim.kubelet = false;
    sim.set_image("app:2");
    sim.settle();
    // The canary's pods first (step 0).
    for v in sim.versions.iter_mut().filter(|v| v.desired > v.available) {
        v.available = v.desired;
        v.ready = v.desired;
    }
    sim.settle();
    assert_eq!(sim.step(), 1);
    assert_eq!(experiment_versions(&sim).len(), 2, "created");
    assert!(
        sim.traffic().additional.is_empty(),
        "no weight to templates without available pods"
    );
    assert_eq!(sim.status().experiment.as_ref().unwrap().phase, "Pending");
    assert!(started(&sim).is_empty(), "no analysis before availableAt");
    // One template available: still none (Argo routes once every template is available).
    sim.versions
        .iter_mut()
        .filter(|v| v.experiment.is_some())
        .take(1)
        .for_each(|v| v.available = 1);
    sim.settle();
    assert!(sim.traffic().additional.is_empty());
    sim.versions
        .iter_mut()
        .filter(|v| v.experiment.is_some())
        .for_each(|v| v.available = 1);
    // The weights are published, but the proxies have not ACKed: not available yet.
    sim.auto_ack = false;
    sim.settle();
    assert_eq!(sim.traffic().additional.len(), 2);
    let status = sim.status().experiment.clone().unwrap();
    assert_eq!(
        (status.phase.as_str(), status.available_at),
        ("Pending", None)
    );
    assert!(started(&sim).is_empty());
    sim.ack_all();
    sim.settle();
    let status = sim.status().experiment.clone().unwrap();
    assert_eq!(status.phase, "Running");
    assert_eq!(status.available_at.unwrap().0, sim.now);
    assert_eq!(started(&sim).len(), 1);
}

#[test]
fn a_duration_alone_decides_and_is_waited_for() {
    let steps = "[{setWeight: 10}, {experiment: {duration: 90s, templates: \
                 [{name: canary, specRef: canary, replicas: 2}]}}, {setWeight: 50}]";
    let mut sim = at_experiment(steps);
    assert_eq!(sim.step(), 1);
    let out = sim.settle();
    assert!(out.requeue_after.unwrap() <= std::time::Duration::from_secs(90));
    assert!(sim.traffic().additional.is_empty(), "no weight: no share");
    assert_eq!(experiment_versions(&sim)[0].desired, 2);
    sim.advance(89);
    sim.settle();
    assert_eq!(sim.step(), 1);
    sim.advance(1);
    sim.settle();
    assert_eq!(
        sim.stable(),
        sim.current(),
        "the last steps taken: promoted"
    );
    assert!(experiment_versions(&sim).is_empty());
}

#[test]
fn after_the_duration_a_running_optional_analysis_is_stopped() {
    let steps = "[{experiment: {duration: 60, templates: [{name: c, specRef: canary}], \
                 analyses: [{name: watch, templateName: t}]}}]";
    let mut sim = at_experiment(steps);
    let run = format!("demo-{}-0-watch", sim.current());
    assert_eq!(started(&sim)[0].0, run);
    sim.advance(60);
    sim.settle();
    assert!(
        sim.actions
            .iter()
            .any(|a| matches!(a, Action::TerminateAnalysisRun { name } if *name == run))
    );
    assert_eq!(sim.stable(), sim.current(), "promoted after the last step");
    assert_eq!(sim.phase(), "Healthy");
}

#[test]
fn a_required_analysis_holds_the_experiment_past_its_duration() {
    let steps = "[{experiment: {duration: 60, templates: [{name: c, specRef: canary}], \
                 analyses: [{name: must, templateName: t, requiredForCompletion: true}]}}]";
    let mut sim = at_experiment(steps);
    let run = format!("demo-{}-0-must", sim.current());
    sim.advance(600);
    sim.settle();
    assert_eq!(sim.step(), 0, "the required analysis is still running");
    set_run(&mut sim, &run, AnalysisPhase::Successful);
    sim.settle();
    assert_eq!(sim.stable(), sim.current());
}

#[test]
fn a_failed_analysis_aborts_in_one_push_and_the_templates_go_after_the_ack() {
    let mut sim = at_experiment(BASELINE_VS_CANARY);
    let (stable, canary) = (sim.stable(), sim.current());
    let name = format!("demo-{canary}-1");
    let before = sim.published.len();
    sim.auto_ack = false;
    set_run(&mut sim, &format!("{name}-compare"), AnalysisPhase::Failed);
    sim.settle();
    assert!(sim.status().abort);
    assert_eq!(sim.phase(), "Degraded");
    assert!(
        sim.status().message.as_deref().unwrap().contains(&name),
        "{:?}",
        sim.status().message
    );
    let pushed = &sim.published[before..];
    assert_eq!(pushed.len(), 1, "one push: {pushed:?}");
    let traffic = &pushed[0].1;
    assert_eq!(
        (
            traffic.stable.as_str(),
            traffic.canary_weight,
            traffic.additional.len()
        ),
        (stable.as_str(), 0, 0)
    );
    assert_eq!(sim.status().experiment.as_ref().unwrap().phase, "Failed");
    assert!(
        experiment_versions(&sim).iter().all(|v| v.desired == 1),
        "kept until the ACK"
    );
    sim.ack_all();
    sim.settle();
    assert!(experiment_versions(&sim).is_empty());
}

#[test]
fn an_error_aborts_too() {
    let mut sim = at_experiment(BASELINE_VS_CANARY);
    let name = format!("demo-{}-1", sim.current());
    set_run(&mut sim, &format!("{name}-compare"), AnalysisPhase::Error);
    sim.settle();
    assert!(sim.status().abort);
    assert!(sim.traffic().additional.is_empty());
}

#[test]
fn an_inconclusive_analysis_pauses_until_promoted() {
    let mut sim = at_experiment(BASELINE_VS_CANARY);
    let name = format!("demo-{}-1", sim.current());
    set_run(
        &mut sim,
        &format!("{name}-compare"),
        AnalysisPhase::Inconclusive,
    );
    sim.settle();
    assert_eq!(sim.phase(), "Paused");
    assert_eq!(
        sim.status().pause_conditions[0].reason,
        INCONCLUSIVE_EXPERIMENT
    );
    assert!(
        sim.traffic().additional.is_empty(),
        "no share while it waits"
    );
    sim.promote();
    sim.settle();
    assert_eq!(sim.step(), 3, "setWeight 60 taken, at the pause");
    assert!(experiment_versions(&sim).is_empty());
}

#[test]
fn abort_during_the_step_ends_the_experiment() {
    let mut sim = at_experiment(BASELINE_VS_CANARY);
    let name = format!("demo-{}-1", sim.current());
    sim.abort();
    sim.settle();
    let status = sim.status().experiment.clone().unwrap();
    assert_eq!(status.phase, "Successful");
    assert!(status.message.unwrap().contains("aborted"));
    assert!(sim.traffic().additional.is_empty());
    assert_eq!(sim.traffic().canary_weight, 0);
    assert!(experiment_versions(&sim).is_empty());
    let run = format!("{name}-compare");
    assert!(
        sim.actions
            .iter()
            .any(|a| matches!(a, Action::TerminateAnalysisRun { name } if *name == run))
    );
}

#[test]
fn retry_after_an_abort_runs_the_experiment_again() {
    let mut sim = at_experiment(BASELINE_VS_CANARY);
    let run = format!("demo-{}-1-compare", sim.current());
    sim.abort();
    sim.settle();
    assert!(experiment_versions(&sim).is_empty());
    // The driver forgets the terminated run on retry (as the standalone driver does).
    sim.analysis_runs.retain(|r| r.name != run);
    sim.retry();
    sim.settle();
    assert_eq!(sim.step(), 1);
    let status = sim.status().experiment.clone().unwrap();
    assert_eq!(status.phase, "Running", "{status:?}");
    assert_eq!(experiment_versions(&sim).len(), 2);
    assert_eq!(sim.traffic().additional.len(), 2);
    assert_eq!(started(&sim).len(), 2, "the analysis started again");
}

#[test]
fn promote_full_during_the_step_ends_the_experiment_and_promotes() {
    let mut sim = at_experiment(BASELINE_VS_CANARY);
    sim.promote_full();
    sim.settle();
    assert_eq!(sim.stable(), sim.current());
    assert_eq!(sim.phase(), "Healthy");
    assert!(experiment_versions(&sim).is_empty());
    assert!(sim.traffic().additional.is_empty());
}

#[test]
fn an_endless_experiment_runs_until_promote_skips_the_step() {
    // The corpus' preview experiment: no duration, no analysis.
    let steps = "[{experiment: {templates: [{name: canary-preview, specRef: canary, \
                 selector: {matchLabels: {app: preview}}, metadata: {labels: {app: preview}}}]}}, \
                 {setWeight: 50}]";
    let mut sim = at_experiment(steps);
    sim.advance(86_400);
    sim.settle();
    assert_eq!(sim.step(), 0);
    let exp = experiment_versions(&sim);
    assert_eq!(exp.len(), 1);
    sim.skip_step();
    sim.settle();
    assert_eq!(
        sim.stable(),
        sim.current(),
        "setWeight 50 taken, then promoted"
    );
    assert!(experiment_versions(&sim).is_empty());
}

#[test]
fn template_metadata_and_selector_reach_the_replica_set() {
    let steps = "[{experiment: {templates: [{name: canary-preview, specRef: canary, \
                 selector: {matchLabels: {app: preview}}, metadata: {labels: {app: preview}, \
                 annotations: {note: x}}}]}}]";
    let sim = at_experiment(steps);
    let rs = sim
        .actions
        .iter()
        .find_map(|a| match a {
            Action::CreateReplicaSet(rs)
                if rs
                    .metadata
                    .name
                    .as_deref()
                    .unwrap()
                    .ends_with("-canary-preview") =>
            {
                Some(rs.clone())
            }
            _ => None,
        })
        .unwrap();
    let template = rs.spec.template.unwrap().metadata.unwrap();
    assert_eq!(template.labels.as_ref().unwrap()["app"], "preview");
    assert_eq!(template.annotations.as_ref().unwrap()["note"], "x");
    assert_eq!(
        rs.spec.selector.match_labels.as_ref().unwrap()["app"],
        "preview"
    );
}

#[test]
fn a_new_version_during_the_experiment_ends_it() {
    let mut sim = at_experiment(BASELINE_VS_CANARY);
    sim.set_image("app:3");
    sim.settle();
    assert_eq!(sim.step(), 1, "the new canary reaches its own experiment");
    let exp = experiment_versions(&sim);
    assert_eq!(exp.len(), 2, "only the new experiment's: {exp:?}");
    let current = sim.current();
    assert!(exp.iter().all(|v| v.name.contains(&current)));
}

fn invalid(steps: &str) -> String {
    let mut sim = Sim::new(rollout(2, "app:1", steps));
    sim.settle();
    assert_eq!(sim.phase(), "Degraded");
    sim.status().message.clone().unwrap()
}

#[test]
fn bad_experiments_are_rejected_naming_the_field() {
    let cases = [
        (
            "[{experiment: {templates: []}}]",
            "spec.strategy.canary.steps[0].experiment.templates: is empty",
        ),
        (
            "[{experiment: {templates: [{name: a, specRef: other}]}}]",
            "steps[0].experiment.templates[0].specRef: \"other\" is not stable or canary",
        ),
        (
            "[{experiment: {templates: [{name: a, specRef: canary}, {name: a, specRef: stable}]}}]",
            "templates[1].name: \"a\" names two templates",
        ),
        (
            "[{experiment: {templates: [{name: Big, specRef: canary}]}}]",
            "templates[0].name",
        ),
        (
            "[{experiment: {templates: [{name: a, specRef: canary, weight: 101}]}}]",
            "templates[0].weight: 101 is not between 0 and 100",
        ),
        (
            "[{experiment: {templates: [{name: a, specRef: canary, replicas: 0, weight: 5}]}}]",
            "templates[0].weight: a template with a weight needs replicas",
        ),
        (
            "[{experiment: {templates: [{name: a, specRef: canary, replicas: -1}]}}]",
            "templates[0].replicas: -1 is negative",
        ),
        (
            "[{setWeight: 60}, {experiment: {templates: [{name: a, specRef: canary, weight: 30}, \
             {name: b, specRef: stable, weight: 20}]}}]",
            "steps[1].experiment.templates: the canary's weight 60 and the templates' weights \
             add up to 110",
        ),
        (
            "[{experiment: {duration: soon, templates: [{name: a, specRef: canary}]}}]",
            "steps[0].experiment.duration",
        ),
        (
            "[{experiment: {templates: [{name: a, specRef: canary}], analyses: [{name: x, \
             templateName: t, args: [{name: h, value: '{{templates.b.podTemplateHash}}'}]}]}}]",
            "steps[0].experiment.analyses[0].args[0].value",
        ),
        (
            "[{experiment: {templates: [{name: a, specRef: canary}], analyses: [{name: x}]}}]",
            "analyses[0].templateName: is required",
        ),
        (
            "[{experiment: {templates: [{name: a, specRef: canary, version: v2}]}}]",
            "templates[0].version: is for standalone rollouts",
        ),
        (
            "[{setWeight: 10, experiment: {templates: [{name: a, specRef: canary}]}}]",
            "steps[0]: a step sets at most one of",
        ),
    ];
    for (steps, expected) in cases {
        let message = invalid(steps);
        assert!(message.contains(expected), "{steps}: {message}");
    }
}
