//! Object parsing: a watched `DynamicObject` read as a Rollout of either API group, with the path
//! of the bad field in the error, so one malformed object is reported by name instead of breaking
//! the whole watch.

use kube::api::DynamicObject;
use serde::de::DeserializeOwned;
use sluice_api::{ArgoRollout, Rollout};

use crate::objects::{RolloutApi, RolloutRef};

/// Reads a watched object as a Rollout of `api`; the error names the bad field's path.
pub fn parse_rollout(
    api: RolloutApi,
    object: &DynamicObject,
) -> (RolloutRef, Result<Rollout, String>) {
    let object_ref = RolloutRef::new(
        api,
        object
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        object.metadata.name.clone().unwrap_or_default(),
    );
    let parsed = serde_json::to_value(object)
        .map_err(|e| e.to_string())
        .and_then(|value| match api {
            RolloutApi::Sluice => from_value::<Rollout>(value),
            RolloutApi::Argo => from_value::<ArgoRollout>(value).map(Rollout::from),
        });
    (object_ref, parsed)
}

fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| match e.path().to_string().as_str() {
        "." => e.inner().to_string(),
        path => format!("{path}: {}", e.inner()),
    })
}
