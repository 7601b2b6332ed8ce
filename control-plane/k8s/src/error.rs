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
    #[error("configuration: {0}")]
    Config(String),
}
