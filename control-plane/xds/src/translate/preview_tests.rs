//! Blue/green preview hosts in the route configuration: their own virtual host routing straight to
//! the preview version; the switch is one route configuration; invalid previews are rejected
//! naming the field.
#![allow(clippy::unwrap_used)]

use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, VirtualHost, route, route_action::ClusterSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::google::protobuf::BytesValue;
use prost::Message;
use sluice_model::{HeaderMatch, HeaderRoute, MatchKind, Preview, RouteTarget, TrafficState};

use super::super::tests::{decoded, demo, options};
use super::super::{FILTER_CONFIG_NAME, ROUTE_CONFIG_NAME, XdsError, translate};
use crate::type_url;
use sluice_proto::v1::FilterPolicy;

/// The demo as a blue/green release: stable `aaa` active on demo.local, `bbb` previewed on
/// preview.demo.local and reached on demo.local with `x-preview: 1`; no canary weight.
pub(in super::super) fn demo_with_preview() -> TrafficState {
    let mut state = demo();
    let demo = state.rollouts.get_mut("default/demo").unwrap();
    demo.canary_hash = None;
    demo.canary_weight_bp = 0;
    demo.preview = Some(Preview {
        hosts: vec!["preview.demo.local".into()],
        hash: "bbb".into(),
    });
    demo.header_routes = vec![HeaderRoute {
        name: "preview".into(),
        matches: vec![HeaderMatch {
            name: "x-preview".into(),
            kind: MatchKind::Exact("1".into()),
        }],
        target: RouteTarget::Hash("bbb".into()),
    }];
    state
}

fn virtual_hosts(state: &TrafficState) -> Vec<VirtualHost> {
    let snapshot = translate(state, &options()).expect("translates");
    let routes: RouteConfiguration = decoded(&snapshot, type_url::ROUTE, ROUTE_CONFIG_NAME);
    routes.virtual_hosts
}

/// The one cluster each route of a virtual host sends to (weighted routes are an error here).
fn clusters(host: &VirtualHost) -> Vec<(String, String)> {
    host.routes
        .iter()
        .map(|r| {
            let Some(route::Action::Route(action)) = &r.action else {
                panic!("{} is not a route", r.name);
            };
            let Some(ClusterSpecifier::Cluster(cluster)) = &action.cluster_specifier else {
                panic!("{} is not a one-cluster route", r.name);
            };
            (r.name.clone(), cluster.clone())
        })
        .collect()
}

fn host<'a>(hosts: &'a [VirtualHost], name: &str) -> &'a VirtualHost {
    hosts
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no virtual host {name}"))
}

#[test]
fn without_a_preview_there_is_no_preview_virtual_host() {
    let names: Vec<String> = virtual_hosts(&demo()).into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["default/demo", "no_rollout"]);
}

#[test]
fn the_preview_hosts_route_to_the_preview_and_the_active_hosts_to_stable() {
    let hosts = virtual_hosts(&demo_with_preview());
    let names: Vec<&str> = hosts.iter().map(|v| v.name.as_str()).collect();
    // Before the catch-all, which would otherwise answer the preview hosts with a 404.
    assert_eq!(
        names,
        ["default/demo", "default/demo/preview", "no_rollout"]
    );
    let preview = host(&hosts, "default/demo/preview");
    assert_eq!(
        preview.domains,
        ["preview.demo.local", "preview.demo.local:"]
    );
    assert_eq!(
        clusters(preview),
        [("default/demo/preview".into(), "default/demo/bbb".into())]
    );
    assert!(
        preview.routes[0]
            .r#match
            .as_ref()
            .unwrap()
            .headers
            .is_empty(),
        "no routing-header match: a client cannot pick another version on the preview hosts"
    );
    // The active host: a per-version route for each version (the header rule's target among
    // them), and the fallback on stable alone.
    let active = host(&hosts, "default/demo");
    assert_eq!(active.domains, ["demo.local", "demo.local:"]);
    assert_eq!(
        clusters(active),
        [
            ("default/demo/aaa".into(), "default/demo/aaa".into()),
            ("default/demo/bbb".into(), "default/demo/bbb".into()),
            ("default/demo/split".into(), "default/demo/aaa".into()),
        ]
    );
}

#[test]
fn promotion_switches_both_virtual_hosts_in_one_route_configuration() {
    let mut promoted = demo_with_preview();
    let demo = promoted.rollouts.get_mut("default/demo").unwrap();
    demo.stable_hash = "bbb".into();
    demo.preview.as_mut().unwrap().hash = "bbb".into();
    demo.header_routes.clear();
    let hosts = virtual_hosts(&promoted);
    assert_eq!(
        clusters(host(&hosts, "default/demo")).last().unwrap().1,
        "default/demo/bbb"
    );
    assert_eq!(
        clusters(host(&hosts, "default/demo/preview"))[0].1,
        "default/demo/bbb"
    );
}

#[test]
fn the_filter_policy_does_not_list_the_preview_hosts() {
    let snapshot = translate(&demo_with_preview(), &options()).expect("translates");
    let ecds: TypedExtensionConfig =
        decoded(&snapshot, type_url::EXTENSION_CONFIG, FILTER_CONFIG_NAME);
    let wasm = Wasm::decode(ecds.typed_config.unwrap().value.as_slice()).unwrap();
    let configuration = wasm.config.unwrap().configuration.unwrap();
    let bytes = BytesValue::decode(configuration.value.as_slice()).unwrap();
    let policy = FilterPolicy::decode(bytes.value.as_slice()).unwrap();
    assert_eq!(policy.rollouts[0].hosts, ["demo.local"]);
    let route = &policy.rollouts[0].header_routes[0];
    assert_eq!(
        route.target,
        Some(sluice_proto::v1::header_route::Target::Hash("bbb".into()))
    );
}

#[test]
fn invalid_previews_are_rejected_naming_the_field() {
    type Change = Box<dyn Fn(&mut Preview)>;
    let cases: Vec<(Change, &str, &str)> = vec![
        (
            Box::new(|p| p.hosts.clear()),
            "preview.hosts",
            "at least one host",
        ),
        (
            Box::new(|p| p.hosts = vec!["Preview.local".into()]),
            "preview.hosts[0]",
            "",
        ),
        (
            Box::new(|p| p.hosts.push("demo.local".into())),
            "preview.hosts[1]",
            "also one of the rollout's active hosts",
        ),
        (
            Box::new(|p| p.hosts.push("preview.demo.local".into())),
            "preview.hosts[1]",
            "listed twice",
        ),
        (
            Box::new(|p| p.hash = "ccc".into()),
            "preview.hash",
            "not one of the versions",
        ),
    ];
    for (change, field, problem) in cases {
        let mut state = demo_with_preview();
        change(
            state
                .rollouts
                .get_mut("default/demo")
                .unwrap()
                .preview
                .as_mut()
                .unwrap(),
        );
        let error = translate(&state, &options()).unwrap_err();
        let XdsError::InvalidState(sluice_model::ModelError::InvalidField {
            field: got,
            problem: said,
            ..
        }) = &error
        else {
            panic!("{field}: unexpected {error}");
        };
        assert_eq!(got.to_string(), field, "{error}");
        assert!(said.contains(problem), "{field}: {said}");
    }
}

#[test]
fn a_preview_host_of_another_rollout_is_rejected() {
    let mut state = demo_with_preview();
    let mut other = super::super::tests::rollout(
        "default/other",
        "preview.demo.local",
        &[("ccc", &["127.0.0.1:9001"])],
    );
    other.canary_hash = None;
    state.rollouts.insert(other.name.clone(), other);
    let error = translate(&state, &options()).unwrap_err().to_string();
    assert!(
        error.contains("\"preview.demo.local\" is claimed by rollout \"default/demo\""),
        "{error}"
    );
}
