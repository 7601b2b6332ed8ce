//! The client tasks and the coordinator against a fake ADS server in this process: syncing,
//! learning the changed types, measuring a change, and failing loudly when a stream ends.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::client::{CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE, type_index};
use crate::test_support::{eds_cluster, listener, opaque, response};

const WAIT: Duration = Duration::from_secs(60);

/// Serves a fixed configuration whose RDS and ECDS versions follow `generation`.
struct FakeAds {
    generation: watch::Receiver<u32>,
}

fn resources(type_url: &str, generation: u32, nonce: u64) -> DiscoveryResponse {
    let (version, body) = match type_url {
        CLUSTER => (
            "c".to_owned(),
            vec![eds_cluster("a", ""), eds_cluster("b", "")],
        ),
        ENDPOINT => ("e".to_owned(), vec![opaque(ENDPOINT), opaque(ENDPOINT)]),
        LISTENER => ("l".to_owned(), vec![listener("routes", "filter")]),
        ROUTE => (format!("r{generation}"), vec![opaque(ROUTE)]),
        _ => (format!("x{generation}"), vec![opaque(EXTENSION_CONFIG)]),
    };
    response(type_url, &version, &nonce.to_string(), body)
}

type Responses = UnboundedReceiverStream<Result<DiscoveryResponse, Status>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeAds {
    type StreamAggregatedResourcesStream = Responses;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let mut requests = request.into_inner();
        let mut generation = self.generation.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut subscribed: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut nonce = 0;
            loop {
                tokio::select! {
                    request = requests.message() => {
                        let Ok(Some(request)) = request else { return };
                        // A new subscription or new names get a response; an ACK does not.
                        if subscribed.get(&request.type_url) != Some(&request.resource_names) {
                            subscribed.insert(request.type_url.clone(), request.resource_names);
                            nonce += 1;
                            let g = *generation.borrow();
                            let _ = tx.send(Ok(resources(&request.type_url, g, nonce)));
                        }
                    }
                    changed = generation.changed() => {
                        if changed.is_err() { return }
                        let g = *generation.borrow_and_update();
                        for type_url in [ROUTE, EXTENSION_CONFIG] {
                            if subscribed.contains_key(type_url) {
                                nonce += 1;
                                let _ = tx.send(Ok(resources(type_url, g, nonce)));
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    type DeltaAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("delta"))
    }
}

/// The fake server, stopped when dropped.
struct Server {
    task: JoinHandle<()>,
    generation: watch::Sender<u32>,
    endpoint: Endpoint,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_server() -> Server {
    let (generation, rx) = watch::channel(0);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(FakeAds {
                generation: rx,
            }))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    Server {
        task,
        generation,
        endpoint,
    }
}

async fn connect_clients(server: &Server, n: usize) -> (Coordinator, JoinSet<()>) {
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for client in 0..n {
        let channel = server.endpoint.connect().await.unwrap();
        tasks.spawn(client_task(client, channel, events_tx.clone(), None, false));
    }
    let mut coordinator = Coordinator::new(n, events_rx);
    coordinator
        .wait(Instant::now() + WAIT, "sync", |c| c.synced == n)
        .await
        .unwrap();
    (coordinator, tasks)
}

#[tokio::test]
async fn clients_sync_learn_the_changed_types_and_measure_a_change() {
    let server = start_server().await;
    let (mut coordinator, _tasks) = connect_clients(&server, 3).await;

    coordinator.epoch = Some(Epoch::new(3, Instant::now(), 0));
    server.generation.send(1).unwrap();
    coordinator
        .wait(
            Instant::now() + WAIT,
            "warm-up",
            Coordinator::epoch_complete,
        )
        .await
        .unwrap();
    coordinator
        .drain_for(Duration::from_millis(300))
        .await
        .unwrap();
    let seen = coordinator.epoch.take().unwrap().seen_types();
    let route_and_ecds =
        (1 << type_index(ROUTE).unwrap()) | (1 << type_index(EXTENSION_CONFIG).unwrap());
    assert_eq!(seen, route_and_ecds);

    let t0 = Instant::now();
    coordinator.epoch = Some(Epoch::new(3, t0, seen));
    server.generation.send(2).unwrap();
    coordinator
        .wait(Instant::now() + WAIT, "change", Coordinator::epoch_complete)
        .await
        .unwrap();
    let epoch = coordinator.epoch.take().unwrap();
    assert!(epoch.latency().unwrap() <= t0.elapsed());
    assert_eq!(epoch.unexpected(), 0);
    assert_eq!(coordinator.stray, 0);
}

#[tokio::test]
async fn a_change_outside_a_measurement_is_stray() {
    let server = start_server().await;
    let (mut coordinator, _tasks) = connect_clients(&server, 2).await;
    server.generation.send(1).unwrap();
    coordinator
        .wait(Instant::now() + WAIT, "strays", |c| c.stray == 4)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stream_the_server_ends_fails_the_wait() {
    let server = start_server().await;
    let (mut coordinator, _tasks) = connect_clients(&server, 2).await;
    drop(server);
    let err = coordinator
        .wait(Instant::now() + WAIT, "nothing", |_| false)
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("client "), "{err:#}");
}
