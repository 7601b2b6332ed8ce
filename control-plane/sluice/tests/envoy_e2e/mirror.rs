//! Mirroring (`setMirrorRoute`) through a real Envoy: the control plane pushes the mirror route,
//! the canary upstream receives the share of matching requests as shadows (Envoy's `-shadow`
//! host), never a copy of a request that does not match, and every client response comes from
//! the version the filter chose.

use std::time::Duration;

use hyper::Method;
use sluice_e2e::{Req, Seen, Upstream, check_binomial};

use crate::harness::{
    CANARY, ControlPlane, HOST, Proxy, ProxyOptions, STABLE, by_upstream, eventually,
};

/// Matching requests sent; 25 % of them are expected at the canary as shadows.
const MATCHING: usize = 4_000;
/// Non-matching requests of each kind.
const OTHER: usize = 600;

/// A rollout at weight 0 with a header route to the canary and Argo's mirror route
/// `GET /api/*` at 25 %, standing at its final pause.
fn rollout_yaml(stable: &Upstream, canary: &Upstream) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: demo, namespace: default}}
spec:
  hosts: [{HOST}]
  staticEndpoints:
    "{STABLE}": ["{}"]
    "{CANARY}": ["{}"]
  strategy:
    canary:
      steps:
        - setWeight: 0
        - setHeaderRoute:
            name: testers
            match:
              - headerName: x-canary
                headerValue: {{exact: "1"}}
        - setMirrorRoute:
            name: api
            percentage: 25
            match:
              - method: {{exact: GET}}
                path: {{prefix: /api/}}
        - pause: {{}}
status:
  stableRS: "{STABLE}"
  currentPodHash: "{CANARY}"
  currentStepIndex: 3
"#,
        stable.addr(),
        canary.addr()
    )
}

fn requests(method: Method, path: &str, n: usize) -> Vec<Req> {
    (0..n)
        .map(|i| Req::get(HOST).at(method.clone(), &format!("{path}{i}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_route_shadows_a_share_of_matching_requests_to_the_canary() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let cp = ControlPlane::start(&rollout_yaml(&stable, &canary), &[]).await?;
    let node = "mirror";
    let proxy = Proxy::start_serving(&cp, node, ProxyOptions::default()).await?;
    cp.wait_synced(node, |_| true).await?;
    let before = canary.seen().len();

    // Matching, and two kinds of non-matching requests (another path; another method).
    let mut all = requests(Method::GET, "/api/item-", MATCHING);
    all.extend(requests(Method::GET, "/other/item-", OTHER));
    all.extend(requests(Method::POST, "/api/item-", OTHER));
    let responses = proxy.send(all).await?;
    // Weight 0 and no header: the filter chose stable for every request, and only stable answers.
    let counts = by_upstream(&responses)?;
    assert_eq!(
        counts.get(STABLE).copied(),
        Some((MATCHING + 2 * OTHER) as u64),
        "every response from stable: {counts:?}"
    );
    assert_eq!(counts.get(CANARY), None, "{counts:?}");

    // Shadows are sent beside the request, so the last ones may still be on their way: wait until
    // the count stops moving.
    let mut last = usize::MAX;
    let shadows: Vec<Seen> = eventually(
        "shadow count settles",
        Duration::from_secs(10),
        async || {
            let seen: Vec<Seen> = canary.seen()[before..].to_vec();
            let settled = seen.len() == last;
            last = seen.len();
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(settled.then_some(seen))
        },
    )
    .await?;
    for shadow in &shadows {
        assert!(
            shadow.is_shadow(),
            "a non-shadow request at the canary: {shadow:?}"
        );
        assert_eq!(shadow.host, format!("{HOST}-shadow"));
        assert!(
            shadow.method == "GET" && shadow.path.starts_with("/api/"),
            "a request that does not match was mirrored: {shadow:?}"
        );
    }
    check_binomial(
        "shadows of GET /api/* at 25 %",
        shadows.len() as u64,
        MATCHING as u64,
        0.25,
    )?;
    // Each shadow is a copy of a distinct matching request.
    let mut paths: Vec<&str> = shadows.iter().map(|s| s.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), shadows.len(), "a request mirrored twice");

    // A request the header route sends to the canary gets the canary's response.
    let routed: Vec<Req> = (0..200)
        .map(|i| {
            Req::get(HOST)
                .at(Method::POST, &format!("/api/routed-{i}"))
                .header("x-canary", "1")
        })
        .collect();
    let counts = by_upstream(&proxy.send(routed).await?)?;
    assert_eq!(counts.get(CANARY), Some(&200), "{counts:?}");
    Ok(())
}
