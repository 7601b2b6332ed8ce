//! Rendering the traffic model into the filter's policy (`sluice.v1.FilterPolicy`), which the
//! control plane delivers to every Envoy by ECDS.

use sluice_proto::v1 as pb;

use crate::{
    HeaderMatch, HeaderRoute, MatchKind, RolloutState, RouteTarget, Stickiness, TrafficState,
};

/// The filter policy for `state`. Rollouts come in name order and versions in hash order (the
/// model's `BTreeMap` order), so equal states render to byte-identical protobuf and content-hash
/// versioning does not see spurious changes. Render only validated states: this function does not
/// check anything.
pub fn render(state: &TrafficState, routing_header: &str) -> pb::FilterPolicy {
    let rollouts: Vec<pb::RolloutPolicy> = state.rollouts.values().map(render_rollout).collect();
    pb::FilterPolicy {
        routing_header: routing_header.to_owned(),
        bucket_header: String::new(),
        schema_version: schema_version(&rollouts),
        rollouts,
    }
}

/// The lowest schema that holds `rollouts` (`sluice_proto::rules::schema_for`): a policy without
/// additional weights keeps the schema (and the bytes) it had before they existed. Call it again
/// after editing a rendered policy's rollouts.
pub fn schema_version(rollouts: &[pb::RolloutPolicy]) -> u32 {
    sluice_proto::rules::schema_for(rollouts.iter().any(|r| !r.additional_weights.is_empty()))
}

fn render_rollout(rollout: &RolloutState) -> pb::RolloutPolicy {
    pb::RolloutPolicy {
        name: rollout.name.clone(),
        hosts: rollout.hosts.clone(),
        versions: rollout.versions.keys().cloned().collect(),
        stable_hash: rollout.stable_hash.clone(),
        canary_hash: rollout.canary_hash.clone().unwrap_or_default(),
        canary_weight_bp: rollout.canary_weight_bp,
        header_routes: rollout.header_routes.iter().map(render_route).collect(),
        stickiness: render_stickiness(&rollout.stickiness),
        additional_weights: rollout
            .additional_weights
            .iter()
            .map(|a| pb::WeightedVersion {
                name: a.name.clone(),
                hash: a.pod_template_hash.clone(),
                weight_bp: a.weight_bp,
            })
            .collect(),
    }
}

fn render_route(route: &HeaderRoute) -> pb::HeaderRoute {
    pb::HeaderRoute {
        name: route.name.clone(),
        matches: route.matches.iter().map(render_match).collect(),
        target: Some(match &route.target {
            RouteTarget::Canary => pb::header_route::Target::Canary(true),
            RouteTarget::Hash(hash) => pb::header_route::Target::Hash(hash.clone()),
        }),
    }
}

fn render_match(m: &HeaderMatch) -> pb::HeaderMatch {
    use pb::header_match::Match;
    pb::HeaderMatch {
        name: m.name.clone(),
        r#match: Some(match &m.kind {
            MatchKind::Exact(value) => Match::Exact(value.clone()),
            MatchKind::Prefix(value) => Match::Prefix(value.clone()),
            MatchKind::Regex(re) => Match::Regex(re.clone()),
            MatchKind::Present => Match::Present(true),
        }),
    }
}

fn render_stickiness(stickiness: &Stickiness) -> Option<pb::Stickiness> {
    use pb::stickiness::Key;
    let key = match stickiness {
        Stickiness::None => return None,
        Stickiness::Header(name) => Key::Header(name.clone()),
        Stickiness::Cookie {
            name,
            max_age_seconds,
            secure,
            same_site,
        } => Key::Cookie(pb::CookieStickiness {
            name: name.clone(),
            max_age_seconds: *max_age_seconds,
            secure: *secure,
            same_site: same_site.as_str().to_owned(),
        }),
    };
    Some(pb::Stickiness { key: Some(key) })
}
