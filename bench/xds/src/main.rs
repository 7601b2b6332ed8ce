//! `sluice-bench-xds`: the control plane's push benchmark (`make bench`, part 2).
//!
//! For each configuration of N simulated Envoys × M rollouts it starts a fresh `sluice serve`
//! process (its memory and CPU are its own), connects N state-of-the-world ADS clients that
//! behave like Envoy (CDS/LDS wildcard, then EDS/RDS/ECDS by name, ACK everything), and changes
//! one rollout's weight K times through the admin API. With a scope S the clients are sidecars
//! scoped to S rollouts each (node metadata `sluice.scope`: M / S groups, client c in group
//! c mod (M / S)); a change then concerns the N·S/M clients whose scope holds the changed rollout.
//! It reports, per configuration:
//!
//! - push latency: from just before the SetWeight RPC to the moment the *last* concerned client
//!   has received every type a weight change updates (RDS); p50 and p99 over the K changes;
//! - bytes per change (every encoded response the clients received for it) and per concerned
//!   client, and the bytes received by clients the change does not concern (should be 0);
//! - the control plane's resident memory (VmRSS, and the peak VmHWM) after the changes;
//! - its CPU seconds (user + system) per change.
//!
//! The table goes to stdout and the JSON to `target/bench/xds.json`.
//!
//! Environment: `BENCH_SHAPES`, configurations `NxM` (unscoped) or `NxM/S` (scoped), with a `d`
//! suffix for delta ADS clients (routes over VHDS), default
//! `100x100d,100x5000d,100x100,100x5000,1000x1000d,1000x1000,10000x2000/20` (the goal shapes,
//! and the two sizes of M for bytes per change over delta and state of the world),
//! `BENCH_CHANGES` (default 20), `BENCH_BUDGET_SECONDS` (default 120: a configuration whose
//! changes take longer stops after at least 3), `BENCH_SLUICE_BIN` (default
//! `target/control-plane/sluice`; build it with `cargo build --profile control-plane -p sluice`,
//! the workspace's profile for the control plane, see Cargo.toml), `BENCH_OUT` (default
//! `target/bench/xds.json`).
//! Each client holds one TCP connection, so the open-file limit must exceed N (`ulimit -n`).
#![forbid(unsafe_code)]

mod client;
mod control_plane;
mod delta_client;
mod procfs;
mod report;
mod rollouts;
mod run;
#[cfg(test)]
mod test_support;
mod tracker;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use tracing::{error, info};

use crate::{report::Row, run::RunConfig};

/// The cargo profile `make bench` builds `sluice` with (its output directory under `target/`).
const BUILD_PROFILE: &str = "control-plane";

/// File descriptors besides the clients' connections (runtime, stdio, admin client, ...).
const SPARE_FILES: u64 = 64;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            // Dropping the benchmark on Ctrl-C drops the control-plane handle, which kills it.
            tokio::select! {
                result = bench() => result,
                signal = tokio::signal::ctrl_c() => {
                    signal?;
                    bail!("interrupted")
                }
            }
        })
}

async fn bench() -> anyhow::Result<()> {
    let root = repo_root();
    let target = root.join("target");
    let shapes = match std::env::var("BENCH_SHAPES") {
        Ok(value) => parse_shapes(&value).with_context(|| format!("BENCH_SHAPES={value:?}"))?,
        Err(_) => parse_shapes(DEFAULT_SHAPES)?,
    };
    let changes = env_count("BENCH_CHANGES", 20)?;
    let budget = Duration::from_secs(env_count("BENCH_BUDGET_SECONDS", 120)? as u64);
    let binary = std::env::var_os("BENCH_SLUICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join(BUILD_PROFILE).join("sluice"));
    let out = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("bench").join("xds.json"));
    check_open_files(shapes.iter().map(|s| s.0).max().unwrap_or(0))?;

    let mut rows = Vec::new();
    for &(n, m, scope, delta) in &shapes {
        let config = RunConfig {
            clients: n,
            rollouts: m,
            scope,
            delta,
            changes,
            budget,
            binary: binary.clone(),
            work_dir: control_plane::work_dir(&target),
            // Generous: the machine is small and shared.
            sync_timeout: Duration::from_secs(300),
            change_timeout: Duration::from_secs(60),
        };
        info!(clients = n, rollouts = m, ?scope, delta, changes, "running");
        let result = run::run(&config).await.map_err(|e| format!("{e:#}"));
        match &result {
            Ok(o) => info!(
                clients = n,
                rollouts = m,
                p50_ms = o.p50.as_secs_f64() * 1e3,
                p99_ms = o.p99.as_secs_f64() * 1e3,
                rss_mib = o.rss_bytes / (1024 * 1024),
                "done"
            ),
            Err(e) => error!(clients = n, rollouts = m, error = %e, "failed"),
        }
        rows.push(Row {
            clients: n,
            rollouts: m,
            scope,
            delta,
            result,
        });
    }

    print!("{}", report::table(&rows));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    write_json(&out, &report::json(&rows, cpus))?;
    println!("wrote {}", out.display());
    let failed = rows.iter().filter(|r| r.result.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {} configurations failed", rows.len());
    }
    Ok(())
}

/// The workspace root: this crate lives in `bench/xds`.
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map_or_else(|| manifest.to_path_buf(), Path::to_path_buf)
}

/// The default configurations: the goal shapes, and M = 100 and 5,000 for bytes per
/// change.
const DEFAULT_SHAPES: &str =
    "100x100d,100x5000d,100x100,100x5000,1000x1000d,1000x1000,10000x2000/20";

/// One configuration: (clients, rollouts, rollouts per scope, delta ADS clients).
type Shape = (usize, usize, Option<usize>, bool);

/// `NxM` or `NxM/S`, each with an optional `d` suffix (delta ADS clients), comma-separated.
fn parse_shapes(value: &str) -> anyhow::Result<Vec<Shape>> {
    value
        .split(',')
        .map(|part| {
            let part = part.trim().replace('_', "");
            let (part, delta) = match part.strip_suffix('d') {
                Some(rest) => (rest.to_owned(), true),
                None => (part, false),
            };
            let (size, scope) = match part.split_once('/') {
                Some((size, scope)) => (size, Some(scope)),
                None => (part.as_str(), None),
            };
            let (n, m) = size
                .split_once('x')
                .with_context(|| format!("{part:?}: expected NxM or NxM/S"))?;
            let count = |s: &str| -> anyhow::Result<usize> {
                match s.parse::<usize>() {
                    Ok(0) | Err(_) => bail!("{part:?}: {s:?} is not a positive count"),
                    Ok(c) => Ok(c),
                }
            };
            let (n, m) = (count(n)?, count(m)?);
            let scope = scope.map(count).transpose()?;
            if let Some(s) = scope
                && !m.is_multiple_of(s)
            {
                bail!("{part:?}: the scope {s} must divide M = {m}");
            }
            Ok((n, m, scope, delta))
        })
        .collect()
}

/// A comma-separated list of counts from the environment, or the default.
fn env_list(name: &str, default: &[usize]) -> anyhow::Result<Vec<usize>> {
    match std::env::var(name) {
        Ok(value) => parse_list(&value).with_context(|| format!("{name}={value:?}")),
        Err(std::env::VarError::NotPresent) => Ok(default.to_vec()),
        Err(e) => Err(e).with_context(|| name.to_owned()),
    }
}

/// One positive count from the environment, or the default.
fn env_count(name: &str, default: usize) -> anyhow::Result<usize> {
    match env_list(name, &[default])?.as_slice() {
        [count] => Ok(*count),
        _ => bail!("{name}: expected one count"),
    }
}

fn parse_list(value: &str) -> anyhow::Result<Vec<usize>> {
    let list = value
        .split(',')
        .map(|part| {
            let part = part.trim().replace('_', "");
            part.parse::<usize>()
                .with_context(|| format!("{part:?} is not a count"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if list.is_empty() || list.contains(&0) {
        bail!("expected positive counts, e.g. 10,100,1000");
    }
    Ok(list)
}

fn check_open_files(max_clients: usize) -> anyhow::Result<()> {
    let needed = max_clients as u64 + SPARE_FILES;
    match procfs::read_own_open_files_limit()? {
        Some(limit) if limit < needed => bail!(
            "{max_clients} clients need about {needed} open files, the limit is {limit}: \
             raise it (ulimit -n {needed}) or use smaller BENCH_SHAPES"
        ),
        _ => Ok(()),
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_counts() {
        assert_eq!(parse_list("10, 100,1_000").unwrap(), vec![10, 100, 1_000]);
        assert!(parse_list("10,x").is_err());
        assert!(parse_list("0").is_err());
        assert!(parse_list("").is_err());
    }

    #[test]
    fn shapes_are_sizes_with_an_optional_scope() {
        assert_eq!(
            parse_shapes("10x100, 10_000x2_000/20").unwrap(),
            vec![(10, 100, None, false), (10_000, 2_000, Some(20), false)]
        );
        assert_eq!(
            parse_shapes("1000x1000d,10x100/20d").unwrap(),
            vec![(1_000, 1_000, None, true), (10, 100, Some(20), true)]
        );
        assert_eq!(parse_shapes(DEFAULT_SHAPES).unwrap().len(), 7);
        for bad in [
            "10",
            "0x5",
            "10x100/0",
            "10x100/30",
            "axb",
            "",
            "d",
            "10x100dd",
        ] {
            assert!(parse_shapes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_root_holds_the_workspace_manifest() {
        assert!(
            repo_root()
                .join("bench")
                .join("xds")
                .join("Cargo.toml")
                .is_file()
        );
    }
}
