//! Sluice's `Experiment` resource (`kubectl get experiment`, short name `exp`), Argo Rollouts'
//! `Experiment` field for field where it applies. The release engine runs an experiment step
//! inside the rollout (`status.experiment`); in Kubernetes mode the controller also keeps one
//! `Experiment` object per experiment, owned by the Rollout, whose status follows the engine's:
//!
//! ```text
//!  steps[i].experiment ─engine─► status.experiment (name, phase, availableAt, ...)
//!                          └──► Experiment <rollout>-<canary hash>-<i>  spec: the resolved
//!                               templates, duration, analyses; status: as status.experiment
//! ```

use k8s_openapi::{
    api::core::v1::PodTemplateSpec,
    apimachinery::pkg::apis::meta::v1::{LabelSelector, Time},
};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    ApiError,
    experiment::{
        ExperimentAnalysis, ExperimentAnalysisRunStatus, ExperimentTemplateStatus,
        RolloutExperimentStatus,
    },
};

/// An experiment: ReplicaSets of its `templates` run for `duration` while its `analyses` measure
/// them (Argo's `ExperimentSpec`). Sluice's controller creates it for a Rollout's experiment
/// step; the Rollout's engine runs it, so the object records what runs and how it went.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Experiment",
    plural = "experiments",
    namespaced,
    status = "ExperimentStatus",
    shortname = "exp",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentSpec {
    /// The ReplicaSets the experiment runs, one per template.
    #[serde(default)]
    pub templates: Vec<TemplateSpec>,
    /// How long it runs once every template is available (seconds or a Go duration such as
    /// "5m"); absent: until its required analyses succeed, or the rollout leaves the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Argo's `progressDeadlineSeconds` (the rollout's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
    /// Set when the rollout left the experiment before it completed (abort, promote).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate: bool,
    /// The AnalysisTemplates the experiment runs (`<experiment>-<name>` AnalysisRuns), their
    /// `{{templates.<name>.podTemplateHash}}` arguments resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyses: Vec<ExperimentAnalysis>,
}

/// Argo's `TemplateSpec`: one ReplicaSet of the experiment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSpec {
    pub name: String,
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default)]
    pub template: PodTemplateSpec,
}

/// Argo's `ExperimentStatus`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    /// Pending, Running, Successful, Failed, Error or Inconclusive (Argo's analysis phases).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When every template was available (and, in Sluice, its traffic acknowledged by every
    /// proxy): `duration` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub template_statuses: Vec<ExperimentTemplateStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis_runs: Vec<ExperimentAnalysisRunStatus>,
}

impl From<&RolloutExperimentStatus> for ExperimentStatus {
    fn from(s: &RolloutExperimentStatus) -> Self {
        ExperimentStatus {
            phase: s.phase.clone(),
            message: s.message.clone(),
            available_at: s.available_at.clone(),
            template_statuses: s.template_statuses.clone(),
            analysis_runs: s.analysis_runs.clone(),
        }
    }
}

/// The phases after which an experiment changes no more.
pub fn experiment_completed(phase: &str) -> bool {
    matches!(phase, "Successful" | "Failed" | "Error")
}

/// The CustomResourceDefinition of Sluice's Experiment.
pub fn experiment_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    Experiment::crd()
}

/// The Experiment CRD as YAML (`deploy/crd/experiments.sluice.dev.yaml`).
pub fn experiment_crd_yaml() -> Result<String, ApiError> {
    serde_yaml::to_string(&experiment_crd()).map_err(|error| ApiError::CrdYaml { error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_is_argos_experiment_in_sluice_dev() {
        let crd = experiment_crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("experiments.sluice.dev"));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "Experiment");
        assert_eq!(crd.spec.names.plural, "experiments");
        assert_eq!(crd.spec.names.short_names, Some(vec!["exp".to_owned()]));
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
        );
        let columns: Vec<(&str, &str)> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("Status", ".status.phase"),
                ("Age", ".metadata.creationTimestamp")
            ]
        );
        let yaml = experiment_crd_yaml().expect("renders");
        for field in [
            "templateStatuses",
            "availableAt",
            "analysisRuns",
            "requiredForCompletion",
        ] {
            assert!(yaml.contains(field), "{field}");
        }
    }

    #[test]
    fn the_status_is_the_rollouts_experiment_status() {
        let rollout = RolloutExperimentStatus {
            name: "web-abc-1".into(),
            step_index: 1,
            phase: "Running".into(),
            message: Some("m".into()),
            analysis_runs: vec![ExperimentAnalysisRunStatus {
                name: "compare".into(),
                analysis_run: "web-abc-1-compare".into(),
                phase: "Running".into(),
            }],
            ..RolloutExperimentStatus::default()
        };
        let status = ExperimentStatus::from(&rollout);
        assert_eq!(status.phase, "Running");
        assert_eq!(status.message.as_deref(), Some("m"));
        assert_eq!(status.analysis_runs, rollout.analysis_runs);
        assert!(experiment_completed("Failed") && !experiment_completed("Inconclusive"));
    }
}
