//! The release engine: Argo Rollouts' canary controller as a pure state machine, for both the
//! Kubernetes and the standalone driver. No I/O here (no tokio, kube, tonic, files).
//!
//! ```text
//!  Rollout (spec + metadata + last status)        Observed: ReplicaSets {hash, revision,
//!             \                                     desired/ready/available, scale-down deadline},
//!              \                                    proxies {node, ACKed / NACKed generation}
//!               v                                  /
//!        reconcile(rollout, observed, now) <------+
//!               |
//!               v
//!   Reconciled { status, actions, requeue_after }
//!      status:  Argo's fields (phase, stableRS, currentPodHash, currentStepIndex, pauseConditions,
//!               conditions, counts ...) + dataPlane {generation, traffic, acknowledged N of M}
//!      actions: CreateReplicaSet | ScaleReplicaSet | SetRevision | SetScaleDownDeadline |
//!               DeleteReplicaSet | ScaleDeployment (workloadRef) | PublishTraffic {generation, traffic} | Event
//!               -> executed by a driver; the driver reports each proxy's ACK of a generation
//! ```
//!
//! Argo's behaviour, field for field: the first version is deployed at full scale without steps; a
//! new template starts a canary at step 0 in a ReplicaSet `<rollout>-<hash>` ([`pod_template_hash`]);
//! canary replicas are `ceil(replicas × weight / 100)` unless `setCanaryScale`; pauses as Argo keeps
//! them (`pauseConditions`, `controllerPause`, `spec.paused`); promotion, `promote --full`
//! (`status.promoteFull`), abort (`status.abort`) and retry (clearing it), rollback reusing a
//! ReplicaSet (steps skipped within `rollbackWindow`), `progressDeadlineSeconds`,
//! `scaleDownDelaySeconds`, `abortScaleDownDelaySeconds`, `revisionHistoryLimit`, `workloadRef`
//! (the template of an existing Deployment, scaled down `never | onsuccess | progressively`).
//!
//! Sluice's data-plane gate: a step that changes traffic is done only when every connected proxy
//! has ACKed the generation that carries it; weight never goes to a version without available
//! pods; an old version is scaled down only when the acknowledged traffic no longer reaches it; a
//! NACK, or a proxy that has not ACKed within [`DataPlane::ack_deadline`], makes the rollout
//! Degraded naming the node.
//!
//! Blue/green (`spec.strategy.blueGreen`): `bluegreen` (preview, pause, promotion, the switch),
//! [`bluegreen_analysis`] (`prePromotionAnalysis`, `postPromotionAnalysis`).
//!
//! Modules: [`spec`] (checks and defaults), [`hash`], `canary` (the steps), `versions`
//! (ReplicaSets), `status` (conditions, phase), [`observed`], [`action`].

pub mod action;
pub mod analysis;
mod bluegreen;
pub mod bluegreen_analysis;
mod canary;
mod conditions;
mod engine;
pub mod experiment;
pub mod hash;
pub mod observed;
pub mod restart;
mod selector;
pub mod spec;
mod status;
mod time;
mod versions;

pub use action::Action;
pub use analysis::{INCONCLUSIVE_ANALYSIS_RUN, ObservedAnalysisRun};
pub use bluegreen::BLUE_GREEN_PAUSE;
pub use conditions::{
    AVAILABLE, CANARY_PAUSE_STEP, COMPLETED, INVALID_SPEC, PAUSED, PHASE_DEGRADED, PHASE_HEALTHY,
    PHASE_PAUSED, PHASE_PROGRESSING, PROGRESS_DEADLINE_EXCEEDED, PROGRESSING,
};
pub use engine::{Reconciled, reconcile};
pub use experiment::INCONCLUSIVE_EXPERIMENT;
pub use hash::pod_template_hash;
pub use observed::{DataPlane, Observed, ObservedVersion, ObservedWorkload, ProxyAck};
pub use restart::ObservedPod;
pub use spec::Invalid;

/// The label that names a version on its ReplicaSet and pods (Argo's name).
pub const HASH_LABEL: &str = "rollouts-pod-template-hash";
