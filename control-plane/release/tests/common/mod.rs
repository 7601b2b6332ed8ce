//! A small simulated world for the engine's tests: ReplicaSets whose pods a "kubelet" makes
//! available, proxies that ACK what is published, a clock, and the commands of Argo's kubectl
//! plugin as the status/spec patches it makes.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use sluice_api::{Rollout, RolloutStatus, resource::PublishedTraffic};
use sluice_release::{
    Action, DataPlane, Observed, ObservedVersion, ObservedWorkload, ProxyAck, Reconciled, reconcile,
};

pub const STEPS: &str =
    "[{setWeight: 10}, {pause: {duration: 60}}, {setWeight: 50}, {pause: {}}, {setWeight: 80}]";

/// A sluice.dev Rollout `demo` with `replicas`, selector `app=demo`, image `image`, these steps.
pub fn rollout(replicas: i32, image: &str, steps: &str) -> Rollout {
    let yaml = format!(
        "apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: demo, namespace: shop, uid: uid-1, generation: 1}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: demo}}}}
  template:
    metadata: {{labels: {{app: demo}}}}
    spec: {{containers: [{{name: app, image: '{image}'}}]}}
  strategy:
    canary:
      steps: {steps}
"
    );
    serde_yaml::from_str(&yaml).unwrap()
}

pub fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

#[derive(Debug)]
pub struct Sim {
    pub rollout: Rollout,
    pub versions: Vec<ObservedVersion>,
    pub proxies: Vec<ProxyAck>,
    pub now: Timestamp,
    /// Pods of a scaled ReplicaSet become available at once.
    pub kubelet: bool,
    /// Proxies ACK every published generation at once.
    pub auto_ack: bool,
    pub published: Vec<(i64, PublishedTraffic)>,
    pub deleted: Vec<String>,
    pub evicted: Vec<String>,
    pub actions: Vec<Action>,
    pub last: Option<Reconciled>,
    pub workload: Option<ObservedWorkload>,
    /// The AnalysisRuns the driver reports (set by analysis tests).
    pub analysis_runs: Vec<sluice_release::ObservedAnalysisRun>,
}

impl Sim {
    pub fn new(rollout: Rollout) -> Self {
        Sim {
            rollout,
            versions: Vec::new(),
            proxies: vec![proxy("envoy-a"), proxy("envoy-b")],
            now: t0(),
            kubelet: true,
            auto_ack: true,
            published: Vec::new(),
            deleted: Vec::new(),
            evicted: Vec::new(),
            actions: Vec::new(),
            last: None,
            workload: None,
            analysis_runs: Vec::new(),
        }
    }

    pub fn observed(&self) -> Observed {
        Observed {
            versions: self.versions.clone(),
            data_plane: DataPlane {
                proxies: self.proxies.clone(),
                ack_deadline: Duration::from_secs(30),
            },
            workload: self.workload.clone(),
            analysis_runs: self.analysis_runs.clone(),
            pods: Vec::new(),
        }
    }

    /// One pass; its actions are executed.
    pub fn pass(&mut self) -> Reconciled {
        let out = reconcile(&self.rollout, &self.observed(), self.now);
        self.rollout.status = Some(out.status.clone());
        for action in &out.actions {
            self.execute(action);
        }
        self.actions.extend(out.actions.iter().cloned());
        self.last = Some(out.clone());
        out
    }

    /// Passes until one changes nothing but events (at most 30).
    pub fn settle(&mut self) -> Reconciled {
        for _ in 0..30 {
            let out = self.pass();
            if out
                .actions
                .iter()
                .all(|a| matches!(a, Action::Event { .. }))
                && out.requeue_after != Some(Duration::ZERO)
            {
                return out;
            }
        }
        panic!("no fixed point: {:#?}", self.last);
    }

    fn execute(&mut self, action: &Action) {
        match action {
            Action::CreateReplicaSet(rs) => {
                let mut v = ObservedVersion::from_replica_set(rs, "uid-1");
                assert!(v.controlled && !v.hash.is_empty(), "{rs:?}");
                if self.kubelet {
                    v.ready = v.desired;
                    v.available = v.desired;
                }
                self.versions.push(v);
            }
            Action::ScaleReplicaSet { name, replicas } => {
                let kubelet = self.kubelet;
                let v = self.by_name(name);
                v.desired = *replicas;
                if kubelet || *replicas < v.available {
                    v.ready = *replicas;
                    v.available = *replicas;
                }
            }
            Action::SetRevision { name, revision } => self.by_name(name).revision = Some(*revision),
            Action::SetScaleDownDeadline { name, deadline } => {
                self.by_name(name).scale_down_deadline = *deadline;
            }
            Action::EvictPod { name } => self.evicted.push(name.clone()),
            Action::DeleteReplicaSet { name } => {
                self.versions.retain(|v| v.name != *name);
                self.deleted.push(name.clone());
            }
            Action::PublishTraffic {
                generation,
                traffic,
            } => {
                self.published.push((*generation, traffic.clone()));
                if self.auto_ack {
                    self.ack_all();
                }
            }
            Action::ScaleDeployment { name, replicas } => {
                let workload = self.workload.as_mut().unwrap();
                assert_eq!(&workload.name, name);
                workload.replicas = *replicas;
            }
            Action::StartAnalysisRun {
                name,
                canary_hash,
                step_index,
                ..
            } => {
                // The driver starts the run; tests set its outcome with `analysis_phase`.
                self.analysis_runs
                    .push(sluice_release::ObservedAnalysisRun {
                        name: name.clone(),
                        canary_hash: canary_hash.clone(),
                        step_index: *step_index,
                        status: sluice_analysis::AnalysisRunStatus {
                            phase: sluice_analysis::AnalysisPhase::Running,
                            ..Default::default()
                        },
                    });
            }
            Action::TerminateAnalysisRun { name } => {
                // The driver's runner ends the run as Argo does when terminated.
                if let Some(run) = self.analysis_runs.iter_mut().find(|r| r.name == *name) {
                    run.status.phase = sluice_analysis::AnalysisPhase::Successful;
                    run.status.message = "Run Terminated".into();
                }
            }
            Action::DeleteAnalysisRun { name } => self.analysis_runs.retain(|r| r.name != *name),
            Action::Event { .. } | Action::SyncExperiment { .. } => {}
        }
    }

    fn by_name(&mut self, name: &str) -> &mut ObservedVersion {
        self.versions
            .iter_mut()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no ReplicaSet {name}"))
    }

    pub fn version(&self, hash: &str) -> &ObservedVersion {
        self.versions
            .iter()
            .find(|v| v.hash == hash)
            .unwrap_or_else(|| panic!("no version {hash}"))
    }

    pub fn ack_all(&mut self) {
        let generation = self.published.last().map(|(g, _)| *g);
        for proxy in &mut self.proxies {
            proxy.acked_generation = generation;
        }
    }

    pub fn advance(&mut self, seconds: u64) {
        self.now = self
            .now
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
                i64::try_from(seconds).unwrap(),
            ))
            .unwrap();
    }

    pub fn status(&self) -> &RolloutStatus {
        self.rollout.status.as_ref().unwrap()
    }
    pub fn phase(&self) -> &str {
        self.status().phase.as_deref().unwrap_or("")
    }
    pub fn step(&self) -> i32 {
        self.status().current_step_index.unwrap()
    }
    pub fn stable(&self) -> String {
        self.status().stable_rs.clone().unwrap()
    }
    pub fn current(&self) -> String {
        self.status().current_pod_hash.clone().unwrap()
    }
    /// The traffic last published.
    pub fn traffic(&self) -> PublishedTraffic {
        self.status().data_plane.clone().unwrap().traffic
    }

    /// `kubectl set image`: a new template, a new generation.
    pub fn set_image(&mut self, image: &str) {
        let template = self.rollout.spec.template.as_mut().unwrap();
        template.spec.as_mut().unwrap().containers[0].image = Some(image.into());
        let generation = self.rollout.metadata.generation.unwrap_or(1);
        self.rollout.metadata.generation = Some(generation + 1);
    }

    /// Argo's `promote`: unpause the spec and clear the pause conditions.
    pub fn promote(&mut self) {
        self.rollout.spec.paused = false;
        self.rollout
            .status
            .as_mut()
            .unwrap()
            .pause_conditions
            .clear();
    }
    /// Argo's `promote` with no pause condition (e.g. during an experiment or analysis step):
    /// the plugin moves `currentStepIndex` to the next step.
    pub fn skip_step(&mut self) {
        let status = self.rollout.status.as_mut().unwrap();
        assert!(status.pause_conditions.is_empty());
        status.current_step_index = status.current_step_index.map(|i| i + 1);
    }
    /// Argo's `promote --full`.
    pub fn promote_full(&mut self) {
        self.rollout.status.as_mut().unwrap().promote_full = true;
    }
    /// Argo's `abort`.
    pub fn abort(&mut self) {
        self.rollout.status.as_mut().unwrap().abort = true;
    }
    /// Argo's `retry`.
    pub fn retry(&mut self) {
        self.rollout.status.as_mut().unwrap().abort = false;
    }

    pub fn events(&self) -> Vec<String> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Event {
                    reason, message, ..
                } => Some(format!("{reason}: {message}")),
                _ => None,
            })
            .collect()
    }

    /// A stable rollout at `image` with a canary of `next` started (step 0 not yet done).
    pub fn with_stable(image: &str, steps: &str) -> Self {
        let mut sim = Sim::new(rollout(4, image, steps));
        sim.settle();
        assert_eq!(sim.phase(), "Healthy");
        sim
    }
}

pub fn proxy(node: &str) -> ProxyAck {
    ProxyAck {
        node_id: node.into(),
        acked_generation: None,
        nacked: None,
    }
}
