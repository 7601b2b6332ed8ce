//! The Rollout resource: Sluice's own `sluice.dev/v1alpha1` custom resource, and Argo Rollouts'
//! `argoproj.io/v1alpha1` Rollout, which Sluice reads (never writes) in observe mode.
//!
//! Both share one spec and one status type: Sluice keeps Argo's names and meaning for the canary
//! strategy and the status, so migrating is mostly changing `apiVersion`. Fields Sluice does not use
//! (traffic routing plugins, analysis, experiments, blue-green ...) are ignored when parsing, as
//! Kubernetes ignores unknown fields; Sluice's additions (`hosts`, `staticEndpoints`,
//! `strategy.canary.stickiness`) are all optional.

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::{
    api::core::v1::PodTemplateSpec,
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, Time},
        util::intstr::IntOrString,
    },
};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::experiment::{ExperimentStep, RolloutExperimentStatus};
pub use crate::release_fields::{
    AnalysisRef, AnalysisRunArgument, AnalysisRunMetadata, AnalysisTemplateRef, ArgumentValueFrom,
    DataPlaneStatus, DryRun, MeasurementRetention, PauseCondition, PublishedTraffic,
    RollbackWindowSpec, SetCanaryScale, WorkloadRef,
};
use crate::{
    ApiError,
    duration::{argo_duration_int_seconds, argo_duration_string_seconds},
};

/// The API group and version of Sluice's Rollout.
pub const SLUICE_API_VERSION: &str = "sluice.dev/v1alpha1";
/// The API group and version of Argo Rollouts' Rollout.
pub const ARGO_API_VERSION: &str = "argoproj.io/v1alpha1";

/// A service under progressive delivery: its pods (as an Argo Rollout's `replicas`, `selector`,
/// `template`), the canary steps, and the hosts whose traffic Sluice splits between versions.
// Two print columns are integers: clippy reads the repeated `type_` as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Rollout",
    namespaced,
    status = "RolloutStatus",
    shortname = "sro",
    derive = "PartialEq",
    // The scale subresource (as Argo's Rollout CRD): an HPA or `kubectl scale` drives
    // spec.replicas; the status gives the replicas and the pods' selector.
    scale = r#"{"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}"#,
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Step",
        type_ = "integer",
        json_path = ".status.currentStepIndex"
    ),
    printcolumn(
        name = "Canary weight",
        type_ = "integer",
        json_path = ".status.canary.weights.canary.weight"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Selects the pods of this rollout (all versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The pod template; its hash labels each version's pods (`rollouts-pod-template-hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PodTemplateSpec>,
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Sluice: hosts (lower-case, without port) whose requests this rollout routes, besides those
    /// of its services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Sluice, standalone mode only: the endpoints (`ip:port`) of each version, by pod-template
    /// hash. In Kubernetes the endpoints are the ready pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub static_endpoints: BTreeMap<String, Vec<String>>,
    /// Sluice, standalone mode only: the version to release, a key of `staticEndpoints` (it plays
    /// the part of the pod template: changing it starts a canary). With it, Sluice's release
    /// engine runs the rollout and keeps its status in the state file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Argo: the rollout does not progress while true (`kubectl argo rollouts pause`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Argo: seconds a version may take to make progress before the rollout is Degraded
    /// (`ProgressDeadlineExceeded`). Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
    /// Argo: abort the rollout when the progress deadline is exceeded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub progress_deadline_abort: bool,
    /// Argo: old ReplicaSets kept (at 0 replicas) for rollback. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    /// Argo: going back to one of the last `revisions` revisions skips the steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_window: Option<RollbackWindowSpec>,
    /// Argo: take the pod template from an existing Deployment instead of `template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<WorkloadRef>,
    /// Argo: seconds a new pod must be ready to count as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Argo: restart the pods created before this time (`sluice rollouts restart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_at: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// The canary strategy. Without it (e.g. Argo's blue-green) Sluice sends all traffic to stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStrategy>,
    /// Argo's blue/green strategy (see [`crate::bluegreen`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<crate::bluegreen::BlueGreenStrategy>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStrategy {
    /// The service that selects only the canary's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_service: Option<String>,
    /// The service that selects only the stable pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_service: Option<String>,
    /// The steps of the canary, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
    /// Sluice: how a client is kept on one version across requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness: Option<StickinessSpec>,
    /// Argo's traffic routing; Sluice reads only `maxTrafficWeight` (Sluice is the router).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<TrafficRouting>,
    /// Argo: seconds between traffic leaving an old version and its scale-down. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay_seconds: Option<i32>,
    /// Argo: seconds between an abort and the canary's scale-down; 0 keeps it. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_scale_down_delay_seconds: Option<i32>,
    /// Argo: background analysis, beside the steps from `startingStep`; its failure aborts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisRef>,
}

/// Argo's `spec.strategy.canary.trafficRouting`; the router-specific fields are ignored.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRouting {
    /// The total traffic weight (default 100): `setWeight` and `status.canary.weights` count in
    /// units of it, so with 1000, `setWeight: 100` is 10 %. At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_traffic_weight: Option<i32>,
}

/// One step of a canary. Argo sets one field per step; a step with several is applied field by
/// field (header route, then weight), as Argo does.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    /// Canary share in units of `trafficRouting.maxTrafficWeight` (default 100, i.e. percent):
    /// 0 to maxTrafficWeight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_header_route: Option<SetHeaderRoute>,
    /// Copies matching requests to the canary (Argo's meaning; see [`SetMirrorRoute`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_mirror_route: Option<SetMirrorRoute>,
    /// Argo: the canary's replica count from this step on, instead of following the weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_canary_scale: Option<SetCanaryScale>,
    /// Argo: an analysis step: the steps wait for its AnalysisRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisRef>,
    /// Argo: an experiment step (see [`crate::experiment`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentStep>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseStep {
    /// How long to pause: seconds (`10` or `"10"`), or a Go duration string such as "30s", "5m",
    /// "1h30m", truncated to whole seconds as Argo does. Absent: until resumed by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<IntOrString>,
}

/// Sends requests whose headers match to the canary (Argo: `setHeaderRoute`). A step with only a
/// name removes the route of that name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetHeaderRoute {
    #[serde(default)]
    pub name: String,
    /// All must match (AND).
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HeaderRoutingMatch>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRoutingMatch {
    pub header_name: String,
    pub header_value: StringMatch,
}

/// Exactly one of `exact`, `prefix`, `regex`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Must match the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Argo's `setMirrorRoute`: `percentage` % of the requests matching any `match` entry are also
/// sent to the canary (its response is dropped). A step with only a name removes the route of
/// that name; all mirror routes go at promotion and at abort.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetMirrorRoute {
    #[serde(default)]
    pub name: String,
    /// OR-ed; within one entry method, path and headers are AND-ed.
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    /// Percent of the matching requests to mirror (Argo: plain percent, not maxTrafficWeight
    /// units; default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
}

/// Sluice: exactly one of `header` or `cookie`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StickinessSpec {
    /// The value of this request header is the sticky key (e.g. `x-user-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie holds the sticky key; Sluice sets it when a client has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieStickinessSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CookieStickinessSpec {
    /// Cookie name. A name starting with __Host- or __Secure- requires secure to be true.
    pub name: String,
    /// Max-Age of the cookie; absent or 0 makes it a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u32>,
    /// Adds Secure to the cookie, so it is sent over HTTPS only. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// SameSite attribute of the cookie, Strict, Lax (the default) or None (which requires secure to be true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
}

/// Argo Rollouts' status fields that Sluice reads (and, for its own Rollout, writes).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Progressing, Paused, Healthy or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Pod-template hash of the stable version.
    #[serde(rename = "stableRS", default, skip_serializing_if = "Option::is_none")]
    pub stable_rs: Option<String>,
    /// Pod-template hash of the version being rolled out (equal to `stableRS` when none is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_pod_hash: Option<String>,
    /// Index of the canary step in progress; equal to the number of steps when all are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_index: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// The rollout was aborted: all traffic goes back to stable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abort: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RolloutCondition>,
    /// The `metadata.generation` this status is about (a string, as in Argo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<String>,
    /// Argo: why the rollout is paused and since when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pause_conditions: Vec<PauseCondition>,
    /// Argo: the controller paused the rollout (a `pause` step); cleared pause conditions with
    /// this still set mean a user promoted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller_pause: bool,
    /// Argo: when the rollout was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_at: Option<Time>,
    /// Argo: the `spec.restartAt` whose restart finished (every pod created after it) or was
    /// cancelled by a new template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<Time>,
    /// Argo: skip the remaining steps (`promote --full`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promote_full: bool,
    /// Argo: bumped when a ReplicaSet of another owner has the new version's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    /// Argo: a hash of the steps; when the steps change the canary starts again at step 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// `spec.selector` as a label-selector string (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Sluice: the traffic published and its acknowledgement by the proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_plane: Option<DataPlaneStatus>,
    /// Argo: the hashes the blue/green services select.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<crate::bluegreen::BlueGreenStatus>,
    /// Sluice: the experiment of the current step (Argo keeps it in an Experiment object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<RolloutExperimentStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// The traffic weights currently applied, in units of `maxTrafficWeight`. They count only
    /// for the canary they name (`canary.podTemplateHash`, when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<TrafficWeights>,
    /// Argo: the name of the experiment the current step runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_experiment: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficWeights {
    pub canary: WeightDestination,
    /// Argo always writes it (`maxTrafficWeight` − canary); a hand-written status may omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<WeightDestination>,
    /// Argo: further versions with a share (experiment templates with a `weight`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional: Vec<WeightDestination>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeightDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// In units of `maxTrafficWeight` (default 100: percent), 0 to maxTrafficWeight.
    pub weight: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutCondition {
    /// e.g. Progressing, Available, Paused, Healthy, InvalidSpec.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// An Argo Rollouts `argoproj.io/v1alpha1` Rollout, read-only. Same spec and status types as
/// Sluice's [`Rollout`]; [`From`] converts between them.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ArgoRollout {
    pub metadata: ObjectMeta,
    pub spec: RolloutSpec,
    #[serde(default)]
    pub status: Option<RolloutStatus>,
}

impl Serialize for ArgoRollout {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Repr<'a> {
            api_version: &'static str,
            kind: &'static str,
            metadata: &'a ObjectMeta,
            spec: &'a RolloutSpec,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<&'a RolloutStatus>,
        }
        Repr {
            api_version: ARGO_API_VERSION,
            kind: "Rollout",
            metadata: &self.metadata,
            spec: &self.spec,
            status: self.status.as_ref(),
        }
        .serialize(ser)
    }
}

// So the Kubernetes adapter can watch Argo Rollouts with kube's `Api<ArgoRollout>`.
impl kube::Resource for ArgoRollout {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Rollout".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "argoproj.io".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1alpha1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "rollouts".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl From<ArgoRollout> for Rollout {
    fn from(argo: ArgoRollout) -> Self {
        Rollout {
            metadata: argo.metadata,
            spec: argo.spec,
            status: argo.status,
        }
    }
}

impl PauseStep {
    /// The pause in whole seconds, as Argo reads it (see [`crate::duration`]): `None` for an
    /// indefinite pause; an error for a negative, unparsable or out-of-range duration.
    pub fn duration_seconds(&self) -> Result<Option<u32>, String> {
        match &self.duration {
            None => Ok(None),
            Some(IntOrString::Int(seconds)) => argo_duration_int_seconds(*seconds).map(Some),
            Some(IntOrString::String(text)) => argo_duration_string_seconds(text).map(Some),
        }
    }
}

/// The CustomResourceDefinition of Sluice's Rollout.
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    Rollout::crd()
}

/// The CustomResourceDefinition as YAML, as `sluice crdgen` prints it.
pub fn crd_yaml() -> Result<String, ApiError> {
    serde_yaml::to_string(&crd()).map_err(|error| ApiError::CrdYaml { error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_durations_parse_as_argo_writes_them() {
        let pause = |d: Option<IntOrString>| PauseStep { duration: d };
        assert_eq!(pause(None).duration_seconds(), Ok(None));
        assert_eq!(
            pause(Some(IntOrString::Int(15))).duration_seconds(),
            Ok(Some(15))
        );
        for (text, seconds) in [("10s", 10), ("1m", 60), ("1h30m", 5400), ("10", 10)] {
            assert_eq!(
                pause(Some(IntOrString::String(text.into()))).duration_seconds(),
                Ok(Some(seconds)),
                "{text}"
            );
        }
        for text in ["", "s", "10x", "-1s", "1.2.3s"] {
            assert!(
                pause(Some(IntOrString::String(text.into())))
                    .duration_seconds()
                    .is_err(),
                "{text}"
            );
        }
        assert!(
            pause(Some(IntOrString::Int(-1)))
                .duration_seconds()
                .is_err()
        );
    }

    #[test]
    fn the_crd_is_namespaced_with_status_and_camel_case_fields() {
        let crd = crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("rollouts.sluice.dev"));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["sro".to_owned()]));
        let yaml = crd_yaml().expect("renders");
        for field in [
            "staticEndpoints",
            "canaryService",
            "setHeaderRoute",
            "headerValue",
            "stableRS",
            "currentPodHash",
            "currentStepIndex",
            "maxAgeSeconds",
            "maxTrafficWeight",
        ] {
            assert!(yaml.contains(field), "CRD lacks {field}");
        }
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        // The scale subresource an HPA drives (issue 8), with Argo's paths.
        let scale = version
            .subresources
            .as_ref()
            .and_then(|s| s.scale.as_ref())
            .expect("a scale subresource");
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
    }

    #[test]
    fn argo_rollouts_serialize_with_their_own_api_version() {
        let argo = ArgoRollout::default();
        let yaml = serde_yaml::to_string(&argo).expect("serializes");
        assert!(
            yaml.starts_with("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\n"),
            "{yaml}"
        );
        let sluice = serde_yaml::to_string(&Rollout::from(argo)).expect("serializes");
        assert!(
            sluice.starts_with("apiVersion: sluice.dev/v1alpha1\nkind: Rollout\n"),
            "{sluice}"
        );
    }
}
