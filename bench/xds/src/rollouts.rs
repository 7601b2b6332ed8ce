//! The benchmark's rollouts file: M standalone-mode Rollouts, each paused at a 10 % canary with
//! one static endpoint per version.

use std::fmt::Write as _;

/// Namespace of every benchmark rollout.
pub const NAMESPACE: &str = "bench";

/// The rollout whose weight the benchmark changes, as the admin API names it.
pub fn changed_rollout() -> String {
    format!("{NAMESPACE}/{}", rollout_name(0))
}

pub fn rollout_name(i: usize) -> String {
    format!("svc-{i}")
}

/// The host of rollout `i`.
pub fn host(i: usize) -> String {
    format!("{}.{NAMESPACE}.local", rollout_name(i))
}

/// Scoped clients: `m / per_scope` groups of `per_scope` consecutive rollouts; client `c` is in
/// group `c mod groups` and declares that group's hosts. `None` when `per_scope` is 0 or does not
/// divide `m`.
pub fn scope_of(client: usize, m: usize, per_scope: usize) -> Option<Vec<String>> {
    let groups = groups(m, per_scope)?;
    let first = (client % groups) * per_scope;
    Some((first..first + per_scope).map(host).collect())
}

/// The changed rollout (the first) is in group 0: the clients a change concerns.
pub fn is_affected(client: usize, m: usize, per_scope: usize) -> bool {
    groups(m, per_scope).is_some_and(|groups| client.is_multiple_of(groups))
}

fn groups(m: usize, per_scope: usize) -> Option<usize> {
    (per_scope > 0 && m.is_multiple_of(per_scope)).then(|| m / per_scope)
}

/// The YAML stream of `m` Rollout documents.
pub fn rollouts_yaml(m: usize) -> String {
    let mut out = String::new();
    for i in 0..m {
        let name = rollout_name(i);
        let hostname = host(i);
        // Distinct addresses: 250 per /24, starting at .1.
        let (subnet, host) = (i / 250, i % 250 + 1);
        let _ = write!(
            out,
            "\
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  hosts: [{hostname}]
  strategy:
    canary:
      steps: [{{setWeight: 10}}, {{pause: {{}}}}]
  staticEndpoints:
    aaaa{i}: [\"10.0.{subnet}.{host}:8080\"]
    bbbb{i}: [\"10.1.{subnet}.{host}:8080\"]
status:
  stableRS: aaaa{i}
  currentPodHash: bbbb{i}
  currentStepIndex: 1
---
"
        );
    }
    out
}

/// Canary weight (basis points) of change `k`; `None` is the warm-up change. Every weight differs
/// from the one before it (and the first from the file's 10 %), so each change is real.
pub fn weight_bp(k: Option<usize>) -> u32 {
    match k {
        None => 2_500,
        Some(k) if k % 2 == 0 => 2_000,
        Some(_) => 3_000,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn one_document_per_rollout_with_distinct_addresses() {
        let yaml = rollouts_yaml(1_000);
        let docs: Vec<&str> = yaml
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .collect();
        assert_eq!(docs.len(), 1_000);
        assert!(docs[0].contains("metadata: {name: svc-0, namespace: bench}"));
        assert!(docs[0].contains("aaaa0: [\"10.0.0.1:8080\"]"));
        assert!(docs[250].contains("bbbb250: [\"10.1.1.1:8080\"]"));
        assert!(docs[999].contains("aaaa999: [\"10.0.3.250:8080\"]"));
        let addresses: BTreeSet<&str> = yaml.lines().filter_map(|l| l.split('"').nth(1)).collect();
        assert_eq!(addresses.len(), 2_000);
    }

    #[test]
    fn every_weight_differs_from_the_previous_one() {
        let weights: Vec<u32> = std::iter::once(1_000)
            .chain(std::iter::once(weight_bp(None)))
            .chain((0..10).map(|k| weight_bp(Some(k))))
            .collect();
        assert!(weights.windows(2).all(|w| w[0] != w[1]), "{weights:?}");
        assert!(weights.iter().all(|w| *w <= 10_000));
    }

    #[test]
    fn scopes_split_the_rollouts_into_groups_of_clients() {
        // 10,000 sidecars × 2,000 rollouts, 20 each: 100 groups of 100 clients.
        assert_eq!(
            scope_of(0, 2_000, 20).unwrap(),
            (0..20).map(host).collect::<Vec<_>>()
        );
        assert_eq!(scope_of(101, 2_000, 20).unwrap()[0], "svc-20.bench.local");
        assert_eq!(scope_of(100, 2_000, 20), scope_of(0, 2_000, 20));
        let affected = (0..10_000).filter(|c| is_affected(*c, 2_000, 20)).count();
        assert_eq!(affected, 100);
        assert!(scope_of(0, 2_000, 0).is_none() && scope_of(0, 30, 20).is_none());
        assert!(!is_affected(0, 30, 20));
        assert!(rollouts_yaml(1).contains("hosts: [svc-0.bench.local]"));
    }

    #[test]
    fn the_changed_rollout_is_the_first() {
        assert_eq!(changed_rollout(), "bench/svc-0");
    }
}
