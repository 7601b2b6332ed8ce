//! State-of-the-world protocol, driven message by message.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

use super::SotwResponse;

use super::test_support::{
    FILTER_NAME, ROUTE_NAME, ack, nack, names, only, snapshot, subscribe, types,
};
use super::{Connection, Event};
use crate::snapshot::Snapshot;
use crate::type_url::{CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE};

/// A connection plus the last response of each type, as Envoy would remember them.
struct Harness {
    conn: Connection,
    last: BTreeMap<String, SotwResponse>,
}

impl Harness {
    fn new(snapshot: Arc<Snapshot>) -> Self {
        Harness {
            conn: Connection::new(snapshot),
            last: BTreeMap::new(),
        }
    }

    fn remember(&mut self, responses: Vec<SotwResponse>) -> Vec<SotwResponse> {
        for response in &responses {
            self.last
                .insert(response.type_url.clone(), response.clone());
        }
        responses
    }

    fn send(&mut self, request: DiscoveryRequest) -> Vec<SotwResponse> {
        let responses = self.conn.on_request(request);
        self.remember(responses)
    }

    fn push(&mut self, snapshot: Arc<Snapshot>) -> Vec<SotwResponse> {
        let responses = self.conn.on_snapshot(snapshot);
        self.remember(responses)
    }

    fn last(&self, type_url: &str) -> SotwResponse {
        self.last
            .get(type_url)
            .cloned()
            .expect("a response of that type was sent")
    }

    /// ACKs the last response of `type_url`, subscribing to `names`.
    fn ack(&mut self, type_url: &str, names: &[&str]) -> Vec<SotwResponse> {
        let last = self.last(type_url);
        self.send(ack(&last, names))
    }

    /// Plays Envoy's start-up over ADS until every type is ACKed.
    fn establish(&mut self, clusters: &[&str]) {
        assert_eq!(types(&self.send(subscribe(CLUSTER, &[]))), [CLUSTER]);
        assert!(
            self.send(subscribe(LISTENER, &[])).is_empty(),
            "LDS waits for CDS/EDS"
        );
        assert_eq!(types(&self.send(subscribe(ENDPOINT, clusters))), [ENDPOINT]);
        assert!(
            self.ack(CLUSTER, &[]).is_empty(),
            "EDS is still outstanding"
        );
        assert_eq!(types(&self.ack(ENDPOINT, clusters)), [LISTENER]);
        assert_eq!(types(&self.send(subscribe(ROUTE, &[ROUTE_NAME]))), [ROUTE]);
        assert_eq!(
            types(&self.send(subscribe(EXTENSION_CONFIG, &[FILTER_NAME]))),
            [EXTENSION_CONFIG]
        );
        for (type_url, names) in [
            (LISTENER, &[][..]),
            (ROUTE, &[ROUTE_NAME]),
            (EXTENSION_CONFIG, &[FILTER_NAME]),
        ] {
            assert!(self.ack(type_url, names).is_empty());
        }
        assert!(self.conn.is_synced());
        self.conn.take_events();
    }
}

#[test]
fn initial_wildcard_request_gets_the_whole_type_with_its_version_and_a_nonce() {
    let snap = snapshot(&["a", "b"], 8080, "r1");
    let mut h = Harness::new(Arc::clone(&snap));
    let responses = h.send(subscribe(CLUSTER, &[]));
    let cds = only(&responses, CLUSTER);
    assert_eq!(names(cds), ["a", "b"]);
    assert_eq!(cds.version_info, snap.type_version(CLUSTER));
    assert!(!cds.nonce.is_empty());
    // `*` is a wildcard too.
    let mut h = Harness::new(Arc::clone(&snap));
    assert_eq!(
        names(only(&h.send(subscribe(CLUSTER, &["*"])), CLUSTER)),
        ["a", "b"]
    );
    assert_eq!(
        h.conn.take_events(),
        [Event::Sent {
            type_url: CLUSTER,
            version: snap.type_version(CLUSTER),
            resources: 2
        }]
    );
}

#[test]
fn named_requests_get_only_the_named_resources() {
    let snap = snapshot(&["a", "b", "c"], 8080, "r1");
    let mut h = Harness::new(snap);
    let eds = h.send(subscribe(ENDPOINT, &["b", "missing"]));
    assert_eq!(names(only(&eds, ENDPOINT)), ["b"]);
    // (Routes wait while endpoints are unanswered.)
    assert!(h.ack(ENDPOINT, &["b", "missing"]).is_empty());
    let rds = h.send(subscribe(ROUTE, &[ROUTE_NAME]));
    assert_eq!(names(only(&rds, ROUTE)), [ROUTE_NAME]);
    let ecds = h.send(subscribe(EXTENSION_CONFIG, &[FILTER_NAME]));
    assert_eq!(names(only(&ecds, EXTENSION_CONFIG)), [FILTER_NAME]);
    // An empty list on a non-wildcard type asks for nothing.
    let mut h = Harness::new(snapshot(&["a"], 8080, "r1"));
    assert!(names(only(&h.send(subscribe(ENDPOINT, &[])), ENDPOINT)).is_empty());
}

#[test]
fn ack_is_recorded_and_answered_with_nothing() {
    let snap = snapshot(&["a"], 8080, "r1");
    let mut h = Harness::new(Arc::clone(&snap));
    h.send(subscribe(CLUSTER, &[]));
    assert!(!h.conn.is_synced());
    h.conn.take_events();
    assert!(h.ack(CLUSTER, &[]).is_empty());
    assert_eq!(
        h.conn.take_events(),
        [
            Event::Acked {
                type_url: CLUSTER,
                version: snap.type_version(CLUSTER)
            },
            Event::Synced
        ]
    );
    assert!(h.conn.is_synced());
}

#[test]
fn nack_is_recorded_not_resent_and_a_fix_is_pushed() {
    let mut h = Harness::new(snapshot(&["a"], 8080, "r1"));
    h.establish(&["a"]);
    let good = h.last(ROUTE).version_info;

    let bad = snapshot(&["a"], 8080, "bad");
    let responses = h.push(Arc::clone(&bad));
    let rds = only(&responses, ROUTE).clone();
    assert_eq!(rds.version_info, bad.type_version(ROUTE));
    assert!(
        h.send(nack(&rds, &good, &[ROUTE_NAME], "invalid route"))
            .is_empty()
    );
    assert_eq!(
        h.conn.take_events(),
        [
            Event::Sent {
                type_url: ROUTE,
                version: bad.type_version(ROUTE),
                resources: 1
            },
            Event::Nacked {
                type_url: ROUTE,
                version: bad.type_version(ROUTE),
                error_detail: "invalid route".into()
            },
            Event::Synced
        ]
    );
    // The same snapshot again (e.g. an unrelated change elsewhere) does not resend the bad routes.
    assert!(h.push(Arc::clone(&bad)).is_empty());
    // The fix goes out.
    let fixed = snapshot(&["a"], 8080, "r2");
    let responses = h.push(Arc::clone(&fixed));
    assert_eq!(
        only(&responses, ROUTE).version_info,
        fixed.type_version(ROUTE)
    );
}

#[test]
fn stale_nonce_is_ignored() {
    let mut h = Harness::new(snapshot(&["a"], 8080, "r1"));
    let first = only(&h.send(subscribe(ENDPOINT, &["a"])), ENDPOINT).clone();
    let second = only(&h.push(snapshot(&["a"], 9090, "r1")), ENDPOINT).clone();
    assert_ne!(first.nonce, second.nonce);
    h.conn.take_events();
    // Envoy answers the first response (even asking for more names): ignored, nothing ACKed.
    assert!(h.send(ack(&first, &["a", "b"])).is_empty());
    assert!(h.send(nack(&first, "", &["a"], "late")).is_empty());
    assert!(h.conn.take_events().is_empty());
    assert!(!h.conn.is_synced());
}

#[test]
fn update_while_an_ack_is_outstanding_supersedes_it() {
    let mut h = Harness::new(snapshot(&["a"], 8080, "r1"));
    let first = only(&h.send(subscribe(ENDPOINT, &["a"])), ENDPOINT).clone();
    let update = snapshot(&["a"], 9090, "r1");
    let second = only(&h.push(Arc::clone(&update)), ENDPOINT).clone();
    assert_eq!(second.version_info, update.type_version(ENDPOINT));
    h.conn.take_events();
    assert!(
        h.send(ack(&first, &["a"])).is_empty(),
        "late ACK of the old nonce"
    );
    assert!(h.conn.take_events().is_empty());
    assert!(h.send(ack(&second, &["a"])).is_empty());
    assert_eq!(
        h.conn.take_events(),
        [
            Event::Acked {
                type_url: ENDPOINT,
                version: update.type_version(ENDPOINT)
            },
            Event::Synced
        ]
    );
}

#[test]
fn reconnect_with_the_current_version_sends_nothing_and_an_older_one_gets_the_update() {
    let snap = snapshot(&["a", "b"], 8080, "r1");
    let mut h = Harness::new(Arc::clone(&snap));
    let mut request = subscribe(CLUSTER, &[]);
    request.version_info = snap.type_version(CLUSTER);
    assert!(h.send(request).is_empty());
    assert_eq!(
        h.conn.take_events(),
        [Event::Acked {
            type_url: CLUSTER,
            version: snap.type_version(CLUSTER)
        }]
    );
    // It knows which clusters the client holds: removing one keeps it until routes are updated.
    let without_b = snapshot(&["a"], 8080, "r1");
    let responses = h.push(without_b);
    assert_eq!(
        names(only(&responses, CLUSTER)),
        ["a"],
        "no routes subscribed: prune at once"
    );

    let mut h = Harness::new(Arc::clone(&snap));
    let mut request = subscribe(CLUSTER, &[]);
    request.version_info = "older".into();
    assert_eq!(names(only(&h.send(request), CLUSTER)), ["a", "b"]);
}

#[test]
fn changing_resource_names_sends_the_new_set() {
    let mut h = Harness::new(snapshot(&["a", "b", "c"], 8080, "r1"));
    h.send(subscribe(ENDPOINT, &["a"]));
    assert_eq!(
        names(only(&h.ack(ENDPOINT, &["a", "c"]), ENDPOINT)),
        ["a", "c"]
    );
    assert_eq!(names(only(&h.ack(ENDPOINT, &["c"]), ENDPOINT)), ["c"]);
    assert!(h.ack(ENDPOINT, &["c"]).is_empty());
}

#[test]
fn unknown_type_gets_no_response_and_is_reported() {
    let mut h = Harness::new(snapshot(&["a"], 8080, "r1"));
    let secret = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    assert!(h.send(subscribe(secret, &["cert"])).is_empty());
    assert_eq!(
        h.conn.take_events(),
        [Event::UnknownType {
            type_url: secret.into()
        }]
    );
}

#[test]
fn added_cluster_is_warmed_before_routes_point_at_it() {
    let mut h = Harness::new(snapshot(&["a"], 8080, "r1"));
    h.establish(&["a"]);
    let next = snapshot(&["a", "c"], 8080, "r1");

    let responses = h.push(Arc::clone(&next));
    assert_eq!(
        types(&responses),
        [CLUSTER],
        "routes wait for the new cluster"
    );
    assert_eq!(names(&responses[0]), ["a", "c"]);
    // Envoy ACKs CDS before asking for the new cluster's endpoints: routes still wait.
    assert!(h.ack(CLUSTER, &[]).is_empty());
    assert!(!h.conn.is_synced());
    // The endpoints request arrives (as an ACK of the previous EDS response).
    let responses = h.ack(ENDPOINT, &["a", "c"]);
    assert_eq!(names(only(&responses, ENDPOINT)), ["a", "c"]);
    assert_eq!(types(&responses), [ENDPOINT]);
    // Only once the endpoints are ACKed do the routes move.
    let responses = h.ack(ENDPOINT, &["a", "c"]);
    assert_eq!(types(&responses), [ROUTE]);
    assert_eq!(responses[0].version_info, next.type_version(ROUTE));
    h.conn.take_events();
    assert!(h.ack(ROUTE, &[ROUTE_NAME]).is_empty());
    assert_eq!(h.conn.take_events().last(), Some(&Event::Synced));
}

#[test]
fn removed_cluster_is_kept_until_routes_no_longer_use_it() {
    let mut h = Harness::new(snapshot(&["a", "b"], 8080, "r1"));
    h.establish(&["a", "b"]);
    let next = snapshot(&["a"], 8080, "r1");

    // Phase 1 (union) equals what the client holds; phase 2: routes without b.
    let responses = h.push(Arc::clone(&next));
    assert_eq!(types(&responses), [ROUTE]);
    // Phase 3 only after the routes are ACKed: CDS first, then EDS (b is not in the snapshot).
    let responses = h.ack(ROUTE, &[ROUTE_NAME]);
    assert_eq!(types(&responses), [CLUSTER, ENDPOINT]);
    assert_eq!(names(&responses[0]), ["a"]);
    assert_eq!(responses[0].version_info, next.type_version(CLUSTER));
    assert_eq!(names(&responses[1]), ["a"]);
    assert!(h.ack(CLUSTER, &[]).is_empty());
    h.conn.take_events();
    // Envoy drops b's endpoints subscription with the cluster: nothing new to send.
    assert!(h.ack(ENDPOINT, &["a"]).is_empty());
    assert_eq!(h.conn.take_events().last(), Some(&Event::Synced));
}

#[test]
fn replacing_a_cluster_adds_then_routes_then_removes() {
    let mut h = Harness::new(snapshot(&["stable", "old"], 8080, "r1"));
    h.establish(&["stable", "old"]);
    let next = snapshot(&["stable", "new"], 8080, "r1");

    let responses = h.push(Arc::clone(&next));
    assert_eq!(types(&responses), [CLUSTER]);
    assert_eq!(
        names(&responses[0]),
        ["new", "old", "stable"],
        "union of held and new"
    );
    assert!(h.ack(CLUSTER, &[]).is_empty());
    let responses = h.ack(ENDPOINT, &["new", "old", "stable"]);
    assert_eq!(names(only(&responses, ENDPOINT)), ["new", "old", "stable"]);
    let responses = h.ack(ENDPOINT, &["new", "old", "stable"]);
    assert_eq!(types(&responses), [ROUTE]);
    let responses = h.ack(ROUTE, &[ROUTE_NAME]);
    assert_eq!(types(&responses), [CLUSTER, ENDPOINT]);
    assert_eq!(names(&responses[0]), ["new", "stable"]);
    assert_eq!(names(&responses[1]), ["new", "stable"]);
}

#[test]
fn a_new_snapshot_during_a_removal_keeps_the_removed_cluster_held() {
    let mut h = Harness::new(snapshot(&["a", "b"], 8080, "r1"));
    h.establish(&["a", "b"]);
    assert_eq!(types(&h.push(snapshot(&["a"], 8080, "r1"))), [ROUTE]);
    // Before the routes are ACKed, an endpoint change arrives: b is still held in EDS/CDS.
    let responses = h.push(snapshot(&["a"], 9090, "r1"));
    assert_eq!(types(&responses), [ENDPOINT]);
    assert_eq!(names(&responses[0]), ["a", "b"]);
}

#[test]
fn weight_change_is_pushed_at_once() {
    let mut h = Harness::new(snapshot(&["a", "b"], 8080, "r1"));
    h.establish(&["a", "b"]);
    let responses = h.push(snapshot(&["a", "b"], 8080, "r2"));
    assert_eq!(types(&responses), [ROUTE]);
}

#[test]
fn nacked_cds_does_not_hold_routes_forever() {
    let mut h = Harness::new(snapshot(&["a"], 8080, "r1"));
    h.establish(&["a"]);
    let good = h.last(CLUSTER).version_info;
    let responses = h.push(snapshot(&["a", "c"], 8080, "r1"));
    let cds = only(&responses, CLUSTER).clone();
    // Envoy rejected the new cluster, so it will never ask for its endpoints.
    let responses = h.send(nack(&cds, &good, &[], "bad cluster c"));
    assert_eq!(types(&responses), [ROUTE]);
}

#[test]
fn routes_wait_for_the_first_endpoint_subscription() {
    // A client that subscribes to listeners early (as a reconnecting Envoy does) and ACKs CDS
    // before its first EDS request must not get routes to clusters without endpoints.
    let mut h = Harness::new(snapshot(&["a"], 8080, "r1"));
    assert_eq!(types(&h.send(subscribe(CLUSTER, &[]))), [CLUSTER]);
    assert!(h.send(subscribe(LISTENER, &[])).is_empty());
    assert!(
        h.ack(CLUSTER, &[]).is_empty(),
        "LDS waits for the EDS subscription"
    );
    assert_eq!(types(&h.send(subscribe(ENDPOINT, &["a"]))), [ENDPOINT]);
    assert_eq!(types(&h.ack(ENDPOINT, &["a"])), [LISTENER]);
}

#[test]
fn a_cds_only_client_is_not_held_back_by_endpoints() {
    let mut h = Harness::new(snapshot(&["a", "b"], 8080, "r1"));
    assert_eq!(types(&h.send(subscribe(CLUSTER, &[]))), [CLUSTER]);
    assert!(h.ack(CLUSTER, &[]).is_empty());
    assert!(h.conn.is_synced());
    assert_eq!(
        names(only(&h.push(snapshot(&["a"], 8080, "r1")), CLUSTER)),
        ["a"]
    );
}

#[test]
fn unchanged_types_are_not_resent_when_the_snapshot_shares_them() {
    let first = snapshot(&["a", "b"], 8080, "r1");
    let mut h = Harness::new(Arc::clone(&first));
    h.establish(&["a", "b"]);
    let next = Arc::new(Snapshot::clone(&snapshot(&["a", "b"], 8080, "r2")).sharing_with(&first));
    assert!(next.resources[CLUSTER].same(&first.resources[CLUSTER]));
    assert_eq!(types(&h.push(Arc::clone(&next))), [ROUTE]);
    assert!(h.ack(ROUTE, &[ROUTE_NAME]).is_empty());
    assert!(h.conn.is_synced());
}

/// No valid state yet (a restart on an invalid rollouts file): a reconnecting Envoy's requests
/// are recorded but answered with nothing for any type, so it keeps what it holds. The first
/// snapshot is then pushed make-before-break as usual, and a client that already holds it gets
/// nothing at all.
#[test]
fn a_waiting_connection_sends_nothing_until_its_first_snapshot() {
    let snap = snapshot(&["a", "b"], 8080, "r1");
    let mut h = Harness {
        conn: Connection::waiting(),
        last: BTreeMap::new(),
    };
    let mut held = subscribe(CLUSTER, &[]);
    held.version_info = "v-before-restart".into();
    assert!(h.send(held).is_empty(), "CDS");
    assert!(h.send(subscribe(LISTENER, &[])).is_empty(), "LDS");
    assert!(h.send(subscribe(ENDPOINT, &["a", "b"])).is_empty(), "EDS");
    assert!(h.send(subscribe(ROUTE, &[ROUTE_NAME])).is_empty(), "RDS");
    assert!(
        h.send(subscribe(EXTENSION_CONFIG, &[FILTER_NAME]))
            .is_empty(),
        "ECDS"
    );
    assert!(!h.conn.is_synced());
    assert!(
        !h.conn
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::Sent { .. } | Event::Synced)),
        "nothing sent"
    );

    // The first snapshot: clusters and endpoints first, then the route types once answered.
    assert_eq!(types(&h.push(Arc::clone(&snap))), [CLUSTER, ENDPOINT]);
    assert_eq!(names(&h.last(CLUSTER)), ["a", "b"]);
    assert!(h.ack(CLUSTER, &[]).is_empty());
    assert_eq!(
        types(&h.ack(ENDPOINT, &["a", "b"])),
        [LISTENER, ROUTE, EXTENSION_CONFIG]
    );

    // A client reconnecting with exactly the first snapshot's versions gets nothing.
    let mut h = Harness {
        conn: Connection::waiting(),
        last: BTreeMap::new(),
    };
    let mut held = subscribe(CLUSTER, &[]);
    held.version_info = snap.type_version(CLUSTER);
    assert!(h.send(held).is_empty());
    assert!(h.push(Arc::clone(&snap)).is_empty());
}
