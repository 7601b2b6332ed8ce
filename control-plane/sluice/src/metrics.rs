//! Prometheus metrics for what operators watch: connected proxies, pushes, push latency, NACKs,
//! rollouts and source errors. Served at `/metrics` by [`crate::http`].

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub type_url: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: String,
}

/// Cheap to clone; every clone updates the same metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    connected_proxies: Gauge,
    pushes: Family<TypeLabel, Counter>,
    nacks: Family<TypeLabel, Counter>,
    sent_bytes: Family<TypeLabel, Counter>,
    sent_resources: Family<TypeLabel, Counter>,
    push_latency: Histogram,
    rollouts: Gauge,
    snapshots: Counter,
    source_errors: Counter,
    ready: Gauge,
    task_failures: Family<TaskLabel, Counter>,
    stream_panics: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let connected_proxies = Gauge::default();
        let pushes = Family::<TypeLabel, Counter>::default();
        let nacks = Family::<TypeLabel, Counter>::default();
        let sent_bytes = Family::<TypeLabel, Counter>::default();
        let sent_resources = Family::<TypeLabel, Counter>::default();
        // 1 ms .. ~16 s: a push is normally a few ms; seconds mean a stuck proxy.
        let push_latency = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
        );
        let rollouts = Gauge::default();
        let snapshots = Counter::default();
        let source_errors = Counter::default();
        let ready = Gauge::default();
        let task_failures = Family::<TaskLabel, Counter>::default();
        let stream_panics = Counter::default();
        registry.register(
            "task_failures",
            "Background tasks that panicked or returned an error (then restarted, or the process \
             ended), by task",
            task_failures.clone(),
        );
        registry.register(
            "xds_stream_panics",
            "ADS stream tasks that panicked (the stream was closed)",
            stream_panics.clone(),
        );
        registry.register(
            "connected_proxies",
            "Envoys connected to the ADS server",
            connected_proxies.clone(),
        );
        registry.register(
            "xds_pushes",
            "xDS responses sent, by resource type",
            pushes.clone(),
        );
        registry.register(
            "xds_nacks",
            "xDS responses rejected by an Envoy, by resource type",
            nacks.clone(),
        );
        registry.register(
            "xds_sent_bytes",
            "Encoded size of the xDS responses sent, by resource type",
            sent_bytes.clone(),
        );
        registry.register(
            "xds_sent_resources",
            "Resources in the xDS responses sent, by resource type",
            sent_resources.clone(),
        );
        registry.register(
            "xds_push_ack_latency_seconds",
            "Time from a new snapshot reaching a connection to that Envoy's ACK of it",
            push_latency.clone(),
        );
        registry.register("rollouts", "Rollouts being served", rollouts.clone());
        registry.register(
            "snapshots_published",
            "Snapshots published to the ADS server",
            snapshots.clone(),
        );
        registry.register(
            "source_errors",
            "Source inputs rejected (file or object failed to parse or validate)",
            source_errors.clone(),
        );
        registry.register(
            "ready",
            "1 once the source delivered a valid state",
            ready.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                connected_proxies,
                pushes,
                nacks,
                sent_bytes,
                sent_resources,
                push_latency,
                rollouts,
                snapshots,
                source_errors,
                ready,
                task_failures,
                stream_panics,
            }),
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }

    pub fn set_rollouts(&self, n: usize) {
        self.inner
            .rollouts
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.set(i64::from(ready));
    }

    pub fn snapshot_published(&self) {
        self.inner.snapshots.inc();
    }

    pub fn source_error(&self) {
        self.inner.source_errors.inc();
    }

    pub fn task_failure(&self, task: &str) {
        self.inner
            .task_failures
            .get_or_create(&TaskLabel {
                task: task.to_string(),
            })
            .inc();
    }

    pub fn set_connected_proxies(&self, n: usize) {
        self.inner
            .connected_proxies
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// The ADS server reports pushes, NACKs and ACK latency through these hooks.
impl sluice_xds::registry::Callbacks for Metrics {
    fn on_push(&self, type_url: &str) {
        self.inner
            .pushes
            .get_or_create(&TypeLabel {
                type_url: type_url.to_string(),
            })
            .inc();
    }

    fn on_nack(&self, type_url: &str, _error_detail: &str) {
        self.inner
            .nacks
            .get_or_create(&TypeLabel {
                type_url: type_url.to_string(),
            })
            .inc();
    }

    fn on_sent(&self, type_url: &str, bytes: usize, resources: usize) {
        let label = TypeLabel {
            type_url: type_url.to_string(),
        };
        self.inner
            .sent_bytes
            .get_or_create(&label)
            .inc_by(bytes as u64);
        self.inner
            .sent_resources
            .get_or_create(&label)
            .inc_by(resources as u64);
    }

    fn on_ack_latency(&self, latency: std::time::Duration) {
        self.inner.push_latency.observe(latency.as_secs_f64());
    }

    fn on_stream_panic(&self) {
        self.inner.stream_panics.inc();
    }
}
