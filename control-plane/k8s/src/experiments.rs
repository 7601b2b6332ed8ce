//! The leader's `Experiment` objects (`sluice.dev/v1alpha1`, `kubectl get experiment`): the
//! release engine's [`Action::SyncExperiment`](sluice_release::Action::SyncExperiment) created
//! (owned by the Rollout, as Argo's controller owns its Experiments) and its status brought in
//! step with the rollout's `status.experiment`.
//!
//! ```text
//!  SyncExperiment{spec: Some} ─► POST experiments ─409─► GET: ours (controller uid)? adopt
//!                                                         : another owner's ─► error
//!                             ─► PATCH experiments/<name>/status (the whole status)
//!  SyncExperiment{spec: None} ─► (terminate: PATCH spec.terminate) ─► PATCH status; 404: none
//!  DeleteReplicaSet <rollout>-<hash> ─► DELETE the rollout's Experiments labelled <hash>
//! ```
//!
//! A completed Experiment stays after its step, as Argo leaves it, until its version's
//! ReplicaSet is deleted (beyond `revisionHistoryLimit`): then it goes too (Argo's
//! `FilterExperimentsToDelete`: no ReplicaSet with the Experiment's pod-template hash).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use sluice_api::experiment_object::{Experiment, ExperimentSpec, ExperimentStatus};

use crate::{K8sError, POD_TEMPLATE_HASH_LABEL};

/// One `SyncExperiment` action, as the driver received it.
#[derive(Clone, Debug)]
pub struct SyncExperiment<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub canary_hash: &'a str,
    pub owner: &'a OwnerReference,
    pub spec: Option<&'a ExperimentSpec>,
    pub terminate: bool,
    pub status: &'a ExperimentStatus,
}

/// The object to create: the spec, the canary's hash label (Argo labels its Experiments with
/// the rollout's pod-template hash), the controller ownerReference.
pub fn experiment_object(sync: &SyncExperiment<'_>, spec: &ExperimentSpec) -> Experiment {
    let mut spec = spec.clone();
    spec.terminate = sync.terminate;
    let mut experiment = Experiment::new(sync.name, spec);
    experiment.metadata = ObjectMeta {
        name: Some(sync.name.to_owned()),
        namespace: Some(sync.namespace.to_owned()),
        labels: (!sync.canary_hash.is_empty()).then(|| {
            BTreeMap::from([(
                POD_TEMPLATE_HASH_LABEL.to_owned(),
                sync.canary_hash.to_owned(),
            )])
        }),
        owner_references: Some(vec![sync.owner.clone()]),
        ..ObjectMeta::default()
    };
    experiment
}

/// The status subresource patch: a JSON merge patch that sets every field of `status`, the
/// ones it leaves out as `null` (so a message or an availableAt the engine dropped goes).
pub fn status_patch(status: &ExperimentStatus) -> Value {
    let mut fields = serde_json::Map::new();
    for key in [
        "phase",
        "message",
        "availableAt",
        "templateStatuses",
        "analysisRuns",
    ] {
        fields.insert(key.to_owned(), Value::Null);
    }
    if let Ok(Value::Object(set)) = serde_json::to_value(status) {
        fields.extend(set);
    }
    json!({ "status": fields })
}

/// Whether `existing` is the rollout's own (its controller ownerReference has the owner's uid).
fn owned_by(existing: &Experiment, owner: &OwnerReference) -> bool {
    existing
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == owner.uid)
}

fn error(sync: &SyncExperiment<'_>, field: &str, problem: String) -> K8sError {
    K8sError::Experiment {
        namespace: sync.namespace.to_owned(),
        name: sync.name.to_owned(),
        field: field.to_owned(),
        problem,
    }
}

/// Executes one `SyncExperiment`: creates (or adopts) the object while the experiment runs,
/// then writes its status. An object of another owner under the name is refused, named.
pub async fn sync(client: &Client, sync: &SyncExperiment<'_>) -> Result<(), K8sError> {
    let api: Api<Experiment> = Api::namespaced(client.clone(), sync.namespace);
    let kube = |field: &str, e: kube::Error| error(sync, field, e.to_string());
    if let Some(spec) = sync.spec {
        let object = experiment_object(sync, spec);
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => tracing::info!(
                namespace = sync.namespace,
                experiment = sync.name,
                "Experiment created"
            ),
            // Created earlier (by this controller before a restart, or an earlier pass):
            // adopted if it is the rollout's.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = api.get(sync.name).await.map_err(|e| kube("metadata", e))?;
                if !owned_by(&existing, sync.owner) {
                    return Err(error(
                        sync,
                        "metadata.ownerReferences",
                        format!(
                            "exists and is not controlled by rollout {:?} (uid {})",
                            sync.owner.name, sync.owner.uid
                        ),
                    ));
                }
                tracing::debug!(experiment = sync.name, "existing Experiment adopted");
            }
            Err(e) => return Err(kube("spec", e)),
        }
    } else if sync.terminate {
        let patch = Patch::Merge(json!({"spec": {"terminate": true}}));
        match api.patch(sync.name, &PatchParams::default(), &patch).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(kube("spec.terminate", e)),
        }
    }
    let patch = Patch::Merge(status_patch(sync.status));
    match api
        .patch_status(sync.name, &PatchParams::default(), &patch)
        .await
    {
        Ok(_) => Ok(()),
        // Its spec was never known to this controller (created before Experiments existed, or
        // deleted by a user): nothing to record it in.
        Err(kube::Error::Api(e)) if e.code == 404 && sync.spec.is_none() => {
            tracing::debug!(experiment = sync.name, "no Experiment object to update");
            Ok(())
        }
        Err(e) => Err(kube("status", e)),
    }
}

/// The version hash of a rollout's ReplicaSet `<rollout>-<hash>`; `None` for another name (an
/// experiment template's `<rollout>-<hash>-<step>-<template>` among them).
pub fn version_of_replica_set<'a>(rollout: &str, replica_set: &'a str) -> Option<&'a str> {
    let hash = replica_set.strip_prefix(rollout)?.strip_prefix('-')?;
    (!hash.is_empty() && !hash.contains('-')).then_some(hash)
}

/// After the rollout's ReplicaSet `replica_set` was deleted: deletes the rollout's Experiments
/// of that version (label `rollouts-pod-template-hash`, controller uid `owner_uid`). Returns
/// their names.
pub async fn delete_of_replica_set(
    client: &Client,
    namespace: &str,
    rollout: &str,
    owner_uid: &str,
    replica_set: &str,
) -> Result<Vec<String>, K8sError> {
    let Some(hash) = version_of_replica_set(rollout, replica_set) else {
        return Ok(Vec::new());
    };
    let api: Api<Experiment> = Api::namespaced(client.clone(), namespace);
    let failed = |name: &str, field: &str, e: kube::Error| K8sError::Experiment {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        field: field.to_owned(),
        problem: e.to_string(),
    };
    let selector = format!("{POD_TEMPLATE_HASH_LABEL}={hash}");
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| failed(&format!("({selector})"), "metadata.labels", e))?;
    let owner = OwnerReference {
        uid: owner_uid.to_owned(),
        ..OwnerReference::default()
    };
    let mut deleted = Vec::new();
    for experiment in list.items.iter().filter(|e| owned_by(e, &owner)) {
        let name = experiment.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(failed(&name, "metadata", e)),
        }
        tracing::info!(namespace, experiment = %name, replica_set, "Experiment of a deleted version deleted");
        deleted.push(name);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_versions_replica_set_names_a_version() {
        assert_eq!(version_of_replica_set("web", "web-6d4f9c"), Some("6d4f9c"));
        assert_eq!(version_of_replica_set("web", "web-6d4f9c-1-baseline"), None);
        assert_eq!(version_of_replica_set("web", "webshop-6d4f9c"), None);
        assert_eq!(version_of_replica_set("web", "web-"), None);
    }

    #[test]
    fn the_status_patch_clears_what_the_status_leaves_out() {
        let status = ExperimentStatus {
            phase: "Successful".into(),
            ..ExperimentStatus::default()
        };
        let patch = status_patch(&status);
        assert_eq!(patch["status"]["phase"], "Successful");
        assert_eq!(patch["status"]["message"], Value::Null);
        assert_eq!(patch["status"]["availableAt"], Value::Null);
        assert!(patch["status"].as_object().is_some_and(|o| o.len() == 5));
    }

    #[test]
    fn the_object_is_owned_by_the_rollout_and_labelled_with_the_canary_hash() {
        let owner = OwnerReference {
            api_version: "sluice.dev/v1alpha1".into(),
            kind: "Rollout".into(),
            name: "web".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let status = ExperimentStatus::default();
        let sync = SyncExperiment {
            namespace: "prod",
            name: "web-abc-1",
            canary_hash: "abc",
            owner: &owner,
            spec: None,
            terminate: false,
            status: &status,
        };
        let object = experiment_object(&sync, &ExperimentSpec::default());
        assert_eq!(object.metadata.namespace.as_deref(), Some("prod"));
        assert_eq!(
            object
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL))
                .map(String::as_str),
            Some("abc")
        );
        assert!(owned_by(&object, &owner));
        let other = OwnerReference {
            uid: "u2".into(),
            ..owner
        };
        assert!(!owned_by(&object, &other));
    }
}
