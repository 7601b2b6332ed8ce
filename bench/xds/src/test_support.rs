//! Builders of xDS messages shared by the unit tests and the fake ADS server.

use envoy_types::pb::envoy::config::{
    cluster::v3::{
        Cluster,
        cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
    },
    core::v3::ExtensionConfigSource,
    listener::v3::{Filter, FilterChain, Listener, filter},
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

pub fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

pub fn eds_cluster(name: &str, service_name: &str) -> Any {
    any(&Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: None,
            service_name: service_name.to_owned(),
        }),
        ..Default::default()
    })
}

pub fn static_cluster(name: &str) -> Any {
    any(&Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        ..Default::default()
    })
}

pub fn listener(route_config: &str, ecds_filter: &str) -> Any {
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: route_config.to_owned(),
            config_source: None,
        })),
        http_filters: vec![
            HttpFilter {
                name: ecds_filter.to_owned(),
                config_type: Some(http_filter::ConfigType::ConfigDiscovery(
                    ExtensionConfigSource::default(),
                )),
                ..Default::default()
            },
            HttpFilter {
                name: "envoy.filters.http.router".to_owned(),
                config_type: Some(http_filter::ConfigType::TypedConfig(Any::default())),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    any(&Listener {
        name: "sluice_http".to_owned(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

pub fn response(
    type_url: &str,
    version: &str,
    nonce: &str,
    resources: Vec<Any>,
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.to_owned(),
        resources,
        type_url: type_url.to_owned(),
        nonce: nonce.to_owned(),
        ..Default::default()
    }
}

/// A leaf resource of a type the client does not decode (EDS, RDS, ECDS).
pub fn opaque(type_url: &str) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: vec![],
    }
}
