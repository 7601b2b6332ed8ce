//! Argo Rollouts' blue/green strategy (`spec.strategy.blueGreen`) and its status
//! (`status.blueGreen`), field for field, with Sluice's two additions (`previewHosts`,
//! `previewHeaderRoute`). Kept apart from `resource.rs` so the core types stay short; the fields
//! are appended (all optional) to the structs there.
//!
//! Derivation ([`preview`]): the rollout's hosts (`spec.hosts`, the active Service's) route to
//! `status.stableRS` (Argo's active selector); the preview hosts (`previewHosts`, the preview
//! Service's) to `status.blueGreen.previewSelector` when that version has pods, else to the
//! active one; `previewHeaderRoute` sends matching requests on the active hosts to the preview
//! while there is one (a version other than the active).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_model::{HeaderRoute, Preview, RouteTarget, Version};

use crate::{
    derive::VersionSource,
    resource::{AnalysisRef, RolloutStatus, SetHeaderRoute},
};

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
    /// Argo: the analysis run against the preview (published and ACKed by every proxy) before
    /// the switch. Promotion, automatic or not, waits for it to be Successful (the
    /// `BlueGreenPause` comes after it); Failed or Error aborts (the active version keeps all
    /// traffic); Inconclusive pauses, and `promote` measures again (a new run, as Argo does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<AnalysisRef>,
    /// Argo: the analysis run after the switch (ACKed by every proxy). The new version becomes
    /// `stableRS` only when it is Successful; until then the previous version stays scaled up,
    /// and Failed or Error aborts: the active hosts switch back to it in one push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<AnalysisRef>,
    /// Sluice: hosts that route to the preview, besides those of `previewService` (standalone
    /// mode has no Services: these are the preview's hosts). Lower-case names without port; none
    /// may also be one of the rollout's hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preview_hosts: Vec<String>,
    /// Sluice: requests on the active hosts matching this rule (Argo's `setHeaderRoute` shape:
    /// `name`, default `preview`, and `match`, all AND-ed) go to the preview while there is one,
    /// e.g. `{match: [{headerName: x-preview, headerValue: {exact: "1"}}]}` for testers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_header_route: Option<SetHeaderRoute>,
}

/// The field of the blue/green strategy.
pub(crate) const FIELD: &str = "spec.strategy.blueGreen";
/// The name of the preview header route when `previewHeaderRoute.name` is empty.
pub const DEFAULT_PREVIEW_ROUTE: &str = "preview";

/// What blue/green adds to a rollout's traffic state.
#[derive(Debug, Default)]
pub(crate) struct PreviewParts {
    pub preview: Option<Preview>,
    pub route: Option<HeaderRoute>,
    /// How many of `preview.hosts` come from `previewHosts` (the rest: the caller's).
    pub spec_hosts: usize,
}

/// The preview of a blue/green rollout whose active version is `stable`. `caller_hosts` are the
/// preview Service's hosts (Kubernetes). Errors are (field, problem).
pub(crate) fn preview(
    bg: &BlueGreenStrategy,
    status: &RolloutStatus,
    stable: &str,
    versions: &BTreeMap<String, Version>,
    source: VersionSource,
    caller_hosts: &[String],
) -> Result<PreviewParts, (String, String)> {
    let route = match &bg.preview_header_route {
        None => None,
        Some(spec) => {
            let base = format!("{FIELD}.previewHeaderRoute");
            match crate::derive::header_route(spec, &base, RouteTarget::Canary)? {
                crate::derive::RouteStep::Set(mut route) => {
                    if route.name.is_empty() {
                        DEFAULT_PREVIEW_ROUTE.clone_into(&mut route.name);
                    }
                    Some(route)
                }
                crate::derive::RouteStep::Remove(_) => {
                    return Err((
                        format!("{base}.match"),
                        "at least one match is required".into(),
                    ));
                }
            }
        }
    };
    let selected = status
        .blue_green
        .as_ref()
        .and_then(|b| b.preview_selector.as_deref())
        .filter(|hash| !hash.is_empty() && *hash != stable);
    let new = match selected {
        Some(hash) if versions.contains_key(hash) => Some(hash),
        // Without pods (yet, or any more) the preview shows the active version. A file names
        // every version it has, so there a missing entry is a mistake.
        Some(hash) if source == VersionSource::StaticEndpoints => {
            let known: Vec<&str> = versions.keys().map(String::as_str).collect();
            return Err((
                "status.blueGreen.previewSelector".into(),
                format!("{hash:?} has no entry in spec.staticEndpoints (entries: {known:?})"),
            ));
        }
        _ => None,
    };
    // A host listed twice in previewHosts is the user's mistake (the model names it); one the
    // preview Service also has is not.
    let mut hosts: Vec<String> = bg
        .preview_hosts
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    for host in caller_hosts {
        let host = host.to_ascii_lowercase();
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    Ok(PreviewParts {
        preview: (!hosts.is_empty()).then(|| Preview {
            hosts,
            hash: new.unwrap_or(stable).to_owned(),
        }),
        route: new.and(route).map(|mut route| {
            route.target = RouteTarget::Hash(new.unwrap_or(stable).to_owned());
            route
        }),
        spec_hosts: bg.preview_hosts.len(),
    })
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
    /// The current `prePromotionAnalysis` run of the new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis_run_status: Option<RolloutAnalysisRunStatus>,
    /// The current `postPromotionAnalysis` run of the new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis_run_status: Option<RolloutAnalysisRunStatus>,
}

/// Argo's `RolloutAnalysisRunStatus`: a run the rollout waits on, as the rollout's status shows it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysisRunStatus {
    /// The AnalysisRun's name.
    #[serde(default)]
    pub name: String,
    /// Its phase (`Pending`, `Running`, `Successful`, `Failed`, `Error`, `Inconclusive`; empty
    /// before the run has one).
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[cfg(test)]
#[path = "bluegreen_tests.rs"]
mod tests;
