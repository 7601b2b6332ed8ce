//! The tonic edge of ADS: it only moves messages.
//!
//! Each stream (state-of-the-world or delta) gets a task that waits for the first request (it
//! carries the node), registers the proxy, and then selects over the client's requests, its kind
//! of node's snapshots (a `watch` channel per kind, see `fanout`, which coalesces a burst into
//! one) and the shutdown signal — feeding all of it to the stream's protocol state machine and
//! writing back what it returns. One task follows the publications and specialises each once
//! per kind of node.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::Struct;
use futures::FutureExt as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, error, info};

mod fanout;
mod grpc;

pub use grpc::AdsService;

use crate::protocol::{Connection, DeltaConnection, DeltaResponse, Encode, Event, SotwResponse};
use crate::registry::{ConnectionId, Registry};
use crate::snapshot::Snapshot;

/// Turns the shared snapshot into the one a node with this metadata should see (e.g. its own
/// listener, its scope). Nodes with equal metadata get the same snapshot: it is computed once
/// per kind of node and publication.
pub type NodeSpecialise = Arc<dyn Fn(Option<&Struct>, &Snapshot) -> Snapshot + Send + Sync>;

/// Responses buffered per stream before the task waits for the client to read. ADS is paced by
/// the client's ACKs, so a stream rarely has more than one response in flight; a deeper queue
/// would only hold more memory per slow client.
const RESPONSE_BUFFER: usize = 2;

/// The published snapshot: `None` until the control plane has a first valid state. Until then
/// streams are accepted and their requests recorded, but nothing is sent for any type, so an
/// Envoy that (re)connects keeps the configuration it has.
pub type Published = Option<Arc<Snapshot>>;

/// The ADS gRPC service. Cheap to clone; all clones share the shutdown signal.
#[derive(Clone)]
pub struct AdsServer {
    snapshots: watch::Receiver<Published>,
    fanout: Arc<fanout::Fanout>,
    /// The fan-out task, started with the first stream (it needs the runtime).
    fanout_task: Arc<OnceLock<()>>,
    registry: Registry,
    stop: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for AdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsServer").finish_non_exhaustive()
    }
}

impl AdsServer {
    pub fn new(
        snapshots: watch::Receiver<Published>,
        node_specialise: NodeSpecialise,
        registry: Registry,
    ) -> Self {
        AdsServer {
            snapshots,
            fanout: Arc::new(fanout::Fanout::new(node_specialise)),
            fanout_task: Arc::default(),
            registry,
            stop: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Ends every open stream (and refuses new ones). Call it when shutting the server down:
    /// ADS streams live forever, so a graceful shutdown would otherwise wait for them forever.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// The tonic service, to add to a `tonic::transport::Server` next to other services.
    pub fn into_service(self) -> AdsService {
        AdsService::new(self)
    }

    /// Serves ADS on `listener` until `shutdown` resolves, then ends all streams and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        self.serve_tls(listener, None, shutdown).await
    }

    /// [`AdsServer::serve`], over TLS when `tls` is given. With a client CA in `tls`
    /// (`ServerTlsConfig::client_ca_root`), an Envoy without a certificate it signed fails the
    /// handshake and never sees a resource.
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        tls: Option<ServerTlsConfig>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let stopper = self.clone();
        let signal = async move {
            shutdown.await;
            info!("ADS server shutting down");
            stopper.shutdown();
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        builder
            .add_service(self.into_service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
            .await
    }

    /// Starts the task that hands every publication to the fan-out, once.
    fn start_fanout(&self) {
        self.fanout_task.get_or_init(|| {
            let mut snapshots = self.snapshots.clone();
            let fanout = Arc::clone(&self.fanout);
            let registry = self.registry.clone();
            let mut stop = self.stop.subscribe();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        changed = snapshots.changed() => {
                            if changed.is_err() {
                                return; // no more publications; streams keep the last one
                            }
                        }
                        () = stopped(&mut stop) => return,
                    }
                    // A panic here must not end the fan-out (every stream would stop hearing
                    // of publications): log it, count it, and take the next one.
                    let publish = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        fanout.publish(&mut snapshots);
                    }));
                    if let Err(panic) = publish {
                        error!(
                            task = "ADS fan-out",
                            panic = panic_message(panic.as_ref()),
                            "publishing to the streams panicked; waiting for the next publication"
                        );
                        registry.record_stream_panic();
                    }
                }
            });
        });
    }

    /// Starts the task of one ADS stream; its responses come out of the returned stream.
    fn spawn_stream<P: Protocol>(
        &self,
        request: Request<Streaming<P::Request>>,
    ) -> Response<ReceiverStream<Result<P::Response, Status>>> {
        let peer = request.remote_addr();
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let registry = self.registry.clone();
        let stream = run_stream::<P>(self.clone(), peer, request.into_inner(), tx);
        tokio::spawn(async move {
            // A panic ends only this stream (the client reconnects), but never silently.
            if let Err(panic) = AssertUnwindSafe(stream).catch_unwind().await {
                error!(
                    task = "ADS stream",
                    ?peer,
                    panic = panic_message(panic.as_ref()),
                    "ADS stream task panicked; the stream is closed"
                );
                registry.record_stream_panic();
            }
        });
        Response::new(ReceiverStream::new(rx))
    }
}

/// What the stream task needs from a protocol state machine (SotW or delta).
trait Protocol: Send + 'static {
    type Request: prost::Message + Default + Send + 'static;
    type Response: Encode + Send + 'static;
    const DELTA: bool;
    fn node(request: &Self::Request) -> Option<&Node>;
    /// `None`: no snapshot published yet; the connection sends nothing until one is.
    fn start(snapshot: Option<Arc<Snapshot>>) -> Self;
    fn on_request(&mut self, request: Self::Request) -> Vec<Self::Response>;
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<Self::Response>;
    fn take_events(&mut self) -> Vec<Event>;
    fn is_synced(&self) -> bool;
    /// A response's type URL and resource count (for the byte counters).
    fn describe(response: &Self::Response) -> (&str, usize);
}

impl Protocol for Connection {
    type Request = DiscoveryRequest;
    type Response = SotwResponse;
    const DELTA: bool = false;
    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }
    fn start(snapshot: Option<Arc<Snapshot>>) -> Self {
        snapshot.map_or_else(Connection::waiting, Connection::new)
    }
    fn on_request(&mut self, request: DiscoveryRequest) -> Vec<SotwResponse> {
        Connection::on_request(self, request)
    }
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<SotwResponse> {
        Connection::on_snapshot(self, snapshot)
    }
    fn take_events(&mut self) -> Vec<Event> {
        Connection::take_events(self)
    }
    fn is_synced(&self) -> bool {
        Connection::is_synced(self)
    }
    fn describe(response: &SotwResponse) -> (&str, usize) {
        (&response.type_url, response.resources.len())
    }
}

impl Protocol for DeltaConnection {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaResponse;
    const DELTA: bool = true;
    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }
    fn start(snapshot: Option<Arc<Snapshot>>) -> Self {
        snapshot.map_or_else(DeltaConnection::waiting, DeltaConnection::new)
    }
    fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Vec<DeltaResponse> {
        self.on_delta_request(request)
    }
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DeltaResponse> {
        DeltaConnection::on_snapshot(self, snapshot)
    }
    fn take_events(&mut self) -> Vec<Event> {
        DeltaConnection::take_events(self)
    }
    fn is_synced(&self) -> bool {
        DeltaConnection::is_synced(self)
    }
    fn describe(response: &DeltaResponse) -> (&str, usize) {
        (&response.type_url, response.resources.len())
    }
}

/// Removes the stream from the registry however the task ends.
struct Registered {
    registry: Registry,
    id: ConnectionId,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.disconnect(self.id);
    }
}

/// One input of the stream loop.
enum Input<R> {
    Request(R),
    Snapshot(Published),
    SnapshotsClosed,
    End,
}

async fn run_stream<P: Protocol>(
    server: AdsServer,
    peer: Option<SocketAddr>,
    mut requests: Streaming<P::Request>,
    tx: mpsc::Sender<Result<P::Response, Status>>,
) {
    let mut stop = server.stop.subscribe();

    let first = tokio::select! {
        first = requests.message() => first,
        () = stopped(&mut stop) => return,
    };
    let first = match first {
        Ok(Some(first)) => first,
        Ok(None) => return,
        Err(status) => {
            debug!(?peer, %status, "ADS stream failed before its first request");
            return;
        }
    };
    let node = P::node(&first).cloned().unwrap_or_default();
    let node_cluster = node.cluster.clone();
    let registry = server.registry.clone();
    let registered = Registered {
        id: registry.connect(&node.id, &node_cluster, peer, P::DELTA),
        registry,
    };
    // Before any ACK: the data-plane gate reads it with them.
    registered.registry.set_scope(
        registered.id,
        crate::scope::Scope::from_metadata(node.metadata.as_ref()),
    );

    server.start_fanout();
    let mut snapshots =
        server
            .fanout
            .subscribe(node.metadata.as_ref(), P::DELTA, &server.snapshots);
    let current = snapshots.borrow_and_update().clone();
    let mut connection = P::start(current);
    let mut snapshots_open = true;
    // When the first not-yet-delivered snapshot reached this connection.
    let mut push_started: Option<Instant> = None;
    let mut input = Input::Request(first);

    loop {
        let responses = match input {
            Input::Request(request) => connection.on_request(request),
            // Publications never go back to "none"; if one did, the client keeps what it has.
            Input::Snapshot(None) => Vec::new(),
            Input::Snapshot(Some(snapshot)) => {
                let arrived = Instant::now();
                let responses = connection.on_snapshot(snapshot);
                if !connection.is_synced() {
                    push_started.get_or_insert(arrived);
                }
                responses
            }
            Input::SnapshotsClosed => {
                // Keep serving the last snapshot; there will be no newer one.
                snapshots_open = false;
                Vec::new()
            }
            Input::End => break,
        };
        for event in connection.take_events() {
            if event == Event::Synced
                && let Some(started) = push_started.take()
            {
                registered.registry.record_push_latency(started.elapsed());
            }
            registered.registry.record(registered.id, &event);
        }
        for response in responses {
            let (type_url, resources) = P::describe(&response);
            registered
                .registry
                .record_sent(type_url, response.encoded_len(), resources);
            if tx.send(Ok(response)).await.is_err() {
                return; // the client went away
            }
        }
        input = tokio::select! {
            request = requests.message() => match request {
                Ok(Some(request)) => Input::Request(request),
                Ok(None) => Input::End,
                Err(status) => {
                    debug!(node_id = %node.id, %status, "ADS stream ended with an error");
                    Input::End
                }
            },
            changed = snapshots.changed(), if snapshots_open => match changed {
                Ok(()) => Input::Snapshot(snapshots.borrow_and_update().clone()),
                Err(_) => Input::SnapshotsClosed,
            },
            () = stopped(&mut stop) => Input::End,
        };
    }
    debug!(node_id = %node.id, "ADS stream closed");
}

/// The message of a panic payload (`&str` or `String`, as `panic!` makes them).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

/// Resolves once the server is shut down (or gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
