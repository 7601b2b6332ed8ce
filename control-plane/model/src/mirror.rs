//! Mirror routes (Argo's `setMirrorRoute`): a copy of the matching requests, `percent` of them,
//! goes to the canary as well ("shadow" traffic). The client only ever sees the response of the
//! version its request was routed to; the shadow's response is dropped by Envoy.
//!
//! Matching is Argo's: a route's `matches` are OR-ed, and within one [`RequestMatch`] the method,
//! path and headers are AND-ed. An entry with no field matches every request.

use std::collections::BTreeSet;

use sluice_proto::rules::{self, Violation};

use crate::{FieldPath, HeaderMatch, MatchKind, RolloutState};

/// Mirrors `percent` % of the requests matching any of `matches` to the canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorRoute {
    pub name: String,
    /// OR-ed; at least one.
    pub matches: Vec<RequestMatch>,
    /// Share of the matching requests mirrored, `0..=100` (Argo: plain percent, default 100).
    pub percent: u32,
}

/// One of a mirror route's matches: every field given must hold (AND).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestMatch {
    /// Matched against the request's method (`:method`), case-sensitively.
    pub method: Option<MatchKind>,
    /// Matched against the request's path: exact and regex without the query string, prefix with
    /// it (Envoy's route match).
    pub path: Option<MatchKind>,
    /// Lower-case header names; AND-ed.
    pub headers: Vec<HeaderMatch>,
}

/// Largest mirror percentage.
pub const MAX_MIRROR_PERCENT: u32 = 100;

impl RolloutState {
    /// Checks the mirror routes: names valid and unique, a percentage in `0..=100`, at least one
    /// match, header names valid, regexes compile (anchored, as for header routes), `present`
    /// only for headers, and a canary to mirror to. Errors name `mirrorRoutes[i]...`.
    pub(crate) fn validate_mirror_routes(&self) -> Result<(), (FieldPath, String)> {
        let mut names = BTreeSet::new();
        for (i, route) in self.mirror_routes.iter().enumerate() {
            let path = FieldPath::field("mirrorRoutes").at(i);
            let v = |field: FieldPath| move |v: Violation| (field, v.0);
            rules::check_route_name(&route.name).map_err(v(path.then("name")))?;
            if !names.insert(&route.name) {
                return Err((
                    path.then("name"),
                    format!("{:?} names two mirror routes", route.name),
                ));
            }
            if route.percent > MAX_MIRROR_PERCENT {
                return Err((
                    path.then("percent"),
                    format!("{} is not a percentage (0 to 100)", route.percent),
                ));
            }
            let matches = path.then("matches");
            if route.matches.is_empty() {
                return Err((matches, "at least one match is required".into()));
            }
            for (j, m) in route.matches.iter().enumerate() {
                let at = matches.at(j);
                for (field, kind) in [("method", &m.method), ("path", &m.path)] {
                    match kind {
                        Some(MatchKind::Present) => {
                            return Err((
                                at.then(field),
                                "set exactly one of exact, prefix or regex".into(),
                            ));
                        }
                        Some(MatchKind::Regex(re)) => {
                            rules::compile_header_regex(re).map_err(v(at.then(field)))?;
                        }
                        _ => {}
                    }
                }
                for (k, header) in m.headers.iter().enumerate() {
                    let h = at.then("headers").at(k);
                    rules::check_header_name(&header.name).map_err(v(h.then("name")))?;
                    if let MatchKind::Regex(re) = &header.kind {
                        rules::compile_header_regex(re).map_err(v(h.then("regex")))?;
                    }
                }
            }
            if self.canary_hash.is_none() {
                return Err((path, "mirrors to the canary, and there is none".into()));
            }
        }
        Ok(())
    }
}
