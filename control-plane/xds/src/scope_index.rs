//! The scoped states of every distinct scope, kept up to date in O(changes) per publication.
//!
//! ```text
//!  publication P → P': changed rollouts C (one O(M) walk of both states, once)
//!     for each c in C: scopes concerned = index[c's hosts] ∪ index[c's namespace] ∪ index[c's name]
//!                      (before and after the change: a rollout whose hosts change moves)
//!     each concerned scope: its state's entry for c updated, its snapshot marked stale
//!     every other scope: untouched (its snapshot stays the very same, its nodes get nothing)
//! ```
//!
//! Before this, each scope filtered all M rollouts on every publication (O(scopes × M)).
//! Invariant, for every cached scope: `state == restrict(current, scope)`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sluice_model::{RolloutState, TrafficState};

use super::{Scope, restrict};
use crate::snapshot::Snapshot;

/// Which cached scopes list which entry: every host, namespace and `namespace/name` of every
/// scope, to the scopes (by id) that list it.
#[derive(Debug, Default)]
pub(crate) struct ScopeIndex {
    hosts: HashMap<String, Vec<usize>>,
    namespaces: HashMap<String, Vec<usize>>,
    rollouts: HashMap<String, Vec<usize>>,
}

impl ScopeIndex {
    /// Indexes scope `id`'s entries.
    pub(crate) fn add(&mut self, id: usize, scope: &Scope) {
        for host in &scope.hosts {
            self.hosts.entry(host.clone()).or_default().push(id);
        }
        for namespace in &scope.namespaces {
            self.namespaces
                .entry(namespace.clone())
                .or_default()
                .push(id);
        }
        for rollout in &scope.rollouts {
            self.rollouts.entry(rollout.clone()).or_default().push(id);
        }
    }

    /// Adds to `out` every indexed scope that holds `rollout`: exactly the scopes for which
    /// [`Scope::contains`] is true (same three keys). O(keys of the rollout).
    pub(crate) fn scopes_of(&self, rollout: &RolloutState, out: &mut BTreeSet<usize>) {
        let mut take = |ids: Option<&Vec<usize>>| out.extend(ids.into_iter().flatten().copied());
        take(self.rollouts.get(&rollout.name));
        if let Some((namespace, _)) = rollout.name.split_once('/') {
            take(self.namespaces.get(namespace));
        }
        for host in rollout.all_hosts() {
            take(self.hosts.get(host));
        }
    }
}

/// A rollout that differs between two states: before (absent when added) and after (absent
/// when removed).
pub(crate) type Change<'a> = (&'a str, Option<&'a RolloutState>, Option<&'a RolloutState>);

/// The rollouts added, removed or changed from `old` to `new`, in name order: one merge walk of
/// both (sorted) maps, O(M).
pub(crate) fn changed_rollouts<'a>(
    old: &'a TrafficState,
    new: &'a TrafficState,
) -> Vec<Change<'a>> {
    let mut changes = Vec::new();
    let mut olds = old.rollouts.iter().peekable();
    let mut news = new.rollouts.iter().peekable();
    loop {
        match (olds.peek(), news.peek()) {
            (None, None) => break,
            (Some((name, before)), None) => {
                changes.push((name.as_str(), Some(*before), None));
                olds.next();
            }
            (None, Some((name, after))) => {
                changes.push((name.as_str(), None, Some(*after)));
                news.next();
            }
            (Some((old_name, before)), Some((new_name, after))) => match old_name.cmp(new_name) {
                std::cmp::Ordering::Less => {
                    changes.push((old_name.as_str(), Some(*before), None));
                    olds.next();
                }
                std::cmp::Ordering::Greater => {
                    changes.push((new_name.as_str(), None, Some(*after)));
                    news.next();
                }
                std::cmp::Ordering::Equal => {
                    if before != after {
                        changes.push((old_name.as_str(), Some(*before), Some(*after)));
                    }
                    olds.next();
                    news.next();
                }
            },
        }
    }
    changes
}

/// One distinct scope: its part of the current publication and that part's translation.
#[derive(Debug)]
pub(crate) struct Scoped {
    pub(crate) scope: Scope,
    /// `restrict(current, scope)`.
    pub(crate) state: TrafficState,
    /// The translation of `state` once it is made; `None` while `state` changed since.
    pub(crate) snapshot: Option<Snapshot>,
    /// The last translation made, to share unchanged type sets with.
    pub(crate) last: Option<Snapshot>,
}

/// Every distinct scope seen, up to date with one publication.
#[derive(Debug, Default)]
pub(crate) struct ScopeCache {
    /// The publication every entry's state is restricted from.
    current: Option<Arc<TrafficState>>,
    entries: Vec<Scoped>,
    ids: HashMap<Scope, usize>,
    index: ScopeIndex,
}

impl ScopeCache {
    /// Brings every entry up to `source` (a no-op when it already is): only the scopes
    /// holding a changed rollout (before or after the change) are touched. Returns the ids of
    /// the scopes whose state changed.
    pub(crate) fn advance_to(&mut self, source: &Arc<TrafficState>) -> BTreeSet<usize> {
        let mut touched = BTreeSet::new();
        let Some(current) = &self.current else {
            self.current = Some(Arc::clone(source));
            return touched;
        };
        if Arc::ptr_eq(current, source) {
            return touched;
        }
        let current = Arc::clone(current);
        for (name, before, after) in changed_rollouts(&current, source) {
            let mut concerned = BTreeSet::new();
            for rollout in before.into_iter().chain(after) {
                self.index.scopes_of(rollout, &mut concerned);
            }
            for id in concerned {
                let entry = &mut self.entries[id];
                let now_in = after.filter(|rollout| entry.scope.contains(rollout));
                let changed = match now_in {
                    Some(rollout) if entry.state.rollouts.get(name) == Some(rollout) => false,
                    Some(rollout) => {
                        let rollout = rollout.clone();
                        entry.state.rollouts.insert(name.to_owned(), rollout);
                        true
                    }
                    None => entry.state.rollouts.remove(name).is_some(),
                };
                if changed {
                    entry.snapshot = None;
                    touched.insert(id);
                }
            }
        }
        self.current = Some(Arc::clone(source));
        touched
    }

    /// The entry of `scope` at the current publication, added (O(M), once per distinct scope)
    /// if new. Call [`ScopeCache::advance_to`] first.
    pub(crate) fn entry(&mut self, scope: Scope) -> &mut Scoped {
        let id = match self.ids.get(&scope) {
            Some(&id) => id,
            None => {
                let id = self.entries.len();
                let state = match &self.current {
                    Some(current) => restrict(current, &scope),
                    None => TrafficState::default(),
                };
                self.index.add(id, &scope);
                self.ids.insert(scope.clone(), id);
                self.entries.push(Scoped {
                    scope,
                    state,
                    snapshot: None,
                    last: None,
                });
                id
            }
        };
        &mut self.entries[id]
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every entry (tests check the invariant with it).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Scoped> {
        self.entries.iter()
    }
}

#[cfg(test)]
#[path = "scope_index_tests.rs"]
mod tests;
