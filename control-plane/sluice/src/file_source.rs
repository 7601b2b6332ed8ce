//! Standalone mode's source: the rollouts file, loaded at start and hot-reloaded on change.
//!
//! A file that fails to read, parse or validate is never pushed: the last good state keeps serving
//! and the error (file, rollout, field) is logged, counted and shown by `sluice status`.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::serve::App;

/// Reads and validates the file into the store. Returns true if the store's source changed.
pub async fn load(app: &App, path: &Path) -> bool {
    let origin = path.display().to_string();
    let result = match tokio::fs::read_to_string(path).await {
        Ok(text) => sluice_api::load_state(&text, &origin).map_err(|e| e.to_string()),
        Err(e) => Err(format!("{origin}: {e}")),
    };
    let mut store = app.store.lock().await;
    match result {
        Ok(state) => {
            info!(file = %origin, rollouts = state.rollouts.len(), "rollouts file loaded");
            store.set_source(state);
            true
        }
        Err(message) => {
            error!(file = %origin, error = %message, "rollouts file rejected; the last good state keeps serving");
            store.set_source_error(message);
            app.metrics.source_error();
            false
        }
    }
}

/// Follows the file until `shutdown` flips: watches its directory (editors and `kubectl`-style
/// tools replace files by rename, which a watch on the file itself would miss) and reloads after a
/// quiet period. With `reload_first`, reads the file once at the start (a restarted task must
/// not miss the edits made while it was down). Errors (the watch cannot be set up) are returned
/// to the supervisor, which reports them and restarts this.
pub async fn follow(
    app: Arc<App>,
    path: PathBuf,
    debounce: Duration,
    reload_first: bool,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let file_name = path.file_name().map(|n| n.to_owned());
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                let ours = event
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_owned()) == file_name);
                if ours && !event.kind.is_access() {
                    let _ = tx.send(());
                }
            }
            Err(e) => warn!(error = %e, "file watch error"),
        })
        .context("creating the file watch")?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;

    if reload_first && load(&app, &path).await {
        app.publish().await;
    }
    loop {
        tokio::select! {
            event = rx.recv() => {
                if event.is_none() {
                    anyhow::bail!("the file watch stopped delivering events");
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        }
        // Coalesce a burst of events (write + chmod + rename) into one reload.
        tokio::time::sleep(debounce).await;
        while rx.try_recv().is_ok() {}
        if load(&app, &path).await {
            app.publish().await;
        }
    }
}
