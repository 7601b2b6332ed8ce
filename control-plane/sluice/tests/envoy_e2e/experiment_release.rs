//! An experiment step run by the standalone release engine through a real Envoy: a release
//! (`spec.version`) reaches `setWeight: 10`, then an `experiment` whose `baseline` template (a
//! static version of its own, the stable's code) takes 10 %: the live traffic splits 80/10/10
//! within 4 σ; after the experiment's `duration` (20 s) the step ends, the baseline's share goes
//! back and the release goes on to `pause: {}` — zero failed requests throughout.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_api::RolloutStatus;
use sluice_e2e::{Req, Upstream, check_binomial};

use crate::engine::wait_until;
use crate::harness::{CANARY, ControlPlane, HOST, Proxy, ProxyOptions, STABLE, THIRD, by_upstream};

/// The experiment's baseline: a static version beside stable and canary.
const BASELINE: &str = THIRD;
const REQUESTS: usize = 3_000;
const WITHIN: Duration = Duration::from_secs(60);

fn rollouts_yaml(version: &str, upstreams: &[(&str, SocketAddr)]) -> String {
    let endpoints: String = upstreams
        .iter()
        .map(|(hash, addr)| format!("    \"{hash}\": [\"{addr}\"]\n"))
        .collect();
    format!(
        "apiVersion: sluice.dev/v1alpha1\n\
         kind: Rollout\n\
         metadata: {{name: demo}}\n\
         spec:\n  version: \"{version}\"\n  hosts: [{HOST}]\n\
         \x20 staticEndpoints:\n{endpoints}\
         \x20 strategy:\n    canary:\n      scaleDownDelaySeconds: 0\n      steps:\n\
         \x20       - setWeight: 10\n\
         \x20       - experiment:\n\
         \x20           duration: 20s\n\
         \x20           templates:\n\
         \x20             - {{name: baseline, specRef: stable, version: \"{BASELINE}\", weight: 10}}\n\
         \x20       - pause: {{}}\n"
    )
}

/// (step, canary weight, the additional shares) of the engine's status.
pub type Where = (i32, i32, Vec<(String, i32)>);

pub fn where_of(status: RolloutStatus) -> Where {
    let traffic = status.data_plane.unwrap_or_default().traffic;
    let additional = traffic
        .additional
        .iter()
        .map(|w| (w.pod_template_hash.clone().unwrap_or_default(), w.weight))
        .collect();
    (
        status.current_step_index.unwrap_or(-1),
        traffic.canary_weight,
        additional,
    )
}

async fn wait_for(
    cp: &ControlPlane,
    what: &str,
    check: impl Fn(&Where) -> bool,
) -> anyhow::Result<Where> {
    wait_until(cp, what, WITHIN, where_of, check).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_step_splits_80_10_10_and_ends_after_its_duration() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let baseline = Upstream::start(BASELINE).await?;
    let upstreams = [
        (STABLE, stable.addr()),
        (CANARY, canary.addr()),
        (BASELINE, baseline.addr()),
    ];
    let cp = ControlPlane::start(&rollouts_yaml(STABLE, &upstreams), &[]).await?;
    let proxy = Proxy::start_serving(&cp, "experiment", ProxyOptions::default()).await?;
    cp.wait_synced("experiment", |_| true).await?;

    cp.write_file(&rollouts_yaml(CANARY, &upstreams))?;
    let running = wait_for(&cp, "the experiment's baseline at 10 %", |w| {
        w.0 == 1 && w.1 == 10 && w.2 == [(BASELINE.to_owned(), 10)]
    })
    .await?;
    eprintln!("experiment running: {running:?}");
    // Once ACKed, the split is stable/canary/baseline = 80/10/10.
    crate::harness::eventually("the baseline answers through Envoy", WITHIN, async || {
        let counts = by_upstream(&proxy.send(vec![Req::get(HOST); 200]).await?)?;
        Ok(counts.contains_key(BASELINE).then_some(()))
    })
    .await?;
    let counts = by_upstream(&proxy.send(vec![Req::get(HOST); REQUESTS]).await?)?;
    // Sampled while the experiment ran (a loaded machine can take a while for 3000 requests).
    let still = crate::engine::status(&cp).await.map(where_of)?;
    anyhow::ensure!(
        still.0 == 1 && still.2 == [(BASELINE.to_owned(), 10)],
        "the experiment ended during the sample: {still:?}"
    );
    eprintln!("at 80/10/10: {counts:?}");
    let n = |hash: &str| counts.get(hash).copied().unwrap_or(0);
    anyhow::ensure!(
        n(STABLE) + n(CANARY) + n(BASELINE) == REQUESTS as u64,
        "every request answered by one of the three: {counts:?}"
    );
    check_binomial("stable share", n(STABLE), REQUESTS as u64, 0.8)?;
    check_binomial("canary share", n(CANARY), REQUESTS as u64, 0.1)?;
    check_binomial("baseline share", n(BASELINE), REQUESTS as u64, 0.1)?;

    // The duration ends the experiment: the baseline's share goes, the release goes on.
    let after = wait_for(&cp, "the experiment done, pause {} reached", |w| {
        w.0 == 2 && w.2.is_empty()
    })
    .await?;
    assert_eq!(after.1, 10, "{after:?}");
    let counts = crate::harness::eventually("no request to the baseline", WITHIN, async || {
        let counts = by_upstream(&proxy.send(vec![Req::get(HOST); 300]).await?)?;
        Ok((!counts.contains_key(BASELINE)).then_some(counts))
    })
    .await?;
    eprintln!("after the experiment: {counts:?}");
    Ok(())
}
