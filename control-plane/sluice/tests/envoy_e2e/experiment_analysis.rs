//! An experiment step that ends on its analysis, end to end: the standalone release engine, a real
//! Envoy and a real Prometheus scraping that Envoy. The seeds' baseline-vs-canary shape: an
//! `experiment` with templates `baseline` (`specRef: stable`) and `canary` (`specRef: canary`) at
//! 10 % each and no `duration`, and an analysis (`requiredForCompletion`) comparing the canary
//! template's success rate with the baseline's — each measured on its own Envoy cluster, named by
//! the `{{templates.<name>.podTemplateHash}}` arguments:
//!
//! - a good canary: the live traffic splits 80/10/10 (stable/baseline/canary) within 4 σ while
//!   the experiment runs; the analysis succeeds, the experiment ends Successful by itself and the
//!   rollout goes on to the next step, the templates' shares gone — no failed request; a second,
//!   impossible metric fails but is a dry run (the step's `dryRun`), so it fails nothing;
//! - a canary template that answers 500 to one request in five: the analysis fails, the rollout
//!   is aborted, all traffic on stable (ACKed), and no request failed but the canary's own.
//!
//! Needs Envoy, the filter module (`make wasm`) and Prometheus (`make setup`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::jiff::Timestamp;
use sluice_api::RolloutStatus;
use sluice_e2e::{Req, Upstream, check_binomial};

use crate::engine::{
    Measured, acked_by, finished_at, measurements, runs, start_measured, wait_until,
};
use crate::harness::{CANARY, HOST, STABLE, THIRD, by_upstream};
use crate::load::Load;

/// The `baseline` template's version (the stable's code).
const BASELINE: &str = THIRD;
/// The `canary` template's version (the canary's code).
const EXPERIMENT_CANARY: &str = "9b3d5f7a1c";
const REQUESTS: usize = 3_000;
/// Generous: a loaded 2-core machine, Prometheus scraping every second.
const WITHIN: Duration = Duration::from_secs(120);

fn rollouts_yaml(version: &str, upstreams: &[(&str, SocketAddr)], prometheus: &str) -> String {
    let endpoints: String = upstreams
        .iter()
        .map(|(hash, addr)| format!("    \"{hash}\": [\"{addr}\"]\n"))
        .collect();
    // The canary template's success rate over the baseline's, each from its own cluster.
    let rate = |template: &str, ok: bool| {
        let class = if ok {
            ",envoy_response_code_class!=\"5\""
        } else {
            ""
        };
        // (`{{args.…}}` is the analysis' own substitution, kept literally.)
        String::from("sum(rate(envoy_cluster_upstream_rq_xx{sluice_namespace=\"default\",")
            + "sluice_rollout=\"demo\",sluice_version=\"{{args."
            + template
            + "-hash}}\""
            + class
            + "}[10s]))"
    };
    let query = format!(
        "({} / {}) / ({} / {})",
        rate("canary", true),
        rate("canary", false),
        rate("baseline", true),
        rate("baseline", false)
    );
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: canary-vs-baseline}}
spec:
  args:
  - name: baseline-hash
  - name: canary-hash
  - name: prometheus
    value: "{prometheus}"
  metrics:
  - name: success-rate-vs-baseline
    # Before both series have two scrapes the result is empty: an Error, retried.
    initialDelay: 6s
    interval: 2s
    count: 4
    failureLimit: 0
    consecutiveErrorLimit: 10
    successCondition: result[0] >= 0.95
    provider:
      prometheus:
        address: "{{{{args.prometheus}}}}"
        query: '{query}'
  # Stricter than any release can be: it fails, but the step's dryRun rule keeps it from
  # failing the run (and the experiment).
  - name: dry-strict-success-rate
    initialDelay: 6s
    interval: 2s
    count: 2
    failureLimit: 0
    consecutiveErrorLimit: 10
    successCondition: result[0] > 1.5
    provider:
      prometheus:
        address: "{{{{args.prometheus}}}}"
        query: '{query}'
---
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: demo}}
spec:
  version: "{version}"
  hosts: [{HOST}]
  staticEndpoints:
{endpoints}  strategy:
    canary:
      scaleDownDelaySeconds: 0
      abortScaleDownDelaySeconds: 0
      steps:
      - experiment:
          dryRun: [{{metricName: dry-.*}}]
          templates:
          - {{name: baseline, specRef: stable, version: "{BASELINE}", weight: 10}}
          - {{name: canary, specRef: canary, version: "{EXPERIMENT_CANARY}", weight: 10}}
          analyses:
          - name: compare
            templateName: canary-vs-baseline
            requiredForCompletion: true
            args:
            - name: baseline-hash
              value: "{{{{templates.baseline.podTemplateHash}}}}"
            - name: canary-hash
              value: "{{{{templates.canary.podTemplateHash}}}}"
      - pause: {{}}
"#
    )
}

/// (step, experiment phase, canary weight, the additional shares, ACKed) of the engine's status.
#[derive(Debug)]
struct Where {
    step: i32,
    experiment: String,
    canary_weight: i32,
    additional: Vec<(String, i32)>,
    abort: bool,
    acked: bool,
    status: RolloutStatus,
}

fn where_of(status: RolloutStatus) -> Where {
    let traffic = status.data_plane.clone().unwrap_or_default().traffic;
    Where {
        step: status.current_step_index.unwrap_or(-1),
        experiment: status
            .experiment
            .as_ref()
            .map(|e| e.phase.clone())
            .unwrap_or_default(),
        canary_weight: traffic.canary_weight,
        additional: traffic
            .additional
            .iter()
            .map(|w| (w.pod_template_hash.clone().unwrap_or_default(), w.weight))
            .collect(),
        abort: status.abort,
        acked: acked_by(&status, 1),
        status,
    }
}

struct Setup {
    measured: Measured,
    canary_template: Upstream,
    _upstreams: Vec<Upstream>,
    addrs: Vec<(&'static str, SocketAddr)>,
}

impl Setup {
    /// v1 stable behind a real Envoy that Prometheus scrapes; the canary template's upstream
    /// fails every `fail_every`-th request (0: never).
    async fn start(node: &str, fail_every: u64) -> anyhow::Result<Self> {
        let stable = Upstream::start(STABLE).await?;
        let canary = Upstream::start(CANARY).await?;
        let baseline = Upstream::start(BASELINE).await?;
        let canary_template = Upstream::start_failing(EXPERIMENT_CANARY, fail_every).await?;
        let addrs = vec![
            (STABLE, stable.addr()),
            (CANARY, canary.addr()),
            (BASELINE, baseline.addr()),
            (EXPERIMENT_CANARY, canary_template.addr()),
        ];
        let measured =
            start_measured(node, |prometheus| rollouts_yaml(STABLE, &addrs, prometheus)).await?;
        let setup = Setup {
            measured,
            canary_template,
            _upstreams: vec![stable, canary, baseline],
            addrs,
        };
        setup
            .wait_for("v1 stable, ACKed", |w| {
                w.status.phase.as_deref() == Some("Healthy") && w.acked
            })
            .await?;
        Ok(setup)
    }

    /// The release: `spec.version` v2.
    fn release(&self) -> anyhow::Result<()> {
        self.measured.cp.write_file(&rollouts_yaml(
            CANARY,
            &self.addrs,
            &self.measured.prometheus.url(),
        ))
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&Where) -> bool) -> anyhow::Result<Where> {
        wait_until(&self.measured.cp, what, WITHIN, where_of, check).await
    }

    /// The experiment's analysis run in the state file.
    fn run(&self) -> anyhow::Result<serde_json::Value> {
        runs(&self.measured.cp)?
            .into_iter()
            .find(|r| r["name"].as_str().is_some_and(|n| n.ends_with("-compare")))
            .context("the experiment's run in the state file")
    }
}

fn running(w: &Where) -> bool {
    w.step == 0
        && w.experiment == "Running"
        && w.canary_weight == 0
        && w.additional
            == [
                (BASELINE.to_owned(), 10),
                (EXPERIMENT_CANARY.to_owned(), 10),
            ]
        && w.acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_splits_80_10_10_and_ends_on_its_analysis() -> anyhow::Result<()> {
    let s = Setup::start("experiment-analysis-good", 0).await?;
    let proxy = &s.measured.proxy;
    let load = Load::start(proxy.listener, 2);
    s.release()?;
    s.wait_for("the experiment running, its shares ACKed", running)
        .await?;
    crate::harness::eventually("both templates answer", WITHIN, async || {
        let counts = by_upstream(&proxy.send(vec![Req::get(HOST); 200]).await?)?;
        Ok((counts.contains_key(BASELINE) && counts.contains_key(EXPERIMENT_CANARY)).then_some(()))
    })
    .await?;
    let counts = by_upstream(&proxy.send(vec![Req::get(HOST); REQUESTS]).await?)?;
    // Measured while the experiment ran: its analysis had not ended it yet.
    let still = where_of(crate::engine::status(&s.measured.cp).await?);
    anyhow::ensure!(
        running(&still),
        "the experiment ended during the sample: {still:?}"
    );
    let n = |hash: &str| counts.get(hash).copied().unwrap_or(0);
    println!(
        "experiment analysis: stable/baseline/canary template {}/{}/{} of {REQUESTS}",
        n(STABLE),
        n(BASELINE),
        n(EXPERIMENT_CANARY)
    );
    anyhow::ensure!(
        n(STABLE) + n(BASELINE) + n(EXPERIMENT_CANARY) == REQUESTS as u64,
        "every request answered by stable or a template: {counts:?}"
    );
    check_binomial("stable share", n(STABLE), REQUESTS as u64, 0.8)?;
    check_binomial("baseline share", n(BASELINE), REQUESTS as u64, 0.1)?;
    check_binomial(
        "canary template share",
        n(EXPERIMENT_CANARY),
        REQUESTS as u64,
        0.1,
    )?;

    // The analysis ends the experiment (no duration): the next step, the templates' shares gone.
    let next = s
        .wait_for("the experiment Successful, pause {} reached, ACKed", |w| {
            w.step == 1 && w.additional.is_empty() && w.acked
        })
        .await?;
    let next_at = Timestamp::now();
    assert!(!next.abort, "{next:?}");
    let experiment = next
        .status
        .experiment
        .clone()
        .context("status.experiment")?;
    assert_eq!(experiment.phase, "Successful", "{experiment:?}");
    assert_eq!(
        experiment.message.as_deref(),
        Some("every required analysis succeeded"),
        "{experiment:?}"
    );
    assert_eq!(next.status.phase.as_deref(), Some("Paused"), "{next:?}");
    let run = s.run()?;
    assert_eq!(run["status"]["phase"], "Successful", "{run:#}");
    // The dry-run metric failed and was kept from failing the run (the step's dryRun).
    let dry = &run["status"]["metricResults"][1];
    assert_eq!(
        (
            dry["name"].as_str(),
            dry["phase"].as_str(),
            dry["dryRun"].as_bool()
        ),
        (Some("dry-strict-success-rate"), Some("Failed"), Some(true)),
        "{run:#}"
    );
    // The arguments named the templates' versions.
    let args = run["args"].as_array().cloned().unwrap_or_default();
    assert!(
        args.iter()
            .any(|a| a["name"] == "canary-hash" && a["value"] == EXPERIMENT_CANARY),
        "{run:#}"
    );
    let measured = measurements(&run);
    let successful: Vec<_> = measured
        .iter()
        .filter(|m| m["phase"] == "Successful")
        .collect();
    assert_eq!(successful.len(), 4, "{run:#}");
    let deciding = successful.last().context("a measurement")?;
    println!(
        "experiment analysis: deciding measurement {} -> next step ACKed (seen by the test) in \
         {:.2} s",
        deciding["value"],
        next_at.duration_since(finished_at(deciding)?).as_secs_f64()
    );
    let tally = load.stop();
    assert_eq!(
        tally.failures(),
        0,
        "failed requests: non-200 {:?}, errors {} ({:?})",
        tally.bad_status,
        tally.errors,
        tally.error_samples
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_whose_canary_fails_its_analysis_aborts_the_rollout() -> anyhow::Result<()> {
    let s = Setup::start("experiment-analysis-bad", 5).await?;
    let proxy = &s.measured.proxy;
    let load = Load::start(proxy.listener, 4);
    s.release()?;
    s.wait_for("the experiment running, its shares ACKed", running)
        .await?;
    let aborted = s
        .wait_for(
            "the analysis aborts the rollout, all on stable, ACKed",
            |w| w.abort && w.canary_weight == 0 && w.additional.is_empty() && w.acked,
        )
        .await?;
    let stable_at = Timestamp::now();
    let canary_requests = s.canary_template.requests();
    assert_eq!(
        aborted.status.phase.as_deref(),
        Some("Degraded"),
        "{aborted:?}"
    );
    let experiment = aborted
        .status
        .experiment
        .clone()
        .context("status.experiment")?;
    assert_eq!(experiment.phase, "Failed", "{experiment:?}");
    let message = aborted.status.message.clone().unwrap_or_default();
    assert!(
        message.contains("success-rate-vs-baseline"),
        "the message names the metric: {message}"
    );
    let run = s.run()?;
    assert_eq!(run["status"]["phase"], "Failed", "{run:#}");
    let failed = measurements(&run)
        .into_iter()
        .find(|m| m["phase"] == "Failed")
        .context("a failed measurement")?;
    let ratio = failed["value"]
        .as_str()
        .and_then(|v| v.trim_matches(['[', ']']).parse::<f64>().ok())
        .context("a number")?;
    assert!(
        (0.7..0.9).contains(&ratio),
        "about 80 % of the baseline's: {run:#}"
    );
    println!(
        "experiment analysis: failed measurement {ratio:.3} -> aborted, 100 % stable ACKed (seen \
         by the test) in {:.2} s",
        stable_at
            .duration_since(finished_at(&failed)?)
            .as_secs_f64()
    );

    // From now on every request goes to stable and succeeds.
    let before = load.tally();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = load.stop();
    assert_eq!(s.canary_template.requests(), canary_requests, "{after:?}");
    assert!(after.count(STABLE) > before.count(STABLE), "{after:?}");
    assert_eq!(after.failures(), before.failures(), "{after:?}");
    // The only failures: the canary template's own 500s (one in five of its requests).
    assert_eq!(after.errors, 0, "{after:?}");
    let five_hundreds = after.bad_status.get(&500).copied().unwrap_or(0);
    assert_eq!(after.failures(), five_hundreds, "{after:?}");
    assert!(
        five_hundreds > 0 && five_hundreds <= canary_requests / 5,
        "{five_hundreds} 500s of {canary_requests} canary template requests: {after:?}"
    );
    Ok(())
}
