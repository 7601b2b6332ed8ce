//! What the drivers observe and hand to the engine: the rollout's versions (ReplicaSets) with their
//! pods, and how far the connected proxies have acknowledged the published traffic.

use std::time::Duration;

use k8s_openapi::{
    api::{apps::v1::ReplicaSet, core::v1::PodTemplateSpec},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
    jiff::Timestamp,
};

use crate::action::{EXPERIMENT_ANNOTATION, REVISION_ANNOTATION, SCALE_DOWN_DEADLINE_ANNOTATION};

/// Everything the engine sees besides the Rollout itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The ReplicaSets whose name starts with `<rollout>-` or that the rollout controls.
    pub versions: Vec<ObservedVersion>,
    pub data_plane: DataPlane,
    /// The Deployment named by `spec.workloadRef`, when the rollout has one and it exists.
    pub workload: Option<ObservedWorkload>,
    /// The rollout's AnalysisRuns (analysis steps) with their status.
    pub analysis_runs: Vec<crate::analysis::ObservedAnalysisRun>,
    /// The pods of its versions (for a restart); empty where versions have no pods (standalone).
    pub pods: Vec<crate::restart::ObservedPod>,
}

/// A Deployment whose pod template a rollout runs (`workloadRef`, the migration path from a
/// Deployment): Argo scales it down as `workloadRef.scaleDown` says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedWorkload {
    pub name: String,
    pub template: PodTemplateSpec,
    pub selector: Option<LabelSelector>,
    /// Its `spec.replicas`.
    pub replicas: i32,
}

/// One ReplicaSet (one version of the pod template).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedVersion {
    /// The ReplicaSet's name, `<rollout>-<hash>` for those the engine created.
    pub name: String,
    /// Its `rollouts-pod-template-hash` label.
    pub hash: String,
    /// The revision annotation; `None` when absent or not a number.
    pub revision: Option<u64>,
    /// Controlled by this rollout (its controller ownerReference is the rollout). A ReplicaSet
    /// with the new version's name that is not is a hash collision.
    pub controlled: bool,
    /// `spec.replicas`.
    pub desired: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// The scale-down deadline annotation: scale to 0 at this time.
    pub scale_down_deadline: Option<Timestamp>,
    /// The experiment annotation: the ReplicaSet runs a template of this experiment (not a
    /// revision of the rollout).
    pub experiment: Option<String>,
    /// Its pod template without the hash label (an experiment's `specRef: stable` copies it);
    /// `None` where versions have no template (standalone).
    pub template: Option<PodTemplateSpec>,
}

impl ObservedVersion {
    /// Reads a ReplicaSet; `controlled` when its controller ownerReference has `rollout_uid`.
    pub fn from_replica_set(rs: &ReplicaSet, rollout_uid: &str) -> Self {
        let meta = &rs.metadata;
        let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key));
        let status = rs.status.as_ref();
        ObservedVersion {
            name: meta.name.clone().unwrap_or_default(),
            hash: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::HASH_LABEL))
                .cloned()
                .unwrap_or_default(),
            revision: annotation(REVISION_ANNOTATION).and_then(|r| r.parse().ok()),
            controlled: meta.owner_references.iter().flatten().any(|o| {
                o.controller == Some(true) && o.uid == rollout_uid && !rollout_uid.is_empty()
            }),
            desired: rs.spec.replicas.unwrap_or(1),
            ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
            available: status.and_then(|s| s.available_replicas).unwrap_or(0),
            scale_down_deadline: annotation(SCALE_DOWN_DEADLINE_ANNOTATION)
                .and_then(|t| t.parse().ok()),
            experiment: annotation(EXPERIMENT_ANNOTATION).cloned(),
            template: rs.spec.template.clone().map(|mut t| {
                if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
                    labels.remove(crate::HASH_LABEL);
                }
                t
            }),
        }
    }
}

/// The proxies connected to the control plane(s) and what each acknowledged of this rollout's
/// traffic (`status.dataPlane.generation`, which the driver maps to xDS versions).
#[derive(Clone, Debug, PartialEq)]
pub struct DataPlane {
    pub proxies: Vec<ProxyAck>,
    /// How long a proxy may take to acknowledge a traffic change before the rollout is Degraded.
    pub ack_deadline: Duration,
}

impl Default for DataPlane {
    fn default() -> Self {
        DataPlane {
            proxies: Vec::new(),
            ack_deadline: Duration::from_secs(30),
        }
    }
}

/// One connected proxy. A disconnected proxy is not listed (it drops out of the count).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyAck {
    /// Envoy's node id.
    pub node_id: String,
    /// The newest traffic generation of this rollout that the proxy has ACKed.
    pub acked_generation: Option<i64>,
    /// The newest generation it NACKed, with Envoy's error detail.
    pub nacked: Option<(i64, String)>,
}

/// How the proxies stand on one generation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AckSummary {
    pub acknowledged: usize,
    pub proxies: usize,
    /// The first proxy that NACKed the generation: (node id, error detail).
    pub nack: Option<(String, String)>,
    /// Proxies that have not acknowledged it yet.
    pub waiting: Vec<String>,
}

impl AckSummary {
    pub fn complete(&self) -> bool {
        self.waiting.is_empty()
    }
}

impl DataPlane {
    pub(crate) fn summary(&self, generation: i64) -> AckSummary {
        let mut summary = AckSummary {
            acknowledged: 0,
            proxies: self.proxies.len(),
            nack: None,
            waiting: Vec::new(),
        };
        for proxy in &self.proxies {
            if proxy.acked_generation.is_some_and(|g| g >= generation) {
                summary.acknowledged += 1;
                continue;
            }
            summary.waiting.push(proxy.node_id.clone());
            if let Some((g, detail)) = &proxy.nacked
                && *g >= generation
                && summary.nack.is_none()
            {
                summary.nack = Some((proxy.node_id.clone(), detail.clone()));
            }
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica_set(yaml: &str) -> ReplicaSet {
        serde_json::from_value(serde_json::from_str(yaml).expect("json")).expect("ReplicaSet")
    }

    #[test]
    fn a_replica_set_reads_as_a_version() {
        let rs = replica_set(
            r#"{"metadata": {"name": "demo-abc", "labels": {"rollouts-pod-template-hash": "abc"},
                "annotations": {"rollout.sluice.dev/revision": "7",
                                "rollout.sluice.dev/scale-down-deadline": "2026-01-01T00:00:30Z"},
                "ownerReferences": [{"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
                                     "name": "demo", "uid": "uid-1", "controller": true}]},
                "spec": {"replicas": 3, "selector": {}},
                "status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": 1}}"#,
        );
        let v = ObservedVersion::from_replica_set(&rs, "uid-1");
        assert_eq!(
            v,
            ObservedVersion {
                name: "demo-abc".into(),
                hash: "abc".into(),
                revision: Some(7),
                controlled: true,
                desired: 3,
                ready: 2,
                available: 1,
                scale_down_deadline: Some("2026-01-01T00:00:30Z".parse().expect("time")),
                experiment: None,
                template: rs.spec.template.clone(),
            }
        );
        // Another owner's ReplicaSet, or no uid to compare: not controlled.
        assert!(!ObservedVersion::from_replica_set(&rs, "uid-2").controlled);
        assert!(!ObservedVersion::from_replica_set(&rs, "").controlled);
    }

    #[test]
    fn unreadable_annotations_are_absent_not_errors() {
        let rs = replica_set(
            r#"{"metadata": {"name": "x", "annotations": {"rollout.sluice.dev/revision": "seven",
                "rollout.sluice.dev/scale-down-deadline": "soon"}}, "spec": {"selector": {}}}"#,
        );
        let v = ObservedVersion::from_replica_set(&rs, "uid-1");
        assert_eq!(
            (v.revision, v.scale_down_deadline, v.desired),
            (None, None, 1)
        );
    }
}
