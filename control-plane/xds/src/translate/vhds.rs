//! The routes for delta-xDS Envoys: one resource per rollout (VHDS), so a weight change sends
//! what changed.
//!
//! ```text
//!  RDS  "sluice_routes" { virtual_hosts: ["*" → 404], vhds: ADS }   unchanged by weight changes
//!  VHDS "sluice_routes/ns%2Fapp"  VirtualHost of rollout "ns/app"   one per rollout
//! ```
//!
//! Envoy subscribes to VHDS with the route configuration's name and namespace matching: every
//! virtual host named `<route configuration>/<anything without '/'>` is pushed to it without
//! being asked for by name (no on-demand filter needed). The resource name is also the virtual
//! host's `name` (Envoy keys the virtual hosts it holds, and removals, by it). VHDS needs delta
//! xDS; state-of-the-world Envoys keep the whole route configuration. Why VHDS rather than scoped
//! routes or a weights resource: README "Control plane at scale".

use envoy_types::pb::envoy::config::route::v3::Vhds;
use std::sync::Arc;

use sluice_model::{RolloutState, TrafficState};

use super::ROUTE_CONFIG_NAME;
use super::build::{ads, route_configuration_with, to_any, virtual_host};
use crate::snapshot::{DeltaRoutes, Resource};

/// The VHDS resource (and virtual host) name of a rollout: `sluice_routes/<rollout>`, with `%`
/// and `/` percent-encoded (Envoy matches the namespace up to the last `/`).
pub fn virtual_host_name(rollout: &str) -> String {
    let escaped = rollout.replace('%', "%25").replace('/', "%2F");
    format!("{ROUTE_CONFIG_NAME}/{escaped}")
}

/// The route configuration naming VHDS, and each rollout's virtual host.
pub(super) fn delta_routes(state: &TrafficState, routing_header: &str) -> DeltaRoutes {
    DeltaRoutes {
        routes: std::iter::once(Arc::new(route_configuration(routing_header))).collect(),
        virtual_hosts: state
            .rollouts
            .values()
            .flat_map(|rollout| rollout_virtual_hosts(rollout, routing_header))
            .map(Arc::new)
            .collect(),
    }
}

/// The route configuration delta Envoys get: the catch-all virtual host, and VHDS over ADS.
pub(super) fn route_configuration(routing_header: &str) -> Resource {
    let mut routes = route_configuration_with(Vec::new(), routing_header);
    routes.vhds = Some(Vhds {
        config_source: Some(ads()),
    });
    Resource::new(ROUTE_CONFIG_NAME, to_any(&routes))
}

/// One rollout's VHDS resources: its virtual host, then its preview's if it has one.
pub(super) fn rollout_virtual_hosts(
    rollout: &RolloutState,
    routing_header: &str,
) -> impl Iterator<Item = Resource> {
    let mut host = virtual_host(rollout, routing_header);
    host.name = virtual_host_name(&rollout.name);
    // A blue/green preview is a virtual host of its own (`<rollout>/preview`: two slashes, so
    // no rollout's name).
    let preview = super::preview::virtual_host(rollout).map(|mut preview| {
        preview.name = virtual_host_name(&format!("{}/preview", rollout.name));
        preview
    });
    std::iter::once(host)
        .chain(preview)
        .map(|host| Resource::new(&host.name, to_any(&host)))
}

#[cfg(test)]
mod tests;
