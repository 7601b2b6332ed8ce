//! Standalone mode's rollouts file: multi-document YAML of Rollouts (`sluice.dev/v1alpha1` or
//! `argoproj.io/v1alpha1`) whose versions are given by `spec.staticEndpoints`.
//!
//! The file loader (I/O, hot reload) lives in the binary; this is the pure part: text → validated
//! [`TrafficState`], or an error naming the file, the document, the rollout and the field.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    net::SocketAddr,
};

use serde::Deserialize;
use sluice_model::{TrafficState, Version};

use crate::{
    ARGO_API_VERSION, ApiError, Rollout, SLUICE_API_VERSION,
    derive::{VersionSource, derive, rollout_name},
};

/// Parses every Rollout of a multi-document YAML file. Empty documents are skipped; any other
/// kind is an error naming its document (1-based). `origin` (e.g. the file's path) prefixes errors.
pub fn parse_rollouts_file(text: &str, origin: &str) -> Result<Vec<Rollout>, ApiError> {
    Ok(parse_documents(text, origin)?
        .into_iter()
        .map(|(_, rollout)| rollout)
        .collect())
}

/// Parses and derives every rollout of the file, using `spec.staticEndpoints` as its versions,
/// and validates the whole state (each rollout, duplicate names, hosts claimed twice).
///
/// A rollout with `spec.version` is run by the release engine, which keeps its status in the
/// state file: a `status` in the file is an error naming it, and the rollout is read as the engine
/// starts it (all traffic to `spec.version`).
pub fn load_state(text: &str, origin: &str) -> Result<TrafficState, ApiError> {
    let mut documents = parse_documents(text, origin)?;
    for (document, doc) in &mut documents {
        check_engine_owned(doc).map_err(|error| ApiError::InDocument {
            origin: origin.to_owned(),
            document: *document,
            error: Box::new(error),
        })?;
        if let Some(version) = &doc.spec.version {
            doc.status = Some(crate::RolloutStatus {
                stable_rs: Some(version.clone()),
                ..crate::RolloutStatus::default()
            });
        }
    }
    state_of_documents(&documents, origin)
}

/// A rollout with `spec.version` must have no `status` in the file: the release engine owns it
/// (one source of truth).
pub fn check_engine_owned(doc: &Rollout) -> Result<(), ApiError> {
    if doc.spec.version.is_some() && doc.status.is_some() {
        return Err(ApiError::Invalid {
            rollout: rollout_name(doc)?,
            field: "status".into(),
            problem: "must be absent when spec.version is set: the release engine keeps this \
                      rollout's status in the state file"
                .into(),
        });
    }
    Ok(())
}

/// The validated traffic state of parsed documents (1-based document numbers), each read from its
/// own `status` (standalone mode's driver puts the engine's status there first).
pub fn state_of_documents(
    documents: &[(usize, Rollout)],
    origin: &str,
) -> Result<TrafficState, ApiError> {
    let mut state = TrafficState::default();
    let mut document_of: BTreeMap<String, usize> = BTreeMap::new();
    for (document, doc) in documents {
        let (document, doc) = (*document, doc);
        let in_document = |error: ApiError| ApiError::InDocument {
            origin: origin.to_owned(),
            document,
            error: Box::new(error),
        };
        let name = rollout_name(doc).map_err(in_document)?;
        let versions = static_versions(doc, &name).map_err(in_document)?;
        let rollout = derive(doc, &versions, &[], &[], VersionSource::StaticEndpoints)
            .map_err(in_document)?;
        match document_of.entry(name.clone()) {
            Entry::Occupied(first) => {
                return Err(ApiError::DuplicateRollout {
                    origin: origin.to_owned(),
                    name,
                    first: *first.get(),
                    second: document,
                });
            }
            Entry::Vacant(slot) => {
                slot.insert(document);
            }
        }
        state.rollouts.insert(name, rollout);
    }
    state.validate().map_err(|error| ApiError::State {
        origin: origin.to_owned(),
        error,
    })?;
    Ok(state)
}

/// The Rollouts of the file with their 1-based document numbers.
pub fn parse_documents(text: &str, origin: &str) -> Result<Vec<(usize, Rollout)>, ApiError> {
    let yaml_error = |document: usize, error: serde_yaml::Error| ApiError::Yaml {
        origin: origin.to_owned(),
        document,
        error,
    };
    // First pass: the kind of each document. Second pass: the typed Rollout, deserialized from
    // the text itself so serde_yaml's errors carry the field path and the line in the file.
    let mut is_rollout = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(document).map_err(|e| yaml_error(i + 1, e))?;
        if value.is_null() {
            is_rollout.push(false);
            continue;
        }
        let field = |name: &str| {
            value
                .get(name)
                .and_then(serde_yaml::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        // Analysis templates live beside the rollouts (the analysis driver reads them).
        if matches!(
            kind.as_str(),
            "AnalysisTemplate" | "ClusterAnalysisTemplate"
        ) && (api_version == SLUICE_API_VERSION || api_version == ARGO_API_VERSION)
        {
            is_rollout.push(false);
            continue;
        }
        if kind != "Rollout"
            || (api_version != SLUICE_API_VERSION && api_version != ARGO_API_VERSION)
        {
            return Err(ApiError::NotARollout {
                origin: origin.to_owned(),
                document: i + 1,
                api_version,
                kind,
            });
        }
        is_rollout.push(true);
    }
    let mut rollouts = Vec::new();
    // `take`: after a syntax error serde_yaml's document iterator does not end.
    for (i, document) in serde_yaml::Deserializer::from_str(text)
        .take(is_rollout.len())
        .enumerate()
    {
        if is_rollout.get(i).copied().unwrap_or(false) {
            let rollout = Rollout::deserialize(document).map_err(|e| yaml_error(i + 1, e))?;
            rollouts.push((i + 1, rollout));
        }
    }
    Ok(rollouts)
}

/// The versions named by `spec.staticEndpoints`, with their parsed addresses.
fn static_versions(doc: &Rollout, name: &str) -> Result<BTreeMap<String, Version>, ApiError> {
    let mut versions = BTreeMap::new();
    for (hash, endpoints) in &doc.spec.static_endpoints {
        let mut version = Version::default();
        for (i, endpoint) in endpoints.iter().enumerate() {
            let address: SocketAddr = endpoint.parse().map_err(|_| ApiError::Invalid {
                rollout: name.to_owned(),
                field: format!("spec.staticEndpoints[{hash:?}][{i}]"),
                problem: format!("{endpoint:?} is not an ip:port address"),
            })?;
            version.endpoints.push(address);
        }
        versions.insert(hash.clone(), version);
    }
    Ok(versions)
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
