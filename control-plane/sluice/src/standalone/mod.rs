//! Standalone mode's release engine driver: one loop that runs the engine on every change — the
//! rollouts file reloaded, a command from the admin API, an ACK or NACK in the xDS registry, the
//! engine's own `requeue_after` timer (timed pauses elapse on it, not on a poll) — and executes its
//! actions: the versions are the `spec.staticEndpoints` entries, the published traffic goes to the
//! store (→ snapshot → every Envoy), events are logged and kept, and everything is persisted in
//! the state file ([`state`]).
//!
//! ```text
//!  rollouts file ─┐   admin Command ─┐   registry ACKs ─┐   requeue timer ─┐
//!                 v                  v                   v                  v
//!        Driver::pass: per rollout with spec.version: reconcile → record (state file)
//!                      every rollout → TrafficState → Store → snapshot → Gate
//! ```
//!
//! A rollout without `spec.version` keeps its manual meaning: its status comes from the file.

pub mod analysis;
pub mod run;
pub mod state;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use k8s_openapi::jiff::Timestamp;
use sluice_analysis::{AnalysisDocument, runner::RunUpdate};
use sluice_api::Rollout;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tracing::{error, info};

use crate::{
    gate::{Gate, Generations},
    serve::{App, SourceEvent},
};
use run::Command;
use state::StateFile;

/// The engine's state, shared by the driver loop and the admin API.
#[derive(Debug)]
pub struct Engine {
    pub state_path: PathBuf,
    pub state: StateFile,
    /// The last good documents of the rollouts file (1-based document numbers).
    pub documents: Vec<(usize, Rollout)>,
    gate: Gate,
    /// Why the last reload of the rollouts file was rejected (the last good documents serve on).
    file_error: Option<String>,
    /// A valid file was read once: until then nothing is published (Envoys keep what they have).
    loaded: bool,
    /// What was last written to the state file.
    written: Option<StateFile>,
    /// The AnalysisTemplates / ClusterAnalysisTemplates of the last good file.
    templates: Vec<AnalysisDocument>,
    /// The running AnalysisRuns.
    runs: analysis::Runs,
}

/// The handle the admin API uses.
#[derive(Debug)]
pub struct Standalone {
    pub engine: Mutex<Engine>,
    /// Wakes the driver loop (after a command).
    pub wake: Notify,
    /// The runners' status updates, read by the driver loop.
    updates: Mutex<mpsc::UnboundedReceiver<RunUpdate>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no rollout named {0:?}")]
    Unknown(String),
    #[error(
        "rollout {0:?} has no spec.version: its status is written by hand in the rollouts file"
    )]
    Manual(String),
}

impl Standalone {
    /// Reads the state file beside `file` (a corrupt one is an error). `nodes`: the ADS
    /// server's per-node snapshots (the gate reads scoped Envoys against their scope's).
    pub fn open(
        file: &Path,
        nodes: Arc<sluice_xds::scope::NodeSnapshots>,
    ) -> anyhow::Result<Arc<Self>> {
        let state_path = state::path_for(file);
        let state = state::read(&state_path)?;
        info!(path = %state_path.display(), rollouts = state.rollouts.len(), "release engine state read");
        let (updates_tx, updates) = mpsc::unbounded_channel();
        Ok(Arc::new(Standalone {
            engine: Mutex::new(Engine {
                state_path,
                written: Some(state.clone()),
                state,
                documents: Vec::new(),
                gate: Gate::new(nodes),
                file_error: None,
                loaded: false,
                templates: Vec::new(),
                runs: analysis::Runs::new(updates_tx),
            }),
            wake: Notify::new(),
            updates: Mutex::new(updates),
        }))
    }

    /// Applies and persists a command, then wakes the driver.
    pub async fn command(&self, rollout: &str, command: Command) -> anyhow::Result<()> {
        let mut engine = self.engine.lock().await;
        let doc = engine
            .document(rollout)
            .ok_or_else(|| CommandError::Unknown(rollout.to_owned()))?;
        if doc.spec.version.is_none() {
            return Err(CommandError::Manual(rollout.to_owned()).into());
        }
        let record = engine.state.rollouts.entry(rollout.to_owned()).or_default();
        run::apply_command(record, command, Timestamp::now());
        info!(rollout, command = command.describe(), "command received");
        engine.persist()?;
        drop(engine);
        self.wake.notify_one();
        Ok(())
    }
}

impl Engine {
    /// Whether the engine runs any rollout of the file (one with `spec.version`).
    fn runs_any(&self) -> bool {
        self.documents
            .iter()
            .any(|(_, doc)| doc.spec.version.is_some())
    }

    pub fn document(&self, name: &str) -> Option<&Rollout> {
        self.documents
            .iter()
            .map(|(_, d)| d)
            .find(|d| sluice_api::rollout_name(d).ok().as_deref() == Some(name))
    }

    fn persist(&mut self) -> anyhow::Result<()> {
        if self.written.as_ref() != Some(&self.state) {
            state::write(&self.state_path, &self.state)?;
            self.written = Some(self.state.clone());
        }
        Ok(())
    }
}

/// Reads the rollouts file: every document parsed and valid, none with a `status` beside
/// `spec.version`.
#[allow(clippy::type_complexity)]
async fn read_file(path: &Path) -> Result<(Vec<(usize, Rollout)>, Vec<AnalysisDocument>), String> {
    let origin = path.display().to_string();
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("{origin}: {e}"))?;
    // The whole file validated as it starts (engine rollouts on their spec.version): a file
    // that fails is never taken, the last good documents keep serving.
    sluice_api::load_state(&text, &origin).map_err(|e| e.to_string())?;
    let templates =
        sluice_analysis::parse_analysis_documents(&text).map_err(|e| format!("{origin}: {e}"))?;
    let rollouts = sluice_api::parse_documents(&text, &origin).map_err(|e| e.to_string())?;
    Ok((rollouts, templates))
}

/// One pass over every rollout; returns when the engine wants to run again.
async fn pass(
    app: &App,
    standalone: &Standalone,
    origin: &str,
) -> anyhow::Result<Option<Duration>> {
    let mut engine = standalone.engine.lock().await;
    let engine = &mut *engine;
    if !engine.loaded {
        return Ok(None);
    }
    let proxies = app.registry.snapshot();
    let now = Timestamp::now();
    let mut requeue: Option<Duration> = None;
    let mut documents = engine.documents.clone();
    let mut generations = Generations::new();
    for (_, doc) in &mut documents {
        if doc.spec.version.is_none() {
            continue;
        }
        let Ok(name) = sluice_api::rollout_name(doc) else {
            continue;
        };
        let acks = engine.gate.proxies(&name, &proxies);
        let record = engine.state.rollouts.entry(name.clone()).or_default();
        let generation = |record: &state::RolloutRecord| {
            record
                .status
                .as_ref()
                .and_then(|s| s.data_plane.as_ref())
                .map_or(0, |d| d.generation)
        };
        let before = generation(record);
        if let Some(after) = run::run(&name, doc, record, &acks, now) {
            requeue = Some(requeue.map_or(after, |r| r.min(after)));
        }
        let published = generation(record);
        if published != before {
            // The gate learns the new generation only once this pass's snapshot is published
            // (below). Look again right after: with no proxy connected nothing else would wake
            // the engine (no ACK comes), and the step would wait for ever.
            requeue = Some(Duration::ZERO);
        }
        generations.insert(name, published);
        doc.status = Some(run::traffic_status(doc, record));
    }
    // Rollouts that left the file leave the state file too.
    let names: Vec<String> = documents
        .iter()
        .filter(|(_, d)| d.spec.version.is_some())
        .filter_map(|(_, d)| sluice_api::rollout_name(d).ok())
        .collect();
    engine.state.rollouts.retain(|name, _| names.contains(name));
    // Runs started, resumed or terminated; one that cannot be planned ended: look again now.
    if engine.runs.sync(&engine.templates, &mut engine.state) {
        requeue = Some(Duration::ZERO);
    }
    engine.persist()?;
    let event = match sluice_api::state_of_documents(&documents, origin) {
        Ok(state) => SourceEvent::State {
            state,
            // A rejected file stays reported until a good one replaces it.
            still_rejected: engine.file_error.clone(),
        },
        Err(e) => SourceEvent::Rejected(format!("the rollouts cannot be served: {e}")),
    };
    app.apply_source([event]).await;
    let published = app.snapshots.borrow().clone();
    if let Some(snapshot) = published {
        engine.gate.record(snapshot, generations);
    }
    Ok(requeue)
}

/// Reloads the file into the engine; true when it was accepted.
async fn reload(app: &App, standalone: &Standalone, path: &Path) -> bool {
    match read_file(path).await {
        Ok((documents, templates)) => {
            info!(file = %path.display(), rollouts = documents.len(), analysis_templates = templates.len(), "rollouts file loaded");
            let mut engine = standalone.engine.lock().await;
            engine.documents = documents;
            engine.templates = templates;
            engine.file_error = None;
            engine.loaded = true;
            true
        }
        Err(message) => {
            error!(file = %path.display(), error = %message, "rollouts file rejected; the last good state keeps serving");
            standalone.engine.lock().await.file_error = Some(message.clone());
            app.apply_source([SourceEvent::Rejected(message)]).await;
            false
        }
    }
}

/// Loads the file once (before anything is published) and runs a first pass.
pub async fn start(app: &App, standalone: &Standalone, path: &Path) -> anyhow::Result<()> {
    if reload(app, standalone, path).await {
        pass(app, standalone, &path.display().to_string()).await?;
    }
    Ok(())
}

/// The driver loop, until `shutdown` flips. With `reload_first`, reads the file again first (a
/// restarted task must not miss edits made while it was down).
pub async fn follow(
    app: Arc<App>,
    standalone: Arc<Standalone>,
    path: PathBuf,
    debounce: Duration,
    reload_first: bool,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let origin = path.display().to_string();
    let (_watcher, mut changes) = crate::file_source::watch(&path)?;
    let mut acks = app.registry.subscribe();
    let mut updates = standalone.updates.lock().await;
    if reload_first {
        reload(&app, &standalone, &path).await;
    }
    let mut requeue = pass(&app, &standalone, &origin)
        .await
        .context("release engine pass")?;
    loop {
        let timer = tokio::time::sleep(requeue.unwrap_or(Duration::from_secs(3600)));
        let wake = tokio::select! {
            event = changes.recv() => Wake::File(event.is_some()),
            changed = acks.changed() => Wake::Acks(changed.is_ok()),
            () = standalone.wake.notified() => Wake::Now,
            update = updates.recv() => Wake::Run(update),
            () = timer, if requeue.is_some() => Wake::Now,
            _ = shutdown.wait_for(|stop| *stop) => Wake::Stop,
        };
        match wake {
            Wake::Stop => return Ok(()),
            Wake::File(false) => anyhow::bail!("the file watch stopped delivering events"),
            Wake::Acks(false) => anyhow::bail!("the proxy registry is gone"),
            Wake::File(true) => {
                // Coalesce a burst of events (write + chmod + rename) into one reload.
                tokio::time::sleep(debounce).await;
                while changes.try_recv().is_ok() {}
                reload(&app, &standalone, &path).await;
            }
            Wake::Acks(true) => {
                // A burst of ACKs (every type, every proxy) is one pass.
                tokio::time::sleep(debounce).await;
                acks.borrow_and_update();
                // ACKs feed only the gate of engine-run rollouts. With none, a pass would copy
                // every proxy's status and re-derive the whole state for nothing, once per burst
                // (most of the control plane's CPU with 10,000 connected sidecars).
                if !standalone.engine.lock().await.runs_any() {
                    continue;
                }
            }
            Wake::Now => {}
            Wake::Run(None) => anyhow::bail!("the analysis runners' channel is closed"),
            Wake::Run(Some(update)) => {
                let mut engine = standalone.engine.lock().await;
                let mut changed = analysis::apply_update(&mut engine.state, update);
                // A burst (several metrics measured at once) is one pass.
                while let Ok(update) = updates.try_recv() {
                    changed |= analysis::apply_update(&mut engine.state, update);
                }
                if !changed {
                    continue;
                }
                engine.persist()?;
            }
        }
        requeue = pass(&app, &standalone, &origin)
            .await
            .context("release engine pass")?;
    }
}

/// Why the driver loop woke.
enum Wake {
    /// The file changed (false: the watch ended).
    File(bool),
    /// The registry changed (false: it is gone).
    Acks(bool),
    /// A command or the requeue timer.
    Now,
    /// An analysis run's new status (None: the channel closed).
    Run(Option<RunUpdate>),
    Stop,
}

/// The records of every rollout the engine runs, for the admin API's views.
pub async fn records(standalone: &Standalone) -> BTreeMap<String, (Rollout, state::RolloutRecord)> {
    let engine = standalone.engine.lock().await;
    engine
        .documents
        .iter()
        .filter_map(|(_, doc)| {
            let name = sluice_api::rollout_name(doc).ok()?;
            let record = engine
                .state
                .rollouts
                .get(&name)
                .cloned()
                .unwrap_or_default();
            Some((name, (doc.clone(), record)))
        })
        .collect()
}
