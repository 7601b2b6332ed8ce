//! Delta protocol, driven message by message.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::rpc::Status;

use super::test_support::{FILTER_NAME, ROUTE_NAME, node, snapshot};
use super::{DeltaConnection, DeltaResponse, Event};
use crate::type_url::{CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE};

fn subscribe(type_url: &str, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(node()),
        type_url: type_url.into(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

fn ack(response: &DeltaResponse) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: response.type_url.clone(),
        response_nonce: response.nonce.clone(),
        ..Default::default()
    }
}

fn nack(response: &DeltaResponse, error: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        error_detail: Some(Status {
            code: 3,
            message: error.into(),
            details: Vec::new(),
        }),
        ..ack(response)
    }
}

fn changed(response: &DeltaResponse) -> Vec<(&str, &str)> {
    response
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.version.as_str()))
        .collect()
}

fn types(responses: &[DeltaResponse]) -> Vec<&str> {
    responses.iter().map(|r| r.type_url.as_str()).collect()
}

fn one(mut responses: Vec<DeltaResponse>, type_url: &str) -> DeltaResponse {
    assert_eq!(types(&responses), [type_url]);
    responses.remove(0)
}

/// Plays Envoy's delta start-up until every type is ACKed; returns the connection.
fn establish(clusters: &[&str], port: u32) -> DeltaConnection {
    let mut conn = DeltaConnection::new(snapshot(clusters, port, "r1"));
    let cds = one(conn.on_delta_request(subscribe(CLUSTER, &[])), CLUSTER);
    assert!(conn.on_delta_request(subscribe(LISTENER, &[])).is_empty());
    let eds = one(
        conn.on_delta_request(subscribe(ENDPOINT, clusters)),
        ENDPOINT,
    );
    assert!(conn.on_delta_request(ack(&cds)).is_empty());
    let lds = one(conn.on_delta_request(ack(&eds)), LISTENER);
    let rds = one(
        conn.on_delta_request(subscribe(ROUTE, &[ROUTE_NAME])),
        ROUTE,
    );
    let ecds = one(
        conn.on_delta_request(subscribe(EXTENSION_CONFIG, &[FILTER_NAME])),
        EXTENSION_CONFIG,
    );
    for response in [lds, rds, ecds] {
        assert!(conn.on_delta_request(ack(&response)).is_empty());
    }
    assert!(conn.is_synced());
    conn.take_events();
    conn
}

#[test]
fn wildcard_and_named_subscriptions_get_their_resources_with_versions() {
    let snap = snapshot(&["a", "b"], 8080, "r1");
    let mut conn = DeltaConnection::new(Arc::clone(&snap));
    let cds = one(conn.on_delta_request(subscribe(CLUSTER, &[])), CLUSTER);
    let expected: Vec<(&str, &str)> = snap
        .of_type(CLUSTER)
        .map(|r| (r.name.as_str(), r.version.as_str()))
        .collect();
    assert_eq!(changed(&cds), expected);
    assert!(cds.removed_resources.is_empty());
    assert!(!cds.nonce.is_empty());
    conn.on_delta_request(ack(&cds));
    let eds = one(conn.on_delta_request(subscribe(ENDPOINT, &["b"])), ENDPOINT);
    assert_eq!(
        changed(&eds),
        [("b", snap.get(ENDPOINT, "b").expect("b").version.as_str())]
    );
}

#[test]
fn initial_resource_versions_are_not_resent_but_the_first_response_always_goes_out() {
    let snap = snapshot(&["a", "b"], 8080, "r1");
    let mut conn = DeltaConnection::new(Arc::clone(&snap));
    let mut request = subscribe(CLUSTER, &[]);
    for r in snap.of_type(CLUSTER) {
        request
            .initial_resource_versions
            .insert(r.name.clone(), r.version.clone());
    }
    request
        .initial_resource_versions
        .insert("gone".into(), "v0".into());
    let cds = one(conn.on_delta_request(request), CLUSTER);
    assert!(changed(&cds).is_empty());
    // The client holds a cluster that no longer exists: its removal is phase 3, once the first
    // (phase 1) response is answered; no routes are subscribed, so nothing else waits.
    assert!(cds.removed_resources.is_empty());
    let cds = one(conn.on_delta_request(ack(&cds)), CLUSTER);
    assert_eq!(cds.removed_resources, ["gone"]);

    let mut conn = DeltaConnection::new(Arc::clone(&snap));
    let mut request = subscribe(CLUSTER, &[]);
    request
        .initial_resource_versions
        .insert("a".into(), "stale".into());
    let cds = one(conn.on_delta_request(request), CLUSTER);
    assert_eq!(
        changed(&cds).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["a", "b"]
    );
}

#[test]
fn subscribe_and_unsubscribe_names() {
    let snap = snapshot(&["a", "b", "c"], 8080, "r1");
    let mut conn = DeltaConnection::new(snap);
    let eds = one(conn.on_delta_request(subscribe(ENDPOINT, &["a"])), ENDPOINT);
    let mut more = ack(&eds);
    more.resource_names_subscribe = vec!["c".into()];
    let eds = one(conn.on_delta_request(more), ENDPOINT);
    assert_eq!(
        changed(&eds).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["c"]
    );
    let mut less = ack(&eds);
    less.resource_names_unsubscribe = vec!["a".into()];
    assert!(
        conn.on_delta_request(less).is_empty(),
        "the client drops it itself"
    );
}

#[test]
fn only_changed_resources_are_sent_and_removals_wait_for_routes() {
    let mut conn = establish(&["a", "b"], 8080);
    // b removed, a's endpoints changed: phase 1 sends a's endpoints only, removes nothing.
    let next = snapshot(&["a"], 9090, "r1");
    let eds = one(conn.on_snapshot(Arc::clone(&next)), ENDPOINT);
    assert_eq!(
        changed(&eds),
        [("a", next.get(ENDPOINT, "a").expect("a").version.as_str())]
    );
    assert!(eds.removed_resources.is_empty());
    let rds = one(conn.on_delta_request(ack(&eds)), ROUTE);
    let responses = conn.on_delta_request(ack(&rds));
    assert_eq!(types(&responses), [CLUSTER, ENDPOINT]);
    for response in &responses {
        assert!(response.resources.is_empty());
        assert_eq!(response.removed_resources, ["b"]);
    }
}

#[test]
fn nack_is_recorded_and_not_resent() {
    let mut conn = establish(&["a"], 8080);
    let bad = snapshot(&["a"], 8080, "bad");
    let rds = one(conn.on_snapshot(Arc::clone(&bad)), ROUTE);
    conn.take_events();
    assert!(
        conn.on_delta_request(nack(&rds, "invalid route"))
            .is_empty()
    );
    let events = conn.take_events();
    assert!(matches!(
        &events[0],
        Event::Nacked { type_url, error_detail, .. } if *type_url == ROUTE && error_detail == "invalid route"
    ));
    assert!(conn.on_snapshot(bad).is_empty());
    let fixed = snapshot(&["a"], 8080, "r2");
    let rds = one(conn.on_snapshot(Arc::clone(&fixed)), ROUTE);
    assert_eq!(
        changed(&rds),
        [(
            ROUTE_NAME,
            fixed
                .get(ROUTE, ROUTE_NAME)
                .expect("route")
                .version
                .as_str()
        )]
    );
}

#[test]
fn stale_nonce_is_not_an_ack_but_its_subscription_changes_apply() {
    let mut conn = DeltaConnection::new(snapshot(&["a", "b"], 8080, "r1"));
    let first = one(conn.on_delta_request(subscribe(ENDPOINT, &["a"])), ENDPOINT);
    let second = one(
        conn.on_snapshot(snapshot(&["a", "b"], 9090, "r1")),
        ENDPOINT,
    );
    conn.take_events();
    let mut late = ack(&first);
    late.resource_names_subscribe = vec!["b".into()];
    let responses = conn.on_delta_request(late);
    assert_eq!(
        changed(&one(responses, ENDPOINT))
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert!(
        !conn
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::Acked { .. }))
    );
    assert!(conn.on_delta_request(ack(&second)).is_empty());
}

#[test]
fn added_cluster_is_warmed_before_routes() {
    let mut conn = establish(&["a"], 8080);
    let cds = one(conn.on_snapshot(snapshot(&["a", "c"], 8080, "r1")), CLUSTER);
    assert_eq!(
        changed(&cds).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["c"]
    );
    assert!(
        conn.on_delta_request(ack(&cds)).is_empty(),
        "waits for c's endpoints subscription"
    );
    let mut sub = DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        ..Default::default()
    };
    sub.resource_names_subscribe = vec!["c".into()];
    let eds = one(conn.on_delta_request(sub), ENDPOINT);
    let rds = one(conn.on_delta_request(ack(&eds)), ROUTE);
    conn.take_events();
    assert!(conn.on_delta_request(ack(&rds)).is_empty());
    assert_eq!(conn.take_events().last(), Some(&Event::Synced));
}

#[test]
fn unknown_type_is_reported() {
    let mut conn = DeltaConnection::new(snapshot(&["a"], 8080, "r1"));
    assert!(
        conn.on_delta_request(subscribe("type.googleapis.com/x.Y", &[]))
            .is_empty()
    );
    assert_eq!(
        conn.take_events(),
        [Event::UnknownType {
            type_url: "type.googleapis.com/x.Y".into()
        }]
    );
}

#[test]
fn routes_wait_for_the_first_endpoint_subscription() {
    let mut conn = DeltaConnection::new(snapshot(&["a"], 8080, "r1"));
    let cds = conn.on_delta_request(subscribe(CLUSTER, &[]));
    assert_eq!(cds.len(), 1);
    assert!(conn.on_delta_request(subscribe(LISTENER, &[])).is_empty());
    assert!(
        conn.on_delta_request(ack(&cds[0])).is_empty(),
        "LDS waits for the EDS subscription"
    );
    let eds = conn.on_delta_request(subscribe(ENDPOINT, &["a"]));
    assert_eq!(eds.len(), 1);
    assert_eq!(eds[0].type_url, ENDPOINT);
    let lds = conn.on_delta_request(ack(&eds[0]));
    assert_eq!(lds.len(), 1);
    assert_eq!(lds[0].type_url, LISTENER);
}

/// No valid state yet: even the first response of a type (which a delta server otherwise always
/// sends, empty or not) waits for the first snapshot, and the client's `initial_resource_versions`
/// are kept so that what it already holds is not sent again.
#[test]
fn a_waiting_connection_sends_nothing_until_its_first_snapshot() {
    let snap = snapshot(&["a", "b"], 8080, "r1");
    let mut conn = DeltaConnection::waiting();
    let mut cds = subscribe(CLUSTER, &[]);
    let held = snap
        .of_type(CLUSTER)
        .find(|r| r.name == "a")
        .expect("cluster a");
    cds.initial_resource_versions
        .insert(held.name.clone(), held.version.clone());
    for request in [
        cds,
        subscribe(LISTENER, &[]),
        subscribe(ENDPOINT, &["a", "b"]),
        subscribe(ROUTE, &[ROUTE_NAME]),
        subscribe(EXTENSION_CONFIG, &[FILTER_NAME]),
    ] {
        let type_url = request.type_url.clone();
        assert!(conn.on_delta_request(request).is_empty(), "{type_url}");
    }
    assert!(!conn.is_synced());
    assert!(
        !conn
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::Sent { .. } | Event::Synced))
    );

    let responses = conn.on_snapshot(Arc::clone(&snap));
    assert_eq!(types(&responses), [CLUSTER, ENDPOINT]);
    assert_eq!(
        changed(&responses[0])
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>(),
        ["b"],
        "the cluster it holds is not sent again"
    );
}

#[test]
fn a_stream_in_step_with_the_snapshot_shares_its_sets_instead_of_copying_them() {
    let mut conn = establish(&["a", "b"], 8080);
    // Wildcard clusters and endpoints named exactly as the snapshot's: nothing of its own.
    assert_eq!(conn.holds_shared(CLUSTER), Some(true));
    assert_eq!(conn.holds_shared(ENDPOINT), Some(true));

    // Phase 1 holds the union (its own), the sync after it the new set (shared again).
    let cds = one(conn.on_snapshot(snapshot(&["a", "c"], 8080, "r1")), CLUSTER);
    assert_eq!(
        conn.holds_shared(CLUSTER),
        Some(false),
        "a, b and c: no set"
    );
    assert!(conn.on_delta_request(ack(&cds)).is_empty());
    let eds = one(conn.on_delta_request(subscribe(ENDPOINT, &["c"])), ENDPOINT);
    let rds = one(conn.on_delta_request(ack(&eds)), ROUTE);
    let pruned = conn.on_delta_request(ack(&rds));
    assert_eq!(types(&pruned), [CLUSTER, ENDPOINT]);
    assert_eq!(changed(&pruned[0]), [] as [(&str, &str); 0]);
    assert_eq!(pruned[0].removed_resources, ["b"]);
    assert_eq!(pruned[1].removed_resources, ["b"]);
    for response in &pruned {
        assert!(conn.on_delta_request(ack(response)).is_empty());
    }
    assert!(conn.is_synced());
    assert_eq!(conn.holds_shared(CLUSTER), Some(true));
    // Envoy never unsubscribed b's endpoints: the names are a, b, c, the set a, c.
    assert_eq!(conn.holds_shared(ENDPOINT), Some(false));
    let unsubscribe = DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_unsubscribe: vec!["b".into()],
        ..Default::default()
    };
    assert!(conn.on_delta_request(unsubscribe).is_empty());
    let pushed = conn.on_snapshot(snapshot(&["a", "c"], 9090, "r1"));
    let eds = one(pushed, ENDPOINT);
    assert_eq!(changed(&eds).len(), 2, "both endpoints moved to port 9090");
    assert!(conn.on_delta_request(ack(&eds)).is_empty());
    assert!(conn.is_synced());
    assert_eq!(
        conn.holds_shared(ENDPOINT),
        Some(true),
        "names a, c: the set"
    );

    // A client that drops one resource holds a set of its own, and is answered as before.
    let unsubscribe = DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_unsubscribe: vec!["a".into()],
        ..Default::default()
    };
    assert!(conn.on_delta_request(unsubscribe).is_empty());
    assert_eq!(conn.holds_shared(ENDPOINT), Some(false));
    let again = one(conn.on_delta_request(subscribe(ENDPOINT, &["a"])), ENDPOINT);
    assert_eq!(
        changed(&again).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["a"]
    );
}

/// A connection to the test snapshot of `clusters` whose responses have room for two clusters.
fn two_clusters_per_response(clusters: &[&str]) -> DeltaConnection {
    let snap = snapshot(clusters, 8080, "r1");
    let one_cluster = snap
        .of_type(CLUSTER)
        .map(super::wire::delta_resource_encoded_len)
        .max()
        .expect("clusters");
    DeltaConnection::new(snap).with_response_budget(2 * one_cluster)
}

/// ACKs `first` and the further parts of its type; returns the parts and the first response of
/// another type (if any).
fn ack_parts(
    conn: &mut DeltaConnection,
    first: DeltaResponse,
) -> (Vec<DeltaResponse>, Option<DeltaResponse>) {
    let mut parts = vec![first];
    loop {
        let last = parts.last().expect("at least the first");
        let mut next = conn.on_delta_request(ack(last));
        match next.len() {
            0 => return (parts, None),
            1 if next[0].type_url == last.type_url => parts.push(next.remove(0)),
            1 => return (parts, next.pop()),
            _ => panic!("more than one response to an ACK: {:?}", types(&next)),
        }
    }
}

#[test]
fn a_large_set_goes_out_in_parts_within_the_budget_and_routes_wait_for_the_last() {
    let clusters = ["a", "b", "c", "d", "e"];
    let mut conn = two_clusters_per_response(&clusters);
    let cds = one(conn.on_delta_request(subscribe(CLUSTER, &[])), CLUSTER);
    assert!(conn.on_delta_request(subscribe(LISTENER, &[])).is_empty());
    let (parts, other) = ack_parts(&mut conn, cds);
    assert!(
        other.is_none(),
        "nothing else before the clusters are all out"
    );
    let names: Vec<Vec<&str>> = parts
        .iter()
        .map(|part| changed(part).iter().map(|(n, _)| *n).collect())
        .collect();
    assert_eq!(names, [vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
    // The endpoints, in parts too; the listener only once every part is ACKed.
    let eds = one(
        conn.on_delta_request(subscribe(ENDPOINT, &clusters)),
        ENDPOINT,
    );
    let (parts, lds) = ack_parts(&mut conn, eds);
    let endpoints: usize = parts.iter().map(|p| p.resources.len()).sum();
    assert_eq!(endpoints, clusters.len());
    let lds = lds.expect("the listener after the last part");
    assert_eq!(lds.type_url, LISTENER);
    assert!(conn.on_delta_request(ack(&lds)).is_empty());
    assert!(conn.is_synced());
    assert_eq!(conn.holds_shared(CLUSTER), Some(true));
}

#[test]
fn a_nacked_part_of_a_split_response_does_not_hold_the_routes_back() {
    let clusters = ["a", "b", "c"];
    let mut conn = two_clusters_per_response(&clusters);
    let first = one(conn.on_delta_request(subscribe(CLUSTER, &[])), CLUSTER);
    assert!(conn.on_delta_request(subscribe(LISTENER, &[])).is_empty());
    assert_eq!(changed(&first).len(), 2, "a and b");
    // Envoy keeps b and rejects a (a delta CDS update applies its valid clusters), then takes c.
    let second = one(
        conn.on_delta_request(nack(&first, "cluster a: bad")),
        CLUSTER,
    );
    assert_eq!(
        changed(&second).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["c"]
    );
    assert!(conn.on_delta_request(ack(&second)).is_empty());
    // It subscribes to the endpoints of the clusters it holds: b and c, never a.
    let eds = one(
        conn.on_delta_request(subscribe(ENDPOINT, &["b", "c"])),
        ENDPOINT,
    );
    let (_, lds) = ack_parts(&mut conn, eds);
    let lds = lds.expect("the listener: the routes are not held back");
    assert_eq!(lds.type_url, LISTENER);
    assert!(conn.on_delta_request(ack(&lds)).is_empty());
    assert!(conn.is_synced());
}
