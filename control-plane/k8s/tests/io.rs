//! The Kubernetes I/O against a `tower-test` mock API server: scripted list/watch responses,
//! the Lease requests of leader election, and the status patches only the leader sends.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use sluice_k8s::{
    Config, LeaseConfig, RolloutApi, RolloutRef, SourceError, TrafficState,
    lease::{elect, try_hold},
    watch::{status_patch, write_status},
};
use tokio::sync::{mpsc, watch};
use tower_test::mock::{Handle, SendResponse};

/// One request the mock API server received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
}

type Route = Box<dyn FnMut(&Seen) -> Option<(u16, Value)> + Send>;

/// Serves requests with `route`: `Some((code, body))` answers, `None` leaves the request pending
/// (an open watch that never delivers). Every request is logged in order.
fn apiserver(
    route: Route,
) -> (
    kube::Client,
    Arc<Mutex<Vec<Seen>>>,
    tokio::task::JoinHandle<()>,
) {
    apiserver_with_delays(route, Box::new(|_| Duration::ZERO))
}

/// How long to hold an answer back (a slow list).
type Delay = Box<dyn Fn(&Seen) -> Duration + Send>;

/// [`apiserver`], with answers held back by `delay`. A held-back answer is logged as method
/// `ANSWERED` (with the request's path) when it is finally sent.
fn apiserver_with_delays(
    mut route: Route,
    delay: Delay,
) -> (
    kube::Client,
    Arc<Mutex<Vec<Seen>>>,
    tokio::task::JoinHandle<()>,
) {
    let (service, mut handle): (_, Handle<Request<Body>, Response<Body>>) =
        tower_test::mock::pair();
    let log = Arc::new(Mutex::new(Vec::new()));
    let task_log = log.clone();
    let task = tokio::spawn(async move {
        let mut pending: Vec<SendResponse<Response<Body>>> = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let seen = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            task_log.lock().expect("log").push(seen.clone());
            match route(&seen) {
                Some((code, body)) => {
                    let response = Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&body).expect("json")))
                        .expect("response");
                    let wait = delay(&seen);
                    if wait.is_zero() {
                        send.send_response(response);
                    } else {
                        let log = task_log.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(wait).await;
                            log.lock().expect("log").push(Seen {
                                method: "ANSWERED".into(),
                                ..seen
                            });
                            send.send_response(response);
                        });
                    }
                }
                None => pending.push(send),
            }
        }
    });
    (kube::Client::new(service, "default"), log, task)
}

fn not_found(name: &str) -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                 "message": format!("leases \"{name}\" not found"), "code": 404}),
    )
}

fn conflict() -> (u16, Value) {
    (
        409,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
                 "message": "the object has been modified", "code": 409}),
    )
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> (u16, Value) {
    (
        200,
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "10"}, "items": items}),
    )
}

fn lease_config(identity: &str) -> LeaseConfig {
    let mut config = LeaseConfig::new("sluice-system", identity);
    config.renew_every = Duration::from_millis(50);
    config
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/sluice-system/leases";

/// A Lease store behind the mock: GET / POST / PUT with resourceVersion checks, and `fail_put`
/// answers PUTs with 409 (another replica wrote first).
fn lease_route(
    stored: Arc<Mutex<Option<Value>>>,
    fail_put: Arc<Mutex<bool>>,
) -> impl FnMut(&Seen) -> Option<(u16, Value)> {
    move |seen| {
        let mut stored = stored.lock().expect("lease");
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", p) if p == format!("{LEASES}/sluice-leader") => Some(
                stored
                    .clone()
                    .map_or_else(|| not_found("sluice-leader"), |l| (200, l)),
            ),
            ("POST", LEASES) if stored.is_some() => Some(conflict()),
            ("POST", LEASES) => {
                let mut lease = seen.body.clone();
                lease["metadata"]["resourceVersion"] = json!("1");
                *stored = Some(lease.clone());
                Some((201, lease))
            }
            ("PUT", p) if p == format!("{LEASES}/sluice-leader") => {
                if *fail_put.lock().expect("flag") {
                    return Some(conflict());
                }
                let mut lease = seen.body.clone();
                let rv: u64 = lease["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0);
                lease["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
                *stored = Some(lease.clone());
                Some((200, lease))
            }
            _ => None,
        }
    }
}

#[tokio::test]
async fn the_lease_is_created_renewed_and_lost_on_conflict() {
    let stored = Arc::new(Mutex::new(None));
    let fail_put = Arc::new(Mutex::new(false));
    let (client, log, _server) = apiserver(Box::new(lease_route(stored.clone(), fail_put.clone())));
    let api = kube::Api::namespaced(client, "sluice-system");
    let config = lease_config("pod-a");

    assert!(try_hold(&api, &config).await.expect("create"));
    assert!(try_hold(&api, &config).await.expect("renew"));
    {
        let log = log.lock().expect("log");
        let methods: Vec<&str> = log.iter().map(|s| s.method.as_str()).collect();
        assert_eq!(methods, ["GET", "POST", "GET", "PUT"]);
        assert_eq!(log[1].body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(log[1].body["spec"]["leaseDurationSeconds"], 10);
        assert_eq!(
            log[3].body["metadata"]["resourceVersion"], "1",
            "renewal is resourceVersion-checked"
        );
    }
    *fail_put.lock().expect("flag") = true;
    assert!(
        !try_hold(&api, &config)
            .await
            .expect("a conflict is an answer, not an error")
    );
    // Another replica, while pod-a's lease is live: follows without writing.
    let before = log.lock().expect("log").len();
    assert!(
        !try_hold(&api, &lease_config("pod-b"))
            .await
            .expect("follow")
    );
    let after: Vec<String> = log.lock().expect("log")[before..]
        .iter()
        .map(|s| s.method.clone())
        .collect();
    assert_eq!(after, ["GET"]);
}

#[tokio::test]
async fn elect_publishes_leadership_and_drops_it_at_once_on_conflict() {
    let stored = Arc::new(Mutex::new(None));
    let fail_put = Arc::new(Mutex::new(false));
    let (client, _log, _server) = apiserver(Box::new(lease_route(stored, fail_put.clone())));
    let api = kube::Api::namespaced(client, "sluice-system");
    let (tx, mut rx) = watch::channel(false);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let elector = tokio::spawn(elect(api, lease_config("pod-a"), tx, async {
        let _ = stopped.await;
    }));
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|leader| *leader))
        .await
        .expect("leads")
        .expect("open");
    *fail_put.lock().expect("flag") = true;
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|leader| !*leader))
        .await
        .expect("steps down")
        .expect("open");
    stop.send(()).expect("elector running");
    tokio::time::timeout(Duration::from_secs(30), elector)
        .await
        .expect("stops")
        .expect("no panic");
}

fn demo_rollout(status: Option<Value>) -> Value {
    let mut rollout = json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "demo", "namespace": "prod", "generation": 1, "resourceVersion": "5", "uid": "u-1"},
        "spec": {
            "selector": {"matchLabels": {"app": "demo"}},
            "strategy": {"canary": {"stableService": "demo", "steps": [{"setWeight": 25}, {"pause": {}}]}}
        }
    });
    if let Some(status) = status {
        rollout["status"] = status;
    }
    rollout
}

fn demo_pod(name: &str, hash: &str, ip: &str, created: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "prod", "creationTimestamp": created,
                     "labels": {"app": "demo", "rollouts-pod-template-hash": hash}},
        "spec": {"containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn demo_service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "demo", "namespace": "prod"},
           "spec": {"ports": [{"port": 80, "targetPort": "http"}]}})
}

const ROLLOUTS: &str = "/apis/sluice.dev/v1alpha1/rollouts";
const STATUS: &str = "/apis/sluice.dev/v1alpha1/namespaces/prod/rollouts/demo/status";

/// The cluster: the demo rollout (with `status`), pods, the service, and the lease store.
fn cluster_route(
    status: Option<Value>,
    pods: Vec<Value>,
    lease: impl FnMut(&Seen) -> Option<(u16, Value)> + Send + 'static,
) -> Route {
    let mut rollout = demo_rollout(status);
    let mut lease = lease;
    Box::new(move |seen| {
        if seen.query.contains("watch=true") {
            return None;
        }
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", ROLLOUTS) => Some(list(
                "RolloutList",
                "sluice.dev/v1alpha1",
                vec![rollout.clone()],
            )),
            ("GET", "/api/v1/pods") => Some(list("PodList", "v1", pods.clone())),
            ("GET", "/api/v1/services") => Some(list("ServiceList", "v1", vec![demo_service()])),
            // The release engine's watches (this rollout has no template: none of its own).
            ("GET", "/apis/apps/v1/replicasets") => Some(list("ReplicaSetList", "apps/v1", vec![])),
            ("GET", "/apis/apps/v1/deployments") => Some(list("DeploymentList", "apps/v1", vec![])),
            ("GET", "/apis/sluice.dev/v1alpha1/analysisruns") => {
                Some(list("AnalysisRunList", "sluice.dev/v1alpha1", vec![]))
            }
            ("GET", "/apis/coordination.k8s.io/v1/namespaces/sluice-system/leases") => {
                Some(list("LeaseList", "coordination.k8s.io/v1", vec![]))
            }
            ("PATCH", STATUS) => {
                // A merge patch of the status.
                let status = rollout.get("status").cloned().unwrap_or(json!({}));
                let mut merged = status.as_object().cloned().unwrap_or_default();
                for (k, v) in seen.body["status"].as_object().cloned().unwrap_or_default() {
                    if v.is_null() {
                        merged.remove(&k);
                    } else {
                        merged.insert(k, v);
                    }
                }
                rollout["status"] = Value::Object(merged);
                Some((200, rollout.clone()))
            }
            _ => lease(seen),
        }
    })
}

fn config(lease: LeaseConfig) -> Config {
    Config {
        lease: Some(lease),
        resync: Duration::from_millis(50),
        ..Config::default()
    }
}

#[tokio::test]
async fn the_leader_runs_the_steps_writes_status_and_the_state_follows() {
    let stored = Arc::new(Mutex::new(None));
    let pods = vec![
        demo_pod("a-1", "aaa", "10.0.0.1", "2024-01-01T00:00:00Z"),
        demo_pod("b-1", "bbb", "10.0.0.2", "2024-01-02T00:00:00Z"),
    ];
    let route = cluster_route(None, pods, lease_route(stored, Arc::new(Mutex::new(false))));
    let (client, log, _server) = apiserver(route);
    let (tx, mut rx) = watch::channel(TrafficState::default());
    let (errors_tx, _errors_rx) = mpsc::channel::<SourceError>(16);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(sluice_k8s::run(
        client,
        config(lease_config("pod-a")),
        tx,
        errors_tx,
        async {
            let _ = stopped.await;
        },
    ));

    let served = |state: &TrafficState| {
        state
            .rollouts
            .get("prod/demo")
            .is_some_and(|r| r.canary_hash.as_deref() == Some("bbb"))
    };
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(served))
        .await
        .expect("served")
        .expect("open");
    let state = rx.borrow().clone();
    let rollout = &state.rollouts["prod/demo"];
    assert_eq!(rollout.stable_hash, "aaa");
    assert_eq!(rollout.canary_weight_bp, 2500);
    assert_eq!(
        rollout.versions["bbb"].endpoints,
        vec!["10.0.0.2:8080".parse().expect("addr")]
    );
    assert!(
        rollout
            .hosts
            .contains(&"demo.prod.svc.cluster.local".to_owned())
    );

    stop.send(()).expect("running");
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("stops")
        .expect("no panic")
        .expect("ok");

    let log = log.lock().expect("log");
    let first_lease_write = log
        .iter()
        .position(|s| s.method == "POST" && s.path == LEASES)
        .expect("lease created");
    let patches: Vec<&Seen> = log.iter().filter(|s| s.method == "PATCH").collect();
    let first_patch = log
        .iter()
        .position(|s| s.method == "PATCH")
        .expect("status written");
    assert!(
        first_lease_write < first_patch,
        "no status write before holding the lease"
    );
    assert_eq!(patches[0].path, STATUS);
    // First the only... here two versions at once: the oldest is stable, the newest the canary
    // held at the indefinite pause after setWeight 25.
    let status = &patches.last().expect("a patch").body["status"];
    assert_eq!(status["stableRS"], "aaa");
    assert_eq!(status["currentPodHash"], "bbb");
    assert_eq!(status["currentStepIndex"], 1);
    assert_eq!(status["phase"], "Paused");
    assert_eq!(status["canary"]["weights"]["canary"]["weight"], 25);
    assert_eq!(
        patches.len(),
        1,
        "a status observed as written is not written again"
    );
}

#[tokio::test]
async fn a_follower_serves_but_never_writes_status() {
    // Another replica holds the lease and keeps renewing it.
    let other = Arc::new(Mutex::new(Some(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "sluice-leader", "namespace": "sluice-system", "resourceVersion": "7"},
        "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 3600,
                 "renewTime": k8s_openapi::jiff::Timestamp::now().to_string()}
    }))));
    let status = json!({"stableRS": "aaa", "currentPodHash": "bbb", "currentStepIndex": 0});
    let pods = vec![
        demo_pod("a-1", "aaa", "10.0.0.1", "2024-01-01T00:00:00Z"),
        demo_pod("b-1", "bbb", "10.0.0.2", "2024-01-02T00:00:00Z"),
    ];
    let route = cluster_route(
        Some(status),
        pods,
        lease_route(other, Arc::new(Mutex::new(false))),
    );
    let (client, log, _server) = apiserver(route);
    let (tx, mut rx) = watch::channel(TrafficState::default());
    let (errors_tx, _errors_rx) = mpsc::channel::<SourceError>(16);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(sluice_k8s::run(
        client,
        config(lease_config("pod-a")),
        tx,
        errors_tx,
        async {
            let _ = stopped.await;
        },
    ));
    tokio::time::timeout(
        Duration::from_secs(30),
        rx.wait_for(|s| s.rollouts.contains_key("prod/demo")),
    )
    .await
    .expect("served")
    .expect("open");
    assert_eq!(rx.borrow().rollouts["prod/demo"].canary_weight_bp, 2500);
    // Several election rounds (and engine ticks) pass.
    tokio::time::timeout(Duration::from_secs(30), async {
        while log
            .lock()
            .expect("log")
            .iter()
            .filter(|s| s.path.starts_with(LEASES))
            .count()
            < 5
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("election rounds");
    stop.send(()).expect("running");
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("stops")
        .expect("no panic")
        .expect("ok");
    let log = log.lock().expect("log");
    assert!(
        log.iter().all(|s| s.method == "GET"),
        "a follower only reads: {log:?}"
    );
}

#[tokio::test]
async fn status_writes_check_leadership_right_before_writing() {
    let (client, log, _server) = apiserver(Box::new(|seen: &Seen| {
        (seen.method == "PATCH").then(|| (200, demo_rollout(Some(seen.body["status"].clone()))))
    }));
    let object = RolloutRef::new(RolloutApi::Sluice, "prod", "demo");
    let old =
        serde_json::from_value(json!({"phase": "Paused", "message": "paused", "stableRS": "aaa"}))
            .expect("status");
    let new =
        serde_json::from_value(json!({"phase": "Healthy", "stableRS": "bbb"})).expect("status");
    let (leader, is_leader) = watch::channel(false);
    assert!(
        write_status(&client, &is_leader, &object, Some("7"), &old, &new)
            .await
            .expect("no error")
            .is_none()
    );
    assert!(
        log.lock().expect("log").is_empty(),
        "no request when not the leader"
    );

    leader.send_replace(true);
    let written = write_status(&client, &is_leader, &object, Some("7"), &old, &new)
        .await
        .expect("written");
    assert_eq!(
        written
            .expect("updated")
            .status
            .expect("status")
            .stable_rs
            .as_deref(),
        Some("bbb")
    );
    let log = log.lock().expect("log");
    assert_eq!(log[0].path, STATUS);
    assert_eq!(
        log[0].body,
        json!({"metadata": {"resourceVersion": "7"},
               "status": {"phase": "Healthy", "stableRS": "bbb", "message": null}})
    );
    assert_eq!(log[0].body, status_patch(Some("7"), &old, &new));
}

/// The source run against `route` (answers held back by `delay`) as the lease holder, with
/// every traffic state it publishes recorded with the time it was seen.
struct Source {
    log: Arc<Mutex<Vec<Seen>>>,
    published: Arc<Mutex<Vec<(std::time::Instant, TrafficState)>>>,
    stop: tokio::sync::oneshot::Sender<()>,
    run: tokio::task::JoinHandle<Result<(), sluice_k8s::K8sError>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Source {
    fn start(route: Route, delay: Delay) -> Self {
        let (client, log, server) = apiserver_with_delays(route, delay);
        let (tx, mut rx) = watch::channel(TrafficState::default());
        let (errors_tx, _errors_rx) = mpsc::channel::<SourceError>(16);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let published = Arc::new(Mutex::new(Vec::new()));
        let record = published.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let state = rx.borrow_and_update().clone();
                record
                    .lock()
                    .expect("published")
                    .push((std::time::Instant::now(), state));
            }
        });
        let run = tokio::spawn(sluice_k8s::run(
            client,
            config(lease_config("pod-a")),
            tx,
            errors_tx,
            async {
                let _ = stopped.await;
            },
        ));
        Source {
            log,
            published,
            stop,
            run,
            _server: server,
        }
    }

    /// Waits until `done` holds of the request log.
    async fn until(&self, what: &str, done: impl Fn(&[Seen]) -> bool) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while !done(&self.log.lock().expect("log")) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    /// Stops the source; returns the request log and the published states.
    async fn stop(self) -> (Vec<Seen>, Vec<(std::time::Instant, TrafficState)>) {
        self.stop.send(()).expect("running");
        tokio::time::timeout(Duration::from_secs(30), self.run)
            .await
            .expect("stops")
            .expect("no panic")
            .expect("ok");
        let log = self.log.lock().expect("log").clone();
        let published = self.published.lock().expect("published").clone();
        (log, published)
    }
}

fn slow(path: &'static str) -> Delay {
    Box::new(move |seen: &Seen| {
        if seen.method == "GET" && seen.path == path {
            Duration::from_millis(1500)
        } else {
            Duration::ZERO
        }
    })
}

fn lease_requests(log: &[Seen]) -> usize {
    log.iter().filter(|s| s.path.starts_with(LEASES)).count()
}

/// Rollouts listed, the Pods list 1.5 s late: the leader writes nothing and nothing is published
/// until the Pods list arrived (a partial view made the leader PATCH `phase: Degraded` +
/// `InvalidSpec` "stableRS is not a live version ([])" and correct it later).
#[tokio::test]
async fn nothing_is_published_or_written_before_a_late_pods_list() {
    let status = json!({"stableRS": "aaa", "currentPodHash": "aaa", "currentStepIndex": 2,
        "phase": "Healthy", "observedGeneration": "1",
        "canary": {"weights": {"canary": {"podTemplateHash": "aaa", "weight": 0},
                               "stable": {"podTemplateHash": "aaa", "weight": 100}}}});
    let pods = vec![demo_pod("a-1", "aaa", "10.0.0.1", "2024-01-01T00:00:00Z")];
    let stored = Arc::new(Mutex::new(None));
    let route = cluster_route(
        Some(status),
        pods,
        lease_route(stored, Arc::new(Mutex::new(false))),
    );
    let source = Source::start(route, slow("/api/v1/pods"));
    source
        .until("the Pods list", |log| {
            log.iter()
                .any(|s| s.method == "ANSWERED" && s.path == "/api/v1/pods")
        })
        .await;
    // Leader by now, and engine ticks (every 50 ms) after the list.
    let after = lease_requests(&source.log.lock().expect("log")) + 5;
    source
        .until("more election rounds", |log| lease_requests(log) >= after)
        .await;
    let (log, published) = source.stop().await;

    let answered = log
        .iter()
        .position(|s| s.method == "ANSWERED" && s.path == "/api/v1/pods")
        .expect("answered");
    assert!(
        log.iter()
            .take(answered)
            .all(|s| s.method == "GET" || s.path.starts_with(LEASES)),
        "nothing written before the Pods list: {:?}",
        log[..answered]
            .iter()
            .filter(|s| s.method != "GET" && !s.path.starts_with(LEASES))
            .collect::<Vec<_>>()
    );
    assert!(
        log.iter()
            .all(|s| s.method != "PATCH" && !s.path.contains("/events")),
        "a consistent status needs no write: {:?}",
        log.iter()
            .filter(|s| s.method == "PATCH")
            .collect::<Vec<_>>()
    );
    let first = published.first().expect("a state was published");
    assert_eq!(
        first.1.rollouts["prod/demo"].versions["aaa"].endpoints,
        vec!["10.0.0.1:8080".parse().expect("addr")],
        "the first state published is complete"
    );
}

/// Services listed 1.5 s late: endpoints are never published on the pod's first container port
/// (9090) instead of the Service's targetPort (`http`, 8080).
#[tokio::test]
async fn endpoints_are_never_published_before_a_late_services_list() {
    let mut pod = demo_pod("a-1", "aaa", "10.0.0.1", "2024-01-01T00:00:00Z");
    pod["spec"]["containers"][0]["ports"] = json!([
        {"name": "metrics", "containerPort": 9090},
        {"name": "http", "containerPort": 8080}
    ]);
    let stored = Arc::new(Mutex::new(None));
    let route = cluster_route(
        None,
        vec![pod],
        lease_route(stored, Arc::new(Mutex::new(false))),
    );
    let source = Source::start(route, slow("/api/v1/services"));
    source
        .until("the Services list", |log| {
            log.iter()
                .any(|s| s.method == "ANSWERED" && s.path == "/api/v1/services")
        })
        .await;
    tokio::time::timeout(Duration::from_secs(30), async {
        while source.published.lock().expect("published").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a state is published");
    let (_log, published) = source.stop().await;
    let endpoints: Vec<Vec<std::net::SocketAddr>> = published
        .iter()
        .filter_map(|(_, state)| state.rollouts.get("prod/demo"))
        .map(|r| r.versions["aaa"].endpoints.clone())
        .collect();
    assert!(!endpoints.is_empty(), "the rollout is served");
    assert!(
        endpoints.iter().all(|e| *e
            == ["10.0.0.1:8080"
                .parse::<std::net::SocketAddr>()
                .expect("addr")]),
        "only ever the Service's targetPort: {endpoints:?}"
    );
}

/// A Pods list without the canary's pods: the leader must not reset the canary in progress
/// (`currentPodHash` := stable, Healthy). Its traffic is derivation's business; the status holds.
#[tokio::test]
async fn a_pods_list_without_the_canary_pods_does_not_reset_the_canary() {
    let status = json!({"stableRS": "aaa", "currentPodHash": "bbb", "currentStepIndex": 1,
        "phase": "Paused", "observedGeneration": "1",
        "canary": {"weights": {"canary": {"podTemplateHash": "bbb", "weight": 25},
                               "stable": {"podTemplateHash": "aaa", "weight": 75}}}});
    let pods = vec![demo_pod("a-1", "aaa", "10.0.0.1", "2024-01-01T00:00:00Z")];
    let stored = Arc::new(Mutex::new(None));
    let route = cluster_route(
        Some(status),
        pods,
        lease_route(stored.clone(), Arc::new(Mutex::new(false))),
    );
    let source = Source::start(route, Box::new(|_| Duration::ZERO));
    // The lease is ours, then many engine ticks (50 ms) pass.
    source
        .until("the lease", |log| {
            log.iter().any(|s| s.method == "POST" && s.path == LEASES)
        })
        .await;
    source
        .until("election rounds", |log| lease_requests(log) >= 12)
        .await;
    let (log, _published) = source.stop().await;
    let patches: Vec<&Value> = log
        .iter()
        .filter(|s| s.method == "PATCH")
        .map(|s| &s.body["status"])
        .collect();
    assert!(
        patches.is_empty(),
        "the canary in progress is not rewritten: {patches:?}"
    );
}

/// The release engine's start-up guarantee: a Rollout with a template whose ReplicaSets list
/// arrives 1.5 s late. Run on the Rollouts list alone, the engine would see no version and create
/// v1's ReplicaSet again (and write a status for it); it must write nothing before the list, and
/// after it create nothing (v1's ReplicaSet exists).
#[tokio::test]
async fn the_release_engine_writes_nothing_before_a_late_replica_sets_list() {
    let mut rollout = demo_rollout(None);
    let template = json!({"metadata": {"labels": {"app": "demo"}},
                          "spec": {"containers": [{"name": "app", "image": "demo:v1"}]}});
    rollout["spec"]["template"] = template.clone();
    let hash = sluice_release::pod_template_hash(
        &serde_json::from_value(template.clone()).expect("template"),
        None,
    )
    .expect("hash");
    let replica_set = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("demo-{hash}"), "namespace": "prod", "uid": "rs-1",
                     "labels": {"app": "demo", "rollouts-pod-template-hash": hash},
                     "annotations": {"rollout.sluice.dev/revision": "1"},
                     "ownerReferences": [{"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
                                          "name": "demo", "uid": "u-1", "controller": true}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "demo", "rollouts-pod-template-hash": hash}},
                 "template": template},
        "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    });
    let pods = vec![demo_pod("a-1", &hash, "10.0.0.1", "2024-01-01T00:00:00Z")];
    let mut lease = lease_route(Arc::new(Mutex::new(None)), Arc::new(Mutex::new(false)));
    let route: Route = Box::new(move |seen| {
        if seen.query.contains("watch=true") {
            return None;
        }
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", ROLLOUTS) => Some(list(
                "RolloutList",
                "sluice.dev/v1alpha1",
                vec![rollout.clone()],
            )),
            ("GET", "/api/v1/pods") => Some(list("PodList", "v1", pods.clone())),
            ("GET", "/api/v1/services") => Some(list("ServiceList", "v1", vec![demo_service()])),
            ("GET", "/apis/apps/v1/replicasets") => {
                Some(list("ReplicaSetList", "apps/v1", vec![replica_set.clone()]))
            }
            ("GET", "/apis/apps/v1/deployments") => Some(list("DeploymentList", "apps/v1", vec![])),
            ("GET", "/apis/sluice.dev/v1alpha1/analysisruns") => {
                Some(list("AnalysisRunList", "sluice.dev/v1alpha1", vec![]))
            }
            ("GET", "/apis/coordination.k8s.io/v1/namespaces/sluice-system/leases") => {
                Some(list("LeaseList", "coordination.k8s.io/v1", vec![]))
            }
            ("PATCH", STATUS) => {
                let mut updated = rollout.clone();
                updated["status"] = seen.body["status"].clone();
                Some((200, updated))
            }
            ("POST", _) | ("PATCH", _) => Some((200, seen.body.clone())),
            _ => lease(seen),
        }
    });
    let source = Source::start(route, slow("/apis/apps/v1/replicasets"));
    source
        .until("the ReplicaSets list", |log| {
            log.iter()
                .any(|s| s.method == "ANSWERED" && s.path == "/apis/apps/v1/replicasets")
        })
        .await;
    source
        .until("the status written", |log| {
            log.iter().any(|s| s.method == "PATCH" && s.path == STATUS)
        })
        .await;
    let (log, _) = source.stop().await;
    let answered = log
        .iter()
        .position(|s| s.method == "ANSWERED" && s.path == "/apis/apps/v1/replicasets")
        .expect("answered");
    let early: Vec<&Seen> = log[..answered]
        .iter()
        .filter(|s| s.method != "GET" && !s.path.starts_with(LEASES))
        .collect();
    assert!(
        early.is_empty(),
        "written before the ReplicaSets list: {early:?}"
    );
    let created: Vec<&Seen> = log
        .iter()
        .filter(|s| s.method == "POST" && s.path.contains("replicasets"))
        .collect();
    assert!(created.is_empty(), "v1's ReplicaSet exists: {created:?}");
    let status = &log
        .iter()
        .rfind(|s| s.method == "PATCH" && s.path == STATUS)
        .expect("status")
        .body["status"];
    assert_eq!(status["stableRS"], hash.as_str());
}
