//! A stateful in-memory Kubernetes API server for tests: HTTP on 127.0.0.1 (a free port), enough
//! of the API for `kube::Client` (and so for Sluice's watches, its leader, `kubectl`-like patches
//! and the [`crate::kubelet`]).
//!
//! Resources are kept as JSON, for any group/version/resource the client names
//! (`/api/v1/namespaces/prod/pods`, `/apis/sluice.dev/v1alpha1/namespaces/prod/rollouts/demo/status`,
//! cluster-wide lists such as `/api/v1/pods`). What it does, as the real one:
//! - one resourceVersion counter; every write bumps it and is logged, and `?watch=true` streams the
//!   log from the given `resourceVersion` (newline-delimited `{"type", "object"}`), then follows;
//!   `labelSelector` (`k`, `!k`, `k=v`, `k!=v`, comma-AND-ed) filters lists and watches;
//! - cluster-scoped resources (`clusteranalysistemplates`, `namespaces`, ...) live without a
//!   namespace, at paths without one;
//! - create (POST, 409 `AlreadyExists`), get, list, replace (PUT, 409 `Conflict` on a stale
//!   `metadata.resourceVersion`), patch, delete (cascading to objects whose ownerReferences name
//!   the deleted uid, as the garbage collector would);
//! - the pods' `eviction` subresource (POST): deletes the pod, as no PodDisruptionBudget refuses;
//! - injected faults for tests: status patches refused with 500 (`Store::fail_status_patches`);
//! - `metadata.uid`, `creationTimestamp`, `generation` (bumped when anything but metadata/status
//!   changes); the `status` subresource for rollouts, replicasets, deployments and pods: writes to
//!   the object keep its status, writes to `/status` change only the status.
//!
//! Simplifications (documented, deliberate): strategic-merge and server-side apply patches are
//! applied as JSON merge patches (RFC 7386; lists are replaced, not merged by key); JSON patch
//! (RFC 6902) supports `add`, `replace`, `remove` and `test`; no bookmarks, no field selectors
//! except `metadata.name=`, no admission, no validation against schemas; a watch ends after its
//! `timeoutSeconds`.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::Context as _;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Frame, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

type Body = BoxBody<Bytes, Infallible>;

/// Collections whose `status` is a subresource.
const STATUS_SUBRESOURCE: &[&str] = &[
    "rollouts",
    "replicasets",
    "deployments",
    "pods",
    "analysisruns",
    "experiments",
];

/// Cluster-scoped collections (their objects have no namespace; their paths none either).
const CLUSTER_SCOPED: &[&str] = &[
    "clusteranalysistemplates",
    "namespaces",
    "nodes",
    "customresourcedefinitions",
];

/// Whether `resource` (the last part of a collection) is cluster-scoped.
pub fn cluster_scoped(resource: &str) -> bool {
    CLUSTER_SCOPED.contains(&resource)
}

/// Where an object lives: `group/version/resource` (group empty for the core API), namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub collection: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    /// `Key::new("apps/v1/replicasets", "prod", "demo-abc")`, `Key::new("/v1/pods", ...)`.
    pub fn new(collection: &str, namespace: &str, name: &str) -> Self {
        Key {
            collection: collection.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// One logged write, for watches.
#[derive(Clone, Debug)]
struct Logged {
    rv: u64,
    key: Key,
    kind: &'static str,
    object: Value,
}

/// An error as the API server reports it (`Status` object).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError {
            code,
            reason,
            message,
        }
    }

    fn body(&self) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code})
    }
}

/// The objects, the write log and the resourceVersion counter.
#[derive(Debug, Default)]
pub struct Store {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    log: Vec<Logged>,
    /// Injected faults: status patches of a collection whose body contains a text, refused with
    /// 500 so many more times ([`Store::fail_status_patches`]).
    failing: Vec<(String, String, u32)>,
}

impl Store {
    /// The newest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// The objects of a collection (in `namespace`, or all namespaces), in key order.
    pub fn list(&self, collection: &str, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| {
                k.collection == collection && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn log(&mut self, key: &Key, kind: &'static str, object: &Value) {
        self.log.push(Logged {
            rv: self.rv,
            key: key.clone(),
            kind,
            object: object.clone(),
        });
    }

    /// Creates `object` at `key` (name and namespace from the key).
    pub fn create(&mut self, key: &Key, mut object: Value) -> Result<Value, ApiError> {
        if self.objects.contains_key(key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} {:?} already exists", key.collection, key.name),
            ));
        }
        if !object.is_object() {
            return Err(ApiError::new(400, "BadRequest", "not an object".into()));
        }
        self.rv += 1;
        self.uid += 1;
        let meta = metadata(&mut object);
        meta.insert("name".into(), json!(key.name));
        if !key.namespace.is_empty() {
            meta.insert("namespace".into(), json!(key.namespace));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(format!("uid-{}", self.uid)));
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        meta.insert("generation".into(), json!(1));
        meta.entry("creationTimestamp")
            .or_insert_with(|| json!(now_rfc3339()));
        fill_type(&mut object, &key.collection);
        self.log(key, "ADDED", &object);
        self.objects.insert(key.clone(), object.clone());
        Ok(object)
    }

    /// Replaces the object at `key` with `new` (PUT), or only its status (`status_only`).
    /// A `metadata.resourceVersion` in `new` must be the current one.
    pub fn replace(
        &mut self,
        key: &Key,
        mut new: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let Some(old) = self.objects.get(key).cloned() else {
            return Err(not_found(key));
        };
        let expected = new
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let current = old
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if expected
            .as_deref()
            .is_some_and(|e| !e.is_empty() && e != current)
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} {:?}: the object has been modified; please apply your changes to the latest version and try again",
                    key.collection, key.name
                ),
            ));
        }
        if !new.is_object() {
            return Err(ApiError::new(400, "BadRequest", "not an object".into()));
        }
        let resource = key.collection.rsplit('/').next().unwrap_or_default();
        let has_status = STATUS_SUBRESOURCE.contains(&resource);
        if status_only {
            let status = new.get("status").cloned();
            new = old.clone();
            match status {
                Some(status) => new["status"] = status,
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            }
        } else if has_status {
            match old.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            }
        }
        // Identity and bookkeeping stay the server's.
        let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let bump = spec_of(&old) != spec_of(&new);
        let meta = metadata(&mut new);
        for field in ["uid", "creationTimestamp", "name", "namespace"] {
            match old_meta.get(field) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        meta.insert(
            "generation".into(),
            json!(if bump { generation + 1 } else { generation }),
        );
        if new == old {
            return Ok(old);
        }
        self.rv += 1;
        metadata(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
        fill_type(&mut new, &key.collection);
        self.log(key, "MODIFIED", &new);
        self.objects.insert(key.clone(), new.clone());
        Ok(new)
    }

    /// A fault for tests: the next `times` status patches to `collection` whose body contains
    /// `needle` fail with 500 InternalError (a write lost on the way), changing nothing.
    pub fn fail_status_patches(&mut self, collection: &str, needle: &str, times: u32) {
        self.failing
            .push((collection.to_owned(), needle.to_owned(), times));
    }

    /// How many injected faults have not fired yet.
    pub fn pending_faults(&self) -> u32 {
        self.failing.iter().map(|f| f.2).sum()
    }

    /// Applies a patch of `content_type` to the object at `key` (or its status).
    pub fn patch(
        &mut self,
        key: &Key,
        content_type: &str,
        body: &[u8],
        status_only: bool,
    ) -> Result<Value, ApiError> {
        if status_only {
            let text = String::from_utf8_lossy(body);
            if let Some(fault) = self.failing.iter_mut().find(|(collection, needle, times)| {
                *times > 0 && *collection == key.collection && text.contains(needle.as_str())
            }) {
                fault.2 -= 1;
                return Err(ApiError::new(
                    500,
                    "InternalError",
                    format!("injected fault: status patch of {:?} lost", key.name),
                ));
            }
        }
        let bad = |e: String| ApiError::new(400, "BadRequest", e);
        let apply = content_type.starts_with("application/apply-patch");
        let patch: Value = if apply {
            serde_yaml::from_slice(body).map_err(|e| bad(e.to_string()))?
        } else {
            serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?
        };
        let Some(old) = self.objects.get(key).cloned() else {
            if apply && !status_only {
                return self.create(key, patch);
            }
            return Err(not_found(key));
        };
        let mut new = old.clone();
        if content_type.starts_with("application/json-patch+json") {
            json_patch(&mut new, &patch).map_err(bad)?;
        } else if content_type.starts_with("application/merge-patch+json")
            || content_type.starts_with("application/strategic-merge-patch+json")
            || apply
        {
            merge_patch(&mut new, &patch);
        } else {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("patch content type {content_type:?}"),
            ));
        }
        // A precondition only if the patch names a resourceVersion.
        if patch.pointer("/metadata/resourceVersion").is_none()
            && let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("resourceVersion");
        }
        self.replace(key, new, status_only)
    }

    /// Deletes the object and (as the garbage collector would) every object it owns.
    pub fn delete(&mut self, key: &Key) -> Result<Value, ApiError> {
        let Some(object) = self.objects.remove(key) else {
            return Err(not_found(key));
        };
        self.rv += 1;
        self.log(key, "DELETED", &object);
        let uid = object.pointer("/metadata/uid").cloned();
        let owned: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| refs.iter().any(|r| r.get("uid") == uid.as_ref()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in owned {
            let _ = self.delete(&key);
        }
        Ok(object)
    }

    fn events_after(&self, rv: u64, filter: &Filter) -> Vec<Logged> {
        // The log is in rv order.
        let start = self.log.partition_point(|l| l.rv <= rv);
        self.log[start..]
            .iter()
            .filter(|l| filter.matches(&l.key, &l.object))
            .cloned()
            .collect()
    }
}

fn not_found(key: &Key) -> ApiError {
    let resource = key.collection.rsplit('/').next().unwrap_or_default();
    ApiError::new(
        404,
        "NotFound",
        format!("{resource} {:?} not found", key.name),
    )
}

fn spec_of(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(o) = copy.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    copy
}

fn metadata(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(meta) => meta,
        None => unreachable!("metadata was just made an object"),
    }
}

/// The kind of an object of `resource` (the ones Sluice and its tests use).
fn kind_of(resource: &str) -> String {
    match resource {
        "rollouts" => "Rollout",
        "replicasets" => "ReplicaSet",
        "deployments" => "Deployment",
        "pods" => "Pod",
        "services" => "Service",
        "leases" => "Lease",
        "events" => "Event",
        "endpoints" => "Endpoints",
        "endpointslices" => "EndpointSlice",
        "analysisruns" => "AnalysisRun",
        "experiments" => "Experiment",
        "analysistemplates" => "AnalysisTemplate",
        "clusteranalysistemplates" => "ClusterAnalysisTemplate",
        other => other.trim_end_matches('s'),
    }
    .to_owned()
}

fn api_version_of(collection: &str) -> String {
    let mut parts = collection.rsplitn(3, '/');
    let _resource = parts.next();
    let version = parts.next().unwrap_or("v1");
    match parts.next() {
        Some(group) if !group.is_empty() => format!("{group}/{version}"),
        _ => version.to_owned(),
    }
}

fn fill_type(object: &mut Value, collection: &str) {
    let resource = collection.rsplit('/').next().unwrap_or_default();
    object["apiVersion"] = json!(api_version_of(collection));
    object["kind"] = json!(kind_of(resource));
}

fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs())
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
pub fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(fields) = target {
        for (key, value) in patch {
            if value.is_null() {
                fields.remove(key);
            } else {
                merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// RFC 6902 JSON patch: `add`, `replace`, `remove`, `test`.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch.as_array().ok_or("a JSON patch is an array")?;
    for op in ops {
        let path = op.get("path").and_then(Value::as_str).ok_or("op.path")?;
        let (parent, last) = path.rsplit_once('/').ok_or("op.path is a JSON pointer")?;
        let last = last.replace("~1", "/").replace("~0", "~");
        match op.get("op").and_then(Value::as_str) {
            Some("test") => {
                if target.pointer(path) != op.get("value") {
                    return Err(format!("test failed at {path}"));
                }
            }
            Some(kind @ ("add" | "replace")) => {
                let value = op.get("value").cloned().ok_or("op.value")?;
                match target.pointer_mut(parent) {
                    Some(Value::Object(o)) => {
                        if kind == "replace" && !o.contains_key(&last) {
                            return Err(format!("{path} does not exist"));
                        }
                        o.insert(last, value);
                    }
                    Some(Value::Array(a)) if last == "-" => a.push(value),
                    Some(Value::Array(a)) => {
                        let i: usize = last.parse().map_err(|_| format!("{path}: index"))?;
                        if i > a.len() || (kind == "replace" && i >= a.len()) {
                            return Err(format!("{path}: index out of range"));
                        }
                        if kind == "replace" {
                            a[i] = value;
                        } else {
                            a.insert(i, value);
                        }
                    }
                    _ => return Err(format!("{parent} does not exist")),
                }
            }
            Some("remove") => match target.pointer_mut(parent) {
                Some(Value::Object(o)) => {
                    if o.remove(&last).is_none() {
                        return Err(format!("{path} does not exist"));
                    }
                }
                Some(Value::Array(a)) => {
                    let i: usize = last.parse().map_err(|_| format!("{path}: index"))?;
                    if i >= a.len() {
                        return Err(format!("{path}: index out of range"));
                    }
                    a.remove(i);
                }
                _ => return Err(format!("{path} does not exist")),
            },
            other => return Err(format!("unsupported op {other:?}")),
        }
    }
    Ok(())
}

/// Which objects a list or watch returns.
#[derive(Clone, Debug, Default)]
struct Filter {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    /// (key, op, value): op is `=`, `!=`, `exists`, `!exists`.
    labels: Vec<(String, &'static str, String)>,
}

impl Filter {
    fn matches(&self, key: &Key, object: &Value) -> bool {
        if key.collection != self.collection
            || self
                .namespace
                .as_ref()
                .is_some_and(|ns| *ns != key.namespace)
            || self.name.as_ref().is_some_and(|n| *n != key.name)
        {
            return false;
        }
        let labels = object.pointer("/metadata/labels");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.labels.iter().all(|(k, op, v)| match *op {
            "=" => label(k) == Some(v.as_str()),
            "!=" => label(k) != Some(v.as_str()),
            "exists" => label(k).is_some(),
            _ => label(k).is_none(),
        })
    }
}

fn parse_selector(selector: &str) -> Vec<(String, &'static str, String)> {
    selector
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                (k.trim().into(), "!=", v.trim().into())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k.trim().into(), "=", v.trim().into())
            } else if let Some(k) = term.strip_prefix('!') {
                (k.trim().into(), "!exists", String::new())
            } else {
                (term.into(), "exists", String::new())
            }
        })
        .collect()
}

/// The shared state: the store and a channel that carries the newest resourceVersion.
#[derive(Debug)]
pub struct Shared {
    store: Mutex<Store>,
    changed: watch::Sender<u64>,
}

impl Shared {
    /// Locks the store. Writes made through [`Shared::write`] wake watches; use that to write.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the store and wakes the watches.
    pub fn write<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let (out, rv) = {
            let mut store = self.store();
            let out = f(&mut store);
            (out, store.rv)
        };
        self.changed.send_replace(rv);
        out
    }

    /// Resolves when anything was written after `rv`; returns the newest resourceVersion.
    pub async fn changed_after(&self, rv: u64) -> u64 {
        let mut rx = self.changed.subscribe();
        match rx.wait_for(|v| *v > rv).await {
            Ok(v) => *v,
            Err(_) => rv,
        }
    }
}

/// The server. Stops when dropped.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiServer {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("API server: binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changed,
        });
        let task = tokio::spawn(serve(listener, Arc::clone(&shared)));
        Ok(ApiServer { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Writes a kubeconfig that points at this server (no credentials) and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters: [{{name: test, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: test, user: {{}}}}]\n\
             contexts: [{{name: test, context: {{cluster: test, user: test, namespace: default}}}}]\n",
            self.url()
        );
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Creates an object from its JSON (collection from `apiVersion` + `resource`).
    pub fn create(&self, resource: &str, object: Value) -> Result<Value, ApiError> {
        let key = key_of(resource, &object);
        self.shared.write(|s| s.create(&key, object))
    }

    /// A merge patch of the object at `key` (or of its status).
    pub fn merge_patch(&self, key: &Key, patch: &Value, status: bool) -> Result<Value, ApiError> {
        let body = patch.to_string();
        self.shared
            .write(|s| s.patch(key, "application/merge-patch+json", body.as_bytes(), status))
    }

    pub fn get(&self, key: &Key) -> Option<Value> {
        self.shared.store().get(key).cloned()
    }

    pub fn list(&self, collection: &str, namespace: Option<&str>) -> Vec<Value> {
        self.shared.store().list(collection, namespace)
    }
}

/// The key of `object` in `resource` (`apiVersion` gives group/version; a namespaced object
/// without a namespace is in `default`, a cluster-scoped one in none).
pub fn key_of(resource: &str, object: &Value) -> Key {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1");
    let collection = match api_version.split_once('/') {
        Some((group, version)) => format!("{group}/{version}/{resource}"),
        None => format!("/{api_version}/{resource}"),
    };
    let str_at = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
    Key::new(
        &collection,
        match str_at("/metadata/namespace") {
            // A cluster-scoped object has no namespace (a given one is ignored, as the real
            // server does).
            _ if cluster_scoped(resource) => "",
            "" => "default",
            ns => ns,
        },
        str_at("/metadata/name"),
    )
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(&shared, request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn full(status: u16, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(e: &ApiError) -> Response<Body> {
    full(e.code, &e.body())
}

/// A parsed request path.
struct Target {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
    /// `POST .../pods/NAME/eviction`: deletes the pod (no PodDisruptionBudgets here).
    eviction: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        rest => (None, rest),
    };
    let (resource, name, status, eviction) = match rest {
        [resource] => (*resource, None, false, false),
        [resource, name] => (*resource, Some((*name).to_owned()), false, false),
        [resource, name, "status"] => (*resource, Some((*name).to_owned()), true, false),
        ["pods", name, "eviction"] => ("pods", Some((*name).to_owned()), false, true),
        _ => return None,
    };
    Some(Target {
        collection: format!("{group}/{version}/{resource}"),
        namespace,
        name,
        status,
        eviction,
    })
}

fn query(request: &Request<Incoming>) -> BTreeMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let Some(target) = parse_path(request.uri().path()) else {
        return error(&ApiError::new(
            404,
            "NotFound",
            format!("no route {}", request.uri().path()),
        ));
    };
    let query = query(&request);
    let method = request.method().clone();
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(&ApiError::new(400, "BadRequest", e.to_string())),
    };
    let key = |name: &str| {
        Key::new(
            &target.collection,
            target.namespace.as_deref().unwrap_or(""),
            name,
        )
    };
    let result = match (&method, &target.name) {
        (&Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            return watch_response(shared, &target, &query);
        }
        (&Method::GET, None) => Ok(list_response(shared, &target, &query)),
        (&Method::GET, Some(name)) => shared
            .store()
            .get(&key(name))
            .cloned()
            .ok_or_else(|| not_found(&key(name))),
        (&Method::POST, None) => match serde_json::from_slice::<Value>(&body) {
            Ok(object) => {
                let name = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| {
                        object
                            .pointer("/metadata/generateName")
                            .and_then(Value::as_str)
                            .map(|p| format!("{p}{}", shared.store().rv + 1))
                    });
                match name {
                    Some(name) => shared.write(|s| s.create(&key(&name), object)),
                    None => Err(ApiError::new(
                        422,
                        "Invalid",
                        "metadata.name is required".into(),
                    )),
                }
            }
            Err(e) => Err(ApiError::new(400, "BadRequest", e.to_string())),
        },
        (&Method::POST, Some(name)) if target.eviction => shared
            .write(|s| s.delete(&key(name)))
            .map(|_| json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"})),
        (&Method::PUT, Some(name)) => match serde_json::from_slice::<Value>(&body) {
            Ok(object) => shared.write(|s| s.replace(&key(name), object, target.status)),
            Err(e) => Err(ApiError::new(400, "BadRequest", e.to_string())),
        },
        (&Method::PATCH, Some(name)) => {
            shared.write(|s| s.patch(&key(name), &content_type, &body, target.status))
        }
        (&Method::DELETE, Some(name)) => shared.write(|s| s.delete(&key(name))),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} {}", target.collection),
        )),
    };
    match result {
        Ok(object) => full(if method == Method::POST { 201 } else { 200 }, &object),
        Err(e) => error(&e),
    }
}

fn filter_of(target: &Target, query: &BTreeMap<String, String>) -> Filter {
    Filter {
        collection: target.collection.clone(),
        namespace: target.namespace.clone(),
        name: query
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
            .map(str::to_owned),
        labels: query
            .get("labelSelector")
            .map(|s| parse_selector(s))
            .unwrap_or_default(),
    }
}

fn list_response(shared: &Arc<Shared>, target: &Target, query: &BTreeMap<String, String>) -> Value {
    let filter = filter_of(target, query);
    let store = shared.store();
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|(k, v)| filter.matches(k, v))
        .map(|(_, v)| v.clone())
        .collect();
    let resource = target.collection.rsplit('/').next().unwrap_or_default();
    json!({
        "apiVersion": api_version_of(&target.collection),
        "kind": format!("{}List", kind_of(resource)),
        "metadata": {"resourceVersion": store.rv.to_string()},
        "items": items,
    })
}

fn watch_response(
    shared: &Arc<Shared>,
    target: &Target,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let filter = filter_of(target, query);
    let from: Option<u64> = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .filter(|rv| *rv > 0);
    let timeout = Duration::from_secs(
        query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(300),
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let send = |kind: &str, object: &Value| {
            let line = format!("{}\n", json!({"type": kind, "object": object}));
            Ok(Frame::data(Bytes::from(line)))
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rv = match from {
            Some(rv) => rv,
            None => {
                // No resourceVersion: the current objects as ADDED, then changes.
                let (objects, rv) = {
                    let store = shared.store();
                    let objects: Vec<Value> = store
                        .objects
                        .iter()
                        .filter(|(k, v)| filter.matches(k, v))
                        .map(|(_, v)| v.clone())
                        .collect();
                    (objects, store.rv)
                };
                for object in &objects {
                    if tx.send(send("ADDED", object)).await.is_err() {
                        return;
                    }
                }
                rv
            }
        };
        loop {
            let (events, newest) = {
                let store = shared.store();
                (store.events_after(rv, &filter), store.rv)
            };
            for event in events {
                if tx.send(send(event.kind, &event.object)).await.is_err() {
                    return;
                }
            }
            rv = rv.max(newest);
            tokio::select! {
                _ = shared.changed_after(rv) => {}
                () = tokio::time::sleep_until(deadline) => return,
                () = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
