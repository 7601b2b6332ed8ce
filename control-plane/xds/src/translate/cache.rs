//! [`translate`](super::translate) that re-encodes only what changed.
//!
//! ```text
//!  per rollout, kept by content (the RolloutState it was built from):
//!    clusters, endpoint assignments, VHDS virtual hosts   Resources (encoded, hashed)
//!    its virtual hosts as RouteConfiguration entries      encoded VirtualHost messages
//!    its filter-policy entry (weights left out)           encoded RolloutPolicy
//!  per call: changed rollouts encoded; the whole route configuration and the policy assembled
//!  from the encoded entries (prost encodes fields in tag order, so head ++ entries ++ tail is
//!  byte for byte the message `translate` encodes: same content versions)
//! ```
//!
//! A weight change re-encodes one virtual host (twice: RDS entry and VHDS resource); what is left
//! O(M) per call is copying and hashing the assembled route configuration and policy, and
//! validating and cloning the state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use sluice_model::{RolloutState, TrafficState};
use sluice_proto::v1::FilterPolicy;

use super::{
    FILTER_CONFIG_NAME, ROUTE_CONFIG_NAME, TranslateOptions, XdsError, build, check_options,
    cluster_name, listener, preview, vhds, without_weights,
};
use crate::snapshot::{DeltaRoutes, Resource, Resources, Snapshot};
use crate::type_url;

/// `RouteConfiguration.virtual_hosts` and `FilterPolicy.rollouts`.
const VIRTUAL_HOSTS_TAG: u32 = 2;
const POLICY_ROLLOUTS_TAG: u32 = 2;

/// Translates traffic states, keeping each rollout's encoded resources from one call to the
/// next. Thread-safe.
#[derive(Debug)]
pub struct Translator {
    options: TranslateOptions,
    /// What does not depend on the rollouts, encoded once.
    fixed: Fixed,
    rollouts: Mutex<HashMap<String, Arc<Parts>>>,
}

#[derive(Debug)]
struct Fixed {
    /// The route configuration before and after its rollouts' virtual hosts (the catch-all
    /// virtual host and the fields after it).
    routes_head: Vec<u8>,
    routes_tail: Vec<u8>,
    policy_head: Vec<u8>,
    policy_tail: Vec<u8>,
    listener: Arc<Resource>,
    delta_routes: Arc<Resource>,
}

/// One rollout's share of a snapshot.
#[derive(Debug)]
struct Parts {
    rollout: RolloutState,
    clusters: Vec<Arc<Resource>>,
    endpoints: Vec<Arc<Resource>>,
    /// `RouteConfiguration.virtual_hosts` entries: its virtual host, then its preview's.
    route_entries: Vec<Vec<u8>>,
    vhds: Vec<Arc<Resource>>,
    /// The encoded `RolloutPolicy` (weights left out).
    policy: Vec<u8>,
}

impl Translator {
    pub fn new(options: TranslateOptions) -> Self {
        let header = &options.routing_header;
        let catch_all = build::route_configuration_with(Vec::new(), header);
        let routes_head = RouteConfiguration {
            name: ROUTE_CONFIG_NAME.into(),
            ..Default::default()
        }
        .encode_to_vec();
        let mut routes_tail = Vec::new();
        for host in &catch_all.virtual_hosts {
            append_entry(&mut routes_tail, VIRTUAL_HOSTS_TAG, &host.encode_to_vec());
        }
        routes_tail.extend(
            RouteConfiguration {
                name: String::new(),
                virtual_hosts: Vec::new(),
                ..catch_all
            }
            .encode_to_vec(),
        );
        let mut policy = sluice_model::policy::render(&TrafficState::default(), header);
        without_weights(&mut policy);
        let policy_head = FilterPolicy {
            routing_header: policy.routing_header.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        let policy_tail = FilterPolicy {
            routing_header: String::new(),
            ..policy
        }
        .encode_to_vec();
        Translator {
            fixed: Fixed {
                routes_head,
                routes_tail,
                policy_head,
                policy_tail,
                listener: Arc::new(listener(options.listener_address)),
                delta_routes: Arc::new(vhds::route_configuration(header)),
            },
            options,
            rollouts: Mutex::default(),
        }
    }

    /// [`translate`](super::translate)`(state, options)`, equal to it, encoding only the
    /// rollouts not translated before with this very content. `forget_others`: drop the kept
    /// parts of rollouts not in `state` (pass true for whole states, false for parts of one).
    pub fn translate(
        &self,
        state: &TrafficState,
        forget_others: bool,
    ) -> Result<Snapshot, XdsError> {
        state.validate()?;
        check_options(&self.options)?;
        let parts: Vec<Arc<Parts>> = {
            let mut kept = self.rollouts.lock().unwrap_or_else(PoisonError::into_inner);
            let parts = state
                .rollouts
                .values()
                .map(|rollout| match kept.get(&rollout.name) {
                    Some(parts) if parts.rollout == *rollout => Arc::clone(parts),
                    _ => {
                        let parts = Arc::new(self.parts(rollout));
                        kept.insert(rollout.name.clone(), Arc::clone(&parts));
                        parts
                    }
                })
                .collect();
            if forget_others {
                kept.retain(|name, _| state.rollouts.contains_key(name));
            }
            parts
        };

        let mut snapshot = Snapshot::default();
        let mut put = |type_url: &str, set: Resources| {
            if !set.is_empty() {
                snapshot.resources.insert(type_url.to_owned(), set);
            }
        };
        put(
            type_url::CLUSTER,
            parts
                .iter()
                .flat_map(|p| p.clusters.iter().cloned())
                .collect(),
        );
        put(
            type_url::ENDPOINT,
            parts
                .iter()
                .flat_map(|p| p.endpoints.iter().cloned())
                .collect(),
        );
        let fixed = &self.fixed;
        let routes = assemble(
            &fixed.routes_head,
            VIRTUAL_HOSTS_TAG,
            parts.iter().flat_map(|p| &p.route_entries),
            &fixed.routes_tail,
        );
        put(
            type_url::ROUTE,
            std::iter::once(Arc::new(Resource::new(
                ROUTE_CONFIG_NAME,
                prost_types::Any {
                    type_url: type_url::ROUTE.to_owned(),
                    value: routes,
                },
            )))
            .collect(),
        );
        put(
            type_url::LISTENER,
            std::iter::once(Arc::clone(&fixed.listener)).collect(),
        );
        let policy = assemble(
            &fixed.policy_head,
            POLICY_ROLLOUTS_TAG,
            parts.iter().map(|p| &p.policy),
            &fixed.policy_tail,
        );
        put(
            type_url::EXTENSION_CONFIG,
            std::iter::once(Arc::new(Resource::new(
                FILTER_CONFIG_NAME,
                build::filter_config(&policy, &self.options.wasm),
            )))
            .collect(),
        );
        snapshot.delta_routes = Some(DeltaRoutes {
            routes: std::iter::once(Arc::clone(&fixed.delta_routes)).collect(),
            virtual_hosts: parts.iter().flat_map(|p| p.vhds.iter().cloned()).collect(),
        });
        snapshot.source = Some(Arc::new(state.clone()));
        Ok(snapshot)
    }

    /// Rollouts whose encoded parts are kept.
    pub fn kept(&self) -> usize {
        self.rollouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn parts(&self, rollout: &RolloutState) -> Parts {
        let header = &self.options.routing_header;
        let mut clusters = Vec::with_capacity(rollout.versions.len());
        let mut endpoints = Vec::with_capacity(rollout.versions.len());
        for (hash, version) in &rollout.versions {
            let name = cluster_name(rollout, hash);
            clusters.push(Arc::new(Resource::new(&name, build::cluster(&name))));
            endpoints.push(Arc::new(Resource::new(
                &name,
                build::load_assignment(&name, version),
            )));
        }
        let route_entries = std::iter::once(build::virtual_host(rollout, header))
            .chain(preview::virtual_host(rollout))
            .map(|host| host.encode_to_vec())
            .collect();
        let one = TrafficState {
            rollouts: [(rollout.name.clone(), rollout.clone())].into(),
        };
        let mut policy = sluice_model::policy::render(&one, header);
        without_weights(&mut policy);
        Parts {
            rollout: rollout.clone(),
            clusters,
            endpoints,
            route_entries,
            vhds: vhds::rollout_virtual_hosts(rollout, header)
                .map(Arc::new)
                .collect(),
            policy: policy
                .rollouts
                .first()
                .map(Message::encode_to_vec)
                .unwrap_or_default(),
        }
    }
}

/// `head`, each entry as repeated message field `tag`, then `tail`: the encoding of the message
/// whose fields before `tag` are `head` and after it `tail`.
fn assemble<'a>(
    head: &[u8],
    tag: u32,
    entries: impl Iterator<Item = &'a Vec<u8>> + Clone,
    tail: &[u8],
) -> Vec<u8> {
    let body: usize = entries.clone().map(|e| e.len() + 15).sum();
    let mut out = Vec::with_capacity(head.len() + body + tail.len());
    out.extend_from_slice(head);
    for entry in entries {
        append_entry(&mut out, tag, entry);
    }
    out.extend_from_slice(tail);
    out
}

fn append_entry(out: &mut Vec<u8>, tag: u32, entry: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(entry.len() as u64, out);
    out.extend_from_slice(entry);
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
