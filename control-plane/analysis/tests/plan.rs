//! Templates → run plans: Argo's documents load, arguments resolve, invalid specs name the metric.

use sluice_analysis::{
    AnalysisDocument, AnalysisError, PodHashes, parse_analysis_documents, plan_run,
    resource::{Argument, ArgumentValueFrom, PodTemplateHashValue},
};

const ARGO_TEMPLATE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
spec:
  args:
  - name: service-name
  - name: prometheus-port
    value: "9090"
  metrics:
  - name: success-rate
    interval: 5m
    successCondition: result[0] >= 0.95
    failureLimit: 3
    provider:
      prometheus:
        address: http://prometheus.example.com:{{args.prometheus-port}}
        query: |
          sum(irate(istio_requests_total{reporter="source",destination_service=~"{{ args.service-name }}",response_code!~"5.*"}[5m])) /
          sum(irate(istio_requests_total{reporter="source",destination_service=~"{{args.service-name}}"}[5m]))
"#;

fn template(text: &str) -> sluice_analysis::AnalysisTemplate {
    match parse_analysis_documents(text).expect("parses").remove(0) {
        AnalysisDocument::Template(t) => t,
        other => panic!("not a template: {other:?}"),
    }
}

fn arg(name: &str, value: &str) -> Argument {
    Argument {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

#[test]
fn argo_template_loads_and_substitutes_its_args() {
    let t = template(ARGO_TEMPLATE);
    assert_eq!(t.metadata.name.as_deref(), Some("success-rate"));
    let plan = plan_run(
        &[&t.spec],
        &[arg("service-name", "web.default.svc")],
        &PodHashes::default(),
    )
    .expect("plan");
    let metric = &plan.metrics[0];
    let prom = metric
        .spec
        .provider
        .prometheus
        .as_ref()
        .expect("prometheus");
    assert_eq!(prom.address, "http://prometheus.example.com:9090");
    assert!(
        prom.query
            .contains(r#"destination_service=~"web.default.svc",response_code"#)
    );
    assert!(!prom.query.contains("{{"));
    assert_eq!(metric.failure_limit, 3);
    assert_eq!(
        metric.effective_count, None,
        "interval without count: until terminated"
    );
    assert_eq!(metric.consecutive_error_limit, 4);
}

#[test]
fn sluice_group_loads_alike() {
    let sluice = ARGO_TEMPLATE.replace("argoproj.io/v1alpha1", "sluice.dev/v1alpha1");
    assert_eq!(template(&sluice).spec, template(ARGO_TEMPLATE).spec);
}

#[test]
fn other_kinds_are_skipped_and_other_groups_rejected() {
    let text = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: r}}\n---\n{ARGO_TEMPLATE}"
    );
    assert_eq!(parse_analysis_documents(&text).expect("parses").len(), 1);
    let wrong = ARGO_TEMPLATE.replace("argoproj.io/v1alpha1", "example.com/v1");
    let error = parse_analysis_documents(&wrong).expect_err("wrong group");
    assert!(
        matches!(error, AnalysisError::Document { index: 0, .. }),
        "{error}"
    );
}

#[test]
fn an_unresolved_argument_is_an_error_naming_it() {
    let t = template(ARGO_TEMPLATE);
    let error = plan_run(&[&t.spec], &[], &PodHashes::default()).expect_err("no service-name");
    assert_eq!(error.to_string(), "args.service-name: was not resolved");
}

#[test]
fn an_unknown_tag_is_an_error_naming_the_metric() {
    let text = ARGO_TEMPLATE.replace("{{args.prometheus-port}}", "{{args.port}}");
    let t = template(&text);
    let error = plan_run(
        &[&t.spec],
        &[arg("service-name", "x")],
        &PodHashes::default(),
    )
    .expect_err("args.port unknown");
    assert_eq!(
        error.to_string(),
        "metric \"success-rate\": failed to resolve {{args.port}}"
    );
}

#[test]
fn pod_template_hash_values() {
    let text = r#"
apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: t}
spec:
  args: [{name: canary-hash}, {name: stable-hash}]
  metrics:
  - name: m
    provider: {prometheus: {address: "http://p", query: 'x{v="{{args.canary-hash}}",s="{{args.stable-hash}}"}'}}
"#;
    let t = template(text);
    let from = |which| Argument {
        name: String::new(),
        value: None,
        value_from: Some(ArgumentValueFrom {
            pod_template_hash_value: Some(which),
            ..ArgumentValueFrom::default()
        }),
    };
    let args = [
        Argument {
            name: "canary-hash".into(),
            ..from(PodTemplateHashValue::Latest)
        },
        Argument {
            name: "stable-hash".into(),
            ..from(PodTemplateHashValue::Stable)
        },
    ];
    let hashes = PodHashes {
        stable: Some("aaa".into()),
        latest: Some("bbb".into()),
    };
    let plan = plan_run(&[&t.spec], &args, &hashes).expect("plan");
    let query = &plan.metrics[0]
        .spec
        .provider
        .prometheus
        .as_ref()
        .expect("prom")
        .query;
    assert_eq!(query, r#"x{v="bbb",s="aaa"}"#);
    let error = plan_run(&[&t.spec], &args, &PodHashes::default()).expect_err("no versions");
    assert!(
        error.to_string().contains("podTemplateHashValue"),
        "{error}"
    );
}

#[test]
fn invalid_specs_name_the_metric_and_field() {
    let cases = [
        (
            "successCondition: result >= (",
            "metric \"m\": successCondition:",
        ),
        (
            "count: 3",
            "metric \"m\": interval: interval must be specified when count > 1",
        ),
        ("interval: 5 minutes", "metric \"m\": interval:"),
        (
            "failureLimit: -2",
            "metric \"m\": failureLimit: must be >= 0, or -1 to be disabled",
        ),
        (
            "count: \"three\"\n    interval: 1m",
            "metric \"m\": count: \"three\" is not an integer",
        ),
        (
            "count: 2\n    interval: 1m\n    failureLimit: 3",
            "metric \"m\": count: count (2) must be >=",
        ),
    ];
    for (extra, expected) in cases {
        let text = format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: t}}\nspec:\n  metrics:\n  - name: m\n    {extra}\n    provider: {{prometheus: {{address: 'http://p', query: up}}}}\n"
        );
        let t = template(&text);
        let error = plan_run(&[&t.spec], &[], &PodHashes::default()).expect_err(extra);
        assert!(error.to_string().starts_with(expected), "{extra}: {error}");
    }
}

#[test]
fn unsupported_and_missing_providers() {
    let text = "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: t}\nspec:\n  metrics:\n  - name: dd\n    provider: {datadog: {query: 'x'}}\n  - name: none\n";
    let t = template(text);
    let error = plan_run(&[&t.spec], &[], &PodHashes::default()).expect_err("datadog");
    assert_eq!(
        error.to_string(),
        "metric \"dd\": provider.datadog: not supported by Sluice (prometheus and web are)"
    );
}

#[test]
fn dry_run_rules_must_match() {
    let text = "apiVersion: sluice.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: t}\nspec:\n  dryRun: [{metricName: nope}]\n  metrics:\n  - name: m\n    provider: {web: {url: 'http://x'}}\n";
    let t = template(text);
    let error = plan_run(&[&t.spec], &[], &PodHashes::default()).expect_err("no match");
    assert_eq!(
        error.to_string(),
        "analysis: dryRun[0]: Rule didn't match any metric name(s)"
    );
    let all = text.replace("nope", "'*'");
    let plan = plan_run(&[&template(&all).spec], &[], &PodHashes::default()).expect("wildcard");
    assert!(plan.metrics[0].dry_run);
}

#[test]
fn templates_combine_and_duplicate_metrics_are_rejected() {
    let t = template(ARGO_TEMPLATE);
    let error = plan_run(
        &[&t.spec, &t.spec],
        &[arg("service-name", "x")],
        &PodHashes::default(),
    )
    .expect_err("duplicate");
    assert_eq!(
        error.to_string(),
        "analysis: metrics[1]: duplicate name 'success-rate'"
    );
}
