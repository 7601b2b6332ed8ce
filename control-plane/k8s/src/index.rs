//! The index: every watched Rollout, Pod and Service, and the [`TrafficState`] they make.
//!
//! Pure (no client): the watch layer calls `apply_*` / `delete_*` / `reset_*` per watch event
//! and [`Index::state`] after a batch. Per rollout:
//!
//! - versions = the hashes (`rollouts-pod-template-hash`) of the live pods in its namespace that
//!   its `spec.selector` selects; a version's endpoints are those pods that are Ready and have an
//!   IP, at the target port of its stable (else canary) Service;
//! - hosts = `spec.hosts` + `name`, `name.ns`, `name.ns.svc`, `name.ns.svc.<cluster domain>` of
//!   its stable and canary Services (blue/green: its active Service);
//! - blue/green preview hosts = the same names of its preview Service (and
//!   `spec.strategy.blueGreen.previewHosts`), routed to `status.blueGreen.previewSelector`;
//! - stable, canary, weight, header routes from its status and steps (`sluice_api::derive_rollout`).
//!
//! A rollout that fails (unparsable, bad selector, derivation or validation, a host another
//! rollout has) is reported and keeps serving its last good state.

use std::{collections::BTreeMap, net::SocketAddr};

use k8s_openapi::{
    api::core::v1::{Pod, Service},
    jiff::Timestamp,
};
use sluice_api::{ApiError, Rollout, derive_rollout_with_preview};
use sluice_model::{RolloutState, TrafficState, Version};

use crate::{
    objects::{PodInfo, RolloutApi, RolloutRef, ServiceInfo},
    selector::Selector,
};

/// Kubernetes' default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// A problem with one Rollout, for the I/O layer to report (condition, Event, log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceError {
    pub object: RolloutRef,
    pub message: String,
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// The result of [`Index::state`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexState {
    /// What to serve: valid as a whole.
    pub traffic: TrafficState,
    /// One entry per failing rollout, in object order.
    pub errors: Vec<SourceError>,
}

/// A live version of a rollout, for the step engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveHash {
    pub hash: String,
    /// The newest creation time among its pods.
    pub newest_pod: Option<Timestamp>,
}

type Key = (String, String);

#[derive(Debug)]
pub struct Index {
    cluster_domain: String,
    rollouts: BTreeMap<RolloutRef, Result<Rollout, String>>,
    pods: BTreeMap<Key, PodInfo>,
    services: BTreeMap<Key, ServiceInfo>,
    last_good: BTreeMap<RolloutRef, RolloutState>,
}

impl Default for Index {
    fn default() -> Self {
        Index::new(DEFAULT_CLUSTER_DOMAIN)
    }
}

impl Index {
    pub fn new(cluster_domain: &str) -> Self {
        Index {
            cluster_domain: cluster_domain.trim_matches('.').to_owned(),
            rollouts: BTreeMap::new(),
            pods: BTreeMap::new(),
            services: BTreeMap::new(),
            last_good: BTreeMap::new(),
        }
    }

    /// Adds or replaces a Rollout; `Err` holds why the object could not be read as a Rollout.
    pub fn apply_rollout(&mut self, object: RolloutRef, rollout: Result<Rollout, String>) {
        self.rollouts.insert(object, rollout);
    }

    pub fn delete_rollout(&mut self, object: &RolloutRef) {
        self.rollouts.remove(object);
        self.last_good.remove(object);
    }

    /// Replaces every Rollout of `api` (in `namespace`, or everywhere) after a (re)list.
    pub fn reset_rollouts(
        &mut self,
        api: RolloutApi,
        namespace: Option<&str>,
        rollouts: Vec<(RolloutRef, Result<Rollout, String>)>,
    ) {
        let stale: Vec<RolloutRef> = self
            .rollouts
            .keys()
            .filter(|r| r.api == api && namespace.is_none_or(|ns| r.namespace == ns))
            .cloned()
            .collect();
        for object in &stale {
            self.delete_rollout(object);
        }
        for (object, rollout) in rollouts {
            self.apply_rollout(object, rollout);
        }
    }

    /// The Rollout as last applied (status included), if it parsed.
    pub fn rollout(&self, object: &RolloutRef) -> Option<&Rollout> {
        self.rollouts.get(object).and_then(|r| r.as_ref().ok())
    }

    /// Every Rollout of `api` that parsed.
    pub fn rollouts_of(&self, api: RolloutApi) -> impl Iterator<Item = (&RolloutRef, &Rollout)> {
        self.rollouts
            .iter()
            .filter(move |(r, _)| r.api == api)
            .filter_map(|(r, doc)| Some((r, doc.as_ref().ok()?)))
    }

    pub fn apply_pod(&mut self, pod: &Pod) {
        let info = PodInfo::from_pod(pod);
        self.pods
            .insert((info.namespace.clone(), info.name.clone()), info);
    }

    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        self.pods.remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Replaces every Pod (in `namespace`, or everywhere) after a (re)list.
    pub fn reset_pods(&mut self, namespace: Option<&str>, pods: &[Pod]) {
        self.pods
            .retain(|(ns, _), _| namespace.is_some_and(|n| n != ns));
        for pod in pods {
            self.apply_pod(pod);
        }
    }

    pub fn apply_service(&mut self, service: &Service) {
        let info = ServiceInfo::from_service(service);
        self.services
            .insert((info.namespace.clone(), info.name.clone()), info);
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        self.services
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Replaces every Service (in `namespace`, or everywhere) after a (re)list.
    pub fn reset_services(&mut self, namespace: Option<&str>, services: &[Service]) {
        self.services
            .retain(|(ns, _), _| namespace.is_some_and(|n| n != ns));
        for service in services {
            self.apply_service(service);
        }
    }

    /// The traffic state to serve and the rollouts that fail. Remembers each rollout's last good
    /// state, which serves while the rollout fails.
    pub fn state(&mut self) -> IndexState {
        let mut out = IndexState::default();
        let mut host_owner: BTreeMap<String, String> = BTreeMap::new();
        let mut good = BTreeMap::new();
        for (object, rollout) in &self.rollouts {
            let fail = |message: String| SourceError {
                object: object.clone(),
                message,
            };
            let derived = match rollout {
                Err(message) => Err(fail(message.clone())),
                // Not routable yet (the step engine, or Argo, has not picked a stable version);
                // not an error.
                Ok(doc) if !has_stable(doc) => Ok(None),
                // The release engine's first version, its pods not yet listed: the same.
                Ok(doc) if self.published_stable_without_pods(doc) => Ok(None),
                Ok(doc) => self.derive(doc).map(Some).map_err(|e| fail(e.to_string())),
            };
            let last_good = self.last_good.get(object);
            let mut serve = None;
            match derived {
                Ok(Some(state)) => match conflict(&state, &out.traffic, &host_owner) {
                    None => {
                        good.insert(object.clone(), state.clone());
                        serve = Some(state);
                    }
                    Some(message) => out.errors.push(fail(message)),
                },
                Ok(None) => {}
                Err(error) => out.errors.push(error),
            }
            if serve.is_none()
                && let Some(previous) = last_good
            {
                good.insert(object.clone(), previous.clone());
                if conflict(previous, &out.traffic, &host_owner).is_none() {
                    serve = Some(previous.clone());
                }
            }
            if let Some(state) = serve {
                for host in &state.hosts {
                    host_owner.insert(host.clone(), state.name.clone());
                }
                out.traffic.rollouts.insert(state.name.clone(), state);
            }
        }
        self.last_good = good;
        out
    }

    /// Derives one rollout against the current pods and services (used by [`Index::state`],
    /// and by the step engine's caller to check a status before writing it).
    /// A rollout the release engine runs is derived from the traffic it published
    /// ([`crate::workloads::published_view`]).
    pub fn derive(&self, doc: &Rollout) -> Result<RolloutState, ApiError> {
        let doc = &*crate::workloads::published_view(doc);
        let name = sluice_api::rollout_name(doc)?;
        let versions = self.versions(doc, &name)?;
        let preview = preview_service(doc).map_or_else(Vec::new, |svc| self.hosts_of(doc, &[svc]));
        derive_rollout_with_preview(
            doc,
            &versions,
            &self.hosts_of(doc, &service_names(doc)),
            &preview,
        )
    }

    /// The stable version the release engine published has no pods (yet): its first
    /// ReplicaSet is starting. A rollout already served keeps its last good state meanwhile.
    fn published_stable_without_pods(&self, doc: &Rollout) -> bool {
        let Some(stable) = doc
            .status
            .as_ref()
            .and_then(|s| s.data_plane.as_ref())
            .map(|d| d.traffic.stable.as_str())
            .filter(|s| !s.is_empty())
        else {
            return false;
        };
        self.live_hashes(doc)
            .is_ok_and(|live| live.iter().all(|h| h.hash != stable))
    }

    /// The live versions of a rollout with the creation time of their newest pod.
    pub fn live_hashes(&self, doc: &Rollout) -> Result<Vec<LiveHash>, ApiError> {
        let name = sluice_api::rollout_name(doc)?;
        let selector = selector(doc, &name)?;
        let mut newest: BTreeMap<&str, Option<Timestamp>> = BTreeMap::new();
        for pod in self.selected_pods(doc, &selector) {
            if let Some(hash) = &pod.hash {
                let slot = newest.entry(hash).or_default();
                *slot = (*slot).max(pod.created);
            }
        }
        Ok(newest
            .into_iter()
            .map(|(hash, newest_pod)| LiveHash {
                hash: hash.to_owned(),
                newest_pod,
            })
            .collect())
    }

    /// The rollout's pods (its selector, with a version hash), terminating ones included, for a
    /// restart (`spec.restartAt`); empty if its selector does not parse.
    pub fn restart_pods(&self, doc: &Rollout) -> Vec<sluice_release::ObservedPod> {
        let Ok(name) = sluice_api::rollout_name(doc) else {
            return Vec::new();
        };
        let Ok(selector) = selector(doc, &name) else {
            return Vec::new();
        };
        let namespace = namespace_of(doc);
        self.pods
            .range((namespace.to_owned(), String::new())..)
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|(_, pod)| pod)
            .filter(|pod| selector.matches(&pod.labels))
            .filter_map(|pod| {
                Some(sluice_release::ObservedPod {
                    name: pod.name.clone(),
                    hash: pod.hash.clone()?,
                    created: pod.created,
                    deleting: pod.gone,
                })
            })
            .collect()
    }

    fn selected_pods<'a>(
        &'a self,
        doc: &'a Rollout,
        selector: &'a Selector,
    ) -> impl Iterator<Item = &'a PodInfo> + 'a {
        let namespace = namespace_of(doc).to_owned();
        self.pods
            .range((namespace.clone(), String::new())..)
            .take_while(move |((ns, _), _)| *ns == namespace)
            .map(|(_, pod)| pod)
            .filter(move |pod| !pod.gone && pod.hash.is_some() && selector.matches(&pod.labels))
    }

    fn versions(&self, doc: &Rollout, name: &str) -> Result<BTreeMap<String, Version>, ApiError> {
        let selector = selector(doc, name)?;
        // The stable Service's target port, else the canary Service's.
        let service = service_names(doc).into_iter().find_map(|svc| {
            self.services
                .get(&(namespace_of(doc).to_owned(), svc.to_owned()))
        });
        let mut versions: BTreeMap<String, Version> = BTreeMap::new();
        for pod in self.selected_pods(doc, &selector) {
            let Some(hash) = &pod.hash else { continue };
            let version = versions.entry(hash.clone()).or_default();
            let port = match service {
                Some(service) => service.target_port_on(pod),
                None => pod.first_port,
            };
            if let (true, Some(ip), Some(port)) = (pod.ready, pod.ip, port) {
                version.endpoints.push(SocketAddr::new(ip, port));
            }
        }
        for version in versions.values_mut() {
            version.endpoints.sort();
            version.endpoints.dedup();
        }
        Ok(versions)
    }

    /// The host names of the Services `names` in the rollout's namespace.
    fn hosts_of(&self, doc: &Rollout, names: &[&str]) -> Vec<String> {
        let ns = namespace_of(doc);
        let mut hosts = Vec::new();
        for &svc in names {
            for host in [
                svc.to_owned(),
                format!("{svc}.{ns}"),
                format!("{svc}.{ns}.svc"),
                format!("{svc}.{ns}.svc.{}", self.cluster_domain),
            ] {
                if !hosts.contains(&host) {
                    hosts.push(host);
                }
            }
        }
        hosts
    }
}

fn has_stable(doc: &Rollout) -> bool {
    doc.status
        .as_ref()
        .and_then(|s| s.stable_rs.as_deref())
        .is_some_and(|h| !h.is_empty())
}

fn namespace_of(doc: &Rollout) -> &str {
    doc.metadata.namespace.as_deref().unwrap_or("default")
}

/// A Service name Kubernetes accepts (an RFC 1035 label): another names no Service and gives no
/// host (a template placeholder such as `ROLLOUT_NAME-active`).
fn is_service_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// The stable, then the canary Service's name; blue/green: the active Service's.
fn service_names(doc: &Rollout) -> Vec<&str> {
    let mut names = service_names_as_written(doc);
    names.retain(|n| is_service_name(n));
    names
}

fn service_names_as_written(doc: &Rollout) -> Vec<&str> {
    if let Some(bg) = &doc.spec.strategy.blue_green
        && !bg.active_service.is_empty()
    {
        return vec![bg.active_service.as_str()];
    }
    let Some(canary) = doc.spec.strategy.canary.as_ref() else {
        return Vec::new();
    };
    let mut names: Vec<&str> = Vec::new();
    for name in [&canary.stable_service, &canary.canary_service]
        .into_iter()
        .flatten()
    {
        if !name.is_empty() && !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    names
}

/// Blue/green: the preview Service's name.
fn preview_service(doc: &Rollout) -> Option<&str> {
    doc.spec
        .strategy
        .blue_green
        .as_ref()
        .and_then(|bg| bg.preview_service.as_deref())
        .filter(|svc| is_service_name(svc))
}

fn selector(doc: &Rollout, name: &str) -> Result<Selector, ApiError> {
    let invalid = |(field, problem): (String, String)| ApiError::Invalid {
        rollout: name.to_owned(),
        field,
        problem,
    };
    let selector = doc
        .spec
        .selector
        .as_ref()
        .ok_or_else(|| invalid(("spec.selector".into(), "is required".into())))?;
    Selector::new(selector, "spec.selector").map_err(invalid)
}

/// Why `state` cannot be served beside the rollouts already in `traffic`, if it cannot.
fn conflict(
    state: &RolloutState,
    traffic: &TrafficState,
    host_owner: &BTreeMap<String, String>,
) -> Option<String> {
    if traffic.rollouts.contains_key(&state.name) {
        return Some(format!(
            "rollout {:?} is already defined by a Rollout of another API group",
            state.name
        ));
    }
    state.hosts.iter().find_map(|host| {
        let owner = host_owner.get(host)?;
        Some(format!(
            "host {host:?} already belongs to rollout {owner:?}"
        ))
    })
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
