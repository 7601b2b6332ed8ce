//! A small "kubelet" (and ReplicaSet controller) for the in-memory API server
//! ([`crate::kube_api`]): for each ReplicaSet it creates or deletes Pods to match
//! `spec.replicas`, runs a real HTTP upstream on loopback for each pod ([`Upstream`], named after
//! the ReplicaSet, so a response says which version answered), marks the pod Ready with podIP
//! 127.0.0.1 and the upstream's port as its first container port, and keeps the ReplicaSet's
//! `status` counts (`replicas`, `readyReplicas`, `availableReplicas`, `observedGeneration`).
//!
//! Pods are owned by their ReplicaSet (ownerReference), so deleting the ReplicaSet deletes them
//! (the server's garbage collection), and their upstreams stop.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::{
    Upstream,
    kube_api::{ApiServer, Key, Shared},
};

const REPLICA_SETS: &str = "apps/v1/replicasets";
const PODS: &str = "/v1/pods";

/// The running kubelet. Stops (and stops its upstreams) when dropped.
#[derive(Debug)]
pub struct Kubelet {
    upstreams: Arc<Mutex<BTreeMap<Key, Upstream>>>,
    task: JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Kubelet {
    pub fn start(server: &ApiServer) -> Self {
        let upstreams = Arc::new(Mutex::new(BTreeMap::new()));
        let task = tokio::spawn(run(Arc::clone(server.shared()), Arc::clone(&upstreams)));
        Kubelet { upstreams, task }
    }

    /// Requests served by the pods of each ReplicaSet that still run (by ReplicaSet name).
    pub fn requests(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for upstream in self.lock().values() {
            *out.entry(upstream.name().to_owned()).or_insert(0) += upstream.requests();
        }
        out
    }

    /// The number of pods with a running upstream.
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Upstream>> {
        self.upstreams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn run(shared: Arc<Shared>, upstreams: Arc<Mutex<BTreeMap<Key, Upstream>>>) {
    let mut seen = 0;
    let mut next_pod = 0u64;
    loop {
        if let Err(error) = sync(&shared, &upstreams, &mut next_pod).await {
            tracing::warn!(%error, "kubelet sync");
        }
        seen = tokio::select! {
            rv = shared.changed_after(seen) => rv,
            () = tokio::time::sleep(Duration::from_millis(500)) => seen,
        };
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn owned_by(pod: &Value, uid: &str) -> bool {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}

async fn sync(
    shared: &Arc<Shared>,
    upstreams: &Arc<Mutex<BTreeMap<Key, Upstream>>>,
    next_pod: &mut u64,
) -> anyhow::Result<()> {
    let (replica_sets, pods) = {
        let store = shared.store();
        (store.list(REPLICA_SETS, None), store.list(PODS, None))
    };
    for rs in &replica_sets {
        let ns = str_at(rs, "/metadata/namespace");
        let name = str_at(rs, "/metadata/name");
        let uid = str_at(rs, "/metadata/uid");
        let desired = usize::try_from(
            rs.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .max(0),
        )
        .unwrap_or(0);
        let mut mine: Vec<&Value> = pods
            .iter()
            .filter(|p| str_at(p, "/metadata/namespace") == ns && owned_by(p, uid))
            .collect();
        mine.sort_by_key(|p| str_at(p, "/metadata/name").to_owned());
        let mut count = mine.len();
        while count < desired {
            *next_pod += 1;
            let pod_name = format!("{name}-{next_pod}");
            let upstream = Upstream::start(name).await?;
            let pod = pod_for(rs, &pod_name, upstream.addr().port());
            let key = Key::new(PODS, ns, &pod_name);
            shared
                .write(|s| s.create(&key, pod))
                .map_err(|e| anyhow::anyhow!("creating pod {pod_name}: {}", e.message))?;
            lock(upstreams).insert(key, upstream);
            count += 1;
        }
        for extra in mine.iter().skip(desired) {
            let key = Key::new(PODS, ns, str_at(extra, "/metadata/name"));
            let _ = shared.write(|s| s.delete(&key));
            lock(upstreams).remove(&key);
        }
        let count = i64::try_from(count.min(desired)).unwrap_or(i64::MAX);
        let status = json!({"status": {
            "replicas": count, "fullyLabeledReplicas": count, "readyReplicas": count,
            "availableReplicas": count,
            "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        }});
        if rs.get("status") != status.get("status") {
            let key = Key::new(REPLICA_SETS, ns, name);
            let body = status.to_string();
            let _ = shared
                .write(|s| s.patch(&key, "application/merge-patch+json", body.as_bytes(), true));
        }
    }
    // Pods whose ReplicaSet went (garbage-collected): stop their upstreams.
    let store = shared.store();
    lock(upstreams).retain(|key, _| store.get(key).is_some());
    Ok(())
}

fn lock(
    upstreams: &Arc<Mutex<BTreeMap<Key, Upstream>>>,
) -> std::sync::MutexGuard<'_, BTreeMap<Key, Upstream>> {
    upstreams
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A Ready pod of `rs` on 127.0.0.1:`port` (its first container port).
fn pod_for(rs: &Value, name: &str, port: u16) -> Value {
    let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    if !spec.get("containers").is_some_and(Value::is_array) {
        spec["containers"] = json!([{"name": "app"}]);
    }
    if let Some(first) = spec
        .get_mut("containers")
        .and_then(Value::as_array_mut)
        .and_then(|c| c.first_mut())
    {
        match first
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .and_then(|p| p.first_mut())
        {
            Some(p) => p["containerPort"] = json!(port),
            None => first["ports"] = json!([{"name": "http", "containerPort": port}]),
        }
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": str_at(rs, "/metadata/namespace"),
            "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": str_at(rs, "/metadata/name"),
                "uid": str_at(rs, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
        "status": {
            "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "conditions": [{"type": "Ready", "status": "True"},
                           {"type": "ContainersReady", "status": "True"}],
        },
    })
}
