//! The standalone release engine's state file, beside the rollouts file (`<file>.state.json`):
//! per rollout the engine's status (Argo's `RolloutStatus`), its versions (revisions, desired
//! replicas, scale-down deadlines), the user's pause, the commands received and the last events.
//!
//! Written atomically (a temp file in the same directory, fsync, rename, fsync of the directory)
//! and read at start, so a restart in the middle of a canary keeps its step and weight. A file
//! that does not parse is an error naming it: never silently reset.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};
use sluice_api::RolloutStatus;

/// The format version written in the file.
pub const FORMAT: u32 = 1;
/// Events kept per rollout (the newest).
pub const KEPT_EVENTS: usize = 50;
/// Commands kept per rollout (the newest).
pub const KEPT_COMMANDS: usize = 50;
/// Completed AnalysisRuns kept per rollout (the newest; running ones are always kept).
pub const KEPT_RUNS: usize = 10;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateFile {
    pub format: u32,
    /// By rollout name (`namespace/name`).
    #[serde(default)]
    pub rollouts: BTreeMap<String, RolloutRecord>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutRecord {
    /// The engine's status, as Argo's controller would write it on the Rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RolloutStatus>,
    /// The versions the engine created (its "ReplicaSets"), oldest first.
    #[serde(default)]
    pub versions: Vec<VersionRecord>,
    /// `sluice rollouts pause`: held as `spec.paused` until `promote`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// The commands received, oldest first (already applied to `status` / `paused`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<CommandRecord>,
    /// The engine's last events, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventRecord>,
    /// The AnalysisRuns the engine started, oldest first (Argo's AnalysisRun objects; the status
    /// is the runner's, measurements included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis_runs: Vec<AnalysisRunRecord>,
}

/// One AnalysisRun: what the engine asked for (enough to plan it again after a restart) and its
/// status as Argo writes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisRunRecord {
    /// `<rollout>-<version>-<step>` or `<rollout>-<version>-background`.
    pub name: String,
    pub canary_hash: String,
    pub stable_hash: String,
    pub step_index: usize,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub background: bool,
    pub templates: Vec<sluice_api::resource::AnalysisTemplateRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<sluice_api::resource::AnalysisRunArgument>,
    /// The rollout's (or experiment step's) `dryRun` rules, planned beside the templates'.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<sluice_api::resource::DryRun>,
    /// The rollout's `measurementRetention` rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<sluice_api::resource::MeasurementRetention>,
    /// Argo's `spec.terminate`: the engine no longer waits on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate: bool,
    #[serde(default)]
    pub status: sluice_analysis::AnalysisRunStatus,
}

/// One version (a key of `spec.staticEndpoints`) as the engine scaled it. Replicas are a
/// share of the static endpoints: 0 means it receives no traffic and is recorded as scaled down.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionRecord {
    /// `<rollout>-<version>`.
    pub name: String,
    /// The version (the key of `spec.staticEndpoints`).
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    pub desired: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_deadline: Option<Time>,
    /// It runs a template of this experiment (`<rollout>-<version>-<step>`), not a revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandRecord {
    pub at: Time,
    /// promote, promote --full, abort, retry, pause.
    pub command: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventRecord {
    pub at: Time,
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "state file {path}: not a valid Sluice state file ({source}); fix or move it away \
         (it is never reset silently)"
    )]
    Corrupt {
        path: String,
        source: serde_json::Error,
    },
    #[error("state file {path}: format {found} is not {FORMAT}")]
    Format { path: String, found: u32 },
}

/// `<rollouts file>.state.json`, in the same directory.
pub fn path_for(rollouts_file: &Path) -> PathBuf {
    let mut name = rollouts_file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".state.json");
    rollouts_file.with_file_name(name)
}

/// Reads the state file; absent means a fresh start.
pub fn read(path: &Path) -> Result<StateFile, StateError> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(StateFile {
                format: FORMAT,
                ..StateFile::default()
            });
        }
        Err(source) => {
            return Err(StateError::Io {
                path: shown,
                source,
            });
        }
    };
    parse(&text, &shown)
}

/// Parses the text of a state file (`origin` names it in errors).
pub fn parse(text: &str, origin: &str) -> Result<StateFile, StateError> {
    let state: StateFile = serde_json::from_str(text).map_err(|source| StateError::Corrupt {
        path: origin.to_owned(),
        source,
    })?;
    if state.format != FORMAT {
        return Err(StateError::Format {
            path: origin.to_owned(),
            found: state.format,
        });
    }
    Ok(state)
}

/// Writes the state file atomically: temp file beside it, fsync, rename over, fsync the directory.
pub fn write(path: &Path, state: &StateFile) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.display().to_string(),
        source,
    };
    let text = serde_json::to_vec_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io)?;
    tmp.write_all(&text).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    // The rename itself is durable once the directory is synced.
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

/// Appends, keeping the newest `keep`.
pub fn push_bounded<T>(list: &mut Vec<T>, item: T, keep: usize) {
    list.push(item);
    if list.len() > keep {
        let excess = list.len() - keep;
        list.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StateFile {
        let mut state = StateFile {
            format: FORMAT,
            ..StateFile::default()
        };
        state.rollouts.insert(
            "default/demo".into(),
            RolloutRecord {
                status: Some(RolloutStatus {
                    stable_rs: Some("v1".into()),
                    current_pod_hash: Some("v2".into()),
                    current_step_index: Some(2),
                    ..RolloutStatus::default()
                }),
                versions: vec![VersionRecord {
                    name: "demo-v1".into(),
                    hash: "v1".into(),
                    revision: Some(1),
                    desired: 1,
                    scale_down_deadline: None,
                    experiment: None,
                }],
                paused: true,
                ..RolloutRecord::default()
            },
        );
        state
    }

    #[test]
    fn a_written_state_reads_back_the_same() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = path_for(&dir.path().join("rollouts.yaml"));
        assert!(path.ends_with("rollouts.yaml.state.json"));
        assert_eq!(read(&path).expect("absent is fresh").rollouts.len(), 0);
        write(&path, &sample()).expect("written");
        assert_eq!(read(&path).expect("reads"), sample());
        // No temp file left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rollouts.yaml.state.json");
        std::fs::write(
            &path,
            "{\"format\": 1, \"rollouts\": {\"default/demo\": {\"status\": 7}}}",
        )
        .expect("written");
        let message = read(&path).expect_err("corrupt").to_string();
        assert!(
            message.contains("rollouts.yaml.state.json") && message.contains("never reset"),
            "{message}"
        );
        std::fs::write(&path, "{\"format\": 9}").expect("written");
        assert!(
            read(&path)
                .expect_err("format")
                .to_string()
                .contains("format 9")
        );
        std::fs::write(&path, "").expect("written");
        assert!(read(&path).is_err(), "an empty file is not a fresh start");
    }

    #[test]
    fn bounded_lists_keep_the_newest() {
        let mut list = vec![1, 2, 3];
        push_bounded(&mut list, 4, 3);
        assert_eq!(list, [2, 3, 4]);
    }
}
