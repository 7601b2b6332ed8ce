//! Standalone mode's source: the watch on the rollouts file. The standalone driver
//! (`crate::standalone`) reloads the file on each change and runs the release engine.
//!
//! A file that fails to read, parse or validate is never pushed: the last good state keeps serving
//! and the error (file, rollout, field) is logged, counted and shown by `sluice status`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::warn;

/// Watches the file's directory (editors and `kubectl`-style tools replace files by rename, which
/// a watch on the file itself would miss): the receiver gets one message per event on the file.
/// Keep the watcher alive as long as the receiver.
pub fn watch(
    path: &Path,
) -> anyhow::Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<()>)> {
    let (tx, rx) = mpsc::unbounded_channel();
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

    Ok((watcher, rx))
}
