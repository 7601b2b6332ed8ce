//! Mirror routes in the route configuration: copies with the match and the mirror policy first,
//! the plain routes last; invalid mirror routes are rejected naming the field.
#![allow(clippy::unwrap_used)]

use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, VirtualHost, header_matcher::HeaderMatchSpecifier, route,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use sluice_model::{HeaderMatch, MatchKind, MirrorRoute, RequestMatch, TrafficState};

use super::super::tests::{decoded, demo, options};
use super::super::{ROUTE_CONFIG_NAME, XdsError, translate};
use crate::type_url;

fn with_mirrors(mirrors: Vec<MirrorRoute>) -> TrafficState {
    let mut state = demo();
    state
        .rollouts
        .get_mut("default/demo")
        .unwrap()
        .mirror_routes = mirrors;
    state
}

/// Argo's `GET /api/*` at 25 %, or requests with `x-debug` present.
fn api_mirror() -> MirrorRoute {
    MirrorRoute {
        name: "api".into(),
        matches: vec![
            RequestMatch {
                method: Some(MatchKind::Exact("GET".into())),
                path: Some(MatchKind::Prefix("/api/".into())),
                headers: vec![],
            },
            RequestMatch {
                method: None,
                path: Some(MatchKind::Regex("/v[0-9]+/.*".into())),
                headers: vec![HeaderMatch {
                    name: "x-debug".into(),
                    kind: MatchKind::Present,
                }],
            },
        ],
        percent: 25,
    }
}

fn demo_host(state: &TrafficState) -> VirtualHost {
    let snapshot = translate(state, &options()).expect("translates");
    let routes: RouteConfiguration = decoded(&snapshot, type_url::ROUTE, ROUTE_CONFIG_NAME);
    routes
        .virtual_hosts
        .into_iter()
        .find(|v| v.name == "default/demo")
        .expect("the demo's virtual host")
}

#[test]
fn without_mirror_routes_the_routes_are_unchanged() {
    let host = demo_host(&demo());
    let names: Vec<&str> = host.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["default/demo/aaa", "default/demo/bbb", "default/demo/split"]
    );
    for route in &host.routes {
        let Some(route::Action::Route(action)) = &route.action else {
            panic!("{} is not a route", route.name);
        };
        assert!(action.request_mirror_policies.is_empty());
    }
}

#[test]
fn each_match_is_a_copy_of_every_route_that_also_mirrors_to_the_canary() {
    let plain = demo_host(&demo()).routes;
    let host = demo_host(&with_mirrors(vec![api_mirror()]));
    // Two matches × three routes, then the three plain routes unchanged.
    assert_eq!(host.routes.len(), 9);
    assert_eq!(host.routes[6..], plain[..]);
    for (i, copy) in host.routes[..6].iter().enumerate() {
        let (j, base) = (i / 3, &plain[i % 3]);
        assert_eq!(copy.name, format!("{}/mirror/api/{j}", base.name));
        let Some(route::Action::Route(action)) = &copy.action else {
            panic!("{} is not a route", copy.name);
        };
        let Some(route::Action::Route(base_action)) = &base.action else {
            panic!("{} is not a route", base.name);
        };
        // The request goes where the plain route sends it; a copy goes to the canary.
        assert_eq!(action.cluster_specifier, base_action.cluster_specifier);
        assert_eq!(action.request_mirror_policies.len(), 1);
        let policy = &action.request_mirror_policies[0];
        assert_eq!(policy.cluster, "default/demo/bbb");
        let fraction = policy
            .runtime_fraction
            .as_ref()
            .and_then(|f| f.default_value.as_ref())
            .unwrap();
        assert_eq!((fraction.numerator, fraction.denominator), (25, 0)); // 0: HUNDRED
        // The plain route's header matchers (routing header, bucket) are kept, the match's added.
        let m = copy.r#match.as_ref().unwrap();
        let base_headers = &base.r#match.as_ref().unwrap().headers;
        assert_eq!(m.headers[..base_headers.len()], base_headers[..]);
        let added = &m.headers[base_headers.len()..];
        match j {
            0 => {
                assert_eq!(
                    m.path_specifier,
                    Some(PathSpecifier::Prefix("/api/".into()))
                );
                assert_eq!(added.len(), 1);
                assert_eq!(added[0].name, ":method");
                let Some(HeaderMatchSpecifier::StringMatch(s)) = &added[0].header_match_specifier
                else {
                    panic!("method is not a string match");
                };
                assert_eq!(s.match_pattern, Some(MatchPattern::Exact("GET".into())));
            }
            _ => {
                let Some(PathSpecifier::SafeRegex(re)) = &m.path_specifier else {
                    panic!("path is not a regex: {:?}", m.path_specifier);
                };
                assert_eq!(re.regex, "/v[0-9]+/.*");
                assert_eq!(added.len(), 1);
                assert_eq!(added[0].name, "x-debug");
                assert_eq!(
                    added[0].header_match_specifier,
                    Some(HeaderMatchSpecifier::PresentMatch(true))
                );
            }
        }
    }
}

#[test]
fn mirror_routes_keep_their_order_of_precedence() {
    let mut second = api_mirror();
    second.name = "second".into();
    second.percent = 100;
    let host = demo_host(&with_mirrors(vec![api_mirror(), second]));
    let order: Vec<String> = host
        .routes
        .iter()
        .map(|r| r.name.split("/mirror/").nth(1).unwrap_or("-").to_owned())
        .collect();
    assert_eq!(
        order,
        [
            "api/0", "api/0", "api/0", "api/1", "api/1", "api/1", "second/0", "second/0",
            "second/0", "second/1", "second/1", "second/1", "-", "-", "-"
        ]
    );
}

/// A change that breaks a mirror route, and the field the error must name.
type Case = (Box<dyn Fn(&mut MirrorRoute)>, &'static str);

#[test]
fn invalid_mirror_routes_are_rejected_naming_the_field() {
    let cases: Vec<Case> = vec![
        (Box::new(|m| m.percent = 101), "mirrorRoutes[0].percent"),
        (Box::new(|m| m.name.clear()), "mirrorRoutes[0].name"),
        (Box::new(|m| m.matches.clear()), "mirrorRoutes[0].matches"),
        (
            Box::new(|m| m.matches[0].path = Some(MatchKind::Regex("(".into()))),
            "mirrorRoutes[0].matches[0].path",
        ),
        (
            Box::new(|m| m.matches[0].method = Some(MatchKind::Present)),
            "mirrorRoutes[0].matches[0].method",
        ),
        (
            Box::new(|m| m.matches[1].headers[0].name = "X Debug".into()),
            "mirrorRoutes[0].matches[1].headers[0].name",
        ),
        (
            Box::new(|m| m.matches[1].headers[0].kind = MatchKind::Regex("[".into())),
            "mirrorRoutes[0].matches[1].headers[0].regex",
        ),
    ];
    for (change, field) in cases {
        let mut mirror = api_mirror();
        change(&mut mirror);
        let error = translate(&with_mirrors(vec![mirror]), &options()).unwrap_err();
        let XdsError::InvalidState(sluice_model::ModelError::InvalidField { field: got, .. }) =
            &error
        else {
            panic!("{field}: unexpected {error}");
        };
        assert_eq!(got.to_string(), field, "{error}");
    }
    // Two routes of one name, and a mirror without a canary.
    let error = translate(&with_mirrors(vec![api_mirror(), api_mirror()]), &options())
        .unwrap_err()
        .to_string();
    assert!(error.contains("mirrorRoutes[1].name"), "{error}");
    let mut state = with_mirrors(vec![api_mirror()]);
    let demo = state.rollouts.get_mut("default/demo").unwrap();
    demo.canary_hash = None;
    demo.canary_weight_bp = 0;
    let error = translate(&state, &options()).unwrap_err().to_string();
    assert!(
        error.contains("mirrorRoutes[0]: mirrors to the canary, and there is none"),
        "{error}"
    );
}
