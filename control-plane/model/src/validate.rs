//! Validation: the rules a [`TrafficState`] must satisfy before anything is rendered or pushed.
//!
//! The field rules are `sluice_proto::rules`, the very functions the filter validates its policy
//! (`sluice.v1.FilterPolicy`) with: a state that passes here renders to a policy the filter
//! accepts, and a hand-written filter policy is held to the same rules, so a bad rollout is
//! rejected at the control plane, with its name and field, instead of being NACKed by every Envoy.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sluice_proto::rules::{self, Violation};

use crate::{
    FULL_WEIGHT_BP, FieldPath, HeaderRoute, MatchKind, ModelError, RolloutState, RouteTarget,
    Stickiness, TrafficState,
};

/// Longest pod-template hash accepted: hashes become parts of Envoy cluster names and label values.
pub const MAX_HASH_LEN: usize = rules::MAX_HASH_LEN;

impl TrafficState {
    /// Checks every rollout, that each is stored under its own name, and that no host belongs to
    /// two rollouts. Returns the first problem found (in rollout-name order).
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut owner_of_host: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, rollout) in &self.rollouts {
            if *key != rollout.name {
                return Err(ModelError::KeyMismatch {
                    key: key.clone(),
                    name: rollout.name.clone(),
                });
            }
            rollout.validate()?;
            for host in rollout.all_hosts() {
                if let Some(first) = owner_of_host.insert(host, &rollout.name) {
                    return Err(ModelError::HostInTwoRollouts {
                        host: host.clone(),
                        first: first.to_owned(),
                        second: rollout.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

impl RolloutState {
    /// Checks this rollout on its own (see [`TrafficState::validate`] for the rules across
    /// rollouts). Returns the first problem found.
    pub fn validate(&self) -> Result<(), ModelError> {
        let fail = |field: FieldPath, problem: String| ModelError::InvalidField {
            rollout: self.name.clone(),
            field,
            problem,
        };
        let violated = |field: FieldPath| move |v: Violation| fail(field, v.0);

        rules::check_rollout_name(&self.name).map_err(violated(FieldPath::field("name")))?;

        let hosts = FieldPath::field("hosts");
        if self.hosts.is_empty() {
            return Err(fail(hosts, "at least one host is required".into()));
        }
        let mut seen_hosts = BTreeSet::new();
        for (i, host) in self.hosts.iter().enumerate() {
            rules::check_host(host).map_err(violated(hosts.at(i)))?;
            if !seen_hosts.insert(host) {
                return Err(fail(hosts.at(i), format!("{host:?} is listed twice")));
            }
        }

        let versions = FieldPath::field("versions");
        if self.versions.is_empty() {
            return Err(fail(versions, "at least one version is required".into()));
        }
        // An address belongs to one pod, and a pod to one hash.
        let mut version_of_endpoint = HashMap::new();
        for (hash, version) in &self.versions {
            rules::check_hash(hash).map_err(violated(versions.key(hash)))?;
            for (i, endpoint) in version.endpoints.iter().enumerate() {
                if let Some(other) = version_of_endpoint.insert(*endpoint, hash) {
                    return Err(fail(
                        versions.key(hash).then("endpoints").at(i),
                        format!("{endpoint} is also an endpoint of version {other:?}"),
                    ));
                }
            }
        }

        if !self.versions.contains_key(&self.stable_hash) {
            return Err(fail(
                FieldPath::field("stableHash"),
                not_a_version(&self.stable_hash, &self.versions),
            ));
        }
        if let Some(canary) = &self.canary_hash {
            let field = FieldPath::field("canaryHash");
            if !self.versions.contains_key(canary) {
                return Err(fail(field, not_a_version(canary, &self.versions)));
            }
            rules::check_canary_differs(&self.stable_hash, canary).map_err(violated(field))?;
        }

        debug_assert_eq!(FULL_WEIGHT_BP, rules::MAX_WEIGHT_BP);
        rules::check_weight_bp(self.canary_weight_bp)
            .and_then(|()| {
                rules::check_weight_has_canary(self.canary_weight_bp, self.canary_hash.is_some())
            })
            .map_err(violated(FieldPath::field("canaryWeightBp")))?;
        self.validate_additional_weights()
            .map_err(|(field, problem)| fail(field, problem))?;

        let mut route_names = BTreeSet::new();
        for (i, route) in self.header_routes.iter().enumerate() {
            let path = FieldPath::field("headerRoutes").at(i);
            rules::check_route_name(&route.name).map_err(violated(path.then("name")))?;
            if !route_names.insert(&route.name) {
                return Err(fail(
                    path.then("name"),
                    format!("{:?} names two header routes", route.name),
                ));
            }
            self.validate_header_route(route, &path)
                .map_err(|(field, problem)| fail(field, problem))?;
        }

        self.validate_mirror_routes()
            .map_err(|(field, problem)| fail(field, problem))?;
        self.validate_preview()
            .map_err(|(field, problem)| fail(field, problem))?;

        let stickiness = FieldPath::field("stickiness");
        match &self.stickiness {
            Stickiness::None => {}
            Stickiness::Header(name) => {
                rules::check_header_name(name).map_err(violated(stickiness.then("header")))?;
            }
            Stickiness::Cookie {
                name,
                secure,
                same_site,
                ..
            } => {
                let cookie = stickiness.then("cookie");
                rules::check_cookie_name(name).map_err(violated(cookie.then("name")))?;
                rules::check_cookie_secure(name, *secure, *same_site)
                    .map_err(violated(cookie.then("secure")))?;
            }
        }
        Ok(())
    }

    /// Each additional version is a live hash other than stable, canary and the others before it;
    /// canary and additional weights together are at most 100 %.
    fn validate_additional_weights(&self) -> Result<(), (FieldPath, String)> {
        let mut total = self.canary_weight_bp;
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, additional) in self.additional_weights.iter().enumerate() {
            let path = FieldPath::field("additionalWeights").at(i);
            let hash_field = path.then("podTemplateHash");
            let hash = additional.pod_template_hash.as_str();
            if !self.versions.contains_key(hash) {
                return Err((hash_field, not_a_version(hash, &self.versions)));
            }
            rules::check_additional_differs(hash, &self.stable_hash, self.canary_hash.as_deref())
                .map_err(|v| (hash_field.clone(), v.0))?;
            if let Some(first) = seen.insert(hash, i) {
                return Err((
                    hash_field,
                    format!("{hash:?} is also additionalWeights[{first}]"),
                ));
            }
            total = rules::add_weight(total, additional.weight_bp)
                .map_err(|v| (path.then("weightBp"), v.0))?;
        }
        Ok(())
    }

    fn validate_header_route(
        &self,
        route: &HeaderRoute,
        path: &FieldPath,
    ) -> Result<(), (FieldPath, String)> {
        let matches = path.then("matches");
        if route.matches.is_empty() {
            return Err((matches, "at least one match is required".into()));
        }
        for (j, m) in route.matches.iter().enumerate() {
            let at = matches.at(j);
            rules::check_header_name(&m.name).map_err(|v| (at.then("name"), v.0))?;
            if let MatchKind::Regex(re) = &m.kind {
                rules::compile_header_regex(re).map_err(|v| (at.then("regex"), v.0))?;
            }
        }
        let target = path.then("target");
        match &route.target {
            RouteTarget::Canary if self.canary_hash.is_none() => {
                Err((target, "routes to the canary, and there is none".into()))
            }
            RouteTarget::Canary => Ok(()),
            RouteTarget::Hash(hash) if !self.versions.contains_key(hash) => {
                Err((target, not_a_version(hash, &self.versions)))
            }
            RouteTarget::Hash(_) => Ok(()),
        }
    }
}

/// Compiles a header-route regex the way the filter does (`sluice_proto::rules`): anchored at
/// both ends, so it must match the whole header value.
pub fn compile_anchored(re: &str) -> Result<regex_lite::Regex, Violation> {
    rules::compile_header_regex(re)
}

/// See `sluice_proto::rules::check_host`.
pub fn is_valid_host(host: &str) -> bool {
    rules::check_host(host).is_ok()
}

/// See `sluice_proto::rules::check_hash`.
pub fn is_valid_hash(hash: &str) -> bool {
    rules::check_hash(hash).is_ok()
}

/// See `sluice_proto::rules::check_header_name`.
pub fn is_valid_header_name(name: &str) -> bool {
    rules::check_header_name(name).is_ok()
}

/// See `sluice_proto::rules::is_token`.
pub fn is_token(s: &str) -> bool {
    rules::is_token(s)
}

fn not_a_version<V>(hash: &str, versions: &BTreeMap<String, V>) -> String {
    let known: Vec<&str> = versions.keys().map(String::as_str).collect();
    format!("{hash:?} is not one of the versions {known:?}")
}
