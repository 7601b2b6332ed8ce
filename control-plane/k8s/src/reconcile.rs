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
    Some(Reconciled { changed: status != current, status, requeue_after })
}
