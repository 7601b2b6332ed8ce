//! Leader election with a `coordination.k8s.io/v1` Lease: only the holder writes status.
//!
//! [`decide`] is the pure rule (create, renew, take over an expired lease, or follow); [`elect`]
//! runs it every `renew_every` against the API server and publishes "am I the leader" on a
//! `watch` channel. Any failed or conflicting write (409: another replica changed the Lease
//! first) or a request slower than `renew_every` makes this replica a follower at once, so
//! writers that check the channel right before each write stop immediately.

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, api::PostParams};
use tokio::sync::watch;

use crate::K8sError;

/// The Lease's default name.
pub const DEFAULT_LEASE_NAME: &str = "sluice-leader";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    pub name: String,
    /// The control plane's namespace.
    pub namespace: String,
    /// This replica (e.g. the pod name); unique among replicas.
    pub identity: String,
    /// How long a holder that stopped renewing keeps the lease.
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// `sluice-leader`, renewed every 2 s, held 10 s without renewal.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaseConfig {
            name: DEFAULT_LEASE_NAME.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease now.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// There is none: create it, held by us.
    Create(Lease),
    /// Ours (renew) or expired (take over): replace it; the resourceVersion it carries makes the
    /// API server refuse the write if another replica wrote first.
    Update(Lease),
    /// Someone else holds it and renews it.
    Follow { holder: String },
}

pub fn decide(config: &LeaseConfig, current: Option<&Lease>, now: Timestamp) -> Decision {
    let duration_seconds = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let ours = |acquired: Timestamp, transitions: i32| LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(duration_seconds),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let Some(current) = current else {
        return Decision::Create(Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(ours(now, 0)),
        });
    };
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let transitions = spec.lease_transitions.unwrap_or(0);
    let mut next = current.clone();
    match holder {
        Some(holder) if holder == config.identity => {
            let acquired = spec.acquire_time.map_or(now, |t| t.0);
            next.spec = Some(ours(acquired, transitions));
            Decision::Update(next)
        }
        Some(holder) if !expired(&spec, now) => Decision::Follow { holder },
        _ => {
            next.spec = Some(ours(now, transitions.saturating_add(1)));
            Decision::Update(next)
        }
    }
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    now.duration_since(renewed.0) > duration
}

/// One round: read the Lease, decide, write. `Ok(true)` if we hold it afterwards.
pub async fn try_hold(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, K8sError> {
    let error = |error| K8sError::Lease {
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        error,
    };
    let current = api.get_opt(&config.name).await.map_err(error)?;
    let written = match decide(config, current.as_ref(), Timestamp::now()) {
        Decision::Follow { holder } => {
            tracing::debug!(%holder, lease = %config.name, "following");
            return Ok(false);
        }
        Decision::Create(lease) => api.create(&PostParams::default(), &lease).await,
        Decision::Update(lease) => {
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
        }
    };
    match written {
        Ok(_) => Ok(true),
        // Another replica wrote first (create or update): it holds the lease.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(error(e)),
    }
}

/// Keeps trying to hold the Lease until `shutdown`; publishes leadership on `is_leader`.
pub async fn elect(
    api: Api<Lease>,
    config: LeaseConfig,
    is_leader: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let held = match tokio::time::timeout(config.renew_every, try_hold(&api, &config)).await {
            Ok(Ok(held)) => held,
            Ok(Err(error)) => {
                tracing::warn!(%error, "leader election");
                false
            }
            Err(_) => {
                tracing::warn!(lease = %config.name, "leader election: the API server did not answer in time");
                false
            }
        };
        let was = is_leader.send_replace(held);
        if was != held {
            tracing::info!(identity = %config.identity, leader = held, "leadership changed");
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(config.renew_every) => {}
        }
    }
    is_leader.send_replace(false);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> LeaseConfig {
        LeaseConfig::new("sluice-system", "pod-a")
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid")
    }

    fn lease(holder: &str, renewed: Timestamp, transitions: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("sluice-leader".into()),
                namespace: Some("sluice-system".into()),
                resource_version: Some("42".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(10),
                acquire_time: Some(MicroTime(at(0))),
                renew_time: Some(MicroTime(renewed)),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn no_lease_is_created_held_by_us() {
        let Decision::Create(created) = decide(&config(), None, at(5)) else {
            panic!("create")
        };
        assert_eq!(created.metadata.name.as_deref(), Some("sluice-leader"));
        assert_eq!(created.metadata.namespace.as_deref(), Some("sluice-system"));
        let spec = created.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
        assert_eq!(spec.lease_duration_seconds, Some(10));
        assert_eq!(spec.renew_time, Some(MicroTime(at(5))));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn our_lease_is_renewed_keeping_its_resource_version_and_acquire_time() {
        let Decision::Update(next) = decide(&config(), Some(&lease("pod-a", at(2), 3)), at(4))
        else {
            panic!("update")
        };
        assert_eq!(next.metadata.resource_version.as_deref(), Some("42"));
        let spec = next.spec.expect("spec");
        assert_eq!(spec.renew_time, Some(MicroTime(at(4))));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.lease_transitions, Some(3));
    }

    #[test]
    fn a_live_lease_of_another_replica_is_followed() {
        let current = lease("pod-b", at(2), 1);
        assert_eq!(
            decide(&config(), Some(&current), at(12)),
            Decision::Follow {
                holder: "pod-b".into()
            }
        );
    }

    #[test]
    fn an_expired_or_released_lease_is_taken_over() {
        for current in [lease("pod-b", at(2), 1), lease("", at(11), 1)] {
            let Decision::Update(next) = decide(&config(), Some(&current), at(13)) else {
                panic!("take over")
            };
            let spec = next.spec.expect("spec");
            assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
            assert_eq!(spec.acquire_time, Some(MicroTime(at(13))));
            assert_eq!(spec.lease_transitions, Some(2));
            assert_eq!(next.metadata.resource_version.as_deref(), Some("42"));
        }
    }
}
