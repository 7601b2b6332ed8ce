//! Snapshots made of real Envoy messages, and requests shaped like Envoy's, for the unit tests.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    Address, Node, SocketAddress, TypedExtensionConfig, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, VirtualHost, route, route_action,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

use super::SotwResponse;
use envoy_types::pb::google::rpc::Status;
use prost::Message;

use crate::snapshot::{Resource, Snapshot};
use crate::type_url::{CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE};

pub const LISTENER_NAME: &str = "ingress";
pub const ROUTE_NAME: &str = "ingress-routes";
pub const FILTER_NAME: &str = "sluice";

fn resource(type_url: &str, name: &str, message: &impl Message) -> Resource {
    Resource::new(
        name,
        prost_types::Any {
            type_url: type_url.to_string(),
            value: message.encode_to_vec(),
        },
    )
}

fn socket(port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// A snapshot with one EDS cluster per name (endpoint port `port`), a listener, a route
/// configuration sending `/<cluster>` to each cluster (tagged with `route_tag`, so a new tag is a
/// route-only change), and the filter's ECDS config.
pub fn snapshot(clusters: &[&str], port: u32, route_tag: &str) -> Arc<Snapshot> {
    let mut snapshot = Snapshot::default();
    for name in clusters {
        let cluster = Cluster {
            name: name.to_string(),
            ..Default::default()
        };
        snapshot.insert(resource(CLUSTER, name, &cluster));
        let assignment = ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        snapshot.insert(resource(ENDPOINT, name, &assignment));
    }
    let listener = Listener {
        name: LISTENER_NAME.into(),
        address: Some(socket(10000)),
        ..Default::default()
    };
    snapshot.insert(resource(LISTENER, LISTENER_NAME, &listener));
    let routes = RouteConfiguration {
        name: ROUTE_NAME.into(),
        virtual_hosts: vec![VirtualHost {
            name: route_tag.into(),
            domains: vec!["*".into()],
            routes: clusters
                .iter()
                .map(|cluster| Route {
                    r#match: Some(envoy_types::pb::envoy::config::route::v3::RouteMatch {
                        path_specifier: Some(
                            envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier::Prefix(
                                format!("/{cluster}"),
                            ),
                        ),
                        ..Default::default()
                    }),
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                            cluster.to_string(),
                        )),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    snapshot.insert(resource(ROUTE, ROUTE_NAME, &routes));
    let filter = TypedExtensionConfig {
        name: FILTER_NAME.into(),
        typed_config: None,
    };
    snapshot.insert(resource(EXTENSION_CONFIG, FILTER_NAME, &filter));
    Arc::new(snapshot)
}

/// The names of the resources in a SotW response (decoded from the bodies, not trusted from a
/// side channel).
pub fn names(response: &SotwResponse) -> Vec<String> {
    response
        .resources
        .iter()
        .map(|any| {
            assert_eq!(
                any.body.type_url, response.type_url,
                "resource type matches response type"
            );
            let bytes = any.body.value.as_slice();
            match any.body.type_url.as_str() {
                CLUSTER => Cluster::decode(bytes).map(|m| m.name),
                ENDPOINT => ClusterLoadAssignment::decode(bytes).map(|m| m.cluster_name),
                LISTENER => Listener::decode(bytes).map(|m| m.name),
                ROUTE => RouteConfiguration::decode(bytes).map(|m| m.name),
                EXTENSION_CONFIG => TypedExtensionConfig::decode(bytes).map(|m| m.name),
                other => panic!("unexpected type {other}"),
            }
            .expect("resource decodes")
        })
        .collect()
}

pub fn node() -> Node {
    Node {
        id: "envoy-1".into(),
        cluster: "gateway".into(),
        ..Default::default()
    }
}

/// The first request of a type on a stream.
pub fn subscribe(type_url: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(node()),
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

/// The ACK Envoy sends for `response`, keeping (or changing to) `names`.
pub fn ack(response: &SotwResponse, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: response.version_info.clone(),
        type_url: response.type_url.clone(),
        response_nonce: response.nonce.clone(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

/// The NACK Envoy sends for `response`: the version it still has, and the error.
pub fn nack(
    response: &SotwResponse,
    previous_version: &str,
    names: &[&str],
    error: &str,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: previous_version.into(),
        error_detail: Some(Status {
            code: 3,
            message: error.into(),
            details: Vec::new(),
        }),
        ..ack(response, names)
    }
}

/// The one response of `type_url` in `responses`.
pub fn only<'a>(responses: &'a [SotwResponse], type_url: &str) -> &'a SotwResponse {
    let matching: Vec<_> = responses
        .iter()
        .filter(|r| r.type_url == type_url)
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "one {type_url} response in {:?}",
        types(responses)
    );
    matching[0]
}

/// The type URLs of `responses`, in order.
pub fn types(responses: &[SotwResponse]) -> Vec<&str> {
    responses.iter().map(|r| r.type_url.as_str()).collect()
}
