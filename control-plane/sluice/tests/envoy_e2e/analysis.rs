//! Analysis end to end, the issue's two stories, with a real `sluice serve --file`, a real Envoy
//! (bootstrapped by `sluice bootstrap`, so its version clusters carry the `sluice_*` stats tags)
//! and a real Prometheus scraping that Envoy's `/stats/prometheus`:
//!
//! - a canary whose upstream answers 500 to one request in five fails its analysis step (the
//!   success rate of its own Envoy cluster, by the `sluice_version` tag) and is aborted by the
//!   engine alone: all traffic back to stable, phase Degraded, the message naming the metric and
//!   its values; the time from the failed measurement to 100 % stable is printed;
//! - a good canary passes the same analysis and is promoted alone, with no failed request.
//!
//! Needs Envoy, the filter module (`make wasm`) and Prometheus (`make setup`).

use std::time::Duration;

use anyhow::Context as _;
use sluice_analysis::AnalysisPhase;
use sluice_api::RolloutStatus;
use sluice_e2e::{Prometheus, Upstream};

use crate::engine::{
    Measured, acked_by, finished_at, measurements, runs, start_measured, wait_until,
};
use crate::harness::{CANARY, ControlPlane, Proxy, STABLE};
use crate::load::Load;

/// Generous: a loaded 2-core machine, Prometheus scraping every second.
const WITHIN: Duration = Duration::from_secs(120);

fn rollouts_yaml(
    version: &str,
    stable: std::net::SocketAddr,
    canary: std::net::SocketAddr,
    prometheus: &str,
) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: success-rate}}
spec:
  args:
  - name: version
  - name: prometheus
    value: "{prometheus}"
  metrics:
  - name: success-rate
    initialDelay: 4s
    interval: 2s
    count: 3
    failureLimit: 0
    successCondition: result[0] >= 0.95
    provider:
      prometheus:
        address: "{{{{args.prometheus}}}}"
        query: |
          sum(rate(envoy_cluster_upstream_rq_xx{{sluice_namespace="default",sluice_rollout="demo",sluice_version="{{{{args.version}}}}",envoy_response_code_class!="5"}}[10s]))
          /
          sum(rate(envoy_cluster_upstream_rq_xx{{sluice_namespace="default",sluice_rollout="demo",sluice_version="{{{{args.version}}}}"}}[10s]))
---
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: demo}}
spec:
  version: "{version}"
  hosts: [demo.local]
  staticEndpoints:
    "{STABLE}": ["{stable}"]
    "{CANARY}": ["{canary}"]
  strategy:
    canary:
      scaleDownDelaySeconds: 0
      abortScaleDownDelaySeconds: 0
      steps:
        - setWeight: 50
        - analysis:
            templates: [{{templateName: success-rate}}]
            args:
            - name: version
              valueFrom: {{podTemplateHashValue: Latest}}
"#
    )
}

struct Setup {
    cp: ControlPlane,
    proxy: Proxy,
    prometheus: Prometheus,
    _stable: Upstream,
    _canary: Upstream,
    stable_addr: std::net::SocketAddr,
    canary_addr: std::net::SocketAddr,
}

/// v1 stable behind a real Envoy, Prometheus scraping it; the canary fails every `fail_every`-th
/// request (0: never).
async fn setup(node: &str, fail_every: u64) -> anyhow::Result<Setup> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start_failing(CANARY, fail_every).await?;
    let Measured {
        cp,
        proxy,
        prometheus,
    } = start_measured(node, |prometheus| {
        rollouts_yaml(STABLE, stable.addr(), canary.addr(), prometheus)
    })
    .await?;
    Ok(Setup {
        stable_addr: stable.addr(),
        canary_addr: canary.addr(),
        cp,
        proxy,
        prometheus,
        _stable: stable,
        _canary: canary,
    })
}

/// Aborted by the engine, all traffic on stable and ACKed by the one proxy.
fn aborted_on_stable(status: &RolloutStatus) -> bool {
    status.abort
        && status
            .data_plane
            .as_ref()
            .is_some_and(|d| d.traffic.canary_weight == 0)
        && acked_by(status, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_aborted_by_its_analysis() -> anyhow::Result<()> {
    let s = setup("analysis-bad", 5).await?;
    let load = Load::start(s.proxy.listener, 4);
    s.cp.write_file(&rollouts_yaml(
        CANARY,
        s.stable_addr,
        s.canary_addr,
        &s.prometheus.url(),
    ))?;
    let aborted = wait_until(
        &s.cp,
        "the analysis aborts the canary",
        WITHIN,
        |s| s,
        aborted_on_stable,
    )
    .await?;
    let stable_at = k8s_openapi::jiff::Timestamp::now();
    assert_eq!(aborted.phase.as_deref(), Some("Degraded"), "{aborted:?}");
    assert_eq!(aborted.stable_rs.as_deref(), Some(STABLE));
    let message = aborted.message.clone().unwrap_or_default();
    // The last value, ~0.8 (1 request in 5 fails; Prometheus' rate window makes it 0.7998 or
    // 0.8003, not exactly 0.8).
    let last_value = message
        .rsplit_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .and_then(|(value, _)| value.parse::<f64>().ok());
    assert!(
        message.contains("Metric \"success-rate\" assessed Failed")
            && last_value.is_some_and(|v| (0.75..0.85).contains(&v)),
        "the message names the metric and its values: {message}"
    );
    let runs = runs(&s.cp)?;
    let run = runs.first().context("a run in the state file")?;
    assert_eq!(run["status"]["phase"], "Failed", "{run:#}");
    // Before the canary's series has two scrapes the result is empty: a measurement Error
    // (retried), not a failure. The last one is the failure.
    let measurements = measurements(run);
    let measurement = measurements.last().context("a measurement")?;
    assert_eq!(measurement["phase"], "Failed", "{run:#}");
    let value = measurement["value"].as_str().unwrap_or_default();
    assert!(
        value.starts_with("[0.7") || value.starts_with("[0.8"),
        "about 80 %: {run:#}"
    );
    let failed_at = finished_at(measurement)?;
    println!(
        "analysis: failed measurement {} -> 100 % stable ACKed (seen by the test) in {:.2} s",
        measurement["value"],
        stable_at.duration_since(failed_at).as_secs_f64()
    );
    // From now on every request goes to stable and succeeds.
    let before = load.tally();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = load.stop();
    assert!(after.count(CANARY) - before.count(CANARY) == 0, "{after:?}");
    assert_eq!(after.failures(), before.failures(), "{after:?}");
    assert!(after.count(STABLE) > before.count(STABLE));
    // 500s reached clients only while the canary took traffic.
    assert!(
        before.bad_status.get(&500).copied().unwrap_or(0) > 0,
        "{before:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_canary_passes_its_analysis_and_is_promoted() -> anyhow::Result<()> {
    let s = setup("analysis-good", 0).await?;
    let load = Load::start(s.proxy.listener, 4);
    s.cp.write_file(&rollouts_yaml(
        CANARY,
        s.stable_addr,
        s.canary_addr,
        &s.prometheus.url(),
    ))?;
    let promoted = wait_until(
        &s.cp,
        "the analysis promotes the canary",
        WITHIN,
        |s| s,
        |s| s.stable_rs.as_deref() == Some(CANARY) && s.phase.as_deref() == Some("Healthy"),
    )
    .await?;
    assert!(!promoted.abort, "{promoted:?}");
    let runs = runs(&s.cp)?;
    let run = runs.first().context("a run in the state file")?;
    assert_eq!(run["status"]["phase"], "Successful", "{run:#}");
    let measurements = measurements(run);
    // count: 3 successful measurements of a 100 % success rate (an empty result before the
    // canary's series has two scrapes is an Error, retried, not counted).
    let successful: Vec<_> = measurements
        .iter()
        .filter(|m| m["phase"] == AnalysisPhase::Successful.to_string())
        .collect();
    assert_eq!(successful.len(), 3, "{run:#}");
    assert!(successful.iter().all(|m| m["value"] == "[1]"), "{run:#}");
    assert_eq!(run["status"]["metricResults"][0]["count"], 3, "{run:#}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.stop();
    assert_eq!(tally.failures(), 0, "no failed request: {tally:?}");
    assert!(
        tally.count(CANARY) > 0 && tally.count(STABLE) > 0,
        "{tally:?}"
    );
    Ok(())
}

/// The same rollout with background analysis (`strategy.canary.analysis` from `startingStep` 1)
/// instead of an analysis step: the steps go on (a long timed pause) while the run measures.
fn with_background_analysis(yaml: &str) -> String {
    let step = "      steps:
        - setWeight: 50
        - analysis:
            templates: [{templateName: success-rate}]
            args:
            - name: version
              valueFrom: {podTemplateHashValue: Latest}
";
    let background = "      analysis:
        templates: [{templateName: success-rate}]
        startingStep: 1
        args:
        - name: version
          valueFrom: {podTemplateHashValue: Latest}
      steps:
        - setWeight: 50
        - pause: {duration: 10m}
";
    yaml.replace(step, background)
}

/// A canary that fails its background analysis is aborted while it sits in a timed pause: the
/// run (`…-background`) fails on Prometheus' figures and all traffic goes back to stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_aborted_by_its_background_analysis() -> anyhow::Result<()> {
    let s = setup("analysis-background", 5).await?;
    let load = Load::start(s.proxy.listener, 4);
    let yaml = with_background_analysis(&rollouts_yaml(
        CANARY,
        s.stable_addr,
        s.canary_addr,
        &s.prometheus.url(),
    ));
    anyhow::ensure!(
        yaml.contains("startingStep: 1"),
        "the rollout rewritten: {yaml}"
    );
    s.cp.write_file(&yaml)?;
    let aborted = wait_until(
        &s.cp,
        "the background analysis aborts the canary",
        WITHIN,
        |s| s,
        aborted_on_stable,
    )
    .await?;
    let stable_at = k8s_openapi::jiff::Timestamp::now();
    assert_eq!(aborted.phase.as_deref(), Some("Degraded"), "{aborted:?}");
    let message = aborted.message.clone().unwrap_or_default();
    assert!(
        message.contains("background")
            && message.contains("Metric \"success-rate\" assessed Failed"),
        "{message}"
    );
    let runs = runs(&s.cp)?;
    let run = runs
        .iter()
        .find(|r| {
            r["name"]
                .as_str()
                .is_some_and(|n| n.contains("-background"))
        })
        .context("a background run in the state file")?;
    assert_eq!(run["status"]["phase"], "Failed", "{run:#}");
    let failed = measurements(run)
        .into_iter()
        .find(|m| m["phase"] == "Failed")
        .context("a failed measurement")?;
    let failed_at = finished_at(&failed)?;
    println!(
        "background analysis: first failed measurement {} -> 100 % stable ACKed (seen by the \
         test) in {:.2} s",
        failed["value"],
        stable_at.duration_since(failed_at).as_secs_f64()
    );
    let before = load.tally();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = load.stop();
    assert_eq!(after.count(CANARY), before.count(CANARY), "{after:?}");
    assert_eq!(after.failures(), before.failures(), "{after:?}");
    Ok(())
}
