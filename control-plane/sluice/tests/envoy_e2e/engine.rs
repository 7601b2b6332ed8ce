//! What the tests of the standalone release engine share: the rollout as the engine shows it
//! (GetRollout), its commands, polling its status until a check holds, the AnalysisRuns kept in
//! the state file, and a control plane + Envoy + a real Prometheus scraping that Envoy's
//! `/stats/prometheus` (the analysis tests).

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use k8s_openapi::jiff::Timestamp;
use sluice_api::{Rollout, RolloutStatus};
use sluice_e2e::{Prometheus, ScrapeJob};
use sluice_proto::admin::v1::{
    CommandRequest, RolloutRef, admin_client::AdminClient, command_request::Verb,
};

use crate::harness::{ControlPlane, Proxy, ProxyOptions, ROLLOUT, authorized, eventually};

/// The rollout as the engine sees it (GetRollout).
pub async fn view(cp: &ControlPlane) -> anyhow::Result<Rollout> {
    let mut client = AdminClient::connect(format!("http://{}", cp.ports.admin)).await?;
    let view = client
        .get_rollout(authorized(RolloutRef {
            rollout: ROLLOUT.into(),
        }))
        .await
        .context("GetRollout")?
        .into_inner();
    Ok(serde_json::from_str(&view.rollout_json)?)
}

/// The engine's status of the rollout (default when it has none yet).
pub async fn status(cp: &ControlPlane) -> anyhow::Result<RolloutStatus> {
    Ok(view(cp).await?.status.unwrap_or_default())
}

/// A command (promote, abort, retry, ...) through the admin API, as the CLI sends it.
pub async fn command(cp: &ControlPlane, verb: Verb) -> anyhow::Result<()> {
    let mut client = AdminClient::connect(format!("http://{}", cp.ports.admin)).await?;
    client
        .command(authorized(CommandRequest {
            rollout: ROLLOUT.into(),
            verb: verb.into(),
            full: false,
        }))
        .await
        .with_context(|| format!("Command {verb:?}"))?;
    Ok(())
}

/// Polls the engine's status, seen through `of`, until `check` holds of it (`what` and the
/// control plane's log name a timeout).
pub async fn wait_until<W>(
    cp: &ControlPlane,
    what: &str,
    within: Duration,
    of: impl Fn(RolloutStatus) -> W,
    check: impl Fn(&W) -> bool,
) -> anyhow::Result<W> {
    eventually(what, within, async || {
        let now = of(status(cp).await?);
        Ok(check(&now).then_some(now))
    })
    .await
    .with_context(|| cp.log())
}

/// Whether the traffic the engine last published is ACKed by every proxy, and `proxies` are
/// connected.
pub fn acked_by(status: &RolloutStatus, proxies: i32) -> bool {
    let dp = status.data_plane.clone().unwrap_or_default();
    dp.proxies == proxies && dp.acknowledged == proxies
}

/// The AnalysisRuns kept in the state file (`<rollouts file>.state.json`).
pub fn runs(cp: &ControlPlane) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut path = cp.file().into_os_string();
    path.push(".state.json");
    let text = std::fs::read_to_string(PathBuf::from(path)).context("reading the state file")?;
    let state: serde_json::Value = serde_json::from_str(&text)?;
    Ok(state["rollouts"][ROLLOUT]["analysisRuns"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The state file's run named `name`.
pub fn run_named(cp: &ControlPlane, name: &str) -> anyhow::Result<serde_json::Value> {
    runs(cp)?
        .into_iter()
        .find(|r| r["name"] == name)
        .with_context(|| format!("the run {name} in the state file"))
}

/// The measurements of a run's first metric.
pub fn measurements(run: &serde_json::Value) -> Vec<serde_json::Value> {
    run["status"]["metricResults"][0]["measurements"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// When a measurement finished.
pub fn finished_at(measurement: &serde_json::Value) -> anyhow::Result<Timestamp> {
    Ok(measurement["finishedAt"]
        .as_str()
        .context("finishedAt")?
        .parse()?)
}

/// A control plane serving one Envoy that a real Prometheus scrapes (every second).
pub struct Measured {
    pub cp: ControlPlane,
    pub proxy: Proxy,
    pub prometheus: Prometheus,
}

/// Starts the control plane with `yaml(prometheus address)`, an Envoy `node` serving from it and
/// a Prometheus scraping that Envoy. Prometheus needs Envoy's admin port, Envoy the control
/// plane: the file names a placeholder address first, the real one once Prometheus runs.
pub async fn start_measured(node: &str, yaml: impl Fn(&str) -> String) -> anyhow::Result<Measured> {
    let cp = ControlPlane::start(&yaml("http://127.0.0.1:9"), &[]).await?;
    let proxy = Proxy::start_serving(&cp, node, ProxyOptions::default()).await?;
    let prometheus = Prometheus::start(&[ScrapeJob {
        name: "envoy".into(),
        targets: vec![proxy.envoy.admin_addr()],
        metrics_path: "/stats/prometheus".into(),
    }])
    .await?;
    cp.write_file(&yaml(&prometheus.url()))?;
    Ok(Measured {
        cp,
        proxy,
        prometheus,
    })
}
