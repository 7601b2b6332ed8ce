//! One `watch` channel per kind of node.
//!
//! Envoys with the same node metadata and ADS variant receive the same snapshot, so each
//! publication is specialised once per kind, and only the kinds whose snapshot changed are
//! told. With 10,000 sidecars scoped to a few rollouts each, a weight change then wakes the
//! streams of the scopes holding that rollout instead of all 10,000 (every woken stream costs a
//! task poll, a lock and a specialisation, which was most of the control plane's CPU per change).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use envoy_types::pb::google::protobuf::Struct;
use tokio::sync::watch;

use super::{NodeSpecialise, Published};
use crate::snapshot::Snapshot;

/// Kinds of node and their current snapshots. Thread-safe; one per server.
pub(super) struct Fanout {
    specialise: NodeSpecialise,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The latest publication, as published and as shared with the one before it (its
    /// unchanged types are the very same sets, which the streams skip in O(1)).
    latest: Option<(Arc<Snapshot>, Arc<Snapshot>)>,
    kinds: HashMap<KindKey, Kind>,
}

/// The node metadata's canonical key, and whether the stream is delta ADS.
type KindKey = (Vec<u8>, bool);

struct Kind {
    metadata: Option<Struct>,
    delta: bool,
    tx: watch::Sender<Published>,
}

impl Fanout {
    pub(super) fn new(specialise: NodeSpecialise) -> Self {
        Fanout {
            specialise,
            state: Mutex::default(),
        }
    }

    /// The channel of the streams of nodes with `metadata` (delta ADS or not), holding their
    /// snapshot of the latest publication (`None` until there is one). The fan-out takes the
    /// latest publication now if it has not yet, so a new stream never starts behind the others.
    pub(super) fn subscribe(
        &self,
        metadata: Option<&Struct>,
        delta: bool,
        publications: &watch::Receiver<Published>,
    ) -> watch::Receiver<Published> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Read under the lock, as `publish` does: the fan-out only ever moves forward.
        let published = publications.borrow().clone();
        if let Some(published) = &published {
            self.advance(&mut state, published);
        }
        let key = (crate::node_key::metadata_key(metadata), delta);
        if let Some(kind) = state.kinds.get(&key) {
            return kind.tx.subscribe();
        }
        let current = state
            .latest
            .as_ref()
            .map(|(_, shared)| Arc::new(self.for_kind(metadata, delta, shared)));
        let (tx, rx) = watch::channel(current);
        state.kinds.insert(
            key,
            Kind {
                metadata: metadata.cloned(),
                delta,
                tx,
            },
        );
        rx
    }

    /// Takes the latest publication: every kind with streams gets its snapshot of it, and only
    /// the kinds whose snapshot changed are notified. Kinds without streams are forgotten.
    pub(super) fn publish(&self, publications: &mut watch::Receiver<Published>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let published = publications.borrow_and_update().clone();
        if let Some(published) = &published {
            self.advance(&mut state, published);
        }
    }

    fn advance(&self, state: &mut State, published: &Arc<Snapshot>) {
        let shared = match &state.latest {
            Some((seen, _)) if Arc::ptr_eq(seen, published) => return,
            Some((_, previous)) => Arc::new(Snapshot::clone(published).sharing_with(previous)),
            None => Arc::clone(published),
        };
        state.kinds.retain(|_, kind| kind.tx.receiver_count() > 0);
        for kind in state.kinds.values() {
            let own = self.for_kind(kind.metadata.as_ref(), kind.delta, &shared);
            kind.tx.send_if_modified(|current| {
                if current.as_ref().is_some_and(|c| c.same_sets(&own)) {
                    return false;
                }
                *current = Some(Arc::new(own));
                true
            });
        }
        state.latest = Some((Arc::clone(published), shared));
    }

    fn for_kind(&self, metadata: Option<&Struct>, delta: bool, shared: &Snapshot) -> Snapshot {
        let own = (self.specialise)(metadata, shared);
        // Delta Envoys take the routes one virtual host at a time (VHDS).
        if delta { own.for_delta() } else { own }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Resource;

    fn snapshot(entries: &[(&str, &str, &[u8])]) -> Arc<Snapshot> {
        let mut snapshot = Snapshot::default();
        for (type_url, name, body) in entries {
            snapshot.insert(Resource::new(
                *name,
                prost_types::Any {
                    type_url: type_url.to_string(),
                    value: body.to_vec(),
                },
            ));
        }
        Arc::new(snapshot)
    }

    fn metadata(kind: &str) -> Struct {
        Struct {
            fields: [(
                "kind".to_string(),
                envoy_types::pb::google::protobuf::Value {
                    kind: Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
                        kind.into(),
                    )),
                },
            )]
            .into(),
        }
    }

    /// Nodes of kind `a` see only type `t/a`, all others only `t/b`.
    fn fanout() -> Fanout {
        Fanout::new(Arc::new(|metadata: Option<&Struct>, s: &Snapshot| {
            let wanted = if metadata == Some(&metadata_a()) {
                "t/a"
            } else {
                "t/b"
            };
            let mut own = Snapshot::default();
            if let Some(set) = s.resources.get(wanted) {
                own.resources.insert(wanted.to_string(), set.clone());
            }
            own
        }))
    }

    fn metadata_a() -> Struct {
        metadata("a")
    }

    #[test]
    fn a_publication_wakes_only_the_kinds_whose_snapshot_changed() {
        let fanout = fanout();
        let (tx, mut publications) =
            watch::channel(Some(snapshot(&[("t/a", "x", b"1"), ("t/b", "y", b"1")])));
        let mut publish = |snapshot| {
            tx.send_replace(Some(snapshot));
            fanout.publish(&mut publications);
        };
        let mut a = fanout.subscribe(Some(&metadata_a()), false, &tx.subscribe());
        let mut a_again = fanout.subscribe(Some(&metadata_a()), false, &tx.subscribe());
        let mut b = fanout.subscribe(Some(&metadata("b")), false, &tx.subscribe());
        let mut unscoped = fanout.subscribe(None, false, &tx.subscribe());
        for rx in [&mut a, &mut a_again, &mut b, &mut unscoped] {
            let current = rx
                .borrow_and_update()
                .clone()
                .expect("the first publication");
            assert_eq!(current.resources.len(), 1);
        }

        // Only t/a changes: the two streams of kind a are told, b and the unscoped are not.
        publish(snapshot(&[("t/a", "x", b"2"), ("t/b", "y", b"1")]));
        assert!(a.has_changed().expect("open") && a_again.has_changed().expect("open"));
        assert!(!b.has_changed().expect("open") && !unscoped.has_changed().expect("open"));
        let a_now = a.borrow_and_update().clone().expect("published");
        assert_eq!(
            a_now.get("t/a", "x").map(|r| r.body.value.clone()),
            Some(b"2".to_vec())
        );

        // Only t/b changes: b and the unscoped are told, a is not.
        let third = snapshot(&[("t/a", "x", b"2"), ("t/b", "y", b"3")]);
        publish(Arc::clone(&third));
        assert!(!a.has_changed().expect("open"));
        assert!(b.has_changed().expect("open") && unscoped.has_changed().expect("open"));
        for rx in [&mut a_again, &mut b, &mut unscoped] {
            rx.borrow_and_update();
        }
        // The same publication again tells nobody.
        publish(third);
        for rx in [&a, &a_again, &b, &unscoped] {
            assert!(!rx.has_changed().expect("open"));
        }
    }

    #[test]
    fn a_new_stream_starts_from_the_latest_publication_and_kinds_without_streams_go() {
        let fanout = fanout();
        let (tx, mut publications) = watch::channel(None);
        let none = fanout.subscribe(None, true, &publications);
        assert!(none.borrow().is_none(), "nothing published yet");
        // Published, and the fan-out has not taken it yet: the new stream starts from it.
        tx.send_replace(Some(snapshot(&[("t/b", "y", b"1")])));
        let rx = fanout.subscribe(None, true, &publications);
        let current = rx.borrow().clone().expect("the latest publication");
        assert_eq!(
            current.get("t/b", "y").map(|r| r.body.value.clone()),
            Some(b"1".to_vec())
        );
        drop((none, rx));
        tx.send_replace(Some(snapshot(&[("t/b", "y", b"2")])));
        fanout.publish(&mut publications);
        let state = fanout.state.lock().expect("not poisoned");
        assert!(state.kinds.is_empty(), "no stream of the kind is left");
    }
}
