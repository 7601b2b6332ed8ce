//! Every Envoy config under `deploy/` passes `envoy --mode validate`, and the filter-only config
//! routes as its comments say when run for real.
//!
//! Validation loads Wasm modules and runs the filter's policy check, so the module must exist:
//! the documented install path of the module is replaced by the built one (`make wasm`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use sluice_e2e::{
    Envoy, Req, Upstream, check_binomial, filter_native, filter_wasm, send_all, validate,
    workspace_root,
};

/// Where the deploy configs expect the filter module to be installed.
const INSTALLED_WASM: &str = "/etc/sluice/sluice_filter.wasm";
const INSTALLED_NATIVE: &str = "/etc/sluice/libsluice_filter_native.so";

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            yaml_files(&path, found)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            found.push(path);
        }
    }
    Ok(())
}

/// An Envoy bootstrap has `static_resources` or `dynamic_resources` at the top level; Kubernetes
/// manifests and Sluice's own files do not.
fn is_envoy_config(document: &serde_yaml::Value) -> bool {
    document.get("static_resources").is_some() || document.get("dynamic_resources").is_some()
}

/// The Envoy configs in one deploy file, named for messages: the file itself if it is one, and
/// every `data` entry of a ConfigMap in it that is one (e.g. a bootstrap mounted into a pod).
fn envoy_configs(path: &Path, text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut configs = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let document = serde_yaml::Value::deserialize(document)
            .with_context(|| format!("{} is not valid YAML", path.display()))?;
        if is_envoy_config(&document) {
            configs.push((path.display().to_string(), text.to_string()));
            continue;
        }
        if document.get("kind").and_then(serde_yaml::Value::as_str) != Some("ConfigMap") {
            continue;
        }
        let Some(data) = document.get("data").and_then(serde_yaml::Value::as_mapping) else {
            continue;
        };
        for (key, value) in data {
            let (Some(key), Some(value)) = (key.as_str(), value.as_str()) else {
                continue;
            };
            let embedded: serde_yaml::Value = match serde_yaml::from_str(value) {
                Ok(embedded) => embedded,
                Err(_) => continue, // not YAML at all: not an Envoy config
            };
            if is_envoy_config(&embedded) {
                configs.push((
                    format!("{} (data.{key})", path.display()),
                    value.to_string(),
                ));
            }
        }
    }
    Ok(configs)
}

#[test]
fn every_envoy_config_in_deploy_validates() -> anyhow::Result<()> {
    let mut files = Vec::new();
    yaml_files(&workspace_root().join("deploy"), &mut files)?;
    files.sort();
    let wasm = filter_wasm()?;
    let native = filter_native()?;
    let mut checked = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for (name, config) in envoy_configs(&path, &text)? {
            let config = config
                .replace(INSTALLED_WASM, &wasm.display().to_string())
                .replace(INSTALLED_NATIVE, &native.display().to_string());
            let outcome = validate(&config)?;
            assert!(
                outcome.status.success(),
                "{name} fails envoy --mode validate:\n{}",
                outcome.output
            );
            checked.push(name);
        }
    }
    for config in ["filter-only.yaml", "filter-only-native.yaml"] {
        assert!(
            checked
                .iter()
                .any(|name| name.ends_with(&format!("deploy/envoy/{config}"))),
            "deploy/envoy/{config} was not checked; checked: {checked:?}"
        );
    }
    eprintln!("validated: {checked:#?}");
    Ok(())
}

#[test]
fn filter_only_config_fails_validation_with_a_bad_policy() -> anyhow::Result<()> {
    // Guards the test above: validation really runs the policy check on this file.
    let path = workspace_root().join("deploy/envoy/filter-only.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let bad = text
        .replace(INSTALLED_WASM, &filter_wasm()?.display().to_string())
        .replace("\"canaryWeightBp\": 1000", "\"canaryWeightBp\": 12000");
    assert!(
        bad.contains("\"canaryWeightBp\": 12000"),
        "the policy's weight line moved"
    );
    let outcome = validate(&bad)?;
    assert!(
        !outcome.status.success(),
        "a weight of 12000 bp was accepted"
    );
    assert!(
        outcome.output.contains("canaryWeightBp") && outcome.output.contains("default/demo"),
        "no filter message naming the rollout and field:\n{}",
        outcome.output
    );
    Ok(())
}

/// The filter-only config with its install paths, ports and service names replaced so it runs
/// here in front of two loopback upstreams (named after the hashes they serve).
fn runnable_filter_only(stable: &Upstream, canary: &Upstream) -> anyhow::Result<String> {
    let path = workspace_root().join("deploy/envoy/filter-only.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut config = text.replace(INSTALLED_WASM, &filter_wasm()?.display().to_string());
    let replacements = [
        ("port_value: 9901", "port_value: 0".to_string()),
        (
            "address: 0.0.0.0, port_value: 8080",
            "address: 127.0.0.1, port_value: 0".to_string(),
        ),
        (
            "address: demo-6d4f8b7c9.default.svc.cluster.local, port_value: 8080",
            format!("address: 127.0.0.1, port_value: {}", stable.port()),
        ),
        (
            "address: demo-5c8b9d6f4.default.svc.cluster.local, port_value: 8080",
            format!("address: 127.0.0.1, port_value: {}", canary.port()),
        ),
    ];
    for (from, to) in replacements {
        anyhow::ensure!(
            config.contains(from),
            "filter-only.yaml no longer contains {from:?}"
        );
        config = config.replace(from, &to);
    }
    Ok(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_only_config_routes_as_documented() -> anyhow::Result<()> {
    const N: usize = 2000;
    let stable = Upstream::start("6d4f8b7c9").await?;
    let canary = Upstream::start("5c8b9d6f4").await?;
    let mut envoy = Envoy::start(&runnable_filter_only(&stable, &canary)?).await?;
    let addr = envoy.listener_addr("ingress").await?;
    let host = "demo.example.com";

    // New visitors: 10 % canary (by their new sticky cookie), each given a cookie.
    let first = send_all(addr, vec![Req::get(host); N], 8).await?;
    let on_canary = first
        .iter()
        .filter(|r| r.upstream() == Some(canary.name()))
        .count();
    check_binomial("canary share", on_canary as u64, N as u64, 0.1)?;
    assert!(first.iter().all(|r| r.header("set-cookie").is_some()));

    // Testers reach the canary.
    let testers = send_all(
        addr,
        vec![Req::get(host).header("x-canary", "always"); 200],
        8,
    )
    .await?;
    assert!(testers.iter().all(|r| r.upstream() == Some(canary.name())));

    // Every request was counted, each new visitor under (version, "sticky").
    let counters = envoy.sluice_counters_reaching((N + 200) as u64).await?;
    let key = |version: &str, reason: &str| {
        (
            "default_demo".to_string(),
            version.to_string(),
            reason.to_string(),
        )
    };
    assert_eq!(
        counters.values().sum::<u64>(),
        (N + 200) as u64,
        "{counters:#?}"
    );
    assert_eq!(
        counters[&key(canary.name(), "sticky")],
        on_canary as u64,
        "{counters:#?}"
    );
    assert_eq!(
        counters[&key(canary.name(), "header")],
        200,
        "{counters:#?}"
    );
    envoy.ensure_running()?;
    Ok(())
}
