//! Builders of the Envoy messages, each returning the `Any` a `Resource` carries.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::{
    cluster::v3::{
        Cluster,
        cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
    },
    core::v3::{
        Address, AggregatedConfigSource, ApiVersion, AsyncDataSource, ConfigSource, DataSource,
        ExtensionConfigSource, HttpUri, RemoteDataSource, SocketAddress, TypedExtensionConfig,
        address, async_data_source, config_source::ConfigSourceSpecifier, data_source, http_uri,
        socket_address,
    },
    endpoint::v3::{ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint},
    listener::v3::{Filter, FilterChain, Listener, filter},
    route::v3::{
        DirectResponseAction, HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch,
        VirtualHost, WeightedCluster, header_matcher, route, route_action, route_match,
        weighted_cluster::{self, ClusterWeight},
    },
};
use envoy_types::pb::envoy::extensions::{
    filters::{
        http::{router::v3::Router, wasm::v3::Wasm},
        network::http_connection_manager::v3::{
            HttpConnectionManager, HttpFilter, Rds,
            http_connection_manager::{RouteSpecifier, StripPortMode},
            http_filter,
        },
    },
    wasm::v3::{FailurePolicy, PluginConfig, VmConfig, plugin_config},
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{self as pbuf, BytesValue, Duration, UInt32Value};
use prost::{Message, Name};
use sluice_model::{FULL_WEIGHT_BP, RolloutState, TrafficState, Version};
use sluice_proto::rules;

use super::{BUCKET_HEADER, FILTER_CONFIG_NAME, ROUTE_CONFIG_NAME, cluster_name};

const WASM_RUNTIME: &str = "envoy.wasm.runtime.v8";
const NO_ROLLOUT_BODY: &str = "no rollout for this host\n";
/// How long Envoy waits for the remote Wasm module.
const REMOTE_FETCH_TIMEOUT: Duration = Duration {
    seconds: 30,
    nanos: 0,
};

/// The `Any` a snapshot resource carries.
pub(super) fn to_any<M: Message + Name>(message: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// The `Any` nested inside Envoy messages (envoy-types has its own well-known types).
fn nested_any<M: Message + Name>(message: &M) -> pbuf::Any {
    pbuf::Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// Everything dynamic comes over the one ADS stream.
pub(super) fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn socket_address(address: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                address.port(),
            ))),
            ..Default::default()
        })),
    }
}

pub(super) fn cluster(name: &str) -> prost_types::Any {
    to_any(&Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        // service_name left empty: the assignment has the cluster's own name.
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    })
}

pub(super) fn load_assignment(name: &str, version: &Version) -> prost_types::Any {
    let lb_endpoints: Vec<LbEndpoint> = version
        .endpoints
        .iter()
        .map(|&address| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(address)),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    // An empty version is a cluster with no endpoints (Envoy answers 503 "no healthy upstream").
    let endpoints = if lb_endpoints.is_empty() {
        Vec::new()
    } else {
        vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }]
    };
    to_any(&ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints,
        ..Default::default()
    })
}

pub(super) fn route_configuration(state: &TrafficState, routing_header: &str) -> prost_types::Any {
    let virtual_hosts = state
        .rollouts
        .values()
        .flat_map(|rollout| {
            std::iter::once(virtual_host(rollout, routing_header))
                .chain(super::preview::virtual_host(rollout))
        })
        .collect();
    to_any(&route_configuration_with(virtual_hosts, routing_header))
}

/// The route configuration with the rollouts' `virtual_hosts`, then the catch-all one.
pub(super) fn route_configuration_with(
    mut virtual_hosts: Vec<VirtualHost>,
    routing_header: &str,
) -> RouteConfiguration {
    virtual_hosts.push(VirtualHost {
        name: "no_rollout".into(),
        domains: vec!["*".into()],
        routes: vec![Route {
            name: "no_rollout".into(),
            r#match: Some(prefix_match(Vec::new())),
            action: Some(route::Action::DirectResponse(DirectResponseAction {
                status: 404,
                body: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(NO_ROLLOUT_BODY.into())),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    });
    RouteConfiguration {
        name: ROUTE_CONFIG_NAME.into(),
        virtual_hosts,
        // Applied by the router after the route is chosen: routing still sees the header, the
        // upstream does not.
        request_headers_to_remove: vec![routing_header.to_owned(), BUCKET_HEADER.to_owned()],
        ..Default::default()
    }
}

pub(super) fn virtual_host(rollout: &RolloutState, routing_header: &str) -> VirtualHost {
    // The listener strips trailing dots and numeric ports (see `listener`), so a host and the host
    // with an empty port are all a rollout's domains: the filter's host rule, stated once.
    let domains = rollout
        .hosts
        .iter()
        .flat_map(|host| rules::route_domains(host))
        .collect();
    let mut routes: Vec<Route> = rollout
        .versions
        .keys()
        .map(|hash| Route {
            name: format!("{}/{hash}", rollout.name),
            r#match: Some(prefix_match(vec![
                HeaderMatcher {
                    name: routing_header.to_owned(),
                    header_match_specifier: Some(
                        header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                            match_pattern: Some(string_matcher::MatchPattern::Exact(hash.clone())),
                            ignore_case: false,
                        }),
                    ),
                    ..Default::default()
                },
                // The filter writes a bucket whenever the weight decides: a routing header the
                // client sent along with it must not pick the version.
                HeaderMatcher {
                    name: BUCKET_HEADER.to_owned(),
                    header_match_specifier: Some(
                        header_matcher::HeaderMatchSpecifier::PresentMatch(false),
                    ),
                    ..Default::default()
                },
            ])),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster_name(
                    rollout, hash,
                ))),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    routes.push(Route {
        name: format!("{}/split", rollout.name),
        r#match: Some(prefix_match(Vec::new())),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(fallback(rollout)),
            ..Default::default()
        })),
        ..Default::default()
    });
    VirtualHost {
        name: rollout.name.clone(),
        domains,
        routes: super::mirror::with_mirror_routes(rollout, routes),
        ..Default::default()
    }
}

/// The weighted split: the canary gets w, the additional versions (A/B/n) their weights a₁ …,
/// stable 10000 − w − Σa, picked by the filter's bucket header (see [`BUCKET_HEADER`]), or at
/// random when the filter is absent or failed open. Envoy picks the cluster whose cumulative range
/// holds (bucket mod 10000), so the order canary, stable, additional₁ … gives the canary [0, w)
/// and the additional versions the top of the range: the filter's own rule
/// (`sluice_filter::decision::version_of_bucket`). Envoy wants a positive total, and a zero-weight
/// entry has an empty range, so zero weights are left out and a split with one entry left is a
/// plain cluster route.
fn fallback(rollout: &RolloutState) -> route_action::ClusterSpecifier {
    let canary = rollout
        .canary_hash
        .as_deref()
        .filter(|canary| *canary != rollout.stable_hash);
    let weight = if canary.is_some() {
        rollout.canary_weight_bp.min(FULL_WEIGHT_BP)
    } else {
        0
    };
    // Validated states sum to at most 10000; the saturation only keeps this total.
    let mut left = FULL_WEIGHT_BP - weight;
    let mut additional = Vec::with_capacity(rollout.additional_weights.len());
    for a in &rollout.additional_weights {
        let share = a.weight_bp.min(left);
        left -= share;
        additional.push(cluster_weight(
            cluster_name(rollout, &a.pod_template_hash),
            share,
        ));
    }
    let mut clusters = Vec::with_capacity(2 + additional.len());
    if let Some(canary) = canary {
        clusters.push(cluster_weight(cluster_name(rollout, canary), weight));
    }
    clusters.push(cluster_weight(
        cluster_name(rollout, &rollout.stable_hash),
        left,
    ));
    clusters.extend(additional);
    clusters.retain(|c| c.weight.is_some_and(|w| w.value > 0));
    match clusters.len() {
        0 => route_action::ClusterSpecifier::Cluster(cluster_name(rollout, &rollout.stable_hash)),
        1 => route_action::ClusterSpecifier::Cluster(clusters.remove(0).name),
        _ => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters,
            random_value_specifier: Some(weighted_cluster::RandomValueSpecifier::HeaderName(
                BUCKET_HEADER.to_owned(),
            )),
            ..Default::default()
        }),
    }
}

fn cluster_weight(name: String, weight: u32) -> ClusterWeight {
    ClusterWeight {
        name,
        weight: Some(UInt32Value { value: weight }),
        ..Default::default()
    }
}

fn prefix_match(headers: Vec<HeaderMatcher>) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
        headers,
        ..Default::default()
    }
}

pub(super) fn listener(address: SocketAddr) -> prost_types::Any {
    let hcm = HttpConnectionManager {
        stat_prefix: "sluice".into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: ROUTE_CONFIG_NAME.into(),
        })),
        // Host normalisation as the filter does it (`sluice_proto::rules::normalize_authority`),
        // before any filter or the router sees `:authority`: `demo.local.` and `demo.local:8080`
        // are `demo.local` for both.
        strip_trailing_host_dot: rules::HCM_STRIP_TRAILING_HOST_DOT,
        strip_port_mode: Some(StripPortMode::StripAnyHostPort(
            rules::HCM_STRIP_ANY_HOST_PORT,
        )),
        http_filters: vec![
            HttpFilter {
                // With ECDS the filter's name is the extension config's resource name.
                name: FILTER_CONFIG_NAME.into(),
                config_type: Some(http_filter::ConfigType::ConfigDiscovery(
                    ExtensionConfigSource {
                        config_source: Some(ads()),
                        type_urls: vec![Wasm::type_url()],
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
            HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(nested_any(
                    &Router::default(),
                ))),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    to_any(&Listener {
        name: super::LISTENER_NAME.into(),
        address: Some(socket_address(address)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(nested_any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// The ECDS resource: the Wasm filter with the policy as its plugin configuration.
/// `policy`: an encoded `sluice.v1.FilterPolicy`.
pub(super) fn filter_config(policy: &[u8], wasm: &super::WasmSource) -> prost_types::Any {
    let code = match wasm {
        super::WasmSource::Local { path } => async_data_source::Specifier::Local(DataSource {
            specifier: Some(data_source::Specifier::Filename(path.clone())),
            ..Default::default()
        }),
        super::WasmSource::Remote {
            uri,
            cluster,
            sha256,
        } => async_data_source::Specifier::Remote(RemoteDataSource {
            http_uri: Some(HttpUri {
                uri: uri.clone(),
                timeout: Some(REMOTE_FETCH_TIMEOUT),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(cluster.clone())),
            }),
            sha256: sha256.clone(),
            retry_policy: None,
        }),
    };
    // Envoy hands a BytesValue's raw bytes to the plugin; the filter decodes binary protobuf.
    let configuration = BytesValue {
        value: policy.to_vec(),
    };
    let wasm = Wasm {
        config: Some(PluginConfig {
            name: FILTER_CONFIG_NAME.into(),
            root_id: FILTER_CONFIG_NAME.into(),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                vm_id: FILTER_CONFIG_NAME.into(),
                runtime: WASM_RUNTIME.into(),
                code: Some(AsyncDataSource {
                    specifier: Some(code),
                }),
                ..Default::default()
            })),
            configuration: Some(nested_any(&configuration)),
            // A broken VM degrades to the native weighted route, not to 503s.
            failure_policy: FailurePolicy::FailOpen as i32,
            ..Default::default()
        }),
    };
    to_any(&TypedExtensionConfig {
        name: FILTER_CONFIG_NAME.into(),
        typed_config: Some(nested_any(&wasm)),
    })
}
