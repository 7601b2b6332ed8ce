//! The release engine's view of the cluster (pure): the ReplicaSets and Deployments the leader
//! watches, turned into the engine's [`Observed`] for one `sluice.dev` Rollout; which Rollouts the
//! engine runs; and the status the traffic is derived from.
//!
//! A `sluice.dev` Rollout with `spec.template` or `spec.workloadRef` is run by the release engine
//! (`sluice_release::reconcile`): Sluice creates its ReplicaSets, takes the steps and writes the
//! status, and the traffic served is the one the engine published (`status.dataPlane.traffic`).
//! One without either (its versions made by hand, e.g. a Deployment per version) keeps the older
//! pod-driven step engine (`steps.rs`).

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use sluice_api::{
    Rollout,
    resource::{CanaryStatus, TrafficWeights, WeightDestination},
};
use sluice_release::{DataPlane, Observed, ObservedVersion, ObservedWorkload};

type Key = (String, String);

/// Whether the release engine runs this (`sluice.dev`) Rollout.
pub fn managed_by_engine(doc: &Rollout) -> bool {
    doc.spec.template.is_some() || doc.spec.workload_ref.is_some()
}

/// The Rollout as derivation should read it: for a rollout the engine runs, the stable and canary
/// hashes and the canary weight are the ones last published (`status.dataPlane.traffic`), never
/// a step's weight the engine has not published (for instance while the canary has no available
/// pods). Other rollouts are returned as they are.
pub fn published_view(doc: &Rollout) -> Cow<'_, Rollout> {
    let Some(traffic) = doc
        .status
        .as_ref()
        .and_then(|s| s.data_plane.as_ref())
        .map(|d| &d.traffic)
        .filter(|t| !t.stable.is_empty())
    else {
        return Cow::Borrowed(doc);
    };
    let mut view = doc.clone();
    let status = view.status.get_or_insert_with(Default::default);
    let canary = traffic
        .canary
        .clone()
        .unwrap_or_else(|| traffic.stable.clone());
    status.stable_rs = Some(traffic.stable.clone());
    status.current_pod_hash = Some(canary.clone());
    // Blue/green: the preview hosts route to the published preview, else to the active version.
    status.blue_green = Some(sluice_api::bluegreen::BlueGreenStatus {
        active_selector: Some(traffic.stable.clone()),
        preview_selector: Some(traffic.preview.clone().unwrap_or(traffic.stable.clone())),
        ..Default::default()
    });
    status.canary = Some(CanaryStatus {
        weights: Some(TrafficWeights {
            canary: WeightDestination {
                pod_template_hash: Some(canary),
                service_name: None,
                weight: traffic.canary_weight,
            },
            stable: Some(WeightDestination {
                pod_template_hash: Some(traffic.stable.clone()),
                service_name: None,
                // Stable gets what the canary and an experiment's templates leave.
                weight: traffic
                    .additional
                    .iter()
                    .fold(100i32.saturating_sub(traffic.canary_weight), |left, w| {
                        left.saturating_sub(w.weight)
                    })
                    .max(0),
            }),
            additional: traffic.additional.clone(),
        }),
        current_experiment: None,
    });
    Cow::Owned(view)
}

/// The watched ReplicaSets and Deployments, by (namespace, name).
#[derive(Debug, Default)]
pub struct Workloads {
    replica_sets: BTreeMap<Key, ReplicaSet>,
    deployments: BTreeMap<Key, Deployment>,
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

fn reset<K>(
    map: &mut BTreeMap<Key, K>,
    namespace: Option<&str>,
    objects: Vec<K>,
    meta: impl Fn(&K) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) {
    map.retain(|(ns, _), _| namespace.is_some_and(|n| n != ns));
    for object in objects {
        map.insert(key(meta(&object)), object);
    }
}

impl Workloads {
    pub fn apply_replica_set(&mut self, rs: ReplicaSet) {
        self.replica_sets.insert(key(&rs.metadata), rs);
    }

    pub fn delete_replica_set(&mut self, rs: &ReplicaSet) {
        self.replica_sets.remove(&key(&rs.metadata));
    }

    /// Forgets a ReplicaSet this replica deleted (its watch event may come later).
    pub fn forget_replica_set(&mut self, namespace: &str, name: &str) {
        self.replica_sets
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    pub fn reset_replica_sets(&mut self, namespace: Option<&str>, all: Vec<ReplicaSet>) {
        reset(&mut self.replica_sets, namespace, all, |r| &r.metadata);
    }

    pub fn apply_deployment(&mut self, deployment: Deployment) {
        self.deployments
            .insert(key(&deployment.metadata), deployment);
    }

    pub fn delete_deployment(&mut self, deployment: &Deployment) {
        self.deployments.remove(&key(&deployment.metadata));
    }

    pub fn reset_deployments(&mut self, namespace: Option<&str>, all: Vec<Deployment>) {
        reset(&mut self.deployments, namespace, all, |d| &d.metadata);
    }

    /// What the engine observes for `doc`: the ReplicaSets in its namespace that it controls or
    /// whose name starts with `<rollout>-` (so a foreign one with the new version's name shows as
    /// a hash collision), the `workloadRef` Deployment, and the data plane as given.
    pub fn observed(&self, doc: &Rollout, data_plane: DataPlane) -> Observed {
        let namespace = doc.metadata.namespace.as_deref().unwrap_or("default");
        let name = doc.metadata.name.as_deref().unwrap_or_default();
        let uid = doc.metadata.uid.as_deref().unwrap_or_default();
        let prefix = format!("{name}-");
        let versions = self
            .replica_sets
            .range((namespace.to_owned(), String::new())..)
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|(_, rs)| ObservedVersion::from_replica_set(rs, uid))
            .filter(|v| v.controlled || v.name.starts_with(&prefix))
            .collect();
        let workload = doc
            .spec
            .workload_ref
            .as_ref()
            .and_then(|w| w.name.as_deref())
            .and_then(|w| self.deployments.get(&(namespace.to_owned(), w.to_owned())))
            .map(|d| {
                let spec = d.spec.clone();
                ObservedWorkload {
                    name: d.metadata.name.clone().unwrap_or_default(),
                    template: spec.template,
                    selector: Some(spec.selector),
                    replicas: spec.replicas.unwrap_or(1),
                }
            });
        Observed {
            versions,
            data_plane,
            workload,
            // The AnalysisRuns are the driver's (`crate::analysis_runs`).
            analysis_runs: Vec::new(),
            // Pods are the index's (the caller's).
            pods: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(status: &str) -> Rollout {
        serde_yaml::from_str(&format!(
            "metadata: {{name: demo, namespace: prod, uid: u-1}}\n\
             spec:\n  selector: {{matchLabels: {{app: demo}}}}\n\
             \x20 template: {{metadata: {{labels: {{app: demo}}}}, spec: {{containers: [{{name: app, image: v1}}]}}}}\n\
             \x20 strategy: {{canary: {{steps: [{{setWeight: 50}}, {{pause: {{}}}}]}}}}\n\
             status: {status}\n"
        ))
        .expect("rollout")
    }

    fn replica_set(ns: &str, name: &str, owner_uid: Option<&str>) -> ReplicaSet {
        let owners = owner_uid.map_or(String::new(), |uid| {
            format!(", ownerReferences: [{{apiVersion: sluice.dev/v1alpha1, kind: Rollout, name: demo, uid: {uid}, controller: true}}]")
        });
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: {ns}, labels: {{rollouts-pod-template-hash: h}}{owners}}}\n\
             spec: {{replicas: 2, selector: {{}}}}\nstatus: {{replicas: 2, availableReplicas: 1}}\n"
        ))
        .expect("rs")
    }

    #[test]
    fn the_view_serves_what_was_published_not_the_step_weight() {
        // The engine holds at step 1 (setWeight 50 reached) but published no canary yet (no
        // available pods): derivation must not send 50 % to it.
        let doc = rollout(
            "{stableRS: aaa, currentPodHash: bbb, currentStepIndex: 1, \
              dataPlane: {generation: 3, traffic: {stable: aaa, canaryWeight: 0}}}",
        );
        let view = published_view(&doc);
        let status = view.status.as_ref().expect("status");
        assert_eq!(status.current_pod_hash.as_deref(), Some("aaa"));
        let weights = status
            .canary
            .as_ref()
            .and_then(|c| c.weights.as_ref())
            .expect("weights");
        assert_eq!(weights.canary.weight, 0);

        let doc = rollout(
            "{stableRS: aaa, currentPodHash: bbb, currentStepIndex: 1, \
              dataPlane: {generation: 4, traffic: {stable: aaa, canary: bbb, canaryWeight: 50}}}",
        );
        let view = published_view(&doc);
        let status = view.status.as_ref().expect("status");
        assert_eq!(status.current_pod_hash.as_deref(), Some("bbb"));
        let weights = status.canary.as_ref().and_then(|c| c.weights.as_ref());
        assert_eq!(weights.map(|w| w.canary.weight), Some(50));

        // Experiments: the published additional versions are served with their weights.
        let doc = rollout(
            "{stableRS: aaa, currentPodHash: bbb, currentStepIndex: 1, \
              dataPlane: {generation: 5, traffic: {stable: aaa, canary: bbb, canaryWeight: 10, \
              additional: [{podTemplateHash: ccc, serviceName: baseline, weight: 10}]}}}",
        );
        let view = published_view(&doc);
        let weights = view
            .status
            .as_ref()
            .and_then(|s| s.canary.as_ref())
            .and_then(|c| c.weights.as_ref())
            .expect("weights");
        assert_eq!(weights.additional.len(), 1);
        assert_eq!(
            weights.additional[0].pod_template_hash.as_deref(),
            Some("ccc")
        );
        assert_eq!(weights.additional[0].weight, 10);
        assert_eq!(weights.stable.as_ref().map(|s| s.weight), Some(80));

        // No published traffic (legacy step engine, Argo): unchanged.
        let doc = rollout("{stableRS: aaa, currentPodHash: bbb, currentStepIndex: 1}");
        assert!(matches!(published_view(&doc), Cow::Borrowed(_)));
    }

    #[test]
    fn the_view_routes_the_preview_hosts_to_the_published_preview() {
        let doc = rollout(
            "{stableRS: aaa, currentPodHash: bbb, blueGreen: {activeSelector: aaa, previewSelector: bbb}, \
              dataPlane: {generation: 2, traffic: {stable: aaa, canaryWeight: 0}}}",
        );
        // The engine wrote bbb as the preview but has not published it: the preview hosts stay
        // on the active version until it has.
        let selectors = |doc: &Rollout| {
            let view = published_view(doc);
            let bg = view.status.as_ref().and_then(|s| s.blue_green.clone());
            bg.map(|b| (b.active_selector, b.preview_selector))
        };
        assert_eq!(
            selectors(&doc),
            Some((Some("aaa".into()), Some("aaa".into())))
        );
        let doc = rollout(
            "{stableRS: aaa, currentPodHash: bbb, \
              dataPlane: {generation: 3, traffic: {stable: aaa, canaryWeight: 0, preview: bbb}}}",
        );
        assert_eq!(
            selectors(&doc),
            Some((Some("aaa".into()), Some("bbb".into())))
        );
    }

    #[test]
    fn observed_versions_are_the_rollouts_replica_sets_in_its_namespace() {
        let mut w = Workloads::default();
        w.apply_replica_set(replica_set("prod", "demo-aaa", Some("u-1")));
        // A foreign ReplicaSet with the rollout's prefix: observed, not controlled (collision).
        w.apply_replica_set(replica_set("prod", "demo-bbb", None));
        // Unrelated, or another namespace: not observed.
        w.apply_replica_set(replica_set("prod", "other-ccc", None));
        w.apply_replica_set(replica_set("staging", "demo-ddd", Some("u-1")));
        let observed = w.observed(&rollout("{}"), DataPlane::default());
        let seen: Vec<(&str, bool, i32)> = observed
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.controlled, v.available))
            .collect();
        assert_eq!(seen, vec![("demo-aaa", true, 1), ("demo-bbb", false, 1)]);

        // A relist of prod drops what is gone there, and keeps other namespaces.
        w.reset_replica_sets(
            Some("prod"),
            vec![replica_set("prod", "demo-eee", Some("u-1"))],
        );
        let names: Vec<String> = w
            .observed(&rollout("{}"), DataPlane::default())
            .versions
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, vec!["demo-eee"]);
        assert_eq!(w.replica_sets.len(), 2);
    }

    #[test]
    fn engine_runs_rollouts_with_a_template_or_a_workload_ref() {
        assert!(managed_by_engine(&rollout("{}")));
        let mut doc = rollout("{}");
        doc.spec.template = None;
        assert!(!managed_by_engine(&doc));
        doc.spec.workload_ref = Some(Default::default());
        assert!(managed_by_engine(&doc));
    }
}
