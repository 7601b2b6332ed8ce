//! `valueFrom.fieldRef.fieldPath`: an argument read from the Rollout itself, as Argo reads it
//! (`analysisutil.BuildArgumentsForRolloutAnalysisRun`):
//!
//! - a path starting with `metadata` is Kubernetes' downward-API field path
//!   (`fieldpath.ExtractFieldPathAsString`): `metadata.name`, `metadata.namespace`,
//!   `metadata.uid`, `metadata.labels['app']`, `metadata.annotations['x']` (a missing key is the
//!   empty string), or `metadata.labels` / `metadata.annotations` whole (`key="value"` lines,
//!   sorted);
//! - any other path walks the Rollout's JSON, split at `.`, `[` and `]`
//!   (`spec.template.metadata.labels.app`, `spec.template.spec.containers[0].image`); a string is
//!   taken as it is, anything else as its JSON.
//!
//! Argo's own walk, not a JSONPath engine: the syntax is Argo's (and Kubernetes'), which no
//! JSONPath crate reads the same way.

use serde_json::Value;

/// The value at `path` in `object` (a Rollout as JSON). Errors say what is wrong with the path.
pub fn field_path_value(object: &Value, path: &str) -> Result<String, String> {
    if path.starts_with("metadata") {
        metadata_value(object, path)
    } else {
        walk(object, path)
    }
}

/// Kubernetes' `ExtractFieldPathAsString` over an object's metadata.
fn metadata_value(object: &Value, path: &str) -> Result<String, String> {
    let metadata = &object["metadata"];
    let unsupported = || format!("unsupported fieldPath: {path}");
    if let Some((map, key)) = subscripted(path) {
        return match map {
            "metadata.labels" | "metadata.annotations" => {
                let field = map.trim_start_matches("metadata.");
                Ok(metadata[field][key].as_str().unwrap_or_default().to_owned())
            }
            _ => Err(unsupported()),
        };
    }
    match path {
        "metadata.labels" | "metadata.annotations" => {
            let field = path.trim_start_matches("metadata.");
            let mut lines: Vec<String> = metadata[field]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            lines.sort();
            Ok(lines.join("\n"))
        }
        "metadata.name" | "metadata.namespace" | "metadata.uid" => {
            let field = path.trim_start_matches("metadata.");
            Ok(metadata[field].as_str().unwrap_or_default().to_owned())
        }
        _ => Err(unsupported()),
    }
}

/// `metadata.labels['app']` → (`metadata.labels`, `app`), as Kubernetes'
/// `SplitMaybeSubscriptedPath` (single quotes required).
fn subscripted(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (map, key) = inner.split_once("['")?;
    Some((map, key))
}

/// Argo's `extractValueFromRollout`.
fn walk(object: &Value, path: &str) -> Result<String, String> {
    let invalid = || format!("invalid path {path} in rollout");
    let mut at = object;
    for section in path.split(['.', '[', ']']).filter(|s| !s.is_empty()) {
        at = match at {
            Value::Array(items) => {
                let index: usize = section
                    .parse()
                    .map_err(|_| format!("invalid index '{section}'"))?;
                items
                    .get(index)
                    .ok_or_else(|| format!("index {index} out of range"))?
            }
            Value::Object(map) => map.get(section).ok_or_else(invalid)?,
            _ => return Err(invalid()),
        };
    }
    match at {
        Value::Null => Err(invalid()),
        Value::String(text) => Ok(text.clone()),
        other => Ok(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout() -> Value {
        json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {"team": "payments"}
            },
            "spec": {
                "replicas": 3,
                "template": {
                    "metadata": {"labels": {"app": "web", "x": "canary-x"}},
                    "spec": {"containers": [{"name": "web", "image": "web:2"}]}
                }
            }
        })
    }

    #[test]
    fn metadata_paths_read_as_kubernetes_reads_them() {
        let r = rollout();
        let value = |p: &str| field_path_value(&r, p);
        assert_eq!(value("metadata.name").as_deref(), Ok("web"));
        assert_eq!(value("metadata.namespace").as_deref(), Ok("shop"));
        assert_eq!(value("metadata.uid").as_deref(), Ok("u-1"));
        assert_eq!(value("metadata.labels['app']").as_deref(), Ok("web"));
        assert_eq!(
            value("metadata.annotations['team']").as_deref(),
            Ok("payments")
        );
        assert_eq!(value("metadata.labels['missing']").as_deref(), Ok(""));
        assert_eq!(
            value("metadata.labels").as_deref(),
            Ok("app=\"web\"\ntier=\"front\"")
        );
        let error = value("metadata.generateName['x']").expect_err("not a map field");
        assert!(error.contains("unsupported fieldPath"), "{error}");
        let error = value("metadata.finalizers").expect_err("not supported");
        assert!(error.contains("metadata.finalizers"), "{error}");
    }

    #[test]
    fn other_paths_walk_the_rollout() {
        let r = rollout();
        let value = |p: &str| field_path_value(&r, p);
        assert_eq!(
            value("spec.template.metadata.labels.x").as_deref(),
            Ok("canary-x")
        );
        assert_eq!(
            value("spec.template.spec.containers[0].image").as_deref(),
            Ok("web:2")
        );
        assert_eq!(value("spec.replicas").as_deref(), Ok("3"));
        assert_eq!(
            value("spec.template.metadata.labels").as_deref(),
            Ok(r#"{"app":"web","x":"canary-x"}"#)
        );
        assert_eq!(
            value("spec.template.spec.containers[1].image"),
            Err("index 1 out of range".into())
        );
        assert_eq!(
            value("spec.template.spec.containers[a]"),
            Err("invalid index 'a'".into())
        );
        assert_eq!(
            value("spec.nothing.here"),
            Err("invalid path spec.nothing.here in rollout".into())
        );
        assert!(value("spec.replicas.more").is_err());
    }
}
