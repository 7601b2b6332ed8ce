//! Reading analysis resources from YAML (standalone mode's files, tests, the corpus): both
//! `sluice.dev/v1alpha1` and Argo's `argoproj.io/v1alpha1` load into the same types. Documents of
//! other kinds (a Rollout beside its templates) are skipped.

use serde::Deserialize;

use crate::{
    AnalysisError,
    resource::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate},
};

/// One analysis resource read from YAML.
#[derive(Clone, Debug, PartialEq)]
pub enum AnalysisDocument {
    Template(AnalysisTemplate),
    ClusterTemplate(ClusterAnalysisTemplate),
    Run(AnalysisRun),
}

const API_VERSIONS: [&str; 2] = ["sluice.dev/v1alpha1", "argoproj.io/v1alpha1"];

/// Every `AnalysisTemplate`, `ClusterAnalysisTemplate` and `AnalysisRun` in a multi-document
/// YAML text, in order. An analysis document of another apiVersion, or one that does not parse,
/// is an error naming the document (0-based) and the fault.
pub fn parse_analysis_documents(text: &str) -> Result<Vec<AnalysisDocument>, AnalysisError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let err = |message: String| AnalysisError::Document { index, message };
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| err(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        if !matches!(
            kind.as_str(),
            "AnalysisTemplate" | "ClusterAnalysisTemplate" | "AnalysisRun"
        ) {
            continue;
        }
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or("");
        if !API_VERSIONS.contains(&api_version) {
            return Err(err(format!(
                "apiVersion {api_version:?} of a {kind}: expected one of {API_VERSIONS:?}"
            )));
        }
        let parsed = match kind.as_str() {
            "AnalysisTemplate" => serde_yaml::from_value(value).map(AnalysisDocument::Template),
            "ClusterAnalysisTemplate" => {
                serde_yaml::from_value(value).map(AnalysisDocument::ClusterTemplate)
            }
            _ => serde_yaml::from_value(value).map(AnalysisDocument::Run),
        };
        out.push(parsed.map_err(|e| err(format!("{kind}: {e}")))?);
    }
    Ok(out)
}

/// The CustomResourceDefinitions of `AnalysisTemplate`, `ClusterAnalysisTemplate` and
/// `AnalysisRun` (group `sluice.dev`) as one multi-document YAML text, as checked in at
/// `deploy/crd/analysis.sluice.dev.yaml`.
pub fn crds_yaml() -> Result<String, AnalysisError> {
    use kube::CustomResourceExt;
    let to_yaml = |value: Result<String, serde_yaml::Error>| {
        value.map_err(|e| AnalysisError::Document {
            index: 0,
            message: format!("CRD as YAML: {e}"),
        })
    };
    let mut out = String::new();
    for text in [
        to_yaml(serde_yaml::to_string(&AnalysisTemplate::crd()))?,
        to_yaml(serde_yaml::to_string(&ClusterAnalysisTemplate::crd()))?,
        to_yaml(serde_yaml::to_string(&AnalysisRun::crd()))?,
    ] {
        out.push_str("---\n");
        out.push_str(&text);
    }
    Ok(out)
}
