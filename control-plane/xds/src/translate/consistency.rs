//! Snapshot consistency: every reference between resources resolves, and every EDS, RDS and
//! ECDS resource is referenced (as go-control-plane's `Snapshot::Consistent`). Envoy would
//! otherwise wait forever for a missing resource (warming) or route to a cluster that is not there.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::{
    cluster::v3::{
        Cluster,
        cluster::{ClusterDiscoveryType, DiscoveryType},
    },
    core::v3::TypedExtensionConfig,
    endpoint::v3::ClusterLoadAssignment,
    listener::v3::{Listener, filter},
    route::v3::{RouteConfiguration, route, route_action},
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
};
use prost::{Message, Name};

use super::XdsError;
use crate::{
    snapshot::{Resource, Snapshot},
    type_url,
};

/// Checks that `snapshot` is self-contained; the error names the resource and the dangling name.
pub fn check_consistent(snapshot: &Snapshot) -> Result<(), XdsError> {
    let mut eds_wanted = BTreeSet::new();
    for resource in snapshot.of_type(type_url::CLUSTER) {
        let cluster: Cluster = decode(resource)?;
        same_name(resource, &cluster.name)?;
        if cluster.cluster_discovery_type
            == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        {
            let service = cluster
                .eds_cluster_config
                .as_ref()
                .map(|eds| eds.service_name.as_str())
                .filter(|name| !name.is_empty())
                .unwrap_or(&cluster.name);
            require(snapshot, type_url::ENDPOINT, service, resource)?;
            eds_wanted.insert(service.to_owned());
        }
    }
    for resource in snapshot.of_type(type_url::ENDPOINT) {
        let assignment: ClusterLoadAssignment = decode(resource)?;
        same_name(resource, &assignment.cluster_name)?;
        unreferenced(resource, &eds_wanted, "no EDS cluster")?;
    }

    for resource in snapshot.of_type(type_url::ROUTE) {
        let config: RouteConfiguration = decode(resource)?;
        same_name(resource, &config.name)?;
        for virtual_host in &config.virtual_hosts {
            for route in &virtual_host.routes {
                let Some(route::Action::Route(action)) = &route.action else {
                    continue;
                };
                match &action.cluster_specifier {
                    Some(route_action::ClusterSpecifier::Cluster(name)) => {
                        require(snapshot, type_url::CLUSTER, name, resource)?;
                    }
                    Some(route_action::ClusterSpecifier::WeightedClusters(weighted)) => {
                        for cluster in &weighted.clusters {
                            require(snapshot, type_url::CLUSTER, &cluster.name, resource)?;
                        }
                    }
                    // Chosen per request (cluster_header, plugins): nothing to resolve here.
                    _ => {}
                }
            }
        }
    }

    let mut rds_wanted = BTreeSet::new();
    let mut ecds_wanted = BTreeSet::new();
    for resource in snapshot.of_type(type_url::LISTENER) {
        let listener: Listener = decode(resource)?;
        same_name(resource, &listener.name)?;
        let filters = listener
            .filter_chains
            .iter()
            .chain(listener.default_filter_chain.as_ref())
            .flat_map(|chain| &chain.filters);
        for network_filter in filters {
            let Some(filter::ConfigType::TypedConfig(any)) = &network_filter.config_type else {
                continue;
            };
            if any.type_url != HttpConnectionManager::type_url() {
                continue;
            }
            let hcm = HttpConnectionManager::decode(any.value.as_slice()).map_err(|source| {
                XdsError::Decode {
                    type_url: any.type_url.clone(),
                    name: format!("{} (in listener {})", network_filter.name, resource.name),
                    source,
                }
            })?;
            if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                require(snapshot, type_url::ROUTE, &rds.route_config_name, resource)?;
                rds_wanted.insert(rds.route_config_name.clone());
            }
            for http in &hcm.http_filters {
                if let Some(http_filter::ConfigType::ConfigDiscovery(_)) = &http.config_type {
                    require(snapshot, type_url::EXTENSION_CONFIG, &http.name, resource)?;
                    ecds_wanted.insert(http.name.clone());
                }
            }
        }
    }
    for resource in snapshot.of_type(type_url::ROUTE) {
        unreferenced(resource, &rds_wanted, "no listener")?;
    }
    for resource in snapshot.of_type(type_url::EXTENSION_CONFIG) {
        let config: TypedExtensionConfig = decode(resource)?;
        same_name(resource, &config.name)?;
        unreferenced(resource, &ecds_wanted, "no listener's HTTP filter")?;
    }
    Ok(())
}

fn decode<M: Message + Name + Default>(resource: &Resource) -> Result<M, XdsError> {
    M::decode(resource.body.value.as_slice()).map_err(|source| XdsError::Decode {
        type_url: resource.body.type_url.clone(),
        name: resource.name.clone(),
        source,
    })
}

fn describe(resource: &Resource) -> String {
    let kind = resource
        .body
        .type_url
        .rsplit('.')
        .next()
        .unwrap_or(&resource.body.type_url);
    format!("{kind} \"{}\"", resource.name)
}

fn require(snapshot: &Snapshot, type_url: &str, name: &str, by: &Resource) -> Result<(), XdsError> {
    if snapshot.get(type_url, name).is_some() {
        return Ok(());
    }
    let kind = type_url.rsplit('.').next().unwrap_or(type_url);
    Err(XdsError::Inconsistent {
        resource: describe(by),
        reason: format!("references {kind} \"{name}\", which the snapshot does not contain"),
    })
}

fn same_name(resource: &Resource, inner: &str) -> Result<(), XdsError> {
    if resource.name == inner {
        return Ok(());
    }
    Err(XdsError::Inconsistent {
        resource: describe(resource),
        reason: format!("its body is named \"{inner}\""),
    })
}

fn unreferenced(resource: &Resource, wanted: &BTreeSet<String>, by: &str) -> Result<(), XdsError> {
    if wanted.contains(&resource.name) {
        return Ok(());
    }
    Err(XdsError::Inconsistent {
        resource: describe(resource),
        reason: format!("{by} references it"),
    })
}
