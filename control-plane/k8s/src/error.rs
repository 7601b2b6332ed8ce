//! The crate's one error type.

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("watching {what}: {error}")]
    Watch {
        what: String,
        error: kube::runtime::watcher::Error,
    },
    #[error("lease \"{namespace}/{name}\": {error}")]
    Lease {
        namespace: String,
        name: String,
        error: kube::Error,
    },
    #[error("writing the status of {object}: {error}")]
    Status {
        object: crate::RolloutRef,
        error: kube::Error,
    },
    /// A background task of the source ended while the source was running (it panicked or
    /// returned); the source stops so that its supervisor reports and restarts it.
    #[error("the {task} task ended unexpectedly: {message}")]
    Task { task: &'static str, message: String },
    #[error("Experiment \"{namespace}/{name}\" {field}: {problem}")]
    Experiment {
        namespace: String,
        name: String,
        field: String,
        problem: String,
    },
    #[error("configuration: {0}")]
    Config(String),
}
