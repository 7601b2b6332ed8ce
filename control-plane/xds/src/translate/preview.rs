//! Blue/green preview hosts (see `sluice_model::preview`) as Envoy routes: one virtual host per
//! rollout with a preview, its domains the preview hosts, one route to the preview version's
//! cluster. No routing-header match: the filter does not serve these hosts, and a client-sent
//! routing header must not pick another version (the route configuration removes it upstream).
//!
//! ```text
//!  virtual host "ns/app/preview" { domains: preview hosts, "host:" }
//!      route "ns/app/preview" (prefix "/") → cluster "ns/app/<preview hash>"
//! ```
//!
//! The switch at promotion is the active virtual host's clusters changing in the same route
//! configuration: one RDS push moves the active hosts and the preview hosts together.

use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteMatch, VirtualHost, route, route_action, route_match,
};
use sluice_model::RolloutState;
use sluice_proto::rules;

use super::cluster_name;

/// The name of a rollout's preview virtual host (and of its one route).
pub fn preview_name(rollout: &RolloutState) -> String {
    format!("{}/preview", rollout.name)
}

/// The preview virtual host of `rollout`, if it has preview hosts.
pub(super) fn virtual_host(rollout: &RolloutState) -> Option<VirtualHost> {
    let preview = rollout.preview.as_ref()?;
    let name = preview_name(rollout);
    Some(VirtualHost {
        name: name.clone(),
        domains: preview
            .hosts
            .iter()
            .flat_map(|host| rules::route_domains(host))
            .collect(),
        routes: vec![Route {
            name,
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster_name(
                    rollout,
                    &preview.hash,
                ))),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    })
}

#[cfg(test)]
#[path = "preview_tests.rs"]
pub(super) mod tests;
