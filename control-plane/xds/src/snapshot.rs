//! A consistent, content-versioned set of xDS resources.
//!
//! Snapshots are cheap to clone and to specialise: each type's resources sit behind one `Arc`
//! (and each resource behind its own), so a clone costs O(types), inserting into a clone copies
//! only that type's map, and every connection shares the same resource bodies. A type's set
//! version is computed once per distinct set and cached with it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prost_types::Any;
use sha2::{Digest, Sha256};

/// One xDS resource: its name, its content-hash version and its body.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub name: String,
    /// Hex prefix of sha256 over the encoded body: an unchanged resource keeps its version.
    pub version: String,
    pub body: Any,
}

impl Resource {
    pub fn new(name: impl Into<String>, body: Any) -> Self {
        let version = content_version([body.type_url.as_bytes(), &body.value]);
        Resource {
            name: name.into(),
            version,
            body,
        }
    }
}

/// The resources of one type, by name: shared, copy-on-write.
#[derive(Clone, Debug, Default)]
pub struct Resources(Arc<TypeSet>);

#[derive(Debug)]
struct TypeSet {
    by_name: BTreeMap<String, Arc<Resource>>,
    /// [`Resources::version`], computed on first use.
    version: OnceLock<String>,
    /// Unique per distinct set (a modified set gets a new one): what a [`Diff`] refers to.
    id: u64,
    /// How this set differs from the set it replaced, when [`Snapshot::sharing_with`] knew it.
    diff: OnceLock<Diff>,
}

/// What changed from one set (`base`, by id) to another: a delta stream whose client holds
/// exactly `base` applies this in O(changes) instead of comparing all M resources.
#[derive(Debug)]
pub struct Diff {
    pub base: u64,
    /// Added or changed resources, in name order.
    pub changed: Vec<Arc<Resource>>,
    /// Names no longer present, in order.
    pub removed: Vec<String>,
}

static NEXT_SET_ID: AtomicU64 = AtomicU64::new(1);

fn next_set_id() -> u64 {
    NEXT_SET_ID.fetch_add(1, Ordering::Relaxed)
}

impl Default for TypeSet {
    fn default() -> Self {
        TypeSet {
            by_name: BTreeMap::new(),
            version: OnceLock::new(),
            id: next_set_id(),
            diff: OnceLock::new(),
        }
    }
}

impl Clone for TypeSet {
    fn clone(&self) -> Self {
        // Only cloned to be modified (`Arc::make_mut`): the cached version and diff would be
        // stale, and it is another set.
        TypeSet {
            by_name: self.by_name.clone(),
            ..TypeSet::default()
        }
    }
}

impl PartialEq for Resources {
    fn eq(&self, other: &Self) -> bool {
        self.same(other) || self.0.by_name == other.0.by_name
    }
}

impl FromIterator<Arc<Resource>> for Resources {
    fn from_iter<I: IntoIterator<Item = Arc<Resource>>>(iter: I) -> Self {
        Resources(Arc::new(TypeSet {
            by_name: iter.into_iter().map(|r| (r.name.clone(), r)).collect(),
            ..TypeSet::default()
        }))
    }
}

impl Resources {
    pub fn get(&self, name: &str) -> Option<&Resource> {
        self.0.by_name.get(name).map(Arc::as_ref)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.by_name.contains_key(name)
    }

    /// Adds or replaces a resource, copying this type's map first if it is shared.
    pub fn insert(&mut self, resource: impl Into<Arc<Resource>>) -> Option<Arc<Resource>> {
        let resource = resource.into();
        self.make_mut().insert(resource.name.clone(), resource)
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<Resource>> {
        if !self.contains(name) {
            return None;
        }
        self.make_mut().remove(name)
    }

    /// In name order.
    pub fn values(&self) -> impl Iterator<Item = &Resource> {
        self.0.by_name.values().map(Arc::as_ref)
    }

    /// In name order, as shared handles.
    pub fn shared(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.0.by_name.values()
    }

    /// In order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.by_name.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.by_name.is_empty()
    }

    /// The content version of the whole set (cached): see [`Snapshot::type_version`].
    pub fn version(&self) -> &str {
        self.0.version.get_or_init(|| {
            set_version(self.values().map(|r| (r.name.as_str(), r.version.as_str())))
        })
    }

    /// Both are the very same set (not merely equal): cheap, for memoising.
    pub fn same(&self, other: &Resources) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Identifies this very set (see [`Diff`]).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// How this set differs from the set it replaced, if known.
    pub fn diff(&self) -> Option<&Diff> {
        self.0.diff.get()
    }

    /// Records how this set differs from `base` (once: the first predecessor it is shared with
    /// wins; streams that hold another one take the full comparison). O(|base| + |self|).
    fn note_diff_from(&self, base: &Resources) {
        if self.0.diff.get().is_some() || self.same(base) {
            return;
        }
        let changed = self
            .shared()
            .filter(|r| base.get(&r.name).is_none_or(|old| old.version != r.version))
            .cloned()
            .collect();
        let removed = base
            .names()
            .filter(|name| !self.contains(name))
            .map(str::to_owned)
            .collect();
        let _ = self.0.diff.set(Diff {
            base: base.id(),
            changed,
            removed,
        });
    }

    fn make_mut(&mut self) -> &mut BTreeMap<String, Arc<Resource>> {
        let set = Arc::make_mut(&mut self.0);
        // Unique now (or just copied); the set is about to change.
        set.version = OnceLock::new();
        set.diff = OnceLock::new();
        set.id = next_set_id();
        &mut set.by_name
    }
}

/// Resources by type URL, then by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub resources: BTreeMap<String, Resources>,
    /// The traffic state it was translated from, so a scoped node's share can be derived from it
    /// (`scope::NodeSnapshots`); `None` for snapshots built by hand.
    pub source: Option<Arc<sluice_model::TrafficState>>,
    /// The routes as delta-xDS Envoys receive them (VHDS, see `translate::vhds`): `None` when
    /// the snapshot has no alternative form (then delta clients get `resources` as they are).
    pub delta_routes: Option<DeltaRoutes>,
}

/// The route types of a snapshot for delta-xDS Envoys: a route configuration without the
/// rollouts' virtual hosts (it names VHDS instead), and the virtual hosts as resources of their
/// own, so a weight change sends the one virtual host that changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeltaRoutes {
    /// Replaces the snapshot's `RouteConfiguration` set.
    pub routes: Resources,
    /// The `VirtualHost` set (VHDS).
    pub virtual_hosts: Resources,
}

impl Snapshot {
    pub fn insert(&mut self, resource: impl Into<Arc<Resource>>) {
        let resource = resource.into();
        self.resources
            .entry(resource.body.type_url.clone())
            .or_default()
            .insert(resource);
    }

    /// The resources of one type (empty if none).
    pub fn of_type(&self, type_url: &str) -> impl Iterator<Item = &Resource> {
        self.resources
            .get(type_url)
            .into_iter()
            .flat_map(Resources::values)
    }

    /// The set of one type (empty if none), shared: a cheap clone.
    pub fn type_set(&self, type_url: &str) -> Resources {
        self.resources.get(type_url).cloned().unwrap_or_default()
    }

    pub fn get(&self, type_url: &str, name: &str) -> Option<&Resource> {
        self.resources.get(type_url)?.get(name)
    }

    /// The version of one type's whole resource set (for state-of-the-world `version_info`).
    pub fn type_version(&self, type_url: &str) -> String {
        match self.resources.get(type_url) {
            Some(set) => set.version().to_string(),
            None => set_version([]),
        }
    }

    /// This snapshot, with every type set whose content equals `previous`'s replaced by
    /// `previous`'s (shared) one. Translation builds every snapshot afresh; sharing what did not
    /// change keeps it shared (and its cached versions computed) from one snapshot to the next.
    pub fn sharing_with(mut self, previous: &Snapshot) -> Snapshot {
        for (type_url, set) in &mut self.resources {
            if let Some(old) = previous.resources.get(type_url)
                && !old.same(set)
                && old.version() == set.version()
                && old.len() == set.len()
            {
                *set = old.clone();
            } else if let Some(old) = previous.resources.get(type_url) {
                set.note_diff_from(old);
            }
        }
        if let (Some(new), Some(old)) = (&mut self.delta_routes, &previous.delta_routes) {
            share_if_equal(&mut new.routes, &old.routes);
            share_if_equal(&mut new.virtual_hosts, &old.virtual_hosts);
        }
        self
    }

    /// Every type (and the delta routes) is the very same set in both: a stream holding one
    /// has nothing to do for the other. O(types).
    pub fn same_sets(&self, other: &Snapshot) -> bool {
        let routes = match (&self.delta_routes, &other.delta_routes) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.routes.same(&b.routes) && a.virtual_hosts.same(&b.virtual_hosts)
            }
            _ => false,
        };
        routes
            && self.resources.len() == other.resources.len()
            && self
                .resources
                .iter()
                .zip(&other.resources)
                .all(|((ta, a), (tb, b))| ta == tb && a.same(b))
    }

    /// The snapshot a delta-xDS Envoy receives: the route types replaced by [`DeltaRoutes`] when
    /// there are some. Costs O(types): every set is shared.
    pub fn for_delta(&self) -> Snapshot {
        let mut own = self.clone();
        if let Some(delta) = own.delta_routes.take() {
            own.resources
                .insert(crate::type_url::ROUTE.to_owned(), delta.routes);
            own.resources.insert(
                crate::type_url::VIRTUAL_HOST.to_owned(),
                delta.virtual_hosts,
            );
        }
        own
    }

    /// The version of the whole snapshot.
    pub fn version(&self) -> String {
        set_version(
            self.resources
                .values()
                .flat_map(Resources::values)
                .map(|r| (r.name.as_str(), r.version.as_str())),
        )
    }
}

/// `set` becomes `old` (shared) when their contents are the same.
fn share_if_equal(set: &mut Resources, old: &Resources) {
    if !old.same(set) && old.version() == set.version() && old.len() == set.len() {
        *set = old.clone();
    } else {
        set.note_diff_from(old);
    }
}

/// Content version of a set of resources given as (name, version) pairs in name order.
pub fn set_version<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    content_version(
        pairs
            .into_iter()
            .flat_map(|(name, version)| [name.as_bytes(), version.as_bytes()]),
    )
}

/// A short, stable content hash: 16 hex digits of sha256.
pub fn content_version<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefix each part so ("ab","c") and ("a","bc") differ.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(type_url: &str, name: &str, value: &[u8]) -> Resource {
        Resource::new(
            name,
            Any {
                type_url: type_url.into(),
                value: value.to_vec(),
            },
        )
    }

    #[test]
    fn a_clone_shares_until_one_type_is_changed() {
        let mut base = Snapshot::default();
        base.insert(resource("t/a", "x", b"1"));
        base.insert(resource("t/b", "y", b"2"));
        let before = base.type_version("t/a");

        let mut own = base.clone();
        own.insert(resource("t/a", "x", b"changed"));

        assert!(own.resources["t/b"].same(&base.resources["t/b"]));
        assert!(!own.resources["t/a"].same(&base.resources["t/a"]));
        assert_eq!(
            base.type_version("t/a"),
            before,
            "the original is untouched"
        );
        assert_ne!(
            own.type_version("t/a"),
            before,
            "the cached version was reset"
        );
        assert_eq!(
            own.type_version("t/a"),
            set_version(
                own.of_type("t/a")
                    .map(|r| (r.name.as_str(), r.version.as_str()))
            )
        );
    }

    #[test]
    fn unchanged_types_are_shared_with_the_previous_snapshot() {
        let build = |value: &[u8]| {
            let mut snapshot = Snapshot::default();
            snapshot.insert(resource("t/a", "x", value));
            snapshot.insert(resource("t/b", "y", b"same"));
            snapshot
        };
        let previous = build(b"1");
        let next = build(b"2").sharing_with(&previous);
        assert!(next.resources["t/b"].same(&previous.resources["t/b"]));
        assert!(!next.resources["t/a"].same(&previous.resources["t/a"]));
        assert_eq!(next, build(b"2"));
    }

    #[test]
    fn removing_a_resource_changes_the_type_version() {
        let mut snapshot = Snapshot::default();
        snapshot.insert(resource("t/a", "x", b"1"));
        snapshot.insert(resource("t/a", "y", b"2"));
        let both = snapshot.type_version("t/a");
        let set = snapshot.resources.get_mut("t/a").expect("type present");
        assert!(set.remove("nope").is_none());
        assert!(set.remove("y").is_some());
        assert_ne!(snapshot.type_version("t/a"), both);
        assert_eq!(snapshot.type_version("t/none"), set_version([]));
    }
}
