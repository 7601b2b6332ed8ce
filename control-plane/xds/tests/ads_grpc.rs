//! The ADS server over real gRPC on loopback: subscribe, ACK, push, NACK, registry, shutdown.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use prost::Message;
use sluice_xds::registry::{ProxyStatus, Registry};
use sluice_xds::server::AdsServer;
use sluice_xds::snapshot::{Resource, Snapshot};
use sluice_xds::type_url::CLUSTER;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// Generous: the machine is shared and noisy; these only bound a hang.
const PATIENCE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn snapshot(clusters: &[(&str, u64)]) -> Arc<Snapshot> {
    let mut snapshot = Snapshot::default();
    for (name, timeout_s) in clusters {
        let cluster = Cluster {
            name: name.to_string(),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: *timeout_s as i64,
                nanos: 0,
            }),
            ..Default::default()
        };
        snapshot.insert(Resource::new(
            *name,
            prost_types::Any {
                type_url: CLUSTER.into(),
                value: cluster.encode_to_vec(),
            },
        ));
    }
    Arc::new(snapshot)
}

fn cluster_names(response: &DiscoveryResponse) -> Vec<String> {
    response
        .resources
        .iter()
        .map(|any| {
            Cluster::decode(any.value.as_slice())
                .expect("a Cluster")
                .name
        })
        .collect()
}

/// The server on a free loopback port; shut down (and its task aborted) on drop.
struct RunningServer {
    address: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl RunningServer {
    async fn start(snapshots: watch::Receiver<Option<Arc<Snapshot>>>, registry: Registry) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = format!("http://{}", listener.local_addr().expect("local addr"));
        let server = AdsServer::new(
            snapshots,
            Arc::new(|_: Option<&_>, s: &Snapshot| s.clone()),
            registry,
        );
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = signal.await;
        }));
        RunningServer {
            address,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    async fn client(&self) -> AggregatedDiscoveryServiceClient<Channel> {
        within("connect", async {
            loop {
                match AggregatedDiscoveryServiceClient::connect(self.address.clone()).await {
                    Ok(client) => return client,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await
    }

    /// Signals shutdown and waits for the server to stop, open streams included.
    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let task = self.task.take().expect("running");
        within("server shutdown", task)
            .await
            .expect("server task")
            .expect("server result");
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Waits until the registry's view satisfies `ready`.
async fn registry_until(
    registry: &Registry,
    what: &str,
    ready: impl Fn(&[ProxyStatus]) -> bool,
) -> Vec<ProxyStatus> {
    let mut changes = registry.subscribe();
    within(what, async {
        loop {
            let proxies = registry.snapshot();
            if ready(&proxies) {
                return proxies;
            }
            changes.changed().await.expect("registry alive");
        }
    })
    .await
}

async fn next(responses: &mut Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    within("a response", responses.message())
        .await
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test]
async fn subscribe_ack_push_nack_and_shutdown() {
    let first = snapshot(&[("a", 1)]);
    let (publish, snapshots) = watch::channel(Some(Arc::clone(&first)));
    let registry = Registry::new();
    let server = RunningServer::start(snapshots, registry.clone()).await;
    let mut client = server.client().await;

    let (requests, outgoing) = mpsc::channel::<DiscoveryRequest>(8);
    requests
        .send(DiscoveryRequest {
            node: Some(Node {
                id: "envoy-1".into(),
                cluster: "gateway".into(),
                ..Default::default()
            }),
            type_url: CLUSTER.into(),
            ..Default::default()
        })
        .await
        .expect("queue request");
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(outgoing))
        .await
        .expect("open ADS stream")
        .into_inner();

    // Initial response, then ACK.
    let cds = next(&mut responses).await;
    assert_eq!(cluster_names(&cds), ["a"]);
    assert_eq!(cds.version_info, first.type_version(CLUSTER));
    let ack = |r: &DiscoveryResponse| DiscoveryRequest {
        version_info: r.version_info.clone(),
        type_url: r.type_url.clone(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    };
    requests.send(ack(&cds)).await.expect("send ACK");
    let proxies = registry_until(&registry, "the ACK", |p| {
        p.first()
            .is_some_and(|p| p.types.first().is_some_and(|t| !t.acked_version.is_empty()))
    })
    .await;
    assert_eq!(proxies.len(), 1);
    assert_eq!(
        (
            proxies[0].node_id.as_str(),
            proxies[0].node_cluster.as_str()
        ),
        ("envoy-1", "gateway")
    );
    assert!(!proxies[0].delta);
    assert!(proxies[0].peer.starts_with("127.0.0.1:"));
    assert_eq!(
        proxies[0].types[0].acked_version,
        first.type_version(CLUSTER)
    );

    // A new snapshot is pushed; its ACK completes a push, which is timed.
    let second = snapshot(&[("a", 1), ("b", 1)]);
    publish.send_replace(Some(Arc::clone(&second)));
    let cds = next(&mut responses).await;
    assert_eq!(cluster_names(&cds), ["a", "b"]);
    requests.send(ack(&cds)).await.expect("send ACK");
    registry_until(&registry, "the second ACK", |p| {
        p.first()
            .is_some_and(|p| p.types[0].acked_version == second.type_version(CLUSTER))
    })
    .await;
    assert_eq!(registry.push_latencies().len(), 1);

    // A snapshot the client rejects.
    let third = snapshot(&[("a", 1), ("b", 0)]);
    publish.send_replace(Some(Arc::clone(&third)));
    let cds = next(&mut responses).await;
    requests
        .send(DiscoveryRequest {
            version_info: second.type_version(CLUSTER),
            error_detail: Some(Status {
                code: 3,
                message: "cluster b: connect_timeout must be positive".into(),
                details: Vec::new(),
            }),
            ..ack(&cds)
        })
        .await
        .expect("send NACK");
    let proxies = registry_until(&registry, "the NACK", |p| {
        p.first().is_some_and(|p| p.types[0].nacks == 1)
    })
    .await;
    let cds_status = &proxies[0].types[0];
    assert_eq!(
        cds_status.last_nack,
        "cluster b: connect_timeout must be positive"
    );
    assert_eq!(cds_status.last_nack_version, third.type_version(CLUSTER));
    assert_eq!(cds_status.acked_version, second.type_version(CLUSTER));
    assert_eq!(registry.counters().nacks, 1);

    // Shutdown ends the open stream and the server returns; the proxy is unregistered.
    server.stop().await;
    let end = within("the stream to end", responses.message()).await;
    assert!(
        !matches!(end, Ok(Some(_))),
        "no more responses after shutdown"
    );
    registry_until(&registry, "the disconnect", <[ProxyStatus]>::is_empty).await;
}

#[tokio::test]
async fn delta_stream_is_registered_as_delta_and_disconnect_unregisters() {
    let (_publish, snapshots) = watch::channel(Some(snapshot(&[("a", 1)])));
    let registry = Registry::new();
    let server = RunningServer::start(snapshots, registry.clone()).await;
    let mut client = server.client().await;

    let (requests, outgoing) = mpsc::channel::<DeltaDiscoveryRequest>(8);
    requests
        .send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: "envoy-delta".into(),
                ..Default::default()
            }),
            type_url: CLUSTER.into(),
            ..Default::default()
        })
        .await
        .expect("queue request");
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(outgoing))
        .await
        .expect("open delta stream")
        .into_inner();
    let cds = within("a delta response", responses.message())
        .await
        .expect("stream ok")
        .expect("stream open");
    assert_eq!(cds.resources.len(), 1);
    assert_eq!(cds.resources[0].name, "a");
    let proxies = registry_until(&registry, "the delta proxy", |p| !p.is_empty()).await;
    assert!(proxies[0].delta);
    assert_eq!(proxies[0].node_id, "envoy-delta");

    // The client goes away: the server notices and unregisters it.
    drop(requests);
    drop(responses);
    registry_until(&registry, "the disconnect", <[ProxyStatus]>::is_empty).await;
    server.stop().await;
}

/// A control plane with no valid state yet (e.g. restarted on an invalid rollouts file) accepts
/// streams but answers nothing on them, SotW and delta alike: an Envoy that reconnects keeps the
/// clusters and routes it has instead of being told that every cluster is gone. The first
/// published snapshot is then sent as usual.
#[tokio::test]
async fn nothing_is_sent_before_the_first_snapshot_is_published() {
    let (publish, snapshots) = watch::channel(None);
    let registry = Registry::new();
    let server = RunningServer::start(snapshots, registry.clone()).await;
    let mut client = server.client().await;

    let (sotw_requests, sotw_outgoing) = mpsc::channel::<DiscoveryRequest>(8);
    sotw_requests
        .send(DiscoveryRequest {
            node: Some(Node {
                id: "envoy-sotw".into(),
                ..Default::default()
            }),
            // A reconnecting Envoy reports the version it holds.
            version_info: "held-before-restart".into(),
            type_url: CLUSTER.into(),
            ..Default::default()
        })
        .await
        .expect("queue request");
    let mut sotw = client
        .stream_aggregated_resources(ReceiverStream::new(sotw_outgoing))
        .await
        .expect("open ADS stream")
        .into_inner();
    let (delta_requests, delta_outgoing) = mpsc::channel::<DeltaDiscoveryRequest>(8);
    delta_requests
        .send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: "envoy-delta".into(),
                ..Default::default()
            }),
            type_url: CLUSTER.into(),
            ..Default::default()
        })
        .await
        .expect("queue request");
    let mut delta = client
        .delta_aggregated_resources(ReceiverStream::new(delta_outgoing))
        .await
        .expect("open delta stream")
        .into_inner();

    // Both streams are registered (their first request was read) ...
    registry_until(&registry, "both streams", |p| p.len() == 2).await;
    // ... and get nothing while there is no snapshot.
    let quiet = Duration::from_millis(500);
    assert!(
        tokio::time::timeout(quiet, sotw.message()).await.is_err(),
        "no SotW response before a first snapshot"
    );
    assert!(
        tokio::time::timeout(quiet, delta.message()).await.is_err(),
        "no delta response before a first snapshot"
    );

    let first = snapshot(&[("a", 1)]);
    publish.send_replace(Some(Arc::clone(&first)));
    let cds = next(&mut sotw).await;
    assert_eq!(cluster_names(&cds), ["a"]);
    assert_eq!(cds.version_info, first.type_version(CLUSTER));
    let delta_cds = within("a delta response", delta.message())
        .await
        .expect("stream ok")
        .expect("stream open");
    assert_eq!(delta_cds.resources.len(), 1);
    drop((sotw_requests, delta_requests));
    server.stop().await;
}
