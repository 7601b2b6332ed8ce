//! A rollout's run, shared by the drivers (standalone and Kubernetes): the rollout's
//! `analysis.args` and its hashes plan a run from its templates ([`plan_for_rollout`]); the
//! resolved run is kept as an `AnalysisRun` spec ([`run_spec`]) that plans the same run again
//! without its templates ([`plan_from_spec`]) — a run is frozen when it starts, as in Argo.

use crate::{
    AnalysisError,
    args::PodHashes,
    plan::{RunPlan, plan_run},
    resource::{AnalysisRunSpec, AnalysisTemplateSpec, Argument},
};

/// The rollout's `analysis.args` as the analysis crate's arguments (the same schema). An
/// argument that does not convert is an error naming it.
pub fn rollout_arguments(
    args: &[sluice_api::resource::AnalysisRunArgument],
) -> Result<Vec<Argument>, AnalysisError> {
    args.iter()
        .map(|arg| {
            serde_json::to_value(arg)
                .and_then(serde_json::from_value::<Argument>)
                .map_err(|e| AnalysisError::Argument {
                    arg: arg.name.clone(),
                    message: e.to_string(),
                })
        })
        .collect()
}

/// The rollout's `analysis.args` with each `valueFrom.fieldRef` read from the Rollout (its
/// metadata, spec and status; [`crate::field_path`]) and given as a plain value, as Argo does when
/// it creates the run. A path that does not resolve is an error naming the argument.
pub fn resolve_field_refs(
    args: &[sluice_api::resource::AnalysisRunArgument],
    rollout: &sluice_api::Rollout,
) -> Result<Vec<sluice_api::resource::AnalysisRunArgument>, AnalysisError> {
    let mut object = None;
    args.iter()
        .map(|arg| {
            let Some(field_ref) = arg.value_from.as_ref().and_then(|v| v.field_ref.as_ref()) else {
                return Ok(arg.clone());
            };
            let error = |message: String| AnalysisError::Argument {
                arg: arg.name.clone(),
                message: format!(
                    "valueFrom.fieldRef.fieldPath {:?}: {message}",
                    field_ref.field_path
                ),
            };
            if object.is_none() {
                object = Some(serde_json::to_value(rollout).map_err(|e| error(e.to_string()))?);
            }
            let value = crate::field_path::field_path_value(
                object.as_ref().unwrap_or(&serde_json::Value::Null),
                &field_ref.field_path,
            )
            .map_err(error)?;
            Ok(sluice_api::resource::AnalysisRunArgument {
                name: arg.name.clone(),
                value: Some(value),
                value_from: None,
            })
        })
        .collect()
}

/// Plans a rollout's run: its templates (already looked up), its `analysis.args`, the stable
/// and canary (`Latest`) pod-template hashes.
pub fn plan_for_rollout(
    templates: &[&AnalysisTemplateSpec],
    args: &[sluice_api::resource::AnalysisRunArgument],
    stable_hash: &str,
    canary_hash: &str,
) -> Result<RunPlan, AnalysisError> {
    let args = rollout_arguments(args)?;
    let hashes = PodHashes {
        stable: Some(stable_hash.to_owned()),
        latest: Some(canary_hash.to_owned()),
    };
    plan_run(templates, &args, &hashes)
}

/// The `AnalysisRun` spec of a planned run: its metrics and arguments resolved, the templates'
/// `dryRun` and `measurementRetention` rules (Argo's `NewAnalysisRunFromTemplates`).
pub fn run_spec(templates: &[&AnalysisTemplateSpec], plan: &RunPlan) -> AnalysisRunSpec {
    AnalysisRunSpec {
        metrics: plan.metrics.iter().map(|m| m.spec.clone()).collect(),
        args: plan
            .args
            .iter()
            .map(|(name, value)| Argument {
                name: name.clone(),
                value: Some(value.clone()),
                value_from: None,
            })
            .collect(),
        terminate: false,
        dry_run: templates.iter().flat_map(|t| t.dry_run.clone()).collect(),
        measurement_retention: templates
            .iter()
            .flat_map(|t| t.measurement_retention.clone())
            .collect(),
    }
}

/// Plans a run again from its `AnalysisRun` spec (a restarted driver resumes it): the metrics
/// as resolved when it started, whatever its templates say now.
pub fn plan_from_spec(spec: &AnalysisRunSpec) -> Result<RunPlan, AnalysisError> {
    let template = AnalysisTemplateSpec {
        metrics: spec.metrics.clone(),
        args: spec.args.clone(),
        dry_run: spec.dry_run.clone(),
        measurement_retention: spec.measurement_retention.clone(),
    };
    plan_run(&[&template], &[], &PodHashes::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AnalysisDocument, parse_analysis_documents};
    use sluice_api::resource::{AnalysisRunArgument, ArgumentValueFrom};

    const TEMPLATE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: success-rate}
spec:
  args: [{name: version}, {name: address, value: "http://127.0.0.1:9"}]
  dryRun: [{metricName: latency}]
  metrics:
  - name: success-rate
    successCondition: result[0] >= 0.95
    provider:
      prometheus:
        address: "{{args.address}}"
        query: rate(x{v="{{args.version}}"}[1m])
  - name: latency
    successCondition: result[0] < 1
    provider:
      prometheus: {address: "{{args.address}}", query: "p99{v=\"{{args.version}}\"}"}
"#;

    fn template() -> AnalysisTemplateSpec {
        match parse_analysis_documents(TEMPLATE)
            .expect("parses")
            .remove(0)
        {
            AnalysisDocument::Template(t) => t.spec,
            other => panic!("not a template: {other:?}"),
        }
    }

    fn latest(name: &str) -> AnalysisRunArgument {
        AnalysisRunArgument {
            name: name.into(),
            value: None,
            value_from: Some(ArgumentValueFrom {
                pod_template_hash_value: Some("Latest".into()),
                field_ref: None,
            }),
        }
    }

    #[test]
    fn a_rollout_run_takes_the_canary_hash_and_its_spec_plans_the_same_run() {
        let spec = template();
        let plan = plan_for_rollout(&[&spec], &[latest("version")], "v1", "v2").expect("plans");
        let query = |plan: &RunPlan| {
            plan.metrics[0]
                .spec
                .provider
                .prometheus
                .as_ref()
                .expect("prometheus")
                .query
                .clone()
        };
        assert_eq!(query(&plan), "rate(x{v=\"v2\"}[1m])");
        let run = run_spec(&[&spec], &plan);
        assert!(
            run.args
                .iter()
                .any(|a| a.name == "version" && a.value.as_deref() == Some("v2"))
        );
        let again = plan_from_spec(&run).expect("plans from the spec");
        assert_eq!(query(&again), query(&plan));
        assert_eq!(
            again.metrics.iter().map(|m| m.dry_run).collect::<Vec<_>>(),
            [false, true],
            "the dryRun rule is kept"
        );
    }

    fn field_ref(name: &str, path: &str) -> AnalysisRunArgument {
        serde_json::from_value(serde_json::json!(
            {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
        ))
        .expect("an argument")
    }

    fn web_rollout() -> sluice_api::Rollout {
        serde_yaml::from_str(
            r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web, namespace: shop, labels: {app: web-app}}
spec:
  template:
    metadata: {labels: {x: from-template}}
    spec: {containers: [{name: web, image: "web:2"}]}
"#,
        )
        .expect("a rollout")
    }

    #[test]
    fn field_refs_are_read_from_the_rollout_and_reach_the_query() {
        let spec = template();
        let rollout = web_rollout();
        let args = resolve_field_refs(
            &[
                field_ref("version", "metadata.labels['app']"),
                latest("other"),
            ],
            &rollout,
        )
        .expect("resolves");
        assert_eq!(args[0].value.as_deref(), Some("web-app"));
        assert!(args[0].value_from.is_none());
        assert_eq!(
            args[1],
            latest("other"),
            "other arguments are left as they are"
        );
        let plan = plan_for_rollout(&[&spec], &args, "v1", "v2").expect("plans");
        let query = &plan.metrics[0]
            .spec
            .provider
            .prometheus
            .as_ref()
            .expect("prometheus")
            .query;
        assert_eq!(query, "rate(x{v=\"web-app\"}[1m])");
        let args = resolve_field_refs(
            &[field_ref("version", "spec.template.metadata.labels.x")],
            &rollout,
        )
        .expect("resolves");
        assert_eq!(args[0].value.as_deref(), Some("from-template"));
    }

    #[test]
    fn a_field_ref_that_does_not_resolve_names_the_argument_and_the_path() {
        let error = resolve_field_refs(
            &[field_ref("version", "spec.template.metadata.labels.nope")],
            &web_rollout(),
        )
        .expect_err("no such label")
        .to_string();
        assert!(
            error.contains("args.version") && error.contains("spec.template.metadata.labels.nope"),
            "{error}"
        );
    }

    #[test]
    fn an_unresolved_argument_names_it() {
        let spec = template();
        let message = plan_for_rollout(&[&spec], &[], "v1", "v2")
            .expect_err("version has no value")
            .to_string();
        assert!(message.contains("version"), "{message}");
    }
}
