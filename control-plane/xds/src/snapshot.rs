//! A consistent, content-versioned set of xDS resources.

use std::collections::BTreeMap;

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

/// Resources by type URL, then by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub resources: BTreeMap<String, BTreeMap<String, Resource>>,
}

impl Snapshot {
    pub fn insert(&mut self, resource: Resource) {
        self.resources
            .entry(resource.body.type_url.clone())
            .or_default()
            .insert(resource.name.clone(), resource);
    }

    /// The resources of one type (empty if none).
    pub fn of_type(&self, type_url: &str) -> impl Iterator<Item = &Resource> {
        self.resources
            .get(type_url)
            .into_iter()
            .flat_map(|m| m.values())
    }

    pub fn get(&self, type_url: &str, name: &str) -> Option<&Resource> {
        self.resources.get(type_url)?.get(name)
    }

    /// The version of one type's whole resource set (for state-of-the-world `version_info`).
    pub fn type_version(&self, type_url: &str) -> String {
        content_version(
            self.of_type(type_url)
                .flat_map(|r| [r.name.as_bytes(), r.version.as_bytes()]),
        )
    }

    /// The version of the whole snapshot.
    pub fn version(&self) -> String {
        content_version(
            self.resources
                .values()
                .flat_map(|m| m.values())
                .flat_map(|r| [r.name.as_bytes(), r.version.as_bytes()]),
        )
    }
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
