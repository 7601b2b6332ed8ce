//! The CLI commands that talk to a running control plane, and `bootstrap`.

use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use sluice_proto::admin::v1::{
    RolloutRef, RolloutStatus, SetWeightRequest, StatusRequest, StatusResponse,
};
use std::net::SocketAddr;

use sluice_xds::bootstrap::{BootstrapOptions, HostPort, Role, XdsTls};

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The control plane's admin API.
    #[arg(long, env = "SLUICE_ADMIN", default_value = "http://127.0.0.1:18001")]
    pub admin: String,
    #[command(flatten)]
    pub credentials: crate::admin_client::CredentialArgs,
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
    /// Canary weight in percent, 0-100, with at most two decimals (e.g. 12.5 or 12.5%).
    #[arg(value_name = "PERCENT", value_parser = parse_percent_bp)]
    pub weight_bp: u32,
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
    #[command(flatten)]
    pub xds_tls: XdsTlsArgs,
    /// The filter build this Envoy runs: wasm (sandboxed, any Envoy with V8) or native (an Envoy
    /// dynamic module: fastest, must match the Envoy build — Envoy 1.40). Sent as node metadata
    /// `sluice.filter`; the control plane pushes that build to this Envoy.
    #[arg(long, value_enum, env = "SLUICE_ENVOY_FILTER", default_value = "wasm")]
    pub filter: FilterArg,
    /// The rollouts this Envoy needs (repeat, or separate with commas): a host, `namespace/*`
    /// or `namespace/name`. Sent as node metadata `sluice.scope`; the control plane then sends
    /// this Envoy only those rollouts. Default: every rollout (a gateway).
    #[arg(long, env = "SLUICE_SCOPE", value_delimiter = ',')]
    pub scope: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FilterArg {
    Wasm,
    Native,
}

/// TLS to the control plane's xDS port (its --xds-tls-cert/--xds-client-ca): paths as Envoy
/// sees them.
#[derive(Debug, Args)]
pub struct XdsTlsArgs {
    /// CA certificate (PEM) that signed the control plane's xDS certificate; turns TLS on.
    #[arg(long, env = "SLUICE_XDS_CA")]
    pub xds_ca: Option<String>,
    /// This Envoy's client certificate (PEM) for mutual TLS; needs --xds-key and --xds-ca.
    #[arg(long, env = "SLUICE_XDS_CERT", requires_all = ["xds_key", "xds_ca"])]
    pub xds_cert: Option<String>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "SLUICE_XDS_KEY", requires = "xds_cert")]
    pub xds_key: Option<String>,
    /// Name the control plane's certificate must carry (default: the --xds host).
    #[arg(long, env = "SLUICE_XDS_SERVER_NAME", requires = "xds_ca")]
    pub xds_server_name: Option<String>,
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
    options.xds_tls = args.xds_tls.xds_ca.map(|ca| XdsTls {
        ca,
        client_cert: args.xds_tls.xds_cert.zip(args.xds_tls.xds_key),
        server_name: args.xds_tls.xds_server_name,
    });
    options.filter = match args.filter {
        FilterArg::Wasm => sluice_xds::translate::FilterBuild::Wasm,
        FilterArg::Native => sluice_xds::translate::FilterBuild::Native,
    };
    if !args.scope.is_empty() {
        options.scope = Some(sluice_xds::scope::Scope::parse(
            args.scope.iter().map(String::as_str),
        )?);
    }
    print!("{}", sluice_xds::bootstrap::bootstrap_yaml(&options));
    Ok(())
}

async fn client(args: &AdminArgs) -> anyhow::Result<crate::admin_client::Client> {
    args.credentials.connect(&args.admin).await
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
    let r = client(&args.admin)
        .await?
        .set_weight(SetWeightRequest {
            rollout: args.rollout,
            weight_bp: args.weight_bp,
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

/// A percentage as typed (`12.5`, `12.50%`, `100`) → basis points (1250), exactly: decimal text,
/// no floating point, at most two decimals, 0 to 100.
pub fn parse_percent_bp(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a percentage from 0 to 100 with at most two decimals");
    let number = text.trim().strip_suffix('%').unwrap_or(text.trim());
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || fraction.len() > 2
        || whole.len() > 3
    {
        return Err(bad());
    }
    let whole: u32 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let hundredths: u32 = format!("{fraction:0<2}").parse().map_err(|_| bad())?;
    let bp = whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(hundredths))
        .ok_or_else(bad)?;
    if bp > sluice_model::FULL_WEIGHT_BP {
        return Err(bad());
    }
    Ok(bp)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_convert_to_basis_points_exactly() {
        for (text, bp) in [
            ("0", 0),
            ("12.5", 1250),
            ("12.50%", 1250),
            ("0.01", 1),
            (".5", 50),
            ("7.", 700),
            ("100", 10_000),
            ("100.00", 10_000),
        ] {
            assert_eq!(parse_percent_bp(text), Ok(bp), "{text}");
        }
        for text in [
            "", ".", "100.01", "101", "12.345", "-1", "1e1", "NaN", "inf", "42949673", "1,5",
        ] {
            assert!(parse_percent_bp(text).is_err(), "{text:?}");
        }
    }
}
