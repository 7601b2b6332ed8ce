//! Names of the filter's counters: one per (rollout, version, reason), a bounded set of
//! rollouts × versions × 3 defined when a policy is configured.
//!
//! Name: `sluice_requests_total.rollout.<rollout>.version.<hash>.reason.<reason>` where `<rollout>`
//! and `<hash>` have every byte outside `[A-Za-z0-9_-]` replaced by `_` (so `default/demo` becomes
//! `default_demo`) and `<reason>` is `header`, `sticky` or `weight`. See the crate docs for how
//! Envoy shows them.
//!
//! Requests are counted in VM memory ([`Tally`]) and added to Envoy's counters in batches (the
//! glue drains the tally once a second and when a root context is done): a host call per request
//! costs more than everything else the filter does for it.

use std::cell::Cell;

use crate::decision::{Reason, metric_slots};
use crate::policy::{CompiledPolicy, Rollout};

/// The counter names of `rollout`, in the slot order of [`crate::decision::Decision::metric_slot`].
pub fn counter_names(rollout: &Rollout) -> Vec<String> {
    metric_slots(rollout)
        .map(|(version, reason)| counter_name(&rollout.name, rollout.hash(version), reason))
        .collect()
}

/// Version label of the requests the router splits by weight when the weights are in the routes
/// (`FilterPolicy.bucket_header`): the filter knows their bucket, not their version (Envoy's
/// per-version cluster stats do). A pod-template hash never contains `_`, so it cannot clash.
pub const SPLIT_VERSION: &str = "_split";

/// The reasons counted under [`SPLIT_VERSION`], in slot order after a rollout's version slots.
const SPLIT_REASONS: [Reason; 2] = [Reason::Sticky, Reason::Weight];

/// The names of `rollout`'s [`SPLIT_VERSION`] counters, in [`split_slot`] order.
pub fn split_counter_names(rollout: &Rollout) -> Vec<String> {
    SPLIT_REASONS
        .iter()
        .map(|&reason| counter_name(&rollout.name, SPLIT_VERSION, reason))
        .collect()
}

/// The slot of a split decision (`reason` sticky or weight) among `rollout`'s counters when the
/// policy has its weights in the routes: after the (version, reason) slots.
pub fn split_slot(rollout: &Rollout, reason: Reason) -> usize {
    let offset = usize::from(reason == Reason::Weight);
    rollout.versions.len() * Reason::ALL.len() + offset
}

/// Every counter name of `rollout` under `policy`, in slot order: the (version, reason) ones,
/// then the [`SPLIT_VERSION`] ones when the policy has its weights in the routes.
pub fn rollout_counter_names(policy: &CompiledPolicy, rollout: &Rollout) -> Vec<String> {
    let mut names = counter_names(rollout);
    if policy.bucket_header.is_some() {
        names.extend(split_counter_names(rollout));
    }
    names
}

/// The counter name for one (rollout, version hash, reason).
pub fn counter_name(rollout: &str, hash: &str, reason: Reason) -> String {
    format!(
        "sluice_requests_total.rollout.{}.version.{}.reason.{}",
        sanitize(rollout),
        sanitize(hash),
        reason.label()
    )
}

/// Request counts not yet added to Envoy's counters, one per counter of a policy: the slots of
/// rollout 0, then those of rollout 1, and so on (the order of [`Tally::counter_names`]).
///
/// Counts are `Cell`s so that HTTP contexts can count through a shared reference; a Wasm VM is
/// single-threaded.
#[derive(Debug)]
pub struct Tally {
    /// Index of each rollout's first slot in `pending`.
    offsets: Vec<usize>,
    pending: Vec<Cell<u64>>,
}

impl Tally {
    /// An all-zero tally for `policy`'s counters.
    pub fn new(policy: &CompiledPolicy) -> Self {
        let split = if policy.bucket_header.is_some() {
            SPLIT_REASONS.len()
        } else {
            0
        };
        let mut offsets = Vec::with_capacity(policy.rollouts.len());
        let mut len = 0;
        for rollout in &policy.rollouts {
            offsets.push(len);
            len += metric_slots(rollout).count() + split;
        }
        Self {
            offsets,
            pending: (0..len).map(|_| Cell::new(0)).collect(),
        }
    }

    /// The counter names of `policy`, in tally order (index `i` here is index `i` in
    /// [`Tally::drain`]).
    pub fn counter_names(policy: &CompiledPolicy) -> Vec<String> {
        policy
            .rollouts
            .iter()
            .flat_map(|rollout| rollout_counter_names(policy, rollout))
            .collect()
    }

    /// Counts one request of rollout `rollout` in counter slot `slot` (see
    /// [`crate::Decision::metric_slot`] and [`split_slot`]). Out-of-range indices are ignored.
    pub fn record(&self, rollout: usize, slot: usize) {
        let Some(&start) = self.offsets.get(rollout) else {
            return;
        };
        let end = self
            .offsets
            .get(rollout + 1)
            .copied()
            .unwrap_or(self.pending.len());
        if let Some(cell) = self.pending.get(start..end).and_then(|own| own.get(slot)) {
            cell.set(cell.get().saturating_add(1));
        }
    }

    /// Hands every non-zero count to `add` as (tally index, count) and resets it to zero.
    pub fn drain(&self, mut add: impl FnMut(usize, u64)) {
        for (index, cell) in self.pending.iter().enumerate() {
            let count = cell.replace(0);
            if count > 0 {
                add(index, count);
            }
        }
    }

    /// Number of counters.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether the policy has no counters (no rollouts).
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CompiledPolicy {
        let json = r#"{"rollouts": [
            {"name": "a", "hosts": ["a.local"], "versions": ["s1", "c1"],
             "stableHash": "s1", "canaryHash": "c1"},
            {"name": "b", "hosts": ["b.local"], "versions": ["s2"], "stableHash": "s2"}
        ]}"#;
        CompiledPolicy::from_bytes(json.as_bytes()).expect("valid test policy")
    }

    fn drained(tally: &Tally) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        tally.drain(|i, n| out.push((i, n)));
        out
    }

    #[test]
    fn tally_order_matches_counter_names() {
        let p = policy();
        let tally = Tally::new(&p);
        let names = Tally::counter_names(&p);
        // Rollout a: 2 versions x 3 reasons; rollout b: 1 x 3.
        assert_eq!(tally.len(), 9);
        assert_eq!(names.len(), 9);
        assert_eq!(
            names[0],
            "sluice_requests_total.rollout.a.version.s1.reason.header"
        );
        assert_eq!(
            names[5],
            "sluice_requests_total.rollout.a.version.c1.reason.weight"
        );
        assert_eq!(
            names[6],
            "sluice_requests_total.rollout.b.version.s2.reason.header"
        );
    }

    #[test]
    fn tally_counts_drains_and_resets() {
        let tally = Tally::new(&policy());
        assert_eq!(drained(&tally), []);
        tally.record(0, 5);
        tally.record(0, 5);
        tally.record(1, 2);
        tally.record(0, 0);
        assert_eq!(drained(&tally), [(0, 1), (5, 2), (8, 1)]);
        assert_eq!(drained(&tally), []);
        tally.record(1, 1);
        assert_eq!(drained(&tally), [(7, 1)]);
    }

    #[test]
    fn tally_ignores_out_of_range_indices() {
        let tally = Tally::new(&policy());
        // Slot 6 of rollout a would be rollout b's first counter: ignored, not misattributed.
        tally.record(0, 6);
        tally.record(1, 3);
        tally.record(2, 0);
        tally.record(usize::MAX, usize::MAX);
        assert_eq!(drained(&tally), []);
    }

    #[test]
    fn names_replace_separators() {
        assert_eq!(
            counter_name("default/demo.v2", "7c9f", Reason::Sticky),
            "sluice_requests_total.rollout.default_demo_v2.version.7c9f.reason.sticky"
        );
        assert_eq!(
            counter_name("ns/é", "a.b", Reason::Weight),
            "sluice_requests_total.rollout.ns__.version.a_b.reason.weight"
        );
    }
}
