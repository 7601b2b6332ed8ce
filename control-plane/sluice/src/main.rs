//! `sluice`: the control plane and its CLI.
//!
//! ```text
//!  rollouts file ──(notify, debounce)──► file_source ─┐
//!  Kubernetes (Rollouts, Pods, Services) ► k8s_source ─┤
//!                                                      ▼
//!  admin gRPC (set-weight/promote/abort) ──────────► Store (last good state + overrides)
//!                                                      │ effective() → translate()
//!                                                      ▼
//!                                     watch<Arc<Snapshot>> ──► ADS server ──► every Envoy
//!  HTTP: /metrics /healthz /readyz /sluice_filter.wasm
//! ```
//!
//! Subcommands: `serve` runs the control plane; `bootstrap` prints an Envoy bootstrap that knows
//! only the control plane; `status`, `set-weight`, `promote` and `abort` talk to a running one;
//! `crdgen` prints the Rollout CRD.
#![forbid(unsafe_code)]

mod admin;
mod admin_client;
mod auth;
mod cli;
mod file_source;
mod gate;
mod http;
mod k8s_source;
mod metrics;
mod rollouts;
mod serve;
mod standalone;
mod store;
mod supervise;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Meshless progressive delivery for Envoy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane (xDS/ADS server, admin API, metrics).
    Serve(Box<serve::ServeArgs>),
    /// Print an Envoy bootstrap that knows only the control plane's address.
    Bootstrap(cli::BootstrapArgs),
    /// Show rollouts, their weights, and every connected Envoy with what it ACKed or NACKed.
    Status(cli::AdminArgs),
    /// Set a rollout's canary weight (percent, 0-100; decimals allowed) until its source changes.
    SetWeight(cli::SetWeightArgs),
    /// Promote a rollout: the canary becomes stable and takes all traffic.
    Promote(cli::RolloutArgs),
    /// Abort a rollout: the canary weight drops to 0.
    Abort(cli::RolloutArgs),
    /// Drive releases as kubectl-argo-rollouts does: get, list, promote, abort, retry, pause,
    /// restart, undo, set image, status, lint.
    Rollouts(rollouts::RolloutsArgs),
    /// Print the sluice.dev Rollout CustomResourceDefinition as YAML.
    Crdgen,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crdgen => {
            print!("{}", sluice_api::crd_yaml()?);
            Ok(())
        }
        Command::Bootstrap(args) => cli::bootstrap(args),
        Command::Rollouts(args) => runtime()?.block_on(rollouts::run(args)),
        Command::Serve(args) => runtime()?.block_on(serve::run(*args)),
        Command::Status(args) => runtime()?.block_on(cli::status(args)),
        Command::SetWeight(args) => runtime()?.block_on(cli::set_weight(args)),
        Command::Promote(args) => runtime()?.block_on(cli::promote(args)),
        Command::Abort(args) => runtime()?.block_on(cli::abort(args)),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rollouts_credentials_go_before_or_after_the_verb() {
        for argv in [
            &[
                "sluice",
                "rollouts",
                "--admin",
                "http://a",
                "--token-file",
                "t",
                "promote",
                "demo",
            ][..],
            &[
                "sluice",
                "rollouts",
                "promote",
                "demo",
                "--admin",
                "http://a",
                "--token-file",
                "t",
            ],
            &[
                "sluice",
                "rollouts",
                "--token-file",
                "t",
                "promote",
                "--admin",
                "http://a",
                "demo",
            ],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let Command::Rollouts(args) = cli.command else {
                panic!("{argv:?}: not rollouts");
            };
            assert_eq!(args.admin.as_deref(), Some("http://a"), "{argv:?}");
            assert_eq!(
                args.credentials.token_file.as_deref(),
                Some(std::path::Path::new("t")),
                "{argv:?}"
            );
        }
    }
}
