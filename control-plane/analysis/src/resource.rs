//! The analysis resources, in Argo Rollouts' schema (`pkg/apis/rollouts/v1alpha1/analysis_types.go`):
//! `AnalysisTemplate`, `ClusterAnalysisTemplate` and `AnalysisRun`, group `sluice.dev`; Argo's own
//! `argoproj.io/v1alpha1` documents load into the same types ([`parse_analysis_documents`]).
//!
//! Only the `prometheus` and `web` providers run; the others parse (kept as JSON) and are
//! rejected by name when a run is planned.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::{apis::meta::v1::Time, util::intstr::IntOrString};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec shared by `AnalysisTemplate` and `ClusterAnalysisTemplate`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "AnalysisTemplate",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateSpec {
    /// The metrics measured by a run of this template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    /// The template's arguments, substituted as `{{args.<name>}}` into its metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    /// Metrics (Go regular expressions over names, matched unanchored as Argo does) measured and
    /// shown but never failing the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    /// Measurements kept per metric (default 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
}

/// A cluster-scoped `AnalysisTemplate` (`templates[].clusterScope: true`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "ClusterAnalysisTemplate",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAnalysisTemplateSpec {
    #[serde(flatten)]
    pub template: AnalysisTemplateSpec,
}

/// An instantiation of one or more templates, with its measurements in the status.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "AnalysisRun",
    namespaced,
    status = "AnalysisRunStatus",
    derive = "PartialEq",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunSpec {
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// The arguments, resolved to values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    /// Stops the run: no new measurement; metrics without a result end Successful.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
}

/// One metric: how often to measure, when a measurement passes, and how many may not.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    pub name: String,
    /// Go duration between measurements (`30s`, `5m`). Absent: one measurement (unless `count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Go duration to wait after the run starts before the first measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<String>,
    /// Measurements to take. Absent (or 0) with an interval: until the run is terminated;
    /// absent without one: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<IntOrString>,
    /// An expr-language condition over `result`; true = Successful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<String>,
    /// An expr-language condition over `result`; true = Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
    /// Failed measurements allowed before the metric fails (default 0; -1 disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<IntOrString>,
    /// Inconclusive measurements allowed before the metric is Inconclusive (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<IntOrString>,
    /// Errors in a row allowed before the metric is Error (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_error_limit: Option<IntOrString>,
    /// Successes in a row that end the metric Successful (default 0: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_success_limit: Option<IntOrString>,
    #[serde(default)]
    pub provider: MetricProvider,
}

/// Where a metric's value comes from. Exactly one provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebMetric>,
    /// Argo's other providers (`datadog`, `job`, `kayenta`, ...): parsed, not run.
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A Prometheus query (`/api/v1/query`, or `/api/v1/query_range` with `rangeQuery`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusMetric {
    /// The server's base URL (`http://prometheus:9090`).
    #[serde(default)]
    pub address: String,
    /// PromQL.
    #[serde(default)]
    pub query: String,
    /// Seconds the query may take (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<WebMetricHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_query: Option<PrometheusRangeQuery>,
    /// Skips TLS verification (Argo). Sluice's client speaks plain HTTP only, so this has no use.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// Argo's range query: `start`/`end` are expr expressions giving a time (`now() -
/// duration("5m")`), `step` a Go duration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRangeQuery {
    #[serde(default)]
    pub start: String,
    #[serde(default)]
    pub end: String,
    #[serde(default)]
    pub step: String,
}

/// A generic HTTP check; `jsonPath` picks the value out of a JSON answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebMetric {
    /// `GET` (default), `POST` or `PUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default)]
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<WebMetricHeader>,
    /// A body (POST/PUT only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A JSON body (POST/PUT only; sets `Content-Type: application/json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub json_body: Option<serde_json::Value>,
    /// Seconds the request may take (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Kubernetes-style JSONPath (`{$.data.ok}`, default `{$}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct WebMetricHeader {
    pub key: String,
    pub value: String,
}

/// A template argument: a `value`, or `valueFrom`, or neither (then the caller must supply it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Argument {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ArgumentValueFrom>,
}

/// Where an argument's value comes from. `podTemplateHashValue` is Argo's rollout-side source
/// (`Stable` or `Latest`); `fieldRef` (a path into the Rollout) is read when the run starts;
/// `secretKeyRef` parses but is not resolved by Sluice yet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArgumentValueFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_hash_value: Option<PodTemplateHashValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub secret_key_ref: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub field_ref: Option<serde_json::Value>,
}

/// Which version's pod-template hash an argument takes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PodTemplateHashValue {
    Stable,
    Latest,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    pub metric_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementRetention {
    pub metric_name: String,
    pub limit: i32,
}

/// The phase of a run, a metric or one measurement, with Argo's names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AnalysisPhase {
    #[default]
    Pending,
    Running,
    Successful,
    Failed,
    Error,
    Inconclusive,
}

impl AnalysisPhase {
    /// Successful, Failed, Error and Inconclusive are final.
    pub fn completed(self) -> bool {
        matches!(
            self,
            Self::Successful | Self::Failed | Self::Error | Self::Inconclusive
        )
    }

    /// Argo's order from best to worst (`analysisStatusOrder`).
    pub(crate) fn badness(self) -> u8 {
        match self {
            Self::Successful => 0,
            Self::Running => 1,
            Self::Pending => 2,
            Self::Inconclusive => 3,
            Self::Error => 4,
            Self::Failed => 5,
        }
    }
}

impl std::fmt::Display for AnalysisPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The run's status as Argo writes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStatus {
    #[serde(default)]
    pub phase: AnalysisPhase,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_results: Vec<MetricResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default)]
    pub run_summary: RunSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run_summary: Option<RunSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

/// Metrics by their final phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    #[serde(default)]
    pub count: i32,
    #[serde(default)]
    pub successful: i32,
    #[serde(default)]
    pub failed: i32,
    #[serde(default)]
    pub inconclusive: i32,
    #[serde(default)]
    pub error: i32,
}

/// One metric's measurements and counters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    pub name: String,
    #[serde(default)]
    pub phase: AnalysisPhase,
    /// The most recent measurements (see `measurementRetention`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Measurements without Error: successful + failed + inconclusive.
    #[serde(default)]
    pub count: i32,
    #[serde(default)]
    pub successful: i32,
    #[serde(default)]
    pub failed: i32,
    #[serde(default)]
    pub inconclusive: i32,
    #[serde(default)]
    pub error: i32,
    #[serde(default)]
    pub consecutive_error: i32,
    #[serde(default)]
    pub consecutive_success: i32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// One measurement: its phase, the value as shown (`[0.98]`, `NaN`), and when it was taken.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    pub phase: AnalysisPhase,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}
