//! Changes while traffic flows: how fast a weight change shows up in traffic (file and admin
//! API), and that weight changes and a version coming and going under load fail no request.

use std::time::Duration;

use anyhow::bail;
use serde_json::json;
use sluice_e2e::{Upstream, parse_prometheus};
use tokio::time::Instant;

use crate::harness::{
    CANARY, ControlPlane, Proxy, ProxyOptions, RDS_TYPE, Rollout, STABLE, THIRD, acked, eventually,
    report_dir, write_report,
};
use crate::load::{Client, Load};

/// A change counts as visible once this many consecutive responses come from the new version.
const CONSECUTIVE: usize = 20;
/// Samples per change path (file, admin API).
const SAMPLES: usize = 12;
/// The generous bound: every change must be visible within this.
const VISIBLE_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_change_latency() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let rollout = Rollout::two(stable.addr(), canary.addr(), 0);
    let cp = ControlPlane::start(&rollout.yaml(), &[]).await?;
    let proxy = Proxy::start_serving(&cp, "latency", ProxyOptions::default()).await?;
    cp.wait_synced("latency", |_| true).await?;
    let mut client = Client::new(proxy.listener);
    // At 0 % everything goes to stable.
    visible_after(&mut client, Instant::now(), STABLE).await?;

    // File first: an admin override would hold until the file changes the rollout.
    let mut file_ms = Vec::new();
    for i in 0..SAMPLES {
        let (weight, target) = if i % 2 == 0 {
            (100, CANARY)
        } else {
            (0, STABLE)
        };
        let started = Instant::now();
        cp.write_file(&rollout.clone().weight(weight).yaml())?;
        file_ms.push(visible_after(&mut client, started, target).await?);
    }
    // The file ends at 0 %; the admin API alternates from there.
    let mut admin_ms = Vec::new();
    for i in 0..SAMPLES {
        let (weight, target) = if i % 2 == 0 {
            (100, CANARY)
        } else {
            (0, STABLE)
        };
        let started = Instant::now();
        cp.set_weight(weight).await?;
        admin_ms.push(visible_after(&mut client, started, target).await?);
    }

    let all: Vec<f64> = file_ms.iter().chain(&admin_ms).copied().collect();
    let report = json!({
        "what": "time from a weight change (0 <-> 100 %) to the first of 20 consecutive responses from the new version",
        "unit": "ms",
        "file": summary(&file_ms),
        "admin": summary(&admin_ms),
        "all": summary(&all),
    });
    eprintln!(
        "weight change latency (ms): file p50 {:.1} p99 {:.1}; admin p50 {:.1} p99 {:.1}; all p50 {:.1} p99 {:.1} (n = {})",
        percentile(&file_ms, 0.50),
        percentile(&file_ms, 0.99),
        percentile(&admin_ms, 0.50),
        percentile(&admin_ms, 0.99),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.len()
    );
    let path = report_dir()?.join("weight_change_latency.json");
    write_report(&path, &serde_json::to_string_pretty(&report)?)?;
    eprintln!("written to {}", path.display());
    Ok(())
}

/// Sends requests one after the other until [`CONSECUTIVE`] in a row come from `target`;
/// returns the milliseconds from `started` to the first of them.
async fn visible_after(client: &mut Client, started: Instant, target: &str) -> anyhow::Result<f64> {
    let mut run_started = None;
    let mut run = 0;
    loop {
        let (status, upstream) = client.get().await?;
        if status != 200 {
            bail!("status {status} while waiting for {target}");
        }
        if upstream.as_deref() == Some(target) {
            let at = *run_started.get_or_insert_with(Instant::now);
            run += 1;
            if run == CONSECUTIVE {
                return Ok(at.duration_since(started).as_secs_f64() * 1e3);
            }
        } else {
            run_started = None;
            run = 0;
        }
        if started.elapsed() > VISIBLE_WITHIN {
            bail!("traffic not all on {target} {VISIBLE_WITHIN:?} after the change");
        }
    }
}

fn summary(samples: &[f64]) -> serde_json::Value {
    json!({
        "n": samples.len(),
        "p50": percentile(samples, 0.50),
        "p99": percentile(samples, 0.99),
        "max": samples.iter().copied().fold(0.0, f64::max),
        "samples": samples,
    })
}

/// Nearest-rank percentile.
fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_failed_requests_while_weights_and_versions_change() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let third = Upstream::start(THIRD).await?;
    let rollout = Rollout::two(stable.addr(), canary.addr(), 20);
    let cp = ControlPlane::start(&rollout.yaml(), &[]).await?;
    let proxy = Proxy::start_serving(&cp, "changes", ProxyOptions::default()).await?;
    cp.wait_synced("changes", |_| true).await?;
    let published_before = snapshots_published(&cp).await?;

    let load = Load::start(proxy.listener, 4);
    eventually("load running", Duration::from_secs(30), async || {
        Ok((load.tally().ok() > 100).then_some(()))
    })
    .await?;
    let pause = Duration::from_millis(100);
    let mut changes = 0;
    for i in 0..20 {
        cp.set_weight((i * 37 + 11) % 101).await?;
        changes += 1;
        tokio::time::sleep(pause).await;
    }

    // A new version arrives and becomes the canary.
    let mut with_third = rollout.clone().weight(30);
    with_third.versions.push((THIRD.into(), third.addr()));
    with_third.canary = Some(THIRD.into());
    cp.write_file(&with_third.yaml())?;
    changes += 1;
    eventually(
        "the new version gets traffic",
        Duration::from_secs(30),
        async || Ok((load.tally().count(THIRD) > 0).then_some(())),
    )
    .await?;
    for i in 0..20 {
        cp.write_file(&with_third.clone().weight((i * 53 + 7) % 101).yaml())?;
        changes += 1;
        tokio::time::sleep(pause).await;
    }

    // It goes away again.
    let synced = cp.wait_synced("changes", |_| true).await?;
    let before = acked(&synced, RDS_TYPE);
    cp.write_file(&rollout.clone().weight(40).yaml())?;
    changes += 1;
    cp.wait_synced("changes", |p| acked(p, RDS_TYPE) != before)
        .await?;
    // Envoy ACKs once its main thread has the new config; workers switch right after. Settle:
    // the removed version's count must stay put while 500 more requests are answered.
    let mut last = load.tally();
    let third_seen = eventually(
        "the removed version stops answering",
        Duration::from_secs(30),
        async || {
            let now = load.tally();
            if now.ok() < last.ok() + 500 {
                return Ok(None);
            }
            let settled = now.count(THIRD) == last.count(THIRD);
            last = now;
            Ok(settled.then(|| last.count(THIRD)))
        },
    )
    .await?;
    for i in 0..10 {
        cp.set_weight((i * 29 + 3) % 101).await?;
        changes += 1;
        tokio::time::sleep(pause).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.stop();
    eprintln!("{changes} changes under load: {tally:?}");

    assert_eq!(
        tally.failures(),
        0,
        "failed requests: non-200 {:?}, errors {} ({:?})",
        tally.bad_status,
        tally.errors,
        tally.error_samples
    );
    assert!(changes >= 50);
    assert!(
        tally.count(STABLE) > 0 && tally.count(CANARY) > 0,
        "{tally:?}"
    );
    assert!(third_seen > 0);
    // The removed version never answered again.
    assert_eq!(
        tally.count(THIRD),
        third_seen,
        "the removed version answered again after its removal"
    );
    let published = snapshots_published(&cp).await? - published_before;
    assert!(
        published >= 50.0,
        "only {published} snapshots published for {changes} changes"
    );
    Ok(())
}

async fn snapshots_published(cp: &ControlPlane) -> anyhow::Result<f64> {
    let (_, body) = cp.http("/metrics").await?;
    parse_prometheus(&body)
        .into_iter()
        .find(|s| s.name.starts_with("sluice_snapshots_published"))
        .map(|s| s.value)
        .ok_or_else(|| anyhow::anyhow!("no sluice_snapshots_published in /metrics:\n{body}"))
}
