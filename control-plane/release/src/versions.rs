//! The versions' ReplicaSets: create the new one, scale each to its target, scale old ones down
//! only after no acknowledged traffic routes to them (and their delay), delete those beyond
//! `revisionHistoryLimit`.

use std::{collections::BTreeMap, time::Duration};

use sluice_api::{Rollout, resource::DataPlaneStatus};

use crate::{
    Action,
    action::replica_set,
    engine::Cx,
    observed::ObservedVersion,
    spec::Plan,
    time::{after, until},
};

/// `targets`: replicas of the versions the rollout runs (stable, canary); every other version
/// goes to 0 once traffic has left it. `aborted_canary` stays until abortScaleDownDelaySeconds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scale(
    cx: &mut Cx,
    rollout: &Rollout,
    plan: &Plan<'_>,
    current: &str,
    versions: &[&ObservedVersion],
    targets: &mut BTreeMap<String, i32>,
    aborted_canary: Option<&str>,
    data_plane: &DataPlaneStatus,
    acked: bool,
    max_revision: u64,
) {
    for v in versions {
        if targets.contains_key(&v.hash) {
            if v.scale_down_deadline.is_some() {
                // Back in use (a rollback): no scale-down.
                cx.actions.push(Action::SetScaleDownDeadline {
                    name: v.name.clone(),
                    deadline: None,
                });
            }
            continue;
        }
        let routed = data_plane.traffic.routes_to(&v.hash) || !acked;
        let target = if Some(v.hash.as_str()) == aborted_canary {
            if plan.abort_scale_down_delay.is_zero() {
                v.desired
            } else {
                delayed(cx, v, plan.abort_scale_down_delay, routed)
            }
        } else {
            delayed(cx, v, plan.scale_down_delay, routed)
        };
        targets.insert(v.hash.clone(), target);
    }
    if !versions.iter().any(|v| v.hash == current) {
        let replicas = targets.get(current).copied().unwrap_or(0);
        let rs = replica_set(
            rollout,
            plan.template,
            plan.selector,
            current,
            max_revision + 1,
            replicas,
        );
        let name = rs.metadata.name.clone().unwrap_or_default();
        cx.actions.push(Action::CreateReplicaSet(Box::new(rs)));
        cx.event(
            false,
            "NewReplicaSetCreated",
            format!(
                "Created ReplicaSet {name} (revision {}) with {replicas} replicas",
                max_revision + 1
            ),
        );
    }
    for v in versions {
        let target = targets.get(&v.hash).copied().unwrap_or(v.desired);
        if target != v.desired {
            cx.actions.push(Action::ScaleReplicaSet {
                name: v.name.clone(),
                replicas: target,
            });
            cx.event(
                false,
                "ScalingReplicaSet",
                format!(
                    "Scaled ReplicaSet {} from {} to {target}",
                    v.name, v.desired
                ),
            );
        }
    }
    history(cx, plan, versions, targets);
}

/// An old version's replicas: kept while traffic may reach it; then, after `delay` (the deadline
/// annotation set when the traffic left), 0.
fn delayed(cx: &mut Cx, v: &ObservedVersion, delay: Duration, routed: bool) -> i32 {
    if v.desired == 0 {
        if v.scale_down_deadline.is_some() {
            cx.actions.push(Action::SetScaleDownDeadline {
                name: v.name.clone(),
                deadline: None,
            });
        }
        return 0;
    }
    if routed {
        return v.desired;
    }
    let deadline = match v.scale_down_deadline {
        Some(deadline) => deadline,
        None if delay.is_zero() => cx.now,
        None => {
            let deadline = after(cx.now, delay);
            cx.actions.push(Action::SetScaleDownDeadline {
                name: v.name.clone(),
                deadline: Some(deadline),
            });
            deadline
        }
    };
    match until(cx.now, deadline) {
        Some(left) => {
            cx.requeue(left);
            v.desired
        }
        None => {
            if v.scale_down_deadline.is_some() {
                cx.actions.push(Action::SetScaleDownDeadline {
                    name: v.name.clone(),
                    deadline: None,
                });
            }
            0
        }
    }
}

/// Old versions at 0 replicas with no pods left: the newest `revisionHistoryLimit` stay (for
/// rollback), older ones are deleted.
fn history(
    cx: &mut Cx,
    plan: &Plan<'_>,
    versions: &[&ObservedVersion],
    targets: &BTreeMap<String, i32>,
) {
    let in_use = [
        cx.status.stable_rs.as_deref(),
        cx.status.current_pod_hash.as_deref(),
    ];
    let mut old: Vec<&&ObservedVersion> = versions
        .iter()
        .filter(|v| {
            !in_use.contains(&Some(v.hash.as_str()))
                && v.desired == 0
                && v.available == 0
                && v.ready == 0
                && targets.get(&v.hash).copied().unwrap_or(0) == 0
        })
        .collect();
    old.sort_by(|a, b| {
        b.revision
            .cmp(&a.revision)
            .then_with(|| a.name.cmp(&b.name))
    });
    for v in old.into_iter().skip(plan.history_limit) {
        cx.actions.push(Action::DeleteReplicaSet {
            name: v.name.clone(),
        });
        cx.event(
            false,
            "DeletedReplicaSet",
            format!(
                "Deleted ReplicaSet {} beyond revisionHistoryLimit {}",
                v.name, plan.history_limit
            ),
        );
    }
}
