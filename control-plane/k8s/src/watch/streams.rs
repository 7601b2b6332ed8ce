//! The watch streams: one kube watcher per kind and namespace (with backoff), each turned into a
//! stream of [`Change`]s in which a (re)list is one `Reset`; the loop in [`super::run`] merges them.

use std::pin::Pin;

use futures::{Stream, StreamExt, future::ready};
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    coordination::v1::Lease,
    core::v1::{Pod, Service},
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use sluice_analysis::AnalysisRun;
use sluice_api::{ArgoRollout, Rollout};

use super::Config;
use crate::{
    ack_report, analysis_runs,
    objects::{POD_TEMPLATE_HASH_LABEL, RolloutApi},
};

/// One watch event, with a (re)list collapsed into one `Reset`.
#[derive(Debug)]
pub(super) enum Update<K> {
    Apply(Box<K>),
    Delete(Box<K>),
    Reset(Vec<K>),
}

#[derive(Debug)]
pub(super) enum Change {
    Rollout(RolloutApi, Option<String>, Update<DynamicObject>),
    Pod(Option<String>, Update<Pod>),
    Service(Option<String>, Update<Service>),
    ReplicaSet(Option<String>, Update<ReplicaSet>),
    Deployment(Option<String>, Update<Deployment>),
    AnalysisRun(Option<String>, Update<AnalysisRun>),
    AckReport(Update<Lease>),
    Failed(String, watcher::Error),
}

pub(super) type ChangeStream = Pin<Box<dyn Stream<Item = Change> + Send>>;

pub(super) fn streams(client: &Client, config: &Config) -> Vec<ChangeStream> {
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
pub(super) fn note_listed(change: &Change, listed: &mut std::collections::BTreeSet<String>) {
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
