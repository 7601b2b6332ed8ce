//! Argo Rollouts' `experiment` canary step (`RolloutExperimentStep`) and the status the release
//! engine writes while one runs. Argo runs an experiment as an `Experiment` object; Sluice runs it
//! inside the rollout: its ReplicaSets belong to the rollout and its state is `status.experiment`
//! beside Argo's `status.canary.currentExperiment` (in Kubernetes also shown as an `Experiment`
//! object: [`crate::experiment_object`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::release_fields::{AnalysisRunArgument, AnalysisRunMetadata, DryRun};

/// Argo's `experiment` step: `templates` run as ReplicaSets of their own for `duration` (Argo's
/// duration forms: seconds or a Go duration such as "30s", "5m"), while `analyses` measure them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStep {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<ExperimentTemplate>,
    /// Absent: the experiment runs until its required analyses succeed, or until promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyses: Vec<ExperimentAnalysis>,
    /// Argo: metrics of every analysis of the experiment that are measured and shown but never
    /// fail it (nor the experiment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    /// Argo: labels and annotations added to the experiment's AnalysisRuns (Kubernetes mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_run_metadata: Option<AnalysisRunMetadata>,
}

/// Argo's `RolloutExperimentTemplate`: a ReplicaSet from the stable or the canary template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentTemplate {
    #[serde(default)]
    pub name: String,
    /// `stable` or `canary`: whose pod template the ReplicaSet runs.
    #[serde(default)]
    pub spec_ref: String,
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Labels and annotations added to the pod template (labels also to the selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<PodTemplateMetadata>,
    /// Replaces the rollout's selector for this ReplicaSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Share of the rollout's requests for this template's pods, in the units of `setWeight`,
    /// once they are available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Sluice, standalone mode (`spec.version`): the key of `spec.staticEndpoints` whose
    /// endpoints run this template (a version of its own, never the stable's or the canary's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Argo's `PodTemplateMetadata`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Argo's `RolloutExperimentStepAnalysisTemplateRef`: one AnalysisRun of the experiment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentAnalysis {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub template_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_scope: Option<bool>,
    /// Values may name `{{templates.<name>.podTemplateHash}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<AnalysisRunArgument>,
    /// The experiment ends successfully when every required analysis succeeded, and does not
    /// end (even after `duration`) before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required_for_completion: bool,
}

/// Sluice: the experiment of the current step, as Argo's `Experiment` status tells it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutExperimentStatus {
    /// `<rollout>-<canary hash>-<step index>` (Argo's `status.canary.currentExperiment`).
    pub name: String,
    pub step_index: i32,
    /// Pending (templates not available, or their traffic not acknowledged yet), Running,
    /// Successful, Failed, Error or Inconclusive.
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When every template was available and every proxy had acknowledged their weights:
    /// `duration` counts from here, and the analyses start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub template_statuses: Vec<ExperimentTemplateStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis_runs: Vec<ExperimentAnalysisRunStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentTemplateStatus {
    pub name: String,
    pub pod_template_hash: String,
    pub replicas: i32,
    pub available_replicas: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentAnalysisRunStatus {
    /// The analysis' `name`.
    pub name: String,
    /// The AnalysisRun's name, `<experiment>-<analysis>`.
    pub analysis_run: String,
    pub phase: String,
}
