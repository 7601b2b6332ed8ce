//! The leader's writes: Rollout status patches, Events, and the release engine's actions
//! (create / scale / annotate / delete ReplicaSets, scale a `workloadRef` Deployment, start and
//! terminate AnalysisRuns: [`crate::analysis_runs`]). Every write
//! checks, right before it is sent, that this replica still holds the Lease.

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::{ObjectReference, Pod},
};
use kube::{
    Api, Client,
    api::{DeleteParams, EvictParams, Patch, PatchParams, PostParams},
    runtime::events::{Event as K8sEvent, EventType, Recorder},
};
use sluice_api::{Rollout, RolloutStatus};
use sluice_release::Action;
use tokio::sync::watch;

use crate::{
    K8sError,
    analysis_runs::{AnalysisRuns, StartRun},
    objects::RolloutRef,
};

/// Merge-patches a Rollout's status, if (checked right before the write) this replica leads.
/// Fields the new status drops are sent as `null` so the merge removes them. `resource_version`
/// is the version `old` was read at: the API server refuses the patch (409 Conflict) if the
/// Rollout changed since, so a status computed from a stale view never overwrites a newer one
/// (a user's `abort`, another write); the watch then brings the newer object and the next pass
/// recomputes. `Ok(None)`: not the leader, nothing written.
pub async fn write_status(
    client: &Client,
    is_leader: &watch::Receiver<bool>,
    object: &RolloutRef,
    resource_version: Option<&str>,
    old: &RolloutStatus,
    new: &RolloutStatus,
) -> Result<Option<Rollout>, K8sError> {
    let body = status_patch(resource_version, old, new);
    if !*is_leader.borrow() {
        return Ok(None);
    }
    let api: Api<Rollout> = Api::namespaced(client.clone(), &object.namespace);
    let params = PatchParams::default();
    match api
        .patch_status(&object.name, &params, &Patch::Merge(&body))
        .await
    {
        Ok(updated) => {
            tracing::info!(%object, phase = ?new.phase, step = ?new.current_step_index, "status written");
            Ok(Some(updated))
        }
        Err(error) => Err(K8sError::Status {
            object: object.clone(),
            error,
        }),
    }
}

/// `{"metadata": {"resourceVersion"}, "status": <merge patch from old to new>}` (a field `new`
/// drops, at any depth, is `null`: [`crate::merge_patch`]); without a resourceVersion, no
/// precondition.
pub fn status_patch(
    resource_version: Option<&str>,
    old: &RolloutStatus,
    new: &RolloutStatus,
) -> serde_json::Value {
    let mut patch = crate::merge_patch::status_patch(old, new);
    if let (Some(rv), serde_json::Value::Object(fields)) = (resource_version, &mut patch) {
        fields.insert(
            "metadata".into(),
            serde_json::json!({"resourceVersion": rv}),
        );
    }
    patch
}

/// A write refused because the object changed since it was read (409 Conflict).
pub fn is_conflict(error: &K8sError) -> bool {
    matches!(error, K8sError::Status { error: kube::Error::Api(e), .. } if e.code == 409)
}

pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// What executing the engine's actions changed, for the caller's view of the cluster (so the next
/// pass does not act on ReplicaSets it has just written, before their watch events arrive).
#[derive(Debug, Default)]
pub struct Executed {
    pub replica_sets: Vec<ReplicaSet>,
    pub deleted: Vec<String>,
    pub deployments: Vec<Deployment>,
    /// The leadership was lost: nothing more was written.
    pub not_leader: bool,
}

/// Executes the release engine's actions for `rollout` (leader only, checked before each write).
/// `PublishTraffic` needs no call: the traffic is carried by the status the caller writes next.
/// A failed action is logged and the rest go on; the engine asks again on its next pass.
pub async fn execute(
    client: &Client,
    recorder: &Recorder,
    is_leader: &watch::Receiver<bool>,
    object: &RolloutRef,
    rollout: &Rollout,
    actions: Vec<Action>,
    runs: &mut AnalysisRuns,
) -> Executed {
    let mut done = Executed::default();
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &object.namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &object.namespace);
    let merge = |patch: serde_json::Value| Patch::Merge(patch);
    for action in actions {
        if !*is_leader.borrow() {
            done.not_leader = true;
            return done;
        }
        let what = format!("{action:?}");
        let result = match action {
            Action::CreateReplicaSet(rs) => {
                match replica_sets.create(&PostParams::default(), &rs).await {
                    Ok(created) => {
                        tracing::info!(%object, replica_set = ?created.metadata.name, "ReplicaSet created");
                        done.replica_sets.push(created);
                        Ok(())
                    }
                    // Created by an earlier pass whose watch event has not arrived yet.
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Action::ScaleReplicaSet { name, replicas } => replica_sets
                .patch(
                    &name,
                    &PatchParams::default(),
                    &merge(serde_json::json!({"spec": {"replicas": replicas}})),
                )
                .await
                .map(|rs| {
                    tracing::info!(%object, replica_set = %name, replicas, "ReplicaSet scaled");
                    done.replica_sets.push(rs);
                }),
            Action::SetRevision { name, revision } => replica_sets
                .patch(
                    &name,
                    &PatchParams::default(),
                    &merge(serde_json::json!({"metadata": {"annotations": {
                        sluice_release::action::REVISION_ANNOTATION: revision.to_string()}}})),
                )
                .await
                .map(|rs| done.replica_sets.push(rs)),
            Action::SetScaleDownDeadline { name, deadline } => replica_sets
                .patch(
                    &name,
                    &PatchParams::default(),
                    &merge(serde_json::json!({"metadata": {"annotations": {
                        sluice_release::action::SCALE_DOWN_DEADLINE_ANNOTATION:
                            deadline.map(|d| d.to_string())}}})),
                )
                .await
                .map(|rs| done.replica_sets.push(rs)),
            Action::ScaleDeployment { name, replicas } => deployments
                .patch(
                    &name,
                    &PatchParams::default(),
                    &merge(serde_json::json!({"spec": {"replicas": replicas}})),
                )
                .await
                .map(|d| done.deployments.push(d)),
            // The eviction API, as Argo uses it: a PodDisruptionBudget may refuse (429), and the
            // engine asks again on its next pass.
            Action::EvictPod { name } => {
                let pods: Api<Pod> = Api::namespaced(client.clone(), &object.namespace);
                match pods.evict(&name, &EvictParams::default()).await {
                    Ok(_) => {
                        tracing::info!(%object, pod = %name, "pod evicted (restart)");
                        Ok(())
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Action::DeleteReplicaSet { name } => {
                match replica_sets
                    .delete(&name, &DeleteParams::background())
                    .await
                {
                    Ok(_) => {
                        tracing::info!(%object, replica_set = %name, "old ReplicaSet deleted");
                        delete_experiments(client, object, rollout, &name).await;
                        done.deleted.push(name);
                        Ok(())
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        done.deleted.push(name);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Action::PublishTraffic {
                generation,
                traffic,
            } => {
                tracing::info!(%object, generation, stable = %traffic.stable, canary = ?traffic.canary,
                    weight = traffic.canary_weight, "traffic published");
                Ok(())
            }
            Action::StartAnalysisRun {
                name,
                canary_hash,
                stable_hash,
                step_index,
                background,
                templates,
                args,
                options,
            } => {
                let start = StartRun {
                    name: &name,
                    canary_hash: &canary_hash,
                    stable_hash: &stable_hash,
                    step_index,
                    background,
                    templates: &templates,
                    args: &args,
                    options: &options,
                };
                runs.start(client, is_leader, rollout, start).await
            }
            Action::TerminateAnalysisRun { name } => {
                runs.terminate(client, is_leader, &object.namespace, &name)
                    .await;
                Ok(())
            }
            Action::DeleteAnalysisRun { name } => {
                runs.remove(client, is_leader, &object.namespace, &name)
                    .await
            }
            Action::SyncExperiment {
                name,
                canary_hash,
                owner,
                spec,
                terminate,
                status,
            } => {
                let sync = crate::experiments::SyncExperiment {
                    namespace: &object.namespace,
                    name: &name,
                    canary_hash: &canary_hash,
                    owner: &owner,
                    spec: spec.as_deref(),
                    terminate,
                    status: &status,
                };
                if let Err(error) = crate::experiments::sync(client, &sync).await {
                    tracing::warn!(%object, %error, "syncing an Experiment");
                }
                Ok(())
            }
            Action::Event {
                warning,
                reason,
                message,
            } => publish_event(recorder, object, rollout, warning, reason, &message).await,
        };
        if let Err(error) = result {
            tracing::warn!(%object, %error, action = %what, "executing a release action");
        }
    }
    done
}

/// The Experiments of a version whose ReplicaSet went (Argo deletes them then), logged on failure.
async fn delete_experiments(client: &Client, object: &RolloutRef, rollout: &Rollout, rs: &str) {
    let uid = rollout.metadata.uid.as_deref().unwrap_or_default();
    if let Err(error) =
        crate::experiments::delete_of_replica_set(client, &object.namespace, &object.name, uid, rs)
            .await
    {
        tracing::warn!(%object, %error, "deleting the Experiments of a deleted version");
    }
}

/// Records an Event on the rollout (the note truncated to Kubernetes' 1 KiB limit).
async fn publish_event(
    recorder: &Recorder,
    object: &RolloutRef,
    rollout: &Rollout,
    warning: bool,
    reason: String,
    message: &str,
) -> Result<(), kube::Error> {
    let event = K8sEvent {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason,
        note: Some(truncate(message, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder
        .publish(
            &event,
            &rollout_reference(object, rollout.metadata.uid.clone()),
        )
        .await
}

/// An ObjectReference to a Rollout, for Events.
pub fn rollout_reference(object: &RolloutRef, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some(object.api.api_version().into()),
        kind: Some("Rollout".into()),
        namespace: Some(object.namespace.clone()),
        name: Some(object.name.clone()),
        uid,
        ..ObjectReference::default()
    }
}
