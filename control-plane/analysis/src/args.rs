//! Arguments: merging the caller's arguments into a template's (Argo's `MergeArgs`), resolving
//! `valueFrom.podTemplateHashValue`, and substituting `{{args.<name>}}` into a metric (Argo's
//! `ResolveMetricArgs`, which templates every string of the metric).

use std::collections::BTreeMap;

use crate::{
    AnalysisError,
    resource::{Argument, Metric, PodTemplateHashValue},
};

/// The pod-template hashes `podTemplateHashValue` reads: the stable version's and the latest
/// (the canary's, or the stable's when there is no canary).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodHashes {
    pub stable: Option<String>,
    pub latest: Option<String>,
}

/// The template's arguments with the caller's (`steps[].analysis.args`) laid over them, each
/// resolved to a value. An argument left without a value is an error naming it, as Argo's
/// `args.<name> was not resolved`; so is `secretKeyRef`, which Sluice does not read, and a
/// `fieldRef` not resolved from the rollout before ([`crate::resolve_field_refs`]).
pub fn merge_args(
    template_args: &[Argument],
    incoming: &[Argument],
    hashes: &PodHashes,
) -> Result<Vec<(String, String)>, AnalysisError> {
    let mut merged: Vec<Argument> = template_args.to_vec();
    for arg in incoming {
        // Argo ignores caller arguments the template does not declare.
        if let Some(slot) = merged.iter_mut().find(|a| a.name == arg.name) {
            if arg.value.is_some() {
                slot.value.clone_from(&arg.value);
            } else if arg.value_from.is_some() {
                slot.value_from.clone_from(&arg.value_from);
            }
        }
    }
    merged
        .into_iter()
        .map(|arg| {
            let value = resolve_value(&arg, hashes)?;
            Ok((arg.name, value))
        })
        .collect()
}

fn resolve_value(arg: &Argument, hashes: &PodHashes) -> Result<String, AnalysisError> {
    let err = |message: &str| AnalysisError::Argument {
        arg: arg.name.clone(),
        message: message.to_string(),
    };
    if let Some(from) = &arg.value_from {
        if let Some(which) = from.pod_template_hash_value {
            let hash = match which {
                PodTemplateHashValue::Stable => hashes.stable.as_ref(),
                PodTemplateHashValue::Latest => hashes.latest.as_ref().or(hashes.stable.as_ref()),
            };
            return hash.cloned().ok_or_else(|| {
                err(&format!(
                    "valueFrom.podTemplateHashValue: {which:?}: no such version yet"
                ))
            });
        }
        if from.secret_key_ref.is_some() {
            return Err(err("valueFrom.secretKeyRef is not supported by Sluice yet"));
        }
        if from.field_ref.is_some() {
            // A rollout's fieldRef is resolved before planning (`resolve_field_refs`); one left
            // here came from a template, which has no rollout to read.
            return Err(err(
                "valueFrom.fieldRef reads the Rollout: give it in the rollout's analysis args",
            ));
        }
    }
    arg.value.clone().ok_or_else(|| err("was not resolved"))
}

/// The metric with every `{{ tag }}` in its strings replaced: `{{args.x}}` by the argument's value.
/// A tag that is not a known argument, or a `{{` without `}}`, is an error naming the metric.
pub fn substitute_metric(
    metric: &Metric,
    args: &[(String, String)],
) -> Result<Metric, AnalysisError> {
    let by_tag: BTreeMap<String, &str> = args
        .iter()
        .map(|(name, value)| (format!("args.{name}"), value.as_str()))
        .collect();
    let mut json = serde_json::to_value(metric).map_err(|e| AnalysisError::InvalidSpec {
        metric: metric.name.clone(),
        field: "spec".into(),
        message: e.to_string(),
    })?;
    substitute_json(&mut json, &by_tag, &metric.name)?;
    serde_json::from_value(json).map_err(|e| AnalysisError::InvalidSpec {
        metric: metric.name.clone(),
        field: "spec".into(),
        message: format!("after substituting the arguments: {e}"),
    })
}

fn substitute_json(
    value: &mut serde_json::Value,
    by_tag: &BTreeMap<String, &str>,
    metric: &str,
) -> Result<(), AnalysisError> {
    match value {
        serde_json::Value::String(text) => *text = substitute(text, by_tag, metric)?,
        serde_json::Value::Array(items) => {
            for item in items {
                substitute_json(item, by_tag, metric)?;
            }
        }
        serde_json::Value::Object(map) => {
            for item in map.values_mut() {
                substitute_json(item, by_tag, metric)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// fasttemplate's `{{tag}}` with the tag trimmed, as Argo's `template.ResolveArgs`.
pub fn substitute(
    text: &str,
    by_tag: &BTreeMap<String, &str>,
    metric: &str,
) -> Result<String, AnalysisError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(AnalysisError::Unresolved {
                metric: metric.to_string(),
                tag: format!("{after} (no closing braces)"),
            });
        };
        let tag = &after[..close];
        match by_tag.get(tag.trim()) {
            Some(value) => out.push_str(value),
            None => {
                return Err(AnalysisError::Unresolved {
                    metric: metric.to_string(),
                    tag: tag.to_string(),
                });
            }
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}
