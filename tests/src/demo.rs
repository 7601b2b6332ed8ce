//! The demo rollout the filter tests use: "default/demo" on host `demo.local` with three live
//! versions, each served by its own loopback upstream named after its hash — stable, canary and
//! a third one ("pinned") that only a header route reaches — plus policy builders and a running
//! Envoy in front of them.

use std::net::SocketAddr;

use anyhow::ensure;
use serde_json::{Value, json};

use crate::config::{FilterSetup, LISTENER, RolloutEnvoyConfig, VersionUpstream};
use crate::{Envoy, Req, Resp, Upstream, filter_module, send_all};

pub const HOST: &str = "demo.local";
pub const STABLE: &str = "stable1";
pub const CANARY: &str = "canary1";
pub const PINNED: &str = "pinned1";
/// Keep-alive connections per load run: a few per Envoy worker.
pub const CONNECTIONS: usize = 8;

/// The three upstreams, named after the hash they serve.
#[derive(Debug)]
pub struct Upstreams {
    pub stable: Upstream,
    pub canary: Upstream,
    pub pinned: Upstream,
}

impl Upstreams {
    pub async fn start() -> anyhow::Result<Self> {
        Ok(Self {
            stable: Upstream::start(STABLE).await?,
            canary: Upstream::start(CANARY).await?,
            pinned: Upstream::start(PINNED).await?,
        })
    }

    /// The rollout's Envoy config; `fallback` is the weighted route's (stable, canary, pinned).
    pub fn config(&self, policy: Option<&Value>, fallback: [u32; 3]) -> anyhow::Result<String> {
        Ok(self.rollout_config(policy, fallback, 0)?.render())
    }

    /// The same as a [`RolloutEnvoyConfig`] (e.g. for file-based LDS with a fixed port).
    pub fn rollout_config(
        &self,
        policy: Option<&Value>,
        fallback: [u32; 3],
        listener_port: u16,
    ) -> anyhow::Result<RolloutEnvoyConfig> {
        let filter = match policy {
            Some(policy) => Some(FilterSetup {
                module: filter_module()?,
                policy_json: policy.to_string(),
            }),
            None => None,
        };
        let versions = [&self.stable, &self.canary, &self.pinned]
            .into_iter()
            .zip(fallback)
            .map(|(upstream, fallback_weight)| VersionUpstream {
                hash: upstream.name().to_string(),
                port: upstream.port(),
                fallback_weight,
            })
            .collect();
        Ok(RolloutEnvoyConfig {
            host: HOST.to_string(),
            routing_header: "x-sluice-hash".to_string(),
            versions,
            filter,
            listener_port,
        })
    }
}

/// A running Envoy in front of the upstreams.
#[derive(Debug)]
pub struct Rig {
    pub upstreams: Upstreams,
    pub envoy: Envoy,
    /// The listener's address.
    pub addr: SocketAddr,
}

impl Rig {
    /// Starts upstreams and an Envoy with the filter running `policy` (None: no filter).
    pub async fn start(policy: Option<&Value>, fallback: [u32; 3]) -> anyhow::Result<Self> {
        let upstreams = Upstreams::start().await?;
        let mut envoy = Envoy::start(&upstreams.config(policy, fallback)?).await?;
        let addr = envoy.listener_addr(LISTENER).await?;
        Ok(Self {
            upstreams,
            envoy,
            addr,
        })
    }

    /// Sends the requests and checks each one was answered 200 by an upstream.
    pub async fn send(&mut self, requests: Vec<Req>) -> anyhow::Result<Vec<Resp>> {
        let responses = send_all(self.addr, requests, CONNECTIONS).await;
        self.envoy.ensure_running()?;
        let responses = responses?;
        for response in &responses {
            ensure!(
                response.status == 200 && response.upstream().is_some(),
                "request not served by an upstream: {response:?}; Envoy output:\n{}",
                self.envoy.logs()
            );
        }
        Ok(responses)
    }
}

/// The demo rollout's policy at `weight_bp`, with extra fields merged in.
pub fn policy(weight_bp: u32, extra: Value) -> Value {
    let mut rollout = json!({
        "name": "default/demo",
        "hosts": [HOST],
        "versions": [STABLE, CANARY, PINNED],
        "stableHash": STABLE,
        "canaryHash": CANARY,
        "canaryWeightBp": weight_bp,
    });
    if let (Some(rollout), Value::Object(extra)) = (rollout.as_object_mut(), extra) {
        rollout.extend(extra);
    }
    json!({"routingHeader": "x-sluice-hash", "rollouts": [rollout]})
}

/// Two header routes: `x-canary: 1` → canary; `x-pin` present → the pinned version.
pub fn header_routes() -> Value {
    json!({"headerRoutes": [
        {"name": "testers", "matches": [{"name": "x-canary", "exact": "1"}], "canary": true},
        {"name": "pin", "matches": [{"name": "x-pin", "present": true}], "hash": PINNED},
    ]})
}

/// How many responses came from `upstream`.
pub fn count(responses: &[Resp], upstream: &str) -> u64 {
    responses
        .iter()
        .filter(|response| response.upstream() == Some(upstream))
        .count() as u64
}

/// `n` copies of a request.
pub fn repeat(req: Req, n: usize) -> Vec<Req> {
    vec![req; n]
}

/// Policies the filter must reject: (what is wrong, the policy, text its error must contain).
pub fn invalid_policies() -> Vec<(&'static str, Value, &'static str)> {
    let mut duplicate_host = policy(1000, json!({}));
    if let Some(rollouts) = duplicate_host["rollouts"].as_array_mut() {
        let mut other = rollouts[0].clone();
        other["name"] = json!("default/other");
        rollouts.push(other);
    }
    let mut unknown_field = policy(1000, json!({}));
    unknown_field["rollouts"][0]["canaryWeight"] = json!(10);
    vec![
        (
            "weight above 10000",
            policy(12_000, json!({})),
            "canaryWeightBp: 12000 is above 10000",
        ),
        (
            "canary not among versions",
            policy(1000, json!({"canaryHash": "ghost1"})),
            "canaryHash: \"ghost1\"",
        ),
        (
            "bad regex",
            policy(
                1000,
                json!({"headerRoutes": [{"name": "bad", "matches": [{"name": "x-a", "regex": "(["}], "canary": true}]}),
            ),
            "headerRoutes[0].matches[0].regex",
        ),
        (
            "duplicate host",
            duplicate_host,
            "hosts[0]: \"demo.local\" is also served",
        ),
        (
            "unknown JSON field",
            unknown_field,
            "unknown field `canaryWeight`",
        ),
    ]
}
