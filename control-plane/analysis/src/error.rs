//! The analysis crate's one error type. Each variant names the object and field at fault.

/// Why an analysis could not be planned or a document not read.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum AnalysisError {
    /// A document of an analysis file is not valid YAML or not the resource it says it is.
    #[error("analysis document {index}: {message}")]
    Document { index: usize, message: String },
    /// A metric's spec is invalid (Argo's `InvalidSpec`): a condition that does not compile, a
    /// limit that is not a number, no provider, an unknown provider ...
    #[error("metric {metric:?}: {field}: {message}")]
    InvalidSpec {
        metric: String,
        field: String,
        message: String,
    },
    /// The run as a whole is invalid (no metrics, duplicate names, a dryRun rule matching nothing).
    #[error("analysis: {field}: {message}")]
    InvalidRun { field: String, message: String },
    /// An argument has no value: neither the template, nor the caller, nor `valueFrom` gave one.
    #[error("args.{arg}: {message}")]
    Argument { arg: String, message: String },
    /// A `{{...}}` in a metric that no argument resolves.
    #[error("metric {metric:?}: failed to resolve {{{{{tag}}}}}")]
    Unresolved { metric: String, tag: String },
    /// A template a rollout refers to does not exist.
    #[error("{kind} {name:?} not found")]
    TemplateNotFound { kind: &'static str, name: String },
}
