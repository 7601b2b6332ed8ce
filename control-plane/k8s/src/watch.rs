//! The I/O loop: kube watchers → [`Index`] (+ [`Workloads`]) → `watch::Sender<TrafficState>`;
//! the leader runs the release engine (or the older step engine) and hands its writes to
//! [`crate::status_writer`].
//!
//! Rollouts are watched as `DynamicObject`s and parsed one by one ([`crate::parse`]), so one
//! malformed object is reported by name (with the path of the bad field) instead of breaking the
//! whole watch. When `manage_sluice_rollouts`, ReplicaSets and Deployments are watched too; like
//! every other watch they must have listed once before anything is published or written.

use std::{collections::BTreeMap, future::Future, pin::Pin, time::Duration};

use futures::{FutureExt, Stream, StreamExt, future::ready, stream::select_all};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet},
        coordination::v1::Lease,
        core::v1::{Pod, Service},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{
        WatchStreamExt,
        events::{Event as K8sEvent, EventType, Recorder, Reporter},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use sluice_analysis::{AnalysisRun, runner::RunUpdate};
use sluice_api::{ArgoRollout, Rollout};
use sluice_model::TrafficState;
use sluice_release::DataPlane;
use tokio::sync::{mpsc, watch};

use crate::{
    K8sError,
    ack_report::{self, AckReport, Published, Reports},
    analysis_runs::{self, AnalysisRuns},
    fence::Fence,
    index::{Index, SourceError},
    lease::{self, LeaseConfig},
    objects::{POD_TEMPLATE_HASH_LABEL, RolloutApi, RolloutRef},
    reconcile::reconcile,
    status_writer::{self, is_conflict, truncate},
    workloads::{Workloads, managed_by_engine},
};
pub use crate::{
    parse::parse_rollout,
    status_writer::{status_patch, write_status},
};

/// The data-plane gate's input: for a rollout and its `status.dataPlane`, the connected proxies
/// and the newest traffic generation each has acknowledged. The binary builds it from its xDS
/// connection registry; without one the engine sees no proxies (the gate is open).
pub type DataPlaneFn =
    std::sync::Arc<dyn Fn(&RolloutRef, &Rollout) -> DataPlane + Send + Sync + 'static>;

/// A [`DataPlaneFn`] that `Config` can carry (Debug, Clone).
#[derive(Clone)]
pub struct DataPlaneSource(pub DataPlaneFn);

impl std::fmt::Debug for DataPlaneSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataPlaneSource(..)")
    }
}

/// What to watch and what to do.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch these namespaces; empty: the whole cluster.
    pub namespaces: Vec<String>,
    /// Watch `sluice.dev` Rollouts (needs their CRD installed).
    pub sluice_rollouts: bool,
    /// Watch `argoproj.io` Rollouts, read-only (observe mode; needs Argo's CRD installed).
    pub observe_argo: bool,
    /// Run the release engine (Rollouts with a template or workloadRef: watches ReplicaSets and
    /// Deployments, creates and scales versions) or the older step engine (versions made by
    /// hand) for `sluice.dev` Rollouts and write their status (leader only).
    pub manage_sluice_rollouts: bool,
    pub cluster_domain: String,
    /// Leader election. `None`: this replica writes without election (one replica only).
    pub lease: Option<LeaseConfig>,
    /// How often the leader re-runs the older step engine (its timed pauses end on this tick).
    /// The release engine runs on changes and on the requeue it returns.
    pub resync: Duration,
    /// Names this replica in Events (e.g. the pod name).
    pub instance: Option<String>,
    /// What the connected proxies acknowledged (the data-plane gate); `None`: no proxies seen.
    pub data_plane: Option<DataPlaneSource>,
    /// This replica's proxies' acknowledgements (the data-plane gate, [`crate::ack_report`]):
    /// the leader counts them and re-runs the engine when they change; with a `lease`, every
    /// replica reports them in its Lease and the leader adds the other replicas' reports.
    pub acks: Option<watch::Receiver<AckReport>>,
    /// Receives each publication with the generations its traffic carries (the gate's input).
    pub published: Option<watch::Sender<Published>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespaces: Vec::new(),
            sluice_rollouts: true,
            observe_argo: false,
            manage_sluice_rollouts: true,
            cluster_domain: crate::DEFAULT_CLUSTER_DOMAIN.into(),
            lease: None,
            resync: Duration::from_secs(1),
            instance: None,
            data_plane: None,
            acks: None,
            published: None,
        }
    }
}

/// One watch event, with a (re)list collapsed into one `Reset`.
#[derive(Debug)]
enum Update<K> {
    Apply(Box<K>),
    Delete(Box<K>),
    Reset(Vec<K>),
}

#[derive(Debug)]
enum Change {
    Rollout(RolloutApi, Option<String>, Update<DynamicObject>),
    Pod(Option<String>, Update<Pod>),
    Service(Option<String>, Update<Service>),
    ReplicaSet(Option<String>, Update<ReplicaSet>),
    Deployment(Option<String>, Update<Deployment>),
    AnalysisRun(Option<String>, Update<AnalysisRun>),
    AckReport(Update<Lease>),
    Failed(String, watcher::Error),
}

type ChangeStream = Pin<Box<dyn Stream<Item = Change> + Send>>;

/// Watches until `shutdown`, publishing the traffic state on `tx` (only when it changed) and each
/// new or changed per-rollout error on `errors`. `tx` also notifies once when every watch has
/// finished its initial list, even if the state is unchanged: until then the state is partial,
/// and a control plane that served it would tell Envoys that rollouts vanished.
pub async fn run(
    client: Client,
    config: Config,
    tx: watch::Sender<TrafficState>,
    errors: mpsc::Sender<SourceError>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), K8sError> {
    if config.manage_sluice_rollouts && !config.sluice_rollouts {
        return Err(K8sError::Config(
            "managing sluice.dev Rollouts needs watching them (sluice_rollouts)".into(),
        ));
    }
    let (leader_tx, mut leader_rx) = watch::channel(config.lease.is_none());
    let (stop_elector, elector_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut elector = config.lease.clone().map(|lease_config| {
        let api = Api::namespaced(client.clone(), &lease_config.namespace);
        let stop = elector_stopped.map(|_| ());
        tokio::spawn(lease::elect(api, lease_config, leader_tx, stop))
    });

    let (stop_reporter, reporter_stopped) = tokio::sync::oneshot::channel::<()>();
    let reporter = match (&config.lease, &config.acks) {
        (Some(lease), Some(acks)) => {
            let report = ack_report::ReportConfig {
                namespace: lease.namespace.clone(),
                identity: lease.identity.clone(),
                duration: lease.lease_duration,
            };
            let api = Api::namespaced(client.clone(), &lease.namespace);
            let stop = reporter_stopped.map(|_| ());
            Some(tokio::spawn(ack_report::write_reports(
                api,
                report,
                acks.clone(),
                stop,
            )))
        }
        _ => None,
    };
    let mut local_acks = config.acks.clone();
    let streams = streams(&client, &config);
    let watches = streams.len();
    let mut listed = std::collections::BTreeSet::new();
    let mut announced_sync = false;
    let synced_tx = tx.clone();
    let mut changes = select_all(streams);
    let (run_updates, mut run_updates_rx) = mpsc::unbounded_channel::<RunUpdate>();
    let mut driver = Driver::new(client, config.clone(), leader_rx.clone(), tx, errors);
    driver.analysis = AnalysisRuns::new(run_updates);
    let mut tick = tokio::time::interval(config.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // The elector runs until told to stop: ending before is a failure, and a replica
            // that no longer renews its Lease must not go on writing as the leader.
            ended = task_end(&mut elector) => {
                let message = match ended {
                    Ok(()) => "it returned".to_owned(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(task = "lease election", %message, "the leader election task ended");
                return Err(K8sError::Task { task: "lease election", message });
            }
            Some(change) = changes.next() => {
                note_listed(&change, &mut listed);
                driver.apply(change);
                // Take whatever else is ready, then publish once.
                while let Some(Some(change)) = changes.next().now_or_never() {
                    note_listed(&change, &mut listed);
                    driver.apply(change);
                }
                if !announced_sync && listed.len() >= watches {
                    announced_sync = true;
                    driver.synced = true;
                    tracing::info!(watches, "initial lists done: the traffic state is complete");
                    driver.publish().await;
                    // Notify even if the state equals the channel's initial (empty) value.
                    synced_tx.send_modify(|_| {});
                } else {
                    driver.publish().await;
                }
                driver.reconcile_all().await;
            }
            _ = tick.tick() => driver.reconcile_legacy().await,
            // An AnalysisRun's new status: written to its object, then the engine looks again.
            Some(update) = run_updates_rx.recv() => {
                let mut changed = driver.run_update(update).await;
                while let Ok(update) = run_updates_rx.try_recv() {
                    changed |= driver.run_update(update).await;
                }
                if changed {
                    driver.reconcile_engine().await;
                }
            }
            // This replica's proxies acknowledged something: the engine looks again, once per
            // burst.
            () = acks_changed(&mut local_acks) => {
                let at = tokio::time::Instant::now() + Duration::from_millis(50);
                driver.wake_at = Some(driver.wake_at.map_or(at, |w| w.min(at)));
            }
            () = sleep_until(driver.wake_at) => {
                driver.wake_at = None;
                driver.reconcile_all().await;
            }
            Ok(()) = leader_rx.changed() => {
                if !*leader_rx.borrow_and_update() {
                    // The next leader resumes the runs.
                    driver.analysis.stop_all();
                } else {
                    // A new leader reports what is wrong again.
                    driver.evented.clear();
                    driver.publish().await;
                    driver.reconcile_all().await;
                }
            }
        }
    }
    let _ = stop_elector.send(());
    let _ = stop_reporter.send(());
    if let Some(reporter) = reporter {
        let _ = reporter.await;
    }
    if let Some(elector) = elector {
        let _ = elector.await;
    }
    Ok(())
}

/// Resolves at `at` (never without one).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when this replica's acknowledgements change (never without them, or once their
/// sender is gone).
async fn acks_changed(acks: &mut Option<watch::Receiver<AckReport>>) {
    let gone = match acks {
        Some(rx) => match rx.changed().await {
            Ok(()) => {
                rx.borrow_and_update();
                return;
            }
            Err(_) => true,
        },
        None => false,
    };
    if gone {
        *acks = None;
    }
    std::future::pending().await
}

/// Resolves when the task ends (never without a task).
async fn task_end(
    task: &mut Option<tokio::task::JoinHandle<()>>,
) -> Result<(), tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

fn streams(client: &Client, config: &Config) -> Vec<ChangeStream> {
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let mut out: Vec<ChangeStream> = Vec::new();
    if let (Some(lease), Some(_)) = (&config.lease, &config.acks) {
        // The other replicas' data-plane reports (every replica watches: any may lead).
        let leases: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
        let selector = format!("{}=true", ack_report::REPORT_LABEL);
        out.push(watch_updates(
            leases,
            watcher::Config::default().labels(&selector),
            "data-plane reports (Leases)".into(),
            Change::AckReport,
        ));
    }
    for scope in scopes {
        let mut rollout_apis = Vec::new();
        if config.sluice_rollouts {
            rollout_apis.push((RolloutApi::Sluice, ApiResource::erase::<Rollout>(&())));
        }
        if config.observe_argo {
            rollout_apis.push((RolloutApi::Argo, ApiResource::erase::<ArgoRollout>(&())));
        }
        for (api, resource) in rollout_apis {
            let objects: Api<DynamicObject> = match &scope {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            let what = format!("{} Rollouts", api.api_version());
            let s = scope.clone();
            out.push(watch_updates(
                objects,
                watcher::Config::default(),
                what,
                move |u| Change::Rollout(api, s.clone(), u),
            ));
        }
        let pods: Api<Pod> = scoped_api(client, &scope);
        let s = scope.clone();
        let pod_config = watcher::Config::default().labels(POD_TEMPLATE_HASH_LABEL);
        out.push(watch_updates(pods, pod_config, "Pods".into(), move |u| {
            Change::Pod(s.clone(), u)
        }));
        let services: Api<Service> = scoped_api(client, &scope);
        let s = scope.clone();
        out.push(watch_updates(
            services,
            watcher::Config::default(),
            "Services".into(),
            move |u| Change::Service(s.clone(), u),
        ));
        if config.manage_sluice_rollouts {
            let replica_sets: Api<ReplicaSet> = scoped_api(client, &scope);
            let s = scope.clone();
            out.push(watch_updates(
                replica_sets,
                watcher::Config::default().labels(POD_TEMPLATE_HASH_LABEL),
                "ReplicaSets".into(),
                move |u| Change::ReplicaSet(s.clone(), u),
            ));
            let deployments: Api<Deployment> = scoped_api(client, &scope);
            let s = scope.clone();
            out.push(watch_updates(
                deployments,
                watcher::Config::default(),
                "Deployments".into(),
                move |u| Change::Deployment(s.clone(), u),
            ));
            // The engine's AnalysisRuns: a new leader finds (and resumes) the runs it did not start.
            let runs: Api<AnalysisRun> = scoped_api(client, &scope);
            let s = scope.clone();
            out.push(watch_updates(
                runs,
                watcher::Config::default().labels(analysis_runs::ROLLOUT_LABEL),
                "AnalysisRuns".into(),
                move |u| Change::AnalysisRun(s.clone(), u),
            ));
        }
    }
    out
}

fn scoped_api<K>(client: &Client, scope: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Records which watch finished a (re)list: one key per watch stream.
fn note_listed(change: &Change, listed: &mut std::collections::BTreeSet<String>) {
    let key = match change {
        Change::Rollout(api, ns, Update::Reset(_)) => format!("rollout/{api:?}/{ns:?}"),
        Change::Pod(ns, Update::Reset(_)) => format!("pod/{ns:?}"),
        Change::Service(ns, Update::Reset(_)) => format!("service/{ns:?}"),
        Change::ReplicaSet(ns, Update::Reset(_)) => format!("replicaset/{ns:?}"),
        Change::Deployment(ns, Update::Reset(_)) => format!("deployment/{ns:?}"),
        Change::AnalysisRun(ns, Update::Reset(_)) => format!("analysisrun/{ns:?}"),
        Change::AckReport(Update::Reset(_)) => "ackreport".to_owned(),
        _ => return,
    };
    listed.insert(key);
}

/// A watcher (with backoff) as a stream of [`Change`]s; a relist becomes one `Reset`.
fn watch_updates<K>(
    api: Api<K>,
    config: watcher::Config,
    what: String,
    wrap: impl Fn(Update<K>) -> Change + Send + 'static,
) -> ChangeStream
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let stream =
        watcher(api, config)
            .default_backoff()
            .scan(None::<Vec<K>>, move |buffer, event| {
                let change = match event {
                    Ok(watcher::Event::Init) => {
                        *buffer = Some(Vec::new());
                        None
                    }
                    Ok(watcher::Event::InitApply(object)) => {
                        buffer.get_or_insert_default().push(object);
                        None
                    }
                    Ok(watcher::Event::InitDone) => {
                        Some(wrap(Update::Reset(buffer.take().unwrap_or_default())))
                    }
                    Ok(watcher::Event::Apply(object)) => {
                        Some(wrap(Update::Apply(Box::new(object))))
                    }
                    Ok(watcher::Event::Delete(object)) => {
                        Some(wrap(Update::Delete(Box::new(object))))
                    }
                    Err(error) => Some(Change::Failed(what.clone(), error)),
                };
                ready(Some(change))
            });
    Box::pin(stream.filter_map(ready))
}

/// The loop's state: the index, what was published, and the leader's writers.
struct Driver {
    client: Client,
    config: Config,
    index: Index,
    workloads: Workloads,
    /// When the release engine asked to run again (the earliest requeue).
    wake_at: Option<tokio::time::Instant>,
    is_leader: watch::Receiver<bool>,
    tx: watch::Sender<TrafficState>,
    errors: mpsc::Sender<SourceError>,
    /// The message last sent on `errors`, per rollout.
    reported: BTreeMap<RolloutRef, String>,
    /// The message last published as an Event, per Argo rollout.
    evented: BTreeMap<RolloutRef, String>,
    recorder: Recorder,
    /// The other replicas' data-plane reports.
    reports: Reports,
    /// Every watch has listed once. Until then the index is partial (Rollouts without their
    /// Pods, Pods without their Services): nothing is published, no error reported, no status
    /// or Event written — a partial view would route to wrong ports or mark rollouts Degraded.
    synced: bool,
    /// Drops the watch's Rollout / ReplicaSet events that precede this replica's own writes.
    rollout_fence: Fence<RolloutRef>,
    replica_set_fence: Fence<(String, String)>,
    /// The engine's AnalysisRuns (runner tasks on the leader).
    analysis: AnalysisRuns,
}

impl Driver {
    fn new(
        client: Client,
        config: Config,
        is_leader: watch::Receiver<bool>,
        tx: watch::Sender<TrafficState>,
        errors: mpsc::Sender<SourceError>,
    ) -> Self {
        let reporter = Reporter {
            controller: "sluice".into(),
            instance: config.instance.clone(),
        };
        Driver {
            recorder: Recorder::new(client.clone(), reporter),
            index: Index::new(&config.cluster_domain),
            workloads: Workloads::default(),
            wake_at: None,
            client,
            config,
            is_leader,
            tx,
            errors,
            reported: BTreeMap::new(),
            evented: BTreeMap::new(),
            reports: Reports::default(),
            synced: false,
            rollout_fence: Fence::default(),
            replica_set_fence: Fence::default(),
            // Replaced by `run`, which keeps the receiving end.
            analysis: AnalysisRuns::new(mpsc::unbounded_channel().0),
        }
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Rollout(api, _, Update::Apply(object)) => {
                let rv = object.metadata.resource_version.clone();
                let (object, rollout) = parse_rollout(api, &object);
                if !self.rollout_fence.admit(&object, rv.as_deref()) {
                    tracing::debug!(%object, ?rv, "an event older than this replica's write");
                    return;
                }
                self.index.apply_rollout(object, rollout);
            }
            Change::Rollout(api, _, Update::Delete(object)) => {
                let (object, _) = parse_rollout(api, &object);
                self.rollout_fence.forget(&object);
                self.index.delete_rollout(&object);
            }
            Change::Rollout(api, scope, Update::Reset(objects)) => {
                self.rollout_fence
                    .reset(|r| r.api == api && scope.as_deref().is_none_or(|ns| r.namespace == ns));
                let rollouts = objects.iter().map(|o| parse_rollout(api, o)).collect();
                self.index.reset_rollouts(api, scope.as_deref(), rollouts);
            }
            Change::Pod(scope, update) => match update {
                Update::Apply(pod) => self.index.apply_pod(&pod),
                Update::Delete(pod) => {
                    let (ns, name) = ns_name(&pod.metadata);
                    self.index.delete_pod(&ns, &name);
                }
                Update::Reset(pods) => self.index.reset_pods(scope.as_deref(), &pods),
            },
            Change::Service(_, Update::Apply(service)) => self.index.apply_service(&service),
            Change::Service(_, Update::Delete(service)) => {
                let (ns, name) = ns_name(&service.metadata);
                self.index.delete_service(&ns, &name);
            }
            Change::Service(scope, Update::Reset(services)) => {
                self.index.reset_services(scope.as_deref(), &services);
            }
            Change::ReplicaSet(scope, update) => match update {
                Update::Apply(rs) => {
                    let (key, rv) = (ns_name(&rs.metadata), rs.metadata.resource_version.clone());
                    if self.replica_set_fence.admit(&key, rv.as_deref()) {
                        self.workloads.apply_replica_set(*rs);
                    }
                }
                Update::Delete(rs) => {
                    self.replica_set_fence.forget(&ns_name(&rs.metadata));
                    self.workloads.delete_replica_set(&rs);
                }
                Update::Reset(all) => {
                    self.replica_set_fence
                        .reset(|(ns, _)| scope.as_deref().is_none_or(|s| s == ns));
                    self.workloads.reset_replica_sets(scope.as_deref(), all);
                }
            },
            Change::Deployment(scope, update) => match update {
                Update::Apply(d) => self.workloads.apply_deployment(*d),
                Update::Delete(d) => self.workloads.delete_deployment(&d),
                Update::Reset(all) => self.workloads.reset_deployments(scope.as_deref(), all),
            },
            Change::AnalysisRun(scope, update) => match update {
                Update::Apply(run) => self.analysis.apply(*run),
                Update::Delete(run) => self.analysis.delete(&run),
                Update::Reset(all) => self.analysis.reset(scope.as_deref(), all),
            },
            Change::AckReport(update) => match update {
                Update::Apply(lease) => self.reports.apply(&lease),
                Update::Delete(lease) => self.reports.delete(&lease),
                Update::Reset(all) => self.reports.reset(&all),
            },
            Change::Failed(what, error) => tracing::warn!(%error, "watching {what}"),
        }
    }

    /// Publishes the traffic state if it changed, new errors, and (leader) Events.
    async fn publish(&mut self) {
        if !self.synced {
            return;
        }
        let state = self.index.state();
        if let Some(published) = &self.config.published {
            // Before the state: whoever reads a state finds its generations already there.
            let generations = self.generations(&state.traffic);
            published.send_if_modified(|current| {
                let next = Published {
                    traffic: state.traffic.clone(),
                    generations,
                };
                let changed = *current != next;
                if changed {
                    *current = next;
                }
                changed
            });
        }
        self.tx.send_if_modified(|current| {
            let changed = *current != state.traffic;
            if changed {
                tracing::info!(
                    rollouts = state.traffic.rollouts.len(),
                    "traffic state changed"
                );
                *current = state.traffic.clone();
            }
            changed
        });
        let mut reported = BTreeMap::new();
        for error in &state.errors {
            if self.reported.get(&error.object) != Some(&error.message) {
                tracing::warn!(%error, "rollout not served as written");
                if self.errors.try_send(error.clone()).is_err() {
                    tracing::debug!("error channel full or closed");
                }
            }
            reported.insert(error.object.clone(), error.message.clone());
        }
        self.reported = reported;
        for error in state
            .errors
            .iter()
            .filter(|e| e.object.api == RolloutApi::Argo)
        {
            if self.evented.get(&error.object) == Some(&error.message) || !*self.is_leader.borrow()
            {
                continue;
            }
            let event = K8sEvent {
                type_: EventType::Warning,
                reason: "InvalidRollout".into(),
                note: Some(truncate(&error.message, 1000)),
                action: "Route".into(),
                secondary: None,
            };
            let uid = self
                .index
                .rollout(&error.object)
                .and_then(|r| r.metadata.uid.clone());
            let reference = status_writer::rollout_reference(&error.object, uid);
            match self.recorder.publish(&event, &reference).await {
                Ok(()) => {
                    self.evented
                        .insert(error.object.clone(), error.message.clone());
                }
                Err(e) => tracing::warn!(error = %e, object = %error.object, "publishing an Event"),
            }
        }
    }

    /// The `status.dataPlane.generation` of each engine-run rollout `traffic` serves.
    fn generations(&self, traffic: &TrafficState) -> BTreeMap<String, i64> {
        self.index
            .rollouts_of(RolloutApi::Sluice)
            .filter_map(|(_, doc)| {
                let name = sluice_api::rollout_name(doc).ok()?;
                let generation = doc.status.as_ref()?.data_plane.as_ref()?.generation;
                traffic
                    .rollouts
                    .contains_key(&name)
                    .then_some((name, generation))
            })
            .collect()
    }

    /// The data-plane gate's input for one rollout: the configured source, this replica's
    /// proxies and the live reports of the others.
    fn data_plane(&mut self, object: &RolloutRef, rollout: &Rollout) -> DataPlane {
        let mut data_plane = match &self.config.data_plane {
            Some(source) => (source.0)(object, rollout),
            None => DataPlane::default(),
        };
        let Some(local) = &self.config.acks else {
            return data_plane;
        };
        let Ok(name) = sluice_api::rollout_name(rollout) else {
            return data_plane;
        };
        data_plane.proxies.extend(local.borrow().proxies(&name));
        if let Some(lease) = &self.config.lease {
            let now = Timestamp::now();
            data_plane
                .proxies
                .extend(self.reports.proxies(&name, &lease.identity, now));
            // A replica that stops renewing drops out then: look again.
            if let Some(after) = self.reports.next_expiry(&lease.identity, now) {
                let at = tokio::time::Instant::now() + after;
                self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
            }
        }
        data_plane
    }

    /// Leader only: every sluice.dev Rollout through its engine.
    async fn reconcile_all(&mut self) {
        self.reconcile_engine().await;
        self.reconcile_legacy().await;
    }

    fn leads(&self) -> bool {
        self.synced && self.config.manage_sluice_rollouts && *self.is_leader.borrow()
    }

    /// Leader only: runs the release engine on every sluice.dev Rollout with a template (or
    /// workloadRef), executes its actions, writes changed statuses and sets the timer to the
    /// earliest requeue.
    async fn reconcile_engine(&mut self) {
        if !self.leads() {
            return;
        }
        // A new leader (or a restarted one) measures the runs nothing measures.
        self.analysis
            .resume_all(&self.client, &self.is_leader)
            .await;
        let rollouts: Vec<(RolloutRef, Rollout)> = self
            .index
            .rollouts_of(RolloutApi::Sluice)
            .filter(|(_, doc)| managed_by_engine(doc))
            .map(|(r, doc)| (r.clone(), doc.clone()))
            .collect();
        let mut wrote = false;
        for (object, rollout) in rollouts {
            let data_plane = self.data_plane(&object, &rollout);
            let mut observed = self.workloads.observed(&rollout, data_plane);
            observed.pods = self.index.restart_pods(&rollout);
            observed.analysis_runs = self.analysis.observed(&object.namespace, &object.name);
            let out = sluice_release::reconcile(&rollout, &observed, Timestamp::now());
            if let Some(after) = out.requeue_after {
                let at = tokio::time::Instant::now() + after;
                self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
            }
            let done = status_writer::execute(
                &self.client,
                &self.recorder,
                &self.is_leader,
                &object,
                &rollout,
                out.actions,
                &mut self.analysis,
            )
            .await;
            for rs in done.replica_sets {
                self.replica_set_fence.wrote(
                    ns_name(&rs.metadata),
                    rs.metadata.resource_version.as_deref(),
                );
                self.workloads.apply_replica_set(rs);
            }
            for name in done.deleted {
                self.workloads.forget_replica_set(&object.namespace, &name);
            }
            for deployment in done.deployments {
                self.workloads.apply_deployment(deployment);
            }
            if done.not_leader {
                return;
            }
            let old = rollout.status.clone().unwrap_or_default();
            if out.status == old {
                continue;
            }
            let rv = rollout.metadata.resource_version.as_deref();
            match write_status(
                &self.client,
                &self.is_leader,
                &object,
                rv,
                &old,
                &out.status,
            )
            .await
            {
                Ok(Some(updated)) => {
                    self.rollout_fence
                        .wrote(object.clone(), updated.metadata.resource_version.as_deref());
                    self.index.apply_rollout(object, Ok(updated));
                    wrote = true;
                }
                Ok(None) => return,
                // Changed since it was read: its newer event is on the way and reconciles again.
                Err(error) if is_conflict(&error) => {
                    tracing::debug!(%error, "status write on a stale view refused");
                }
                Err(error) => {
                    tracing::warn!(%error, "status write");
                    // Try again soon rather than on the next change only.
                    let at = tokio::time::Instant::now() + Duration::from_secs(1);
                    self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
                }
            }
        }
        if wrote {
            self.publish().await;
        }
    }

    /// Records a runner's update and writes it to its AnalysisRun; true when it changed.
    async fn run_update(&mut self, update: RunUpdate) -> bool {
        self.analysis
            .update(&self.client, &self.is_leader, update)
            .await
    }

    /// Leader only: runs the older step engine on every sluice.dev Rollout whose versions are
    /// made by hand (no template, no workloadRef) and writes changed statuses.
    async fn reconcile_legacy(&mut self) {
        if !self.leads() {
            return;
        }
        let objects: Vec<RolloutRef> = self
            .index
            .rollouts_of(RolloutApi::Sluice)
            .filter(|(_, doc)| !managed_by_engine(doc))
            .map(|(r, _)| r.clone())
            .collect();
        let mut wrote = false;
        for object in objects {
            let Some(result) = reconcile(&self.index, &object, Timestamp::now()) else {
                continue;
            };
            if !result.changed {
                continue;
            }
            let Some(doc) = self.index.rollout(&object) else {
                continue;
            };
            let old = doc.status.clone().unwrap_or_default();
            let rv = doc.metadata.resource_version.clone();
            match write_status(
                &self.client,
                &self.is_leader,
                &object,
                rv.as_deref(),
                &old,
                &result.status,
            )
            .await
            {
                Ok(Some(updated)) => {
                    self.rollout_fence
                        .wrote(object.clone(), updated.metadata.resource_version.as_deref());
                    self.index.apply_rollout(object, Ok(updated));
                    wrote = true;
                }
                Ok(None) => return,
                Err(error) if is_conflict(&error) => {
                    tracing::debug!(%error, "status write on a stale view refused");
                }
                Err(error) => tracing::warn!(%error, "status write"),
            }
        }
        if wrote {
            self.publish().await;
        }
    }
}

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}
