//! `spec.selector`: must select the template's pods (Argo rejects a rollout whose selector does not
//! match its template's labels) and is rendered as a label-selector string for `status.selector`.

use k8s_openapi::{
    api::core::v1::PodTemplateSpec, apimachinery::pkg::apis::meta::v1::LabelSelector,
};

use crate::spec::Invalid;

/// Checks that `selector` is not empty and matches the template's labels; returns its string form
/// (`app=demo,tier in (a,b)`).
pub(crate) fn check(
    selector: &LabelSelector,
    template: &PodTemplateSpec,
) -> Result<String, Invalid> {
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut parts = Vec::new();
    for (key, value) in selector.match_labels.iter().flatten() {
        if labels.get(key) != Some(value) {
            return Err(mismatch(&format!("{key}={value}")));
        }
        parts.push(format!("{key}={value}"));
    }
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let values = expr.values.clone().unwrap_or_default();
        let label = labels.get(&expr.key);
        let (text, matches) = match expr.operator.as_str() {
            "In" => (
                format!("{} in ({})", expr.key, values.join(",")),
                label.is_some_and(|l| values.contains(l)),
            ),
            "NotIn" => (
                format!("{} notin ({})", expr.key, values.join(",")),
                label.is_none_or(|l| !values.contains(l)),
            ),
            "Exists" => (expr.key.clone(), label.is_some()),
            "DoesNotExist" => (format!("!{}", expr.key), label.is_none()),
            other => {
                return Err(Invalid {
                    field: format!("spec.selector.matchExpressions[{i}].operator"),
                    problem: format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
                });
            }
        };
        if !matches {
            return Err(mismatch(&text));
        }
        parts.push(text);
    }
    if parts.is_empty() {
        return Err(Invalid {
            field: "spec.selector".into(),
            problem: "an empty selector is invalid".into(),
        });
    }
    Ok(parts.join(","))
}

fn mismatch(requirement: &str) -> Invalid {
    Invalid {
        field: "spec.template.metadata.labels".into(),
        problem: format!(
            "the selector requirement {requirement:?} does not match the template's labels"
        ),
    }
}
