//! Standalone mode's AnalysisRuns: the engine's `StartAnalysisRun` becomes an
//! [`AnalysisRunRecord`] in the state file (run.rs); here each record that is not complete gets a
//! runner task (`sluice_analysis::runner`), planned from the `AnalysisTemplate` /
//! `ClusterAnalysisTemplate` documents of the rollouts file; the runner's status updates go back
//! into the record, and the engine reads them as `Observed::analysis_runs`.
//!
//! Restart: a run recorded as Running is **resumed** — planned again from the same templates,
//! arguments and hashes, and measured from its kept status (the machine takes what is due by the
//! recorded measurements' `finishedAt` + interval; nothing recorded is lost or repeated).

use std::collections::BTreeMap;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use sluice_analysis::{
    AnalysisDocument, AnalysisError, AnalysisPhase, AnalysisTemplateSpec, RunPlan,
    plan_for_rollout,
    runner::{HttpClient, RunHandle, RunUpdate, spawn},
};
use tokio::sync::mpsc;
use tracing::{error, info};

use super::state::{AnalysisRunRecord, StateFile};

/// The running runs, by [`key`].
#[derive(Debug)]
pub struct Runs {
    client: HttpClient,
    updates: mpsc::UnboundedSender<RunUpdate>,
    handles: BTreeMap<String, RunHandle>,
}

/// The runner's name for a run of a rollout: `<rollout>#<run>` (`#` is in neither).
pub fn key(rollout: &str, run: &str) -> String {
    format!("{rollout}#{run}")
}

impl Runs {
    pub fn new(updates: mpsc::UnboundedSender<RunUpdate>) -> Self {
        Runs {
            client: HttpClient::new(),
            updates,
            handles: BTreeMap::new(),
        }
    }

    /// Starts a task for every record not complete and without one, passes on terminations, and
    /// forgets tasks of runs that are complete or gone. A run that cannot be planned ends at once
    /// as Error with the reason (Argo's InvalidSpec). True when a record changed.
    pub fn sync(&mut self, templates: &[AnalysisDocument], state: &mut StateFile) -> bool {
        let mut changed = false;
        let mut live = Vec::new();
        for (rollout, record) in &mut state.rollouts {
            for run in &mut record.analysis_runs {
                if run.status.phase.completed() {
                    continue;
                }
                let key = key(rollout, &run.name);
                live.push(key.clone());
                if let Some(handle) = self.handles.get(&key) {
                    if run.terminate {
                        handle.terminate();
                    }
                    continue;
                }
                match plan(templates, run) {
                    Ok(plan) => {
                        info!(rollout, run = %run.name, metrics = plan.metrics.len(), resumed = run.status.started_at.is_some(), "analysis run started");
                        let handle = spawn(
                            key.clone(),
                            plan,
                            run.status.clone(),
                            run.terminate,
                            self.client.clone(),
                            self.updates.clone(),
                        );
                        self.handles.insert(key, handle);
                    }
                    Err(e) => {
                        error!(rollout, run = %run.name, error = %e, "analysis run cannot be planned");
                        let now = Time(Timestamp::now());
                        run.status.phase = AnalysisPhase::Error;
                        run.status.message = e.to_string();
                        run.status.started_at.get_or_insert(now.clone());
                        run.status.completed_at = Some(now);
                        changed = true;
                    }
                }
            }
        }
        self.handles.retain(|k, _| live.contains(k));
        changed
    }
}

/// Records a runner's update; true when the record changed.
pub fn apply_update(state: &mut StateFile, update: RunUpdate) -> bool {
    let Some((rollout, run)) = update.name.split_once('#') else {
        return false;
    };
    let Some(record) = state
        .rollouts
        .get_mut(rollout)
        .and_then(|r| r.analysis_runs.iter_mut().find(|r| r.name == run))
    else {
        return false;
    };
    // A completed status is final (a late update of a replaced task changes nothing).
    if record.status.phase.completed() || record.status == update.status {
        return false;
    }
    record.status = update.status;
    true
}

/// The run's plan: its templates found among the file's documents (a `clusterScope` reference
/// reads a ClusterAnalysisTemplate), the rollout's arguments, the stable and canary hashes.
pub fn plan(
    templates: &[AnalysisDocument],
    run: &AnalysisRunRecord,
) -> Result<RunPlan, AnalysisError> {
    let rules = sluice_release::analysis::RunOptions {
        dry_run: run.dry_run.clone(),
        measurement_retention: run.measurement_retention.clone(),
        ..Default::default()
    }
    .rules_template();
    let mut specs: Vec<&AnalysisTemplateSpec> = rules.iter().collect();
    for reference in &run.templates {
        let found = templates.iter().find_map(|doc| match doc {
            AnalysisDocument::Template(t)
                if !reference.cluster_scope
                    && t.metadata.name.as_deref() == Some(&reference.template_name) =>
            {
                Some(&t.spec)
            }
            AnalysisDocument::ClusterTemplate(t)
                if reference.cluster_scope
                    && t.metadata.name.as_deref() == Some(&reference.template_name) =>
            {
                Some(&t.spec.template)
            }
            _ => None,
        });
        specs.push(found.ok_or_else(|| AnalysisError::TemplateNotFound {
            kind: if reference.cluster_scope {
                "ClusterAnalysisTemplate"
            } else {
                "AnalysisTemplate"
            },
            name: reference.template_name.clone(),
        })?);
    }
    plan_for_rollout(&specs, &run.args, &run.stable_hash, &run.canary_hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_analysis::parse_analysis_documents;
    use sluice_api::resource::{AnalysisRunArgument, AnalysisTemplateRef, ArgumentValueFrom};

    const TEMPLATES: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: success-rate}
spec:
  args: [{name: version}, {name: address, value: "http://127.0.0.1:9"}]
  metrics:
  - name: success-rate
    successCondition: result[0] >= 0.95
    provider:
      prometheus:
        address: "{{args.address}}"
        query: rate(x{v="{{args.version}}"}[1m])
"#;

    fn run(template: &str, cluster: bool) -> AnalysisRunRecord {
        AnalysisRunRecord {
            name: "demo-v2-1".into(),
            canary_hash: "v2".into(),
            stable_hash: "v1".into(),
            step_index: 1,
            templates: vec![AnalysisTemplateRef {
                template_name: template.into(),
                cluster_scope: cluster,
            }],
            args: vec![AnalysisRunArgument {
                name: "version".into(),
                value: None,
                value_from: Some(ArgumentValueFrom {
                    pod_template_hash_value: Some("Latest".into()),
                    field_ref: None,
                }),
            }],
            ..AnalysisRunRecord::default()
        }
    }

    #[test]
    fn a_run_is_planned_from_the_files_templates_with_the_canary_hash() {
        let docs = parse_analysis_documents(TEMPLATES).expect("parses");
        let plan = plan(&docs, &run("success-rate", false)).expect("plans");
        let query = &plan.metrics[0]
            .spec
            .provider
            .prometheus
            .as_ref()
            .expect("prometheus")
            .query;
        assert_eq!(query, "rate(x{v=\"v2\"}[1m])");
    }

    #[test]
    fn the_rollouts_dry_run_rules_are_planned_beside_the_templates() {
        let docs = parse_analysis_documents(TEMPLATES).expect("parses");
        let plain = plan(&docs, &run("success-rate", false)).expect("plans");
        assert!(!plain.metrics[0].dry_run);
        let mut record = run("success-rate", false);
        record.dry_run = vec![sluice_api::resource::DryRun {
            metric_name: "success".into(),
        }];
        let planned = plan(&docs, &record).expect("plans");
        assert!(planned.metrics[0].dry_run, "the rule matches unanchored");
    }

    #[test]
    fn a_missing_template_names_it_and_its_kind() {
        let docs = parse_analysis_documents(TEMPLATES).expect("parses");
        let message = plan(&docs, &run("success-rate", true))
            .expect_err("no cluster template")
            .to_string();
        assert_eq!(
            message,
            "ClusterAnalysisTemplate \"success-rate\" not found"
        );
        let message = plan(&docs, &run("latency", false))
            .expect_err("no template")
            .to_string();
        assert_eq!(message, "AnalysisTemplate \"latency\" not found");
    }

    #[tokio::test]
    async fn an_unplannable_run_ends_as_error_and_updates_are_recorded() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut runs = Runs::new(tx);
        let mut state = StateFile::default();
        let record = state.rollouts.entry("default/demo".into()).or_default();
        record.analysis_runs.push(run("latency", false));
        assert!(runs.sync(&[], &mut state));
        let status = &state.rollouts["default/demo"].analysis_runs[0].status;
        assert_eq!(status.phase, AnalysisPhase::Error);
        assert!(status.message.contains("latency"), "{}", status.message);
        // A completed run takes no update.
        let update = RunUpdate {
            name: key("default/demo", "demo-v2-1"),
            status: sluice_analysis::AnalysisRunStatus::default(),
        };
        assert!(!apply_update(&mut state, update));
    }
}
