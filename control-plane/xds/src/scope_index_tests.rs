//! The index finds exactly the scopes a change concerns, and every scope's state stays
//! `restrict(current, scope)`.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use sluice_model::{RolloutState, Stickiness, TrafficState, Version};

use super::{ScopeCache, changed_rollouts};
use crate::scope::{Scope, restrict};

fn rollout(name: &str, hosts: &[&str], weight: u32) -> RolloutState {
    let version = Version {
        endpoints: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 8001))],
    };
    RolloutState {
        name: name.into(),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        versions: [
            ("aaa".to_string(), version.clone()),
            ("bbb".into(), version),
        ]
        .into(),
        stable_hash: "aaa".into(),
        canary_hash: Some("bbb".into()),
        canary_weight_bp: weight,
        header_routes: Vec::new(),
        mirror_routes: Vec::new(),
        additional_weights: Vec::new(),
        preview: None,
        stickiness: Stickiness::None,
    }
}

fn state(rollouts: impl IntoIterator<Item = RolloutState>) -> Arc<TrafficState> {
    Arc::new(TrafficState {
        rollouts: rollouts.into_iter().map(|r| (r.name.clone(), r)).collect(),
    })
}

/// shop/cart (a.shop), shop/pay (p.shop), web/front (b.web), web/admin (c.web).
fn fleet(cart: (&str, u32), pay: u32, front: u32, admin: u32) -> Arc<TrafficState> {
    state([
        rollout("shop/cart", &[cart.0], cart.1),
        rollout("shop/pay", &["p.shop"], pay),
        rollout("web/front", &["b.web"], front),
        rollout("web/admin", &["c.web"], admin),
    ])
}

/// By id: a host, a namespace, a rollout, a host and a rollout, nothing, a namespace, a host
/// no rollout serves yet.
fn scopes() -> Vec<Scope> {
    [
        &["a.shop"][..],
        &["shop/*"],
        &["web/front"],
        &["c.web", "shop/pay"],
        &["elsewhere"],
        &["web/*"],
        &["x.shop"],
    ]
    .iter()
    .map(|entries| Scope::parse(entries.iter().copied()).expect("scope"))
    .collect()
}

/// Every entry holds `restrict(current, scope)`; a translation is kept only when unchanged.
fn check_invariant(cache: &ScopeCache, current: &TrafficState) {
    for entry in cache.entries() {
        assert_eq!(
            entry.state,
            restrict(current, &entry.scope),
            "{:?}",
            entry.scope.entries()
        );
    }
}

/// The ids whose part differs between `old` and `new`: what `advance_to` must touch.
fn expected(scopes: &[Scope], old: &TrafficState, new: &TrafficState) -> BTreeSet<usize> {
    (0..scopes.len())
        .filter(|&id| restrict(old, &scopes[id]) != restrict(new, &scopes[id]))
        .collect()
}

#[test]
fn a_change_reaches_exactly_the_scopes_holding_the_rollout() {
    let mut cache = ScopeCache::default();
    let start = fleet(("a.shop", 0), 0, 0, 0);
    cache.advance_to(&start);
    for scope in scopes() {
        cache.entry(scope);
    }
    check_invariant(&cache, &start);

    // (next state, the scopes it concerns): by host, namespace, `ns/name`.
    let steps = [
        (fleet(("a.shop", 100), 0, 0, 0), vec![0, 1]),
        (fleet(("a.shop", 100), 0, 100, 0), vec![2, 5]),
        (fleet(("a.shop", 100), 0, 100, 100), vec![3, 5]),
        (fleet(("a.shop", 100), 100, 100, 100), vec![1, 3]),
        // shop/cart's host changes: it leaves the a.shop scope for the x.shop one.
        (fleet(("x.shop", 100), 100, 100, 100), vec![0, 1, 6]),
        // Nothing changes: nothing is touched.
        (fleet(("x.shop", 100), 100, 100, 100), vec![]),
    ];
    for (next, concerned) in steps {
        let touched = cache.advance_to(&next);
        assert_eq!(touched, concerned.into_iter().collect::<BTreeSet<_>>());
        check_invariant(&cache, &next);
    }
    let holding = |cache: &mut ScopeCache, entries: &[&str]| -> Vec<String> {
        let scope = Scope::parse(entries.iter().copied()).expect("scope");
        cache.entry(scope).state.rollouts.keys().cloned().collect()
    };
    assert!(holding(&mut cache, &["a.shop"]).is_empty());
    assert_eq!(holding(&mut cache, &["x.shop"]), ["shop/cart"]);

    // A rollout removed, then added back.
    let mut without = (*fleet(("x.shop", 100), 100, 100, 100)).clone();
    without.rollouts.remove("web/front");
    let without = Arc::new(without);
    assert_eq!(cache.advance_to(&without), [2, 5].into());
    check_invariant(&cache, &without);
    let back = fleet(("x.shop", 100), 100, 100, 100);
    assert_eq!(cache.advance_to(&back), [2, 5].into());
    check_invariant(&cache, &back);
    // A scope first seen now starts from the current publication.
    assert_eq!(holding(&mut cache, &["web/*", "p.shop"]).len(), 3);
    check_invariant(&cache, &back);
}

#[test]
fn changed_rollouts_are_the_added_removed_and_changed_ones_in_order() {
    let old = fleet(("a.shop", 0), 0, 0, 0);
    let mut new = (*fleet(("a.shop", 0), 5, 0, 0)).clone();
    new.rollouts.remove("web/admin");
    new.rollouts
        .insert("a/first".into(), rollout("a/first", &["f.a"], 0));
    let changes: Vec<_> = changed_rollouts(&old, &new)
        .into_iter()
        .map(|(name, before, after)| (name, before.is_some(), after.is_some()))
        .collect();
    assert_eq!(
        changes,
        [
            ("a/first", false, true),
            ("shop/pay", true, true),
            ("web/admin", true, false)
        ]
    );
}

/// Rollouts over a small universe of names and hosts (hosts may repeat across rollouts: the
/// cache must not rely on validation), and scopes over the same universe.
fn arb_state() -> impl Strategy<Value = TrafficState> {
    let names = ["shop/a", "shop/b", "web/a", "web/c", "ops/d"];
    let hosts = ["h1", "h2", "h3", "h4"];
    prop::collection::vec(
        (
            prop::sample::select(names.to_vec()),
            prop::collection::vec(prop::sample::select(hosts.to_vec()), 1..3),
            0u32..3,
        ),
        0..6,
    )
    .prop_map(|rollouts| TrafficState {
        rollouts: rollouts
            .into_iter()
            .map(|(name, hosts, weight)| (name.to_owned(), rollout(name, &hosts, weight)))
            .collect(),
    })
}

fn arb_scope() -> impl Strategy<Value = Scope> {
    let entries = [
        "h1", "h2", "h3", "h4", "h5", "shop/*", "web/*", "ops/*", "shop/a", "web/c", "ops/d",
    ];
    prop::collection::vec(prop::sample::select(entries.to_vec()), 0..3)
        .prop_map(|entries| Scope::parse(entries).expect("scope"))
}

proptest! {
    #[test]
    fn every_scope_follows_any_sequence_of_publications(
        states in prop::collection::vec(arb_state(), 1..6),
        scopes in prop::collection::vec(arb_scope(), 1..6),
        late in arb_scope(),
    ) {
        let mut cache = ScopeCache::default();
        let first = Arc::new(states[0].clone());
        cache.advance_to(&first);
        // Ids in order of first sight: equal scopes share one entry.
        let mut distinct: Vec<Scope> = Vec::new();
        for scope in &scopes {
            cache.entry(scope.clone());
            if !distinct.contains(scope) {
                distinct.push(scope.clone());
            }
            prop_assert_eq!(cache.len(), distinct.len());
        }
        let mut previous = first;
        for (i, next) in states.iter().enumerate().skip(1) {
            let next = Arc::new(next.clone());
            let touched = cache.advance_to(&next);
            prop_assert_eq!(touched, expected(&distinct, &previous, &next));
            check_invariant(&cache, &next);
            if i == 2 {
                cache.entry(late.clone());
                if !distinct.contains(&late) {
                    distinct.push(late.clone());
                }
                check_invariant(&cache, &next);
            }
            previous = next;
        }
    }
}
