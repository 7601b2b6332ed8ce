//! Conditions: Argo's `successCondition` / `failureCondition`, expressions in the expr language
//! (the `expr-lang` crate) over `result`, with the functions Argo registers itself
//! (`utils/evaluate/evaluate.go`): `asInt`, `asFloat`, `isNaN`, `isInf`, `isNil`, `default`.
//!
//! As in Argo, `isNil(x)` and `default(x, d)` look at the measurement's `result`, whatever `x`
//! is. A condition must give a bool. Argo compiles against a typed environment, so it also
//! rejects unknown names before running; expr-lang checks syntax only, so an unknown name is a
//! run-time error here (a measurement Error rather than an invalid spec).

use expr::{Context, Environment, Program, Value};

use crate::resource::AnalysisPhase;

/// A metric's compiled conditions.
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    success: Option<(String, Program)>,
    failure: Option<(String, Program)>,
}

/// Compiles a condition; the error is the compiler's message.
fn compile(text: &str) -> Result<Program, String> {
    expr::compile(text).map_err(|e| e.to_string())
}

impl Conditions {
    /// Compiles both conditions. The error names the field (`successCondition` or
    /// `failureCondition`) and gives the compiler's message.
    pub fn compile(
        success: Option<&str>,
        failure: Option<&str>,
    ) -> Result<Self, (&'static str, String)> {
        let one = |field: &'static str, text: Option<&str>| match text {
            Some(text) if !text.trim().is_empty() => compile(text)
                .map(|p| Some((text.to_string(), p)))
                .map_err(|e| (field, e)),
            _ => Ok(None),
        };
        Ok(Self {
            success: one("successCondition", success)?,
            failure: one("failureCondition", failure)?,
        })
    }

    /// Argo's `EvaluateResult`: the measurement's phase for `result`, or the run-time error
    /// (then the measurement is an Error). Neither condition: Successful. Success only: Failed
    /// when false. Failure only: Successful when false. Both false: Inconclusive.
    pub fn evaluate(&self, result: &Value) -> Result<AnalysisPhase, String> {
        let success = match &self.success {
            Some((text, program)) => Some(
                eval_bool(program, result)
                    .map_err(|e| eval_error("successCondition", text, result, &e))?,
            ),
            None => None,
        };
        let failure = match &self.failure {
            Some((text, program)) => Some(
                eval_bool(program, result)
                    .map_err(|e| eval_error("failureCondition", text, result, &e))?,
            ),
            None => None,
        };
        let (success, failure) = match (success, failure) {
            (None, None) => return Ok(AnalysisPhase::Successful),
            (Some(s), None) => (s, !s),
            (None, Some(f)) => (!f, f),
            (Some(s), Some(f)) => (s, f),
        };
        Ok(if failure {
            AnalysisPhase::Failed
        } else if success {
            AnalysisPhase::Successful
        } else {
            AnalysisPhase::Inconclusive
        })
    }
}

/// Argo's `formatEvalError`.
fn eval_error(field: &str, text: &str, result: &Value, error: &str) -> String {
    let empty = matches!(result, Value::Nil) || matches!(result, Value::Array(a) if a.is_empty());
    if empty {
        format!(
            "could not evaluate {field} \"{text}\": metric result is nil or empty: no data \
             returned from the metric provider"
        )
    } else {
        format!("could not evaluate {field} \"{text}\": {error}")
    }
}

/// Runs one condition with `result` bound; it must give a bool.
pub fn eval_bool(program: &Program, result: &Value) -> Result<bool, String> {
    let env = environment(result.clone());
    let mut ctx = Context::default();
    ctx.insert("result", result.clone());
    match env.run(program, &ctx).map_err(|e| e.to_string())? {
        Value::Bool(b) => Ok(b),
        other => Err(format!("expected bool, but got {}", type_name(&other))),
    }
}

/// Evaluates a time expression (`now() - duration("5m")`, Argo's `EvalTime`) to Unix seconds.
pub fn eval_time(text: &str) -> Result<f64, String> {
    let program = compile(text)?;
    let env = environment(Value::Nil);
    let value = env
        .run(&program, &Context::default())
        .map_err(|e| e.to_string())?;
    match value.as_datetime() {
        Some(time) => {
            let nanos = time.timestamp_subsec_nanos();
            Ok(time.timestamp() as f64 + f64::from(nanos) / 1e9)
        }
        None => Err(format!("expected a time, but got {}", type_name(&value))),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) => "int",
        Value::Bool(_) => "bool",
        Value::Float(_) => "float64",
        Value::Nil => "nil",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Map(_) | Value::KeyedMap(_) => "map",
        Value::Bytes(_) => "bytes",
        _ => "time",
    }
}

fn environment(result: Value) -> Environment<'static> {
    let mut env = Environment::new();
    env.add_function("asInt", |call| {
        let arg = &one_arg("asInt", &call.args, call.predicate, call.env, call.ctx)?;
        as_int(arg).map(Value::Integer).map_err(Into::into)
    });
    env.add_function("asFloat", |call| {
        let arg = &one_arg("asFloat", &call.args, call.predicate, call.env, call.ctx)?;
        as_float(arg).map(Value::Float).map_err(Into::into)
    });
    env.add_function("isNaN", |call| {
        let arg = &one_arg("isNaN", &call.args, call.predicate, call.env, call.ctx)?;
        float_arg("isNaN", arg).map(|f| Value::Bool(f.is_nan()))
    });
    env.add_function("isInf", |call| {
        let arg = &one_arg("isInf", &call.args, call.predicate, call.env, call.ctx)?;
        float_arg("isInf", arg).map(|f| Value::Bool(f.is_infinite()))
    });
    let nil = result.is_nil();
    env.add_function("isNil", move |call| {
        if call.args.len() != 1 {
            return Err("isNil() takes one argument".to_string().into());
        }
        Ok(Value::Bool(nil))
    });
    env.add_function("default", move |call| {
        let [_, fallback] = call.args.as_slice() else {
            return Err("default() takes two arguments".to_string().into());
        };
        Ok(if result.is_nil() {
            fallback.clone()
        } else {
            result.clone()
        })
    });
    env
}

/// The one argument of a function. expr-lang parses a member shorthand argument (`asFloat(.value)`
/// inside a closure, as in Argo's docs) as a predicate: run it against the closure's element.
fn one_arg(
    name: &str,
    args: &[Value],
    predicate: Option<&Program>,
    env: &Environment<'_>,
    ctx: &dyn expr::ContextProvider,
) -> expr::Result<Value> {
    match (args, predicate) {
        ([arg], None) => Ok(arg.clone()),
        ([], Some(predicate)) => env.run(predicate, ctx),
        _ => Err(format!("{name}() takes one argument").into()),
    }
}

fn float_arg(name: &str, value: &Value) -> expr::Result<f64> {
    match value {
        Value::Float(f) => Ok(*f),
        #[allow(clippy::cast_precision_loss)]
        Value::Integer(i) => Ok(*i as f64),
        other => Err(format!("{name}() wants a number, got {}", type_name(other)).into()),
    }
}

/// Argo's `asInt`: numbers truncate toward zero, strings parse as base-10 `int64`.
fn as_int(value: &Value) -> Result<i64, String> {
    match value {
        Value::Integer(i) => Ok(*i),
        Value::Float(f) if f.is_finite() && f.abs() < 9.2e18 =>
        {
            #[allow(clippy::cast_possible_truncation)]
            Ok(f.trunc() as i64)
        }
        Value::String(s) => s.parse::<i64>().map_err(|e| format!("asInt({s:?}): {e}")),
        other => Err(format!(
            "asInt() not supported on {} {other}",
            type_name(other)
        )),
    }
}

/// Argo's `asFloat`: numbers as they are, strings parsed (`"NaN"`, `"+Inf"` included).
fn as_float(value: &Value) -> Result<f64, String> {
    match value {
        Value::Float(f) => Ok(*f),
        #[allow(clippy::cast_precision_loss)]
        Value::Integer(i) => Ok(*i as f64),
        Value::String(s) => s.parse::<f64>().map_err(|e| format!("asFloat({s:?}): {e}")),
        other => Err(format!(
            "asFloat() not supported on {} {other}",
            type_name(other)
        )),
    }
}

/// A JSON value as Argo sees it after Go's `json.Unmarshal` into `any`: every number a float64.
pub fn from_json(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        serde_json::Value::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| (k.clone(), from_json(v)))
                .collect::<indexmap::IndexMap<String, Value>>(),
        ),
    }
}
