//! `sluice rollouts`: kubectl-argo-rollouts' verbs, with their meaning.
//!
//! In Kubernetes (the default: the user's kubeconfig) each verb patches the same Rollout fields
//! Argo's plugin patches, so RBAC decides who may. With `--admin` the verbs go to a standalone
//! control plane's admin API, whose release engine persists them in its state file. `lint` is
//! offline.

use clap::{Args, Subcommand};

mod kube;
mod lint;
mod patch;
mod standalone;
pub mod view;

#[derive(Debug, Args)]
#[command(after_help = "\
In Kubernetes (the default) the verbs use the kubeconfig and patch the sluice.dev Rollout's \
fields as kubectl-argo-rollouts does (promote: status.pauseConditions / spec.paused, --full: \
status.promoteFull; abort / retry: status.abort; pause: spec.paused; restart: spec.restartAt; \
undo: spec.template from the ReplicaSet of the revision; set image: the template's container \
image), so RBAC decides who may. argoproj.io Rollouts are read-only to Sluice: get, list and \
status show them, the other verbs refuse them. With --admin the verbs go to a standalone \
control plane's admin API. lint is offline.")]
pub struct RolloutsArgs {
    /// Standalone mode: the control plane's admin API (e.g. http://127.0.0.1:18001). Without it,
    /// the verbs act on the Kubernetes API through the kubeconfig.
    #[arg(long, env = "SLUICE_ADMIN", global = true)]
    pub admin: Option<String>,
    #[command(flatten)]
    pub credentials: crate::admin_client::CredentialArgs,
    /// Kubernetes namespace (default: the kubeconfig context's). Standalone names are
    /// `namespace/name`; a bare name is in this namespace.
    #[arg(long, short = 'n', env = "SLUICE_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Show a rollout: steps (the current one marked), weights, the data-plane gate, versions
    /// and their pods, conditions.
    Get {
        name: String,
        /// Keep watching and redraw on every change.
        #[arg(long, short = 'w')]
        watch: bool,
    },
    /// List rollouts.
    List,
    /// Leave the current pause (or skip the current step); with --full, skip the remaining steps.
    Promote {
        name: String,
        #[arg(long)]
        full: bool,
    },
    /// All traffic to stable; the canary is scaled down after abortScaleDownDelaySeconds.
    Abort { name: String },
    /// Start the steps again after an abort.
    Retry { name: String },
    /// Pause the rollout (spec.paused) until promoted.
    Pause { name: String },
    /// Restart the rollout's pods (spec.restartAt = now, or now + --in).
    Restart {
        name: String,
        /// Restart after this long (e.g. 30s, 5m).
        #[arg(long = "in", short = 'i')]
        r#in: Option<String>,
    },
    /// Roll back to the previous revision (or --to-revision N): its ReplicaSet's template.
    Undo {
        name: String,
        #[arg(long)]
        to_revision: Option<u64>,
    },
    /// Change the rollout's template.
    #[command(subcommand)]
    Set(SetVerb),
    /// Wait until the rollout is Healthy (exit 0), or Degraded / the timeout (non-zero).
    Status {
        name: String,
        /// e.g. 5m; 0 waits forever.
        #[arg(long, default_value = "0")]
        timeout: String,
    },
    /// Check Rollout manifests (either API group) and standalone files offline; errors name the
    /// file, document, rollout and field; exits non-zero on errors.
    Lint {
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Apply the release engine's checks to argoproj.io Rollouts too (would the Rollout run
        /// under Sluice after changing its apiVersion to sluice.dev/v1alpha1?).
        #[arg(long)]
        as_sluice: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SetVerb {
    /// `set image NAME CONTAINER=IMAGE...` (`*=IMAGE`: every container).
    Image {
        name: String,
        #[arg(value_name = "CONTAINER=IMAGE")]
        images: Vec<String>,
    },
}

pub async fn run(args: RolloutsArgs) -> anyhow::Result<()> {
    if let Verb::Lint { files, as_sluice } = &args.verb {
        return lint::run(
            files,
            lint::Options {
                as_sluice: *as_sluice,
            },
        );
    }
    match &args.admin {
        Some(_) => standalone::run(args).await,
        None => kube::run(args).await,
    }
}
