//! The experiment's ReplicaSets: created and scaled while it runs, scaled to 0 and deleted after
//! the acknowledged traffic left them.

use std::collections::BTreeMap;

use sluice_api::Rollout;

use super::{Current, observed_of};
use crate::{
    Action,
    action::{EXPERIMENT_ANNOTATION, EXPERIMENT_TEMPLATE_ANNOTATION, replica_set},
    engine::Cx,
    observed::ObservedVersion,
};

/// The experiment's ReplicaSets: those of the running experiment created and scaled to their
/// templates' replicas; every other experiment ReplicaSet of the rollout scaled to 0 once no
/// acknowledged traffic reaches it, then deleted once its pods are gone. Marks an experiment
/// left before it completed (abort, promote) as terminated.
pub(crate) fn scale(
    cx: &mut Cx,
    rollout: &Rollout,
    running: Option<&Current>,
    versions: &[&ObservedVersion],
    traffic: &sluice_api::resource::PublishedTraffic,
    acked: bool,
) {
    if let Some(status) = cx.status.experiment.as_mut()
        && running.is_none_or(|c| c.name != status.name)
        && matches!(status.phase.as_str(), "" | "Pending" | "Running")
    {
        status.phase = "Successful".into();
        status.message = Some(if cx.status.abort {
            "terminated: the rollout was aborted".into()
        } else {
            "terminated: the rollout left the experiment's step".into()
        });
        let name = status.name.clone();
        cx.event(
            false,
            "ExperimentTerminated",
            format!("Experiment {name} terminated"),
        );
    }
    if let Some(current) = running {
        for r in &current.templates {
            match observed_of(r, versions) {
                None => {
                    let mut rs = replica_set(
                        rollout,
                        &r.pod_template,
                        &r.selector,
                        &r.hash,
                        0,
                        r.template.replicas,
                    );
                    rs.metadata.name = Some(r.rs_name.clone());
                    rs.metadata.annotations = Some(BTreeMap::from([
                        (EXPERIMENT_ANNOTATION.to_owned(), current.name.clone()),
                        (
                            EXPERIMENT_TEMPLATE_ANNOTATION.to_owned(),
                            r.template.name.clone(),
                        ),
                    ]));
                    cx.actions.push(Action::CreateReplicaSet(Box::new(rs)));
                    cx.event(
                        false,
                        "NewReplicaSetCreated",
                        format!(
                            "Created ReplicaSet {} for template {} of experiment {} with {} replicas",
                            r.rs_name, r.template.name, current.name, r.template.replicas
                        ),
                    );
                }
                Some(v) if v.desired != r.template.replicas => {
                    scale_to(cx, v, r.template.replicas);
                }
                Some(_) => {}
            }
        }
    }
    let routed = |hash: &str| {
        !acked
            || traffic
                .additional
                .iter()
                .any(|w| w.pod_template_hash.as_deref() == Some(hash) && w.weight > 0)
    };
    for v in versions {
        if running.is_some_and(|c| c.templates.iter().any(|r| r.rs_name == v.name)) {
            continue;
        }
        if routed(&v.hash) {
            continue;
        }
        if v.desired > 0 {
            scale_to(cx, v, 0);
        } else if v.available == 0 && v.ready == 0 {
            cx.actions.push(Action::DeleteReplicaSet {
                name: v.name.clone(),
            });
            cx.event(
                false,
                "DeletedReplicaSet",
                format!(
                    "Deleted ReplicaSet {} of experiment {}",
                    v.name,
                    v.experiment.as_deref().unwrap_or("")
                ),
            );
        }
    }
}

fn scale_to(cx: &mut Cx, v: &ObservedVersion, replicas: i32) {
    cx.actions.push(Action::ScaleReplicaSet {
        name: v.name.clone(),
        replicas,
    });
    cx.event(
        false,
        "ScalingReplicaSet",
        format!(
            "Scaled ReplicaSet {} from {} to {replicas}",
            v.name, v.desired
        ),
    );
}
