//! Names of the filter's counters: one per (rollout, version, reason), a bounded set of
//! rollouts × versions × 3 defined when a policy is configured.
//!
//! Name: `sluice_requests_total.rollout.<rollout>.version.<hash>.reason.<reason>` where `<rollout>`
//! and `<hash>` have every byte outside `[A-Za-z0-9_-]` replaced by `_` (so `default/demo` becomes
//! `default_demo`) and `<reason>` is `header`, `sticky` or `weight`. See the crate docs for how
//! Envoy shows them.

use crate::decision::{Reason, metric_slots};
use crate::policy::Rollout;

/// The counter names of `rollout`, in the slot order of [`crate::decision::Decision::metric_slot`].
pub fn counter_names(rollout: &Rollout) -> Vec<String> {
    metric_slots(rollout)
        .map(|(version, reason)| counter_name(&rollout.name, rollout.hash(version), reason))
        .collect()
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
