//! The xDS layer of the Sluice control plane.
//!
//! ```text
//!  TrafficState (sluice-model)
//!        │ translate::translate()                      pure
//!        ▼
//!  Snapshot {type_url → name → (version, Any)}          pure, consistent, content-versioned
//!        │ tokio::sync::watch (coalesces bursts)
//!        │ scope::NodeSnapshots: per node, its scope's share (node metadata `sluice.scope`)
//!        ▼
//!  server::AdsServer ── per stream ──► protocol::Connection / DeltaConnection   sans-I/O state machines
//!        │                                (subscriptions, nonces, ACK/NACK, make-before-break)
//!        ▼
//!  registry::Registry: connected proxies, ACKed versions, last NACK (status API, metrics)
//! ```
#![forbid(unsafe_code)]

pub mod bootstrap;
mod node_key;
pub mod protocol;
pub mod registry;
pub mod scope;
pub mod server;
pub mod snapshot;
pub mod translate;
pub mod type_url;
