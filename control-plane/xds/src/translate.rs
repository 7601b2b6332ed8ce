//! `TrafficState` → `Snapshot`: the pure translation of the traffic model into Envoy resources.
//!
//! ```text
//!  rollout "ns/app" { hosts, versions {hash → endpoints}, stable, canary, weight }
//!        │
//!        ├─► CDS  cluster "ns/app/<hash>" per live version (type EDS, over ADS)
//!        ├─► EDS  ClusterLoadAssignment "ns/app/<hash>": that version's ready endpoints
//!        ├─► RDS  "sluice_routes": virtual host "ns/app" { domains: host, "host:" }
//!        │          routes: <routing header> == <hash> → "ns/app/<hash>"   (one per live version)
//!        │                  fallback → weighted_clusters {stable: 10000−w, canary: w}
//!        │        virtual host "ns/app/preview" { preview hosts } → "ns/app/<preview hash>"
//!        │          (blue/green, see `preview`)
//!        │        last virtual host "*" → 404 "no rollout for this host"
//!        ├─► LDS  "sluice_http": HTTP connection manager, RDS "sluice_routes",
//!        │          http_filters [ "sluice" (ECDS), router ]
//!        │        (delta-xDS Envoys: the same virtual hosts one resource each, VHDS: [`vhds`])
//!        └─► ECDS "sluice": the Wasm filter, its plugin configuration = the rendered
//!                   `sluice.v1.FilterPolicy` as binary protobuf in a BytesValue
//! ```
//!
//! The filter writes the routing header when a header route picks a version (Envoy's router then
//! matches the per-version route), and otherwise the request's bucket in `x-sluice-bucket`, from
//! which the weighted route picks the version: the weights live in the routes only, so a weight
//! change does not change the filter's configuration ([`BUCKET_HEADER`]). Without the filter (absent, or failed open) the weighted fallback still
//! splits traffic. The routing header is removed from upstream requests by the route
//! configuration (`request_headers_to_remove` is applied by the router after the route is chosen,
//! so it does not affect routing).

#[cfg(test)]
mod additional_tests;
mod build;
mod cache;
mod consistency;
#[cfg(test)]
mod envoy_check;
mod mirror;
mod native;
mod preview;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
pub mod vhds;

use std::net::SocketAddr;

use envoy_types::pb::google::protobuf::{Struct, value::Kind};
use prost::Message as _;
use sluice_model::{RolloutState, TrafficState, validate::is_valid_header_name};

use crate::snapshot::{Resource, Snapshot};

pub use cache::Translator;
pub use consistency::check_consistent;
pub use native::{
    FILTER_METADATA_KEY, FilterBuild, NATIVE_MODULE_NAME, NativeSource, for_node,
    native_extension_config,
};
pub use preview::preview_name;

/// Name of the one route configuration (RDS).
pub const ROUTE_CONFIG_NAME: &str = "sluice_routes";
/// Name of the one listener (LDS).
pub const LISTENER_NAME: &str = "sluice_http";
/// Name of the filter's extension config (ECDS), and of the HTTP filter that loads it.
pub const FILTER_CONFIG_NAME: &str = "sluice";
/// The request header in which the filter hands the request's bucket (`0..10000`, its sticky
/// key's or a random one) to the weighted route, which applies the canary weight to it.
pub const BUCKET_HEADER: &str = "x-sluice-bucket";
/// Node metadata key that overrides the listener address for one Envoy ("ip:port").
pub const LISTENER_METADATA_KEY: &str = "sluice.listener";
/// Default listener address.
pub const DEFAULT_LISTENER_ADDRESS: &str = "0.0.0.0:10000";

/// Errors of the xDS layer's translation.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// The traffic state is invalid; it is never translated (the last good snapshot keeps
    /// serving).
    #[error(transparent)]
    InvalidState(#[from] sluice_model::ModelError),
    /// A translation option Envoy would reject.
    #[error("translate options: {field}: {reason}")]
    InvalidOption { field: &'static str, reason: String },
    /// A snapshot references a resource it does not contain (or holds one nothing references).
    #[error("inconsistent snapshot: {resource}: {reason}")]
    Inconsistent { resource: String, reason: String },
    /// A snapshot resource's body does not decode as its type.
    #[error("{type_url} \"{name}\": cannot decode: {source}")]
    Decode {
        type_url: String,
        name: String,
        #[source]
        source: prost::DecodeError,
    },
}

/// Where Envoy loads the filter's Wasm module from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WasmSource {
    /// A file on the Envoy's machine.
    Local { path: String },
    /// Fetched by Envoy over HTTP through `cluster` (defined in its bootstrap), checked against
    /// `sha256` (hex).
    Remote {
        uri: String,
        cluster: String,
        sha256: String,
    },
}

/// Knobs of the translation that are not part of the traffic model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateOptions {
    /// Where the listener binds unless a node overrides it (see [`listener_for_node`]).
    pub listener_address: SocketAddr,
    /// The internal request header carrying the chosen hash from the filter to the router.
    pub routing_header: String,
    pub wasm: WasmSource,
    /// Where Envoys that run the native build (node metadata `sluice.filter: native`) load it.
    pub native: NativeSource,
}

impl TranslateOptions {
    /// Options with the default listener address and routing header.
    pub fn new(wasm: WasmSource) -> Self {
        TranslateOptions {
            listener_address: SocketAddr::from(([0, 0, 0, 0], 10_000)),
            routing_header: sluice_proto::DEFAULT_ROUTING_HEADER.to_owned(),
            wasm,
            native: NativeSource::default(),
        }
    }
}

/// Translates the whole traffic state into one consistent snapshot.
///
/// Validates the state first (`TrafficState::validate`): an invalid state (a host served twice, a
/// stable hash without a version, ...) would be NACKed by Envoy or leave dangling references, so
/// it is rejected here with the rollout and field at fault.
pub fn translate(state: &TrafficState, options: &TranslateOptions) -> Result<Snapshot, XdsError> {
    state.validate()?;
    check_options(options)?;
    let mut snapshot = Snapshot::default();
    for rollout in state.rollouts.values() {
        for (hash, version) in &rollout.versions {
            let name = cluster_name(rollout, hash);
            snapshot.insert(Resource::new(&name, build::cluster(&name)));
            snapshot.insert(Resource::new(&name, build::load_assignment(&name, version)));
        }
    }
    snapshot.insert(Resource::new(
        ROUTE_CONFIG_NAME,
        build::route_configuration(state, &options.routing_header),
    ));
    snapshot.insert(listener(options.listener_address));
    let mut policy = sluice_model::policy::render(state, &options.routing_header);
    without_weights(&mut policy);
    snapshot.insert(Resource::new(
        FILTER_CONFIG_NAME,
        build::filter_config(&policy.encode_to_vec(), &options.wasm),
    ));
    snapshot.delta_routes = Some(vhds::delta_routes(state, &options.routing_header));
    snapshot.source = Some(std::sync::Arc::new(state.clone()));
    Ok(snapshot)
}

/// Options Envoy would reject (or the filter would misread) are errors.
fn check_options(options: &TranslateOptions) -> Result<(), XdsError> {
    let header = &options.routing_header;
    if !is_valid_header_name(header) || header.starts_with(':') {
        return Err(XdsError::InvalidOption {
            field: "routing_header",
            reason: format!("{header:?} is not a lower-case HTTP header name"),
        });
    }
    // The filter's own rule for the pair (`sluice_proto::rules`), so the two cannot drift.
    sluice_proto::rules::check_bucket_header(BUCKET_HEADER, header).map_err(|v| {
        XdsError::InvalidOption {
            field: "routing_header",
            reason: v.to_string(),
        }
    })
}

/// The policy as the filter gets it: weights in the routes, so the policy leaves them out, a
/// weight change is an RDS change only and the filter's plugin configuration stays the same
/// (Envoy keeps state for every distinct plugin configuration it is given; issue 7 §5,
/// bench/README.md).
fn without_weights(policy: &mut sluice_proto::v1::FilterPolicy) {
    policy.bucket_header = BUCKET_HEADER.to_owned();
    for rollout in &mut policy.rollouts {
        rollout.canary_weight_bp = 0;
        // The route applies the additional versions' weights too (canary, stable, additional…).
        rollout.additional_weights.clear();
    }
    policy.schema_version = sluice_model::policy::schema_version(&policy.rollouts);
}

/// The listener for one Envoy: bound to its node metadata's `sluice.listener` ("ip:port") when
/// present and valid, else to the options' address. Lets several Envoys share a machine.
pub fn listener_for_node(options: &TranslateOptions, node_metadata: Option<&Struct>) -> Resource {
    let wanted = node_metadata.and_then(|m| m.fields.get(LISTENER_METADATA_KEY));
    let address = match wanted.and_then(|v| v.kind.as_ref()) {
        None => options.listener_address,
        Some(Kind::StringValue(s)) => match s.parse::<SocketAddr>() {
            Ok(address) => address,
            Err(e) => {
                tracing::warn!(
                    value = %s,
                    error = %e,
                    "node metadata {LISTENER_METADATA_KEY}: not an ip:port; using the default listener address"
                );
                options.listener_address
            }
        },
        Some(other) => {
            tracing::warn!(
                value = ?other,
                "node metadata {LISTENER_METADATA_KEY}: not a string; using the default listener address"
            );
            options.listener_address
        }
    };
    listener(address)
}

/// The name of the cluster (and endpoint assignment) of one version: `<namespace>/<name>/<hash>`.
pub fn cluster_name(rollout: &RolloutState, hash: &str) -> String {
    format!("{}/{}", rollout.name, hash)
}

fn listener(address: SocketAddr) -> Resource {
    Resource::new(LISTENER_NAME, build::listener(address))
}
