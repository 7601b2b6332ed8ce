//! The CLI commands that talk to a running control plane, and `bootstrap`.

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use sluice_proto::admin::v1::{
    RolloutRef, RolloutStatus, SetWeightRequest, StatusRequest, StatusResponse,
    admin_client::AdminClient,
};
use std::net::SocketAddr;

use sluice_xds::bootstrap::{BootstrapOptions, HostPort, Role};

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
    pub xds: HostPort,
    /// Gateway (an edge Envoy) or sidecar (next to an app).
    #[arg(long, value_enum, default_value = "gateway")]
    pub role: RoleArg,
    /// Node id; unique per Envoy.
    #[arg(long, env = "SLUICE_NODE_ID", default_value = "envoy")]
    pub node_id: String,
    /// Node cluster (a group of identical Envoys); default `sluice-<role>`.
    #[arg(long, env = "SLUICE_NODE_CLUSTER")]
    pub node_cluster: Option<String>,
    /// Where this Envoy's HTTP listener binds, sent as node metadata `sluice.listener`
    /// (default: gateway — the control plane's --envoy-listener; sidecar — 127.0.0.1:15001).
    #[arg(long)]
    pub listener: Option<SocketAddr>,
    /// Envoy's admin interface.
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// host:port of the control plane's HTTP server, when Envoys fetch the filter module from it
    /// (the control plane runs with --wasm-url).
    #[arg(long)]
    pub wasm_server: Option<HostPort>,
    /// Use incremental (delta) xDS instead of state of the world.
    #[arg(long)]
    pub delta: bool,
    /// The filter build this Envoy runs: wasm (sandboxed, any Envoy with V8) or native (an Envoy
    /// dynamic module: fastest, must match the Envoy build — Envoy 1.40). Sent as node metadata
    /// `sluice.filter`; the control plane pushes that build to this Envoy.
    #[arg(long, value_enum, env = "SLUICE_ENVOY_FILTER", default_value = "wasm")]
    pub filter: FilterArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FilterArg {
    Wasm,
    Native,
}

pub fn bootstrap(args: BootstrapArgs) -> anyhow::Result<()> {
    let role = match args.role {
        RoleArg::Gateway => Role::Gateway,
        RoleArg::Sidecar => Role::Sidecar,
    };
    let mut options = BootstrapOptions::new(role, args.node_id, args.xds);
    if let Some(cluster) = args.node_cluster {
        options.node_cluster = cluster;
    }
    if args.listener.is_some() {
        options.listener = args.listener;
    }
    options.admin = args.admin;
    options.wasm_server = args.wasm_server;
    options.delta = args.delta;
    options.filter = match args.filter {
        FilterArg::Wasm => sluice_xds::translate::FilterBuild::Wasm,
        FilterArg::Native => sluice_xds::translate::FilterBuild::Native,
    };
    print!("{}", sluice_xds::bootstrap::bootstrap_yaml(&options));
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
        if r.canary_hash.is_empty() {
            "-"
        } else {
            &r.canary_hash
        },
        percent(r.canary_weight_bp),
        if r.overridden {
            "  (admin override)"
        } else {
            ""
        }
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
        let _ = writeln!(
            out,
            "SOURCE ERROR (last good state serving): {}",
            s.last_source_error
        );
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
