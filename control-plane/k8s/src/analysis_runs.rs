//! The leader's AnalysisRuns: the engine's `StartAnalysisRun` becomes an `AnalysisRun` object
//! (`sluice.dev/v1alpha1`, owned by the Rollout) measured by a runner task
//! (`sluice_analysis::runner`); each status the runner reports is merge-patched to the object's
//! `/status` and fed back to the engine as `Observed::analysis_runs`.
//!
//! ```text
//!  StartAnalysisRun ─► GET templates ─► plan_for_rollout ─► create AnalysisRun ─► spawn runner
//!  runner ──RunUpdate (channel)──► driver loop: PATCH /status, re-run the engine
//!  AnalysisRun watch (label sluice.dev/rollout) ─► the runs a new leader finds
//! ```
//!
//! Templates are read with one GET when the run starts, not watched: a run is frozen when it
//! starts (its resolved metrics are its spec, as in Argo), so a later template edit changes only
//! later runs.
//!
//! Restart / new leader: a run that is not complete is **resumed** from its own object — planned
//! again from its spec (not the templates) and measured from its kept status (the machine takes
//! what is due by the recorded measurements' `finishedAt` + interval). The watch must have listed
//! before the engine runs, so a restarted leader never starts a second run of the same name.

use std::collections::BTreeMap;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use sluice_analysis::{
    AnalysisError, AnalysisPhase, AnalysisRun, AnalysisRunStatus, AnalysisTemplateSpec,
    plan_for_rollout, plan_from_spec, resolve_field_refs,
    resource::AnalysisRunSpec,
    run_spec,
    runner::{HttpClient, RunHandle, RunUpdate, spawn},
};
use sluice_api::{Rollout, resource::AnalysisTemplateRef};
use sluice_release::analysis::{ObservedAnalysisRun, RunOptions};
use tokio::sync::{mpsc, watch};

use crate::objects::POD_TEMPLATE_HASH_LABEL;

/// The rollout an AnalysisRun belongs to (its name; the run is in the rollout's namespace).
pub const ROLLOUT_LABEL: &str = "sluice.dev/rollout";
/// The step that started the run (a background run: its `startingStep`).
pub const STEP_INDEX_LABEL: &str = "sluice.dev/step-index";
/// Argo's `rollout-type` label: `Step`, `Background`, `PrePromotion` or `PostPromotion`.
pub const ROLLOUT_TYPE_LABEL: &str = "rollout-type";

/// The run's `rollout-type`: a blue/green promotion run is named for its kind.
fn rollout_type(start: &StartRun<'_>, rollout: &str) -> &'static str {
    if start.background {
        return "Background";
    }
    sluice_release::bluegreen_analysis::promotion_of(start.name, rollout, start.canary_hash)
        .map_or("Step", |p| p.label())
}

/// What `StartAnalysisRun` asks for.
#[derive(Clone, Debug)]
pub struct StartRun<'a> {
    pub name: &'a str,
    pub canary_hash: &'a str,
    pub stable_hash: &'a str,
    pub step_index: usize,
    pub background: bool,
    pub templates: &'a [AnalysisTemplateRef],
    pub args: &'a [sluice_api::resource::AnalysisRunArgument],
    /// `dryRun`, `measurementRetention` (planned beside the templates) and
    /// `analysisRunMetadata` (on the object).
    pub options: &'a RunOptions,
}

/// The run's labels: `analysisRunMetadata.labels`, then Sluice's own (which name the run's
/// rollout, version and step, so a user's label never takes their place; Argo likewise puts the
/// rollout's selector over them).
fn run_labels(start: &StartRun<'_>, rollout: &str) -> BTreeMap<String, String> {
    let mut labels = start.options.metadata.labels.clone();
    labels.extend([
        (ROLLOUT_LABEL.to_owned(), rollout.to_owned()),
        (
            POD_TEMPLATE_HASH_LABEL.to_owned(),
            start.canary_hash.to_owned(),
        ),
        (STEP_INDEX_LABEL.to_owned(), start.step_index.to_string()),
        (
            ROLLOUT_TYPE_LABEL.to_owned(),
            rollout_type(start, rollout).to_owned(),
        ),
    ]);
    labels
}

#[derive(Debug)]
struct Run {
    rollout: String,
    canary_hash: String,
    step_index: usize,
    spec: AnalysisRunSpec,
    status: AnalysisRunStatus,
    /// The status the object has as far as this replica knows (watched or written): a write
    /// that failed leaves it behind `status`, and is retried ([`AnalysisRuns::resume_all`]).
    written: AnalysisRunStatus,
    /// This replica measures it.
    handle: Option<RunHandle>,
}

/// The runs this replica knows (its own and the watched ones), by (namespace, name).
#[derive(Debug)]
pub struct AnalysisRuns {
    http: HttpClient,
    updates: mpsc::UnboundedSender<RunUpdate>,
    runs: BTreeMap<(String, String), Run>,
}

/// The runner's name of a run: `<namespace>/<name>`.
fn runner_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl AnalysisRuns {
    /// Runs report their statuses on `updates` (the driver loop's channel).
    pub fn new(updates: mpsc::UnboundedSender<RunUpdate>) -> Self {
        AnalysisRuns {
            http: HttpClient::new(),
            updates,
            runs: BTreeMap::new(),
        }
    }

    /// The runs of a rollout, for its engine.
    pub fn observed(&self, namespace: &str, rollout: &str) -> Vec<ObservedAnalysisRun> {
        self.runs
            .iter()
            .filter(|((ns, _), run)| ns == namespace && run.rollout == rollout)
            .map(|((_, name), run)| ObservedAnalysisRun {
                name: name.clone(),
                canary_hash: run.canary_hash.clone(),
                step_index: run.step_index,
                status: run.status.clone(),
            })
            .collect()
    }

    /// A watched AnalysisRun. Its status is taken unless this replica measures the run (its own
    /// status is newer than any event) or already holds it complete (final).
    pub fn apply(&mut self, object: AnalysisRun) {
        let Some((key, rollout, canary_hash, step_index)) = identity(&object) else {
            return;
        };
        let status = object.status.unwrap_or_default();
        match self.runs.get_mut(&key) {
            Some(run) => {
                if run.handle.is_none() && !run.status.phase.completed() {
                    run.status = status.clone();
                }
                run.written = status;
            }
            None => {
                self.runs.insert(
                    key,
                    Run {
                        rollout,
                        canary_hash,
                        step_index,
                        spec: object.spec,
                        written: status.clone(),
                        status,
                        handle: None,
                    },
                );
            }
        }
    }

    /// A deleted AnalysisRun (its rollout was deleted): its runner stops.
    pub fn delete(&mut self, object: &AnalysisRun) {
        if let Some((key, ..)) = identity(object) {
            self.runs.remove(&key);
        }
    }

    /// A (re)list of `scope` (a namespace; `None`: all).
    pub fn reset(&mut self, scope: Option<&str>, objects: Vec<AnalysisRun>) {
        let listed: Vec<(String, String)> = objects
            .iter()
            .filter_map(|o| identity(o).map(|i| i.0))
            .collect();
        self.runs.retain(|(ns, name), _| {
            scope.is_some_and(|s| s != ns) || listed.contains(&(ns.clone(), name.clone()))
        });
        for object in objects {
            self.apply(object);
        }
    }

    /// Leadership lost: every runner stops; the runs stay as written, for the next leader.
    pub fn stop_all(&mut self) {
        for run in self.runs.values_mut() {
            run.handle = None;
        }
    }

    /// Leader: resumes every run that is not complete and that no runner measures, and writes
    /// again the statuses of its own runs whose last write failed (a lost final status would
    /// leave the object Running, and a later leader would measure it again).
    pub async fn resume_all(&mut self, client: &Client, is_leader: &watch::Receiver<bool>) {
        let unwritten: Vec<(String, String)> = self
            .runs
            .iter()
            // Its own: measured here, or ended here (a run that could not be planned).
            .filter(|(_, r)| {
                (r.handle.is_some() || r.status.phase.completed()) && r.written != r.status
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in unwritten {
            self.write_status(client, is_leader, &key).await;
        }
        let keys: Vec<(String, String)> = self
            .runs
            .iter()
            .filter(|(_, r)| r.handle.is_none() && !r.status.phase.completed())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.resume(client, is_leader, &key, false).await;
        }
    }

    /// Starts a runner for a known run from its spec and kept status.
    async fn resume(
        &mut self,
        client: &Client,
        is_leader: &watch::Receiver<bool>,
        key: &(String, String),
        terminate: bool,
    ) {
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        match plan_from_spec(&run.spec) {
            Ok(plan) => {
                tracing::info!(namespace = %key.0, run = %key.1, terminate, "analysis run resumed");
                run.handle = Some(spawn(
                    runner_key(&key.0, &key.1),
                    plan,
                    run.status.clone(),
                    terminate,
                    self.http.clone(),
                    self.updates.clone(),
                ));
            }
            Err(error) => {
                let status = failed(&run.status, &error);
                self.set_status(client, is_leader, key, status).await;
            }
        }
    }

    /// `StartAnalysisRun`: reads the templates, plans the run, creates its AnalysisRun and starts
    /// its runner. A run that cannot be planned is created ending as Error with the reason
    /// (Argo's InvalidSpec), so the rollout aborts saying why. A run already known is left as it
    /// is (resumed if nothing measures it).
    pub async fn start(
        &mut self,
        client: &Client,
        is_leader: &watch::Receiver<bool>,
        rollout: &Rollout,
        start: StartRun<'_>,
    ) -> Result<(), kube::Error> {
        let namespace = rollout
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let rollout_name = rollout.metadata.name.clone().unwrap_or_default();
        let key = (namespace.clone(), start.name.to_owned());
        if let Some(run) = self.runs.get(&key) {
            if run.handle.is_none() && !run.status.phase.completed() {
                self.resume(client, is_leader, &key, false).await;
            }
            return Ok(());
        }
        let planned = match templates(client, &namespace, start.templates).await? {
            Ok(specs) => {
                let rules = start.options.rules_template();
                let refs: Vec<&AnalysisTemplateSpec> = rules.iter().chain(&specs).collect();
                resolve_field_refs(start.args, rollout)
                    .and_then(|args| {
                        plan_for_rollout(&refs, &args, start.stable_hash, start.canary_hash)
                    })
                    .map(|plan| (run_spec(&refs, &plan), plan))
            }
            Err(error) => Err(error),
        };
        let spec = match &planned {
            Ok((spec, _)) => spec.clone(),
            Err(_) => AnalysisRunSpec::default(),
        };
        let object = AnalysisRun {
            metadata: ObjectMeta {
                name: Some(start.name.to_owned()),
                namespace: Some(namespace.clone()),
                labels: Some(run_labels(&start, &rollout_name)),
                annotations: Some(start.options.metadata.annotations.clone())
                    .filter(|a| !a.is_empty()),
                owner_references: rollout.metadata.uid.clone().map(|uid| {
                    vec![OwnerReference {
                        api_version: "sluice.dev/v1alpha1".into(),
                        kind: "Rollout".into(),
                        name: rollout_name.clone(),
                        uid,
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]
                }),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        };
        if !*is_leader.borrow() {
            return Ok(());
        }
        let api: Api<AnalysisRun> = Api::namespaced(client.clone(), &namespace);
        let object = match api.create(&PostParams::default(), &object).await {
            Ok(created) => created,
            // Created by an earlier leader whose object this replica's watch has not brought yet.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = api.get(start.name).await?;
                self.apply(existing);
                self.resume(client, is_leader, &key, false).await;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.runs.insert(
            key.clone(),
            Run {
                rollout: rollout_name,
                canary_hash: start.canary_hash.to_owned(),
                step_index: start.step_index,
                spec: object.spec,
                status: AnalysisRunStatus::default(),
                written: object.status.unwrap_or_default(),
                handle: None,
            },
        );
        match planned {
            Ok((_, plan)) => {
                tracing::info!(namespace = %key.0, run = %key.1, metrics = plan.metrics.len(), "analysis run started");
                let handle = spawn(
                    runner_key(&key.0, &key.1),
                    plan,
                    AnalysisRunStatus::default(),
                    false,
                    self.http.clone(),
                    self.updates.clone(),
                );
                if let Some(run) = self.runs.get_mut(&key) {
                    run.handle = Some(handle);
                }
            }
            Err(error) => {
                tracing::warn!(namespace = %key.0, run = %key.1, %error, "analysis run cannot be planned");
                let status = failed(&AnalysisRunStatus::default(), &error);
                self.set_status(client, is_leader, &key, status).await;
            }
        }
        Ok(())
    }

    /// `TerminateAnalysisRun`: its runner ends the run and reports the terminated status (a run
    /// nothing measures is resumed terminated, which ends it at once).
    pub async fn terminate(
        &mut self,
        client: &Client,
        is_leader: &watch::Receiver<bool>,
        namespace: &str,
        name: &str,
    ) {
        let key = (namespace.to_owned(), name.to_owned());
        match self.runs.get(&key) {
            Some(run) if run.status.phase.completed() => {}
            Some(run) => match &run.handle {
                Some(handle) => handle.terminate(),
                None => self.resume(client, is_leader, &key, true).await,
            },
            None => {}
        }
    }

    /// `DeleteAnalysisRun` (a retry superseded it): deleted from the API server and forgotten, so
    /// the retried step starts a new run of the same name.
    pub async fn remove(
        &mut self,
        client: &Client,
        is_leader: &watch::Receiver<bool>,
        namespace: &str,
        name: &str,
    ) -> Result<(), kube::Error> {
        if !*is_leader.borrow() {
            return Ok(());
        }
        self.runs.remove(&(namespace.to_owned(), name.to_owned()));
        let api: Api<AnalysisRun> = Api::namespaced(client.clone(), namespace);
        match api.delete(name, &kube::api::DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// A runner's update: recorded and written to the object's status. True when it changed.
    pub async fn update(
        &mut self,
        client: &Client,
        is_leader: &watch::Receiver<bool>,
        update: RunUpdate,
    ) -> bool {
        let Some((namespace, name)) = update.name.split_once('/') else {
            return false;
        };
        let key = (namespace.to_owned(), name.to_owned());
        match self.runs.get(&key) {
            Some(run) if run.handle.is_some() && !run.status.phase.completed() => {}
            _ => return false,
        }
        self.set_status(client, is_leader, &key, update.status)
            .await
    }

    /// Records a run's status and merge-patches it to `/status` (leader only). True when it
    /// changed.
    async fn set_status(
        &mut self,
        client: &Client,
        is_leader: &watch::Receiver<bool>,
        key: &(String, String),
        status: AnalysisRunStatus,
    ) -> bool {
        let Some(run) = self.runs.get_mut(key) else {
            return false;
        };
        if run.status == status {
            return false;
        }
        run.status = status;
        self.write_status(client, is_leader, key).await;
        true
    }

    /// Merge-patches a run's status to `/status` from what the object has (leader only). A
    /// failed write is retried by the next [`AnalysisRuns::resume_all`].
    async fn write_status(
        &mut self,
        client: &Client,
        is_leader: &watch::Receiver<bool>,
        key: &(String, String),
    ) {
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        if !*is_leader.borrow() || run.written == run.status {
            return;
        }
        let body = status_patch(&run.written, &run.status);
        let api: Api<AnalysisRun> = Api::namespaced(client.clone(), &key.0);
        match api
            .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => run.written = run.status.clone(),
            Err(error) => {
                tracing::warn!(namespace = %key.0, run = %key.1, %error, "writing an AnalysisRun's status (retried on the next pass)");
            }
        }
    }
}

/// A run ended at once as Error, for a reason that is not a measurement (Argo's InvalidSpec).
fn failed(old: &AnalysisRunStatus, error: &AnalysisError) -> AnalysisRunStatus {
    let now = Time(Timestamp::now());
    AnalysisRunStatus {
        phase: AnalysisPhase::Error,
        message: error.to_string(),
        started_at: old.started_at.clone().or_else(|| Some(now.clone())),
        completed_at: Some(now),
        ..old.clone()
    }
}

/// `{"status": <merge patch from old to new>}`: a field `new` drops, at any depth, is `null`.
pub fn status_patch(old: &AnalysisRunStatus, new: &AnalysisRunStatus) -> serde_json::Value {
    crate::merge_patch::status_patch(old, new)
}

/// (namespace, name), rollout, canary hash and step of one of Sluice's AnalysisRuns (`None`: not
/// made by Sluice's engine).
fn identity(object: &AnalysisRun) -> Option<((String, String), String, String, usize)> {
    let labels = object.metadata.labels.as_ref()?;
    let rollout = labels.get(ROLLOUT_LABEL)?.clone();
    let canary = labels
        .get(POD_TEMPLATE_HASH_LABEL)
        .cloned()
        .unwrap_or_default();
    let step = labels
        .get(STEP_INDEX_LABEL)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let namespace = object
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = object.metadata.name.clone()?;
    Some(((namespace, name), rollout, canary, step))
}

/// The templates a run refers to, each read with one GET (`sluice.dev` first, then Argo's
/// `argoproj.io` of the same kind). The outer error is the API's; the inner one a template that
/// does not exist or does not parse.
async fn templates(
    client: &Client,
    namespace: &str,
    refs: &[AnalysisTemplateRef],
) -> Result<Result<Vec<AnalysisTemplateSpec>, AnalysisError>, kube::Error> {
    let mut out = Vec::with_capacity(refs.len());
    for reference in refs {
        let kind = if reference.cluster_scope {
            "ClusterAnalysisTemplate"
        } else {
            "AnalysisTemplate"
        };
        let mut found = None;
        for group in ["sluice.dev", "argoproj.io"] {
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1alpha1", kind));
            let api: Api<DynamicObject> = if reference.cluster_scope {
                Api::all_with(client.clone(), &resource)
            } else {
                Api::namespaced_with(client.clone(), namespace, &resource)
            };
            match api.get_opt(&reference.template_name).await {
                Ok(Some(object)) => {
                    found = Some(object);
                    break;
                }
                Ok(None) => {}
                // Argo's CRDs not installed, or no right to read them: not found there.
                Err(kube::Error::Api(e))
                    if group == "argoproj.io" && matches!(e.code, 403 | 404) => {}
                Err(e) => return Err(e),
            }
        }
        let Some(object) = found else {
            return Ok(Err(AnalysisError::TemplateNotFound {
                kind,
                name: reference.template_name.clone(),
            }));
        };
        // Both kinds keep the template's fields in `spec`.
        let spec = object.data.get("spec").cloned().unwrap_or_default();
        match serde_json::from_value::<AnalysisTemplateSpec>(spec) {
            Ok(spec) => out.push(spec),
            Err(e) => {
                return Ok(Err(AnalysisError::InvalidRun {
                    field: format!("{kind} {:?}", reference.template_name),
                    message: e.to_string(),
                }));
            }
        }
    }
    Ok(Ok(out))
}
