//! Additional weighted versions (A/B/n): `status.canary.weights.additional[]` (Argo's
//! `WeightDestination`s, written by Argo's controller for experiment templates with a `weight`, by
//! hand in a standalone file, or copied from Sluice's `status.dataPlane.traffic.additional` by
//! the published view) → the model's `additional_weights`.
//!
//! Weights count in units of `maxTrafficWeight`, like the canary's. An aborted rollout sends
//! everything to stable, so it has none. A hash without pods is no version to send to: from the
//! caller's pods (Kubernetes) it is skipped, as a canary without pods is; in a standalone file,
//! which names every version it has, it is an error naming the entry.

use std::collections::BTreeMap;

use sluice_model::{Version, WeightDestination};

use super::VersionSource;
use crate::{resource::RolloutStatus, weight::WeightScale};

const FIELD: &str = "status.canary.weights.additional";

/// The additional weights, and the document field of each (by model index).
#[derive(Debug, Default)]
pub(super) struct AdditionalWeights {
    pub weights: Vec<WeightDestination>,
    /// `status.canary.weights.additional[j]` of each entry of `weights`.
    pub fields: Vec<String>,
}

/// Reads `status.canary.weights.additional`. Errors are (field, problem).
pub(super) fn additional_weights(
    status: &RolloutStatus,
    versions: &BTreeMap<String, Version>,
    source: VersionSource,
    scale: WeightScale,
) -> Result<AdditionalWeights, (String, String)> {
    let mut out = AdditionalWeights::default();
    if status.abort {
        return Ok(out);
    }
    let entries = status
        .canary
        .as_ref()
        .and_then(|c| c.weights.as_ref())
        .map(|w| w.additional.as_slice())
        .unwrap_or_default();
    for (j, entry) in entries.iter().enumerate() {
        let field = format!("{FIELD}[{j}]");
        let hash = match entry.pod_template_hash.as_deref() {
            Some(hash) if !hash.is_empty() => hash,
            _ => {
                return Err((
                    format!("{field}.podTemplateHash"),
                    "is required: the pod-template hash of the version that gets the weight".into(),
                ));
            }
        };
        let weight_bp = scale
            .to_bp(entry.weight)
            .map_err(|p| (format!("{field}.weight"), p))?;
        if !versions.contains_key(hash) {
            if source == VersionSource::Caller {
                continue;
            }
            let known: Vec<&str> = versions.keys().map(String::as_str).collect();
            return Err((
                format!("{field}.podTemplateHash"),
                format!("{hash:?} has no entry in spec.staticEndpoints (entries: {known:?})"),
            ));
        }
        out.weights.push(WeightDestination {
            name: entry.service_name.clone().unwrap_or_default(),
            pod_template_hash: hash.to_owned(),
            weight_bp,
        });
        out.fields.push(field);
    }
    Ok(out)
}

/// The document field of a model path below `additionalWeights[i]`.
pub(super) fn map_path(base: &str, rest: &[sluice_model::Segment]) -> String {
    use sluice_model::Segment::Field;
    match rest {
        [Field("podTemplateHash")] => format!("{base}.podTemplateHash"),
        [Field("weightBp")] => format!("{base}.weight"),
        _ => base.to_owned(),
    }
}
