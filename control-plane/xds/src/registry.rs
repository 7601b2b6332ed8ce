//! The registry of connected proxies: who is connected, what each was sent, ACKed and NACKed.
//!
//! The ADS server registers every stream and feeds it the [`Event`]s of the stream's protocol
//! state machine; the status API reads [`Registry::snapshot`], metrics read the counters, the
//! push-latency samples, or plug a [`Callbacks`] in. A clone is a handle on the same registry.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::protocol::Event;
use crate::scope::Scope;

/// How many push-latency samples are kept (the newest).
const LATENCY_SAMPLES: usize = 1024;

/// Identifies one registered stream.
pub type ConnectionId = u64;

/// One resource type on one connection (maps to `sluice.admin.v1.TypeStatus`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeStatus {
    pub type_url: String,
    pub sent_version: String,
    pub acked_version: String,
    /// Error detail of the last NACK; empty if none since the last ACK.
    pub last_nack: String,
    pub last_nack_version: String,
    pub nacks: u64,
}

/// One connected proxy (maps to `sluice.admin.v1.ProxyStatus`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyStatus {
    pub node_id: String,
    pub node_cluster: String,
    pub peer: String,
    pub delta: bool,
    pub connected_at: SystemTime,
    /// In type URL order.
    pub types: Vec<TypeStatus>,
    /// The rollouts it receives (node metadata `sluice.scope`); `None`: every rollout.
    pub scope: Option<Scope>,
}

impl ProxyStatus {
    pub fn connected_unix_ms(&self) -> u64 {
        self.connected_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Totals since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub connections: u64,
    pub pushes: u64,
    pub acks: u64,
    pub nacks: u64,
    pub unknown_types: u64,
    /// Encoded size of the responses sent (gRPC framing excluded).
    pub bytes_sent: u64,
    /// Resources in the responses sent.
    pub resources_sent: u64,
}

/// Hooks for metrics. They run while the registry's lock is held, so keep them short (increment
/// a counter, observe a histogram) and do not call back into the registry.
pub trait Callbacks: Send + Sync {
    fn on_push(&self, _type_url: &str) {}
    fn on_nack(&self, _type_url: &str, _error_detail: &str) {}
    /// A response of `bytes` (encoded) carrying `resources` resources was sent.
    fn on_sent(&self, _type_url: &str, _bytes: usize, _resources: usize) {}
    /// Time from a snapshot reaching a connection to the answer of its last response.
    fn on_ack_latency(&self, _latency: Duration) {}
    /// A stream's task panicked (the stream is closed; the client reconnects).
    fn on_stream_panic(&self) {}
}

/// The callbacks used when none are given.
#[derive(Debug)]
struct NoCallbacks;
impl Callbacks for NoCallbacks {}

#[derive(Debug, Default)]
struct Inner {
    next_id: ConnectionId,
    proxies: BTreeMap<ConnectionId, Proxy>,
    counters: Counters,
    latencies: VecDeque<Duration>,
}

#[derive(Debug)]
struct Proxy {
    node_id: String,
    node_cluster: String,
    peer: String,
    delta: bool,
    connected_at: SystemTime,
    types: BTreeMap<String, TypeStatus>,
    scope: Option<Scope>,
}

/// Shared handle on the connected proxies and the xDS counters.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
    /// Bumped on every change, so readers can wait for one.
    changes: Arc<watch::Sender<u64>>,
    callbacks: Arc<dyn Callbacks>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry::with_callbacks(Arc::new(NoCallbacks))
    }

    pub fn with_callbacks(callbacks: Arc<dyn Callbacks>) -> Self {
        Registry {
            inner: Arc::default(),
            changes: Arc::new(watch::Sender::new(0)),
            callbacks,
        }
    }

    /// Registers a stream; pair it with [`Registry::disconnect`] (the server does it on drop).
    pub fn connect(
        &self,
        node_id: &str,
        node_cluster: &str,
        peer: Option<SocketAddr>,
        delta: bool,
    ) -> ConnectionId {
        let id = self.update(|inner| {
            inner.next_id += 1;
            inner.counters.connections += 1;
            let id = inner.next_id;
            inner.proxies.insert(
                id,
                Proxy {
                    node_id: node_id.to_string(),
                    node_cluster: node_cluster.to_string(),
                    peer: peer.map(|p| p.to_string()).unwrap_or_default(),
                    delta,
                    connected_at: SystemTime::now(),
                    types: BTreeMap::new(),
                    scope: None,
                },
            );
            id
        });
        tracing::info!(node_id, node_cluster, ?peer, delta, "proxy connected");
        id
    }

    /// Records the scope connection `id` declared (the data-plane gate counts a scoped proxy
    /// only for the rollouts in its scope).
    pub fn set_scope(&self, id: ConnectionId, scope: Option<Scope>) {
        self.update(|inner| {
            if let Some(proxy) = inner.proxies.get_mut(&id) {
                proxy.scope = scope;
            }
        });
    }

    pub fn disconnect(&self, id: ConnectionId) {
        if let Some(proxy) = self.update(|inner| inner.proxies.remove(&id)) {
            tracing::info!(node_id = %proxy.node_id, peer = %proxy.peer, "proxy disconnected");
        }
    }

    /// Applies one protocol event of connection `id`.
    /// Counts a response sent: its encoded size and how many resources it carried.
    pub fn record_sent(&self, type_url: &str, bytes: usize, resources: usize) {
        // Counters only: no status change to announce to the registry's watchers.
        let mut inner = self.lock();
        let counters = &mut inner.counters;
        counters.bytes_sent = counters.bytes_sent.saturating_add(bytes as u64);
        counters.resources_sent = counters.resources_sent.saturating_add(resources as u64);
        self.callbacks.on_sent(type_url, bytes, resources);
    }

    pub fn record(&self, id: ConnectionId, event: &Event) {
        self.update(|inner| match event {
            Event::Sent {
                type_url, version, ..
            } => {
                inner.counters.pushes += 1;
                self.callbacks.on_push(type_url);
                if let Some(t) = type_entry(inner, id, type_url) {
                    t.sent_version.clone_from(version);
                }
            }
            Event::Acked { type_url, version } => {
                inner.counters.acks += 1;
                if let Some(t) = type_entry(inner, id, type_url) {
                    t.acked_version.clone_from(version);
                    // A proxy that reconnects with the current version is sent nothing; what it
                    // holds is still what it was sent.
                    if t.sent_version.is_empty() {
                        t.sent_version.clone_from(version);
                    }
                    t.last_nack.clear();
                    t.last_nack_version.clear();
                }
            }
            Event::Nacked {
                type_url,
                version,
                error_detail,
            } => {
                inner.counters.nacks += 1;
                self.callbacks.on_nack(type_url, error_detail);
                if let Some(t) = type_entry(inner, id, type_url) {
                    t.last_nack.clone_from(error_detail);
                    t.last_nack_version.clone_from(version);
                    t.nacks += 1;
                }
            }
            Event::UnknownType { .. } => inner.counters.unknown_types += 1,
            Event::Synced => {}
        });
    }

    /// Reports a stream task that panicked (see [`Callbacks::on_stream_panic`]).
    pub fn record_stream_panic(&self) {
        self.callbacks.on_stream_panic();
    }

    /// Records one push latency sample (see [`Callbacks::on_ack_latency`]).
    pub fn record_push_latency(&self, latency: Duration) {
        self.callbacks.on_ack_latency(latency);
        self.update(|inner| {
            if inner.latencies.len() == LATENCY_SAMPLES {
                inner.latencies.pop_front();
            }
            inner.latencies.push_back(latency);
        });
    }

    /// The newest push-latency samples, oldest first.
    pub fn push_latencies(&self) -> Vec<Duration> {
        self.lock().latencies.iter().copied().collect()
    }

    /// Every connected proxy, by node id.
    pub fn snapshot(&self) -> Vec<ProxyStatus> {
        let inner = self.lock();
        let mut proxies: Vec<ProxyStatus> = inner
            .proxies
            .values()
            .map(|p| ProxyStatus {
                node_id: p.node_id.clone(),
                node_cluster: p.node_cluster.clone(),
                peer: p.peer.clone(),
                delta: p.delta,
                connected_at: p.connected_at,
                types: p.types.values().cloned().collect(),
                scope: p.scope.clone(),
            })
            .collect();
        proxies.sort_by(|a, b| a.node_id.cmp(&b.node_id).then_with(|| a.peer.cmp(&b.peer)));
        proxies
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    /// A receiver that sees a new value after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn update<R>(&self, change: impl FnOnce(&mut Inner) -> R) -> R {
        let result = change(&mut self.lock());
        self.changes.send_modify(|generation| *generation += 1);
        result
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The data stays consistent even if a holder panicked: every update is a few assignments.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn type_entry<'a>(
    inner: &'a mut Inner,
    id: ConnectionId,
    type_url: &str,
) -> Option<&'a mut TypeStatus> {
    let proxy = inner.proxies.get_mut(&id)?;
    Some(
        proxy
            .types
            .entry(type_url.to_string())
            .or_insert_with(|| TypeStatus {
                type_url: type_url.to_string(),
                ..Default::default()
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::type_url::CLUSTER;

    #[test]
    fn nack_is_recorded_and_cleared_by_the_next_ack() {
        let registry = Registry::new();
        let id = registry.connect("envoy-1", "gateway", None, false);
        registry.record(
            id,
            &Event::Sent {
                type_url: CLUSTER,
                version: "v1".into(),
                resources: 2,
            },
        );
        registry.record(
            id,
            &Event::Nacked {
                type_url: CLUSTER,
                version: "v1".into(),
                error_detail: "bad cluster".into(),
            },
        );
        let status = &registry.snapshot()[0];
        assert_eq!(status.node_id, "envoy-1");
        assert_eq!(
            status.types,
            vec![TypeStatus {
                type_url: CLUSTER.into(),
                sent_version: "v1".into(),
                acked_version: String::new(),
                last_nack: "bad cluster".into(),
                last_nack_version: "v1".into(),
                nacks: 1,
            }]
        );

        registry.record(
            id,
            &Event::Sent {
                type_url: CLUSTER,
                version: "v2".into(),
                resources: 2,
            },
        );
        registry.record(
            id,
            &Event::Acked {
                type_url: CLUSTER,
                version: "v2".into(),
            },
        );
        let t = &registry.snapshot()[0].types[0];
        assert_eq!(
            (t.acked_version.as_str(), t.last_nack.as_str(), t.nacks),
            ("v2", "", 1)
        );
        assert_eq!(
            registry.counters(),
            Counters {
                connections: 1,
                pushes: 2,
                acks: 1,
                nacks: 1,
                unknown_types: 0,
                bytes_sent: 0,
                resources_sent: 0,
            }
        );
    }

    #[test]
    fn disconnect_removes_the_proxy_and_notifies() {
        let registry = Registry::new();
        let mut changes = registry.subscribe();
        changes.mark_unchanged();
        let id = registry.connect("envoy-1", "gateway", None, true);
        assert!(changes.has_changed().expect("sender alive"));
        assert!(registry.snapshot()[0].delta);
        registry.disconnect(id);
        assert!(registry.snapshot().is_empty());
        // Events of a gone connection only count.
        registry.record(
            id,
            &Event::UnknownType {
                type_url: "x".into(),
            },
        );
        assert_eq!(registry.counters().unknown_types, 1);
    }

    #[test]
    fn latency_samples_are_bounded() {
        let registry = Registry::new();
        for ms in 0..(LATENCY_SAMPLES as u64 + 10) {
            registry.record_push_latency(Duration::from_millis(ms));
        }
        let samples = registry.push_latencies();
        assert_eq!(samples.len(), LATENCY_SAMPLES);
        assert_eq!(samples[0], Duration::from_millis(10));
    }
}
