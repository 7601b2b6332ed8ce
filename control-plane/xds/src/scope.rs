//! Scoping: each Envoy receives only the rollouts it needs.
//!
//! ```text
//!  node metadata  sluice.scope: ["reviews.shop.svc", "payments/*", "shop/cart"]
//!                                 a host            a namespace   a rollout (namespace/name)
//!        │ Scope::from_metadata                      (absent: unscoped, every rollout)
//!        ▼
//!  published Snapshot ── its TrafficState ── restrict(state, scope) ── translate ──► scoped Snapshot
//!        (one per distinct scope, cached: every Envoy with the same scope shares it, and a change
//!         to a rollout outside the scope leaves it untouched, so those Envoys receive nothing)
//!  next publication: only the scopes holding a changed rollout are updated and re-translated,
//!        found through an index of the scopes' entries (`scope_index.rs`): O(changes), not
//!        O(scopes × M); translations re-encode only changed rollouts (`translate::Translator`)
//! ```
//!
//! A sidecar declares the services it calls (`sluice bootstrap --scope`), a gateway its hosts or
//! namespaces. An Envoy without `sluice.scope` (or with a value that is not a list of strings,
//! logged) keeps receiving every rollout, as before.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use sluice_model::{RolloutState, TrafficState};

use crate::snapshot::Snapshot;
use crate::translate::{TranslateOptions, Translator, for_node};

#[path = "scope_index.rs"]
mod index;
use index::ScopeCache;

/// Node metadata key listing the rollouts an Envoy needs (see the module docs).
pub const SCOPE_METADATA_KEY: &str = "sluice.scope";

/// The rollouts one Envoy needs: those serving one of `hosts`, living in one of `namespaces`, or
/// named in `rollouts`. An empty scope selects nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// Lower-case, without a trailing dot.
    pub hosts: BTreeSet<String>,
    pub namespaces: BTreeSet<String>,
    /// `namespace/name`.
    pub rollouts: BTreeSet<String>,
}

/// A scope entry that is none of host, `namespace/*` or `namespace/name`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("scope entry {entry:?}: {reason}")]
pub struct ScopeError {
    pub entry: String,
    pub reason: &'static str,
}

impl Scope {
    /// Parses entries: `host`, `namespace/*` or `namespace/name`. Surrounding spaces are ignored;
    /// empty entries are errors (a stray comma must not widen nor empty a scope silently).
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Scope, ScopeError> {
        let mut scope = Scope::default();
        for raw in entries {
            let entry = raw.trim();
            let fail = |reason| ScopeError {
                entry: raw.to_owned(),
                reason,
            };
            if entry.is_empty() {
                return Err(fail("empty"));
            }
            if entry.chars().any(char::is_whitespace) {
                return Err(fail("contains whitespace"));
            }
            match entry.split_once('/') {
                None => {
                    let host = entry.trim_end_matches('.').to_ascii_lowercase();
                    if host.is_empty() {
                        return Err(fail("empty host"));
                    }
                    scope.hosts.insert(host);
                }
                Some((namespace, name)) => {
                    if namespace.is_empty() || name.is_empty() || name.contains('/') {
                        return Err(fail("expected a host, namespace/* or namespace/name"));
                    }
                    if name == "*" {
                        scope.namespaces.insert(namespace.to_owned());
                    } else {
                        scope.rollouts.insert(entry.to_owned());
                    }
                }
            }
        }
        Ok(scope)
    }

    /// The scope a node declares in its metadata: `None` (unscoped: every rollout) when the key
    /// is absent or its value is not a list of strings or a comma-separated string (logged).
    pub fn from_metadata(metadata: Option<&Struct>) -> Option<Scope> {
        let value = metadata?.fields.get(SCOPE_METADATA_KEY)?;
        let parsed = match &value.kind {
            Some(Kind::ListValue(list)) => {
                let entries: Option<Vec<&str>> = list.values.iter().map(string_value).collect();
                match entries {
                    Some(entries) => Scope::parse(entries).map_err(|e| e.to_string()),
                    None => Err("not every entry is a string".to_owned()),
                }
            }
            Some(Kind::StringValue(s)) if s.trim().is_empty() => Ok(Scope::default()),
            Some(Kind::StringValue(s)) => Scope::parse(s.split(',')).map_err(|e| e.to_string()),
            _ => Err("expected a list of strings".to_owned()),
        };
        match parsed {
            Ok(scope) => Some(scope),
            Err(reason) => {
                tracing::warn!(
                    %reason,
                    "node metadata {SCOPE_METADATA_KEY}: ignored; this node receives every rollout"
                );
                None
            }
        }
    }

    /// The rollout is in this scope.
    pub fn contains(&self, rollout: &RolloutState) -> bool {
        self.rollouts.contains(&rollout.name)
            || rollout
                .name
                .split_once('/')
                .is_some_and(|(namespace, _)| self.namespaces.contains(namespace))
            || rollout.all_hosts().any(|host| self.hosts.contains(host))
    }

    /// The entries, in the form [`Scope::parse`] reads (namespaces as `namespace/*`).
    pub fn entries(&self) -> Vec<String> {
        self.hosts
            .iter()
            .cloned()
            .chain(self.namespaces.iter().map(|ns| format!("{ns}/*")))
            .chain(self.rollouts.iter().cloned())
            .collect()
    }
}

fn string_value(value: &Value) -> Option<&str> {
    match &value.kind {
        Some(Kind::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// The part of `state` a scope selects.
pub fn restrict(state: &TrafficState, scope: &Scope) -> TrafficState {
    TrafficState {
        rollouts: state
            .rollouts
            .iter()
            .filter(|(_, rollout)| scope.contains(rollout))
            .map(|(name, rollout)| (name.clone(), rollout.clone()))
            .collect(),
    }
}

/// The snapshot of each Envoy: its scope's share of the published one, then its own listener
/// and filter build ([`for_node`]).
///
/// Two caches keep a change's cost proportional to what changed, not to the connections nor to
/// M: scoped snapshots per distinct scope (Envoys with the same scope share one; on a new
/// publication only the scopes holding a changed rollout are updated, found through an index of
/// the scopes' entries, and re-translated, see `scope_index`), and each node's final snapshot per
/// distinct node metadata (so the thousands of streams of one kind of sidecar get the very same
/// type sets, which their protocol state machines skip in O(1) when nothing in them changed).
/// Translations go through one [`Translator`], which re-encodes only the rollouts that changed.
/// Thread-safe; one per server.
#[derive(Debug)]
pub struct NodeSnapshots {
    options: TranslateOptions,
    translator: Translator,
    scopes: Mutex<ScopeCache>,
    /// Final snapshots by encoded node metadata.
    nodes: Mutex<HashMap<Vec<u8>, NodeEntry>>,
}

/// Distinct node metadata kept; past this the cache starts afresh (a bound, not an eviction
/// policy: a fleet has a handful of kinds of node, not thousands).
const MAX_NODE_KINDS: usize = 4_096;

/// The cached final snapshot of one kind of node.
#[derive(Debug)]
struct NodeEntry {
    source: Arc<TrafficState>,
    snapshot: Snapshot,
}

impl NodeSnapshots {
    /// `options` must be the ones the published snapshots are translated with.
    pub fn new(options: TranslateOptions) -> Self {
        NodeSnapshots {
            translator: Translator::new(options.clone()),
            options,
            scopes: Mutex::default(),
            nodes: Mutex::default(),
        }
    }

    /// Translates the whole state for publication: [`translate`]'s result, re-encoding only the
    /// rollouts that changed since the last call (the cache is shared with the scopes').
    pub fn translate(&self, state: &TrafficState) -> Result<Snapshot, crate::translate::XdsError> {
        self.translator.translate(state, true)
    }

    /// The snapshot for a node with this metadata.
    pub fn for_node(&self, node_metadata: Option<&Struct>, published: &Snapshot) -> Snapshot {
        let Some(source) = published.source.as_ref() else {
            return self.build(node_metadata, published);
        };
        let key = crate::node_key::metadata_key(node_metadata);
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = nodes.get(&key)
            && Arc::ptr_eq(&entry.source, source)
        {
            return entry.snapshot.clone();
        }
        let built = self.build(node_metadata, published);
        // Unchanged types stay the very sets this kind of node already holds.
        let built = match nodes.get(&key) {
            Some(entry) => built.sharing_with(&entry.snapshot),
            None => built,
        };
        if nodes.len() >= MAX_NODE_KINDS && !nodes.contains_key(&key) {
            nodes.clear();
        }
        nodes.insert(
            key,
            NodeEntry {
                source: Arc::clone(source),
                snapshot: built.clone(),
            },
        );
        built
    }

    fn build(&self, node_metadata: Option<&Struct>, published: &Snapshot) -> Snapshot {
        let scoped = match Scope::from_metadata(node_metadata) {
            Some(scope) => self.scoped(scope, published),
            None => None,
        };
        for_node(
            &self.options,
            node_metadata,
            scoped.as_ref().unwrap_or(published),
        )
    }

    /// The snapshot whose clusters, endpoints and routes every Envoy with `scope` receives:
    /// `published` restricted to it (the cached one), or `published` itself when it cannot be.
    pub fn scope_snapshot(&self, scope: &Scope, published: &Snapshot) -> Snapshot {
        self.scoped(scope.clone(), published)
            .unwrap_or_else(|| published.clone())
    }

    /// Distinct scopes cached (they are kept for Envoys that reconnect with the same scope).
    pub fn cached_scopes(&self) -> usize {
        self.scopes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// `published` restricted to `scope`; `None` (serve it whole) for a snapshot without its
    /// traffic state, which only tests build.
    fn scoped(&self, scope: Scope, published: &Snapshot) -> Option<Snapshot> {
        let source = published.source.as_ref()?;
        let mut scopes = self.scopes.lock().unwrap_or_else(PoisonError::into_inner);
        // O(changed rollouts × scopes holding them); nothing when `source` is already current.
        scopes.advance_to(source);
        let entry = scopes.entry(scope);
        if let Some(snapshot) = &entry.snapshot {
            // Unchanged since its last translation: the very same snapshot, nothing to push.
            return Some(snapshot.clone());
        }
        let snapshot = match self.translator.translate(&entry.state, false) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                // A part of a valid state is valid; if it ever is not, the whole is safe to send.
                tracing::error!(%error, scope = ?entry.scope.entries(), "cannot translate a scope; its nodes get every rollout");
                return None;
            }
        };
        let snapshot = match &entry.last {
            Some(last) => snapshot.sharing_with(last),
            None => snapshot,
        };
        entry.snapshot = Some(snapshot.clone());
        entry.last = Some(snapshot.clone());
        Some(snapshot)
    }
}

#[cfg(test)]
#[path = "scope_tests.rs"]
mod tests;
