//! The loop's state and the leader's passes: watch changes into the [`Index`] and
//! [`Workloads`], the traffic state published when it changed, and (leader only) the release
//! engine / step engine run on every managed Rollout with their writes handed to
//! [`crate::status_writer`].

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client,
    runtime::events::{Event as K8sEvent, EventType, Recorder, Reporter},
};
use sluice_analysis::runner::RunUpdate;
use sluice_api::Rollout;
use sluice_model::TrafficState;
use sluice_release::DataPlane;
use tokio::sync::{mpsc, watch};

use super::{
    Config,
    streams::{Change, Update},
};
use crate::{
    ack_report::{self, Published, Reports},
    analysis_runs::AnalysisRuns,
    fence::Fence,
    index::{Index, SourceError},
    objects::{RolloutApi, RolloutRef},
    parse::parse_rollout,
    reconcile::reconcile,
    status_writer::{self, is_conflict, truncate, write_status},
    workloads::{Workloads, managed_by_engine},
};

/// The loop's state: the index, what was published, and the leader's writers.
pub(super) struct Driver {
    client: Client,
    config: Config,
    index: Index,
    workloads: Workloads,
    /// When the release engine asked to run again (the earliest requeue).
    pub(super) wake_at: Option<tokio::time::Instant>,
    is_leader: watch::Receiver<bool>,
    tx: watch::Sender<TrafficState>,
    errors: mpsc::Sender<SourceError>,
    /// The message last sent on `errors`, per rollout.
    reported: BTreeMap<RolloutRef, String>,
    /// The message last published as an Event, per Argo rollout.
    pub(super) evented: BTreeMap<RolloutRef, String>,
    recorder: Recorder,
    /// The other replicas' data-plane reports.
    reports: Reports,
    /// Every watch has listed once. Until then the index is partial (Rollouts without their
    /// Pods, Pods without their Services): nothing is published, no error reported, no status
    /// or Event written — a partial view would route to wrong ports or mark rollouts Degraded.
    pub(super) synced: bool,
    /// Drops the watch's Rollout / ReplicaSet events that precede this replica's own writes.
    rollout_fence: Fence<RolloutRef>,
    replica_set_fence: Fence<(String, String)>,
    /// The engine's AnalysisRuns (runner tasks on the leader).
    pub(super) analysis: AnalysisRuns,
}

impl Driver {
    pub(super) fn new(
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

    pub(super) fn apply(&mut self, change: Change) {
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
    pub(super) async fn publish(&mut self) {
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
    pub(super) async fn reconcile_all(&mut self) {
        self.reconcile_engine().await;
        self.reconcile_legacy().await;
        self.delete_abandoned_reports().await;
    }

    /// Leader only: deletes the data-plane reports of replicas long gone (their watch event then
    /// drops them from `reports`).
    async fn delete_abandoned_reports(&mut self) {
        let Some(lease) = &self.config.lease else {
            return;
        };
        if !self.synced || !*self.is_leader.borrow() {
            return;
        }
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &lease.namespace);
        for gone in self.reports.abandoned(&lease.identity, Timestamp::now()) {
            ack_report::delete_report(&api, &gone.name, gone.resource_version).await;
        }
    }

    fn leads(&self) -> bool {
        self.synced && self.config.manage_sluice_rollouts && *self.is_leader.borrow()
    }

    /// Leader only: runs the release engine on every sluice.dev Rollout with a template (or
    /// workloadRef), executes its actions, writes changed statuses and sets the timer to the
    /// earliest requeue.
    pub(super) async fn reconcile_engine(&mut self) {
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
    pub(super) async fn run_update(&mut self, update: RunUpdate) -> bool {
        self.analysis
            .update(&self.client, &self.is_leader, update)
            .await
    }

    /// Leader only: runs the older step engine on every sluice.dev Rollout whose versions are
    /// made by hand (no template, no workloadRef) and writes changed statuses.
    pub(super) async fn reconcile_legacy(&mut self) {
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
