//! The analysis checks of `sluice rollouts lint`:
//!
//! - every metric of an `AnalysisTemplate` / `ClusterAnalysisTemplate` (either API group) in the
//!   linted file is planned as a run would plan it (`sluice_analysis::plan::plan_metric`: Argo's
//!   defaults and `ValidateMetric`, the success/failure conditions compiled), so a condition that
//!   does not compile is an error naming the metric — not an AnalysisRun Error at release time.
//!   Metrics with `{{args...}}` placeholders are checked only where the run fills them in. In an
//!   `argoproj.io` template (Argo's to run) these are warnings; in a `sluice.dev` one, errors.
//! - a standalone rollout (`spec.version`) reads its templates from its own file: a `templateName`
//!   that names no template of the file is an error naming the field.

use std::collections::BTreeSet;

use serde_yaml::Value;
use sluice_analysis::resource::Metric;

use sluice_api::SLUICE_API_VERSION;

use super::{Document, Finding, text_field};

const TEMPLATE_KINDS: [&str; 2] = ["AnalysisTemplate", "ClusterAnalysisTemplate"];

/// The analysis findings of one file's documents.
pub(super) fn findings(file: &str, documents: &[Document]) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for document in documents
        .iter()
        .filter(|d| TEMPLATE_KINDS.contains(&text_field(&d.value, "kind")))
    {
        let kind = text_field(&document.value, "kind");
        let name = document
            .value
            .get("metadata")
            .map(|m| text_field(m, "name"))
            .unwrap_or_default();
        names.insert((kind == "ClusterAnalysisTemplate", name.to_owned()));
        let metrics = document
            .value
            .get("spec")
            .and_then(|s| s.get("metrics"))
            .cloned()
            .unwrap_or(Value::Null);
        // Argo's own templates are Argo's to run (observe mode): what Sluice could not run of
        // them is a warning; a sluice.dev template is Sluice's to run, its faults are errors.
        let argo = text_field(&document.value, "apiVersion") != SLUICE_API_VERSION;
        let finding = |field: String, problem: String| Finding {
            file: file.to_owned(),
            document: Some(document.number),
            rollout: None,
            field: Some(field),
            problem: format!("{kind} {name:?}: {problem}"),
            warning: argo,
        };
        let metrics: Vec<Value> = match serde_yaml::from_value(metrics) {
            Ok(metrics) => metrics,
            Err(error) => {
                out.push(finding("spec.metrics".into(), error.to_string()));
                continue;
            }
        };
        for (i, value) in metrics.into_iter().enumerate() {
            let field = format!("spec.metrics[{i}]");
            let placeholders = serde_yaml::to_string(&value).is_ok_and(|t| t.contains("{{"));
            let metric: Metric = match serde_yaml::from_value(value) {
                Ok(metric) => metric,
                Err(error) => {
                    out.push(finding(field, error.to_string()));
                    continue;
                }
            };
            if placeholders {
                continue;
            }
            if let Err(error) = sluice_analysis::plan::plan_metric(metric) {
                out.push(finding(field, error.to_string()));
            }
        }
    }
    for document in documents.iter().filter(|d| {
        text_field(&d.value, "kind") == "Rollout"
            && d.value
                .get("spec")
                .and_then(|s| s.get("version"))
                .is_some_and(|v| !v.is_null())
    }) {
        let rollout = document
            .value
            .get("metadata")
            .map(|m| text_field(m, "name"))
            .unwrap_or_default();
        let Some(strategy) = document.value.get("spec").and_then(|s| s.get("strategy")) else {
            continue;
        };
        let mut refs = Vec::new();
        template_refs(strategy, "spec.strategy".into(), &mut refs);
        for (field, cluster, template) in refs {
            if !names.contains(&(cluster, template.clone())) {
                let kind = if cluster {
                    "ClusterAnalysisTemplate"
                } else {
                    "AnalysisTemplate"
                };
                out.push(Finding {
                    file: file.to_owned(),
                    document: Some(document.number),
                    rollout: Some(rollout.to_owned()),
                    field: Some(field),
                    problem: format!(
                        "no {kind} {template:?} in this file (a standalone control plane reads \
                         its templates from the rollouts file)"
                    ),
                    warning: false,
                });
            }
        }
    }
    out
}

/// Every `templateName` under `value` (steps, background analysis, blue/green promotion runs,
/// experiments): its field path, whether it is cluster-scoped (`clusterScope`), the name.
fn template_refs(value: &Value, path: String, out: &mut Vec<(String, bool, String)>) {
    match value {
        Value::Mapping(map) => {
            if let Some(name) = map.get("templateName").and_then(Value::as_str) {
                let cluster = map
                    .get("clusterScope")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                out.push((format!("{path}.templateName"), cluster, name.to_owned()));
            }
            for (key, child) in map {
                if let Some(key) = key.as_str() {
                    template_refs(child, format!("{path}.{key}"), out);
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                template_refs(item, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}
