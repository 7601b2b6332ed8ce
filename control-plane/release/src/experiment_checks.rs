//! The checks of an experiment step (Argo's validation, and what the engine cannot run), named
//! by field.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use sluice_api::experiment::{ExperimentAnalysis, ExperimentStep, PodTemplateMetadata};

use crate::spec::{Invalid, Step};

/// A checked experiment step.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Experiment {
    pub templates: Vec<Template>,
    pub duration: Option<Duration>,
    pub analyses: Vec<ExperimentAnalysis>,
    /// The step's `dryRun` and `analysisRunMetadata`, for each of its runs.
    pub options: crate::analysis::RunOptions,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Template {
    pub name: String,
    pub spec_ref: SpecRef,
    pub replicas: i32,
    pub weight: Option<i32>,
    pub metadata: PodTemplateMetadata,
    pub selector: Option<LabelSelector>,
    /// Standalone: the key of `spec.staticEndpoints` that runs it.
    pub version: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpecRef {
    Stable,
    Canary,
}

pub(super) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// A DNS-1123 label (the template's name ends the ReplicaSet's and its pods' names).
fn dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Checks an experiment step (`field` is the step's `experiment`). `named`: the rollout names its
/// versions (`spec.version`, standalone), whose keys are `static_endpoints`.
pub(crate) fn check(
    field: &str,
    step: &ExperimentStep,
    named: Option<&str>,
    static_endpoints: &[&str],
) -> Result<Experiment, Invalid> {
    if step.templates.is_empty() {
        return Err(invalid(
            format!("{field}.templates"),
            "is empty: an experiment runs at least one template",
        ));
    }
    let mut templates: Vec<Template> = Vec::new();
    for (i, t) in step.templates.iter().enumerate() {
        let at = format!("{field}.templates[{i}]");
        if !dns_label(&t.name) {
            return Err(invalid(
                format!("{at}.name"),
                format!(
                    "{:?} is not a DNS label (lower-case letters, digits, '-'; at most 63)",
                    t.name
                ),
            ));
        }
        if templates.iter().any(|o| o.name == t.name) {
            return Err(invalid(
                format!("{at}.name"),
                format!("{:?} names two templates", t.name),
            ));
        }
        let spec_ref = match t.spec_ref.as_str() {
            "stable" => SpecRef::Stable,
            "canary" => SpecRef::Canary,
            other => {
                return Err(invalid(
                    format!("{at}.specRef"),
                    format!("{other:?} is not stable or canary"),
                ));
            }
        };
        let replicas = t.replicas.unwrap_or(1);
        if replicas < 0 {
            return Err(invalid(
                format!("{at}.replicas"),
                format!("{replicas} is negative"),
            ));
        }
        if let Some(weight) = t.weight {
            if !(0..=100).contains(&weight) {
                return Err(invalid(
                    format!("{at}.weight"),
                    format!("{weight} is not between 0 and 100"),
                ));
            }
            if weight > 0 && replicas == 0 {
                return Err(invalid(
                    format!("{at}.weight"),
                    "a template with a weight needs replicas (traffic never goes to a version \
                     without pods)",
                ));
            }
        }
        match (named, t.version.as_deref()) {
            (Some(_), None) => {
                return Err(invalid(
                    format!("{at}.version"),
                    "is required with spec.version: the key of spec.staticEndpoints that runs \
                     this template",
                ));
            }
            (Some(own), Some(version)) => {
                if !static_endpoints.contains(&version) {
                    return Err(invalid(
                        format!("{at}.version"),
                        format!("{version:?} is not a key of spec.staticEndpoints"),
                    ));
                }
                if version == own {
                    return Err(invalid(
                        format!("{at}.version"),
                        format!(
                            "{version:?} is spec.version: a template runs a version of its own"
                        ),
                    ));
                }
                if templates
                    .iter()
                    .any(|o| o.version.as_deref() == Some(version))
                {
                    return Err(invalid(
                        format!("{at}.version"),
                        format!("{version:?} runs two templates"),
                    ));
                }
            }
            (None, Some(_)) => {
                return Err(invalid(
                    format!("{at}.version"),
                    "is for standalone rollouts (spec.version); a template's pods come from \
                     its specRef here",
                ));
            }
            (None, None) => {}
        }
        templates.push(Template {
            name: t.name.clone(),
            spec_ref,
            replicas,
            weight: t.weight,
            metadata: t.metadata.clone().unwrap_or_default(),
            selector: t.selector.clone(),
            version: t.version.clone(),
        });
    }
    let duration = match step.duration.as_deref() {
        None | Some("") => None,
        Some(text) => Some(Duration::from_secs(u64::from(
            sluice_api::duration::argo_duration_string_seconds(text)
                .map_err(|problem| invalid(format!("{field}.duration"), problem))?,
        ))),
    };
    let mut names: Vec<&str> = Vec::new();
    for (i, a) in step.analyses.iter().enumerate() {
        let at = format!("{field}.analyses[{i}]");
        if !dns_label(&a.name) {
            return Err(invalid(
                format!("{at}.name"),
                format!("{:?} is not a DNS label", a.name),
            ));
        }
        if names.contains(&a.name.as_str()) {
            return Err(invalid(
                format!("{at}.name"),
                format!("{:?} names two analyses", a.name),
            ));
        }
        names.push(&a.name);
        if a.template_name.is_empty() {
            return Err(invalid(format!("{at}.templateName"), "is required"));
        }
        for (j, arg) in a.args.iter().enumerate() {
            if let Some(value) = &arg.value {
                let known = |tag: &str| known_tag(tag, &templates, duration.is_some());
                tags(value)
                    .and_then(|found| match found.iter().find(|t| !known(t)) {
                        Some(tag) => Err(format!(
                            "{{{{{tag}}}}} is none of templates.<name>.podTemplateHash, \
                             templates.<name>.replicaset.name, experiment.availableAt, \
                             experiment.finishedAt (with a duration) of this experiment"
                        )),
                        None => Ok(()),
                    })
                    .map_err(|problem| invalid(format!("{at}.args[{j}].value"), problem))?;
            }
        }
    }
    Ok(Experiment {
        templates,
        duration,
        analyses: step.analyses.clone(),
        options: crate::analysis::RunOptions {
            dry_run: step.dry_run.clone(),
            measurement_retention: Vec::new(),
            metadata: step.analysis_run_metadata.clone().unwrap_or_default(),
        },
    })
}

/// The `{{tag}}`s of an argument value (trimmed, as Argo's template engine reads them).
fn tags(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("{{") {
        let after_open = &rest[start + 2..];
        let end = after_open
            .find("}}")
            .ok_or_else(|| format!("{value:?} opens {{{{ without closing it"))?;
        out.push(after_open[..end].trim().to_owned());
        rest = &after_open[end + 2..];
    }
    Ok(out)
}

fn known_tag(tag: &str, templates: &[Template], has_duration: bool) -> bool {
    if tag == "experiment.availableAt" || (tag == "experiment.finishedAt" && has_duration) {
        return true;
    }
    let Some(rest) = tag.strip_prefix("templates.") else {
        return false;
    };
    templates.iter().any(|t| {
        rest.strip_prefix(t.name.as_str())
            .is_some_and(|field| field == ".podTemplateHash" || field == ".replicaset.name")
    })
}

/// Argo: the canary's weight at an experiment step plus its templates' weights is at most 100
/// (stable gets what they leave).
pub(crate) fn check_weights(steps: &[Step]) -> Result<(), Invalid> {
    for (i, step) in steps.iter().enumerate() {
        let Some(experiment) = &step.experiment else {
            continue;
        };
        let canary = crate::canary::at_step(steps, i).weight;
        let total = experiment
            .templates
            .iter()
            .fold(canary, |sum, t| sum.saturating_add(t.weight.unwrap_or(0)));
        if total > 100 {
            return Err(invalid(
                format!("spec.strategy.canary.steps[{i}].experiment.templates"),
                format!(
                    "the canary's weight {canary} and the templates' weights add up to {total}, \
                     above 100"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_read_trimmed() {
        assert_eq!(
            tags("a {{ templates.baseline.podTemplateHash }} b {{x}}").unwrap_or_default(),
            vec!["templates.baseline.podTemplateHash", "x"]
        );
        assert!(tags("{{open").is_err());
    }

    #[test]
    fn dns_labels() {
        assert!(dns_label("baseline"));
        assert!(dns_label("canary-2"));
        assert!(!dns_label("Canary"));
        assert!(!dns_label("-a"));
        assert!(!dns_label(""));
    }
}
