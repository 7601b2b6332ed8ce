//! VHDS: the delta form of the routes, translated and then driven through the delta protocol.

use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::Message;
use sluice_model::{RolloutState, Stickiness, TrafficState, Version};

use super::super::tests::options;
use super::*;
use crate::protocol::{DeltaConnection, DeltaResponse};
use crate::snapshot::Snapshot;
use crate::translate::{check_consistent, translate};
use crate::type_url::{CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE, VIRTUAL_HOST};

fn rollout(i: usize, weight_bp: u32) -> RolloutState {
    let version = |port: u16| Version {
        endpoints: vec![([127, 0, 0, 1], port).into()],
    };
    RolloutState {
        name: format!("ns{i}/app"),
        hosts: vec![format!("app{i}.local")],
        versions: [
            ("s".to_string(), version(8001)),
            ("c".to_string(), version(8002)),
        ]
        .into_iter()
        .collect(),
        stable_hash: "s".into(),
        canary_hash: Some("c".into()),
        canary_weight_bp: weight_bp,
        header_routes: Vec::new(),
        mirror_routes: Vec::new(),
        additional_weights: Vec::new(),
        stickiness: Stickiness::None,
        preview: None,
    }
}

/// `n` rollouts; rollout `changed` at `weight_bp`, the others at 10 %.
fn state(n: usize, changed: usize, weight_bp: u32) -> TrafficState {
    TrafficState {
        rollouts: (0..n)
            .map(|i| {
                let r = rollout(i, if i == changed { weight_bp } else { 1000 });
                (r.name.clone(), r)
            })
            .collect(),
    }
}

fn delta_snapshot(state: &TrafficState) -> Arc<Snapshot> {
    Arc::new(translate(state, &options()).expect("valid").for_delta())
}

fn subscribe(type_url: &str, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
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

fn summary(responses: &[DeltaResponse]) -> Vec<(&str, usize, usize)> {
    responses
        .iter()
        .map(|r| {
            (
                r.type_url.as_str(),
                r.resources.len(),
                r.removed_resources.len(),
            )
        })
        .collect()
}

/// Plays a delta Envoy's start-up (as Envoy 1.40 does: CDS, EDS, LDS, RDS, ECDS, then VHDS
/// with no names) and ACKs everything.
fn establish(snapshot: Arc<Snapshot>) -> DeltaConnection {
    establish_with(snapshot, &[])
}

/// [`establish`], the VHDS subscription naming `vhds_names`.
fn establish_with(snapshot: Arc<Snapshot>, vhds_names: &[&str]) -> DeltaConnection {
    let mut conn = DeltaConnection::new(snapshot.clone());
    let mut pending: Vec<DeltaResponse> = conn.on_delta_request(subscribe(CLUSTER, &[]));
    let set = snapshot.type_set(CLUSTER);
    let clusters: Vec<&str> = set.names().collect();
    pending.extend(conn.on_delta_request(subscribe(ENDPOINT, &clusters)));
    pending.extend(conn.on_delta_request(subscribe(LISTENER, &[])));
    pending.extend(conn.on_delta_request(subscribe(ROUTE, &[ROUTE_CONFIG_NAME])));
    pending.extend(conn.on_delta_request(subscribe(EXTENSION_CONFIG, &["sluice"])));
    pending.extend(conn.on_delta_request(subscribe(VIRTUAL_HOST, vhds_names)));
    while let Some(response) = pending.pop() {
        pending.extend(conn.on_delta_request(ack(&response)));
    }
    assert!(conn.is_synced());
    conn
}

#[test]
fn virtual_host_names_are_one_namespace_level_below_the_route_configuration() {
    assert_eq!(virtual_host_name("ns/app"), "sluice_routes/ns%2Fapp");
    assert_eq!(virtual_host_name("a%2Fb/c"), "sluice_routes/a%252Fb%2Fc");
    let (namespace, rest) = virtual_host_name("x/y/z")
        .rsplit_once('/')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .expect("has a /");
    assert_eq!(
        (namespace.as_str(), rest.as_str()),
        ("sluice_routes", "x%2Fy%2Fz")
    );
}

#[test]
fn the_delta_form_holds_every_rollout_as_its_own_virtual_host() {
    let snapshot = translate(&state(3, 0, 2500), &options()).expect("valid");
    let delta = snapshot.for_delta();
    check_consistent(&snapshot).expect("the SotW form is consistent");

    let routes = RouteConfiguration::decode(
        delta
            .get(ROUTE, ROUTE_CONFIG_NAME)
            .expect("routes")
            .body
            .value
            .as_slice(),
    )
    .expect("decodes");
    assert!(routes.vhds.is_some(), "names VHDS");
    let names: Vec<&str> = routes
        .virtual_hosts
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(names, ["no_rollout"], "only the catch-all stays inline");

    let full = RouteConfiguration::decode(
        snapshot
            .get(ROUTE, ROUTE_CONFIG_NAME)
            .expect("routes")
            .body
            .value
            .as_slice(),
    )
    .expect("decodes");
    let hosts = delta.type_set(VIRTUAL_HOST);
    assert_eq!(hosts.len(), 3);
    for (inline, resource) in full.virtual_hosts.iter().zip(hosts.values()) {
        let host = VirtualHost::decode(resource.body.value.as_slice()).expect("decodes");
        assert_eq!(host.name, resource.name, "Envoy keys virtual hosts by name");
        assert_eq!(resource.name, virtual_host_name(&inline.name));
        assert_eq!(
            VirtualHost {
                name: inline.name.clone(),
                ..host
            },
            *inline,
            "the same routes as the SotW form"
        );
    }
    // The SotW form is untouched; the delta form has no hand-over field left.
    assert!(snapshot.delta_routes.is_some() && delta.delta_routes.is_none());
    assert!(!snapshot.resources.contains_key(VIRTUAL_HOST));
}

#[test]
fn a_weight_change_sends_one_virtual_host_at_any_number_of_rollouts() {
    for n in [2, 50, 500] {
        let mut conn = establish(delta_snapshot(&state(n, 1, 1000)));
        let responses = conn.on_snapshot(delta_snapshot(&state(n, 1, 4000)));
        assert_eq!(summary(&responses), [(VIRTUAL_HOST, 1, 0)], "{n} rollouts");
        let host = &responses[0].resources[0];
        assert_eq!(host.name, virtual_host_name("ns1/app"));
        assert!(
            host.body.value.len() < 1_000,
            "{} bytes",
            host.body.value.len()
        );
        conn.on_delta_request(ack(&responses[0]));
        assert!(conn.is_synced());
    }
}

#[test]
fn a_subscription_to_the_route_configuration_name_gets_all_of_its_virtual_hosts() {
    let snapshot = delta_snapshot(&state(3, 0, 1000));
    let mut conn = establish_with(snapshot.clone(), &[ROUTE_CONFIG_NAME]);
    let responses = conn.on_snapshot(delta_snapshot(&state(3, 2, 5000)));
    assert_eq!(summary(&responses), [(VIRTUAL_HOST, 1, 0)]);
    // A name in another namespace, or the namespace itself, is not a virtual host of it.
    let mut other = establish_with(snapshot, &["other_routes"]);
    assert!(
        other
            .on_snapshot(delta_snapshot(&state(3, 2, 5000)))
            .is_empty()
    );
}

#[test]
fn a_removed_rollout_leaves_its_virtual_host_before_its_clusters() {
    let mut conn = establish(delta_snapshot(&state(3, 0, 1000)));
    // ns2/app goes away.
    let responses = conn.on_snapshot(delta_snapshot(&state(2, 0, 1000)));
    // Phase 2 at once (no cluster added): the virtual host goes (and the filter's policy
    // changes), the clusters stay until both are answered.
    assert_eq!(
        summary(&responses),
        [(VIRTUAL_HOST, 0, 1), (EXTENSION_CONFIG, 1, 0)]
    );
    assert_eq!(
        responses[0].removed_resources,
        [virtual_host_name("ns2/app")]
    );
    assert!(conn.on_delta_request(ack(&responses[0])).is_empty());
    let pruned = conn.on_delta_request(ack(&responses[1]));
    assert_eq!(summary(&pruned), [(CLUSTER, 0, 2), (ENDPOINT, 0, 2)]);
}

#[test]
fn a_new_rollout_gets_its_clusters_before_its_virtual_host() {
    let mut conn = establish(delta_snapshot(&state(2, 0, 1000)));
    let responses = conn.on_snapshot(delta_snapshot(&state(3, 0, 1000)));
    assert_eq!(summary(&responses), [(CLUSTER, 2, 0)]);
    assert!(
        conn.on_delta_request(ack(&responses[0])).is_empty(),
        "routes wait for the endpoint subscription"
    );
    let endpoints = conn.on_delta_request(subscribe(ENDPOINT, &["ns2/app/c", "ns2/app/s"]));
    assert_eq!(summary(&endpoints), [(ENDPOINT, 2, 0)]);
    let routes = conn.on_delta_request(ack(&endpoints[0]));
    assert_eq!(
        summary(&routes),
        [(VIRTUAL_HOST, 1, 0), (EXTENSION_CONFIG, 1, 0)]
    );
    assert_eq!(routes[0].resources[0].name, virtual_host_name("ns2/app"));
}

/// The candidates' payload for one weight change, measured on the translation itself (printed
/// with `--nocapture`; the README quotes them): the whole route configuration (SotW RDS, or
/// delta RDS without VHDS), one virtual host (VHDS), one per-rollout route configuration plus
/// its scope (SRDS), and the filter policy (ECDS, were the weights there).
#[test]
fn payload_of_one_weight_change_by_mechanism() {
    use envoy_types::pb::envoy::config::route::v3::ScopedRouteConfiguration;
    use envoy_types::pb::envoy::config::route::v3::scoped_route_configuration::{
        Key, key::Fragment, key::fragment,
    };
    let mut previous_host = None;
    for m in [100, 1_000, 5_000] {
        let snapshot = translate(&state(m, 1, 2500), &options()).expect("valid");
        let full = snapshot
            .get(ROUTE, ROUTE_CONFIG_NAME)
            .expect("routes")
            .body
            .value
            .len();
        let policy = snapshot
            .get(EXTENSION_CONFIG, "sluice")
            .expect("policy")
            .body
            .value
            .len();
        let delta = snapshot.for_delta();
        let host = delta
            .get(VIRTUAL_HOST, &virtual_host_name("ns1/app"))
            .expect("host");
        let decoded = VirtualHost::decode(host.body.value.as_slice()).expect("decodes");
        let mut own = super::super::build::route_configuration_with(vec![decoded], "x-sluice-hash");
        own.name = "ns1/app".into();
        let scope = ScopedRouteConfiguration {
            name: "ns1/app".into(),
            route_configuration_name: own.name.clone(),
            key: Some(Key {
                fragments: vec![Fragment {
                    r#type: Some(fragment::Type::StringKey("app1.local".into())),
                }],
            }),
            ..Default::default()
        };
        let srds = own.encoded_len() + scope.encoded_len();
        eprintln!(
            "M = {m}: whole route configuration {full} B; one virtual host (VHDS) {} B; \
             per-rollout route configuration + scope (SRDS) {srds} B; filter policy (ECDS) {policy} B",
            host.body.value.len()
        );
        assert!(full > m * 200, "the whole configuration grows with M");
        if let Some(previous) = previous_host {
            assert_eq!(
                host.body.value.len(),
                previous,
                "one virtual host is independent of M"
            );
        }
        previous_host = Some(host.body.value.len());
    }
}

/// Each snapshot shared with the one before, as the server does: sets carry their diff.
fn shared_chain(states: &[TrafficState]) -> Vec<Arc<Snapshot>> {
    let mut out: Vec<Arc<Snapshot>> = Vec::new();
    let mut previous: Option<Snapshot> = None;
    for state in states {
        let mut snapshot = translate(state, &options()).expect("valid");
        if let Some(previous) = &previous {
            snapshot = snapshot.sharing_with(previous);
        }
        out.push(Arc::new(snapshot.for_delta()));
        previous = Some(snapshot);
    }
    out
}

#[test]
fn a_stream_in_step_gets_the_diff_and_one_out_of_step_the_same_by_comparison() {
    let chain = shared_chain(&[
        state(50, 1, 1000),
        state(50, 1, 2000),
        state(49, 1, 2000),
        state(49, 3, 7000),
    ]);
    let hosts = chain[1].type_set(VIRTUAL_HOST);
    let diff = hosts.diff().expect("sharing notes the diff");
    assert_eq!(diff.base, chain[0].type_set(VIRTUAL_HOST).id());
    assert_eq!(diff.changed.len(), 1);

    // In step: every change is applied from the diff; versions as the full comparison gives.
    let mut in_step = establish(chain[0].clone());
    for snapshot in &chain[1..] {
        let responses = in_step.on_snapshot(snapshot.clone());
        let vhds: Vec<_> = responses
            .iter()
            .filter(|r| r.type_url == VIRTUAL_HOST)
            .collect();
        assert_eq!(vhds.len(), 1);
        assert_eq!(
            vhds[0].system_version_info,
            snapshot.type_version(VIRTUAL_HOST),
            "the client holds exactly the set"
        );
        let mut pending = responses;
        while let Some(response) = pending.pop() {
            pending.extend(in_step.on_delta_request(ack(&response)));
        }
        assert!(in_step.is_synced());
    }
    // Out of step (it skipped a set): the full comparison sends the same.
    let mut skipped = establish(chain[0].clone());
    let responses = skipped.on_snapshot(chain[2].clone());
    let vhds = responses
        .iter()
        .find(|r| r.type_url == VIRTUAL_HOST)
        .expect("vhds");
    assert_eq!(
        (vhds.resources.len(), vhds.removed_resources.clone()),
        (1, vec![virtual_host_name("ns49/app")])
    );
    assert_eq!(
        vhds.system_version_info,
        chain[2].type_version(VIRTUAL_HOST)
    );
}

/// A blue/green preview reaches delta Envoys too: its virtual host is a VHDS resource of its own,
/// the same routes as in the SotW form.
#[test]
fn a_preview_is_a_virtual_host_of_its_own() {
    let mut state = state(2, 0, 0);
    let with_preview = state.rollouts.get_mut("ns1/app").expect("rollout");
    with_preview.canary_hash = None;
    with_preview.canary_weight_bp = 0;
    with_preview.preview = Some(sluice_model::Preview {
        hosts: vec!["preview.app1.local".into()],
        hash: "c".into(),
    });
    let snapshot = translate(&state, &options()).expect("valid");
    let delta = snapshot.for_delta();
    let hosts = delta.type_set(VIRTUAL_HOST);
    let names: Vec<&str> = hosts.values().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            virtual_host_name("ns0/app"),
            virtual_host_name("ns1/app"),
            virtual_host_name("ns1/app/preview"),
        ]
    );
    let full = RouteConfiguration::decode(
        snapshot
            .get(ROUTE, ROUTE_CONFIG_NAME)
            .expect("routes")
            .body
            .value
            .as_slice(),
    )
    .expect("decodes");
    let inline = full
        .virtual_hosts
        .iter()
        .find(|v| v.domains.iter().any(|d| d == "preview.app1.local"))
        .expect("the SotW form has the preview");
    let resource = hosts.values().nth(2).expect("preview");
    let host = VirtualHost::decode(resource.body.value.as_slice()).expect("decodes");
    assert_eq!(
        VirtualHost {
            name: inline.name.clone(),
            ..host
        },
        *inline
    );
}
