//! Blue/green promotion analysis end to end: a real `sluice serve --file`, a real Envoy and a real
//! Prometheus scraping that Envoy's `/stats/prometheus`, the analysis measuring the new version's
//! own cluster (its `sluice_version` tag) — its median upstream latency:
//!
//! - a slow v2 (every answer 200, 40 ms late) is switched to, fails its `postPromotionAnalysis`,
//!   and the engine alone switches the active host back to v1 in one push: no client request
//!   fails, and once the switch-back is ACKed no request reaches v2;
//! - a fast v2 passes its `prePromotionAnalysis` (measured on the preview host's traffic) and is
//!   promoted by itself.
//!
//! Needs Envoy, the filter module (`make wasm`) and Prometheus (`make setup`).

use std::time::Duration;

use anyhow::Context as _;
use sluice_api::RolloutStatus;
use sluice_e2e::{Prometheus, Upstream};

use crate::engine::{
    Measured, acked_by, finished_at, measurements, run_named, runs, start_measured, wait_until,
};
use crate::harness::{CANARY, ControlPlane, HOST, Proxy, STABLE};
use crate::load::Load;

const PREVIEW_HOST: &str = "preview.demo.local";
/// Generous: a loaded 2-core machine, Envoy flushing histograms every 5 s, Prometheus scraping
/// every second.
const WITHIN: Duration = Duration::from_secs(120);
/// v2's extra latency when it is the bad release; the objective is a median under 20 ms.
const SLOW: Duration = Duration::from_millis(40);

/// A blue/green rollout on demo.local, previewed on preview.demo.local, with the `latency`
/// template as `analysis` (`prePromotionAnalysis` or `postPromotionAnalysis`).
fn rollouts_yaml(
    version: &str,
    analysis: &str,
    v1: std::net::SocketAddr,
    v2: std::net::SocketAddr,
    prometheus: &str,
) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: latency}}
spec:
  args:
  - name: version
  - name: prometheus
    value: "{prometheus}"
  metrics:
  - name: median-latency-ms
    # Envoy merges histograms at its stats flush (5 s): no series yet is an empty result, a
    # measurement Error that is retried, never a failure (the `> 0` drops a NaN).
    initialDelay: 6s
    interval: 2s
    count: 3
    failureLimit: 0
    consecutiveErrorLimit: 10
    successCondition: result[0] < 20
    provider:
      prometheus:
        address: "{{{{args.prometheus}}}}"
        query: |
          histogram_quantile(0.5, sum by (le) (rate(envoy_cluster_upstream_rq_time_bucket{{sluice_namespace="default",sluice_rollout="demo",sluice_version="{{{{args.version}}}}"}}[10s]))) > 0
---
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: demo}}
spec:
  version: "{version}"
  hosts: [{HOST}]
  staticEndpoints:
    "{STABLE}": ["{v1}"]
    "{CANARY}": ["{v2}"]
  strategy:
    blueGreen:
      activeService: demo
      previewHosts: [{PREVIEW_HOST}]
      scaleDownDelaySeconds: 30
      abortScaleDownDelaySeconds: 0
      {analysis}:
        templates: [{{templateName: latency}}]
        args:
        - name: version
          valueFrom: {{podTemplateHashValue: Latest}}
"#
    )
}

/// Waits until `check` holds of the status (and the proxy ACKed what is published).
async fn wait_for(
    cp: &ControlPlane,
    what: &str,
    check: impl Fn(&RolloutStatus) -> bool,
) -> anyhow::Result<RolloutStatus> {
    wait_until(cp, what, WITHIN, |s| s, |s| acked_by(s, 1) && check(s)).await
}

fn active(status: &RolloutStatus) -> &str {
    status
        .data_plane
        .as_ref()
        .map_or("", |d| d.traffic.stable.as_str())
}

struct Setup {
    cp: ControlPlane,
    proxy: Proxy,
    prometheus: Prometheus,
    v1: Upstream,
    v2: Upstream,
    analysis: &'static str,
}

impl Setup {
    /// v1 active behind a real Envoy, Prometheus scraping it.
    async fn start(node: &str, analysis: &'static str, v2: Upstream) -> anyhow::Result<Self> {
        let v1 = Upstream::start(STABLE).await?;
        let Measured {
            cp,
            proxy,
            prometheus,
        } = start_measured(node, |prometheus| {
            rollouts_yaml(STABLE, analysis, v1.addr(), v2.addr(), prometheus)
        })
        .await?;
        let setup = Setup {
            cp,
            proxy,
            prometheus,
            v1,
            v2,
            analysis,
        };
        wait_for(&setup.cp, "v1 active and ACKed", |s| {
            s.phase.as_deref() == Some("Healthy") && active(s) == STABLE
        })
        .await?;
        Ok(setup)
    }

    /// The rollouts file at `version`.
    fn write(&self, version: &str) -> anyhow::Result<()> {
        self.cp.write_file(&rollouts_yaml(
            version,
            self.analysis,
            self.v1.addr(),
            self.v2.addr(),
            &self.prometheus.url(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_post_promotion_analysis_switches_back_without_a_failed_request()
-> anyhow::Result<()> {
    let s = Setup::start(
        "bg-post",
        "postPromotionAnalysis",
        Upstream::start_slow(CANARY, SLOW).await?,
    )
    .await?;
    let load = Load::start(s.proxy.listener, 4);
    s.write(CANARY)?;
    let switched = wait_for(&s.cp, "v2 active (switched), ACKed", |s| {
        active(s) == CANARY
    })
    .await?;
    assert_eq!(
        switched.stable_rs.as_deref(),
        Some(STABLE),
        "stableRS stays v1 until the post-promotion run succeeds: {switched:?}"
    );
    let back = wait_for(&s.cp, "the analysis switches back to v1, ACKed", |s| {
        s.abort && active(s) == STABLE
    })
    .await?;
    let back_at = k8s_openapi::jiff::Timestamp::now();
    let v2_requests = s.v2.requests();
    let generation = |s: &RolloutStatus| s.data_plane.as_ref().map_or(0, |d| d.generation);
    assert_eq!(
        generation(&back),
        generation(&switched) + 1,
        "back in one push: {switched:?} -> {back:?}"
    );
    assert_eq!(back.phase.as_deref(), Some("Degraded"), "{back:?}");
    assert_eq!(back.stable_rs.as_deref(), Some(STABLE));
    let bg = back.blue_green.clone().unwrap_or_default();
    assert_eq!(bg.active_selector.as_deref(), Some(STABLE));
    let post = bg
        .post_promotion_analysis_run_status
        .context("status.blueGreen.postPromotionAnalysisRunStatus")?;
    assert_eq!(
        (post.name.as_str(), post.status.as_str()),
        (format!("demo-{CANARY}-post").as_str(), "Failed")
    );
    let message = back.message.clone().unwrap_or_default();
    assert!(
        message.contains("Metric \"median-latency-ms\" assessed Failed"),
        "the message names the metric: {message}"
    );
    // Failed for the right reason: the measured median is v2's slowness, not an empty result.
    let run = run_named(&s.cp, &format!("demo-{CANARY}-post"))?;
    let measurement = measurements(&run)
        .last()
        .cloned()
        .context("a measurement")?;
    assert_eq!(measurement["phase"], "Failed", "{run:#}");
    let median = measurement["value"]
        .as_str()
        .and_then(|v| v.trim_matches(['[', ']']).parse::<f64>().ok())
        .context("a number")?;
    assert!(median >= 20.0, "v2's median latency {median} ms: {run:#}");
    let failed_at = finished_at(&measurement)?;
    println!(
        "blue/green post-promotion: failed measurement {median} ms -> v1 active again, ACKed \
         (seen by the test) in {:.2} s",
        back_at.duration_since(failed_at).as_secs_f64()
    );

    // Once the switch-back is ACKed, v2 receives nothing more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.v2.requests(), v2_requests, "a request reached v2");
    let tally = load.stop();
    assert_eq!(
        tally.failures(),
        0,
        "failed requests: non-200 {:?}, errors {} ({:?})",
        tally.bad_status,
        tally.errors,
        tally.error_samples
    );
    assert!(
        tally.count(CANARY) > 0 && tally.count(STABLE) > 0,
        "{tally:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_pre_promotion_analysis_promotes() -> anyhow::Result<()> {
    let s = Setup::start(
        "bg-pre",
        "prePromotionAnalysis",
        Upstream::start(CANARY).await?,
    )
    .await?;
    let active_load = Load::start(s.proxy.listener, 2);
    // The preview's traffic, which the pre-promotion analysis measures.
    let preview_load = Load::start_on_host(s.proxy.listener, 2, PREVIEW_HOST);
    s.write(CANARY)?;
    let previewed = wait_for(&s.cp, "v2 previewed, its run started", |s| {
        s.data_plane
            .as_ref()
            .is_some_and(|d| d.traffic.preview.as_deref() == Some(CANARY))
            && s.blue_green
                .as_ref()
                .is_some_and(|b| b.pre_promotion_analysis_run_status.is_some())
    })
    .await?;
    assert_eq!(active(&previewed), STABLE, "not promoted before its run");
    let promoted = wait_for(&s.cp, "v2 promoted by itself", |s| {
        s.phase.as_deref() == Some("Healthy") && s.stable_rs.as_deref() == Some(CANARY)
    })
    .await?;
    assert!(!promoted.abort, "{promoted:?}");
    assert_eq!(active(&promoted), CANARY);
    let pre = promoted
        .blue_green
        .clone()
        .unwrap_or_default()
        .pre_promotion_analysis_run_status
        .context("status.blueGreen.prePromotionAnalysisRunStatus")?;
    assert_eq!(
        (pre.name.as_str(), pre.status.as_str()),
        (format!("demo-{CANARY}-pre").as_str(), "Successful")
    );
    let runs = runs(&s.cp)?;
    let run = runs.first().context("a run in the state file")?;
    let successful = measurements(run)
        .iter()
        .filter(|m| m["phase"] == "Successful")
        .count();
    assert_eq!(successful, 3, "{run:#}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let active = active_load.stop();
    let preview = preview_load.stop();
    for (host, tally) in [(HOST, &active), (PREVIEW_HOST, &preview)] {
        assert_eq!(tally.failures(), 0, "{host}: {tally:?}");
    }
    assert!(
        active.count(STABLE) > 0 && active.count(CANARY) > 0,
        "{active:?}"
    );
    assert!(preview.count(CANARY) > 0, "{preview:?}");
    Ok(())
}
