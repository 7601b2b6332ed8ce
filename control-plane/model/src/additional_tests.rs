//! Additional weighted versions (A/B/n): validation and rendering.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use crate::*;

fn version(port: u16) -> Version {
    Version {
        endpoints: vec![SocketAddr::from(([127, 0, 0, 1], port))],
    }
}

/// Stable `aaa` at 80 %, canary `bbb` at 10 %, baseline `ccc` at 10 %; `ddd` is live, unweighted.
fn experiment() -> RolloutState {
    RolloutState {
        name: "default/demo".into(),
        hosts: vec!["demo.local".into()],
        versions: BTreeMap::from([
            ("aaa".to_owned(), version(8001)),
            ("bbb".to_owned(), version(8002)),
            ("ccc".to_owned(), version(8003)),
            ("ddd".to_owned(), version(8004)),
        ]),
        stable_hash: "aaa".into(),
        canary_hash: Some("bbb".into()),
        canary_weight_bp: 1000,
        header_routes: Vec::new(),
        mirror_routes: Vec::new(),
        additional_weights: vec![WeightDestination {
            name: "baseline".into(),
            pod_template_hash: "ccc".into(),
            weight_bp: 1000,
        }],
        stickiness: Stickiness::None,
        preview: None,
    }
}

fn add(rollout: &mut RolloutState, hash: &str, weight_bp: u32) {
    rollout.additional_weights.push(WeightDestination {
        name: format!("t-{hash}"),
        pod_template_hash: hash.into(),
        weight_bp,
    });
}

/// The field and problem of the validation error.
fn error_of(rollout: &RolloutState) -> (String, String) {
    match rollout.validate() {
        Err(ModelError::InvalidField { field, problem, .. }) => (field.to_string(), problem),
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn an_experiment_with_a_baseline_beside_the_canary_is_valid() {
    experiment().validate().unwrap();
    let mut all_taken = experiment();
    all_taken.canary_weight_bp = 5000;
    add(&mut all_taken, "ddd", 4000);
    all_taken.validate().unwrap();
    // Without a canary, additional versions still get their share.
    let mut no_canary = experiment();
    no_canary.canary_hash = None;
    no_canary.canary_weight_bp = 0;
    no_canary.validate().unwrap();
}

#[test]
fn an_additional_hash_must_be_a_live_version() {
    let mut r = experiment();
    r.additional_weights[0].pod_template_hash = "zzz".into();
    let (field, problem) = error_of(&r);
    assert_eq!(field, "additionalWeights[0].podTemplateHash");
    assert!(
        problem.contains("\"zzz\" is not one of the versions"),
        "{problem}"
    );
}

#[test]
fn an_additional_hash_must_differ_from_stable_canary_and_the_others() {
    let mut r = experiment();
    add(&mut r, "aaa", 100);
    let (field, problem) = error_of(&r);
    assert_eq!(field, "additionalWeights[1].podTemplateHash");
    assert!(problem.contains("stable"), "{problem}");

    let mut r = experiment();
    r.additional_weights[0].pod_template_hash = "bbb".into();
    let (field, problem) = error_of(&r);
    assert_eq!(field, "additionalWeights[0].podTemplateHash");
    assert!(problem.contains("canary"), "{problem}");

    let mut r = experiment();
    add(&mut r, "ccc", 100);
    let (field, problem) = error_of(&r);
    assert_eq!(field, "additionalWeights[1].podTemplateHash");
    assert!(problem.contains("additionalWeights[0]"), "{problem}");
}

#[test]
fn canary_and_additional_weights_sum_to_at_most_100_percent() {
    let mut r = experiment();
    add(&mut r, "ddd", 8001);
    let (field, problem) = error_of(&r);
    assert_eq!(field, "additionalWeights[1].weightBp");
    assert!(problem.contains("10000"), "{problem}");
    // Weights from input are added with checks: no overflow, no panic.
    let mut r = experiment();
    add(&mut r, "ddd", u32::MAX);
    assert_eq!(error_of(&r).0, "additionalWeights[1].weightBp");
    let mut r = experiment();
    r.additional_weights[0].weight_bp = 9001;
    assert_eq!(error_of(&r).0, "additionalWeights[0].weightBp");
}

#[test]
fn the_policy_carries_the_additional_weights_in_order_with_schema_2() {
    let mut r = experiment();
    add(&mut r, "ddd", 500);
    let state = TrafficState {
        rollouts: BTreeMap::from([(r.name.clone(), r)]),
    };
    let policy = policy::render(&state, "x-sluice-hash");
    assert_eq!(policy.schema_version, 2);
    let rendered: Vec<(&str, &str, u32)> = policy.rollouts[0]
        .additional_weights
        .iter()
        .map(|a| (a.name.as_str(), a.hash.as_str(), a.weight_bp))
        .collect();
    assert_eq!(
        rendered,
        vec![("baseline", "ccc", 1000), ("t-ddd", "ddd", 500)]
    );
}

#[test]
fn a_policy_without_additional_weights_keeps_schema_0() {
    let mut r = experiment();
    r.additional_weights.clear();
    let state = TrafficState {
        rollouts: BTreeMap::from([(r.name.clone(), r)]),
    };
    let policy = policy::render(&state, "x-sluice-hash");
    assert_eq!(policy.schema_version, 0);
    assert!(policy.rollouts[0].additional_weights.is_empty());
}

#[test]
fn version_weights_give_each_additional_version_its_share() {
    let mut r = experiment();
    add(&mut r, "ddd", 500);
    let weights = r.version_weights_bp();
    assert_eq!(
        weights,
        BTreeMap::from([
            ("aaa".to_owned(), 7500),
            ("bbb".to_owned(), 1000),
            ("ccc".to_owned(), 1000),
            ("ddd".to_owned(), 500),
        ])
    );
}

#[test]
fn overrides_respect_and_end_the_additional_weights() {
    let mut r = experiment();
    let err = r
        .apply_override(Override::SetWeight(9001))
        .expect_err("9001 + 1000 is above 100 %");
    assert!(err.to_string().contains("additional"), "{err}");
    assert_eq!(r, experiment(), "a refused override changes nothing");
    r.apply_override(Override::SetWeight(9000)).unwrap();
    r.validate().unwrap();

    let mut aborted = experiment();
    aborted.apply_override(Override::Abort).unwrap();
    assert!(aborted.additional_weights.is_empty());
    assert_eq!(aborted.version_weights_bp()["aaa"], FULL_WEIGHT_BP);

    let mut promoted = experiment();
    promoted.apply_override(Override::Promote).unwrap();
    promoted.validate().unwrap();
    assert!(promoted.additional_weights.is_empty());
    assert_eq!(promoted.version_weights_bp()["bbb"], FULL_WEIGHT_BP);
}

proptest::proptest! {
    /// With additional weights, every override that is accepted leaves a valid rollout whose
    /// weights sum to 100 %.
    #[test]
    fn overrides_keep_an_experiment_valid(
        canary in 0u32..=5000, baseline in 0u32..=5000, bp in 0u32..=10_010, op in 0u8..3,
    ) {
        let mut r = experiment();
        r.canary_weight_bp = canary;
        r.additional_weights[0].weight_bp = baseline;
        proptest::prop_assert_eq!(r.version_weights_bp().values().sum::<u32>(), FULL_WEIGHT_BP);
        let op = match op {
            0 => Override::SetWeight(bp),
            1 => Override::Promote,
            _ => Override::Abort,
        };
        let before = r.clone();
        match r.apply_override(op) {
            Ok(()) => {
                proptest::prop_assert_eq!(r.validate(), Ok(()));
                proptest::prop_assert_eq!(r.version_weights_bp().values().sum::<u32>(), FULL_WEIGHT_BP);
            }
            Err(_) => proptest::prop_assert_eq!(r, before),
        }
    }
}
