//! `sluice rollouts lint FILE...`: Rollout manifests (`sluice.dev` or `argoproj.io`) and
//! standalone rollouts files, checked offline as Argo's `lint` does, with Sluice's own checks:
//!
//! - each document parses as a Rollout (the error names the field path);
//! - the model's validation (`sluice_api::derive_rollout`): the rollout is derived as if it stood
//!   at each of its steps, so a bad weight, header route, regex or stickiness shows before the
//!   rollout gets there;
//! - the release engine's spec checks (`sluice_release::spec::check`) for `sluice.dev` Rollouts
//!   with a template (or a `workloadRef` to a Deployment among the linted files); `--as-sluice`
//!   applies them to `argoproj.io` Rollouts too (would it run after changing its apiVersion?);
//! - a standalone rollouts file (Rollouts with `spec.staticEndpoints`) is loaded whole as
//!   `sluice serve --file` loads it (`sluice_api::load_state`).
//!
//! - analysis templates in the file are planned as a run would plan them, and a standalone
//!   rollout's `templateName`s must name templates of its file ([`analysis`]).
//!
//! Other kinds of documents (Services, Deployments ...) are skipped, as Argo's lint skips them.

mod analysis;

use std::{collections::BTreeSet, fmt};

use k8s_openapi::api::apps::v1::Deployment;
use serde::Deserialize;
use sluice_api::{
    ARGO_API_VERSION, ApiError, Rollout, RolloutStatus, SLUICE_API_VERSION,
    bluegreen::BlueGreenStatus,
};
use sluice_model::Version;
use sluice_release::{Observed, ObservedWorkload};

/// One problem found, naming where it is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub file: String,
    /// 1-based; `None` for a problem of the whole file.
    pub document: Option<usize>,
    /// `namespace/name`, when known.
    pub rollout: Option<String>,
    /// The field at fault (`spec.strategy.canary.steps[2].setWeight`); `None` for a YAML syntax
    /// error, whose problem names the line instead.
    pub field: Option<String>,
    pub problem: String,
    /// A warning does not fail the lint.
    pub warning: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.warning {
            write!(f, "warning: ")?;
        }
        write!(f, "{}", self.file)?;
        if let Some(document) = self.document {
            write!(f, ": document {document}")?;
        }
        if let Some(rollout) = &self.rollout {
            write!(f, ": rollout {rollout:?}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// How to lint.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Apply the release engine's checks to `argoproj.io` Rollouts too.
    pub as_sluice: bool,
}

/// One YAML document of a file.
struct Document {
    number: usize,
    value: serde_yaml::Value,
}

fn text_field<'a>(value: &'a serde_yaml::Value, name: &str) -> &'a str {
    value.get(name).and_then(|v| v.as_str()).unwrap_or_default()
}

fn is_rollout(value: &serde_yaml::Value) -> bool {
    text_field(value, "kind") == "Rollout"
        && [SLUICE_API_VERSION, ARGO_API_VERSION].contains(&text_field(value, "apiVersion"))
}

/// The documents of a file; a syntax error ends the reading (serde_yaml cannot resync) and is a
/// finding naming the line.
fn documents(text: &str, file: &str, findings: &mut Vec<Finding>) -> Vec<Document> {
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match serde_yaml::Value::deserialize(document) {
            Ok(value) if value.is_null() => {}
            Ok(value) => out.push(Document {
                number: i + 1,
                value,
            }),
            Err(error) => {
                findings.push(Finding {
                    file: file.to_owned(),
                    document: Some(i + 1),
                    rollout: None,
                    field: None,
                    problem: format!("not YAML: {error}"),
                    warning: false,
                });
                break;
            }
        }
    }
    out
}

/// The Deployments of the given texts, for `workloadRef`.
pub fn deployments(texts: &[&str]) -> Vec<Deployment> {
    texts
        .iter()
        .flat_map(|text| {
            serde_yaml::Deserializer::from_str(text)
                .map_while(|d| serde_yaml::Value::deserialize(d).ok())
        })
        .filter(|v| text_field(v, "kind") == "Deployment")
        .filter_map(|v| serde_yaml::from_value(v).ok())
        .collect()
}

/// Lints one file's text. `file` names it in the findings; `deployments` are those of every
/// linted file (a `workloadRef` may name one).
pub fn lint_text(
    text: &str,
    file: &str,
    deployments: &[Deployment],
    options: Options,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let documents = documents(text, file, &mut findings);
    let mut standalone = false;
    // Rollout name → its first document, to place the whole file's errors.
    let mut document_of = std::collections::BTreeMap::new();
    for document in documents.iter().filter(|d| is_rollout(&d.value)) {
        let finding = |rollout: Option<String>, field: Option<String>, problem: String| Finding {
            file: file.to_owned(),
            document: Some(document.number),
            rollout,
            field,
            problem,
            warning: false,
        };
        let rollout: Rollout = match serde_path_to_error::deserialize(document.value.clone()) {
            Ok(rollout) => rollout,
            Err(error) => {
                let path = error.path().to_string();
                findings.push(finding(None, Some(path), error.into_inner().to_string()));
                continue;
            }
        };
        let name = match sluice_api::rollout_name(&rollout) {
            Ok(name) => name,
            Err(error) => {
                findings.push(api_finding(file, Some(document.number), error));
                continue;
            }
        };
        standalone |= !rollout.spec.static_endpoints.is_empty();
        document_of.entry(name.clone()).or_insert(document.number);
        let sluice = text_field(&document.value, "apiVersion") == SLUICE_API_VERSION;
        let mut hosts = service_hosts(&rollout);
        if !sluice && hosts.is_empty() && rollout.spec.hosts.is_empty() {
            // Sluice observes Argo's Rollout; without a host it just routes nothing for it.
            findings.push(Finding {
                warning: true,
                ..finding(
                    Some(name.clone()),
                    Some("spec.hosts".into()),
                    "Sluice routes no host for this rollout: set spec.hosts, or \
                     strategy.canary.stableService / canaryService"
                        .into(),
                )
            });
            hosts.push("lint.invalid".into());
        }
        let mut seen = BTreeSet::new();
        for error in model_errors(&rollout, &hosts, &preview_hosts(&rollout)) {
            let f = api_finding(file, Some(document.number), error);
            if seen.insert((f.field.clone(), f.problem.clone())) {
                findings.push(f);
            }
        }
        if sluice || options.as_sluice {
            for (field, problem) in blue_green_unsupported(&document.value) {
                findings.push(Finding {
                    warning: true,
                    ..finding(Some(name.clone()), Some(field), problem)
                });
            }
            engine_findings(&rollout, &name, deployments, |field, problem, warning| {
                findings.push(Finding {
                    warning,
                    ..finding(Some(name.clone()), Some(field), problem)
                });
            });
        }
    }
    findings.extend(analysis::findings(file, &documents));
    if standalone {
        // The file as `sluice serve --file` loads it: every document a Rollout, names unique,
        // hosts claimed once, the status (if any) naming versions of spec.staticEndpoints.
        if let Err(error) = sluice_api::load_state(text, file) {
            let mut f = api_finding(file, None, error);
            if f.document.is_none() {
                f.document = f.rollout.as_ref().and_then(|r| document_of.get(r).copied());
            }
            if !findings
                .iter()
                .any(|g| g.field == f.field && g.problem == f.problem)
            {
                findings.push(f);
            }
        }
    }
    findings
}

/// The model's errors for the rollout as it would stand at each of its steps, and after the last,
/// with a stable and a canary version (a file's own versions are checked by `load_state`).
fn model_errors(rollout: &Rollout, hosts: &[String], preview_hosts: &[String]) -> Vec<ApiError> {
    let steps = rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .map_or(0, |c| c.steps.len());
    let endpoint = |port| Version {
        endpoints: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
    };
    let versions = [
        ("stable".to_owned(), endpoint(1)),
        ("canary".to_owned(), endpoint(2)),
    ]
    .into_iter()
    .collect();
    let mut errors = Vec::new();
    for index in 0..=steps {
        let mut at_step = rollout.clone();
        at_step.status = Some(RolloutStatus {
            stable_rs: Some("stable".into()),
            current_pod_hash: Some("canary".into()),
            current_step_index: i32::try_from(index).ok(),
            // Blue/green: with a preview, so its header route is checked too.
            blue_green: rollout
                .spec
                .strategy
                .blue_green
                .as_ref()
                .map(|_| BlueGreenStatus {
                    active_selector: Some("stable".into()),
                    preview_selector: Some("canary".into()),
                    ..BlueGreenStatus::default()
                }),
            ..RolloutStatus::default()
        });
        if let Err(error) =
            sluice_api::derive_rollout_with_preview(&at_step, &versions, hosts, preview_hosts)
        {
            errors.push(error);
        }
    }
    errors
}

/// The hosts the rollout's Services give it in Kubernetes (the Kubernetes index adds
/// `name`, `name.ns` ... of its stable and canary Services, or its blue/green active Service;
/// the names suffice here).
fn service_hosts(rollout: &Rollout) -> Vec<String> {
    let active = rollout
        .spec
        .strategy
        .blue_green
        .as_ref()
        .map(|bg| &bg.active_service);
    rollout
        .spec
        .strategy
        .canary
        .iter()
        .flat_map(|c| [c.stable_service.as_ref(), c.canary_service.as_ref()])
        .chain([active])
        .flatten()
        .filter(|s| is_service_name(s))
        .cloned()
        .collect()
}

/// A name Kubernetes accepts for a Service (templates in the wild hold placeholders such as
/// `ROLLOUT_NAME-active`, which no cluster would serve).
fn is_service_name(name: &str) -> bool {
    sluice_model::validate::is_valid_host(name)
}

/// The blue/green preview Service's name, as its host (see [`service_hosts`]).
fn preview_hosts(rollout: &Rollout) -> Vec<String> {
    rollout
        .spec
        .strategy
        .blue_green
        .as_ref()
        .and_then(|bg| bg.preview_service.clone())
        .filter(|s| is_service_name(s))
        .into_iter()
        .collect()
}

/// Argo's `blueGreen` fields Sluice's release engine does not run, and why it matters.
pub const BLUE_GREEN_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "antiAffinity",
        "is ignored: the versions' pods are scheduled without it",
    ),
    (
        "activeMetadata",
        "is ignored: Sluice routes by hash, not by labels on pods",
    ),
    (
        "previewMetadata",
        "is ignored: Sluice routes by hash, not by labels on pods",
    ),
    (
        "maxUnavailable",
        "is ignored: the new version is scaled up whole before the switch",
    ),
];

/// Warnings for the `blueGreen` fields of a document that Sluice does not implement.
fn blue_green_unsupported(document: &serde_yaml::Value) -> Vec<(String, String)> {
    let Some(bg) = document
        .get("spec")
        .and_then(|s| s.get("strategy"))
        .and_then(|s| s.get("blueGreen"))
    else {
        return Vec::new();
    };
    BLUE_GREEN_UNSUPPORTED
        .iter()
        .filter(|(field, _)| bg.get(*field).is_some())
        .map(|(field, problem)| {
            (
                format!("spec.strategy.blueGreen.{field}"),
                format!("{problem} (not implemented by Sluice)"),
            )
        })
        .collect()
}

/// The release engine's checks, for a rollout it would run (a template, or a `workloadRef`).
fn engine_findings(
    rollout: &Rollout,
    name: &str,
    deployments: &[Deployment],
    mut report: impl FnMut(String, String, bool),
) {
    let spec = &rollout.spec;
    let mut observed = Observed::default();
    if let Some(reference) = &spec.workload_ref {
        let wanted = reference.name.as_deref().unwrap_or_default();
        let namespace = rollout.metadata.namespace.as_deref().unwrap_or("default");
        let found = deployments.iter().find(|d| {
            d.metadata.name.as_deref() == Some(wanted)
                && d.metadata.namespace.as_deref().unwrap_or("default") == namespace
        });
        match found {
            Some(d) => {
                observed.workload = Some(ObservedWorkload {
                    name: wanted.to_owned(),
                    template: d.spec.template.clone(),
                    selector: Some(d.spec.selector.clone()),
                    replicas: d.spec.replicas.unwrap_or(1),
                })
            }
            None if !wanted.is_empty() && spec.template.is_none() => {
                report(
                    "spec.workloadRef.name".into(),
                    format!(
                        "Deployment {wanted:?} is not among the linted files: the release \
                         engine's checks of {name} are skipped"
                    ),
                    true,
                );
                return;
            }
            None => {}
        }
    } else if spec.template.is_none() && spec.version.is_none() && !spec.static_endpoints.is_empty()
    {
        // Standalone without spec.version: its status is written by hand, checked by
        // load_state; with spec.version the engine runs it (experiment templates' versions ...).
        return;
    }
    if let Err(invalid) = sluice_release::spec::check(rollout, &observed) {
        report(invalid.field, invalid.problem, false);
    }
}

/// An `ApiError` as a finding, with its document and field pulled out.
fn api_finding(file: &str, document: Option<usize>, error: ApiError) -> Finding {
    let mut finding = Finding {
        file: file.to_owned(),
        document,
        rollout: None,
        field: None,
        problem: String::new(),
        warning: false,
    };
    let mut error = error;
    loop {
        match error {
            ApiError::InDocument {
                document,
                error: inner,
                ..
            } => {
                finding.document = Some(document);
                error = *inner;
            }
            ApiError::Invalid {
                rollout,
                field,
                problem,
            } => {
                finding.rollout = Some(rollout);
                finding.field = Some(field);
                finding.problem = problem;
                return finding;
            }
            ApiError::Yaml {
                document, error, ..
            } => {
                finding.document = Some(document);
                // serde_yaml's message starts with the field path when it has one.
                let message = error.to_string();
                match message.split_once(": ") {
                    Some((path, rest)) if !path.contains(' ') => {
                        finding.field = Some(path.to_owned());
                        finding.problem = rest.to_owned();
                    }
                    _ => finding.problem = message,
                }
                return finding;
            }
            ApiError::NotARollout {
                document,
                api_version,
                kind,
                ..
            } => {
                finding.document = Some(document);
                finding.field = Some("kind".into());
                finding.problem = format!(
                    "a rollouts file holds only Rollouts; found kind {kind:?} of apiVersion \
                     {api_version:?}"
                );
                return finding;
            }
            ApiError::DuplicateRollout {
                name,
                first,
                second,
                ..
            } => {
                finding.document = Some(second);
                finding.rollout = Some(name);
                finding.field = Some("metadata.name".into());
                finding.problem = format!("the rollout is defined by document {first} too");
                return finding;
            }
            ApiError::State {
                error:
                    sluice_model::ModelError::InvalidField {
                        rollout,
                        field,
                        problem,
                    },
                ..
            } => {
                finding.rollout = Some(rollout);
                finding.field = Some(field.to_string());
                finding.problem = problem;
                return finding;
            }
            ApiError::State {
                error:
                    sluice_model::ModelError::HostInTwoRollouts {
                        host,
                        first,
                        second,
                    },
                ..
            } => {
                finding.rollout = Some(second);
                finding.field = Some("spec.hosts".into());
                finding.problem = format!("host {host:?} is claimed by rollout {first:?} too");
                return finding;
            }
            other => {
                finding.problem = other.to_string();
                return finding;
            }
        }
    }
}

/// Lints the files; prints every finding; fails when any is an error.
pub fn run(files: &[std::path::PathBuf], options: Options) -> anyhow::Result<()> {
    let mut texts = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        texts.push(text);
    }
    let all: Vec<&str> = texts.iter().map(String::as_str).collect();
    let deployments = deployments(&all);
    let mut errors = 0;
    for (file, text) in files.iter().zip(&texts) {
        for finding in lint_text(text, &file.display().to_string(), &deployments, options) {
            errors += usize::from(!finding.warning);
            println!("{finding}");
        }
    }
    if errors > 0 {
        anyhow::bail!("{errors} error(s) in {} file(s)", files.len());
    }
    println!("{} file(s): no errors", files.len());
    Ok(())
}

/// The files' findings, for tests.
#[cfg(test)]
pub fn lint_paths(files: &[&std::path::Path], options: Options) -> std::io::Result<Vec<Finding>> {
    let texts = files
        .iter()
        .map(std::fs::read_to_string)
        .collect::<Result<Vec<_>, _>>()?;
    let all: Vec<&str> = texts.iter().map(String::as_str).collect();
    let deployments = deployments(&all);
    Ok(files
        .iter()
        .zip(&texts)
        .flat_map(|(f, t)| lint_text(t, &f.display().to_string(), &deployments, options))
        .collect())
}

#[cfg(test)]
#[path = "lint_tests.rs"]
mod tests;
