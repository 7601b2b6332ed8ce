//! Every Argo Rollouts `Rollout` manifest of the shared corpus (examples, e2e tests ...) parses
//! into Sluice's types and derives into a valid traffic state at every step; the manifests under
//! `test/e2e/expectedfailures/` may fail, but only with an error, never a panic.
//!
//! The corpus is read from `../shared/corpus/argo-rollouts` beside the repository; the test is
//! skipped (with a note) where it is absent.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use sluice_api::{ARGO_API_VERSION, ArgoRollout, Rollout, RolloutStatus, derive_rollout};
use sluice_model::Version;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/argo-rollouts")
}

/// The Argo Rollout documents of one file: (1-based document number, parse result). Reading stops
/// at the first document that is not YAML (serde_yaml cannot resync after a syntax error); that
/// error is returned too.
type Documents = Vec<(usize, Result<ArgoRollout, serde_yaml::Error>)>;

fn argo_rollouts(text: &str) -> (Documents, Option<serde_yaml::Error>) {
    let mut wanted = Vec::new();
    let mut syntax_error = None;
    for doc in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(doc) {
            Ok(value) => wanted.push(
                value.get("kind").and_then(|k| k.as_str()) == Some("Rollout")
                    && value.get("apiVersion").and_then(|k| k.as_str()) == Some(ARGO_API_VERSION),
            ),
            Err(error) => {
                syntax_error = Some(error);
                break;
            }
        }
    }
    let documents = serde_yaml::Deserializer::from_str(text)
        .take(wanted.len())
        .enumerate()
        .filter(|(i, _)| wanted[*i])
        .map(|(i, doc)| (i + 1, ArgoRollout::deserialize(doc)))
        .collect();
    (documents, syntax_error)
}

/// Derives the rollout as if it stood at each of its steps, and after the last.
fn derive_at_every_step(rollout: Rollout, label: &str) {
    let steps = rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .map_or(0, |c| c.steps.len());
    let versions: BTreeMap<String, Version> = [("stable1", 0u16), ("canary2", 1)]
        .into_iter()
        .map(|(hash, i)| {
            let endpoint = std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + i));
            (
                hash.to_owned(),
                Version {
                    endpoints: vec![endpoint],
                },
            )
        })
        .collect();
    for index in 0..=steps {
        let mut at_step = rollout.clone();
        at_step.status = Some(RolloutStatus {
            stable_rs: Some("stable1".into()),
            current_pod_hash: Some("canary2".into()),
            current_step_index: Some(i32::try_from(index).expect("few steps")),
            ..RolloutStatus::default()
        });
        let state = derive_rollout(&at_step, &versions, &["svc.example".into()])
            .unwrap_or_else(|e| panic!("{label} at step {index}: {e}"));
        assert!(state.canary_weight_bp <= 10_000);
    }
}

#[test]
fn every_argo_rollout_in_the_corpus_parses_and_derives() {
    let dir = corpus_dir();
    if !dir.is_dir() {
        eprintln!(
            "note: {} is absent; skipping the corpus test",
            dir.display()
        );
        return;
    }
    let mut files = Vec::new();
    sluice_e2e::paths::yaml_files(&dir, &mut files);
    let (mut parsed, mut expected_failures, mut header_routes, mut unreadable) = (0, 0, 0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable corpus file");
        let relative = file
            .strip_prefix(&dir)
            .expect("under corpus")
            .display()
            .to_string();
        let expected_to_fail = relative.starts_with("test/e2e/expectedfailures/");
        let (documents, syntax_error) = argo_rollouts(&text);
        if let Some(error) = syntax_error {
            // Not YAML from there on (e.g. a template with `{{ }}` in an AnalysisTemplate).
            eprintln!("note: {relative}: stopped reading at a YAML error: {error}");
            unreadable += 1;
        }
        for (document, result) in documents {
            let label = format!("{relative} document {document}");
            match result {
                Ok(argo) => {
                    parsed += 1;
                    header_routes += argo
                        .spec
                        .strategy
                        .canary
                        .iter()
                        .flat_map(|c| &c.steps)
                        .filter(|s| s.set_header_route.is_some())
                        .count();
                    if !expected_to_fail {
                        derive_at_every_step(Rollout::from(argo), &label);
                    }
                }
                Err(error) if expected_to_fail => {
                    expected_failures += 1;
                    let message = error.to_string();
                    assert!(message.contains("line"), "{label}: {message}");
                }
                Err(error) => panic!("{label}: {error}"),
            }
        }
    }
    eprintln!(
        "corpus: {parsed} Argo Rollouts parsed ({header_routes} setHeaderRoute steps), \
         {expected_failures} expected failures, in {} files ({unreadable} not wholly YAML)",
        files.len()
    );
    assert!(parsed >= 50, "only {parsed} rollouts found in the corpus");
    assert!(header_routes > 0, "the corpus has setHeaderRoute steps");
    assert!(unreadable <= 2, "{unreadable} corpus files are not YAML");
}
