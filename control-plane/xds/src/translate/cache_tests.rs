//! The translator equals `translate` whatever it kept from before, and re-encodes only what
//! changed.

use std::sync::Arc;

use proptest::prelude::*;
use sluice_model::{Preview, TrafficState};

use super::super::preview::tests::demo_with_preview;
use super::super::proptests::arb_state;
use super::super::tests::{demo, options, rollout, state};
use super::super::translate;
use super::Translator;
use crate::snapshot::{Resources, Snapshot};
use crate::type_url;

/// Equal to `translate`, byte for byte (so the same content versions).
fn assert_same(translator: &Translator, state: &TrafficState, forget_others: bool) -> Snapshot {
    let cached = translator
        .translate(state, forget_others)
        .expect("translates");
    let fresh = translate(state, &options()).expect("translates");
    assert_eq!(cached, fresh);
    assert_eq!(cached.version(), fresh.version());
    cached
}

/// Three rollouts, `shop/cart` at `weight`.
fn fleet(weight: u32) -> TrafficState {
    let mut cart = rollout(
        "shop/cart",
        "cart.shop",
        &[("aaa", &["127.0.0.1:8001"]), ("bbb", &["127.0.0.1:8002"])],
    );
    cart.canary_weight_bp = weight;
    let pay = rollout("shop/pay", "pay.shop", &[("ccc", &["127.0.0.1:8003"])]);
    let front = rollout(
        "web/front",
        "front.web",
        &[("ddd", &["127.0.0.1:8004"]), ("eee", &[])],
    );
    state([cart, pay, front])
}

fn same_arc(a: &Resources, b: &Resources, name: &str) -> bool {
    let find = |set: &Resources| set.shared().find(|r| r.name == name).cloned();
    match (find(a), find(b)) {
        (Some(a), Some(b)) => Arc::ptr_eq(&a, &b),
        _ => false,
    }
}

#[test]
fn the_translator_equals_translate_through_changes_additions_and_removals() {
    let translator = Translator::new(options());
    assert_same(&translator, &TrafficState::default(), true);
    assert_same(&translator, &fleet(0), true);
    assert_same(&translator, &fleet(2500), true);
    // Endpoints, hosts and a preview change; a rollout goes, another comes.
    let mut changed = fleet(2500);
    changed.rollouts.remove("shop/pay");
    let front = changed.rollouts.get_mut("web/front").expect("front");
    front.hosts.push("www.front.web".into());
    front.preview = Some(Preview {
        hosts: vec!["preview.front.web".into()],
        hash: "eee".into(),
    });
    let cart = changed.rollouts.get_mut("shop/cart").expect("cart");
    cart.versions.get_mut("bbb").expect("bbb").endpoints.clear();
    changed.rollouts.extend(demo().rollouts);
    assert_same(&translator, &changed, true);
    assert_eq!(translator.kept(), 3, "shop/pay's parts are forgotten");
    assert_same(&translator, &demo_with_preview(), true);
    assert_eq!(translator.kept(), 1);
    // A part of a state keeps the others' parts.
    assert_same(&translator, &fleet(0), true);
    let part = state(fleet(0).rollouts.remove("shop/pay"));
    assert_same(&translator, &part, false);
    assert_eq!(translator.kept(), 3);
    assert_same(&translator, &TrafficState::default(), true);
    assert_eq!(translator.kept(), 0);
}

#[test]
fn a_weight_change_re_encodes_only_the_rollout_that_changed() {
    let translator = Translator::new(options());
    let before = assert_same(&translator, &fleet(0), true);
    let after = assert_same(&translator, &fleet(5000), true);
    let vhosts = |s: &Snapshot| s.delta_routes.clone().expect("vhds").virtual_hosts;
    for name in ["shop/pay/ccc", "web/front/ddd", "web/front/eee"] {
        assert!(same_arc(
            &before.type_set(type_url::CLUSTER),
            &after.type_set(type_url::CLUSTER),
            name
        ));
    }
    // shop/cart changed: its parts were built again (with the same content for its clusters).
    assert!(!same_arc(
        &vhosts(&before),
        &vhosts(&after),
        "sluice_routes/shop%2Fcart"
    ));
    assert!(same_arc(
        &vhosts(&before),
        &vhosts(&after),
        "sluice_routes/shop%2Fpay"
    ));
    assert!(same_arc(
        &vhosts(&before),
        &vhosts(&after),
        "sluice_routes/web%2Ffront"
    ));
}

#[test]
fn an_invalid_state_is_refused_as_translate_refuses_it() {
    let translator = Translator::new(options());
    let mut twice = fleet(0);
    twice
        .rollouts
        .get_mut("shop/pay")
        .expect("pay")
        .hosts
        .push("cart.shop".into());
    let error = translator
        .translate(&twice, true)
        .expect_err("a host in two rollouts");
    assert_eq!(
        error.to_string(),
        translate(&twice, &options())
            .expect_err("refused")
            .to_string()
    );
}

proptest! {
    #[test]
    fn any_sequence_of_states_translates_as_translate_does(
        first in arb_state(),
        second in arb_state(),
        third in arb_state(),
    ) {
        let translator = Translator::new(options());
        for state in [&first, &second, &first, &third] {
            assert_same(&translator, state, true);
        }
    }
}
