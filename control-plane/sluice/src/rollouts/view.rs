//! The live view of one rollout (`sluice rollouts get`) and the table of `list`, as pure functions
//! of what was read: the Rollout with its status, and its versions (ReplicaSets and their pods in
//! Kubernetes, [`RolloutInfo::from_kubernetes`]; the admin API's `RolloutView` in standalone mode,
//! [`RolloutInfo::from_admin`]). The layout follows `kubectl argo rollouts get`, plus the steps
//! (the current one marked) and the data-plane gate.

use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
use sluice_api::{
    Rollout,
    resource::{CanaryStep, RolloutStatus},
};

/// A rollout and its versions, newest revision first.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutInfo {
    pub rollout: Rollout,
    pub versions: Vec<VersionInfo>,
    /// The rollout's AnalysisRuns by name, oldest first (standalone: from the state file).
    pub analysis_runs: Vec<(String, sluice_analysis::AnalysisRunStatus)>,
    /// Kubernetes: the rollout's Experiment objects by name, oldest first.
    pub experiments: Vec<(String, sluice_api::experiment_object::ExperimentStatus)>,
}

/// One version: a ReplicaSet with its pods, or a standalone version with its endpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VersionInfo {
    /// The pod-template hash.
    pub hash: String,
    /// The ReplicaSet's name (standalone: the hash).
    pub name: String,
    pub revision: Option<u64>,
    pub desired: i32,
    pub current: i32,
    pub ready: i32,
    pub available: i32,
    /// Container images of the version's template.
    pub images: Vec<String>,
    pub pods: Vec<PodInfo>,
    /// Standalone: the static endpoints (`ip:port`).
    pub endpoints: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodInfo {
    pub name: String,
    /// `Running`, `Pending`, `Terminating`, or a container's waiting reason (`CrashLoopBackOff`).
    pub status: String,
    pub ready_containers: usize,
    pub containers: usize,
    pub restarts: i32,
}

/// The revision annotations of Sluice's and Argo's controllers.
const REVISION_ANNOTATIONS: [&str; 2] = [
    "rollout.sluice.dev/revision",
    "rollout.argoproj.io/revision",
];

impl RolloutInfo {
    /// From the Kubernetes objects: the ReplicaSets the rollout controls (all of them when the
    /// rollout has no uid) and the pods of each by their `rollouts-pod-template-hash`.
    pub fn from_kubernetes(rollout: Rollout, sets: &[ReplicaSet], pods: &[Pod]) -> Self {
        let uid = rollout.metadata.uid.clone().unwrap_or_default();
        let mut versions: Vec<VersionInfo> = sets
            .iter()
            .filter(|rs| {
                uid.is_empty()
                    || rs
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|o| o.controller == Some(true) && o.uid == uid)
            })
            .map(|rs| version_of(rs, pods))
            .collect();
        sort_newest_first(&mut versions);
        RolloutInfo {
            rollout,
            versions,
            analysis_runs: Vec::new(),
            experiments: Vec::new(),
        }
    }

    /// From the admin API's `RolloutView` (standalone mode): the Rollout document as JSON and
    /// its versions.
    pub fn from_admin(
        view: &sluice_proto::admin::v1::RolloutView,
    ) -> Result<Self, serde_json::Error> {
        let rollout: Rollout = serde_json::from_str(&view.rollout_json)?;
        let mut versions: Vec<VersionInfo> = view
            .versions
            .iter()
            .map(|v| VersionInfo {
                hash: v.hash.clone(),
                name: v.hash.clone(),
                revision: (v.revision > 0).then_some(v.revision),
                desired: v.desired,
                current: v.desired,
                ready: v.ready,
                available: v.available,
                images: Vec::new(),
                pods: Vec::new(),
                endpoints: v.endpoints.clone(),
            })
            .collect();
        sort_newest_first(&mut versions);
        #[derive(serde::Deserialize)]
        struct Run {
            name: String,
            status: sluice_analysis::AnalysisRunStatus,
        }
        let analysis_runs = if view.analysis_runs_json.is_empty() {
            Vec::new()
        } else {
            serde_json::from_str::<Vec<Run>>(&view.analysis_runs_json)?
                .into_iter()
                .map(|r| (r.name, r.status))
                .collect()
        };
        Ok(RolloutInfo {
            rollout,
            versions,
            analysis_runs,
            experiments: Vec::new(),
        })
    }
}

fn sort_newest_first(versions: &mut [VersionInfo]) {
    versions.sort_by(|a, b| {
        b.revision
            .cmp(&a.revision)
            .then_with(|| a.name.cmp(&b.name))
    });
}

fn version_of(rs: &ReplicaSet, pods: &[Pod]) -> VersionInfo {
    let meta = &rs.metadata;
    let hash = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(sluice_release::HASH_LABEL))
        .cloned()
        .unwrap_or_default();
    let revision = REVISION_ANNOTATIONS.iter().find_map(|key| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(*key))
            .and_then(|r| r.parse().ok())
    });
    let status = rs.status.as_ref();
    let images = rs
        .spec
        .template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut pods: Vec<PodInfo> = pods
        .iter()
        .filter(|p| {
            !hash.is_empty()
                && p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(sluice_release::HASH_LABEL))
                    == Some(&hash)
        })
        .map(pod_info)
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    VersionInfo {
        name: meta.name.clone().unwrap_or_default(),
        hash,
        revision,
        desired: rs.spec.replicas.unwrap_or(1),
        current: status.map_or(0, |s| s.replicas),
        ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
        available: status.and_then(|s| s.available_replicas).unwrap_or(0),
        images,
        pods,
        endpoints: Vec::new(),
    }
}

fn pod_info(pod: &Pod) -> PodInfo {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let waiting = statuses
        .iter()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
    let status = if pod.metadata.deletion_timestamp.is_some() {
        "Terminating".to_owned()
    } else if let Some(reason) = waiting {
        reason
    } else {
        pod.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into())
    };
    PodInfo {
        name: pod.metadata.name.clone().unwrap_or_default(),
        status,
        ready_containers: statuses.iter().filter(|c| c.ready).count(),
        containers: pod
            .spec
            .as_ref()
            .map_or(statuses.len(), |s| s.containers.len()),
        restarts: statuses.iter().map(|c| c.restart_count).sum(),
    }
}

/// The rollout's phase and message as `kubectl argo rollouts` reads them (Argo's
/// `GetRolloutPhase`): Progressing while the controller has not seen the latest spec or a
/// promote, else the controller's `status.phase` and `status.message`.
pub fn phase(rollout: &Rollout) -> (&'static str, String) {
    const PROGRESSING: &str = "Progressing";
    let status = rollout.status.clone().unwrap_or_default();
    let observed = status
        .observed_generation
        .as_deref()
        .and_then(|g| g.parse::<i64>().ok());
    if let (Some(observed), Some(generation)) = (observed, rollout.metadata.generation)
        && observed < generation
    {
        return (
            PROGRESSING,
            "waiting for rollout spec update to be observed".into(),
        );
    }
    if status.controller_pause && status.pause_conditions.is_empty() {
        return (PROGRESSING, "waiting for rollout to unpause".into());
    }
    let message = status.message.clone().unwrap_or_default();
    match status.phase.as_deref() {
        Some("Healthy") => ("Healthy", message),
        Some("Degraded") => ("Degraded", message),
        Some("Paused") => ("Paused", message),
        Some("Progressing") => (PROGRESSING, message),
        _ => match status.conditions.iter().find(|c| c.type_ == "InvalidSpec") {
            Some(c) => (
                "Degraded",
                format!("InvalidSpec: {}", c.message.clone().unwrap_or_default()),
            ),
            None => (PROGRESSING, "waiting for the controller".into()),
        },
    }
}

fn icon(status: &str) -> &'static str {
    match status {
        "Healthy" | "Running" | "Successful" => "✔",
        "Progressing" | "Pending" | "ContainerCreating" => "◌",
        "Paused" => "॥",
        "Degraded" | "Error" | "Failed" | "CrashLoopBackOff" => "✖",
        "ScaledDown" | "Terminating" => "•",
        _ => "⚠",
    }
}

/// Argo's `GetCurrentSetWeight`: 0 when aborted, 100 past the last step, else the last
/// `setWeight` at or before the current step.
fn set_weight(rollout: &Rollout, status: &RolloutStatus) -> i32 {
    if status.abort {
        return 0;
    }
    let steps = steps(rollout);
    let index = usize::try_from(status.current_step_index.unwrap_or(0)).unwrap_or(0);
    if steps.is_empty() || index >= steps.len() {
        return max_weight(rollout);
    }
    steps[..=index]
        .iter()
        .rev()
        .find_map(|s| s.set_weight)
        .unwrap_or(0)
}

fn max_weight(rollout: &Rollout) -> i32 {
    rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .and_then(|c| c.traffic_routing.as_ref())
        .and_then(|t| t.max_traffic_weight)
        .unwrap_or(100)
}

fn steps(rollout: &Rollout) -> &[CanaryStep] {
    rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .map(|c| c.steps.as_slice())
        .unwrap_or_default()
}

/// One step in a line, in the manifest's words.
pub fn describe_step(step: &CanaryStep) -> String {
    let mut parts = Vec::new();
    if let Some(w) = step.set_weight {
        parts.push(format!("setWeight: {w}"));
    }
    if let Some(p) = &step.pause {
        parts.push(match &p.duration {
            None => "pause: {}".to_owned(),
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(s)) => {
                format!("pause: {{duration: {s}}}")
            }
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => {
                format!("pause: {{duration: {s}}}")
            }
        });
    }
    if let Some(s) = &step.set_canary_scale {
        parts.push(match (s.replicas, s.weight) {
            (Some(r), _) => format!("setCanaryScale: {{replicas: {r}}}"),
            (None, Some(w)) => format!("setCanaryScale: {{weight: {w}}}"),
            (None, None) => "setCanaryScale: {matchTrafficWeight: true}".to_owned(),
        });
    }
    if let Some(r) = &step.set_header_route {
        parts.push(if r.matches.is_empty() {
            format!("setHeaderRoute: {} (removed)", r.name)
        } else {
            let headers: Vec<&str> = r.matches.iter().map(|m| m.header_name.as_str()).collect();
            format!("setHeaderRoute: {} ({})", r.name, headers.join(", "))
        });
    }
    if let Some(r) = &step.set_mirror_route {
        parts.push(format!("setMirrorRoute: {}", r.name));
    }
    if step.analysis.is_some() {
        parts.push("analysis".to_owned());
    }
    if step.experiment.is_some() {
        parts.push("experiment".to_owned());
    }
    parts.join(", ")
}

#[path = "view_render.rs"]
mod render;
pub use render::{list_table, render};

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
