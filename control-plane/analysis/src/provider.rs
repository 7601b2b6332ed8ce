//! The providers, Sluice's I/O edge for analysis: `prometheus` (the HTTP API's instant and range
//! queries) and `web` (any HTTP endpoint, a value picked by JSONPath). Each returns the value for
//! the conditions, or a fault; [`measure`] turns that into a [`Measurement`]. Argo's
//! `metricproviders/prometheus` and `metricproviders/webmetric`.
//!
//! Faults (unreachable, slow past the timeout, a non-2xx answer, a Prometheus error, a result type
//! Argo does not read, a missing JSONPath) are measurement Errors with a message saying which.

use std::time::Duration;

use expr::Value;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    condition::{eval_time, from_json},
    plan::{PlannedMetric, duration},
    resource::{AnalysisPhase, Measurement, PrometheusMetric, WebMetric},
};

/// Argo's default Prometheus query timeout.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(30);
/// Argo's default web metric timeout.
const WEB_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from a provider.
const MAX_BODY: usize = 16 << 20;

/// A provider's value: as shown in the measurement, and as `result` in the conditions.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub shown: String,
    pub value: Value,
}

/// Takes one measurement of `metric`: queries its provider, then evaluates its conditions.
/// `now` gives the clock (start and finish times).
pub async fn measure(
    client: &reqwest::Client,
    metric: &PlannedMetric,
    now: impl Fn() -> Timestamp,
) -> Measurement {
    let started = now();
    let fetched = if let Some(prom) = &metric.spec.provider.prometheus {
        query_prometheus(client, prom, started).await
    } else if let Some(web) = &metric.spec.provider.web {
        query_web(client, web).await
    } else {
        Err("no provider Sluice can run".to_string())
    };
    let (phase, message, value) = match fetched {
        Err(message) => (AnalysisPhase::Error, message, String::new()),
        Ok(measured) => match metric.conditions.evaluate(&measured.value) {
            Ok(phase) => (phase, String::new(), measured.shown),
            Err(message) => (AnalysisPhase::Error, message, measured.shown),
        },
    };
    if phase == AnalysisPhase::Error {
        tracing::warn!(metric = metric.name(), %message, "measurement error");
    }
    Measurement {
        phase,
        message,
        started_at: Some(Time(started)),
        finished_at: Some(Time(now())),
        value,
    }
}

/// Runs a Prometheus instant query at `at` (or the range query) and reads the answer.
pub async fn query_prometheus(
    client: &reqwest::Client,
    prom: &PrometheusMetric,
    at: Timestamp,
) -> Result<Measured, String> {
    if prom.address.is_empty() {
        return Err("prometheus address is not configured".into());
    }
    let base = prom.address.trim_end_matches('/');
    let mut params: Vec<(&str, String)> = vec![("query", prom.query.clone())];
    let path = if let Some(range) = &prom.range_query {
        let start = eval_time(&range.start)
            .map_err(|e| format!("failed to parse rangeQuery.start as time: {e}"))?;
        let end = eval_time(&range.end)
            .map_err(|e| format!("failed to parse rangeQuery.end as time: {e}"))?;
        let step = duration(&Some(range.step.clone()))
            .map_err(|e| format!("failed to parse rangeQuery.step as duration: {e}"))?
            .ok_or("failed to parse rangeQuery.step as duration: empty")?;
        params.push(("start", format!("{start:.3}")));
        params.push(("end", format!("{end:.3}")));
        params.push(("step", format!("{:.3}", step.as_secs_f64())));
        "/api/v1/query_range"
    } else {
        params.push((
            "time",
            format!("{:.3}", at.as_millisecond() as f64 / 1000.0),
        ));
        "/api/v1/query"
    };
    let timeout = match prom.timeout {
        Some(seconds) => Duration::from_secs(
            u64::try_from(seconds)
                .map_err(|_| "prometheus timeout should not be negative".to_string())?,
        ),
        None => PROMETHEUS_TIMEOUT,
    };
    let mut request = client
        .post(format!("{base}{path}"))
        .form(&params)
        .timeout(timeout);
    for header in &prom.headers {
        request = request.header(header.key.as_str(), header.value.as_str());
    }
    let (status, body) = send(request).await?;
    let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        format!("prometheus answered HTTP {status} with a body that is not JSON: {e}")
    })?;
    if answer.get("status").and_then(|s| s.as_str()) != Some("success") {
        let kind = answer
            .get("errorType")
            .and_then(|s| s.as_str())
            .unwrap_or("unknown");
        let error = answer
            .get("error")
            .and_then(|s| s.as_str())
            .unwrap_or("no error given");
        return Err(format!("prometheus: HTTP {status}: {kind}: {error}"));
    }
    prometheus_value(answer.get("data").unwrap_or(&serde_json::Value::Null))
}

/// Argo's `processResponse`: a scalar is a float; a vector a list of its samples' floats; a matrix
/// a list of every sample of every series. Other result types are errors.
pub fn prometheus_value(data: &serde_json::Value) -> Result<Measured, String> {
    let kind = data
        .get("resultType")
        .and_then(|t| t.as_str())
        .unwrap_or("");
    let result = data.get("result").unwrap_or(&serde_json::Value::Null);
    match kind {
        "scalar" => {
            let value = sample(result)?;
            Ok(Measured {
                shown: go_float(value),
                value: Value::Float(value),
            })
        }
        "vector" | "matrix" => {
            let series = result.as_array().ok_or("prometheus result is not a list")?;
            let mut values = Vec::new();
            for item in series {
                if kind == "vector" {
                    values.push(sample(
                        item.get("value").unwrap_or(&serde_json::Value::Null),
                    )?);
                } else {
                    let samples = item
                        .get("values")
                        .and_then(|v| v.as_array())
                        .ok_or("prometheus matrix series without values")?;
                    for s in samples {
                        values.push(sample(s)?);
                    }
                }
            }
            let shown = format!(
                "[{}]",
                values
                    .iter()
                    .map(|v| go_float(*v))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            Ok(Measured {
                shown,
                value: Value::Array(values.into_iter().map(Value::Float).collect()),
            })
        }
        other => Err(format!("Prometheus metric type not supported: {other:?}")),
    }
}

/// One `[timestamp, "value"]` pair's value; Prometheus writes `NaN`, `+Inf`, `-Inf` as such.
fn sample(pair: &serde_json::Value) -> Result<f64, String> {
    let text = pair
        .as_array()
        .and_then(|p| p.get(1))
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("prometheus sample {pair} is not [time, \"value\"]"))?;
    text.parse::<f64>()
        .map_err(|_| format!("prometheus sample value {text:?} is not a number"))
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`, as Argo shows sample values.
pub fn go_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

/// Calls a web metric and picks its value: JSON through `jsonPath` (the first match), or the body
/// as a string when it is not JSON (as Argo does).
pub async fn query_web(client: &reqwest::Client, web: &WebMetric) -> Result<Measured, String> {
    let method = web.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
    let has_body = web.body.as_ref().is_some_and(|b| !b.is_empty()) || web.json_body.is_some();
    if web.body.as_ref().is_some_and(|b| !b.is_empty()) && web.json_body.is_some() {
        return Err("use either Body or JSONBody; both cannot exists for WebMetric payload".into());
    }
    if has_body && method == "GET" {
        return Err(
            "Body/JSONBody can only be used with POST or PUT WebMetric Method types".into(),
        );
    }
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("method {method:?} is not an HTTP method"))?;
    let timeout = match web.timeout_seconds {
        Some(s) if s > 0 => Duration::from_secs(u64::try_from(s).unwrap_or(u64::MAX)),
        _ => WEB_TIMEOUT,
    };
    let mut request = client.request(method, &web.url).timeout(timeout);
    for header in &web.headers {
        request = request.header(header.key.as_str(), header.value.as_str());
    }
    if let Some(body) = &web.body {
        request = request.body(body.clone());
    } else if let Some(json) = &web.json_body {
        request = request
            .header("Content-Type", "application/json")
            .body(json.to_string());
    }
    let (status, body) = send(request).await?;
    if !status.is_success() {
        return Err(format!(
            "received non 2xx response code: {}",
            status.as_u16()
        ));
    }
    web_value(&body, web.json_path.as_deref())
}

/// Argo's `parseResponse`.
pub fn web_value(body: &[u8], json_path: Option<&str>) -> Result<Measured, String> {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        let text = String::from_utf8_lossy(body).into_owned();
        return Ok(Measured {
            shown: text.clone(),
            value: Value::String(text),
        });
    };
    let path = rfc_json_path(json_path.unwrap_or("{$}"));
    use jsonpath_rust::JsonPath;
    let found = json
        .query(&path)
        .map_err(|e| format!("Could not find JSONPath in body: {path}: {e}"))?;
    let first = found
        .first()
        .ok_or_else(|| format!("Could not find JSONPath in body: {path} matches nothing"))?;
    Ok(Measured {
        shown: first.to_string(),
        value: from_json(first),
    })
}

/// Kubernetes JSONPath as Argo writes it (`{$.data.ok}`, `{.data}`) → RFC 9535 (`$.data.ok`).
pub fn rfc_json_path(path: &str) -> String {
    let inner = path
        .trim()
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path.trim())
        .trim();
    if inner.starts_with('$') {
        inner.to_string()
    } else if inner.starts_with('.') || inner.starts_with('[') {
        format!("${inner}")
    } else {
        format!("$.{inner}")
    }
}

async fn send(request: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
    let mut response = request.send().await.map_err(describe)?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if body.len().saturating_add(chunk.len()) > MAX_BODY {
            return Err(format!("answer larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

fn describe(error: reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut message = format!("{what}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    message
}
