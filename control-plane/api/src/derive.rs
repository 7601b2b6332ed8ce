//! Derivation: one Rollout document (+ the endpoints of its versions) → one [`RolloutState`].
//!
//! Pure. The status says where the rollout is (Argo's controller, or Sluice's step engine, wrote
//! it); the spec says what each step does. From both:
//!
//! - stable = `status.stableRS`; canary = `status.currentPodHash` when it differs from stable and
//!   has pods: a new version without pods yet, or an aborted canary scaled to zero, is no canary
//!   (everything goes to stable);
//! - weights count in units of `trafficRouting.maxTrafficWeight` (default 100), converted to basis
//!   points by [`WeightScale::to_bp`];
//! - canary weight = `status.canary.weights.canary.weight` when those weights are the current
//!   canary's (their `podTemplateHash` is `currentPodHash`, or absent), else the last `setWeight`
//!   at or before `status.currentStepIndex`; 100 % once every step is done (the canary is not yet
//!   stable); 0 when aborted, when no `setWeight` is reached, or without a canary strategy
//!   (blue-green: all traffic stays on stable until promotion makes the new version stable);
//! - header routes = the `setHeaderRoute` steps reached, in order; a step with only a name removes
//!   the route of that name; every header route targets the canary;
//! - mirror routes = the `setMirrorRoute` steps reached, in order, the same way (see
//!   [`crate::mirror`]); none once every step is done (Argo removes them at promotion) or when
//!   aborted;
//! - stickiness from `spec.strategy.canary.stickiness`, hosts from `spec.hosts` plus the caller's;
//! - blue/green: the preview hosts and the preview header route (see [`crate::bluegreen`]);
//! - additional weighted versions (A/B/n) = `status.canary.weights.additional` (see
//!   [`additional`]).

use std::collections::BTreeMap;

use sluice_model::{
    FULL_WEIGHT_BP, FieldPath, HeaderMatch, HeaderRoute, MatchKind, MirrorRoute, ModelError,
    RolloutState, RouteTarget, SameSite, Segment, Stickiness, Version,
};

use crate::{
    ApiError, Rollout, bluegreen, mirror,
    resource::{CanaryStrategy, RolloutStatus, SetHeaderRoute, StickinessSpec},
    weight::{MAX_TRAFFIC_WEIGHT_FIELD, WeightScale},
};

/// Where the versions given to [`derive`] come from, to name them in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VersionSource {
    /// The caller (e.g. the Kubernetes adapter, from pods): errors use the model's names.
    Caller,
    /// `spec.staticEndpoints` (standalone file mode).
    StaticEndpoints,
}

/// The rollout's name in the traffic model: `namespace/name`, namespace defaulting to `default`.
pub fn rollout_name(doc: &Rollout) -> Result<String, ApiError> {
    let namespace = doc.metadata.namespace.as_deref().unwrap_or("default");
    match doc.metadata.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(format!("{namespace}/{name}")),
        _ => Err(ApiError::Invalid {
            rollout: format!("{namespace}/"),
            field: "metadata.name".into(),
            problem: "is required".into(),
        }),
    }
}

/// Derives the traffic state of one rollout. `versions` are the live versions (pod-template hash →
/// ready endpoints); the stable and canary hashes must be among them. `extra_hosts` are added to
/// `spec.hosts` (e.g. the hosts of the rollout's services). The result is validated.
pub fn derive_rollout(
    doc: &Rollout,
    versions: &BTreeMap<String, Version>,
    extra_hosts: &[String],
) -> Result<RolloutState, ApiError> {
    derive(doc, versions, extra_hosts, &[], VersionSource::Caller)
}

/// [`derive_rollout`] for a blue/green rollout whose preview Service has `preview_hosts` (added
/// to `spec.strategy.blueGreen.previewHosts`; ignored without a blue/green strategy).
pub fn derive_rollout_with_preview(
    doc: &Rollout,
    versions: &BTreeMap<String, Version>,
    extra_hosts: &[String],
    preview_hosts: &[String],
) -> Result<RolloutState, ApiError> {
    derive(
        doc,
        versions,
        extra_hosts,
        preview_hosts,
        VersionSource::Caller,
    )
}

pub(crate) fn derive(
    doc: &Rollout,
    versions: &BTreeMap<String, Version>,
    extra_hosts: &[String],
    preview_hosts: &[String],
    source: VersionSource,
) -> Result<RolloutState, ApiError> {
    let name = rollout_name(doc)?;
    let invalid = |field: &str, problem: String| ApiError::Invalid {
        rollout: name.clone(),
        field: field.to_owned(),
        problem,
    };
    let no_status = RolloutStatus::default();
    let status = doc.status.as_ref().unwrap_or(&no_status);
    let strategy = doc.spec.strategy.canary.as_ref();

    let known = |field: &str, hash: &str| {
        if versions.contains_key(hash) {
            return Ok(());
        }
        let known: Vec<&str> = versions.keys().map(String::as_str).collect();
        Err(invalid(
            field,
            match source {
                VersionSource::StaticEndpoints => {
                    format!("{hash:?} has no entry in spec.staticEndpoints (entries: {known:?})")
                }
                VersionSource::Caller => format!("{hash:?} is not a live version ({known:?})"),
            },
        ))
    };
    let stable = match status.stable_rs.as_deref() {
        Some(hash) if !hash.is_empty() => hash,
        _ => {
            return Err(invalid(
                "status.stableRS",
                "is required: the pod-template hash of the stable version".into(),
            ));
        }
    };
    known("status.stableRS", stable)?;
    let canary = match status
        .current_pod_hash
        .as_deref()
        .filter(|hash| !hash.is_empty() && *hash != stable)
    {
        // No pods (yet, or any more): nothing to send to. A file names every version it has, so
        // there a missing entry is a mistake unless the rollout is aborted.
        Some(hash)
            if !versions.contains_key(hash)
                && (status.abort || source == VersionSource::Caller) =>
        {
            None
        }
        Some(hash) => {
            known("status.currentPodHash", hash)?;
            Some(hash)
        }
        None => None,
    };
    let scale = WeightScale::of(&doc.spec).map_err(|p| invalid(MAX_TRAFFIC_WEIGHT_FIELD, p))?;

    // Check every step, reached or not, so a mistake shows before the rollout gets there.
    let steps = strategy.map(|s| s.steps.as_slice()).unwrap_or_default();
    let mut step_routes = Vec::new();
    let mut step_mirrors = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if let Some(weight) = step.set_weight {
            scale
                .to_bp(weight)
                .map_err(|p| invalid(&step_field(i, "setWeight"), p))?;
        }
        if let Some(pause) = &step.pause {
            pause
                .duration_seconds()
                .map_err(|p| invalid(&step_field(i, "pause.duration"), p))?;
        }
        if let Some(route) = &step.set_header_route {
            let base = step_field(i, "setHeaderRoute");
            if route.name.is_empty() {
                return Err(invalid(&format!("{base}.name"), "is required".into()));
            }
            let route =
                header_route(route, &base, RouteTarget::Canary).map_err(|(f, p)| invalid(&f, p))?;
            step_routes.push((i, route));
        }
        if let Some(route) = &step.set_mirror_route {
            let route = mirror::mirror_route(route, &step_field(i, "setMirrorRoute"))
                .map_err(|(f, p)| invalid(&f, p))?;
            step_mirrors.push((i, route));
        }
    }
    let progress = Progress::of(steps.len(), status.current_step_index)
        .map_err(|p| invalid("status.currentStepIndex", p))?;

    let mut weight = Weight {
        bp: 0,
        field: "status.currentPodHash".into(),
    };
    // Header routes with the index of the step that set each.
    let mut routes: Vec<(usize, HeaderRoute)> = Vec::new();
    let mut mirrors: Vec<(usize, MirrorRoute)> = Vec::new();
    if let Some(canary) = canary.filter(|_| !status.abort) {
        weight = canary_weight(strategy, status, progress, scale, canary)
            .map_err(|(field, problem)| invalid(&field, problem))?;
        for (step, route) in step_routes
            .into_iter()
            .filter(|(i, _)| progress.reaches(*i))
        {
            apply_route_step(&mut routes, step, route);
        }
        if progress != Progress::AllDone {
            for (step, route) in step_mirrors
                .into_iter()
                .filter(|(i, _)| progress.reaches(*i))
            {
                mirror::apply(&mut mirrors, step, route);
            }
        }
    }

    let additional = additional::additional_weights(status, versions, source, scale)
        .map_err(|(field, problem)| invalid(&field, problem))?;

    let stickiness = match strategy.and_then(|s| s.stickiness.as_ref()) {
        None => Stickiness::None,
        Some(spec) => stickiness(spec).map_err(|p| invalid(STICKINESS, p))?,
    };

    let mut hosts: Vec<String> = doc
        .spec
        .hosts
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    for host in extra_hosts {
        let host = host.to_ascii_lowercase();
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }

    let mut route_fields: Vec<String> = routes
        .iter()
        .map(|(step, _)| step_field(*step, "setHeaderRoute"))
        .collect();
    let mut header_routes: Vec<HeaderRoute> = routes.into_iter().map(|(_, route)| route).collect();
    let blue_green = match &doc.spec.strategy.blue_green {
        Some(bg) => bluegreen::preview(bg, status, stable, versions, source, preview_hosts)
            .map_err(|(field, problem)| invalid(&field, problem))?,
        None => bluegreen::PreviewParts::default(),
    };
    if let Some(route) = blue_green.route {
        route_fields.push(format!("{}.previewHeaderRoute", bluegreen::FIELD));
        header_routes.push(route);
    }
    let mirror_steps: Vec<usize> = mirrors.iter().map(|(step, _)| *step).collect();
    let state = RolloutState {
        name: name.clone(),
        hosts,
        versions: versions.clone(),
        stable_hash: stable.to_owned(),
        canary_hash: canary.map(str::to_owned),
        canary_weight_bp: weight.bp,
        header_routes,
        mirror_routes: mirrors.into_iter().map(|(_, route)| route).collect(),
        additional_weights: additional.weights,
        stickiness,
        preview: blue_green.preview,
    };
    let paths = PathMap {
        spec_hosts: doc.spec.hosts.len(),
        source,
        weight_field: weight.field,
        route_fields,
        mirror_steps,
        preview_spec_hosts: blue_green.spec_hosts,
        additional_fields: additional.fields,
    };
    state.validate().map_err(|error| match error {
        ModelError::InvalidField { field, problem, .. } => invalid(&paths.map(&field), problem),
        error => ApiError::Model { error },
    })?;
    Ok(state)
}

const STICKINESS: &str = "spec.strategy.canary.stickiness";

fn step_field(step: usize, rest: &str) -> String {
    format!("spec.strategy.canary.steps[{step}].{rest}")
}

/// Where the rollout is in its steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// This many steps are reached: those before `currentStepIndex` and the one at it (in
    /// progress).
    Reached(usize),
    /// `currentStepIndex` is past the last step.
    AllDone,
}

impl Progress {
    fn of(steps: usize, current: Option<i32>) -> Result<Progress, String> {
        let current = current.unwrap_or(0);
        let current = usize::try_from(current).map_err(|_| format!("{current} is negative"))?;
        Ok(if current >= steps {
            Progress::AllDone
        } else {
            Progress::Reached(current + 1)
        })
    }

    /// Whether the step at `index` is reached.
    fn reaches(self, index: usize) -> bool {
        match self {
            Progress::AllDone => true,
            Progress::Reached(count) => index < count,
        }
    }
}

/// The canary weight and the field it was read from.
struct Weight {
    bp: u32,
    field: String,
}

fn canary_weight(
    strategy: Option<&CanaryStrategy>,
    status: &RolloutStatus,
    progress: Progress,
    scale: WeightScale,
    canary: &str,
) -> Result<Weight, (String, String)> {
    // Weights recorded for another canary (e.g. the one this canary replaced) say nothing about
    // this one.
    let recorded = status
        .canary
        .as_ref()
        .and_then(|c| c.weights.as_ref())
        .filter(|w| {
            w.canary
                .pod_template_hash
                .as_deref()
                .is_none_or(|hash| hash == canary)
        });
    if let Some(weights) = recorded {
        let field = "status.canary.weights.canary.weight".to_owned();
        let bp = scale
            .to_bp(weights.canary.weight)
            .map_err(|p| (field.clone(), p))?;
        return Ok(Weight { bp, field });
    }
    let Some(strategy) = strategy else {
        return Ok(Weight {
            bp: 0,
            field: "spec.strategy".into(),
        });
    };
    let reached = match progress {
        Progress::AllDone => {
            return Ok(Weight {
                bp: FULL_WEIGHT_BP,
                field: "status.currentStepIndex".into(),
            });
        }
        Progress::Reached(count) => &strategy.steps[..count.min(strategy.steps.len())],
    };
    let last_set = reached
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, step)| step.set_weight.map(|weight| (i, weight)));
    match last_set {
        None => Ok(Weight {
            bp: 0,
            field: "status.currentStepIndex".into(),
        }),
        Some((i, weight)) => {
            let field = step_field(i, "setWeight");
            let bp = scale.to_bp(weight).map_err(|p| (field.clone(), p))?;
            Ok(Weight { bp, field })
        }
    }
}

/// What one `setHeaderRoute` step does.
pub(crate) enum RouteStep {
    /// Add the route, or replace the route of the same name in place.
    Set(HeaderRoute),
    /// A step with only a name removes the route of that name.
    Remove(String),
}

/// Reads a header route (a `setHeaderRoute` step, or blue/green's `previewHeaderRoute`) whose
/// field is `base`, routing to `target`. Errors are (field, problem).
pub(crate) fn header_route(
    step: &SetHeaderRoute,
    base: &str,
    target: RouteTarget,
) -> Result<RouteStep, (String, String)> {
    let field = |rest: &str| format!("{base}{rest}");
    if step.matches.is_empty() {
        if step.name.is_empty() {
            return Err((field(".name"), "is required".into()));
        }
        return Ok(RouteStep::Remove(step.name.clone()));
    }
    let mut matches = Vec::with_capacity(step.matches.len());
    for (j, m) in step.matches.iter().enumerate() {
        let value = &m.header_value;
        let kind = match (&value.exact, &value.prefix, &value.regex) {
            (Some(exact), None, None) => MatchKind::Exact(exact.clone()),
            (None, Some(prefix), None) => MatchKind::Prefix(prefix.clone()),
            (None, None, Some(regex)) => MatchKind::Regex(regex.clone()),
            _ => {
                return Err((
                    field(&format!(".match[{j}].headerValue")),
                    "set exactly one of exact, prefix or regex".into(),
                ));
            }
        };
        matches.push(HeaderMatch {
            name: m.header_name.to_ascii_lowercase(),
            kind,
        });
    }
    Ok(RouteStep::Set(HeaderRoute {
        name: step.name.clone(),
        matches,
        target,
    }))
}

fn apply_route_step(routes: &mut Vec<(usize, HeaderRoute)>, step: usize, action: RouteStep) {
    match action {
        RouteStep::Set(route) => match routes.iter_mut().find(|(_, r)| r.name == route.name) {
            Some(slot) => *slot = (step, route),
            None => routes.push((step, route)),
        },
        RouteStep::Remove(name) => routes.retain(|(_, r)| r.name != name),
    }
}

fn stickiness(spec: &StickinessSpec) -> Result<Stickiness, String> {
    match (&spec.header, &spec.cookie) {
        (Some(header), None) => Ok(Stickiness::Header(header.to_ascii_lowercase())),
        (None, Some(cookie)) => Ok(Stickiness::Cookie {
            name: cookie.name.clone(),
            max_age_seconds: cookie.max_age_seconds.unwrap_or(0),
            secure: cookie.secure.unwrap_or(false),
            same_site: SameSite::parse(cookie.same_site.as_deref().unwrap_or_default())
                .map_err(|v| format!("cookie.sameSite: {v}"))?,
        }),
        _ => Err("set exactly one of header or cookie".into()),
    }
}

/// Maps a model field path back onto the document the state was derived from.
struct PathMap {
    spec_hosts: usize,
    source: VersionSource,
    weight_field: String,
    /// The document field of each header route (a step's `setHeaderRoute`, `previewHeaderRoute`).
    route_fields: Vec<String>,
    mirror_steps: Vec<usize>,
    /// How many preview hosts are `spec.strategy.blueGreen.previewHosts` (the rest: the caller's).
    preview_spec_hosts: usize,
    /// The document field of each additional weight (`status.canary.weights.additional[j]`).
    additional_fields: Vec<String>,
}

impl PathMap {
    fn map(&self, path: &FieldPath) -> String {
        use Segment::{Field, Index, Key};
        match path.0.as_slice() {
            [Field("name")] => "metadata.name".into(),
            [Field("hosts")] => "spec.hosts".into(),
            [Field("hosts"), Index(i)] if *i < self.spec_hosts => format!("spec.hosts[{i}]"),
            [Field("versions"), Key(hash), rest @ ..]
                if self.source == VersionSource::StaticEndpoints =>
            {
                match rest {
                    [Field("endpoints"), Index(i)] => {
                        format!("spec.staticEndpoints[{hash:?}][{i}]")
                    }
                    _ => format!("spec.staticEndpoints[{hash:?}]"),
                }
            }
            [Field("versions")] if self.source == VersionSource::StaticEndpoints => {
                "spec.staticEndpoints".into()
            }
            [Field("stableHash")] => "status.stableRS".into(),
            [Field("canaryHash")] => "status.currentPodHash".into(),
            [Field("canaryWeightBp")] => self.weight_field.clone(),
            [Field("headerRoutes"), Index(i), rest @ ..] if *i < self.route_fields.len() => {
                let tail = match rest {
                    [Field("matches"), Index(j), Field("name")] => {
                        format!(".match[{j}].headerName")
                    }
                    [Field("matches"), Index(j), Field(kind)] => {
                        format!(".match[{j}].headerValue.{kind}")
                    }
                    [Field("matches"), ..] => ".match".into(),
                    _ => ".name".into(),
                };
                format!("{}{tail}", self.route_fields[*i])
            }
            [Field("preview"), Field("hosts"), Index(i)] if *i < self.preview_spec_hosts => {
                format!("{}.previewHosts[{i}]", bluegreen::FIELD)
            }
            [Field("preview"), Field("hosts"), ..] => {
                format!("{}.previewService", bluegreen::FIELD)
            }
            [Field("mirrorRoutes"), Index(i), rest @ ..] if *i < self.mirror_steps.len() => {
                mirror::map_path(&step_field(self.mirror_steps[*i], "setMirrorRoute"), rest)
            }
            [Field("additionalWeights"), Index(i), rest @ ..]
                if *i < self.additional_fields.len() =>
            {
                additional::map_path(&self.additional_fields[*i], rest)
            }
            [Field("stickiness"), Field("header")] => format!("{STICKINESS}.header"),
            [Field("stickiness"), Field("cookie"), Field(field)] => {
                format!("{STICKINESS}.cookie.{field}")
            }
            _ => path.to_string(),
        }
    }
}

#[path = "derive_additional.rs"]
mod additional;

#[cfg(test)]
#[path = "derive_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "derive_additional_tests.rs"]
mod additional_tests;
