//! The data-plane gate across replicas: each control-plane replica reports what its own Envoys
//! acknowledged in one `coordination.k8s.io/v1` Lease it owns; the leader watches them all and
//! merges them with its own proxies into the release engine's `Observed.data_plane`.
//!
//! ```text
//!  replica A (leader)                 replica B                         replica C
//!  its Envoys ─► AckReport (local)    its Envoys ─► AckReport           ...
//!        │                                 │ write on change (coalesced) + renew every period
//!        │                                 ▼
//!        │                   Lease sluice-acks-<identity>  (lease namespace,
//!        │                     label sluice.dev/ack-report, renewTime, leaseDurationSeconds,
//!        │                     annotation sluice.dev/acks = {"rollouts": {name: [proxy…]}})
//!        ▼                                 │ watch (every replica; the leader reads)
//!  DataPlane.proxies = local[rollout] ++ every live report[rollout]   (Reports::proxies)
//! ```
//!
//! Why a Lease: it is Kubernetes' own heartbeat object (node and apiserver-identity leases):
//! `renewTime` + `leaseDurationSeconds` say when a replica that stopped renewing (it died) drops
//! out, with no clock of ours; the control plane already holds RBAC on Leases in its namespace
//! (for the election), so this adds only `list`/`watch` there. The acknowledgements ride in one
//! annotation (a few dozen bytes per proxy and rollout: annotations hold 256 KiB). A replica
//! writes only when its report changed (coalesced) and otherwise renews every third of the
//! duration. Kubernetes is the distributed engine: no consensus of Sluice's own.

use std::{collections::BTreeMap, future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api,
    api::{DeleteParams, PostParams, Preconditions},
};
use serde::{Deserialize, Serialize};
use sluice_model::TrafficState;
use sluice_release::ProxyAck;
use tokio::sync::watch;

use crate::K8sError;

/// Label (value `"true"`) of every report Lease: the leader watches by it.
pub const REPORT_LABEL: &str = "sluice.dev/ack-report";
/// Annotation holding the report (JSON [`AckReport`]).
pub const REPORT_ANNOTATION: &str = "sluice.dev/acks";
/// A report expired for this many lease durations belongs to a replica that is gone (scaled
/// down, rescheduled under a new name): the leader deletes it, as Kubernetes' own garbage
/// collector deletes expired apiserver-identity Leases.
pub const ABANDONED_AFTER_DURATIONS: i32 = 10;
/// A NACK's error detail is cut to this many characters in a report.
const NACK_DETAIL_CHARS: usize = 256;

/// The name of a replica's report Lease.
pub fn report_name(identity: &str) -> String {
    format!("sluice-acks-{identity}")
}

/// A publication: the traffic state sent to the xDS server and, per rollout the release engine
/// runs, the `status.dataPlane.generation` that traffic carries (the gate's ledger input).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Published {
    pub traffic: TrafficState,
    pub generations: BTreeMap<String, i64>,
}

/// What one replica's Envoys hold: per rollout (`namespace/name`), the proxies counted for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckReport {
    pub rollouts: BTreeMap<String, Vec<ReportedProxy>>,
}

/// One proxy in a report (a [`ProxyAck`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedProxy {
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked: Option<i64>,
    /// The generation it NACKed and Envoy's error detail (cut).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nack: Option<(i64, String)>,
}

impl From<&ProxyAck> for ReportedProxy {
    fn from(ack: &ProxyAck) -> Self {
        ReportedProxy {
            node: ack.node_id.clone(),
            acked: ack.acked_generation,
            nack: ack
                .nacked
                .as_ref()
                .map(|(g, detail)| (*g, detail.chars().take(NACK_DETAIL_CHARS).collect())),
        }
    }
}

impl From<&ReportedProxy> for ProxyAck {
    fn from(proxy: &ReportedProxy) -> Self {
        ProxyAck {
            node_id: proxy.node.clone(),
            acked_generation: proxy.acked,
            nacked: proxy.nack.clone(),
        }
    }
}

impl AckReport {
    /// The proxies counted for `rollout`.
    pub fn proxies(&self, rollout: &str) -> Vec<ProxyAck> {
        self.rollouts
            .get(rollout)
            .map(|proxies| proxies.iter().map(ProxyAck::from).collect())
            .unwrap_or_default()
    }
}

/// How a replica reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportConfig {
    /// The lease namespace.
    pub namespace: String,
    /// This replica (the election identity).
    pub identity: String,
    /// A report not renewed for this long is dropped (its replica is gone).
    pub duration: Duration,
}

impl ReportConfig {
    /// Renewed every third of the duration.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

/// The report Lease to write: `current` (if any) with this replica's report, renewed `now`.
pub fn report_lease(
    config: &ReportConfig,
    report: &AckReport,
    current: Option<&Lease>,
    now: Timestamp,
) -> Result<Lease, serde_json::Error> {
    let mut lease = current.cloned().unwrap_or_default();
    let meta = &mut lease.metadata;
    meta.name = Some(report_name(&config.identity));
    meta.namespace = Some(config.namespace.clone());
    meta.labels
        .get_or_insert_default()
        .insert(REPORT_LABEL.into(), "true".into());
    meta.annotations
        .get_or_insert_default()
        .insert(REPORT_ANNOTATION.into(), serde_json::to_string(report)?);
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(
            i32::try_from(config.duration.as_secs().max(1)).unwrap_or(i32::MAX),
        ),
        renew_time: Some(MicroTime(now)),
        ..LeaseSpec::default()
    });
    Ok(lease)
}

/// The reports the leader reads, by Lease name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reports {
    by_name: BTreeMap<String, Received>,
}

#[derive(Clone, Debug, PartialEq)]
struct Received {
    identity: String,
    /// When it stops counting.
    expires: Timestamp,
    /// When its replica counts as gone and the Lease may be deleted.
    abandoned: Timestamp,
    resource_version: Option<String>,
    report: AckReport,
}

/// A report Lease to delete: its name and the resourceVersion it was read at (the delete's
/// precondition, so a replica that came back and renewed it keeps it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abandoned {
    pub name: String,
    pub resource_version: Option<String>,
}

impl Reports {
    pub fn apply(&mut self, lease: &Lease) {
        let name = lease.metadata.name.clone().unwrap_or_default();
        match received(lease) {
            Ok(received) => {
                self.by_name.insert(name, received);
            }
            Err(reason) => {
                // Its proxies are not counted; written by another build, or by hand.
                tracing::warn!(lease = %name, %reason, "data-plane report ignored");
                self.by_name.remove(&name);
            }
        }
    }

    pub fn delete(&mut self, lease: &Lease) {
        if let Some(name) = &lease.metadata.name {
            self.by_name.remove(name);
        }
    }

    pub fn reset(&mut self, leases: &[Lease]) {
        self.by_name.clear();
        for lease in leases {
            self.apply(lease);
        }
    }

    /// The proxies other replicas count for `rollout`, from the reports still renewed at `now`;
    /// `own` (this replica's identity) is skipped: its proxies come from its registry directly.
    pub fn proxies(&self, rollout: &str, own: &str, now: Timestamp) -> Vec<ProxyAck> {
        self.live(own, now)
            .flat_map(|r| r.report.proxies(rollout))
            .collect()
    }

    /// How long until the next live report of another replica expires (the leader looks again
    /// then: that replica's proxies drop out of the count).
    pub fn next_expiry(&self, own: &str, now: Timestamp) -> Option<Duration> {
        self.live(own, now)
            .map(|r| r.expires.duration_since(now).unsigned_abs())
            .min()
    }

    /// The reports of other replicas expired for [`ABANDONED_AFTER_DURATIONS`] lease durations
    /// at `now`: their replicas are gone, the leader deletes them.
    pub fn abandoned(&self, own: &str, now: Timestamp) -> Vec<Abandoned> {
        self.by_name
            .iter()
            .filter(|(_, r)| r.identity != own && r.abandoned <= now)
            .map(|(name, r)| Abandoned {
                name: name.clone(),
                resource_version: r.resource_version.clone(),
            })
            .collect()
    }

    fn live<'a>(&'a self, own: &'a str, now: Timestamp) -> impl Iterator<Item = &'a Received> {
        self.by_name
            .values()
            .filter(move |r| r.identity != own && r.expires > now)
    }
}

fn received(lease: &Lease) -> Result<Received, String> {
    let spec = lease.spec.as_ref().ok_or("no spec")?;
    let identity = spec
        .holder_identity
        .clone()
        .filter(|h| !h.is_empty())
        .ok_or("spec.holderIdentity: empty")?;
    let renewed = spec.renew_time.as_ref().ok_or("spec.renewTime: missing")?.0;
    let seconds = spec
        .lease_duration_seconds
        .ok_or("spec.leaseDurationSeconds: missing")?;
    let after = |durations: i64| {
        renewed
            .checked_add(SignedDuration::from_secs(
                i64::from(seconds.max(0)) * durations,
            ))
            .map_err(|e| format!("spec.renewTime + leaseDurationSeconds: {e}"))
    };
    let expires = after(1)?;
    let abandoned = after(i64::from(ABANDONED_AFTER_DURATIONS))?;
    let text = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REPORT_ANNOTATION))
        .ok_or_else(|| format!("metadata.annotations[{REPORT_ANNOTATION}]: missing"))?;
    let report = serde_json::from_str(text)
        .map_err(|e| format!("metadata.annotations[{REPORT_ANNOTATION}]: {e}"))?;
    Ok(Received {
        identity,
        expires,
        abandoned,
        resource_version: lease.metadata.resource_version.clone(),
        report,
    })
}

/// Writes this replica's report Lease until `shutdown`: at once, whenever `reports` changes
/// (a burst coalesced into one write), and every [`ReportConfig::renew_every`] otherwise.
/// Failed writes are logged and retried at the next renewal.
pub async fn write_reports(
    api: Api<Lease>,
    config: ReportConfig,
    mut reports: watch::Receiver<AckReport>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut current: Option<Lease> = None;
    loop {
        let report = reports.borrow_and_update().clone();
        match write_once(&api, &config, &report, current.take()).await {
            Ok(written) => current = Some(written),
            Err(error) => tracing::warn!(%error, "writing this replica's data-plane report"),
        }
        tokio::select! {
            () = &mut shutdown => {
                // A replica that stops on purpose takes its report with it; one that dies leaves
                // it to expire (and to the leader's clean-up, [`Reports::abandoned`]).
                if let Some(lease) = current {
                    delete_report(&api, &report_name(&config.identity), lease.metadata.resource_version).await;
                }
                return;
            }
            () = tokio::time::sleep(config.renew_every()) => {}
            changed = reports.changed() => {
                if changed.is_err() {
                    return;
                }
                // Coalesce a burst of ACKs (every type of every proxy) into one write.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Deletes a report Lease if it is still at `resource_version` (best effort: logged).
pub async fn delete_report(api: &Api<Lease>, name: &str, resource_version: Option<String>) {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version,
            uid: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => tracing::info!(lease = %name, "data-plane report deleted"),
        Err(error) => tracing::debug!(lease = %name, %error, "deleting a data-plane report"),
    }
}

/// One write: replace the Lease last written (its resourceVersion), or read it / create it.
async fn write_once(
    api: &Api<Lease>,
    config: &ReportConfig,
    report: &AckReport,
    last: Option<Lease>,
) -> Result<Lease, K8sError> {
    let name = report_name(&config.identity);
    let error = |error| K8sError::Lease {
        namespace: config.namespace.clone(),
        name: name.clone(),
        error,
    };
    let encode = |e: serde_json::Error| K8sError::Config(format!("encoding the report: {e}"));
    let current = match last {
        Some(last) => Some(last),
        None => api.get_opt(&name).await.map_err(error)?,
    };
    let lease = report_lease(config, report, current.as_ref(), Timestamp::now()).map_err(encode)?;
    let written = match current {
        None => api.create(&PostParams::default(), &lease).await,
        Some(_) => api.replace(&name, &PostParams::default(), &lease).await,
    };
    match written {
        Ok(lease) => Ok(lease),
        // Written by someone else since (or deleted): read it again next time.
        Err(e) => Err(error(e)),
    }
}

#[cfg(test)]
#[path = "ack_report_tests.rs"]
mod tests;
