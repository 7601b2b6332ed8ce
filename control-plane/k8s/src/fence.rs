//! Keeps the leader's view from going back in time after its own writes.
//!
//! A write returns the object as stored (resourceVersion `X`), and the driver applies it at once so
//! the next reconcile does not act on what it has just changed. The watch stream, though, may
//! still deliver that object's earlier events (written before `X`, sent after the write
//! returned): applied, they would put an older status back in the view, the engine would act on
//! it again (a second publish of the same traffic under a new generation, a status write that
//! undoes a newer one). A watch delivers one object's events in resourceVersion order, so every
//! event before `X` is older: this fence drops them until `X` itself arrives.
//!
//! resourceVersions are compared only for equality, as Kubernetes asks of clients (they are
//! opaque). A relist (`Reset`) or a delete lifts the fence: the list is the current state.

use std::collections::BTreeMap;

/// Per object key: the resourceVersion of this replica's newest write not yet seen on the watch.
#[derive(Debug)]
pub struct Fence<K> {
    pending: BTreeMap<K, String>,
}

impl<K> Default for Fence<K> {
    fn default() -> Self {
        Fence {
            pending: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Fence<K> {
    /// This replica wrote `key`, which the API server stored as `resource_version`.
    pub fn wrote(&mut self, key: K, resource_version: Option<&str>) {
        match resource_version {
            Some(rv) => {
                self.pending.insert(key, rv.to_owned());
            }
            // Nothing to wait for: the view is not fenced.
            None => {
                self.pending.remove(&key);
            }
        }
    }

    /// Whether a watch event for `key` at `resource_version` is to be applied: `false` for an
    /// event the stream delivers before this replica's own newer write.
    pub fn admit(&mut self, key: &K, resource_version: Option<&str>) -> bool {
        let Some(pending) = self.pending.get(key) else {
            return true;
        };
        if resource_version == Some(pending.as_str()) {
            self.pending.remove(key);
            return true;
        }
        false
    }

    /// The object was deleted: its next events are a new object's.
    pub fn forget(&mut self, key: &K) {
        self.pending.remove(key);
    }

    /// A relist replaced the view (of one namespace, or all with `None`).
    pub fn reset(&mut self, in_scope: impl Fn(&K) -> bool) {
        self.pending.retain(|k, _| !in_scope(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_before_the_own_write_are_dropped_until_it_arrives() {
        let mut fence = Fence::default();
        assert!(fence.admit(&"a", Some("5")), "nothing written: all pass");
        fence.wrote("a", Some("9"));
        // Two earlier events (another writer's at 6, ours at 8) are still in the stream.
        assert!(!fence.admit(&"a", Some("6")));
        assert!(!fence.admit(&"a", Some("8")));
        assert!(fence.admit(&"b", Some("7")), "other objects are not fenced");
        assert!(fence.admit(&"a", Some("9")), "our write arrives");
        assert!(fence.admit(&"a", Some("10")), "and later events pass");
    }

    #[test]
    fn a_second_write_moves_the_fence_and_a_delete_or_relist_lifts_it() {
        let mut fence = Fence::default();
        fence.wrote("a", Some("9"));
        fence.wrote("a", Some("11"));
        assert!(!fence.admit(&"a", Some("9")));
        assert!(fence.admit(&"a", Some("11")));

        fence.wrote("a", Some("12"));
        fence.forget(&"a");
        assert!(
            fence.admit(&"a", Some("3")),
            "a new object after the delete"
        );

        fence.wrote("a", Some("13"));
        fence.wrote("b", Some("14"));
        fence.reset(|k| *k == "a");
        assert!(fence.admit(&"a", Some("1")));
        assert!(!fence.admit(&"b", Some("1")), "outside the relist");

        fence.wrote("b", None);
        assert!(
            fence.admit(&"b", Some("1")),
            "a write without a version fences nothing"
        );
    }
}
