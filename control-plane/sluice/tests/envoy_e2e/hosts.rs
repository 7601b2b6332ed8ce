//! Issue 7: the routes and listener the control plane generates normalise the host as the filter
//! does (`sluice_proto::rules`): every authority of the shared table is either served and counted
//! by the filter, or answered 404 (400) by the router and not counted — never counted and 404.

use std::time::Duration;

use sluice_e2e::{Req, Upstream};
use sluice_proto::rules::cases::AUTHORITIES;

use crate::harness::{CANARY, ControlPlane, HOST, Proxy, ProxyOptions, Rollout, STABLE};

/// Requests per authority.
const N: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_routes_and_the_filter_agree_on_hosts() -> anyhow::Result<()> {
    assert_eq!(HOST, "demo.local", "the table's rollout host");
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let rollout = Rollout::two(stable.addr(), canary.addr(), 100);
    let cp = ControlPlane::start(&rollout.yaml(), &[]).await?;
    let mut proxy = Proxy::start_serving(&cp, "hosts", ProxyOptions::default()).await?;
    cp.wait_synced("hosts", |_| true).await?;
    let total = |d: &std::collections::BTreeMap<(String, String), u64>| d.values().sum::<u64>();
    // Requests made while the proxy came up (its readiness probe) are counted too.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = total(&proxy.wait_decisions(|_| true).await?);

    let mut served = 0u64;
    for (authority, normal) in AUTHORITIES {
        let responses = proxy.send(vec![Req::get(authority); N]).await?;
        for response in &responses {
            if *normal == HOST {
                assert_eq!(
                    (response.status, response.upstream()),
                    (200, Some(CANARY)),
                    "Host {authority:?} is the rollout's: {response:?}"
                );
            } else {
                assert!(
                    response.status == 404 || response.status == 400,
                    "Host {authority:?} is no rollout's: {response:?}"
                );
            }
        }
        if *normal == HOST {
            served += N as u64;
        }
    }
    proxy
        .wait_decisions(|d| total(d) >= before + served)
        .await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let decisions = proxy.wait_decisions(|_| true).await?;
    assert_eq!(
        total(&decisions) - before,
        served,
        "counted = served: {decisions:?}"
    );
    Ok(())
}
