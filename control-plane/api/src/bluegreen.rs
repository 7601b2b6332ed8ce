//! Argo Rollouts' blue/green strategy (`spec.strategy.blueGreen`) and its status
//! (`status.blueGreen`), field for field. Kept apart from `resource.rs` so the core types stay
//! short; the fields are appended (all optional) to the structs there.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Argo's `spec.strategy.blueGreen`: the new version runs beside the active one, reachable on the
/// preview hosts, until it is promoted; then all of the active hosts' traffic switches to it in
/// one push, and the old version is scaled down after `scaleDownDelaySeconds`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStrategy {
    /// The service whose hosts route to the active version. Required.
    #[serde(default)]
    pub active_service: String,
    /// The service whose hosts route to the new version before promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_service: Option<String>,
    /// Promote as soon as the new version is available (default true); false pauses
    /// (`BlueGreenPause`) until `promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_enabled: Option<bool>,
    /// Seconds after the pause starts when the rollout promotes itself (0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_seconds: Option<i32>,
    /// Replicas of the new version before promotion (default: `spec.replicas`); it is scaled to
    /// full size at promotion, before the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_replica_count: Option<i32>,
    /// Seconds between the switch (acknowledged by every proxy) and the old version's scale-down.
    /// Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay_seconds: Option<i32>,
    /// How many old versions may wait out their delay at once; older ones go at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay_revision_limit: Option<i32>,
    /// Seconds between an abort and the new version's scale-down; 0 keeps it. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_scale_down_delay_seconds: Option<i32>,
    /// Sluice, standalone mode: the hosts of the preview (in Kubernetes, those of
    /// `previewService`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preview_hosts: Vec<String>,
}

/// Argo's `status.blueGreen`: the pod-template hashes the services select.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStatus {
    /// The hash the active service (and hosts) route to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_selector: Option<String>,
    /// The hash the preview service (and hosts) route to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_selector: Option<String>,
}
