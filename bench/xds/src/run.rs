//! One benchmark configuration (N clients × M rollouts) against a fresh control-plane process.
//!
//! ```text
//!  write rollouts file ─► start `sluice serve` ─► N ADS client tasks ─► all synced
//!    ─► warm-up SetWeight: learn which types a weight change touches (RDS, ECDS)
//!    ─► K × { quiet gap; t0; SetWeight; every client got every touched type } ─► latencies
//!    ─► CPU (ticks after − before) / K, VmRSS, VmHWM ─► kill the process
//! ```
//!
//! The client tasks only move messages: the protocol is [`crate::client::AdsClient`], the
//! bookkeeping [`crate::tracker::Epoch`]. Clients report through one channel; the coordinator is
//! event-driven so the benchmark process stays cheap next to the process it measures.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use sluice_proto::admin::v1::{SetWeightRequest, admin_client::AdminClient};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use crate::{
    client::{AdsClient, ProtocolError, Reaction, TYPES, TypeSet, type_names},
    control_plane::{ControlPlane, Launch},
    delta_client::DeltaAdsClient,
    procfs, rollouts,
    tracker::{Epoch, percentile},
};

/// Gap between changes, so that each change is measured on its own.
const QUIET: Duration = Duration::from_millis(100);
/// After the warm-up change: long enough for every push it caused to arrive.
const SETTLE: Duration = Duration::from_millis(1_000);
/// Envoy accepts large responses; so do we (1,000 rollouts make CDS/EDS/RDS of some 100s of KB).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// At least this many changes are measured even when they exceed the time budget.
const MIN_CHANGES: usize = 3;

/// What one configuration runs with.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub clients: usize,
    pub rollouts: usize,
    /// Rollouts per client scope (node metadata `sluice.scope`); `None`: unscoped clients.
    pub scope: Option<usize>,
    /// Delta ADS clients (routes over VHDS) instead of state-of-the-world ones.
    pub delta: bool,
    /// Changes to measure, unless `budget` runs out first (then at least [`MIN_CHANGES`]).
    pub changes: usize,
    /// Time for the measured changes, so the largest configurations finish in minutes.
    pub budget: Duration,
    pub binary: PathBuf,
    pub work_dir: PathBuf,
    pub sync_timeout: Duration,
    pub change_timeout: Duration,
}

/// The measurements of one configuration.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub clients: usize,
    pub rollouts: usize,
    pub scope: Option<usize>,
    pub delta: bool,
    /// Clients a change concerns (all when unscoped).
    pub affected: usize,
    /// Mean bytes (encoded responses) all clients received per measured change.
    pub bytes_per_change: u64,
    /// Bytes received by clients a change does not concern, over all measured changes.
    pub unaffected_bytes: u64,
    /// Changes measured (fewer than asked when the time budget ran out).
    pub changes: usize,
    pub latencies: Vec<Duration>,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub rss_bytes: u64,
    pub hwm_bytes: u64,
    pub cpu_seconds_per_change: f64,
    /// From the first connection to every client holding a full configuration.
    pub sync_time: Duration,
    /// Types a weight change updated (e.g. "RouteConfiguration+TypedExtensionConfig").
    pub changed_types: String,
    /// Pushes during the measured changes of types a weight change should not touch.
    pub unexpected_pushes: u64,
}

/// What a client task tells the coordinator.
#[derive(Debug)]
enum Event {
    Synced,
    /// A response of this many encoded bytes arrived (after the client synced).
    Bytes {
        client: usize,
        bytes: u64,
    },
    Changed {
        client: usize,
        type_index: usize,
        at: Instant,
    },
    Nacked {
        client: usize,
        type_url: String,
        message: String,
    },
    Failed {
        client: usize,
        error: String,
    },
}

/// Runs one configuration; the control plane is stopped whatever happens.
pub async fn run(config: &RunConfig) -> anyhow::Result<Outcome> {
    let (n, m) = (config.clients, config.rollouts);
    if let Some(per_scope) = config.scope {
        ensure!(
            rollouts::scope_of(0, m, per_scope).is_some(),
            "a scope of {per_scope} rollouts must divide M = {m}"
        );
    }
    std::fs::create_dir_all(&config.work_dir)
        .with_context(|| format!("creating {}", config.work_dir.display()))?;
    let rollouts_file = config.work_dir.join(format!("rollouts-{m}.yaml"));
    std::fs::write(&rollouts_file, rollouts::rollouts_yaml(m))
        .with_context(|| format!("writing {}", rollouts_file.display()))?;
    // The control plane only names the module's path in ECDS; no Envoy loads it here.
    let wasm_file = config.work_dir.join("stand-in.wasm");
    std::fs::write(&wasm_file, b"\0asm\x01\0\0\0")
        .with_context(|| format!("writing {}", wasm_file.display()))?;
    let log_file = config.work_dir.join(format!("sluice-n{n}-m{m}.log"));

    let mut control_plane = ControlPlane::start(Launch {
        binary: &config.binary,
        rollouts_file: &rollouts_file,
        wasm_file: &wasm_file,
        log_file: &log_file,
        ready_timeout: Duration::from_secs(60),
    })
    .await?;
    let result = measure(config, &mut control_plane).await;
    let alive = control_plane.check_alive();
    let stopped = control_plane.stop().await;
    let outcome = result.map_err(|e| match alive {
        Err(dead) => e.context(format!("{dead}; see {}", log_file.display())),
        Ok(()) => e,
    })?;
    stopped?;
    Ok(outcome)
}

async fn measure(config: &RunConfig, control_plane: &mut ControlPlane) -> anyhow::Result<Outcome> {
    let n = config.clients;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut coordinator = Coordinator::new(n, events_rx);
    // Aborted on drop: the client tasks end with this function.
    let mut tasks = JoinSet::new();

    // One connection per client, as every Envoy has its own.
    let sync_start = Instant::now();
    let endpoint = Endpoint::from_shared(format!("http://{}", control_plane.xds_addr))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    for client in 0..n {
        let channel = endpoint.connect().await.with_context(|| {
            format!("client {client}: connecting to {}", control_plane.xds_addr)
        })?;
        let scope = config
            .scope
            .and_then(|per_scope| rollouts::scope_of(client, config.rollouts, per_scope));
        tasks.spawn(client_task(
            client,
            channel,
            events_tx.clone(),
            scope,
            config.delta,
        ));
    }
    drop(events_tx);
    let affected: Vec<bool> = (0..n)
        .map(|client| {
            config
                .scope
                .is_none_or(|per_scope| rollouts::is_affected(client, config.rollouts, per_scope))
        })
        .collect();
    coordinator
        .wait(
            Instant::now() + config.sync_timeout,
            "every client to sync",
            |c| c.synced == n,
        )
        .await?;
    // A client counts as synced once every type has answered, but the control plane may still
    // be sending (a delta response carries at most 64 KiB; the rest follows on its ACK): the
    // sync ends when nothing has arrived for a while.
    coordinator
        .drain_until_quiet(SETTLE, Instant::now() + config.sync_timeout)
        .await?;
    let sync_time = sync_start.elapsed().saturating_sub(SETTLE);
    info!(
        clients = n,
        rollouts = config.rollouts,
        ?sync_time,
        "all clients synced"
    );

    let mut admin = AdminClient::connect(format!("http://{}", control_plane.admin_addr))
        .await
        .context("connecting to the admin API")?;

    // Warm-up: which types does a weight change touch?
    coordinator.drain_for(QUIET).await?;
    coordinator.epoch = Some(Epoch::with_affected(affected.clone(), Instant::now(), 0));
    let token = &control_plane.admin_token;
    set_weight(&mut admin, token, rollouts::weight_bp(None)).await?;
    coordinator
        .wait(
            Instant::now() + config.change_timeout,
            "the warm-up change",
            Coordinator::epoch_complete,
        )
        .await?;
    coordinator.drain_for(SETTLE).await?;
    let expected: TypeSet = coordinator.epoch.take().map_or(0, |e| e.seen_types());
    ensure!(expected != 0, "the warm-up weight change updated no type");
    info!(types = %type_names(expected), "a weight change updates these types");
    coordinator.stray = 0;

    let cpu_before = control_plane.cpu_ticks()?;
    let mut latencies = Vec::with_capacity(config.changes);
    let mut unexpected = 0;
    let mut bytes = 0;
    let mut unaffected_bytes = 0;
    let started = Instant::now();
    for k in 0..config.changes {
        if k >= MIN_CHANGES && started.elapsed() > config.budget {
            warn!(measured = k, asked = config.changes, budget = ?config.budget, "time budget spent; measuring fewer changes");
            break;
        }
        let t0 = Instant::now();
        coordinator.epoch = Some(Epoch::with_affected(affected.clone(), t0, expected));
        set_weight(&mut admin, token, rollouts::weight_bp(Some(k))).await?;
        coordinator
            .wait(
                Instant::now() + config.change_timeout,
                "a weight change",
                Coordinator::epoch_complete,
            )
            .await?;
        // A quiet gap, still counting: this change's last bytes (and any push to a client it
        // does not concern) arrive in it.
        coordinator.drain_for(QUIET).await?;
        let epoch = coordinator.epoch.take().context("the epoch vanished")?;
        unexpected += epoch.unexpected();
        bytes += epoch.bytes();
        unaffected_bytes += epoch.unaffected_bytes();
        let latency = epoch.latency().context("a complete epoch has a latency")?;
        debug!(change = k, ?latency, "change delivered to every client");
        latencies.push(latency);
    }
    coordinator.drain_for(QUIET).await?;
    let cpu_after = control_plane.cpu_ticks()?;
    let memory = control_plane.memory()?;
    unexpected += coordinator.stray;
    if unexpected > 0 {
        warn!(
            unexpected,
            "pushes of types a weight change should not touch"
        );
    }
    tasks.abort_all();

    let measured = latencies.len();
    let ticks = cpu_after.saturating_sub(cpu_before) as f64;
    let per_second = procfs::clock_ticks_per_second() as f64;
    let p = |q| percentile(&latencies, q).unwrap_or_default();
    Ok(Outcome {
        clients: n,
        rollouts: config.rollouts,
        scope: config.scope,
        delta: config.delta,
        affected: affected.iter().filter(|a| **a).count(),
        bytes_per_change: bytes / measured.max(1) as u64,
        unaffected_bytes,
        changes: measured,
        p50: p(50.0),
        p99: p(99.0),
        max: p(100.0),
        latencies,
        rss_bytes: memory.rss,
        hwm_bytes: memory.hwm,
        cpu_seconds_per_change: ticks / per_second / measured.max(1) as f64,
        sync_time,
        changed_types: type_names(expected),
        unexpected_pushes: unexpected,
    })
}

async fn set_weight(
    admin: &mut AdminClient<Channel>,
    token: &str,
    weight_bp: u32,
) -> anyhow::Result<()> {
    let rollout = rollouts::changed_rollout();
    let mut request = tonic::Request::new(SetWeightRequest {
        rollout: rollout.clone(),
        weight_bp,
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the admin token is not a header value")?,
    );
    admin
        .set_weight(request)
        .await
        .with_context(|| format!("SetWeight {rollout} to {weight_bp} bp"))?;
    Ok(())
}

/// Collects the clients' events and keeps the tally.
struct Coordinator {
    clients: usize,
    events: mpsc::UnboundedReceiver<Event>,
    synced: usize,
    epoch: Option<Epoch>,
    /// Changes seen while no change was being measured.
    stray: u64,
}

impl Coordinator {
    fn new(clients: usize, events: mpsc::UnboundedReceiver<Event>) -> Self {
        Coordinator {
            clients,
            events,
            synced: 0,
            epoch: None,
            stray: 0,
        }
    }

    fn epoch_complete(&self) -> bool {
        self.epoch.as_ref().is_some_and(Epoch::is_complete)
    }

    fn progress(&self) -> String {
        match &self.epoch {
            Some(e) => format!("{} of {} clients still waiting", e.pending(), self.clients),
            None => format!("{} of {} clients synced", self.synced, self.clients),
        }
    }

    fn handle(&mut self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Synced => self.synced += 1,
            Event::Bytes { client, bytes } => {
                if let Some(epoch) = &mut self.epoch {
                    epoch.on_bytes(client, bytes);
                }
            }
            Event::Changed {
                client,
                type_index,
                at,
            } => match &mut self.epoch {
                Some(epoch) => epoch.on_change(client, type_index, at),
                None => self.stray += 1,
            },
            Event::Nacked {
                client,
                type_url,
                message,
            } => bail!("client {client} NACKed a {type_url} response: {message}"),
            Event::Failed { client, error } => bail!("client {client}: {error}"),
        }
        Ok(())
    }

    /// Handles events until `done` holds; fails at `deadline`.
    async fn wait(
        &mut self,
        deadline: Instant,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        while !done(self) {
            match tokio::time::timeout_at(deadline.into(), self.events.recv()).await {
                Ok(Some(event)) => self.handle(event)?,
                Ok(None) => bail!("waiting for {what}: every client stopped"),
                Err(_) => bail!("timed out waiting for {what}: {}", self.progress()),
            }
        }
        Ok(())
    }

    /// Handles events for `period`.
    /// Handles events until none has come for `quiet`; fails at `deadline`.
    async fn drain_until_quiet(
        &mut self,
        quiet: Duration,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        loop {
            let until = tokio::time::Instant::from_std((Instant::now() + quiet).min(deadline));
            match tokio::time::timeout_at(until, self.events.recv()).await {
                Ok(Some(event)) => self.handle(event)?,
                Ok(None) => bail!("every client stopped"),
                Err(_) if Instant::now() >= deadline => bail!("still receiving at the deadline"),
                Err(_) => return Ok(()),
            }
        }
    }

    async fn drain_for(&mut self, period: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + period;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.handle(event)?,
                Ok(None) => bail!("every client stopped"),
                Err(_) => return Ok(()),
            }
        }
    }
}

/// One simulated Envoy; reports how its stream ended.
async fn client_task(
    client: usize,
    channel: Channel,
    events: mpsc::UnboundedSender<Event>,
    scope: Option<Vec<String>>,
    delta: bool,
) {
    let id = format!("bench-{client}");
    let sotw = match &scope {
        Some(scope) => AdsClient::scoped(&id, "bench", scope),
        None => AdsClient::new(&id, "bench"),
    };
    let ended = if delta {
        client_stream(client, channel, &events, DeltaAdsClient::new(&sotw)).await
    } else {
        client_stream(client, channel, &events, sotw).await
    };
    if let Err(e) = ended {
        let _ = events.send(Event::Failed {
            client,
            error: format!("{e:#}"),
        });
    }
}

type AdsGrpc = AggregatedDiscoveryServiceClient<Channel>;

/// A simulated Envoy's side of one ADS variant (state of the world or delta): the state machine
/// and how its stream is opened.
trait Simulated: Send + 'static {
    type Request: prost::Message + std::fmt::Debug + Send + Sync + 'static;
    type Response: prost::Message + Default + Send + 'static;
    /// The stream, as errors name it.
    const STREAM: &'static str;
    fn start(&mut self) -> Vec<Self::Request>;
    fn on_response(
        &mut self,
        response: Self::Response,
    ) -> Result<Reaction<Self::Request>, ProtocolError>;
    fn is_synced(&self) -> bool;
    fn open(
        ads: AdsGrpc,
        requests: UnboundedReceiverStream<Self::Request>,
    ) -> impl Future<Output = Result<Streaming<Self::Response>, Status>> + Send;
}

impl Simulated for AdsClient {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const STREAM: &'static str = "the ADS stream";
    fn start(&mut self) -> Vec<DiscoveryRequest> {
        AdsClient::start(self)
    }
    fn on_response(&mut self, response: DiscoveryResponse) -> Result<Reaction, ProtocolError> {
        AdsClient::on_response(self, response)
    }
    fn is_synced(&self) -> bool {
        AdsClient::is_synced(self)
    }
    async fn open(
        mut ads: AdsGrpc,
        requests: UnboundedReceiverStream<DiscoveryRequest>,
    ) -> Result<Streaming<DiscoveryResponse>, Status> {
        Ok(ads
            .stream_aggregated_resources(requests)
            .await?
            .into_inner())
    }
}

impl Simulated for DeltaAdsClient {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const STREAM: &'static str = "the delta ADS stream";
    fn start(&mut self) -> Vec<DeltaDiscoveryRequest> {
        DeltaAdsClient::start(self)
    }
    fn on_response(
        &mut self,
        response: DeltaDiscoveryResponse,
    ) -> Result<Reaction<DeltaDiscoveryRequest>, ProtocolError> {
        DeltaAdsClient::on_response(self, response)
    }
    fn is_synced(&self) -> bool {
        DeltaAdsClient::is_synced(self)
    }
    async fn open(
        mut ads: AdsGrpc,
        requests: UnboundedReceiverStream<DeltaDiscoveryRequest>,
    ) -> Result<Streaming<DeltaDiscoveryResponse>, Status> {
        Ok(ads.delta_aggregated_resources(requests).await?.into_inner())
    }
}

/// Runs one simulated Envoy's stream (either variant) and reports what it receives.
async fn client_stream<C: Simulated>(
    client: usize,
    channel: Channel,
    events: &mpsc::UnboundedSender<Event>,
    mut state: C,
) -> anyhow::Result<()> {
    let (requests, outgoing) = mpsc::unbounded_channel();
    // The first requests are queued before the call: the server answers headers only then.
    for request in state.start() {
        requests.send(request)?;
    }
    let ads = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let mut responses = C::open(ads, UnboundedReceiverStream::new(outgoing))
        .await
        .with_context(|| format!("opening {}", C::STREAM))?;
    let mut synced = false;
    while let Some(response) = responses
        .message()
        .await
        .with_context(|| format!("reading {}", C::STREAM))?
    {
        let at = Instant::now();
        if synced {
            events.send(Event::Bytes {
                client,
                bytes: prost::Message::encoded_len(&response) as u64,
            })?;
        }
        let reaction = state.on_response(response)?;
        for request in reaction.requests {
            requests.send(request)?;
        }
        if let Some(message) = reaction.nack {
            events.send(Event::Nacked {
                client,
                type_url: TYPES[reaction.type_index].to_owned(),
                message,
            })?;
        }
        // Changes while syncing are the initial configuration, not something to measure.
        if reaction.changed && synced {
            events.send(Event::Changed {
                client,
                type_index: reaction.type_index,
                at,
            })?;
        }
        if !synced && state.is_synced() {
            synced = true;
            events.send(Event::Synced)?;
        }
    }
    bail!("the control plane closed {}", C::STREAM)
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
