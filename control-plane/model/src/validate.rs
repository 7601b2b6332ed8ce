//! Validation: the rules a [`TrafficState`] must satisfy before anything is rendered or pushed.
//!
//! The same rules hold for the filter's policy (`sluice.v1.FilterPolicy`): a state that passes here
//! renders to a policy the filter accepts, so a bad rollout is rejected at the control plane, with
//! its name and field, instead of being NACKed by every Envoy.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{
    FULL_WEIGHT_BP, FieldPath, HeaderRoute, MatchKind, ModelError, RolloutState, RouteTarget,
    Stickiness, TrafficState,
};

/// Longest pod-template hash accepted: hashes become parts of Envoy cluster names and label values.
pub const MAX_HASH_LEN: usize = 63;

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
            for host in &rollout.hosts {
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

        if self.name.is_empty()
            || self
                .name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(fail(
                FieldPath::field("name"),
                "must be non-empty, without spaces or control characters".into(),
            ));
        }

        let hosts = FieldPath::field("hosts");
        if self.hosts.is_empty() {
            return Err(fail(hosts, "at least one host is required".into()));
        }
        let mut seen_hosts = BTreeSet::new();
        for (i, host) in self.hosts.iter().enumerate() {
            if !is_valid_host(host) {
                return Err(fail(
                    hosts.at(i),
                    format!(
                        "{host:?} is not a lower-case DNS name without port \
                         (labels of a-z, 0-9 and '-', separated by '.')"
                    ),
                ));
            }
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
            if !is_valid_hash(hash) {
                return Err(fail(versions.key(hash), hash_rule(hash)));
            }
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
            if *canary == self.stable_hash {
                return Err(fail(
                    field,
                    format!("{canary:?} is also the stable hash; a canary must differ from stable"),
                ));
            }
        }

        let weight = FieldPath::field("canaryWeightBp");
        if self.canary_weight_bp > FULL_WEIGHT_BP {
            return Err(fail(
                weight,
                format!(
                    "{} is above {FULL_WEIGHT_BP} (100 %)",
                    self.canary_weight_bp
                ),
            ));
        }
        if self.canary_weight_bp > 0 && self.canary_hash.is_none() {
            return Err(fail(
                weight,
                format!(
                    "{} needs a canary, and there is none",
                    self.canary_weight_bp
                ),
            ));
        }

        let mut route_names = BTreeSet::new();
        for (i, route) in self.header_routes.iter().enumerate() {
            let path = FieldPath::field("headerRoutes").at(i);
            if route.name.is_empty() {
                return Err(fail(path.then("name"), "must be non-empty".into()));
            }
            if !route_names.insert(&route.name) {
                return Err(fail(
                    path.then("name"),
                    format!("{:?} names two header routes", route.name),
                ));
            }
            self.validate_header_route(route, &path)
                .map_err(|(field, problem)| fail(field, problem))?;
        }

        match &self.stickiness {
            Stickiness::None => {}
            Stickiness::Header(name) => {
                if !is_valid_header_name(name) {
                    return Err(fail(
                        FieldPath::field("stickiness").then("header"),
                        header_name_rule(name),
                    ));
                }
            }
            Stickiness::Cookie { name, .. } => {
                if !is_token(name) {
                    return Err(fail(
                        FieldPath::field("stickiness").then("cookie").then("name"),
                        format!(
                            "{name:?} is not a valid cookie name (an HTTP token: letters, digits \
                             and !#$%&'*+-.^_`|~)"
                        ),
                    ));
                }
            }
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
            if !is_valid_header_name(&m.name) {
                return Err((at.then("name"), header_name_rule(&m.name)));
            }
            if let MatchKind::Regex(re) = &m.kind {
                compile_anchored(re).map_err(|e| (at.then("regex"), format!("{re:?}: {e}")))?;
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

/// Compiles a header-route regex the way the filter does: anchored at both ends, so it must match
/// the whole header value.
pub fn compile_anchored(re: &str) -> Result<regex_lite::Regex, regex_lite::Error> {
    regex_lite::Regex::new(&format!("^(?:{re})$"))
}

/// A lower-case DNS name without port: dot-separated labels of `a-z0-9-`, each 1..=63 long and
/// not starting or ending with `-`; at most 253 characters. (IP addresses pass as such names.)
pub fn is_valid_host(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A pod-template hash: 1..=63 characters of `a-z0-9-`.
pub fn is_valid_hash(hash: &str) -> bool {
    !hash.is_empty()
        && hash.len() <= MAX_HASH_LEN
        && hash
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A lower-case HTTP header name (an RFC 9110 token), or an HTTP/2 pseudo-header such as `:path`.
pub fn is_valid_header_name(name: &str) -> bool {
    let token = name.strip_prefix(':').unwrap_or(name);
    is_token(token) && !token.bytes().any(|b| b.is_ascii_uppercase())
}

/// An RFC 9110 token: one or more of ALPHA, DIGIT and ``!#$%&'*+-.^_`|~``.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn hash_rule(hash: &str) -> String {
    format!("{hash:?} is not a pod-template hash (1 to {MAX_HASH_LEN} characters of a-z, 0-9, '-')")
}

fn header_name_rule(name: &str) -> String {
    format!("{name:?} is not a lower-case HTTP header name")
}

fn not_a_version<V>(hash: &str, versions: &BTreeMap<String, V>) -> String {
    let known: Vec<&str> = versions.keys().map(String::as_str).collect();
    format!("{hash:?} is not one of the versions {known:?}")
}
