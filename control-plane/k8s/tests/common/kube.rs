//! The set-up the in-memory API server tests share (`release_io`, `experiment_io`,
//! `bluegreen_analysis_io`, `experiment_object_io`): a client of the server, the `demo` Rollout
//! and Service, a running `sluice_k8s::run` ([`Source`]) and a wait for an object's state.
// Each test crate uses its part.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_e2e::kube_api::{ApiServer, Key};
use sluice_k8s::{Config, SourceError, TrafficState};
use tokio::sync::{mpsc, watch};

pub const ROLLOUTS: &str = "sluice.dev/v1alpha1/rollouts";
pub const REPLICA_SETS: &str = "apps/v1/replicasets";
pub const ANALYSIS_RUNS: &str = "sluice.dev/v1alpha1/analysisruns";
pub const EXPERIMENTS: &str = "sluice.dev/v1alpha1/experiments";
/// How long a test waits for a state.
pub const WITHIN: Duration = Duration::from_secs(30);

pub fn client(server: &ApiServer) -> kube::Client {
    let config = kube::Config::new(server.url().parse().expect("url"));
    kube::Client::try_from(config).expect("client")
}

pub fn container(image: &str) -> Value {
    json!([{"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}])
}

pub fn demo_rollout(steps: Value) -> Value {
    json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "demo", "namespace": "prod"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {"metadata": {"labels": {"app": "demo"}},
                         "spec": {"containers": container("demo:v1")}},
            "strategy": {"canary": {"stableService": "demo", "scaleDownDelaySeconds": 1,
                                    "steps": steps}}
        }
    })
}

/// An AnalysisTemplate `ok` whose one metric asks `url` (the `web` provider) and succeeds when
/// the answer's `ok` is 1.
pub fn ok_template(url: &str) -> Value {
    json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "ok", "namespace": "prod"},
        "spec": {"metrics": [{
            "name": "ok", "successCondition": "result == 1",
            "provider": {"web": {"url": url, "jsonPath": "{$.ok}"}}
        }]}
    })
}

pub fn demo_service() -> Value {
    service("demo")
}

pub fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "prod"},
           "spec": {"ports": [{"port": 80, "targetPort": "http"}]}})
}

pub fn rollout_key() -> Key {
    Key::new(ROLLOUTS, "prod", "demo")
}

/// A running `sluice_k8s::run` against the server; stopped by `stop`.
pub struct Source {
    pub rx: watch::Receiver<TrafficState>,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<Result<(), sluice_k8s::K8sError>>,
}

pub fn start_source(server: &ApiServer) -> Source {
    let (tx, rx) = watch::channel(TrafficState::default());
    let (errors_tx, mut errors_rx) = mpsc::channel::<SourceError>(16);
    tokio::spawn(async move {
        while let Some(error) = errors_rx.recv().await {
            eprintln!("source error: {error}");
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sluice_k8s::run(
        client(server),
        Config::default(),
        tx,
        errors_tx,
        async {
            let _ = stopped.await;
        },
    ));
    Source { rx, stop, task }
}

impl Source {
    pub async fn until(
        &mut self,
        what: &str,
        done: impl Fn(&TrafficState) -> bool,
    ) -> TrafficState {
        let found = match tokio::time::timeout(WITHIN, self.rx.wait_for(|s| done(s))).await {
            Ok(Ok(state)) => Some(state.clone()),
            _ => None,
        };
        match found {
            Some(state) => state,
            None => panic!("timed out waiting for {what}: {:#?}", *self.rx.borrow()),
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WITHIN, self.task)
            .await
            .expect("stops")
            .expect("no panic")
            .expect("ok");
    }
}

pub async fn until_object(
    server: &ApiServer,
    key: &Key,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        if let Some(object) = server.get(key).filter(|o| done(o)) {
            return object;
        }
        assert!(
            start.elapsed() < WITHIN,
            "timed out waiting for {what}: {:#}",
            server.get(key).unwrap_or(Value::Null)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
