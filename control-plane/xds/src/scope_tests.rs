use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::protobuf::{BytesValue, ListValue};
use prost::Message;
use sluice_model::{Stickiness, Version};
use sluice_proto::v1::FilterPolicy;

use super::*;
use crate::protocol::Connection;
use crate::translate::{ROUTE_CONFIG_NAME, WasmSource, check_consistent, translate};
use crate::type_url;

fn rollout(name: &str, host: &str, weight: u32) -> RolloutState {
    let version = |port: u16| Version {
        endpoints: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
    };
    RolloutState {
        name: name.into(),
        hosts: vec![host.into()],
        versions: [
            ("aaa".to_string(), version(8001)),
            ("bbb".into(), version(8002)),
        ]
        .into(),
        stable_hash: "aaa".into(),
        canary_hash: Some("bbb".into()),
        canary_weight_bp: weight,
        header_routes: Vec::new(),
        mirror_routes: Vec::new(),
        additional_weights: Vec::new(),
        preview: None,
        stickiness: Stickiness::None,
    }
}

/// shop/cart (cart.shop), shop/pay (pay.shop), web/front (front.web), web/admin (admin.web).
fn fleet(cart_weight: u32, admin_weight: u32) -> TrafficState {
    let rollouts = [
        rollout("shop/cart", "cart.shop", cart_weight),
        rollout("shop/pay", "pay.shop", 0),
        rollout("web/front", "front.web", 0),
        rollout("web/admin", "admin.web", admin_weight),
    ];
    TrafficState {
        rollouts: rollouts.into_iter().map(|r| (r.name.clone(), r)).collect(),
    }
}

fn options() -> TranslateOptions {
    TranslateOptions::new(WasmSource::Local {
        path: "/opt/sluice/sluice_filter.wasm".into(),
    })
}

fn metadata(value: Kind) -> Struct {
    Struct {
        fields: [(SCOPE_METADATA_KEY.to_string(), Value { kind: Some(value) })].into(),
    }
}

fn list(entries: &[&str]) -> Kind {
    Kind::ListValue(ListValue {
        values: entries
            .iter()
            .map(|e| Value {
                kind: Some(Kind::StringValue((*e).into())),
            })
            .collect(),
    })
}

fn names(snapshot: &Snapshot, type_url: &str) -> Vec<String> {
    snapshot.of_type(type_url).map(|r| r.name.clone()).collect()
}

fn virtual_hosts(snapshot: &Snapshot) -> Vec<String> {
    let resource = snapshot
        .get(type_url::ROUTE, ROUTE_CONFIG_NAME)
        .expect("routes");
    let routes = RouteConfiguration::decode(resource.body.value.as_slice()).expect("decodes");
    routes.virtual_hosts.into_iter().map(|v| v.name).collect()
}

fn policy_rollouts(snapshot: &Snapshot) -> Vec<String> {
    let resource = snapshot
        .get(
            type_url::EXTENSION_CONFIG,
            crate::translate::FILTER_CONFIG_NAME,
        )
        .expect("filter config");
    let config = TypedExtensionConfig::decode(resource.body.value.as_slice()).expect("config");
    let wasm = Wasm::decode(config.typed_config.expect("typed").value.as_slice()).expect("wasm");
    let bytes = BytesValue::decode(
        wasm.config
            .expect("plugin")
            .configuration
            .expect("policy")
            .value
            .as_slice(),
    )
    .expect("bytes");
    let policy = FilterPolicy::decode(bytes.value.as_slice()).expect("policy");
    policy.rollouts.into_iter().map(|r| r.name).collect()
}

#[test]
fn entries_are_hosts_namespaces_or_rollouts() {
    let scope = Scope::parse([" Cart.Shop. ", "web/*", "shop/pay"]).expect("parses");
    assert_eq!(scope.hosts, ["cart.shop".to_string()].into());
    assert_eq!(scope.namespaces, ["web".to_string()].into());
    assert_eq!(scope.rollouts, ["shop/pay".to_string()].into());
    assert_eq!(scope.entries(), ["cart.shop", "web/*", "shop/pay"]);
    assert_eq!(
        Scope::parse(scope.entries().iter().map(String::as_str)),
        Ok(scope)
    );

    for (bad, reason) in [
        ("", "empty"),
        ("a b", "contains whitespace"),
        (".", "empty host"),
        ("/x", "expected a host, namespace/* or namespace/name"),
        ("ns/", "expected a host, namespace/* or namespace/name"),
        ("a/b/c", "expected a host, namespace/* or namespace/name"),
    ] {
        let error = Scope::parse(["ok.host", bad]).expect_err(bad);
        assert_eq!(error.entry, bad);
        assert_eq!(error.reason, reason, "{bad:?}");
    }
}

#[test]
fn metadata_scopes_a_node_and_anything_else_leaves_it_unscoped() {
    assert_eq!(Scope::from_metadata(None), None);
    assert_eq!(Scope::from_metadata(Some(&Struct::default())), None);
    let scoped = Scope::from_metadata(Some(&metadata(list(&["cart.shop", "web/*"]))));
    assert_eq!(scoped, Scope::parse(["cart.shop", "web/*"]).ok());
    // A hand-written bootstrap may use one comma-separated string.
    let from_string = Scope::from_metadata(Some(&metadata(Kind::StringValue(
        "cart.shop, web/*".into(),
    ))));
    assert_eq!(from_string, scoped);
    // An explicitly empty scope is a node that needs no rollout.
    assert_eq!(
        Scope::from_metadata(Some(&metadata(list(&[])))),
        Some(Scope::default())
    );
    // Unusable values do not cut a node off: it keeps receiving everything.
    assert_eq!(
        Scope::from_metadata(Some(&metadata(Kind::BoolValue(true)))),
        None
    );
    assert_eq!(
        Scope::from_metadata(Some(&metadata(list(&["ok", ""])))),
        None
    );
    let mixed = Kind::ListValue(ListValue {
        values: vec![Value {
            kind: Some(Kind::NumberValue(1.0)),
        }],
    });
    assert_eq!(Scope::from_metadata(Some(&metadata(mixed))), None);
}

#[test]
fn restrict_selects_by_host_namespace_or_name() {
    let state = fleet(100, 0);
    let pick = |entries: &[&str]| -> Vec<String> {
        let scope = Scope::parse(entries.iter().copied()).expect("scope");
        restrict(&state, &scope).rollouts.into_keys().collect()
    };
    assert_eq!(pick(&["cart.shop"]), ["shop/cart"]);
    assert_eq!(pick(&["web/*"]), ["web/admin", "web/front"]);
    assert_eq!(pick(&["shop/pay", "front.web"]), ["shop/pay", "web/front"]);
    assert_eq!(pick(&["nothing.here", "other/*"]), Vec::<String>::new());
    assert_eq!(pick(&[]), Vec::<String>::new());
}

#[test]
fn a_scoped_node_receives_only_its_rollouts_and_an_unscoped_one_everything() {
    let nodes = NodeSnapshots::new(options());
    let published = translate(&fleet(2500, 0), &options()).expect("translates");

    let all = nodes.for_node(None, &published);
    assert_eq!(all, for_node(&options(), None, &published));
    assert_eq!(names(&all, type_url::CLUSTER).len(), 8);
    assert_eq!(policy_rollouts(&all).len(), 4);

    let sidecar = metadata(list(&["cart.shop", "web/*"]));
    let own = nodes.for_node(Some(&sidecar), &published);
    check_consistent(&own).expect("a scoped snapshot is consistent");
    assert_eq!(
        names(&own, type_url::CLUSTER),
        [
            "shop/cart/aaa",
            "shop/cart/bbb",
            "web/admin/aaa",
            "web/admin/bbb",
            "web/front/aaa",
            "web/front/bbb"
        ]
    );
    assert_eq!(
        names(&own, type_url::ENDPOINT),
        names(&own, type_url::CLUSTER)
    );
    assert_eq!(
        virtual_hosts(&own),
        ["shop/cart", "web/admin", "web/front", "no_rollout"]
    );
    assert_eq!(
        policy_rollouts(&own),
        ["shop/cart", "web/admin", "web/front"]
    );

    // A node whose scope matches nothing still gets a whole, consistent configuration.
    let none = nodes.for_node(Some(&metadata(list(&["elsewhere"]))), &published);
    check_consistent(&none).expect("consistent");
    assert!(names(&none, type_url::CLUSTER).is_empty());
    assert_eq!(virtual_hosts(&none), ["no_rollout"]);
}

#[test]
fn nodes_with_the_same_scope_share_one_snapshot() {
    let nodes = NodeSnapshots::new(options());
    let published = translate(&fleet(2500, 0), &options()).expect("translates");
    let a = nodes.for_node(Some(&metadata(list(&["cart.shop", "web/*"]))), &published);
    // The same scope written in another order and form.
    let b = nodes.for_node(
        Some(&metadata(Kind::StringValue("web/*,CART.SHOP".into()))),
        &published,
    );
    for type_url in [
        type_url::CLUSTER,
        type_url::ENDPOINT,
        type_url::ROUTE,
        type_url::EXTENSION_CONFIG,
    ] {
        assert!(
            a.resources[type_url].same(&b.resources[type_url]),
            "{type_url}"
        );
    }
    assert_eq!(nodes.cached_scopes(), 1);
}

/// Drives a SotW connection like Envoy: subscribes to every type with the names it holds, ACKs.
fn sotw_synced(snapshot: Arc<Snapshot>) -> Connection {
    let mut connection = Connection::new(Arc::clone(&snapshot));
    for type_url in type_url::PUSH_ORDER {
        let names: Vec<String> = if type_url == type_url::CLUSTER || type_url == type_url::LISTENER
        {
            Vec::new()
        } else {
            snapshot.of_type(type_url).map(|r| r.name.clone()).collect()
        };
        let responses = connection.on_request(DiscoveryRequest {
            type_url: type_url.into(),
            resource_names: names.clone(),
            ..Default::default()
        });
        for response in responses {
            connection.on_request(DiscoveryRequest {
                type_url: response.type_url.clone(),
                version_info: response.version_info.clone(),
                response_nonce: response.nonce.clone(),
                resource_names: names.clone(),
                ..Default::default()
            });
        }
    }
    assert!(connection.is_synced());
    connection
}

#[test]
fn a_change_outside_the_scope_sends_the_node_nothing() {
    let nodes = NodeSnapshots::new(options());
    let sidecar = metadata(list(&["cart.shop"]));
    let before = translate(&fleet(2500, 0), &options()).expect("translates");
    let own = nodes.for_node(Some(&sidecar), &before);
    let mut scoped = sotw_synced(Arc::new(own.clone()));
    let mut unscoped = sotw_synced(Arc::new(nodes.for_node(None, &before)));

    // web/admin's weight moves: the unscoped node gets new routes, the cart sidecar nothing.
    let after = translate(&fleet(2500, 5000), &options()).expect("translates");
    let own_after = nodes.for_node(Some(&sidecar), &after);
    for type_url in type_url::PUSH_ORDER {
        if let Some(set) = own.resources.get(type_url) {
            assert!(set.same(&own_after.resources[type_url]), "{type_url}");
        }
    }
    assert!(scoped.on_snapshot(Arc::new(own_after)).is_empty());
    let pushed = unscoped.on_snapshot(Arc::new(nodes.for_node(None, &after)));
    assert_eq!(
        pushed
            .iter()
            .map(|r| r.type_url.as_str())
            .collect::<Vec<_>>(),
        [type_url::ROUTE]
    );

    // cart's weight moves: the sidecar gets its (small) route configuration.
    let cart = translate(&fleet(5000, 5000), &options()).expect("translates");
    let pushed = scoped.on_snapshot(Arc::new(nodes.for_node(Some(&sidecar), &cart)));
    assert_eq!(
        pushed
            .iter()
            .map(|r| r.type_url.as_str())
            .collect::<Vec<_>>(),
        [type_url::ROUTE]
    );
    let routes =
        RouteConfiguration::decode(pushed[0].resources[0].body.value.as_slice()).expect("decodes");
    assert_eq!(
        routes
            .virtual_hosts
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        ["shop/cart", "no_rollout"]
    );
}

#[test]
fn a_rollout_whose_host_changes_moves_to_the_scopes_of_its_new_host() {
    let nodes = NodeSnapshots::new(options());
    let old_host = metadata(list(&["cart.shop"]));
    let new_host = metadata(list(&["basket.shop"]));
    let namespace = metadata(list(&["shop/*"]));
    let before = translate(&fleet(2500, 0), &options()).expect("translates");
    assert_eq!(
        names(&nodes.for_node(Some(&old_host), &before), type_url::CLUSTER).len(),
        2
    );
    assert!(names(&nodes.for_node(Some(&new_host), &before), type_url::CLUSTER).is_empty());
    let shop_before = nodes.for_node(Some(&namespace), &before);

    let mut moved = fleet(2500, 0);
    moved.rollouts.get_mut("shop/cart").expect("cart").hosts = vec!["basket.shop".into()];
    let after = nodes.translate(&moved).expect("translates");
    assert!(names(&nodes.for_node(Some(&old_host), &after), type_url::CLUSTER).is_empty());
    assert_eq!(
        names(&nodes.for_node(Some(&new_host), &after), type_url::CLUSTER),
        ["shop/cart/aaa", "shop/cart/bbb"]
    );
    // Same clusters in the namespace's scope; its routes now name the new host.
    let shop_after = nodes.for_node(Some(&namespace), &after);
    assert!(
        shop_after.resources[type_url::CLUSTER].same(&shop_before.resources[type_url::CLUSTER])
    );
    assert!(!shop_after.resources[type_url::ROUTE].same(&shop_before.resources[type_url::ROUTE]));
    assert_eq!(nodes.cached_scopes(), 3);
}
