//! Argo Rollouts' fields for running a release (the release engine, `sluice-release`, reads and
//! writes them): pause conditions, `setCanaryScale`, rollback window, `workloadRef`, and Sluice's
//! data-plane gate in the status. Kept apart from `resource.rs` so the core types stay short; the
//! fields are appended (all optional) to the structs there.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resource::{SetHeaderRoute, SetMirrorRoute};

/// Argo's `pauseConditions[]`: why the rollout is paused and since when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseCondition {
    /// `CanaryPauseStep`, `BlueGreenPause`, `InconclusiveAnalysisRun` or `InconclusiveExperiment`.
    pub reason: String,
    pub start_time: Time,
}

/// Argo's `setCanaryScale` step: the canary's replicas from now on, instead of following the
/// weight. Exactly one of `replicas`, `weight`, `matchTrafficWeight`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetCanaryScale {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Percent of `spec.replicas`, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Back to following the traffic weight.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub match_traffic_weight: bool,
}

/// Argo's `rollbackWindow`: going back to one of the last `revisions` revisions skips the steps.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackWindowSpec {
    #[serde(default)]
    pub revisions: i32,
}

/// Argo's `workloadRef`: the pod template comes from an existing Deployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `never` (default), `onsuccess` or `progressively`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<String>,
}

/// Argo's analysis reference (`steps[].analysis`, `strategy.canary.analysis`): the templates of
/// the run and the arguments passed to them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRef {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<AnalysisTemplateRef>,
    /// Values for the templates' `args` (Argo's `AnalysisRunArgument`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<AnalysisRunArgument>,
    /// Background analysis only: the step index from which the run starts (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_step: Option<i32>,
    /// Argo: metrics of the run (Go regular expressions over their names, `*`: all) that are
    /// measured and shown but never fail it, beside the templates' own `dryRun`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    /// Argo: measurements kept per metric, beside the templates' own rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
    /// Argo: labels and annotations added to the AnalysisRun (Kubernetes mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_run_metadata: Option<AnalysisRunMetadata>,
}

/// Argo's `DryRun` rule: the metrics whose names match `metricName`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    pub metric_name: String,
}

/// Argo's `MeasurementRetention` rule: keep the last `limit` measurements of the matching metrics.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementRetention {
    pub metric_name: String,
    pub limit: i32,
}

/// Argo's `AnalysisRunMetadata`: labels and annotations added to the AnalysisRuns created.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunMetadata {
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Argo's `AnalysisRunArgument`: a value, or one read from the rollout.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunArgument {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ArgumentValueFrom>,
}

/// Argo's `ArgumentValueFrom` of a rollout's analysis argument.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArgumentValueFrom {
    /// `Stable` or `Latest`: the pod-template hash of that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_hash_value: Option<String>,
    /// Argo's `fieldRef` (a path into the Rollout), read when the run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<FieldRef>,
}

/// Argo's `fieldRef`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldRef {
    pub field_path: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateRef {
    #[serde(default)]
    pub template_name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_scope: bool,
}

/// Sluice: the traffic the release engine last published for this rollout, and how far the
/// connected Envoys have acknowledged it (the data-plane gate).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneStatus {
    /// Increases by one with every traffic change the engine publishes.
    #[serde(default)]
    pub generation: i64,
    #[serde(default)]
    pub traffic: PublishedTraffic,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<Time>,
    /// Proxies that acknowledged `generation`, of `proxies` connected.
    #[serde(default)]
    pub acknowledged: i32,
    #[serde(default)]
    pub proxies: i32,
    /// The largest canary weight of the generations before `generation` that a proxy may still
    /// hold (not yet superseded by one every proxy ACKed): the canary keeps pods for it.
    #[serde(default)]
    pub held_canary_weight: i32,
    /// A NACK or a lagging proxy, naming its node id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The traffic of one rollout: which version gets which share, and the header/mirror routes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedTraffic {
    /// Pod-template hash of the stable version.
    #[serde(default)]
    pub stable: String,
    /// Pod-template hash of the canary, if one is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// Percent of requests to the canary, 0 to 100; the rest goes to stable.
    #[serde(default)]
    pub canary_weight: i32,
    /// Further versions with a share of the requests, in the units of `canary_weight`
    /// (experiment templates with a `weight`); stable gets what canary and these leave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional: Vec<crate::resource::WeightDestination>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_routes: Vec<SetHeaderRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirror_routes: Vec<SetMirrorRoute>,
    /// Blue/green: the hash the preview hosts route to (the active hosts route to `stable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

impl PublishedTraffic {
    /// Whether requests can reach the version `hash` under this traffic.
    pub fn routes_to(&self, hash: &str) -> bool {
        if self.preview.as_deref() == Some(hash) {
            return true;
        }
        if self.stable == hash && self.canary_weight < 100 {
            return true;
        }
        self.canary.as_deref() == Some(hash)
            && (self.canary_weight > 0
                || !self.header_routes.is_empty()
                || !self.mirror_routes.is_empty())
    }
}
