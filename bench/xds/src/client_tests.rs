#![allow(clippy::unwrap_used)]

use envoy_types::pb::google::protobuf::Any;

use super::*;
use crate::test_support::{eds_cluster, listener, opaque, response, static_cluster};

/// A client that has received clusters a, b and the listener, and every named type once.
fn synced_client() -> AdsClient {
    let mut c = AdsClient::new("node-0", "bench");
    c.start();
    c.on_response(response(
        CLUSTER,
        "c1",
        "1",
        vec![eds_cluster("a", ""), eds_cluster("b", "")],
    ))
    .unwrap();
    c.on_response(response(
        ENDPOINT,
        "e1",
        "2",
        vec![opaque(ENDPOINT), opaque(ENDPOINT)],
    ))
    .unwrap();
    c.on_response(response(
        LISTENER,
        "l1",
        "3",
        vec![listener("sluice_routes", "sluice")],
    ))
    .unwrap();
    c.on_response(response(ROUTE, "r1", "4", vec![opaque(ROUTE)]))
        .unwrap();
    c.on_response(response(
        EXTENSION_CONFIG,
        "x1",
        "5",
        vec![opaque(EXTENSION_CONFIG)],
    ))
    .unwrap();
    c
}

#[test]
fn starts_with_wildcard_cds_and_lds_and_sends_the_node_once() {
    let mut c = AdsClient::new("node-7", "bench");
    let requests = c.start();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].type_url, CLUSTER);
    assert_eq!(requests[1].type_url, LISTENER);
    assert!(requests.iter().all(|r| r.resource_names.is_empty()));
    assert!(
        requests
            .iter()
            .all(|r| r.version_info.is_empty() && r.response_nonce.is_empty())
    );
    assert_eq!(
        requests[0].node.as_ref().map(|n| n.id.as_str()),
        Some("node-7")
    );
    assert!(requests[1].node.is_none());
    assert!(!c.is_synced());
}

#[test]
fn cds_response_is_acked_then_eds_subscribes_to_its_clusters() {
    let mut c = AdsClient::new("n", "bench");
    c.start();
    let reaction = c
        .on_response(response(
            CLUSTER,
            "v1",
            "n1",
            vec![
                eds_cluster("ns/b/h2", ""),
                eds_cluster("ns/a/h1", "svc-a"),
                static_cluster("s"),
            ],
        ))
        .unwrap();
    assert!(reaction.changed);
    assert_eq!(reaction.nack, None);
    assert_eq!(reaction.type_index, 0);
    let [ack, eds] = reaction.requests.as_slice() else {
        panic!("expected ACK + EDS, got {:?}", reaction.requests);
    };
    assert_eq!(
        (ack.type_url.as_str(), ack.version_info.as_str()),
        (CLUSTER, "v1")
    );
    assert_eq!(ack.response_nonce, "n1");
    assert!(ack.resource_names.is_empty(), "CDS stays wildcard");
    assert!(ack.error_detail.is_none());
    assert_eq!(eds.type_url, ENDPOINT);
    // service_name wins over the cluster name; static clusters have no EDS; sorted.
    assert_eq!(
        eds.resource_names,
        vec!["ns/b/h2".to_owned(), "svc-a".to_owned()]
    );
    assert!(eds.version_info.is_empty() && eds.response_nonce.is_empty());
}

#[test]
fn lds_response_subscribes_to_the_hcm_route_config_and_ecds_filter() {
    let mut c = AdsClient::new("n", "bench");
    c.start();
    let reaction = c
        .on_response(response(
            LISTENER,
            "l1",
            "9",
            vec![listener("my_routes", "my_filter")],
        ))
        .unwrap();
    let types: Vec<&str> = reaction
        .requests
        .iter()
        .map(|r| r.type_url.as_str())
        .collect();
    assert_eq!(types, vec![LISTENER, ROUTE, EXTENSION_CONFIG]);
    assert_eq!(
        reaction.requests[1].resource_names,
        vec!["my_routes".to_owned()]
    );
    assert_eq!(
        reaction.requests[2].resource_names,
        vec!["my_filter".to_owned()]
    );
}

#[test]
fn synced_once_every_type_has_a_version() {
    let c = synced_client();
    assert!(c.is_synced());
    assert_eq!(c.version(ROUTE), Some("r1"));
    assert_eq!(c.version(EXTENSION_CONFIG), Some("x1"));
}

#[test]
fn a_new_version_is_a_change_and_the_same_version_is_not() {
    let mut c = synced_client();
    let new = c
        .on_response(response(ROUTE, "r2", "6", vec![opaque(ROUTE)]))
        .unwrap();
    assert!(new.changed);
    assert_eq!(new.requests.len(), 1, "an RDS update needs only its ACK");
    assert_eq!(new.requests[0].version_info, "r2");
    assert_eq!(new.requests[0].response_nonce, "6");
    assert_eq!(
        new.requests[0].resource_names,
        vec!["sluice_routes".to_owned()]
    );
    let same = c
        .on_response(response(ROUTE, "r2", "7", vec![opaque(ROUTE)]))
        .unwrap();
    assert!(!same.changed);
    assert_eq!(same.requests[0].response_nonce, "7");
}

#[test]
fn unchanged_cluster_set_does_not_resubscribe_eds() {
    let mut c = synced_client();
    let reaction = c
        .on_response(response(
            CLUSTER,
            "c2",
            "8",
            vec![eds_cluster("b", ""), eds_cluster("a", "")],
        ))
        .unwrap();
    assert_eq!(reaction.requests.len(), 1);
}

#[test]
fn a_new_cluster_updates_eds_with_the_last_eds_version_and_nonce() {
    let mut c = synced_client();
    let reaction = c
        .on_response(response(
            CLUSTER,
            "c2",
            "8",
            vec![eds_cluster("a", ""), eds_cluster("c", "")],
        ))
        .unwrap();
    let eds = &reaction.requests[1];
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(eds.resource_names, vec!["a".to_owned(), "c".to_owned()]);
    assert_eq!(
        (eds.version_info.as_str(), eds.response_nonce.as_str()),
        ("e1", "2")
    );
}

#[test]
fn an_undecodable_resource_is_nacked_keeping_the_last_good_version() {
    let mut c = synced_client();
    let garbage = Any {
        type_url: CLUSTER.to_owned(),
        value: vec![0xff, 0xff, 0xff],
    };
    let reaction = c
        .on_response(response(CLUSTER, "c2", "8", vec![garbage]))
        .unwrap();
    assert!(!reaction.changed);
    assert!(
        reaction
            .nack
            .as_deref()
            .unwrap()
            .contains("Cluster does not decode")
    );
    let nack = &reaction.requests[0];
    assert_eq!(nack.version_info, "c1");
    assert_eq!(nack.response_nonce, "8");
    assert_eq!(nack.error_detail.as_ref().unwrap().code, INVALID_ARGUMENT);
    assert_eq!(c.version(CLUSTER), Some("c1"));
}

#[test]
fn a_resource_of_another_type_is_nacked() {
    let mut c = synced_client();
    let reaction = c
        .on_response(response(ROUTE, "r2", "8", vec![opaque(CLUSTER)]))
        .unwrap();
    assert!(reaction.nack.is_some());
    assert_eq!(c.version(ROUTE), Some("r1"));
}

#[test]
fn a_response_of_an_unsubscribed_type_is_a_protocol_error() {
    let mut c = AdsClient::new("n", "bench");
    c.start();
    let err = c
        .on_response(response(ROUTE, "r1", "1", vec![]))
        .unwrap_err();
    assert_eq!(err, ProtocolError::UnexpectedType(ROUTE.to_owned()));
    let err = c
        .on_response(response("type.googleapis.com/x.Y", "1", "1", vec![]))
        .unwrap_err();
    assert!(matches!(err, ProtocolError::UnexpectedType(_)));
}

#[test]
fn type_names_lists_the_set_members() {
    assert_eq!(
        type_names(0b11000),
        "RouteConfiguration+TypedExtensionConfig"
    );
    assert_eq!(type_names(0), "");
    assert_eq!(type_index(LISTENER), Some(2));
}
