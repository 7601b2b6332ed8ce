use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::{
    cluster::v3::{
        Cluster,
        cluster::{ClusterDiscoveryType, DiscoveryType},
    },
    core::v3::{
        Address, TypedExtensionConfig, address, async_data_source,
        config_source::ConfigSourceSpecifier, data_source, http_uri, socket_address,
    },
    endpoint::v3::{ClusterLoadAssignment, lb_endpoint},
    listener::v3::{Listener, filter},
    route::v3::{
        RouteConfiguration, VirtualHost, header_matcher, route, route_action, weighted_cluster,
    },
};
use envoy_types::pb::envoy::extensions::{
    filters::{
        http::wasm::v3::Wasm,
        network::http_connection_manager::v3::{
            HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
        },
    },
    wasm::v3::{FailurePolicy, plugin_config},
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher;
use envoy_types::pb::google::protobuf::{BytesValue, Struct, Value, value::Kind};
use prost::{Message, Name};
use sluice_model::{RolloutState, Stickiness, TrafficState, Version};
use sluice_proto::v1::FilterPolicy;

use super::*;
use crate::type_url;

pub(super) fn rollout(name: &str, host: &str, versions: &[(&str, &[&str])]) -> RolloutState {
    RolloutState {
        name: name.into(),
        hosts: vec![host.into()],
        versions: versions
            .iter()
            .map(|(hash, endpoints)| {
                let endpoints = endpoints
                    .iter()
                    .map(|e| e.parse().expect("test endpoint"))
                    .collect();
                (hash.to_string(), Version { endpoints })
            })
            .collect(),
        stable_hash: versions[0].0.into(),
        canary_hash: versions.get(1).map(|v| v.0.to_string()),
        canary_weight_bp: 0,
        header_routes: Vec::new(),
        mirror_routes: Vec::new(),
        additional_weights: Vec::new(),
        preview: None,
        stickiness: Stickiness::None,
    }
}

pub(super) fn state(rollouts: impl IntoIterator<Item = RolloutState>) -> TrafficState {
    TrafficState {
        rollouts: rollouts.into_iter().map(|r| (r.name.clone(), r)).collect(),
    }
}

/// `default/demo` on demo.local: stable aaa (2 endpoints), canary bbb (1) at 25 %.
pub(super) fn demo() -> TrafficState {
    let mut demo = rollout(
        "default/demo",
        "demo.local",
        &[
            ("aaa", &["127.0.0.1:8001", "127.0.0.1:8002"]),
            ("bbb", &["127.0.0.1:8003"]),
        ],
    );
    demo.canary_weight_bp = 2500;
    state([demo])
}

pub(super) fn options() -> TranslateOptions {
    TranslateOptions::new(WasmSource::Local {
        path: "/opt/sluice/sluice_filter.wasm".into(),
    })
}

pub(super) fn decoded<M: Message + Default>(snapshot: &Snapshot, type_url: &str, name: &str) -> M {
    let resource = snapshot
        .get(type_url, name)
        .unwrap_or_else(|| panic!("{type_url} {name} missing"));
    M::decode(resource.body.value.as_slice()).expect("decodes")
}

pub(super) fn decoded_all<M: Message + Default>(snapshot: &Snapshot, type_url: &str) -> Vec<M> {
    snapshot
        .of_type(type_url)
        .map(|r| M::decode(r.body.value.as_slice()).expect("decodes"))
        .collect()
}

fn names(snapshot: &Snapshot, type_url: &str) -> Vec<String> {
    snapshot.of_type(type_url).map(|r| r.name.clone()).collect()
}

fn versions_by_name(snapshot: &Snapshot, type_url: &str) -> BTreeMap<String, String> {
    snapshot
        .of_type(type_url)
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}

pub(super) fn virtual_host<'a>(routes: &'a RouteConfiguration, name: &str) -> &'a VirtualHost {
    routes
        .virtual_hosts
        .iter()
        .find(|v| v.name == name)
        .expect("virtual host")
}

pub(super) fn fallback_of(snapshot: &Snapshot, rollout: &str) -> route_action::ClusterSpecifier {
    let routes: RouteConfiguration = decoded(snapshot, type_url::ROUTE, ROUTE_CONFIG_NAME);
    let last = virtual_host(&routes, rollout)
        .routes
        .last()
        .expect("a route");
    assert!(last.r#match.as_ref().expect("match").headers.is_empty());
    match &last.action {
        Some(route::Action::Route(action)) => action.cluster_specifier.clone().expect("cluster"),
        other => panic!("fallback is not a route: {other:?}"),
    }
}

#[test]
fn one_eds_cluster_and_assignment_per_version() {
    let snapshot = translate(&demo(), &options()).expect("translates");
    let expected = vec![
        "default/demo/aaa".to_string(),
        "default/demo/bbb".to_string(),
    ];
    assert_eq!(names(&snapshot, type_url::CLUSTER), expected);
    assert_eq!(names(&snapshot, type_url::ENDPOINT), expected);

    let cluster: Cluster = decoded(&snapshot, type_url::CLUSTER, "default/demo/aaa");
    assert_eq!(cluster.name, "default/demo/aaa");
    assert_eq!(
        cluster.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
    );
    let eds = cluster
        .eds_cluster_config
        .and_then(|e| e.eds_config)
        .expect("eds config");
    assert!(matches!(
        eds.config_source_specifier,
        Some(ConfigSourceSpecifier::Ads(_))
    ));
    assert_eq!(cluster.connect_timeout.map(|d| d.seconds), Some(1));

    let assignment: ClusterLoadAssignment =
        decoded(&snapshot, type_url::ENDPOINT, "default/demo/aaa");
    assert_eq!(assignment.cluster_name, "default/demo/aaa");
    let addresses: Vec<(String, u32)> = assignment
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) => {
                ip_port(endpoint.address.as_ref())
            }
            other => panic!("endpoint {other:?}"),
        })
        .collect();
    assert_eq!(
        addresses,
        vec![("127.0.0.1".into(), 8001), ("127.0.0.1".into(), 8002)]
    );
}

#[test]
fn a_version_without_endpoints_is_a_cluster_without_endpoints() {
    let state = state([rollout("default/demo", "demo.local", &[("aaa", &[])])]);
    let snapshot = translate(&state, &options()).expect("translates");
    let assignment: ClusterLoadAssignment =
        decoded(&snapshot, type_url::ENDPOINT, "default/demo/aaa");
    assert!(assignment.endpoints.is_empty());
    check_consistent(&snapshot).expect("consistent");
}

#[test]
fn routes_match_the_routing_header_per_version_then_split_by_weight() {
    let snapshot = translate(&demo(), &options()).expect("translates");
    let routes: RouteConfiguration = decoded(&snapshot, type_url::ROUTE, ROUTE_CONFIG_NAME);
    assert_eq!(
        routes.request_headers_to_remove,
        vec!["x-sluice-hash", "x-sluice-bucket"]
    );

    let names: Vec<&str> = routes
        .virtual_hosts
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(names, ["default/demo", "no_rollout"]);
    let vhost = virtual_host(&routes, "default/demo");
    // Issue 7: the empty port (`demo.local:`), which `strip_any_host_port` leaves, is a domain;
    // `demo.local:*` is not (a non-numeric "port" is no rollout host for the filter either).
    assert_eq!(vhost.domains, ["demo.local", "demo.local:"]);
    assert_eq!(vhost.routes.len(), 3);
    for (route, hash) in vhost.routes.iter().zip(["aaa", "bbb"]) {
        let matcher = route.r#match.as_ref().expect("match");
        assert_eq!(matcher.headers.len(), 2);
        assert_eq!(matcher.headers[0].name, "x-sluice-hash");
        // A bucket written by the filter means "the weight decides": a client-sent hash must
        // not pick the version then.
        assert_eq!(matcher.headers[1].name, "x-sluice-bucket");
        assert_eq!(
            matcher.headers[1].header_match_specifier,
            Some(header_matcher::HeaderMatchSpecifier::PresentMatch(false))
        );
        match &matcher.headers[0].header_match_specifier {
            Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)) => assert_eq!(
                m.match_pattern,
                Some(string_matcher::MatchPattern::Exact(hash.into()))
            ),
            other => panic!("matcher {other:?}"),
        }
        match &route.action {
            Some(route::Action::Route(action)) => assert_eq!(
                action.cluster_specifier,
                Some(route_action::ClusterSpecifier::Cluster(format!(
                    "default/demo/{hash}"
                )))
            ),
            other => panic!("action {other:?}"),
        }
    }
    match fallback_of(&snapshot, "default/demo") {
        route_action::ClusterSpecifier::WeightedClusters(weighted) => {
            let split: Vec<(&str, u32)> = weighted
                .clusters
                .iter()
                .map(|c| (c.name.as_str(), c.weight.expect("weight").value))
                .collect();
            // Canary first: Envoy gives it the buckets [0, 2500), as the filter would.
            assert_eq!(
                split,
                [("default/demo/bbb", 2500), ("default/demo/aaa", 7500)]
            );
            assert_eq!(
                weighted.random_value_specifier,
                Some(weighted_cluster::RandomValueSpecifier::HeaderName(
                    "x-sluice-bucket".into()
                ))
            );
        }
        other => panic!("fallback {other:?}"),
    }

    let catch_all = routes.virtual_hosts.last().expect("catch-all");
    assert_eq!(catch_all.domains, ["*"]);
    match &catch_all.routes[0].action {
        Some(route::Action::DirectResponse(response)) => {
            assert_eq!(response.status, 404);
            let body = response.body.as_ref().and_then(|b| b.specifier.as_ref());
            assert!(
                matches!(body, Some(data_source::Specifier::InlineString(s)) if s.contains("no rollout"))
            );
        }
        other => panic!("catch-all {other:?}"),
    }
}

#[test]
fn fallback_is_a_plain_cluster_when_one_side_has_no_weight() {
    let only_stable = state([rollout("default/demo", "demo.local", &[("aaa", &[])])]);
    let mut zero = demo();
    zero.rollouts
        .get_mut("default/demo")
        .expect("demo")
        .canary_weight_bp = 0;
    let mut full = demo();
    full.rollouts
        .get_mut("default/demo")
        .expect("demo")
        .canary_weight_bp = 10_000;
    for (state, cluster) in [
        (only_stable, "default/demo/aaa"),
        (zero, "default/demo/aaa"),
        (full, "default/demo/bbb"),
    ] {
        let snapshot = translate(&state, &options()).expect("translates");
        assert_eq!(
            fallback_of(&snapshot, "default/demo"),
            route_action::ClusterSpecifier::Cluster(cluster.into())
        );
    }
}

fn hcm_of(listener: &Listener) -> HttpConnectionManager {
    let filter = &listener.filter_chains[0].filters[0];
    match &filter.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => {
            assert_eq!(any.type_url, HttpConnectionManager::type_url());
            HttpConnectionManager::decode(any.value.as_slice()).expect("hcm")
        }
        other => panic!("network filter {other:?}"),
    }
}

fn ip_port(address: Option<&Address>) -> (String, u32) {
    match address.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => match &s.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(port)) => (s.address.clone(), *port),
            other => panic!("port {other:?}"),
        },
        other => panic!("address {other:?}"),
    }
}

fn port_of(listener: &Listener) -> (String, u32) {
    ip_port(listener.address.as_ref())
}

#[test]
fn listener_uses_rds_and_the_ecds_filter_before_the_router() {
    let snapshot = translate(&demo(), &options()).expect("translates");
    let listener: Listener = decoded(&snapshot, type_url::LISTENER, LISTENER_NAME);
    assert_eq!(port_of(&listener), ("0.0.0.0".into(), 10_000));
    let hcm = hcm_of(&listener);
    assert_eq!(hcm.stat_prefix, "sluice");
    // Issue 7: Envoy normalises the host as the filter does (trailing dot, port).
    assert!(hcm.strip_trailing_host_dot);
    assert_eq!(
        hcm.strip_port_mode,
        Some(
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::StripPortMode::StripAnyHostPort(true)
        )
    );
    match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            assert_eq!(rds.route_config_name, ROUTE_CONFIG_NAME);
            assert!(matches!(
                rds.config_source
                    .as_ref()
                    .and_then(|c| c.config_source_specifier.as_ref()),
                Some(ConfigSourceSpecifier::Ads(_))
            ));
        }
        other => panic!("route specifier {other:?}"),
    }
    let filters: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(filters, ["sluice", "envoy.filters.http.router"]);
    match &hcm.http_filters[0].config_type {
        Some(http_filter::ConfigType::ConfigDiscovery(source)) => {
            assert_eq!(source.type_urls, [Wasm::type_url()]);
            assert!(source.config_source.is_some());
        }
        other => panic!("sluice filter {other:?}"),
    }
}

fn metadata(value: Kind) -> Struct {
    Struct {
        fields: [(
            LISTENER_METADATA_KEY.to_string(),
            Value { kind: Some(value) },
        )]
        .into(),
    }
}

#[test]
fn node_metadata_overrides_the_listener_address() {
    let options = options();
    let listener = |metadata: Option<&Struct>| {
        let resource = listener_for_node(&options, metadata);
        assert_eq!(resource.name, LISTENER_NAME);
        port_of(&Listener::decode(resource.body.value.as_slice()).expect("listener"))
    };
    assert_eq!(listener(None), ("0.0.0.0".into(), 10_000));
    let own = metadata(Kind::StringValue("127.0.0.1:18080".into()));
    assert_eq!(listener(Some(&own)), ("127.0.0.1".into(), 18_080));
    // A bad value must not take the Envoy down: it falls back to the default.
    let bad = metadata(Kind::StringValue("localhost".into()));
    assert_eq!(listener(Some(&bad)), ("0.0.0.0".into(), 10_000));
    let not_a_string = metadata(Kind::NumberValue(18080.0));
    assert_eq!(listener(Some(&not_a_string)), ("0.0.0.0".into(), 10_000));
    // The default listener of a snapshot is the same resource as a node without override.
    let snapshot = translate(&demo(), &options).expect("translates");
    assert_eq!(
        snapshot.get(type_url::LISTENER, LISTENER_NAME),
        Some(&listener_for_node(&options, None))
    );
}

fn wasm_of(snapshot: &Snapshot) -> Wasm {
    let config: TypedExtensionConfig =
        decoded(snapshot, type_url::EXTENSION_CONFIG, FILTER_CONFIG_NAME);
    assert_eq!(config.name, FILTER_CONFIG_NAME);
    let any = config.typed_config.expect("typed config");
    assert_eq!(any.type_url, Wasm::type_url());
    Wasm::decode(any.value.as_slice()).expect("wasm")
}

#[test]
fn ecds_carries_the_policy_as_bytes_and_fails_open() {
    let state = demo();
    let snapshot = translate(&state, &options()).expect("translates");
    let plugin = wasm_of(&snapshot).config.expect("plugin config");
    assert_eq!(
        (plugin.name.as_str(), plugin.root_id.as_str()),
        ("sluice", "sluice")
    );
    assert_eq!(plugin.failure_policy, FailurePolicy::FailOpen as i32);
    let Some(plugin_config::Vm::VmConfig(vm)) = &plugin.vm else {
        panic!("no vm config");
    };
    assert_eq!(vm.vm_id, "sluice");
    assert_eq!(vm.runtime, "envoy.wasm.runtime.v8");
    match vm.code.as_ref().and_then(|c| c.specifier.as_ref()) {
        Some(async_data_source::Specifier::Local(local)) => assert_eq!(
            local.specifier,
            Some(data_source::Specifier::Filename(
                "/opt/sluice/sluice_filter.wasm".into()
            ))
        ),
        other => panic!("code {other:?}"),
    }
    let configuration = plugin.configuration.expect("configuration");
    assert_eq!(configuration.type_url, BytesValue::type_url());
    let bytes = BytesValue::decode(configuration.value.as_slice()).expect("bytes value");
    let policy = FilterPolicy::decode(bytes.value.as_slice()).expect("policy");
    // The model's policy, with the weights left to the routes (the bucket header).
    let mut expected = sluice_model::policy::render(&state, "x-sluice-hash");
    expected.bucket_header = "x-sluice-bucket".into();
    expected.rollouts[0].canary_weight_bp = 0;
    assert_eq!(policy, expected);
}

#[test]
fn remote_wasm_is_fetched_through_the_named_cluster() {
    let mut options = options();
    options.wasm = WasmSource::Remote {
        uri: "http://127.0.0.1:8081/sluice.wasm".into(),
        cluster: "sluice_control_plane_http".into(),
        sha256: "ab".repeat(32),
    };
    let snapshot = translate(&demo(), &options).expect("translates");
    let plugin = wasm_of(&snapshot).config.expect("plugin config");
    let Some(plugin_config::Vm::VmConfig(vm)) = &plugin.vm else {
        panic!("no vm config");
    };
    match vm.code.as_ref().and_then(|c| c.specifier.as_ref()) {
        Some(async_data_source::Specifier::Remote(remote)) => {
            assert_eq!(remote.sha256, "ab".repeat(32));
            let uri = remote.http_uri.as_ref().expect("http uri");
            assert_eq!(uri.uri, "http://127.0.0.1:8081/sluice.wasm");
            assert_eq!(
                uri.http_upstream_type,
                Some(http_uri::HttpUpstreamType::Cluster(
                    "sluice_control_plane_http".into()
                ))
            );
            assert!(uri.timeout.is_some());
        }
        other => panic!("code {other:?}"),
    }
}

#[test]
fn a_weight_change_changes_only_routes() {
    let before = translate(&demo(), &options()).expect("translates");
    let mut changed = demo();
    changed
        .rollouts
        .get_mut("default/demo")
        .expect("demo")
        .canary_weight_bp = 5000;
    let after = translate(&changed, &options()).expect("translates");

    // The filter's configuration must not change with the weight: Envoy keeps state for every
    // distinct plugin configuration it is given (issue 7 §5: 2,000 weight changes grew it by
    // 57 MB).
    for unchanged in [
        type_url::CLUSTER,
        type_url::ENDPOINT,
        type_url::LISTENER,
        type_url::EXTENSION_CONFIG,
    ] {
        assert_eq!(
            versions_by_name(&before, unchanged),
            versions_by_name(&after, unchanged),
            "{unchanged}"
        );
    }
    assert_ne!(
        before.type_version(type_url::ROUTE),
        after.type_version(type_url::ROUTE)
    );
    // Translating the same state twice is byte-identical.
    assert_eq!(before, translate(&demo(), &options()).expect("translates"));
}

#[test]
fn a_new_version_adds_a_cluster_and_keeps_the_others() {
    let before = translate(&demo(), &options()).expect("translates");
    let mut grown = demo();
    grown
        .rollouts
        .get_mut("default/demo")
        .expect("demo")
        .versions
        .insert("ccc".into(), Version::default());
    let after = translate(&grown, &options()).expect("translates");

    for type_url in [type_url::CLUSTER, type_url::ENDPOINT] {
        let old = versions_by_name(&before, type_url);
        let new = versions_by_name(&after, type_url);
        assert_eq!(new.len(), old.len() + 1);
        assert!(new.contains_key("default/demo/ccc"));
        for (name, version) in &old {
            assert_eq!(new.get(name), Some(version), "{type_url} {name}");
        }
    }
    assert_ne!(
        before.type_version(type_url::ROUTE),
        after.type_version(type_url::ROUTE)
    );
    check_consistent(&after).expect("consistent");
}

#[test]
fn invalid_states_and_options_are_rejected_with_the_field_at_fault() {
    let mut bad = demo();
    bad.rollouts
        .get_mut("default/demo")
        .expect("demo")
        .stable_hash = "zzz".into();
    let err = translate(&bad, &options()).expect_err("unknown stable hash");
    let message = err.to_string();
    assert!(
        message.contains("default/demo") && message.contains("stableHash"),
        "{message}"
    );

    let twice = state([
        rollout("default/a", "same.local", &[("aaa", &[])]),
        rollout("default/b", "same.local", &[("bbb", &[])]),
    ]);
    let err = translate(&twice, &options()).expect_err("a host in two rollouts");
    assert!(err.to_string().contains("same.local"), "{err}");

    let mut options = options();
    options.routing_header = "X Bad".into();
    let err = translate(&demo(), &options).expect_err("bad header");
    assert!(err.to_string().contains("routing_header"), "{err}");

    // The bucket header keeps its own meaning: a routing header of the same name is refused.
    options.routing_header = "x-sluice-bucket".into();
    let err = translate(&demo(), &options).expect_err("routing header = bucket header");
    assert!(err.to_string().contains("routing_header"), "{err}");
}

#[test]
fn an_empty_state_still_serves_the_listener_and_a_404() {
    let snapshot = translate(&TrafficState::default(), &options()).expect("translates");
    assert!(names(&snapshot, type_url::CLUSTER).is_empty());
    let routes: RouteConfiguration = decoded(&snapshot, type_url::ROUTE, ROUTE_CONFIG_NAME);
    assert_eq!(routes.virtual_hosts.len(), 1);
    check_consistent(&snapshot).expect("consistent");
}

/// Removes one resource and expects the consistency check to name `expected`.
fn assert_inconsistent_without(type_url: &str, name: &str, expected: &str) {
    let mut snapshot = translate(&demo(), &options()).expect("translates");
    check_consistent(&snapshot).expect("consistent before");
    let removed = snapshot
        .resources
        .get_mut(type_url)
        .and_then(|m| m.remove(name));
    assert!(removed.is_some(), "{type_url} {name} was there");
    let err = check_consistent(&snapshot).expect_err("inconsistent");
    assert!(err.to_string().contains(expected), "{err}");
}

#[test]
fn missing_references_are_inconsistent() {
    assert_inconsistent_without(type_url::ENDPOINT, "default/demo/aaa", "default/demo/aaa");
    assert_inconsistent_without(type_url::CLUSTER, "default/demo/bbb", "default/demo/bbb");
    assert_inconsistent_without(type_url::ROUTE, ROUTE_CONFIG_NAME, ROUTE_CONFIG_NAME);
    assert_inconsistent_without(type_url::EXTENSION_CONFIG, FILTER_CONFIG_NAME, "sluice");
}

#[test]
fn orphans_and_misnamed_resources_are_inconsistent() {
    let mut snapshot = translate(&demo(), &options()).expect("translates");
    // The listener gone: its route configuration and filter config are orphans.
    snapshot.resources.remove(type_url::LISTENER);
    let err = check_consistent(&snapshot).expect_err("orphan RDS");
    assert!(err.to_string().contains("no listener"), "{err}");

    let mut snapshot = translate(&demo(), &options()).expect("translates");
    let body = snapshot
        .get(type_url::ENDPOINT, "default/demo/aaa")
        .expect("assignment")
        .body
        .clone();
    snapshot.insert(Resource::new("default/demo/zzz", body));
    let err = check_consistent(&snapshot).expect_err("misnamed");
    assert!(err.to_string().contains("default/demo/zzz"), "{err}");

    let mut snapshot = translate(&demo(), &options()).expect("translates");
    snapshot.insert(Resource::new(
        "default/demo/zzz",
        build::load_assignment("default/demo/zzz", &Version::default()),
    ));
    let err = check_consistent(&snapshot).expect_err("orphan EDS");
    assert!(err.to_string().contains("no EDS cluster"), "{err}");

    let mut snapshot = translate(&demo(), &options()).expect("translates");
    let garbage = prost_types::Any {
        type_url: type_url::CLUSTER.into(),
        value: vec![0xff, 0xff, 0xff],
    };
    snapshot.insert(Resource::new("garbage", garbage));
    let err = check_consistent(&snapshot).expect_err("undecodable");
    assert!(matches!(err, XdsError::Decode { .. }), "{err}");
}
