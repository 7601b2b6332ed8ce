//! The `Experiment` object of an experiment step (Kubernetes mode keeps one per experiment, as
//! Argo does): built here from the resolved step and `status.experiment`, handed to the driver
//! as [`Action::SyncExperiment`] by every pass that changes `status.experiment` (with the spec
//! while it runs, so a create that failed is made again by the next change; a restarted
//! controller that meets the object adopts it).

use std::collections::BTreeMap;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
    jiff::Timestamp,
};
use sluice_api::{
    Rollout, SLUICE_API_VERSION,
    experiment::RolloutExperimentStatus,
    experiment_object::{ExperimentSpec, ExperimentStatus, TemplateSpec},
};

use super::{Current, substitute};
use crate::{Action, HASH_LABEL, engine::Cx};

/// Asks the driver for the experiment's object when `status.experiment` changed from `before`;
/// with its spec while `running` is that experiment.
pub(crate) fn sync(
    cx: &mut Cx,
    rollout: &Rollout,
    before: Option<&RolloutExperimentStatus>,
    running: Option<&Current>,
) {
    let Some(status) = cx.status.experiment.clone() else {
        return;
    };
    if before == Some(&status) {
        return;
    }
    let spec = running
        .filter(|c| c.name == status.name)
        .map(|c| spec(rollout, c, &status));
    let terminate = spec.is_none()
        && status
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("terminated"));
    cx.actions.push(Action::SyncExperiment {
        name: status.name.clone(),
        canary_hash: canary_hash(rollout, &status),
        owner: owner(rollout),
        spec: spec.map(Box::new),
        terminate,
        status: ExperimentStatus::from(&status),
    });
}

/// The canary's hash the experiment belongs to (its name is `<rollout>-<hash>-<step>`).
fn canary_hash(rollout: &Rollout, status: &RolloutExperimentStatus) -> String {
    let rollout_name = rollout.metadata.name.as_deref().unwrap_or_default();
    status
        .name
        .strip_prefix(rollout_name)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.rsplit_once('-'))
        .map(|(hash, _)| hash.to_owned())
        .unwrap_or_default()
}

/// A controller ownerReference to the rollout (garbage-collected with it).
fn owner(rollout: &Rollout) -> OwnerReference {
    OwnerReference {
        api_version: SLUICE_API_VERSION.into(),
        kind: "Rollout".into(),
        name: rollout.metadata.name.clone().unwrap_or_default(),
        uid: rollout.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The spec of the running experiment: its templates as their ReplicaSets run them (pod template
/// and selector with the template's hash label), the step's duration, and its analyses with the
/// arguments resolved so far (`{{templates.*}}`, and `{{experiment.*}}` once available).
fn spec(rollout: &Rollout, current: &Current, status: &RolloutExperimentStatus) -> ExperimentSpec {
    let step = rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .and_then(|c| c.steps.get(current.index))
        .and_then(|s| s.experiment.as_ref());
    let available_at: Option<Timestamp> = status.available_at.as_ref().map(|t| t.0);
    let finished_at = available_at
        .zip(current.experiment.duration)
        .map(|(at, d)| crate::time::after(at, d).to_string());
    let resolve = |tag: &str| -> Option<String> {
        match tag {
            "experiment.availableAt" => available_at.map(|t| t.to_string()),
            "experiment.finishedAt" => finished_at.clone(),
            _ => {
                let (name, field) = tag.strip_prefix("templates.")?.split_once('.')?;
                let r = current.templates.iter().find(|r| r.template.name == name)?;
                match field {
                    "podTemplateHash" => Some(r.hash.clone()),
                    "replicaset.name" => Some(r.rs_name.clone()),
                    _ => None,
                }
            }
        }
    };
    let templates = current
        .templates
        .iter()
        .map(|r| {
            let mut template = r.pod_template.clone();
            template
                .metadata
                .get_or_insert_with(ObjectMeta::default)
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(HASH_LABEL.into(), r.hash.clone());
            let mut selector = r.selector.clone();
            selector
                .match_labels
                .get_or_insert_with(BTreeMap::new)
                .insert(HASH_LABEL.into(), r.hash.clone());
            TemplateSpec {
                name: r.template.name.clone(),
                replicas: Some(r.template.replicas),
                min_ready_seconds: rollout.spec.min_ready_seconds,
                selector: Some(selector),
                template,
            }
        })
        .collect();
    let analyses = step
        .map(|s| s.analyses.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|mut a| {
            for arg in &mut a.args {
                arg.value = arg.value.as_ref().map(|v| substitute(v, &resolve));
            }
            a
        })
        .collect();
    ExperimentSpec {
        templates,
        duration: step.and_then(|s| s.duration.clone()),
        progress_deadline_seconds: rollout.spec.progress_deadline_seconds,
        terminate: false,
        analyses,
    }
}
