//! Argo's `setMirrorRoute` step → the model's [`MirrorRoute`].
//!
//! Argo's meaning: `match[]` entries are OR-ed, and within one entry `method`, `path` and every
//! `headers` entry are AND-ed, each an exact / prefix / regex string match; `percentage` is the
//! share of matching requests mirrored to the canary (plain percent, default 100); a step with
//! only a name removes the route of that name. Header names are matched case-insensitively
//! (lower-cased here), methods and paths case-sensitively.

use sluice_model::{
    HeaderMatch, MatchKind, MirrorRoute, RequestMatch, Segment,
    validate::{compile_anchored, is_valid_header_name},
};

use crate::resource::{SetMirrorRoute, StringMatch};

/// What one `setMirrorRoute` step does.
pub(crate) enum MirrorStep {
    /// Add the route, or replace the route of the same name in place.
    Set(MirrorRoute),
    /// A step with only a name removes the route of that name.
    Remove(String),
}

/// Reads one step; `field` is the step's path, e.g. `spec.strategy.canary.steps[2].setMirrorRoute`.
/// Errors are `(field path, problem)`.
pub(crate) fn mirror_route(
    step: &SetMirrorRoute,
    field: &str,
) -> Result<MirrorStep, (String, String)> {
    if step.name.is_empty() {
        return Err((format!("{field}.name"), "is required".into()));
    }
    if step.matches.is_empty() {
        return Ok(MirrorStep::Remove(step.name.clone()));
    }
    let percent = match step.percentage {
        None => 100,
        Some(p) => u32::try_from(p).ok().filter(|p| *p <= 100).ok_or_else(|| {
            (
                format!("{field}.percentage"),
                format!("{p} is not a percentage (0 to 100)"),
            )
        })?,
    };
    let mut matches = Vec::with_capacity(step.matches.len());
    for (j, m) in step.matches.iter().enumerate() {
        let at = format!("{field}.match[{j}]");
        // Checked here too, not only by the model, so a step not reached yet is checked as well.
        let kind = |value: &StringMatch, name: &str| {
            let field = || format!("{at}.{name}");
            let kind = string_match(value).ok_or_else(|| {
                (
                    field(),
                    "set exactly one of exact, prefix or regex".to_owned(),
                )
            })?;
            if let MatchKind::Regex(re) = &kind {
                compile_anchored(re).map_err(|v| (field(), v.0))?;
            }
            Ok::<_, (String, String)>(kind)
        };
        let method = m.method.as_ref().map(|v| kind(v, "method")).transpose()?;
        let path = m.path.as_ref().map(|v| kind(v, "path")).transpose()?;
        let mut headers = Vec::with_capacity(m.headers.len());
        for (name, value) in &m.headers {
            if !is_valid_header_name(&name.to_ascii_lowercase()) {
                return Err((
                    format!("{at}.headers"),
                    format!("{name:?} is not an HTTP header name"),
                ));
            }
            headers.push(HeaderMatch {
                name: name.to_ascii_lowercase(),
                kind: kind(value, &format!("headers[{name:?}]"))?,
            });
        }
        matches.push(RequestMatch {
            method,
            path,
            headers,
        });
    }
    Ok(MirrorStep::Set(MirrorRoute {
        name: step.name.clone(),
        matches,
        percent,
    }))
}

fn string_match(value: &StringMatch) -> Option<MatchKind> {
    match (&value.exact, &value.prefix, &value.regex) {
        (Some(exact), None, None) => Some(MatchKind::Exact(exact.clone())),
        (None, Some(prefix), None) => Some(MatchKind::Prefix(prefix.clone())),
        (None, None, Some(regex)) => Some(MatchKind::Regex(regex.clone())),
        _ => None,
    }
}

/// Applies one step to the routes set so far (each with the index of the step that set it).
pub(crate) fn apply(routes: &mut Vec<(usize, MirrorRoute)>, step: usize, action: MirrorStep) {
    match action {
        MirrorStep::Set(route) => match routes.iter_mut().find(|(_, r)| r.name == route.name) {
            Some(slot) => *slot = (step, route),
            None => routes.push((step, route)),
        },
        MirrorStep::Remove(name) => routes.retain(|(_, r)| r.name != name),
    }
}

/// Maps the rest of a model path under `mirrorRoutes[i]` onto the step at `field`.
pub(crate) fn map_path(field: &str, rest: &[Segment]) -> String {
    use Segment::{Field, Index};
    match rest {
        [Field("percent")] => format!("{field}.percentage"),
        [Field("matches"), Index(j), Field("headers"), ..] => format!("{field}.match[{j}].headers"),
        [Field("matches"), Index(j), Field(name), ..] => format!("{field}.match[{j}].{name}"),
        [Field("matches"), ..] => format!("{field}.match"),
        [] => field.to_owned(),
        _ => format!("{field}.name"),
    }
}

#[cfg(test)]
#[path = "mirror_tests.rs"]
mod tests;
