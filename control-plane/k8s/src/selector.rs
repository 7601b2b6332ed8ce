//! Kubernetes label selectors (`matchLabels` + `matchExpressions`), evaluated against pod labels.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A label selector checked once, so matching pods cannot fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    /// Checks `selector`; errors name the offending field under `field` (e.g. `spec.selector`).
    /// A selector with no requirement at all is refused: it would select every pod of the
    /// namespace, which is never what a Rollout means.
    pub fn new(selector: &LabelSelector, field: &str) -> Result<Selector, (String, String)> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::In(key.clone(), vec![value.clone()]));
        }
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let at = |rest: &str| format!("{field}.matchExpressions[{i}]{rest}");
            let values = expr.values.clone().unwrap_or_default();
            let key = expr.key.clone();
            let requirement = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err((
                        at(".values"),
                        format!("must be non-empty for operator {}", expr.operator),
                    ));
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err((
                        at(".values"),
                        format!("must be empty for operator {}", expr.operator),
                    ));
                }
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err((
                        at(".operator"),
                        format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                    ));
                }
            };
            requirements.push(requirement);
        }
        if requirements.is_empty() {
            return Err((
                field.to_owned(),
                "selects every pod: give matchLabels or matchExpressions".into(),
            ));
        }
        Ok(Selector { requirements })
    }

    /// Whether every requirement holds for `labels` (requirements are AND-ed).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "demo")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["web", "api"]),
                expr("track", "NotIn", &["legacy"]),
                expr("team", "Exists", &[]),
                expr("debug", "DoesNotExist", &[]),
            ]),
        };
        let s = Selector::new(&selector, "spec.selector").expect("valid");
        assert!(s.matches(&labels(&[("app", "demo"), ("tier", "web"), ("team", "a")])));
        assert!(s.matches(&labels(&[
            ("app", "demo"),
            ("tier", "api"),
            ("team", "a"),
            ("track", "new")
        ])));
        assert!(!s.matches(&labels(&[("app", "other"), ("tier", "web"), ("team", "a")])));
        assert!(!s.matches(&labels(&[("app", "demo"), ("tier", "db"), ("team", "a")])));
        assert!(!s.matches(&labels(&[
            ("app", "demo"),
            ("tier", "web"),
            ("team", "a"),
            ("track", "legacy")
        ])));
        assert!(!s.matches(&labels(&[("app", "demo"), ("tier", "web")])));
        assert!(!s.matches(&labels(&[
            ("app", "demo"),
            ("tier", "web"),
            ("team", "a"),
            ("debug", "1")
        ])));
    }

    #[test]
    fn bad_selectors_name_the_field() {
        let bad = |e: LabelSelectorRequirement| {
            let selector = LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![e]),
            };
            Selector::new(&selector, "spec.selector").unwrap_err()
        };
        let (field, problem) = bad(expr("a", "Equals", &["x"]));
        assert_eq!(field, "spec.selector.matchExpressions[0].operator");
        assert!(problem.contains("\"Equals\""), "{problem}");
        assert_eq!(
            bad(expr("a", "In", &[])).0,
            "spec.selector.matchExpressions[0].values"
        );
        assert_eq!(
            bad(expr("a", "Exists", &["x"])).0,
            "spec.selector.matchExpressions[0].values"
        );
        let (field, _) = Selector::new(&LabelSelector::default(), "spec.selector").unwrap_err();
        assert_eq!(field, "spec.selector");
    }
}
