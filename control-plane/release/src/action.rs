//! What the engine asks the drivers to do. Plain data; the Kubernetes driver turns each into an API
//! call, the standalone driver into a state-file update.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{ReplicaSet, ReplicaSetSpec},
        core::v1::PodTemplateSpec,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
    jiff::Timestamp,
};
use sluice_api::{Rollout, SLUICE_API_VERSION, resource::PublishedTraffic};

use crate::HASH_LABEL;

/// The ReplicaSet annotation that holds the rollout revision of a version.
pub const REVISION_ANNOTATION: &str = "rollout.sluice.dev/revision";
/// The ReplicaSet annotation that names the experiment whose template the ReplicaSet runs.
pub const EXPERIMENT_ANNOTATION: &str = "rollout.sluice.dev/experiment";
/// The ReplicaSet annotation that names that template.
pub const EXPERIMENT_TEMPLATE_ANNOTATION: &str = "rollout.sluice.dev/experiment-template";
/// The ReplicaSet annotation that holds when an old version is scaled to 0 (RFC 3339).
pub const SCALE_DOWN_DEADLINE_ANNOTATION: &str = "rollout.sluice.dev/scale-down-deadline";

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create this ReplicaSet (name `<rollout>-<hash>`, labels, ownerReference, revision).
    CreateReplicaSet(Box<ReplicaSet>),
    /// Set `spec.replicas` of a ReplicaSet.
    ScaleReplicaSet { name: String, replicas: i32 },
    /// Set the revision annotation (a rollback makes an old version the newest revision).
    SetRevision { name: String, revision: u64 },
    /// Set (`Some`) or remove (`None`) the scale-down deadline annotation.
    SetScaleDownDeadline {
        name: String,
        deadline: Option<Timestamp>,
    },
    /// Set `spec.replicas` of the Deployment a `workloadRef` names.
    ScaleDeployment { name: String, replicas: i32 },
    /// Delete an old ReplicaSet beyond `revisionHistoryLimit`.
    DeleteReplicaSet { name: String },
    /// Evict a pod of the rollout (a restart, `spec.restartAt`); its ReplicaSet re-creates it.
    EvictPod { name: String },
    /// Publish this traffic to the data plane; proxies report ACKs of `generation`.
    PublishTraffic {
        generation: i64,
        traffic: PublishedTraffic,
    },
    /// Start an AnalysisRun of `templates` for the canary `canary_hash` at `step_index` (the
    /// driver resolves the templates, plans the run with `sluice-analysis` and measures it).
    /// The arguments are the rollout's (`analysis.args`), resolved by the driver against the
    /// templates' and the hashes (`stable_hash`, `canary_hash` as `Latest`).
    StartAnalysisRun {
        name: String,
        canary_hash: String,
        stable_hash: String,
        /// The step that starts it (a background run: its `startingStep`).
        step_index: usize,
        /// A background run (`strategy.canary.analysis`) rather than a step's.
        background: bool,
        templates: Vec<sluice_api::resource::AnalysisTemplateRef>,
        args: Vec<sluice_api::resource::AnalysisRunArgument>,
        /// The rollout's (or experiment step's) `dryRun`, `measurementRetention` and
        /// `analysisRunMetadata` for the run.
        options: crate::analysis::RunOptions,
    },
    /// Stop a running AnalysisRun (Argo's `spec.terminate`): its rollout was promoted, aborted or
    /// replaced by a newer version, or its step is behind. The run ends with the measurements
    /// taken so far.
    TerminateAnalysisRun { name: String },
    /// Delete a completed AnalysisRun that a `retry` superseded (Failed, Error or
    /// Inconclusive): the retried steps measure again under the same name. The standalone
    /// driver drops its record.
    DeleteAnalysisRun { name: String },
    /// Kubernetes: create the `Experiment` object `name` (owned by `owner`) when `spec` is given
    /// and it does not exist (an existing one with that owner is adopted), and bring its status
    /// (and `spec.terminate`) to these. Standalone: nothing (`status.experiment` is the record).
    SyncExperiment {
        name: String,
        /// The canary's pod-template hash: the object's `rollouts-pod-template-hash` label.
        canary_hash: String,
        owner: OwnerReference,
        /// Only while the experiment runs.
        spec: Option<Box<sluice_api::experiment_object::ExperimentSpec>>,
        terminate: bool,
        status: sluice_api::experiment_object::ExperimentStatus,
    },
    /// Record a Kubernetes Event on the rollout (or a log line in standalone mode).
    Event {
        warning: bool,
        reason: String,
        message: String,
    },
}

/// The ReplicaSet of a new version: the template with the hash label, the selector with it, a
/// controller ownerReference to the rollout, the revision annotation.
pub(crate) fn replica_set(
    rollout: &Rollout,
    template: &PodTemplateSpec,
    selector: &LabelSelector,
    hash: &str,
    revision: u64,
    replicas: i32,
) -> ReplicaSet {
    let name = rollout.metadata.name.clone().unwrap_or_default();
    let mut template = template.clone();
    let metadata = template.metadata.get_or_insert_with(ObjectMeta::default);
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector = selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: rollout.metadata.namespace.clone(),
            labels: metadata.labels.clone(),
            annotations: Some(BTreeMap::from([(
                REVISION_ANNOTATION.to_owned(),
                revision.to_string(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: SLUICE_API_VERSION.into(),
                kind: "Rollout".into(),
                name,
                uid: rollout.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: rollout.spec.min_ready_seconds,
            selector,
            template: Some(template),
        },
        status: None,
    }
}
