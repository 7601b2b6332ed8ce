//! The requests each verb sends, as data: exactly the patches kubectl-argo-rollouts sends
//! (pkg/kubectl-argo-rollouts/cmd/{promote,abort,retry,pause,restart,undo,set}), aimed at the
//! `sluice.dev` Rollout. Pure; `kube.rs` executes them.

use k8s_openapi::{api::apps::v1::ReplicaSet, jiff::Timestamp};
use serde_json::{Value, json};
use sluice_api::Rollout;

/// `application/merge-patch+json` (Argo's `types.MergePatchType`).
pub const MERGE_PATCH: &str = "application/merge-patch+json";
/// `application/json-patch+json` (Argo's `types.JSONPatchType`, used by `undo`).
pub const JSON_PATCH: &str = "application/json-patch+json";

/// The `sluice.dev` Rollouts of a namespace.
pub fn rollouts_path(namespace: &str) -> String {
    format!("/apis/sluice.dev/v1alpha1/namespaces/{namespace}/rollouts")
}

/// One `sluice.dev` Rollout; `status` selects the status subresource.
pub fn rollout_path(namespace: &str, name: &str, status: bool) -> String {
    let base = format!("{}/{name}", rollouts_path(namespace));
    if status { base + "/status" } else { base }
}

/// The Argo Rollouts of a namespace (read only: `get`, `list`, `status`, and to name the refusal).
pub fn argo_rollouts_path(namespace: &str) -> String {
    format!("/apis/argoproj.io/v1alpha1/namespaces/{namespace}/rollouts")
}

/// A Deployment (the target of `workloadRef`).
pub fn deployment_path(namespace: &str, name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
}

/// A merge patch, to the status subresource or to the object.
#[derive(Clone, Debug, PartialEq)]
pub struct MergePatch {
    pub status: bool,
    pub body: Value,
}

/// Argo's `promote` as a sequence: the status patch first (if any), then the spec patch (if
/// any). When the status patch fails with NotFound (a CRD without the status subresource) Argo
/// sends `unified` to the object instead of the spec patch; so does `kube.rs`.
#[derive(Clone, Debug, PartialEq)]
pub struct Promote {
    pub status: Option<Value>,
    pub spec: Option<Value>,
    pub unified: Value,
}

/// Argo's `GetCurrentCanaryStep` index: `None` without steps; else `status.currentStepIndex`
/// (default 0), which may equal the number of steps (all done).
fn current_step_index(rollout: &Rollout) -> Option<i32> {
    let steps = rollout.spec.strategy.canary.as_ref()?.steps.len();
    if steps == 0 {
        return None;
    }
    Some(
        rollout
            .status
            .as_ref()
            .and_then(|s| s.current_step_index)
            .unwrap_or(0),
    )
}

/// The next step index, as Argo computes it for `promote` (never past the number of steps).
fn next_step_index(rollout: &Rollout, index: i32) -> i32 {
    let steps = rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .map_or(0, |c| c.steps.len());
    if usize::try_from(index).is_ok_and(|i| i < steps) {
        index.saturating_add(1)
    } else {
        index
    }
}

/// `promote [--full]` (Argo's `getPatches`, without the deprecated skip flags). Past an
/// inconclusive analysis the plain branch serves: the engine reads cleared `pauseConditions` as
/// the user's promote (its `controllerPause`), as Argo's controller does.
pub fn promote(rollout: &Rollout, full: bool) -> Promote {
    let status = rollout.status.clone().unwrap_or_default();
    let paused = rollout.spec.paused;
    if full {
        return Promote {
            spec: paused.then(|| json!({"spec": {"paused": false}})),
            status: (status.current_pod_hash != status.stable_rs)
                .then(|| json!({"status": {"promoteFull": true}})),
            unified: json!({"spec": {"paused": false}, "status": {"promoteFull": true}}),
        };
    }
    let spec = paused.then(|| json!({"spec": {"paused": false}}));
    let mut unified = json!({"spec": {"paused": false}, "status": {"pauseConditions": null}});
    let status_patch = if !status.pause_conditions.is_empty() {
        Some(json!({"status": {"pauseConditions": null}}))
    } else if let Some(index) = current_step_index(rollout) {
        let next = next_step_index(rollout, index);
        unified = json!({"spec": {"paused": false},
                          "status": {"pauseConditions": null, "currentStepIndex": next}});
        Some(json!({"status": {"pauseConditions": null, "currentStepIndex": next}}))
    } else {
        None
    };
    Promote {
        status: status_patch,
        spec,
        unified,
    }
}

/// `abort`: to the status subresource (Argo falls back to the object on NotFound).
pub fn abort() -> MergePatch {
    MergePatch {
        status: true,
        body: json!({"status": {"abort": true}}),
    }
}

/// `retry`: clears the abort, to the status subresource (fallback as `abort`).
pub fn retry() -> MergePatch {
    MergePatch {
        status: true,
        body: json!({"status": {"abort": false}}),
    }
}

/// `pause`: `spec.paused`.
pub fn pause() -> MergePatch {
    MergePatch {
        status: false,
        body: json!({"spec": {"paused": true}}),
    }
}

/// `restart [--in D]`: `spec.restartAt`, RFC 3339 in whole seconds as Argo writes it.
pub fn restart(at: Timestamp) -> MergePatch {
    let seconds = Timestamp::from_second(at.as_second()).unwrap_or(at);
    MergePatch {
        status: false,
        body: json!({"spec": {"restartAt": seconds.to_string()}}),
    }
}

/// Why `undo` cannot go back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UndoError {
    #[error("unable to find specified revision {0} in history")]
    RevisionNotInHistory(u64),
    #[error("no revision found for rollout {0:?}")]
    PreviousNotFound(String),
    #[error("ReplicaSet {0:?} has no pod template")]
    TemplateMissing(String),
}

/// The ReplicaSet of the revision `undo` goes back to (Argo's `rolloutRevision`): among those the
/// rollout controls, revision `to_revision`, or with 0 the one before the latest.
pub fn undo_target<'a>(
    rollout: &Rollout,
    replica_sets: &'a [ReplicaSet],
    to_revision: u64,
) -> Result<&'a ReplicaSet, UndoError> {
    let uid = rollout.metadata.uid.as_deref().unwrap_or_default();
    let mut latest: Option<(u64, &ReplicaSet)> = None;
    let mut previous: Option<(u64, &ReplicaSet)> = None;
    for rs in replica_sets {
        let version = sluice_release::ObservedVersion::from_replica_set(rs, uid);
        // An experiment's ReplicaSets are no revisions of the rollout.
        if !version.controlled || version.experiment.is_some() {
            continue;
        }
        // Argo reads a missing revision annotation as 0.
        let revision = version.revision.unwrap_or(0);
        if to_revision > 0 {
            if revision == to_revision {
                return Ok(rs);
            }
            continue;
        }
        match latest {
            Some((l, _)) if revision <= l => {
                if previous.is_none_or(|(p, _)| p < revision) {
                    previous = Some((revision, rs));
                }
            }
            _ => {
                previous = latest;
                latest = Some((revision, rs));
            }
        }
    }
    if to_revision > 0 {
        return Err(UndoError::RevisionNotInHistory(to_revision));
    }
    previous.map(|(_, rs)| rs).ok_or_else(|| {
        UndoError::PreviousNotFound(rollout.metadata.name.clone().unwrap_or_default())
    })
}

/// `undo`'s JSON patch replacing `/spec/template` with the ReplicaSet's template (its
/// `rollouts-pod-template-hash` label removed), or `None` when the current template already
/// matches it (Argo: "skipped rollback"). `current` is the rollout's (or the workloadRef
/// Deployment's) `spec.template` as JSON.
pub fn undo(current: Option<&Value>, rs: &ReplicaSet) -> Result<Option<Value>, UndoError> {
    let name = rs.metadata.name.clone().unwrap_or_default();
    let template = rs
        .spec
        .template
        .as_ref()
        .ok_or_else(|| UndoError::TemplateMissing(name.clone()))?;
    let mut template =
        serde_json::to_value(template).map_err(|_| UndoError::TemplateMissing(name))?;
    remove_hash_label(&mut template);
    if let Some(current) = current {
        let mut current = current.clone();
        remove_hash_label(&mut current);
        if derivative(&current, &template) {
            return Ok(None);
        }
    }
    Ok(Some(
        json!([{"op": "replace", "path": "/spec/template", "value": template}]),
    ))
}

fn remove_hash_label(template: &mut Value) {
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(sluice_release::HASH_LABEL);
    }
}

/// Kubernetes' `Semantic.DeepDerivative(a, b)` on JSON: fields unset or empty in `a` match
/// anything in `b`; the rest must be equal.
pub fn derivative(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, _) => true,
        (Value::String(x), _) if x.is_empty() => true,
        (Value::Array(x), _) if x.is_empty() => true,
        (Value::Object(x), _) if x.is_empty() => true,
        (Value::Object(x), Value::Object(y)) => x.iter().all(|(k, v)| match y.get(k) {
            Some(w) => derivative(v, w),
            None => derivative(v, &Value::Null) && is_empty(v),
        }),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| derivative(v, w))
        }
        _ => a == b,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// `set image`: sets `image` on the containers named `container` (`*`: all) among
/// `spec.template.spec.{initContainers,containers,ephemeralContainers}` of a Rollout or
/// Deployment object (kept whole, as JSON, so the update drops no field). Errors as Argo's:
/// `unable to find container named "x"`.
pub fn set_image(object: &mut Value, container: &str, image: &str) -> Result<(), String> {
    let mut found = false;
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(containers) = object
            .pointer_mut(&format!("/spec/template/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in containers.iter_mut() {
            let matches =
                container == "*" || c.get("name").and_then(Value::as_str) == Some(container);
            if matches && let Some(c) = c.as_object_mut() {
                c.insert("image".into(), Value::String(image.to_owned()));
                found = true;
            }
        }
    }
    if found {
        Ok(())
    } else {
        Err(format!("unable to find container named {container:?}"))
    }
}

/// Splits `CONTAINER=IMAGE` (exactly one `=`, both sides non-empty).
pub fn parse_container_image(arg: &str) -> Result<(&str, &str), String> {
    match arg.split('=').collect::<Vec<_>>().as_slice() {
        [container, image] if !container.is_empty() && !image.is_empty() => Ok((container, image)),
        _ => Err(format!("{arg:?} is not CONTAINER=IMAGE")),
    }
}

#[cfg(test)]
#[path = "patch_tests.rs"]
mod tests;
