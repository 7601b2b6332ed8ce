//! Argo's pod restart (`spec.restartAt`, `kubectl argo rollouts restart`): a rolling re-creation
//! of the rollout's pods without a new version and without the steps.
//!
//! The rule is Argo's (docs/features/restart.md): once `now` is past `restartAt`, one pod at a
//! time is evicted, only from a ReplicaSet that is fully available and has no pod terminating,
//! visiting the stable ReplicaSet first, then the new one, then the others from the oldest
//! revision; the ReplicaSet re-creates the pod. When every pod was created at or after
//! `restartAt`, `status.restartedAt = restartAt`. A new template during a restart cancels it
//! (`restartedAt` is set at once): the new version brings up new pods anyway.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{Action, engine::Cx, observed::ObservedVersion};

/// One pod of the rollout, as the restart needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedPod {
    pub name: String,
    /// Its `rollouts-pod-template-hash` label: the version it belongs to.
    pub hash: String,
    /// `metadata.creationTimestamp`; a pod without one is never taken for an old one.
    pub created: Option<Timestamp>,
    /// `metadata.deletionTimestamp` is set: it is terminating.
    pub deleting: bool,
}

/// One pass of the restart. `order` is the rollout's ReplicaSets in Argo's order (stable, new,
/// the others from the oldest revision); `new_template` is whether this pass started a new
/// version.
pub(crate) fn step(
    cx: &mut Cx,
    restart_at: Option<Timestamp>,
    order: &[&ObservedVersion],
    pods: &[ObservedPod],
    new_template: bool,
) {
    let Some(at) = restart_at else {
        return;
    };
    if cx.status.restarted_at.as_ref().is_some_and(|t| t.0 >= at) {
        return;
    }
    if new_template {
        cx.status.restarted_at = Some(Time(at));
        cx.event(
            false,
            "RestartCancelled",
            "A new template replaces the pods: the restart is over".into(),
        );
        return;
    }
    if let Ok(left) = Duration::try_from(cx.now.duration_until(at))
        && !left.is_zero()
    {
        cx.requeue(left);
        return;
    }
    for version in order.iter().filter(|v| v.desired > 0) {
        let mine: Vec<&ObservedPod> = pods.iter().filter(|p| p.hash == version.hash).collect();
        let mut old: Vec<&ObservedPod> = mine
            .iter()
            .copied()
            .filter(|p| !p.deleting && p.created.is_some_and(|c| c < at))
            .collect();
        if old.is_empty() {
            continue;
        }
        // One pod at a time, from a ReplicaSet that can spare it.
        if mine.iter().any(|p| p.deleting) || version.available < version.desired {
            return;
        }
        old.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        let pod = old[0].name.clone();
        cx.event(
            false,
            "RestartingPod",
            format!(
                "Evicting pod {pod} of ReplicaSet {} (created before restartAt {at})",
                version.name
            ),
        );
        cx.actions.push(Action::EvictPod { name: pod });
        return;
    }
    cx.status.restarted_at = Some(Time(at));
    cx.event(
        false,
        "RolloutRestarted",
        format!("Every pod was created after restartAt {at}"),
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sluice_api::RolloutStatus;

    use super::*;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn cx(now: i64) -> Cx {
        Cx {
            status: RolloutStatus::default(),
            actions: Vec::new(),
            requeue_after: None,
            now: t(now),
        }
    }

    fn version(name: &str, hash: &str, desired: i32, available: i32) -> ObservedVersion {
        ObservedVersion {
            name: name.into(),
            hash: hash.into(),
            desired,
            available,
            ready: available,
            controlled: true,
            ..ObservedVersion::default()
        }
    }

    fn pod(name: &str, hash: &str, created: i64) -> ObservedPod {
        ObservedPod {
            name: name.into(),
            hash: hash.into(),
            created: Some(t(created)),
            deleting: false,
        }
    }

    fn evicted(cx: &Cx) -> Vec<String> {
        cx.actions
            .iter()
            .filter_map(|a| match a {
                Action::EvictPod { name } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_pod_at_a_time_stable_first_and_done_when_all_are_newer() {
        let stable = version("demo-s", "s", 2, 2);
        let canary = version("demo-c", "c", 1, 1);
        let order = [&stable, &canary];
        let mut pods = vec![pod("s-2", "s", 5), pod("s-1", "s", 1), pod("c-1", "c", 3)];

        let mut pass = cx(100);
        step(&mut pass, Some(t(50)), &order, &pods, false);
        assert_eq!(
            evicted(&pass),
            ["s-1"],
            "the oldest pod of the stable first"
        );
        assert_eq!(pass.status.restarted_at, None);

        // Terminating: nothing more from that ReplicaSet, nor from the next.
        pods[1].deleting = true;
        let mut pass = cx(101);
        step(&mut pass, Some(t(50)), &order, &pods, false);
        assert!(evicted(&pass).is_empty());

        // Replaced, but not yet available: wait.
        pods[1] = pod("s-3", "s", 101);
        let short = version("demo-s", "s", 2, 1);
        let mut pass = cx(102);
        step(&mut pass, Some(t(50)), &[&short, &canary], &pods, false);
        assert!(evicted(&pass).is_empty());

        let mut pass = cx(103);
        step(&mut pass, Some(t(50)), &order, &pods, false);
        assert_eq!(evicted(&pass), ["s-2"]);

        pods[0] = pod("s-4", "s", 103);
        let mut pass = cx(104);
        step(&mut pass, Some(t(50)), &order, &pods, false);
        assert_eq!(evicted(&pass), ["c-1"], "then the new ReplicaSet");

        pods[2] = pod("c-2", "c", 104);
        let mut pass = cx(105);
        step(&mut pass, Some(t(50)), &order, &pods, false);
        assert!(evicted(&pass).is_empty());
        assert_eq!(pass.status.restarted_at, Some(Time(t(50))), "done");

        // Done: a later pass does nothing.
        let mut again = cx(106);
        again.status.restarted_at = Some(Time(t(50)));
        step(&mut again, Some(t(50)), &order, &pods, false);
        assert!(again.actions.is_empty());
    }

    #[test]
    fn a_future_restart_waits_for_its_time_and_a_new_template_cancels_it() {
        let stable = version("demo-s", "s", 1, 1);
        let pods = [pod("s-1", "s", 1)];
        let mut pass = cx(10);
        step(&mut pass, Some(t(70)), &[&stable], &pods, false);
        assert!(pass.actions.is_empty());
        assert_eq!(pass.requeue_after, Some(Duration::from_secs(60)));

        let mut pass = cx(80);
        step(&mut pass, Some(t(70)), &[&stable], &pods, true);
        assert!(evicted(&pass).is_empty());
        assert_eq!(pass.status.restarted_at, Some(Time(t(70))));

        let mut none = cx(80);
        step(&mut none, None, &[&stable], &pods, false);
        assert!(none.actions.is_empty() && none.status.restarted_at.is_none());
    }

    #[test]
    fn scaled_down_replica_sets_and_pods_without_a_creation_time_are_skipped() {
        let old = version("demo-o", "o", 0, 0);
        let stable = version("demo-s", "s", 1, 1);
        let pods = [
            pod("o-1", "o", 1),
            ObservedPod {
                name: "s-1".into(),
                hash: "s".into(),
                created: None,
                deleting: false,
            },
        ];
        let mut pass = cx(100);
        step(&mut pass, Some(t(50)), &[&stable, &old], &pods, false);
        assert!(evicted(&pass).is_empty());
        assert_eq!(pass.status.restarted_at, Some(Time(t(50))));
    }
}
