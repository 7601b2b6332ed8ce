//! Mirror routes (Argo's `setMirrorRoute`) as Envoy routes: for each mirror route and each of its
//! matches, a copy of every route of the rollout's virtual host with that match added and a
//! `request_mirror_policies` entry sending `percent` % of those requests to the canary's cluster
//! as well. The copies come first, in the model's order, so the first mirror route that matches
//! wins (as in Argo's Istio routes); the request itself goes where the copied route sends it — the
//! version the filter chose — and only that response reaches the client (Envoy drops the
//! shadow's, and marks the shadow by appending `-shadow` to its host).
//!
//! Matches map onto Envoy's route match: the path onto `path` / `prefix` / `safe_regex`, the
//! method onto a `:method` header matcher, headers onto header matchers; all AND-ed within one
//! route, and the OR of a mirror route's matches is one copy per match.

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, Route, header_matcher, route, route_action::RequestMirrorPolicy, route_match,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use sluice_model::{MatchKind, RequestMatch, RolloutState};

use super::cluster_name;

/// `routes` (the rollout's per-version and split routes) preceded by their mirrored copies.
pub(super) fn with_mirror_routes(rollout: &RolloutState, routes: Vec<Route>) -> Vec<Route> {
    let Some(canary) = rollout.canary_hash.as_deref() else {
        return routes;
    };
    let mirror_cluster = cluster_name(rollout, canary);
    let mut out = Vec::new();
    for mirror in &rollout.mirror_routes {
        let policy = RequestMirrorPolicy {
            cluster: mirror_cluster.clone(),
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: Some(FractionalPercent {
                    numerator: mirror.percent,
                    denominator: DenominatorType::Hundred as i32,
                }),
                runtime_key: String::new(),
            }),
            ..Default::default()
        };
        for (j, request) in mirror.matches.iter().enumerate() {
            for route in &routes {
                let mut copy = route.clone();
                copy.name = format!("{}/mirror/{}/{j}", route.name, mirror.name);
                if let Some(m) = copy.r#match.as_mut() {
                    add_match(m, request);
                }
                if let Some(route::Action::Route(action)) = copy.action.as_mut() {
                    action.request_mirror_policies.push(policy.clone());
                }
                out.push(copy);
            }
        }
    }
    out.extend(routes);
    out
}

fn add_match(
    m: &mut envoy_types::pb::envoy::config::route::v3::RouteMatch,
    request: &RequestMatch,
) {
    use route_match::PathSpecifier;
    if let Some(path) = &request.path {
        m.path_specifier = Some(match path {
            MatchKind::Exact(p) => PathSpecifier::Path(p.clone()),
            MatchKind::Prefix(p) => PathSpecifier::Prefix(p.clone()),
            MatchKind::Regex(re) => PathSpecifier::SafeRegex(regex(re)),
            // Validation rejects it; a path is always present.
            MatchKind::Present => PathSpecifier::Prefix("/".into()),
        });
    }
    if let Some(method) = &request.method {
        m.headers.push(header(":method", method));
    }
    for h in &request.headers {
        m.headers.push(header(&h.name, &h.kind));
    }
}

fn regex(re: &str) -> RegexMatcher {
    RegexMatcher {
        regex: re.to_owned(),
        ..Default::default()
    }
}

fn header(name: &str, kind: &MatchKind) -> HeaderMatcher {
    use header_matcher::HeaderMatchSpecifier;
    use string_matcher::MatchPattern;
    let pattern = match kind {
        MatchKind::Exact(v) => MatchPattern::Exact(v.clone()),
        MatchKind::Prefix(v) => MatchPattern::Prefix(v.clone()),
        MatchKind::Regex(re) => MatchPattern::SafeRegex(regex(re)),
        MatchKind::Present => {
            return HeaderMatcher {
                name: name.to_owned(),
                header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(true)),
                ..Default::default()
            };
        }
    };
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(pattern),
            ignore_case: false,
        })),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "mirror_tests.rs"]
mod tests;
