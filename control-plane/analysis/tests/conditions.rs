//! Conditions evaluated as Argo evaluates them: every condition of Argo's docs
//! (docs/features/analysis.md, docs/analysis/*.md) with a result and the phase Argo gives.

use AnalysisPhase::{Error, Failed, Inconclusive, Successful};
use expr::Value;
use sluice_analysis::{AnalysisPhase, condition::Conditions};

fn floats(values: &[f64]) -> Value {
    Value::Array(values.iter().map(|v| Value::Float(*v)).collect())
}

fn json(text: &str) -> Value {
    sluice_analysis::condition::from_json(&serde_json::from_str(text).expect("test JSON"))
}

fn phase(success: Option<&str>, failure: Option<&str>, result: &Value) -> AnalysisPhase {
    let conditions = Conditions::compile(success, failure).expect("conditions compile");
    conditions.evaluate(result).unwrap_or(Error)
}

fn success(condition: &str, result: Value) -> AnalysisPhase {
    phase(Some(condition), None, &result)
}

fn failure(condition: &str, result: Value) -> AnalysisPhase {
    phase(None, Some(condition), &result)
}

#[test]
fn prometheus_vector_conditions() {
    assert_eq!(success("result[0] >= 0.95", floats(&[0.99])), Successful);
    assert_eq!(success("result[0] >= 0.95", floats(&[0.5])), Failed);
    assert_eq!(success("result[0] <= 0.95", floats(&[0.5])), Successful);
    assert_eq!(success("result[0] <= 0.01", floats(&[0.02])), Failed);
    assert_eq!(success("result[0] >= 0.90", floats(&[0.9])), Successful);
    assert_eq!(failure("result[0] >= 10", floats(&[10.0])), Failed);
    assert_eq!(failure("result[0] >= 10", floats(&[3.0])), Successful);
    assert_eq!(
        success("all(result, # < 1000)", floats(&[10.0, 999.0])),
        Successful
    );
    assert_eq!(
        success("all(result, # < 1000)", floats(&[10.0, 1000.0])),
        Failed
    );
    assert_eq!(
        success("max(result) < 0.05", floats(&[0.01, 0.04])),
        Successful
    );
    assert_eq!(success("max(result) < 0.05", floats(&[0.01, 0.06])), Failed);
}

#[test]
fn both_conditions_and_inconclusive() {
    let both = |r: f64| {
        phase(
            Some("result[0] >= 0.90"),
            Some("result[0] < 0.50"),
            &floats(&[r]),
        )
    };
    assert_eq!(both(0.95), Successful);
    assert_eq!(both(0.3), Failed);
    assert_eq!(both(0.7), Inconclusive);
    // No condition at all: Successful unless the provider failed.
    assert_eq!(phase(None, None, &floats(&[])), Successful);
}

#[test]
fn nan_and_infinity_as_argo_documents() {
    // docs/features/analysis.md "NaN and Infinity".
    assert_eq!(
        success("isNaN(result) || result >= 0.95", Value::Float(f64::NAN)),
        Successful
    );
    assert_eq!(
        phase(
            Some("result >= 0.95"),
            Some("result < 0.95"),
            &Value::Float(f64::NAN)
        ),
        Inconclusive
    );
    assert_eq!(success("result >= 0.95", Value::Float(f64::NAN)), Failed);
    assert_eq!(
        success("result >= 0.95", Value::Float(f64::INFINITY)),
        Successful
    );
    assert_eq!(
        failure("isInf(result)", Value::Float(f64::INFINITY)),
        Failed
    );
    assert_eq!(failure("isInf(result)", Value::Float(0.5)), Successful);
}

#[test]
fn empty_results_as_argo_documents() {
    // docs/features/analysis.md "Empty array".
    assert_eq!(
        success("len(result) == 0 || result[0] >= 0.95", floats(&[])),
        Successful
    );
    assert_eq!(
        success("len(result) > 0 && result[0] >= 0.95", floats(&[])),
        Failed
    );
    // Without a guard, indexing an empty result is an evaluation error (a measurement Error).
    let conditions = Conditions::compile(Some("result[0] >= 0.95"), None).expect("compiles");
    let error = conditions
        .evaluate(&floats(&[]))
        .expect_err("index out of range");
    assert!(error.contains("metric result is nil or empty"), "{error}");
}

#[test]
fn default_and_is_nil_look_at_the_result() {
    // Datadog-style nil results: `default(result, 0)` from docs/analysis/datadog.md.
    assert_eq!(success("default(result, 0) < 0.05", Value::Nil), Successful);
    assert_eq!(
        success("default(result, 0) < 0.05", Value::Float(0.2)),
        Failed
    );
    assert_eq!(
        success("default(result, 0) < 10", Value::Float(3.0)),
        Successful
    );
    assert_eq!(failure("default(result, 0) > 5", Value::Nil), Successful);
    assert_eq!(success("isNil(result)", Value::Nil), Successful);
    assert_eq!(success("isNil(result)", Value::Float(1.0)), Failed);
    // Without default(), a nil result does not compare: Error.
    assert_eq!(success("result < 0.05", Value::Nil), Error);
}

#[test]
fn web_results() {
    // docs/analysis/web.md
    assert_eq!(
        success(
            "result.ok && result.successPercent >= 0.90",
            json(r#"{"ok": true, "successPercent": 0.95}"#)
        ),
        Successful
    );
    assert_eq!(
        success(
            "result.ok && result.successPercent >= 0.90",
            json(r#"{"ok": false, "successPercent": 0.95}"#)
        ),
        Failed
    );
    assert_eq!(success("result == true", json("true")), Successful);
    assert_eq!(
        success("result == 'true'", Value::String("true".into())),
        Successful
    );
    assert_eq!(
        success(r#"result == "I am OK""#, Value::String("I am OK".into())),
        Successful
    );
    assert_eq!(
        success("result == 'ok'", Value::String("not ok".into())),
        Failed
    );
    assert_eq!(
        success(
            "result.successRate >= 0.95",
            json(r#"{"successRate": 0.96}"#)
        ),
        Successful
    );
    let apdex = json(
        r#"{"service_apdex": {"values": {"values": [{"value": "9950"}, {"value": "9901"}]}}}"#,
    );
    // Argo's docs write the element's field with the member shorthand `.value`.
    assert_eq!(
        success(
            "all(result.service_apdex.values.values, {asFloat(.value) >= 9900})",
            apdex.clone()
        ),
        Successful
    );
    assert_eq!(
        success(
            "all(result.service_apdex.values.values, {asFloat(.value) >= 9920})",
            apdex.clone()
        ),
        Failed
    );
    assert_eq!(
        success(
            "all(result.service_apdex.values.values, {asFloat(#.value) >= 9900})",
            apdex
        ),
        Successful
    );
    assert_eq!(
        success(
            "len(result[0].Values) >= 5 and all(result[0].Values, {# <= 0.01})",
            json(r#"[{"Values": [0.0, 0.01, 0.0, 0.005, 0.0]}]"#)
        ),
        Successful
    );
}

#[test]
fn as_int_and_as_float() {
    assert_eq!(
        success("asInt(result) > 2", Value::String("3".into())),
        Successful
    );
    assert_eq!(success("asInt(result) > 2", Value::Float(2.9)), Failed);
    assert_eq!(
        success("asFloat(result) >= 0.5", Value::String("0.75".into())),
        Successful
    );
    // Argo panics (an evaluation error) on text that is not a number.
    assert_eq!(
        success("asInt(result) > 2", Value::String("three".into())),
        Error
    );
    assert_eq!(
        success("asFloat(result) > 2", Value::String("x".into())),
        Error
    );
}

#[test]
fn a_condition_must_be_a_bool() {
    let conditions = Conditions::compile(Some("result[0]"), None).expect("compiles");
    let error = conditions
        .evaluate(&floats(&[1.0]))
        .expect_err("not a bool");
    assert!(error.contains("expected bool"), "{error}");
}

#[test]
fn a_condition_that_does_not_compile_names_its_field() {
    let (field, message) = Conditions::compile(Some("result[0] >= 0.95"), Some("result >= ("))
        .expect_err("syntax error");
    assert_eq!(field, "failureCondition");
    assert!(!message.is_empty());
}
