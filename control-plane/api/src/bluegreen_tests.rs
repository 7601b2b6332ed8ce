//! Blue/green derivation: the preview hosts route to the preview (or the active version), the
//! preview header route reaches the preview on the active hosts, and mistakes name their field.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use sluice_model::{HeaderMatch, MatchKind, Preview, RouteTarget, Version};

use crate::{ApiError, Rollout, derive_rollout, derive_rollout_with_preview, file::load_state};

const BLUE_GREEN: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: bg, namespace: shop}
spec:
  hosts: [bg.local]
  strategy:
    blueGreen:
      activeService: bg-active
      previewService: bg-preview
      previewHosts: [Preview.BG.local]
      previewHeaderRoute:
        match:
          - {headerName: X-Preview, headerValue: {exact: "1"}}
status:
  stableRS: aaa
  currentPodHash: bbb
  blueGreen: {activeSelector: aaa, previewSelector: bbb}
"#;

fn doc(yaml: &str) -> Rollout {
    serde_yaml::from_str(yaml).expect("test rollout parses")
}

fn versions(hashes: &[&str]) -> BTreeMap<String, Version> {
    hashes
        .iter()
        .map(|h| ((*h).to_owned(), Version::default()))
        .collect()
}

fn field_of(result: Result<sluice_model::RolloutState, ApiError>) -> (String, String) {
    match result {
        Err(ApiError::Invalid { field, problem, .. }) => (field, problem),
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn the_preview_hosts_route_to_the_preview_and_the_header_rule_reaches_it_on_the_active_hosts() {
    let state = derive_rollout(&doc(BLUE_GREEN), &versions(&["aaa", "bbb"]), &[]).unwrap();
    assert_eq!(state.hosts, ["bg.local"]);
    assert_eq!(state.stable_hash, "aaa");
    assert_eq!(state.canary_weight_bp, 0);
    assert_eq!(
        state.preview,
        Some(Preview {
            hosts: vec!["preview.bg.local".into()],
            hash: "bbb".into(),
        })
    );
    assert_eq!(state.header_routes.len(), 1);
    let route = &state.header_routes[0];
    assert_eq!(route.name, "preview");
    assert_eq!(route.target, RouteTarget::Hash("bbb".into()));
    assert_eq!(
        route.matches,
        [HeaderMatch {
            name: "x-preview".into(),
            kind: MatchKind::Exact("1".into()),
        }]
    );
}

#[test]
fn without_a_preview_version_the_preview_hosts_show_the_active_one_and_no_header_rule() {
    // Promoted (the preview selector is the active one), no selector at all, and a preview
    // without pods (Kubernetes: not started yet, or scaled down after an abort).
    let promoted = BLUE_GREEN.replace(
        "{activeSelector: aaa, previewSelector: bbb}",
        "{activeSelector: aaa, previewSelector: aaa}",
    );
    let unset = BLUE_GREEN.replace(
        "  blueGreen: {activeSelector: aaa, previewSelector: bbb}\n",
        "",
    );
    for (what, yaml, live) in [
        ("promoted", promoted.as_str(), &["aaa", "bbb"][..]),
        ("no selector", unset.as_str(), &["aaa", "bbb"][..]),
        ("no pods", BLUE_GREEN, &["aaa"][..]),
    ] {
        let state = derive_rollout(&doc(yaml), &versions(live), &[]).unwrap();
        assert_eq!(
            state.preview.as_ref().map(|p| p.hash.as_str()),
            Some("aaa"),
            "{what}"
        );
        assert!(state.header_routes.is_empty(), "{what}");
    }
}

#[test]
fn the_preview_services_hosts_are_preview_hosts_beside_preview_hosts() {
    let state = derive_rollout_with_preview(
        &doc(BLUE_GREEN),
        &versions(&["aaa", "bbb"]),
        &["bg-active".into()],
        &["bg-preview".into(), "preview.bg.local".into()],
    )
    .unwrap();
    assert_eq!(state.hosts, ["bg.local", "bg-active"]);
    assert_eq!(
        state.preview.unwrap().hosts,
        ["preview.bg.local", "bg-preview"]
    );
    // Without previewHosts and a preview Service: no preview, and the header rule alone.
    let bare = BLUE_GREEN.replace("      previewHosts: [Preview.BG.local]\n", "");
    let state = derive_rollout(&doc(&bare), &versions(&["aaa", "bbb"]), &[]).unwrap();
    assert_eq!(state.preview, None);
    assert_eq!(
        state.header_routes[0].target,
        RouteTarget::Hash("bbb".into())
    );
}

#[test]
fn mistakes_name_the_blue_green_field() {
    let live = versions(&["aaa", "bbb"]);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            BLUE_GREEN.replace("[Preview.BG.local]", "[bg.local]"),
            "spec.strategy.blueGreen.previewHosts[0]",
            "also one of the rollout's active hosts",
        ),
        (
            BLUE_GREEN.replace("[Preview.BG.local]", "[\"*.bg.local\"]"),
            "spec.strategy.blueGreen.previewHosts[0]",
            "",
        ),
        (
            BLUE_GREEN.replace("{exact: \"1\"}", "{exact: \"1\", prefix: \"2\"}"),
            "spec.strategy.blueGreen.previewHeaderRoute.match[0].headerValue",
            "exactly one of",
        ),
        (
            BLUE_GREEN.replace("{exact: \"1\"}", "{regex: \"(\"}"),
            "spec.strategy.blueGreen.previewHeaderRoute.match[0].headerValue.regex",
            "",
        ),
        (
            BLUE_GREEN.replace("headerName: X-Preview", "headerName: X Preview"),
            "spec.strategy.blueGreen.previewHeaderRoute.match[0].headerName",
            "",
        ),
        (
            BLUE_GREEN.replace(
                "        match:\n          - {headerName: X-Preview, headerValue: {exact: \"1\"}}\n",
                "        name: testers\n",
            ),
            "spec.strategy.blueGreen.previewHeaderRoute.match",
            "at least one match",
        ),
    ];
    for (yaml, field, problem) in cases {
        let (got, said) = field_of(derive_rollout(&doc(&yaml), &live, &[]));
        assert_eq!(got, field, "{said}");
        assert!(said.contains(problem), "{field}: {said}");
    }
    // The preview Service's hosts clash with the active hosts.
    let (got, _) = field_of(derive_rollout_with_preview(
        &doc(BLUE_GREEN),
        &live,
        &[],
        &["bg.local".into()],
    ));
    assert_eq!(got, "spec.strategy.blueGreen.previewService");
}

#[test]
fn a_file_names_every_version_and_a_missing_preview_is_an_error() {
    let file = BLUE_GREEN.replace(
        "  hosts: [bg.local]\n",
        "  hosts: [bg.local]\n  staticEndpoints:\n    aaa: [\"127.0.0.1:8001\"]\n    bbb: [\"127.0.0.1:8002\"]\n",
    );
    let state = load_state(&file, "rollouts.yaml").unwrap();
    let bg = &state.rollouts["shop/bg"];
    assert_eq!(bg.preview.as_ref().unwrap().hash, "bbb");
    let missing = file.replace("previewSelector: bbb", "previewSelector: ccc");
    let error = load_state(&missing, "rollouts.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("status.blueGreen.previewSelector") && error.contains("\"ccc\""),
        "{error}"
    );
}
