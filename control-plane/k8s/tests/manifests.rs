//! Every YAML document under deploy/kubernetes parses as the Kubernetes type its `kind` names
//! (k8s-openapi types; sluice.dev Rollouts via sluice-api), unknown kinds fail, every file a
//! kustomization lists exists, and every Envoy bootstrap in a ConfigMap passes the real
//! `envoy --mode validate`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Namespace, Service, ServiceAccount},
    networking::v1::NetworkPolicy,
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
};
use serde::{Deserialize, de::DeserializeOwned};
use sluice_api::Rollout;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readable dir")
        .map(|e| e.expect("entry").path())
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

/// Parses one document as `T`, refusing fields `T` does not know (a typo in a manifest would
/// otherwise pass silently): the document must survive a round trip through `T` unchanged.
fn strict<T: DeserializeOwned + serde::Serialize>(value: &serde_yaml::Value) -> anyhow::Result<T> {
    let typed: T = serde_yaml::from_value(value.clone())?;
    let back = serde_yaml::to_value(&typed)?;
    let as_json = |v: &serde_yaml::Value| serde_json::to_value(v).expect("json");
    if as_json(&back) != as_json(value) {
        bail!(
            "fields lost in parsing (unknown or misplaced):\n  written: {}\n  parsed:  {}",
            as_json(value),
            as_json(&back)
        );
    }
    Ok(typed)
}

#[derive(Deserialize)]
struct Kustomization {
    #[serde(default)]
    resources: Vec<String>,
}

#[test]
fn every_manifest_parses_as_its_kind_and_every_bootstrap_validates() {
    let mut files = Vec::new();
    yaml_files(&deploy_dir(), &mut files);
    assert!(files.len() >= 10, "manifests found: {files:?}");
    let mut kinds = Vec::new();
    let mut bootstraps = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = serde_yaml::Value::deserialize(document).expect("yaml");
            if value.is_null() {
                continue;
            }
            let at = format!("{} document {}", file.display(), i + 1);
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_owned();
            let api_version = value
                .get("apiVersion")
                .and_then(|k| k.as_str())
                .unwrap_or_default();
            let checked: anyhow::Result<()> = (|| {
                match (api_version, kind.as_str()) {
                    ("kustomize.config.k8s.io/v1beta1", "Kustomization") => {
                        let k: Kustomization = serde_yaml::from_value(value.clone())?;
                        let dir = file.parent().expect("dir");
                        for resource in k.resources {
                            let path = dir.join(&resource);
                            if !path.exists() {
                                bail!("lists {resource}, which does not exist");
                            }
                        }
                    }
                    ("apps/v1", "Deployment") => drop(strict::<Deployment>(&value)?),
                    ("v1", "Service") => drop(strict::<Service>(&value)?),
                    ("v1", "ServiceAccount") => drop(strict::<ServiceAccount>(&value)?),
                    ("v1", "Namespace") => drop(strict::<Namespace>(&value)?),
                    ("networking.k8s.io/v1", "NetworkPolicy") => {
                        drop(strict::<NetworkPolicy>(&value)?)
                    }
                    ("v1", "ConfigMap") => {
                        let map: ConfigMap = strict(&value)?;
                        for (key, text) in map.data.unwrap_or_default() {
                            if key == "envoy.yaml" {
                                bootstraps.push((format!("{at} data.{key}"), text));
                            }
                        }
                    }
                    ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                        drop(strict::<ClusterRole>(&value)?)
                    }
                    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                        drop(strict::<ClusterRoleBinding>(&value)?);
                    }
                    ("rbac.authorization.k8s.io/v1", "Role") => drop(strict::<Role>(&value)?),
                    ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                        drop(strict::<RoleBinding>(&value)?)
                    }
                    ("sluice.dev/v1alpha1", "Rollout") => {
                        let rollout: Rollout = strict(&value)?;
                        sluice_api::rollout_name(&rollout)?;
                    }
                    (api_version, kind) => {
                        bail!("unknown kind {kind:?} of apiVersion {api_version:?}")
                    }
                }
                Ok(())
            })();
            checked.with_context(|| at.clone()).unwrap();
            kinds.push(kind);
        }
    }
    for expected in [
        "Deployment",
        "Service",
        "ClusterRole",
        "Role",
        "ConfigMap",
        "Rollout",
        "Kustomization",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "no {expected} in deploy/kubernetes"
        );
    }
    assert!(bootstraps.len() >= 2, "gateway and sidecar bootstraps");
    if sluice_e2e::envoy_binary().is_err() {
        eprintln!("note: no Envoy binary here; bootstraps not validated");
        return;
    }
    for (at, bootstrap) in bootstraps {
        let exited = sluice_e2e::validate(&bootstrap).expect("envoy runs");
        assert!(
            exited.status.success(),
            "{at}: envoy --mode validate failed:\n{}",
            exited.output
        );
    }
}

#[test]
fn the_control_plane_role_grants_only_what_is_used() {
    let text = std::fs::read_to_string(deploy_dir().join("control-plane/rbac.yaml")).expect("rbac");
    let mut granted = Vec::new();
    let mut operator = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document).expect("yaml");
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        if kind != "ClusterRole" && kind != "Role" {
            continue;
        }
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        // Bound to people (operators), not to the control plane: checked below.
        let granted = if name == "sluice-operator" {
            &mut operator
        } else {
            &mut granted
        };
        let rules: Vec<PolicyRule> =
            serde_yaml::from_value(value.get("rules").cloned().unwrap_or_default()).expect("rules");
        for rule in rules {
            for group in rule.api_groups.unwrap_or_default() {
                for resource in rule.resources.clone().unwrap_or_default() {
                    let mut verbs = rule.verbs.clone();
                    verbs.sort();
                    granted.push(format!("{group}/{resource}: {}", verbs.join(",")));
                }
            }
        }
    }
    granted.sort();
    assert_eq!(
        granted,
        [
            "/pods/eviction: create",
            "/pods: get,list,watch",
            "/services: get,list,watch",
            "apps/deployments: list,patch,watch",
            "apps/replicasets: create,delete,list,patch,watch",
            "argoproj.io/analysistemplates: get",
            "argoproj.io/clusteranalysistemplates: get",
            "argoproj.io/rollouts: get,list,watch",
            "authentication.k8s.io/tokenreviews: create",
            "authorization.k8s.io/subjectaccessreviews: create",
            "coordination.k8s.io/leases: create,delete,get,list,update,watch",
            "events.k8s.io/events: create,patch",
            "sluice.dev/analysisruns/status: patch",
            "sluice.dev/analysisruns: create,delete,get,list,watch",
            "sluice.dev/analysistemplates: get",
            "sluice.dev/clusteranalysistemplates: get",
            "sluice.dev/experiments/status: patch",
            "sluice.dev/experiments: create,delete,get,list,patch",
            "sluice.dev/rollouts/finalizers: update",
            "sluice.dev/rollouts/status: patch",
            "sluice.dev/rollouts: get,list,watch",
        ]
    );
    // What `sluice rollouts` reads and patches (kube.rs), and what the admin API's
    // SubjectAccessReviews ask for: `list` (status) and `update` (standalone commands).
    operator.sort();
    assert_eq!(
        operator,
        [
            "/pods: list,watch",
            "apps/deployments: get,patch,update",
            "apps/replicasets: list,watch",
            "argoproj.io/rollouts: get,list,watch",
            "sluice.dev/analysisruns: list",
            "sluice.dev/experiments: list",
            "sluice.dev/rollouts/status: patch",
            "sluice.dev/rollouts: get,list,patch,update,watch",
        ]
    );
}
