//! `spec.strategy.blueGreen` checks and defaults (the transitions are in tests/bluegreen.rs).
#![allow(clippy::unwrap_used)]

use super::*;

fn spec(yaml: &str) -> BlueGreenStrategy {
    serde_yaml::from_str(yaml).unwrap()
}

#[test]
fn defaults_are_argos() {
    let bg = check(&spec("{activeService: app-active}")).unwrap();
    assert_eq!(bg, BlueGreen::default());
    assert!(bg.auto_promotion_enabled);
}

#[test]
fn fields_are_read_and_checked_naming_the_field() {
    let bg = check(&spec(
        "{activeService: a, previewService: p, autoPromotionEnabled: false, \
          autoPromotionSeconds: 20, previewReplicaCount: 1, scaleDownDelayRevisionLimit: 2}",
    ))
    .unwrap();
    assert_eq!(
        bg,
        BlueGreen {
            auto_promotion_enabled: false,
            auto_promotion: Duration::from_secs(20),
            preview_replicas: Some(1),
            revision_limit: Some(2),
            pre_promotion: None,
            post_promotion: None,
        }
    );
    for (yaml, field) in [
        ("{previewService: p}", "activeService"),
        ("{activeService: a, previewService: a}", "previewService"),
        (
            "{activeService: a, autoPromotionSeconds: -1}",
            "autoPromotionSeconds",
        ),
        (
            "{activeService: a, previewReplicaCount: -1}",
            "previewReplicaCount",
        ),
        (
            "{activeService: a, scaleDownDelayRevisionLimit: -2}",
            "scaleDownDelayRevisionLimit",
        ),
        (
            "{activeService: a, prePromotionAnalysis: {templates: []}}",
            "prePromotionAnalysis.templates",
        ),
        (
            "{activeService: a, postPromotionAnalysis: {templates: [{templateName: ''}]}}",
            "postPromotionAnalysis.templates",
        ),
    ] {
        assert_eq!(
            check(&spec(yaml)).unwrap_err().field,
            format!("spec.strategy.blueGreen.{field}"),
            "{yaml}"
        );
    }
}

#[test]
fn status_selectors_follow_the_published_traffic() {
    let mut traffic = PublishedTraffic {
        stable: "aaa".into(),
        ..PublishedTraffic::default()
    };
    assert_eq!(
        status(&traffic),
        BlueGreenStatus {
            active_selector: Some("aaa".into()),
            preview_selector: Some("aaa".into()),
            ..BlueGreenStatus::default()
        }
    );
    traffic.preview = Some("bbb".into());
    assert_eq!(status(&traffic).preview_selector.as_deref(), Some("bbb"));
    assert!(traffic.routes_to("bbb") && traffic.routes_to("aaa"));
}

#[test]
fn promotion_analyses_are_read() {
    let bg = check(&spec(
        "{activeService: a, prePromotionAnalysis: {templates: [{templateName: smoke}]}, \
          postPromotionAnalysis: {templates: [{templateName: rate}], \
          args: [{name: v, valueFrom: {podTemplateHashValue: Latest}}]}}",
    ))
    .unwrap();
    assert_eq!(
        bg.pre_promotion.unwrap().templates[0].template_name,
        "smoke"
    );
    let post = bg.post_promotion.unwrap();
    assert_eq!(post.templates[0].template_name, "rate");
    assert_eq!(post.args[0].name, "v");
}
