//! One reconcile of a `sluice.dev` Rollout: the step engine's next status, checked by deriving
//! the rollout with it against the index's pods and services. Pure.
//!
//! A status that would not derive (bad steps, hosts, header routes, ...) is not written: the
//! current status stays, with an `InvalidSpec` condition and phase Degraded, so the last good
//! traffic keeps serving and the user sees why.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use sluice_api::RolloutStatus;

use crate::{
    index::Index,
    objects::RolloutRef,
    steps::{self, clear_invalid, mark_invalid},
};

#[derive(Clone, Debug, PartialEq)]
pub struct Reconciled {
    pub status: RolloutStatus,
    /// The status differs from the one observed: write it.
    pub changed: bool,
    pub requeue_after: Option<Duration>,
}

/// Reconciles one Rollout of the index; `None` if the index has no parsed Rollout of that name.
pub fn reconcile(index: &Index, object: &RolloutRef, now: Timestamp) -> Option<Reconciled> {
    let doc = index.rollout(object)?;
    let current = doc.status.clone().unwrap_or_default();
    let name = object.model_name();
    let invalid = |message: String| {
        let mut status = current.clone();
        status.observed_generation = doc.metadata.generation.map(|g| g.to_string());
        mark_invalid(&mut status, &message, now);
        (status, None)
    };
    let (status, requeue_after) = match index.live_hashes(doc) {
        Err(error) => invalid(error.to_string()),
        Ok(live) => match steps::next_status(doc, &live, now) {
            Err((field, problem)) => invalid(format!("rollout {name:?}: {field}: {problem}")),
            // Nothing to write: the canary's pods are missing, not the canary.
            Ok(step) if step.hold => (current.clone(), None),
            Ok(step) => {
                let has_stable = step.status.stable_rs.is_some();
                let mut next = doc.clone();
                next.status = Some(step.status.clone());
                match index.derive(&next) {
                    Err(error) if has_stable => invalid(error.to_string()),
                    // No pods yet: nothing to derive, nothing wrong.
                    _ => {
                        let mut status = step.status;
                        clear_invalid(&mut status);
                        (status, step.requeue_after)
                    }
                }
            }
        },
    };
    Some(Reconciled {
        changed: status != current,
        status,
        requeue_after,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use sluice_api::Rollout;

    use super::*;
    use crate::{objects::RolloutApi, steps::CONDITION_INVALID_SPEC};

    fn pod(name: &str, hash: &str, ip: &str) -> Pod {
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: prod, labels: {{app: demo, rollouts-pod-template-hash: {hash}}}}}\n\
             spec: {{containers: [{{name: app, ports: [{{containerPort: 8080}}]}}]}}\n\
             status: {{podIP: {ip}, conditions: [{{type: Ready, status: 'True'}}]}}\n"
        ))
        .expect("pod")
    }

    fn rollout(weight: i32, status: Option<RolloutStatus>) -> Rollout {
        let mut doc: Rollout = serde_yaml::from_str(&format!(
            "metadata: {{name: demo, namespace: prod}}\n\
             spec:\n  hosts: [demo.example]\n  selector: {{matchLabels: {{app: demo}}}}\n\
             \x20 strategy: {{canary: {{steps: [{{setWeight: {weight}}}, {{pause: {{}}}}]}}}}\n"
        ))
        .expect("rollout");
        doc.status = status;
        doc
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("time")
    }

    #[test]
    fn a_valid_rollout_advances_and_an_invalid_one_gets_invalid_spec_without_advancing() {
        let object = RolloutRef::new(RolloutApi::Sluice, "prod", "demo");
        let mut index = Index::default();
        index.apply_pod(&pod("a", "aaa", "10.0.0.1"));
        index.apply_rollout(object.clone(), Ok(rollout(20, None)));
        let first = reconcile(&index, &object, now()).expect("known");
        assert!(first.changed);
        assert_eq!(first.status.stable_rs.as_deref(), Some("aaa"));

        // A canary appears, but step 0's weight is out of range: not advanced, InvalidSpec.
        index.apply_pod(&pod("b", "bbb", "10.0.0.2"));
        index.apply_rollout(object.clone(), Ok(rollout(120, Some(first.status.clone()))));
        let bad = reconcile(&index, &object, now()).expect("known");
        assert!(bad.changed);
        assert_eq!(
            bad.status.current_pod_hash.as_deref(),
            Some("aaa"),
            "not advanced"
        );
        let condition = bad
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_INVALID_SPEC);
        let message = condition
            .and_then(|c| c.message.clone())
            .expect("InvalidSpec message");
        assert!(
            message.contains("spec.strategy.canary.steps[0].setWeight"),
            "{message}"
        );
        // Written and observed again: nothing more to write.
        index.apply_rollout(object.clone(), Ok(rollout(120, Some(bad.status.clone()))));
        assert!(!reconcile(&index, &object, now()).expect("known").changed);

        // Fixed: advances, and the condition goes.
        index.apply_rollout(object.clone(), Ok(rollout(20, Some(bad.status))));
        let fixed = reconcile(&index, &object, now()).expect("known");
        assert_eq!(fixed.status.current_pod_hash.as_deref(), Some("bbb"));
        assert!(
            fixed
                .status
                .conditions
                .iter()
                .all(|c| c.type_ != CONDITION_INVALID_SPEC)
        );
        assert_eq!(
            reconcile(
                &index,
                &RolloutRef::new(RolloutApi::Sluice, "prod", "x"),
                now()
            ),
            None
        );
    }
}
