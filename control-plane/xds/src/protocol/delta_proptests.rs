//! The delta protocol against a model of Envoy, over random publications, interleavings and
//! reconnects: make-before-break holds at every step, the client ends with exactly the
//! snapshot, and a stream in step with it shares the snapshot's sets.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, VirtualHost, route, route_action,
};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use proptest::prelude::*;
use prost::Message;

use super::delta::RESPONSE_BUDGET_BYTES;
use super::test_support::{FILTER_NAME, ROUTE_NAME, snapshot};
use super::{DeltaConnection, DeltaResponse};
use crate::snapshot::{Resource, Snapshot};
use crate::type_url::{CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE, VIRTUAL_HOST};

const CLUSTERS: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Clone, Debug)]
enum Step {
    /// A new snapshot: these clusters, endpoints on this port, routes with this tag.
    Publish(Vec<&'static str>, u32, &'static str),
    /// Envoy applies the oldest response it has not read yet.
    Deliver,
    /// The stream breaks; Envoy reconnects reporting what it holds.
    Reconnect,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (
            proptest::sample::subsequence(CLUSTERS.to_vec(), 1..=CLUSTERS.len()),
            prop_oneof![Just(8080u32), Just(9090)],
            prop_oneof![Just("r1"), Just("r2")],
        )
            .prop_map(|(clusters, port, tag)| Step::Publish(clusters, port, tag)),
        5 => Just(Step::Deliver),
        1 => Just(Step::Reconnect),
    ]
}

/// What an Envoy holds and how it answers: it ACKs every response, then subscribes to the
/// endpoints of the clusters it holds and unsubscribes from those of clusters it dropped.
#[derive(Default)]
struct Envoy {
    /// The server's response budget: every response carries one resource or fits in it.
    budget: usize,
    held: BTreeMap<&'static str, BTreeMap<String, Arc<Resource>>>,
    endpoint_names: BTreeSet<String>,
    unread: VecDeque<DeltaResponse>,
}

impl Envoy {
    fn request(type_url: &str, subscribe: Vec<String>) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_subscribe: subscribe,
            ..Default::default()
        }
    }

    /// Opens the stream: every type, with what it holds as initial versions.
    fn connect(&mut self, conn: &mut DeltaConnection) {
        self.unread.clear();
        let opening = [
            (CLUSTER, Vec::new()),
            (LISTENER, Vec::new()),
            (ENDPOINT, self.endpoint_names.iter().cloned().collect()),
            (ROUTE, vec![ROUTE_NAME.to_string()]),
            (VIRTUAL_HOST, Vec::new()),
            (EXTENSION_CONFIG, vec![FILTER_NAME.to_string()]),
        ];
        for (type_url, names) in opening {
            let mut request = Self::request(type_url, names);
            request.initial_resource_versions = self
                .held
                .get(type_url)
                .into_iter()
                .flatten()
                .map(|(name, r)| (name.clone(), r.version.clone()))
                .collect();
            // Envoy opens EDS once it holds clusters; an empty opening would be a wildcard.
            if type_url == ENDPOINT && request.resource_names_subscribe.is_empty() {
                continue;
            }
            self.send(conn, request);
        }
    }

    fn send(&mut self, conn: &mut DeltaConnection, request: DeltaDiscoveryRequest) {
        self.unread.extend(conn.on_delta_request(request));
    }

    /// Applies the oldest unread response and answers it; false when there was none.
    fn deliver(&mut self, conn: &mut DeltaConnection) -> Result<bool, TestCaseError> {
        let Some(response) = self.unread.pop_front() else {
            return Ok(false);
        };
        let bytes: usize = response
            .resources
            .iter()
            .map(|r| super::wire::delta_resource_encoded_len(r))
            .sum();
        prop_assert!(
            response.resources.len() <= 1 || bytes <= self.budget,
            "{} resources, {bytes} bytes, over the budget of {}",
            response.resources.len(),
            self.budget
        );
        let type_url = crate::type_url::PUSH_ORDER
            .iter()
            .copied()
            .find(|t| *t == response.type_url)
            .expect("a served type");
        let held = self.held.entry(type_url).or_default();
        for resource in &response.resources {
            held.insert(resource.name.clone(), resource.clone());
        }
        for name in &response.removed_resources {
            held.remove(name);
        }
        self.send(
            conn,
            DeltaDiscoveryRequest {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce.clone(),
                ..Default::default()
            },
        );
        if type_url == CLUSTER {
            let clusters: BTreeSet<String> = self.held[CLUSTER].keys().cloned().collect();
            let added: Vec<String> = clusters.difference(&self.endpoint_names).cloned().collect();
            let dropped: Vec<String> = self.endpoint_names.difference(&clusters).cloned().collect();
            self.endpoint_names = clusters;
            if !added.is_empty() || !dropped.is_empty() {
                let mut request = Self::request(ENDPOINT, added);
                request.resource_names_unsubscribe = dropped;
                self.held
                    .entry(ENDPOINT)
                    .or_default()
                    .retain(|name, _| self.endpoint_names.contains(name));
                self.send(conn, request);
            }
        }
        Ok(true)
    }

    /// Make-before-break: every cluster a held route names is held, with its endpoints
    /// subscribed to.
    fn check_routes(&self) -> Result<(), TestCaseError> {
        let mut virtual_hosts = Vec::new();
        if let Some(routes) = self.held.get(ROUTE).and_then(|r| r.get(ROUTE_NAME)) {
            let config = RouteConfiguration::decode(routes.body.value.as_slice())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            virtual_hosts.extend(config.virtual_hosts);
        }
        for resource in self
            .held
            .get(VIRTUAL_HOST)
            .into_iter()
            .flatten()
            .map(|(_, r)| r)
        {
            virtual_hosts.push(
                VirtualHost::decode(resource.body.value.as_slice())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?,
            );
        }
        let named = virtual_hosts
            .iter()
            .flat_map(|vh| &vh.routes)
            .filter_map(|r| match &r.action {
                Some(route::Action::Route(action)) => match &action.cluster_specifier {
                    Some(route_action::ClusterSpecifier::Cluster(name)) => Some(name),
                    _ => None,
                },
                _ => None,
            });
        for cluster in named {
            let held = self
                .held
                .get(CLUSTER)
                .is_some_and(|c| c.contains_key(cluster));
            prop_assert!(
                held,
                "a route names cluster {cluster}, which Envoy does not hold"
            );
            prop_assert!(
                self.endpoint_names.contains(cluster),
                "a route names cluster {cluster} before its endpoints are subscribed"
            );
        }
        Ok(())
    }

    /// Holds exactly the snapshot's resources of every type.
    fn check_holds(&self, target: &Snapshot) -> Result<(), TestCaseError> {
        for type_url in crate::type_url::PUSH_ORDER {
            let held: Vec<(&str, &str)> = self
                .held
                .get(type_url)
                .into_iter()
                .flatten()
                .map(|(name, r)| (name.as_str(), r.version.as_str()))
                .collect();
            let wanted: Vec<(&str, &str)> = target
                .of_type(type_url)
                .map(|r| (r.name.as_str(), r.version.as_str()))
                .collect();
            prop_assert_eq!(held, wanted, "{}", type_url);
        }
        Ok(())
    }
}

/// The test snapshot plus one VHDS virtual host per cluster (tagged like the routes), as a
/// delta Envoy receives them.
fn with_virtual_hosts(clusters: &[&str], port: u32, tag: &str) -> Snapshot {
    let mut snapshot = Arc::unwrap_or_clone(snapshot(clusters, port, tag));
    for cluster in clusters {
        let virtual_host = VirtualHost {
            name: format!("{ROUTE_NAME}/{cluster}"),
            domains: vec![format!("{cluster}.{tag}")],
            routes: vec![Route {
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.to_string(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        };
        snapshot.insert(Resource::new(
            virtual_host.name.clone(),
            prost_types::Any {
                type_url: VIRTUAL_HOST.into(),
                value: virtual_host.encode_to_vec(),
            },
        ));
    }
    snapshot
}

/// The next snapshot as the server builds it: shared with the previous where unchanged, with
/// the diff from it recorded.
fn publish(previous: &Arc<Snapshot>, clusters: &[&str], port: u32, tag: &str) -> Arc<Snapshot> {
    Arc::new(with_virtual_hosts(clusters, port, tag).sharing_with(previous))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn envoy_ends_with_the_snapshot_and_routes_never_name_a_missing_cluster(
        steps in proptest::collection::vec(step(), 1..40),
        // One resource per response, a few, or the server's default.
        budget in prop_oneof![Just(1usize), Just(400), Just(RESPONSE_BUDGET_BYTES)],
    ) {
        let mut shape = (vec!["a"], 8080, "r1");
        let mut current = Arc::new(with_virtual_hosts(&shape.0, shape.1, shape.2));
        let mut conn = DeltaConnection::new(current.clone()).with_response_budget(budget);
        let mut envoy = Envoy { budget, ..Envoy::default() };
        envoy.connect(&mut conn);
        for step in steps {
            match step {
                Step::Publish(clusters, port, tag) => {
                    current = publish(&current, &clusters, port, tag);
                    shape = (clusters, port, tag);
                    envoy.unread.extend(conn.on_snapshot(current.clone()));
                }
                Step::Deliver => {
                    envoy.deliver(&mut conn)?;
                }
                Step::Reconnect => {
                    conn = DeltaConnection::new(current.clone()).with_response_budget(budget);
                    envoy.connect(&mut conn);
                }
            }
            envoy.check_routes()?;
        }
        while envoy.deliver(&mut conn)? {
            envoy.check_routes()?;
        }
        prop_assert!(conn.is_synced());
        envoy.check_holds(&current)?;
        // In step: the stream keeps handles on the snapshot's sets, not copies.
        prop_assert_eq!(conn.holds_shared(CLUSTER), Some(true));
        prop_assert_eq!(conn.holds_shared(ENDPOINT), Some(true));
        prop_assert_eq!(conn.holds_shared(VIRTUAL_HOST), Some(true));
        // And a publication that changes nothing sends nothing.
        let same = publish(&current, &shape.0, shape.1, shape.2);
        prop_assert!(conn.on_snapshot(same).is_empty());
    }
}
