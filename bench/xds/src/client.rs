//! One simulated Envoy's side of a state-of-the-world ADS stream, as a sans-I/O state machine.
//!
//! It behaves like Envoy: subscribes to CDS and LDS (wildcard), then to the endpoints (EDS) of
//! the clusters it receives, and to the route configuration (RDS) and filter configuration (ECDS)
//! that its listener's HTTP connection manager names. It ACKs every response with its version
//! and nonce, and NACKs one whose resources do not decode. The I/O task feeds it responses and
//! sends the requests it returns.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::{
    cluster::v3::{
        Cluster,
        cluster::{ClusterDiscoveryType, DiscoveryType},
    },
    core::v3::Node,
    listener::v3::{Filter, Listener, filter},
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf as prost_types_any;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status;
use prost::{Message, Name};

pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const EXTENSION_CONFIG: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
/// VHDS: delta clients only (see [`crate::delta_client`]).
pub const VIRTUAL_HOST: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";

/// Every type a client subscribes to; a type's index here is its bit in a [`TypeSet`]. A
/// state-of-the-world client uses all but the last.
pub const TYPES: [&str; 6] = [
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    EXTENSION_CONFIG,
    VIRTUAL_HOST,
];
/// The types of a state-of-the-world client.
const SOTW_TYPES: usize = 5;

/// A set of types, bit `i` standing for `TYPES[i]`.
pub type TypeSet = u8;

/// Index of a type URL in [`TYPES`].
pub fn type_index(type_url: &str) -> Option<usize> {
    TYPES.iter().position(|t| *t == type_url)
}

/// Short names of the types in a set, for messages ("RouteConfiguration+TypedExtensionConfig").
pub fn type_names(set: TypeSet) -> String {
    let names: Vec<&str> = TYPES
        .iter()
        .enumerate()
        .filter(|(i, _)| set & (1 << i) != 0)
        .map(|(_, t)| t.rsplit('.').next().unwrap_or(t))
        .collect();
    names.join("+")
}

/// Node metadata key of a node's scope (`sluice_xds::scope::SCOPE_METADATA_KEY`).
pub const SCOPE_METADATA_KEY: &str = "sluice.scope";

/// gRPC status code Envoy puts in a NACK's error_detail.
const INVALID_ARGUMENT: i32 = 3;

/// A response the client cannot act on at all (as opposed to one it NACKs).
#[derive(Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// The server sent a type this client never subscribed to.
    UnexpectedType(String),
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::UnexpectedType(t) => {
                write!(f, "response of type {t:?}, which was never subscribed")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// What the client did with one response.
#[derive(Debug, PartialEq)]
pub struct Reaction<R = DiscoveryRequest> {
    /// Index in [`TYPES`] of the response's type.
    pub type_index: usize,
    /// The ACK or NACK, then any subscription changes it caused, in sending order.
    pub requests: Vec<R>,
    /// The response was accepted and its version differs from the one held before.
    pub changed: bool,
    /// Why the response was NACKed, if it was.
    pub nack: Option<String>,
}

/// One subscribed type: the names asked for (empty = wildcard on CDS/LDS) and the last response.
#[derive(Debug, Default)]
struct Subscription {
    names: Vec<String>,
    /// Version of the last accepted response (empty before the first).
    version: String,
    /// Nonce of the last response, accepted or not.
    nonce: String,
}

/// The state of one simulated Envoy's ADS stream.
#[derive(Debug)]
pub struct AdsClient {
    node: Node,
    node_sent: bool,
    subscriptions: [Option<Subscription>; SOTW_TYPES],
}

impl AdsClient {
    pub fn new(node_id: &str, node_cluster: &str) -> Self {
        AdsClient {
            node: Node {
                id: node_id.to_owned(),
                cluster: node_cluster.to_owned(),
                ..Default::default()
            },
            node_sent: false,
            subscriptions: Default::default(),
        }
    }

    /// A client that declares the rollouts it needs (node metadata `sluice.scope`, as
    /// `sluice bootstrap --scope` writes it).
    pub fn scoped(node_id: &str, node_cluster: &str, scope: &[String]) -> Self {
        let mut client = AdsClient::new(node_id, node_cluster);
        let values = scope
            .iter()
            .map(|entry| Value {
                kind: Some(Kind::StringValue(entry.clone())),
            })
            .collect();
        client.node.metadata = Some(Struct {
            fields: [(
                SCOPE_METADATA_KEY.to_owned(),
                Value {
                    kind: Some(Kind::ListValue(ListValue { values })),
                },
            )]
            .into(),
        });
        client
    }

    /// The node this client announces.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The first requests of the stream: CDS and LDS, wildcard.
    pub fn start(&mut self) -> Vec<DiscoveryRequest> {
        [CLUSTER, LISTENER]
            .into_iter()
            .filter_map(|t| self.subscribe(t, Vec::new()))
            .collect()
    }

    /// Every type is subscribed and has an accepted version: the client holds a full config.
    pub fn is_synced(&self) -> bool {
        self.subscriptions
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| !s.version.is_empty()))
    }

    /// The accepted version of a type, if any.
    #[cfg(test)]
    pub fn version(&self, type_url: &str) -> Option<&str> {
        let sub = self.subscriptions.get(type_index(type_url)?)?.as_ref()?;
        (!sub.version.is_empty()).then_some(sub.version.as_str())
    }

    /// Handles one response: returns the ACK or NACK and any new subscriptions.
    pub fn on_response(&mut self, response: DiscoveryResponse) -> Result<Reaction, ProtocolError> {
        let index = type_index(&response.type_url)
            .filter(|&i| self.subscriptions.get(i).is_some_and(Option::is_some))
            .ok_or_else(|| ProtocolError::UnexpectedType(response.type_url.clone()))?;
        let type_url = TYPES[index];
        let dependents = dependent_names(type_url, &response);

        let node = self.node_once();
        let Some(sub) = self.subscriptions[index].as_mut() else {
            return Err(ProtocolError::UnexpectedType(response.type_url));
        };
        sub.nonce = response.nonce.clone();
        let mut requests = Vec::new();
        let (changed, nack) = match dependents {
            Ok(dependents) => {
                let changed = sub.version != response.version_info;
                sub.version = response.version_info;
                requests.push(request(type_url, sub, node, None));
                for (dependent, names) in dependents {
                    requests.extend(self.subscribe(dependent, names));
                }
                (changed, None)
            }
            Err(message) => {
                // Envoy keeps the last good version and reports the error.
                let status = Status {
                    code: INVALID_ARGUMENT,
                    message: message.clone(),
                    details: Vec::new(),
                };
                requests.push(request(type_url, sub, node, Some(status)));
                (false, Some(message))
            }
        };
        Ok(Reaction {
            type_index: index,
            requests,
            changed,
            nack,
        })
    }

    /// Sets the names of a subscription; returns the request announcing it, if anything changed.
    fn subscribe(
        &mut self,
        type_url: &'static str,
        names: Vec<String>,
    ) -> Option<DiscoveryRequest> {
        let index = type_index(type_url).filter(|&i| i < SOTW_TYPES)?;
        let current = self.subscriptions[index].as_ref();
        if current.is_some_and(|s| s.names == names) {
            return None;
        }
        // Named types with nothing to name are not subscribed yet (Envoy would not ask either).
        if current.is_none() && names.is_empty() && type_url != CLUSTER && type_url != LISTENER {
            return None;
        }
        let node = self.node_once();
        let sub = self.subscriptions[index].get_or_insert_with(Subscription::default);
        sub.names = names;
        Some(request(type_url, sub, node, None))
    }

    /// The node goes in the stream's first request only, as Envoy sends it.
    fn node_once(&mut self) -> Option<Node> {
        if self.node_sent {
            None
        } else {
            self.node_sent = true;
            Some(self.node.clone())
        }
    }
}

fn request(
    type_url: &str,
    sub: &Subscription,
    node: Option<Node>,
    error_detail: Option<Status>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: sub.version.clone(),
        node,
        resource_names: sub.names.clone(),
        type_url: type_url.to_owned(),
        response_nonce: sub.nonce.clone(),
        error_detail,
        ..Default::default()
    }
}

/// The subscriptions a response of `type_url` with these resources implies: see
/// [`dependent_names`].
pub(crate) fn dependents_of(
    type_url: &str,
    resources: Vec<prost_types_any::Any>,
) -> Result<Vec<(&'static str, Vec<String>)>, String> {
    dependent_names(
        type_url,
        &DiscoveryResponse {
            type_url: type_url.to_owned(),
            resources,
            ..Default::default()
        },
    )
}

/// The subscriptions a response implies (CDS → EDS names, LDS → RDS and ECDS names), each as a
/// sorted name list; an error when a resource does not decode as the response's type.
pub(crate) fn dependent_names(
    type_url: &str,
    response: &DiscoveryResponse,
) -> Result<Vec<(&'static str, Vec<String>)>, String> {
    for resource in &response.resources {
        if resource.type_url != type_url {
            return Err(format!(
                "resource of type {:?} in a {type_url} response",
                resource.type_url
            ));
        }
    }
    match type_url {
        CLUSTER => {
            let mut endpoints = BTreeSet::new();
            for resource in &response.resources {
                let cluster = Cluster::decode(resource.value.as_slice())
                    .map_err(|e| format!("Cluster does not decode: {e}"))?;
                let eds = matches!(
                    cluster.cluster_discovery_type,
                    Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32
                );
                if eds {
                    let service = cluster
                        .eds_cluster_config
                        .map(|c| c.service_name)
                        .filter(|s| !s.is_empty());
                    endpoints.insert(service.unwrap_or(cluster.name));
                }
            }
            Ok(vec![(ENDPOINT, endpoints.into_iter().collect())])
        }
        LISTENER => {
            let mut routes = BTreeSet::new();
            let mut extensions = BTreeSet::new();
            for resource in &response.resources {
                let listener = Listener::decode(resource.value.as_slice())
                    .map_err(|e| format!("Listener does not decode: {e}"))?;
                let filters = listener
                    .filter_chains
                    .iter()
                    .chain(listener.default_filter_chain.as_ref())
                    .flat_map(|chain| &chain.filters);
                for hcm in filters.filter_map(http_connection_manager) {
                    let hcm = hcm.map_err(|e| {
                        format!(
                            "listener {:?}: HttpConnectionManager does not decode: {e}",
                            listener.name
                        )
                    })?;
                    if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                        routes.insert(rds.route_config_name);
                    }
                    for http_filter in hcm.http_filters {
                        if let Some(http_filter::ConfigType::ConfigDiscovery(_)) =
                            http_filter.config_type
                        {
                            extensions.insert(http_filter.name);
                        }
                    }
                }
            }
            Ok(vec![
                (ROUTE, routes.into_iter().collect()),
                (EXTENSION_CONFIG, extensions.into_iter().collect()),
            ])
        }
        _ => Ok(Vec::new()),
    }
}

/// The HTTP connection manager configured on a network filter, if it is one.
fn http_connection_manager(
    f: &Filter,
) -> Option<Result<HttpConnectionManager, prost::DecodeError>> {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any))
            if any.type_url == HttpConnectionManager::type_url() =>
        {
            Some(HttpConnectionManager::decode(any.value.as_slice()))
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
