//! The CLI commands that talk to a running control plane, and `bootstrap`.

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use sluice_proto::admin::v1::{
    RolloutRef, RolloutStatus, SetWeightRequest, StatusRequest, StatusResponse,
    admin_client::AdminClient,
};
use sluice_xds::bootstrap::{BootstrapOptions, Role};

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The control plane's admin API.
    #[arg(long, env = "SLUICE_ADMIN", default_value = "http://127.0.0.1:18001")]
    pub admin: String,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// Rollout name, `namespace/name` (as `sluice status` shows it).
    pub rollout: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Args)]
pub struct SetWeightArgs {
    /// Rollout name, `namespace/name`.
    pub rollout: String,
    /// Canary weight in percent, 0-100 (two decimals, e.g. 12.5).
    pub percent: f64,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    Gateway,
    Sidecar,
}

#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// The control plane's xDS address, host:port.
    #[arg(long, env = "SLUICE_XDS", default_value = "127.0.0.1:18000")]
    pub xds: String,
    /// Gateway (an edge Envoy) or sidecar (next to an app).
    #[arg(long, value_enum, default_value = "gateway")]
    pub role: RoleArg,
    /// Node id; unique per Envoy.
    #[arg(long, env = "SLUICE_NODE_ID", default_value = "envoy-gateway")]
    pub node_id: String,
    /// Node cluster (a group of identical Envoys).
    #[arg(long, env = "SLUICE_NODE_CLUSTER", default_value = "sluice")]
    pub node_cluster: String,
    /// Address the control plane should give this Envoy's HTTP listener (node metadata
    /// `sluice.listener`); default: the control plane's --envoy-listener.
    #[arg(long)]
    pub listener: Option<String>,
    /// Envoy's admin interface.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: String,
    /// host:port of the control plane's HTTP server, when Envoys fetch the filter module from it.
    #[arg(long)]
    pub module_server: Option<String>,
}

pub fn bootstrap(args: BootstrapArgs) -> anyhow::Result<()> {
    let options = BootstrapOptions {
        role: match args.role {
            RoleArg::Gateway => Role::Gateway,
            RoleArg::Sidecar => Role::Sidecar,
        },
        node_id: args.node_id,
        node_cluster: args.node_cluster,
        xds_address: args.xds,
        listener: args.listener,
        admin_address: args.admin,
        module_server: args.module_server,
    };
    print!("{}", sluice_xds::bootstrap::bootstrap_yaml(&options)?);
    Ok(())
}

async fn client(args: &AdminArgs) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
    AdminClient::connect(args.admin.clone())
        .await
        .with_context(|| format!("connecting to the admin API at {}", args.admin))
}

pub async fn status(args: AdminArgs) -> anyhow::Result<()> {
    let status = client(&args)
        .await?
        .status(StatusRequest {})
        .await?
        .into_inner();
    print!("{}", render_status(&status));
    Ok(())
}

pub async fn set_weight(args: SetWeightArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=100.0).contains(&args.percent),
        "weight {} is outside 0-100 %",
        args.percent
    );
    // Basis points: 12.5 % = 1250.
    let weight_bp = (args.percent * 100.0).round() as u32;
    let r = client(&args.admin)
        .await?
        .set_weight(SetWeightRequest {
            rollout: args.rollout,
            weight_bp,
        })
        .await?
        .into_inner();
    print!("{}", render_rollout(&r));
    Ok(())
}

pub async fn promote(args: RolloutArgs) -> anyhow::Result<()> {
    let r = client(&args.admin)
        .await?
        .promote(RolloutRef {
            rollout: args.rollout,
        })
        .await?
        .into_inner();
    print!("{}", render_rollout(&r));
    Ok(())
}

pub async fn abort(args: RolloutArgs) -> anyhow::Result<()> {
    let r = client(&args.admin)
        .await?
        .abort(RolloutRef {
            rollout: args.rollout,
        })
        .await?
        .into_inner();
    print!("{}", render_rollout(&r));
    Ok(())
}

fn percent(bp: u32) -> String {
    format!("{:.2}%", f64::from(bp) / 100.0)
}

fn render_rollout(r: &RolloutStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  hosts={}  stable={}  canary={}  weight={}{}",
        r.name,
        r.hosts.join(","),
        r.stable_hash,
        if r.canary_hash.is_empty() { "-" } else { &r.canary_hash },
        percent(r.canary_weight_bp),
        if r.overridden { "  (admin override)" } else { "" }
    );
    for v in &r.versions {
        let _ = writeln!(
            out,
            "  version {:<16} {:>8}  endpoints={}",
            v.hash,
            percent(v.weight_bp),
            v.endpoints
        );
    }
    out
}

fn render_status(s: &StatusResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "snapshot {}", s.snapshot_version);
    if !s.last_source_error.is_empty() {
        let _ = writeln!(out, "SOURCE ERROR (last good state serving): {}", s.last_source_error);
    }
    let _ = writeln!(out, "\nROLLOUTS ({})", s.rollouts.len());
    for r in &s.rollouts {
        out.push_str(&render_rollout(r));
    }
    let _ = writeln!(out, "\nPROXIES ({})", s.proxies.len());
    for p in &s.proxies {
        let _ = writeln!(
            out,
            "{}  cluster={}  peer={}  {}",
            p.node_id,
            p.node_cluster,
            p.peer,
            if p.delta { "delta" } else { "sotw" }
        );
        for t in &p.types {
            let short = t.type_url.rsplit('.').next().unwrap_or(&t.type_url);
            let _ = write!(
                out,
                "  {:<24} acked={:<16} sent={:<16}",
                short, t.acked_version, t.sent_version
            );
            if !t.last_nack.is_empty() {
                let _ = write!(
                    out,
                    "  NACK({}) of {}: {}",
                    t.nacks, t.last_nack_version, t.last_nack
                );
            }
            out.push('\n');
        }
    }
    out
}
