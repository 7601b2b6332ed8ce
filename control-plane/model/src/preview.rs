//! Blue/green preview (Argo's `previewService`): besides the rollout's own hosts, which route by
//! the filter's decision (stable, canary, header routes), the preview hosts route straight to one
//! version — the new one before promotion, the active one otherwise. The switch at promotion is
//! the rollout's `stable_hash` changing: one push, no selector edit.
//!
//! The preview hosts are an Envoy route only: the filter does not serve them (its policy lists the
//! rollout's own hosts), so a client-sent routing header cannot pick another version there. A
//! header rule that reaches the preview on the active hosts is an ordinary [`crate::HeaderRoute`]
//! targeting the preview's hash.

use std::collections::BTreeSet;

use sluice_proto::rules;

use crate::{FieldPath, RolloutState};

/// The preview hosts of a rollout and the version they route to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    /// Lower-case, without port; at least one, none of them also one of the rollout's `hosts`.
    pub hosts: Vec<String>,
    /// A live version: the new one while it is previewed, else the stable one.
    pub hash: String,
}

impl RolloutState {
    /// Every host this rollout serves: its own, then its preview hosts.
    pub fn all_hosts(&self) -> impl Iterator<Item = &String> {
        self.hosts
            .iter()
            .chain(self.preview.iter().flat_map(|p| p.hosts.iter()))
    }

    /// Checks the preview: valid hosts, none listed twice or also an active host, a live hash.
    /// Errors name `preview.hosts[i]` or `preview.hash`.
    pub(crate) fn validate_preview(&self) -> Result<(), (FieldPath, String)> {
        let Some(preview) = &self.preview else {
            return Ok(());
        };
        let hosts = FieldPath::field("preview").then("hosts");
        if preview.hosts.is_empty() {
            return Err((hosts, "at least one host is required".into()));
        }
        let mut seen = BTreeSet::new();
        for (i, host) in preview.hosts.iter().enumerate() {
            rules::check_host(host).map_err(|v| (hosts.at(i), v.0))?;
            if self.hosts.contains(host) {
                return Err((
                    hosts.at(i),
                    format!("{host:?} is also one of the rollout's active hosts"),
                ));
            }
            if !seen.insert(host) {
                return Err((hosts.at(i), format!("{host:?} is listed twice")));
            }
        }
        if !self.versions.contains_key(&preview.hash) {
            let known: Vec<&str> = self.versions.keys().map(String::as_str).collect();
            return Err((
                FieldPath::field("preview").then("hash"),
                format!("{:?} is not one of the versions {known:?}", preview.hash),
            ));
        }
        Ok(())
    }
}
