//! Feeding manifests (multi-document YAML of Rollouts, Pods and Services, as `kubectl get -o yaml`
//! prints them) into an [`Index`], as the watchers would: for tests and end-to-end runs without
//! an API server. Pure.

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::DynamicObject;
use serde::Deserialize;

use crate::{RolloutApi, index::Index, watch::parse_rollout};

/// Applies every document of `text` to `index`. Rollouts that do not parse are applied as
/// errors (as the watch layer does); other kinds, and Pods or Services that do not parse, fail
/// with the document's 1-based number.
pub fn apply_yaml(index: &mut Index, text: &str) -> Result<(), String> {
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let at = |e: &dyn std::fmt::Display| format!("document {}: {e}", i + 1);
        let value = serde_yaml::Value::deserialize(document).map_err(|e| at(&e))?;
        if value.is_null() {
            continue;
        }
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or_default();
        match (field("apiVersion"), field("kind")) {
            (api_version, "Rollout") => {
                let api = match api_version {
                    sluice_api::SLUICE_API_VERSION => RolloutApi::Sluice,
                    sluice_api::ARGO_API_VERSION => RolloutApi::Argo,
                    other => return Err(at(&format!("Rollout of unknown apiVersion {other:?}"))),
                };
                let object: DynamicObject =
                    serde_yaml::from_value(value.clone()).map_err(|e| at(&e))?;
                let (object, rollout) = parse_rollout(api, &object);
                index.apply_rollout(object, rollout);
            }
            ("v1", "Pod") => {
                let pod: Pod = serde_yaml::from_value(value.clone()).map_err(|e| at(&e))?;
                index.apply_pod(&pod);
            }
            ("v1", "Service") => {
                let service: Service = serde_yaml::from_value(value.clone()).map_err(|e| at(&e))?;
                index.apply_service(&service);
            }
            (api_version, kind) => {
                return Err(at(&format!(
                    "unexpected kind {kind:?} of apiVersion {api_version:?}"
                )));
            }
        }
    }
    Ok(())
}
