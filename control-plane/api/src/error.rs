//! The crate's one error type. Every message names where the problem is: the file (origin), the
//! document, the rollout and the field, in the document's own terms (`spec.strategy.canary...`).

use sluice_model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of a rollout is missing or wrong.
    #[error("rollout {rollout:?}: {field}: {problem}")]
    Invalid {
        rollout: String,
        field: String,
        problem: String,
    },
    /// A document is not valid YAML, or does not have the shape of a Rollout. serde_yaml's message
    /// names the field path and the line.
    #[error("{origin}: document {document}: {error}")]
    Yaml {
        origin: String,
        /// 1-based.
        document: usize,
        error: serde_yaml::Error,
    },
    /// A document of another kind in a rollouts file.
    #[error(
        "{origin}: document {document}: found kind {kind:?} of apiVersion {api_version:?}; \
         expected kind \"Rollout\" of apiVersion \"sluice.dev/v1alpha1\" or \"argoproj.io/v1alpha1\""
    )]
    NotARollout {
        origin: String,
        document: usize,
        api_version: String,
        kind: String,
    },
    /// An error about one document of a file.
    #[error("{origin}: document {document}: {error}")]
    InDocument {
        origin: String,
        document: usize,
        error: Box<ApiError>,
    },
    /// Two documents define the same rollout.
    #[error("{origin}: rollout {name:?} is defined twice, by documents {first} and {second}")]
    DuplicateRollout {
        origin: String,
        name: String,
        first: usize,
        second: usize,
    },
    /// The rollouts are valid one by one but not together (e.g. a host in two rollouts).
    #[error("{origin}: {error}")]
    State { origin: String, error: ModelError },
    /// A model rule broken in a way no document field explains.
    #[error("{error}")]
    Model { error: ModelError },
    #[error("rendering the CustomResourceDefinition as YAML: {error}")]
    CrdYaml { error: serde_yaml::Error },
}
