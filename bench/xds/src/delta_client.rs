//! One simulated Envoy's side of a delta (incremental) ADS stream, as a sans-I/O state machine.
//!
//! It behaves like Envoy 1.40 with `api_type: DELTA_GRPC`: CDS and LDS wildcard, then EDS by the
//! names of the clusters it holds, RDS and ECDS by the names its listener's HTTP connection
//! manager gives, and VHDS (with no names, as Envoy opens it) once a route configuration names
//! VHDS. It keeps what it holds per type (name → version), applies added and removed resources,
//! ACKs every response by nonce and NACKs one whose resources do not decode.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use prost::Message;

use crate::client::{
    AdsClient, CLUSTER, LISTENER, ProtocolError, ROUTE, Reaction, TYPES, VIRTUAL_HOST,
    dependents_of, type_index,
};

/// gRPC status code Envoy puts in a NACK's error_detail.
const INVALID_ARGUMENT: i32 = 3;

/// One subscribed type.
#[derive(Debug, Default)]
struct Subscription {
    names: BTreeSet<String>,
    held: BTreeMap<String, String>,
    responded: bool,
}

/// The state of one simulated delta Envoy's ADS stream.
#[derive(Debug)]
pub struct DeltaAdsClient {
    node: Node,
    node_sent: bool,
    subscriptions: [Option<Subscription>; TYPES.len()],
}

impl DeltaAdsClient {
    /// A client with the node (and scope metadata) of `like`.
    pub fn new(like: &AdsClient) -> Self {
        DeltaAdsClient {
            node: like.node().clone(),
            node_sent: false,
            subscriptions: Default::default(),
        }
    }

    /// The first requests: CDS and LDS, wildcard.
    pub fn start(&mut self) -> Vec<DeltaDiscoveryRequest> {
        [CLUSTER, LISTENER]
            .into_iter()
            .filter_map(|t| self.subscribe(t, &[]))
            .collect()
    }

    /// Every type it subscribed to has answered, and it has the five base types.
    pub fn is_synced(&self) -> bool {
        let answered = |i: usize| self.subscriptions[i].as_ref().is_some_and(|s| s.responded);
        (0..TYPES.len() - 1).all(answered)
            && self.subscriptions[TYPES.len() - 1]
                .as_ref()
                .is_none_or(|s| s.responded)
    }

    /// Handles one response: the ACK or NACK, then any new subscriptions.
    pub fn on_response(
        &mut self,
        response: DeltaDiscoveryResponse,
    ) -> Result<Reaction<DeltaDiscoveryRequest>, ProtocolError> {
        let index = type_index(&response.type_url)
            .filter(|&i| self.subscriptions[i].is_some())
            .ok_or_else(|| ProtocolError::UnexpectedType(response.type_url.clone()))?;
        let type_url = TYPES[index];
        let bodies: Vec<_> = response
            .resources
            .iter()
            .filter_map(|r| r.resource.clone())
            .collect();
        let mut dependents = dependents_of(type_url, bodies.clone());
        if type_url == ROUTE && dependents.is_ok() {
            // A route configuration that names VHDS: Envoy opens VHDS with no names.
            let mut vhds = false;
            for body in &bodies {
                match RouteConfiguration::decode(body.value.as_slice()) {
                    Ok(routes) => vhds |= routes.vhds.is_some(),
                    Err(e) => dependents = Err(format!("RouteConfiguration does not decode: {e}")),
                }
            }
            if let Ok(list) = &mut dependents
                && vhds
            {
                list.push((VIRTUAL_HOST, Vec::new()));
            }
        }
        let node = self.node_once();
        let Some(sub) = self.subscriptions[index].as_mut() else {
            return Err(ProtocolError::UnexpectedType(response.type_url));
        };
        let mut ack = DeltaDiscoveryRequest {
            node,
            type_url: type_url.to_owned(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        };
        let (changed, nack) = match dependents {
            Ok(dependents) => {
                let mut changed = false;
                for resource in response.resources {
                    let old = sub.held.insert(resource.name, resource.version.clone());
                    changed |= old.as_deref() != Some(resource.version.as_str());
                }
                for name in response.removed_resources {
                    changed |= sub.held.remove(&name).is_some();
                }
                let mut requests = vec![ack];
                sub.responded = true;
                // EDS follows the clusters held (not only those in this response).
                let dependents: Vec<(&str, Vec<String>)> = if type_url == CLUSTER {
                    vec![(TYPES[1], sub.held.keys().cloned().collect())]
                } else {
                    dependents
                };
                for (dependent, names) in dependents {
                    requests.extend(self.subscribe(dependent, &names));
                }
                return Ok(Reaction {
                    type_index: index,
                    requests,
                    changed,
                    nack: None,
                });
            }
            Err(message) => (false, Some(message)),
        };
        ack.error_detail = nack.as_ref().map(|message| Status {
            code: INVALID_ARGUMENT,
            message: message.clone(),
            details: Vec::new(),
        });
        Ok(Reaction {
            type_index: index,
            requests: vec![ack],
            changed,
            nack,
        })
    }

    /// Moves a subscription to exactly `names` (empty on CDS/LDS/VHDS: wildcard); the request
    /// announcing the difference, if any.
    fn subscribe(&mut self, type_url: &str, names: &[String]) -> Option<DeltaDiscoveryRequest> {
        let index = type_index(type_url)?;
        let wanted: BTreeSet<String> = names.iter().cloned().collect();
        let first = self.subscriptions[index].is_none();
        let wildcard = type_url == CLUSTER || type_url == LISTENER || type_url == VIRTUAL_HOST;
        if first && wanted.is_empty() && !wildcard {
            return None; // nothing to name yet
        }
        let current = self.subscriptions[index]
            .as_ref()
            .map(|s| s.names.clone())
            .unwrap_or_default();
        if !first && current == wanted {
            return None;
        }
        let node = self.node_once();
        let sub = self.subscriptions[index].get_or_insert_with(Subscription::default);
        let subscribe = wanted.difference(&current).cloned().collect();
        let unsubscribe = current.difference(&wanted).cloned().collect();
        sub.names = wanted;
        Some(DeltaDiscoveryRequest {
            node,
            type_url: type_url.to_owned(),
            resource_names_subscribe: subscribe,
            resource_names_unsubscribe: unsubscribe,
            ..Default::default()
        })
    }

    fn node_once(&mut self) -> Option<Node> {
        if self.node_sent {
            None
        } else {
            self.node_sent = true;
            Some(self.node.clone())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use envoy_types::pb::envoy::config::route::v3::Vhds;
    use envoy_types::pb::envoy::service::discovery::v3::Resource;
    use envoy_types::pb::google::protobuf::Any;
    use prost::Name;

    use super::*;
    use crate::client::{ENDPOINT, EXTENSION_CONFIG};
    use crate::test_support::{eds_cluster, listener, opaque};

    fn response(
        type_url: &str,
        nonce: &str,
        resources: Vec<(&str, &str, Any)>,
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: type_url.into(),
            nonce: nonce.into(),
            resources: resources
                .into_iter()
                .map(|(name, version, body)| Resource {
                    name: name.into(),
                    version: version.into(),
                    resource: Some(body),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn routes(vhds: bool) -> Any {
        let routes = RouteConfiguration {
            name: "sluice_routes".into(),
            vhds: vhds.then(Vhds::default),
            ..Default::default()
        };
        Any {
            type_url: RouteConfiguration::type_url(),
            value: routes.encode_to_vec(),
        }
    }

    #[test]
    fn follows_envoy_from_wildcards_to_vhds_and_counts_only_real_changes() {
        let mut c = DeltaAdsClient::new(&AdsClient::new("d-0", "bench"));
        let start = c.start();
        assert_eq!(start.len(), 2);
        assert!(start[0].node.is_some() && start[1].node.is_none());
        assert!(start.iter().all(|r| r.resource_names_subscribe.is_empty()));

        let r = c
            .on_response(response(
                CLUSTER,
                "1",
                vec![("a", "v1", eds_cluster("a", ""))],
            ))
            .unwrap();
        assert!(r.changed);
        assert_eq!(r.requests[0].response_nonce, "1");
        assert_eq!(r.requests[1].type_url, ENDPOINT);
        assert_eq!(r.requests[1].resource_names_subscribe, ["a"]);
        c.on_response(response(ENDPOINT, "2", vec![("a", "e1", opaque(ENDPOINT))]))
            .unwrap();
        let r = c
            .on_response(response(
                LISTENER,
                "3",
                vec![("l", "l1", listener("sluice_routes", "sluice"))],
            ))
            .unwrap();
        let subscribed: Vec<&str> = r.requests[1..]
            .iter()
            .map(|q| q.type_url.as_str())
            .collect();
        assert_eq!(subscribed, [ROUTE, EXTENSION_CONFIG]);
        c.on_response(response(
            EXTENSION_CONFIG,
            "4",
            vec![("sluice", "x1", opaque(EXTENSION_CONFIG))],
        ))
        .unwrap();
        assert!(!c.is_synced(), "RDS has not answered");
        let r = c
            .on_response(response(
                ROUTE,
                "5",
                vec![("sluice_routes", "r1", routes(true))],
            ))
            .unwrap();
        assert_eq!(r.requests[1].type_url, VIRTUAL_HOST);
        assert!(r.requests[1].resource_names_subscribe.is_empty());
        assert!(!c.is_synced(), "VHDS has not answered");
        let host = || opaque(VIRTUAL_HOST);
        let r = c
            .on_response(response(
                VIRTUAL_HOST,
                "6",
                vec![("sluice_routes/a", "h1", host())],
            ))
            .unwrap();
        assert!(r.changed && c.is_synced());
        // The same version again is no change; a removal is.
        let r = c
            .on_response(response(
                VIRTUAL_HOST,
                "7",
                vec![("sluice_routes/a", "h1", host())],
            ))
            .unwrap();
        assert!(!r.changed);
        let mut removal = response(VIRTUAL_HOST, "8", Vec::new());
        removal.removed_resources = vec!["sluice_routes/a".into()];
        assert!(c.on_response(removal).unwrap().changed);
        // A type it never subscribed to is an error.
        let mut fresh = DeltaAdsClient::new(&AdsClient::new("d-1", "bench"));
        fresh.start();
        assert!(fresh.on_response(response(ROUTE, "1", Vec::new())).is_err());
    }
}
