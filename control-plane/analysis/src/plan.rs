//! Planning a run: templates + arguments → the resolved, validated metrics a run measures
//! ([`RunPlan`]). Argo's `NewAnalysisRunFromTemplates`, `ResolveMetricArgs`, `ValidateMetrics`,
//! `GetDryRunMetrics` and `GetMeasurementRetentionMetrics`, as one pure function.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::{
    AnalysisError,
    args::{PodHashes, merge_args, substitute_metric},
    condition::Conditions,
    resource::{AnalysisTemplateSpec, Argument, Metric, MetricProvider},
};

/// Argo's `DefaultConsecutiveErrorLimit`.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i32 = 4;
/// Argo's `DefaultMeasurementHistoryLimit`: measurements kept per metric.
pub const DEFAULT_MEASUREMENT_HISTORY_LIMIT: usize = 10;
/// Argo's `DefaultErrorRetryInterval`: the wait after a measurement Error.
pub const ERROR_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// A run ready to measure: its metrics resolved and checked.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub metrics: Vec<PlannedMetric>,
    /// The arguments as resolved (shown in the run's spec).
    pub args: Vec<(String, String)>,
}

/// One metric with Argo's defaults applied.
#[derive(Clone, Debug)]
pub struct PlannedMetric {
    /// The metric as resolved (arguments substituted).
    pub spec: Metric,
    pub interval: Option<Duration>,
    pub initial_delay: Option<Duration>,
    /// `None`: measure until the run is terminated.
    pub effective_count: Option<i32>,
    /// -1: disabled.
    pub failure_limit: i32,
    pub inconclusive_limit: i32,
    pub consecutive_error_limit: i32,
    /// 0: disabled.
    pub consecutive_success_limit: i32,
    pub dry_run: bool,
    /// Measurements kept.
    pub retention: usize,
    pub conditions: Conditions,
}

impl PlannedMetric {
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// Plans a run from templates (already looked up; the caller reports a missing one with
/// [`AnalysisError::TemplateNotFound`]), the caller's arguments and the pod-template hashes.
/// Every error names the metric, argument or rule at fault.
pub fn plan_run(
    templates: &[&AnalysisTemplateSpec],
    incoming_args: &[Argument],
    hashes: &PodHashes,
) -> Result<RunPlan, AnalysisError> {
    let mut template_args: Vec<Argument> = Vec::new();
    let mut metrics: Vec<&Metric> = Vec::new();
    let mut dry_run = Vec::new();
    let mut retention = Vec::new();
    for template in templates {
        for arg in &template.args {
            match template_args.iter().find(|a| a.name == arg.name) {
                // Argo's flattenArgs: the same name twice must agree.
                Some(seen)
                    if seen.value != arg.value && arg.value.is_some() && seen.value.is_some() =>
                {
                    return Err(AnalysisError::Argument {
                        arg: arg.name.clone(),
                        message: "declared twice with different values".into(),
                    });
                }
                Some(_) => {}
                None => template_args.push(arg.clone()),
            }
        }
        metrics.extend(&template.metrics);
        dry_run.extend(template.dry_run.iter().cloned());
        retention.extend(template.measurement_retention.iter().cloned());
    }
    if metrics.is_empty() {
        return Err(AnalysisError::InvalidRun {
            field: "metrics".into(),
            message: "no metrics specified".into(),
        });
    }
    let args = merge_args(&template_args, incoming_args, hashes)?;
    let mut planned: Vec<PlannedMetric> = Vec::with_capacity(metrics.len());
    for (index, metric) in metrics.into_iter().enumerate() {
        if planned.iter().any(|m| m.spec.name == metric.name) {
            return Err(AnalysisError::InvalidRun {
                field: format!("metrics[{index}]"),
                message: format!("duplicate name '{}'", metric.name),
            });
        }
        let resolved = substitute_metric(metric, &args)?;
        planned.push(plan_metric(resolved)?);
    }
    for (index, rule) in dry_run.iter().enumerate() {
        let matched = matching(&rule.metric_name, &planned, "dryRun", index)?;
        for i in matched {
            planned[i].dry_run = true;
        }
    }
    for (index, rule) in retention.iter().enumerate() {
        let matched = matching(&rule.metric_name, &planned, "measurementRetention", index)?;
        if rule.limit > 0 {
            for i in matched {
                planned[i].retention = usize::try_from(rule.limit).unwrap_or(usize::MAX);
            }
        }
    }
    Ok(RunPlan {
        metrics: planned,
        args,
    })
}

/// The metrics a rule's `metricName` matches: Argo matches it as an unanchored Go regular
/// expression, and documents `*` alone as "all metrics". A rule matching nothing is an error.
fn matching(
    pattern: &str,
    metrics: &[PlannedMetric],
    field: &str,
    index: usize,
) -> Result<Vec<usize>, AnalysisError> {
    let err = |message: String| AnalysisError::InvalidRun {
        field: format!("{field}[{index}]"),
        message,
    };
    let matched: Vec<usize> = if pattern == "*" {
        (0..metrics.len()).collect()
    } else {
        let re = regex_lite::Regex::new(pattern).map_err(|e| {
            err(format!(
                "metricName {pattern:?} is not a regular expression: {e}"
            ))
        })?;
        (0..metrics.len())
            .filter(|&i| re.is_match(metrics[i].name()))
            .collect()
    };
    if matched.is_empty() {
        return Err(err("Rule didn't match any metric name(s)".into()));
    }
    Ok(matched)
}

/// One metric's defaults and Argo's `ValidateMetric`.
pub fn plan_metric(spec: Metric) -> Result<PlannedMetric, AnalysisError> {
    let name = spec.name.clone();
    let invalid = |field: &str, message: String| AnalysisError::InvalidSpec {
        metric: name.clone(),
        field: field.to_string(),
        message,
    };
    let int = |field: &str, value: &Option<IntOrString>| -> Result<Option<i32>, AnalysisError> {
        match value {
            None => Ok(None),
            Some(IntOrString::Int(i)) => Ok(Some(*i)),
            Some(IntOrString::String(s)) => s
                .trim()
                .parse::<i32>()
                .map(Some)
                .map_err(|_| invalid(field, format!("{s:?} is not an integer"))),
        }
    };
    let count = int("count", &spec.count)?.unwrap_or(0);
    let failure_limit = int("failureLimit", &spec.failure_limit)?.unwrap_or(0);
    let inconclusive_limit = int("inconclusiveLimit", &spec.inconclusive_limit)?.unwrap_or(0);
    let consecutive_error_limit = int("consecutiveErrorLimit", &spec.consecutive_error_limit)?
        .unwrap_or(DEFAULT_CONSECUTIVE_ERROR_LIMIT);
    let consecutive_success_limit =
        int("consecutiveSuccessLimit", &spec.consecutive_success_limit)?.unwrap_or(0);
    if count < 0 {
        return Err(invalid("count", "must be >= 0".into()));
    }
    if consecutive_success_limit < 0 {
        return Err(invalid("consecutiveSuccessLimit", "must be >= 0".into()));
    }
    if failure_limit < -1 {
        return Err(invalid(
            "failureLimit",
            "must be >= 0, or -1 to be disabled".into(),
        ));
    }
    if consecutive_success_limit == 0 && failure_limit == -1 {
        return Err(invalid(
            "failureLimit",
            "failureLimit and consecutiveSuccessLimit cannot both be disabled".into(),
        ));
    }
    if inconclusive_limit < 0 {
        return Err(invalid("inconclusiveLimit", "must be >= 0".into()));
    }
    if consecutive_error_limit < 0 {
        return Err(invalid("consecutiveErrorLimit", "must be >= 0".into()));
    }
    if count > 0 {
        let needed = if failure_limit >= 0 {
            failure_limit.saturating_add(consecutive_success_limit)
        } else {
            consecutive_success_limit
        };
        if count < needed {
            return Err(invalid(
                "count",
                format!(
                    "count ({count}) must be >= failureLimit + consecutiveSuccessLimit \
                     ({failure_limit} + {consecutive_success_limit})"
                ),
            ));
        }
        if count < inconclusive_limit {
            return Err(invalid(
                "count",
                "count must be >= inconclusiveLimit".into(),
            ));
        }
    }
    let interval = duration(&spec.interval).map_err(|m| invalid("interval", m))?;
    if count > 1 && interval.is_none() {
        return Err(invalid(
            "interval",
            "interval must be specified when count > 1".into(),
        ));
    }
    let initial_delay = duration(&spec.initial_delay).map_err(|m| invalid("initialDelay", m))?;
    check_provider(&spec.provider).map_err(|(field, m)| invalid(&field, m))?;
    let conditions = Conditions::compile(
        spec.success_condition.as_deref(),
        spec.failure_condition.as_deref(),
    )
    .map_err(|(field, m)| invalid(field, m))?;
    // Argo's EffectiveCount: count absent or 0 → 1 without an interval, unbounded with one.
    let effective_count = match (count, interval) {
        (0, None) => Some(1),
        (0, Some(_)) => None,
        (n, _) => Some(n),
    };
    Ok(PlannedMetric {
        spec,
        interval,
        initial_delay,
        effective_count,
        failure_limit,
        inconclusive_limit,
        consecutive_error_limit,
        consecutive_success_limit,
        dry_run: false,
        retention: DEFAULT_MEASUREMENT_HISTORY_LIMIT,
        conditions,
    })
}

/// A Go duration (`time.ParseDuration`); empty is absent. Negative durations are rejected.
pub fn duration(text: &Option<String>) -> Result<Option<Duration>, String> {
    let Some(text) = text.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let nanos = sluice_api::duration::parse_go_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration like \"30s\", \"5m\" or \"1h\""))?;
    let nanos = u64::try_from(nanos).map_err(|_| format!("{text:?} is negative"))?;
    Ok(Some(Duration::from_nanos(nanos)))
}

fn check_provider(provider: &MetricProvider) -> Result<(), (String, String)> {
    let count = usize::from(provider.prometheus.is_some())
        + usize::from(provider.web.is_some())
        + provider.other.len();
    if count == 0 {
        return Err(("provider".into(), "no provider specified".into()));
    }
    if count > 1 {
        return Err(("provider".into(), "multiple providers specified".into()));
    }
    if let Some(name) = provider.other.keys().next() {
        return Err((
            format!("provider.{name}"),
            "not supported by Sluice (prometheus and web are)".into(),
        ));
    }
    if let Some(prom) = &provider.prometheus {
        if prom.query.trim().is_empty() {
            return Err(("provider.prometheus.query".into(), "is empty".into()));
        }
        if prom.timeout.is_some_and(|t| t < 0) {
            return Err((
                "provider.prometheus.timeout".into(),
                "prometheus timeout should not be negative".into(),
            ));
        }
    }
    if let Some(web) = &provider.web
        && web.url.trim().is_empty()
    {
        return Err(("provider.web.url".into(), "is empty".into()));
    }
    Ok(())
}
