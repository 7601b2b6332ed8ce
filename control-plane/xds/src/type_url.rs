//! The xDS resource type URLs Sluice serves.

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// VHDS: one virtual host (a rollout's routes) of a route configuration, delta xDS only.
pub const VIRTUAL_HOST: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";
/// ECDS: the filter's configuration, delivered on the same ADS stream.
pub const EXTENSION_CONFIG: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// Push order that keeps every reference valid: a cluster (and its endpoints) exists before a
/// route points at it; a listener's RDS/ECDS names are served right after the listener.
/// Virtual hosts (VHDS) follow the route configuration that subscribes to them.
pub const PUSH_ORDER: [&str; 6] = [
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    VIRTUAL_HOST,
    EXTENSION_CONFIG,
];
