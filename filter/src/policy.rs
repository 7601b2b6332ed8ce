//! Decoding, validation and compilation of the plugin configuration (`sluice.v1.FilterPolicy`).
//!
//! The compiled form is what the per-request path needs and nothing else: a host → rollout map,
//! version hashes by index, header-route targets resolved to a version index, regexes compiled
//! and anchored.
//!
//! The rules each field must satisfy are `sluice_proto::rules`, the same functions the control
//! plane validates its model with, so a policy is valid here iff it is valid there.

use std::collections::HashMap;

use prost::Message;
use sluice_proto::rules::{self, SameSite, Violation};
use sluice_proto::v1::{self as pb, header_match, header_route, stickiness};

use crate::hosts::HostMap;

/// Canary weight meaning "all traffic", in basis points.
pub const MAX_WEIGHT_BP: u32 = rules::MAX_WEIGHT_BP;

/// Why a policy was rejected. Messages name the object and the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The configuration looked like JSON but is not a valid `FilterPolicy` in the proto3 JSON form.
    #[error("policy JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The configuration is not a valid binary `FilterPolicy`.
    #[error("policy protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The policy decoded but a field is invalid.
    #[error("{object}: {field}: {message}")]
    Invalid {
        /// `policy`, `rollout "default/demo"` or `rollouts[2]` (when the name itself is at fault).
        object: String,
        /// The field path in the JSON form, e.g. `headerRoutes[0].matches[1].regex`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// A validated policy, ready for the per-request path.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// Lower-case name of the request header that carries the chosen hash to the router.
    pub routing_header: String,
    /// When set, weights live in the routes: the filter writes the request's bucket into this
    /// (lower-case) header instead of applying `weight_bp` (see [`crate::decision::draw`]).
    pub bucket_header: Option<String>,
    /// The rollouts, in policy order.
    pub rollouts: Vec<Rollout>,
    /// Normalised host → index in `rollouts`.
    hosts: HostMap,
}

/// One rollout, compiled.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// Rollout name, e.g. `default/checkout`.
    pub name: String,
    /// Live version hashes; decisions refer to them by index.
    pub versions: Vec<String>,
    /// Index of the stable hash in `versions`.
    pub stable: usize,
    /// Index of the canary hash in `versions`, if there is a canary.
    pub canary: Option<usize>,
    /// Canary share in basis points, `0..=10000`.
    pub weight_bp: u32,
    /// Further versions with a share (A/B/n), in policy order; see
    /// [`crate::decision::version_of_bucket`] for the buckets each gets.
    pub additional: Vec<Additional>,
    /// Header routes in policy order; the first match wins.
    pub header_routes: Vec<HeaderRoute>,
    /// How clients are kept on one version, if at all.
    pub stickiness: Option<Sticky>,
}

/// One more version with a share of the weighted traffic (`RolloutPolicy.additional_weights`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Additional {
    /// Who asked for it (an experiment template's name), for logs.
    pub name: String,
    /// Index of its hash in the rollout's `versions`.
    pub version: usize,
    /// Its share in basis points; canary and all additional shares sum to at most 10000.
    pub weight_bp: u32,
}

/// A header route: all `matches` must hold; the request then goes to `versions[target]`.
#[derive(Debug, Clone)]
pub struct HeaderRoute {
    /// Route name, for logs.
    pub name: String,
    /// AND-ed header tests.
    pub matches: Vec<HeaderMatch>,
    /// Index of the target hash in the rollout's `versions`.
    pub target: usize,
}

/// One header test; `header` is lower-case.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Lower-case header name.
    pub header: String,
    /// The test applied to the header's value.
    pub kind: MatchKind,
}

/// The test a [`HeaderMatch`] applies to a header value.
#[derive(Debug, Clone)]
pub enum MatchKind {
    /// The value equals this string.
    Exact(String),
    /// The value starts with this string.
    Prefix(String),
    /// The whole value matches (the regex is anchored as `^(?:…)$`).
    Regex(regex_lite::Regex),
    /// The header is present.
    Present,
}

/// Where a client's sticky key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// The value of this (lower-case) request header.
    Header(String),
    /// A cookie; clients without it get a new key and a `Set-Cookie`.
    Cookie(StickyCookie),
}

/// The sticky cookie and the attributes of the `Set-Cookie` that hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyCookie {
    /// Cookie name.
    pub name: String,
    /// `Max-Age` of the cookie set on responses; 0 = session cookie.
    pub max_age_seconds: u32,
    /// Whether the cookie carries `Secure`.
    pub secure: bool,
    /// Its `SameSite` attribute.
    pub same_site: SameSite,
}

impl CompiledPolicy {
    /// Decodes a plugin configuration: JSON (proto3 JSON mapping) when its first non-whitespace
    /// byte is `{`, binary protobuf otherwise; then validates and compiles it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PolicyError> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        let policy: pb::FilterPolicy = if first == Some(&b'{') {
            serde_json::from_slice(bytes)?
        } else {
            pb::FilterPolicy::decode(bytes)?
        };
        Self::compile(policy)
    }

    /// Validates and compiles a decoded policy.
    pub fn compile(policy: pb::FilterPolicy) -> Result<Self, PolicyError> {
        rules::check_schema_version(policy.schema_version)
            .map_err(|v| violated("policy", "schemaVersion", v))?;
        let routing_header = if policy.routing_header.is_empty() {
            sluice_proto::DEFAULT_ROUTING_HEADER.to_owned()
        } else {
            rules::check_routing_header(&policy.routing_header)
                .map_err(|v| violated("policy", "routingHeader", v))?;
            policy.routing_header
        };

        let bucket_header = match policy.bucket_header.as_str() {
            "" => None,
            name => {
                rules::check_bucket_header(name, &routing_header)
                    .map_err(|v| violated("policy", "bucketHeader", v))?;
                Some(name.to_owned())
            }
        };

        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut hosts = HostMap::default();
        for (index, rollout) in policy.rollouts.iter().enumerate() {
            rules::check_rollout_name(&rollout.name)
                .map_err(|v| violated(format!("rollouts[{index}]"), "name", v))?;
            let object = rollout_object(&rollout.name);
            if let Some(first) = names.insert(&rollout.name, index) {
                return Err(invalid(
                    object,
                    "name",
                    format!("duplicate of rollouts[{first}]"),
                ));
            }
            if rollout.hosts.is_empty() {
                return Err(invalid(object, "hosts", "at least one host is required"));
            }
            for (h, host) in rollout.hosts.iter().enumerate() {
                rules::check_host(host).map_err(|v| violated(&object, format!("hosts[{h}]"), v))?;
                if let Some(other) = hosts.insert(host, index) {
                    let owner = policy.rollouts.get(other).map_or("", |r| r.name.as_str());
                    return Err(invalid(
                        object,
                        format!("hosts[{h}]"),
                        format!("{host:?} is also served by rollout {owner:?}"),
                    ));
                }
            }
        }

        let rollouts = policy
            .rollouts
            .into_iter()
            .map(|r| compile_rollout(r, &routing_header))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            routing_header,
            bucket_header,
            rollouts,
            hosts,
        })
    }

    /// The rollout serving `authority` (normalised by `sluice_proto::rules::normalize_host`:
    /// trailing dot and port removed, case folded), with its index.
    pub fn rollout_for_host(&self, authority: &str) -> Option<(usize, &Rollout)> {
        self.rollout_for_authority(authority.as_bytes())
    }

    /// Whether a request of some rollout can have a header tested (a header route, or
    /// stickiness by header or cookie). When none can, the filter reads only `:authority`.
    pub fn reads_headers(&self) -> bool {
        self.rollouts
            .iter()
            .any(|r| !r.header_routes.is_empty() || r.stickiness.is_some())
    }

    /// [`CompiledPolicy::rollout_for_host`] for the `:authority` header's raw bytes, as the
    /// per-request path has them: no UTF-8 check, no allocation.
    pub fn rollout_for_authority(&self, authority: &[u8]) -> Option<(usize, &Rollout)> {
        let index = self.hosts.get(authority)?;
        Some((index, self.rollouts.get(index)?))
    }
}

impl Rollout {
    /// The hash of the version at `index`, or the stable hash for an out-of-range index.
    pub fn hash(&self, index: usize) -> &str {
        self.versions
            .get(index)
            .or_else(|| self.versions.get(self.stable))
            .map_or("", String::as_str)
    }
}

fn rollout_object(name: &str) -> String {
    format!("rollout {name:?}")
}

fn violated(object: impl Into<String>, field: impl Into<String>, v: Violation) -> PolicyError {
    invalid(object, field, v.0)
}

fn invalid(
    object: impl Into<String>,
    field: impl Into<String>,
    message: impl Into<String>,
) -> PolicyError {
    PolicyError::Invalid {
        object: object.into(),
        field: field.into(),
        message: message.into(),
    }
}

/// `routing_header` is the policy's internal header: no rule may read it, because a client could
/// then pick a version by sending it.
fn compile_rollout(
    rollout: pb::RolloutPolicy,
    routing_header: &str,
) -> Result<Rollout, PolicyError> {
    let object = rollout_object(&rollout.name);
    if rollout.versions.is_empty() {
        return Err(invalid(
            object,
            "versions",
            "at least one version is required",
        ));
    }
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    for (i, hash) in rollout.versions.iter().enumerate() {
        rules::check_hash(hash).map_err(|v| violated(&object, format!("versions[{i}]"), v))?;
        if index_of.insert(hash, i).is_some() {
            return Err(invalid(
                object,
                format!("versions[{i}]"),
                format!("duplicate {hash:?}"),
            ));
        }
    }
    let lookup = |field: &str, hash: &str| {
        index_of
            .get(hash)
            .copied()
            .ok_or_else(|| invalid(&object, field, format!("{hash:?} is not one of versions")))
    };

    let stable = lookup("stableHash", &rollout.stable_hash)?;
    let canary = if rollout.canary_hash.is_empty() {
        None
    } else {
        let canary = lookup("canaryHash", &rollout.canary_hash)?;
        rules::check_canary_differs(&rollout.stable_hash, &rollout.canary_hash)
            .map_err(|v| violated(&object, "canaryHash", v))?;
        Some(canary)
    };
    rules::check_weight_bp(rollout.canary_weight_bp)
        .and_then(|()| rules::check_weight_has_canary(rollout.canary_weight_bp, canary.is_some()))
        .map_err(|v| violated(&object, "canaryWeightBp", v))?;

    let mut additional = Vec::with_capacity(rollout.additional_weights.len());
    let mut total = rollout.canary_weight_bp;
    for (i, weighted) in rollout.additional_weights.iter().enumerate() {
        let field = format!("additionalWeights[{i}]");
        let hash_field = format!("{field}.hash");
        let version = lookup(&hash_field, &weighted.hash)?;
        rules::check_additional_differs(
            &weighted.hash,
            &rollout.stable_hash,
            Some(rollout.canary_hash.as_str()).filter(|c| !c.is_empty()),
        )
        .map_err(|v| violated(&object, &hash_field, v))?;
        if let Some(first) = additional
            .iter()
            .position(|a: &Additional| a.version == version)
        {
            return Err(invalid(
                &object,
                hash_field,
                format!("{:?} is also additionalWeights[{first}]", weighted.hash),
            ));
        }
        total = rules::add_weight(total, weighted.weight_bp)
            .map_err(|v| violated(&object, format!("{field}.weightBp"), v))?;
        additional.push(Additional {
            name: weighted.name.clone(),
            version,
            weight_bp: weighted.weight_bp,
        });
    }

    let mut header_routes = Vec::with_capacity(rollout.header_routes.len());
    let mut route_names: HashMap<&str, usize> = HashMap::new();
    for (r, route) in rollout.header_routes.iter().enumerate() {
        let field = format!("headerRoutes[{r}]");
        rules::check_route_name(&route.name)
            .map_err(|v| violated(&object, format!("{field}.name"), v))?;
        if let Some(first) = route_names.insert(&route.name, r) {
            return Err(invalid(
                &object,
                format!("{field}.name"),
                format!("{:?} also names headerRoutes[{first}]", route.name),
            ));
        }
        if route.matches.is_empty() {
            return Err(invalid(
                &object,
                format!("{field}.matches"),
                "at least one match is required",
            ));
        }
        let matches = route
            .matches
            .iter()
            .enumerate()
            .map(|(m, hm)| {
                compile_match(
                    &object,
                    &format!("{field}.matches[{m}]"),
                    hm,
                    routing_header,
                )
            })
            .collect::<Result<_, _>>()?;
        let target = match &route.target {
            Some(header_route::Target::Canary(true)) => canary.ok_or_else(|| {
                invalid(
                    &object,
                    format!("{field}.canary"),
                    "the rollout has no canaryHash",
                )
            })?,
            Some(header_route::Target::Canary(false)) => {
                return Err(invalid(
                    &object,
                    format!("{field}.canary"),
                    "false is not a target; use true or a hash",
                ));
            }
            Some(header_route::Target::Hash(hash)) => lookup(&format!("{field}.hash"), hash)?,
            None => {
                return Err(invalid(
                    &object,
                    &field,
                    "a target (canary or hash) is required",
                ));
            }
        };
        header_routes.push(HeaderRoute {
            name: route.name.clone(),
            matches,
            target,
        });
    }

    let stickiness = match rollout.stickiness.map(|s| s.key) {
        None => None,
        Some(None) => {
            return Err(invalid(
                &object,
                "stickiness",
                "a key (header or cookie) is required",
            ));
        }
        Some(Some(stickiness::Key::Header(name))) => {
            rules::check_header_name(&name)
                .and_then(|()| rules::check_not_routing_header(&name, routing_header))
                .map_err(|v| violated(&object, "stickiness.header", v))?;
            Some(Sticky::Header(name))
        }
        Some(Some(stickiness::Key::Cookie(cookie))) => {
            rules::check_cookie_name(&cookie.name)
                .map_err(|v| violated(&object, "stickiness.cookie.name", v))?;
            let same_site = SameSite::parse(&cookie.same_site)
                .map_err(|v| violated(&object, "stickiness.cookie.sameSite", v))?;
            rules::check_cookie_secure(&cookie.name, cookie.secure, same_site)
                .map_err(|v| violated(&object, "stickiness.cookie.secure", v))?;
            Some(Sticky::Cookie(StickyCookie {
                name: cookie.name,
                max_age_seconds: cookie.max_age_seconds,
                secure: cookie.secure,
                same_site,
            }))
        }
    };

    Ok(Rollout {
        name: rollout.name,
        versions: rollout.versions,
        stable,
        canary,
        weight_bp: rollout.canary_weight_bp,
        additional,
        header_routes,
        stickiness,
    })
}

fn compile_match(
    object: &str,
    field: &str,
    m: &pb::HeaderMatch,
    routing_header: &str,
) -> Result<HeaderMatch, PolicyError> {
    rules::check_header_name(&m.name)
        .and_then(|()| rules::check_not_routing_header(&m.name, routing_header))
        .map_err(|v| violated(object, format!("{field}.name"), v))?;
    let kind = match &m.r#match {
        Some(header_match::Match::Exact(s)) => MatchKind::Exact(s.clone()),
        Some(header_match::Match::Prefix(s)) => MatchKind::Prefix(s.clone()),
        Some(header_match::Match::Regex(re)) => rules::compile_header_regex(re)
            .map(MatchKind::Regex)
            .map_err(|v| violated(object, format!("{field}.regex"), v))?,
        Some(header_match::Match::Present(true)) => MatchKind::Present,
        Some(header_match::Match::Present(false)) => {
            return Err(invalid(
                object,
                format!("{field}.present"),
                "only true is supported",
            ));
        }
        None => {
            return Err(invalid(
                object,
                field,
                "one of exact, prefix, regex or present is required",
            ));
        }
    };
    Ok(HeaderMatch {
        header: m.name.clone(),
        kind,
    })
}
