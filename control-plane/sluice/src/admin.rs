//! The admin/status gRPC API (`sluice.admin.v1.Admin`): status for the CLI and manual overrides.

use std::sync::Arc;

use sluice_api::Rollout;
use sluice_model::{Override, RolloutState};
use sluice_proto::admin::v1::{
    CommandRequest, ProxyStatus, RolloutList, RolloutRef, RolloutStatus, RolloutView,
    SetWeightRequest, StatusRequest, StatusResponse, TypeStatus, VersionStatus, VersionView,
    admin_server::Admin, command_request::Verb,
};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::{
    auth::{Access, AdminAuth},
    serve::App,
    standalone::{CommandError, run::Command, state::RolloutRecord},
    store::StoreError,
};

/// Every call is authorised by [`AdminAuth`] before it reads or changes anything.
#[derive(Clone)]
pub struct AdminService {
    app: Arc<App>,
    auth: Arc<AdminAuth>,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService").finish_non_exhaustive()
    }
}

impl AdminService {
    pub fn new(app: Arc<App>, auth: Arc<AdminAuth>) -> Self {
        AdminService { app, auth }
    }

    async fn check_write(&self, request: &Request<RolloutRef>) -> Result<(), Status> {
        let rollout = &request.get_ref().rollout;
        self.auth.check(request, Access::Write { rollout }).await
    }

    /// An in-memory override (`set-weight`, `promote`, `abort`). Standalone only: in Kubernetes
    /// mode it would live in the memory of the one replica that took it, invisible to the others
    /// and lost on restart; there the Rollout object is the one place commands go.
    ///
    /// In standalone mode only rollouts in manual mode (a hand-written `status`, no
    /// `spec.version`) take overrides: a rollout the release engine runs is moved by its commands
    /// (`sluice rollouts promote|abort|retry`), persisted in the state file — an override would
    /// live in memory only and fight the engine's steps.
    async fn apply(&self, rollout: &str, over: Override) -> Result<RolloutStatus, Status> {
        let Some(standalone) = &self.app.standalone else {
            return Err(Status::failed_precondition(format!(
                "rollout {rollout:?}: this control plane runs in Kubernetes mode, where commands \
                 go through the Rollout so that every replica converges from it: use `sluice \
                 rollouts promote|abort` (or edit the Rollout)"
            )));
        };
        let engine_run = standalone
            .engine
            .lock()
            .await
            .document(rollout)
            .is_some_and(|doc| doc.spec.version.is_some());
        if engine_run {
            return Err(Status::failed_precondition(format!(
                "rollout {rollout:?} is run by the release engine (spec.version): move it with \
                 `sluice rollouts promote|abort|retry --admin ...`, which the engine persists; \
                 overrides are for rollouts in manual mode only"
            )));
        }
        let status = {
            let mut store = self.app.store.lock().await;
            store.apply_override(rollout, over).map_err(|e| match e {
                StoreError::UnknownRollout(_) => Status::not_found(e.to_string()),
                StoreError::Refused { .. } => Status::failed_precondition(e.to_string()),
            })?;
            let state = store.effective();
            let r = state
                .rollouts
                .get(rollout)
                .ok_or_else(|| Status::internal("rollout vanished"))?;
            rollout_status(r, true)
        };
        info!(rollout, ?over, "admin override applied");
        self.app.publish().await;
        Ok(status)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.auth.check(&request, Access::Read).await?;
        let (rollouts, last_source_error) = {
            let store = self.app.store.lock().await;
            let rollouts = store
                .effective()
                .rollouts
                .values()
                .map(|r| rollout_status(r, store.is_overridden(&r.name)))
                .collect();
            (rollouts, store.last_error().unwrap_or_default().to_string())
        };
        let proxies = self
            .app
            .registry
            .snapshot()
            .into_iter()
            .map(|p| ProxyStatus {
                connected_unix_ms: p.connected_unix_ms(),
                node_id: p.node_id,
                node_cluster: p.node_cluster,
                peer: p.peer,
                delta: p.delta,
                types: p
                    .types
                    .into_iter()
                    .map(|t| TypeStatus {
                        type_url: t.type_url,
                        sent_version: t.sent_version,
                        acked_version: t.acked_version,
                        last_nack: t.last_nack,
                        last_nack_version: t.last_nack_version,
                        nacks: t.nacks,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(StatusResponse {
            rollouts,
            proxies,
            snapshot_version: self
                .app
                .snapshots
                .borrow()
                .as_ref()
                .map(|s| s.version())
                .unwrap_or_default(),
            last_source_error,
        }))
    }

    async fn set_weight(
        &self,
        request: Request<SetWeightRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        self.auth
            .check(
                &request,
                Access::Write {
                    rollout: &request.get_ref().rollout,
                },
            )
            .await?;
        let req = request.into_inner();
        self.apply(&req.rollout, Override::SetWeight(req.weight_bp))
            .await
            .map(Response::new)
    }

    async fn promote(
        &self,
        request: Request<RolloutRef>,
    ) -> Result<Response<RolloutStatus>, Status> {
        self.check_write(&request).await?;
        self.apply(&request.into_inner().rollout, Override::Promote)
            .await
            .map(Response::new)
    }

    async fn abort(&self, request: Request<RolloutRef>) -> Result<Response<RolloutStatus>, Status> {
        self.check_write(&request).await?;
        self.apply(&request.into_inner().rollout, Override::Abort)
            .await
            .map(Response::new)
    }

    /// The release engine's commands (standalone mode): applied to the rollout's record, persisted
    /// in the state file, then the engine runs.
    async fn command(
        &self,
        request: Request<CommandRequest>,
    ) -> Result<Response<RolloutView>, Status> {
        self.auth
            .check(
                &request,
                Access::Write {
                    rollout: &request.get_ref().rollout,
                },
            )
            .await?;
        let standalone = self.standalone()?;
        let req = request.into_inner();
        let command = match Verb::try_from(req.verb) {
            Ok(Verb::Promote) => Command::Promote { full: req.full },
            Ok(Verb::Abort) => Command::Abort,
            Ok(Verb::Retry) => Command::Retry,
            Ok(Verb::Pause) => Command::Pause,
            Ok(Verb::Restart) => {
                return Err(Status::failed_precondition(
                    "restart: standalone versions are static endpoints, which Sluice does not run; \
                     restart them where they run",
                ));
            }
            Ok(Verb::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "verb: {} is not a command",
                    req.verb
                )));
            }
        };
        standalone
            .command(&req.rollout, command)
            .await
            .map_err(|e| match e.downcast_ref::<CommandError>() {
                Some(CommandError::Unknown(_)) => Status::not_found(e.to_string()),
                Some(CommandError::Manual(_)) => Status::failed_precondition(e.to_string()),
                None => Status::internal(format!("{e:#}")),
            })?;
        info!(
            rollout = req.rollout,
            command = command.describe(),
            "release engine command"
        );
        self.view(&req.rollout).await.map(Response::new)
    }

    async fn get_rollout(
        &self,
        request: Request<RolloutRef>,
    ) -> Result<Response<RolloutView>, Status> {
        self.auth.check(&request, Access::Read).await?;
        self.view(&request.into_inner().rollout)
            .await
            .map(Response::new)
    }

    async fn list_rollouts(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<RolloutList>, Status> {
        self.auth.check(&request, Access::Read).await?;
        let standalone = self.standalone()?;
        let rollouts = crate::standalone::records(standalone)
            .await
            .iter()
            .map(|(name, (doc, record))| rollout_view(name, doc, record))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(RolloutList { rollouts }))
    }
}

impl AdminService {
    fn standalone(&self) -> Result<&crate::standalone::Standalone, Status> {
        self.app.standalone.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "this control plane runs in Kubernetes mode: the rollouts' commands and status \
                 are on the Rollout objects (sluice rollouts without --admin)",
            )
        })
    }

    async fn view(&self, rollout: &str) -> Result<RolloutView, Status> {
        let records = crate::standalone::records(self.standalone()?).await;
        let (doc, record) = records
            .get(rollout)
            .ok_or_else(|| Status::not_found(format!("no rollout named {rollout:?}")))?;
        rollout_view(rollout, doc, record)
    }
}

/// A rollout as the CLI shows it: the document with the engine's status (or, for a rollout
/// without `spec.version`, the file's), and its versions, newest revision first.
fn rollout_view(name: &str, doc: &Rollout, record: &RolloutRecord) -> Result<RolloutView, Status> {
    let mut doc = doc.clone();
    let endpoints = |hash: &str| {
        doc.spec
            .static_endpoints
            .get(hash)
            .cloned()
            .unwrap_or_default()
    };
    let count = |list: &[String]| i32::try_from(list.len()).unwrap_or(i32::MAX);
    let mut versions: Vec<VersionView> = if doc.spec.version.is_some() {
        record
            .versions
            .iter()
            .map(|v| {
                let endpoints = endpoints(&v.hash);
                let available = if v.desired > 0 { count(&endpoints) } else { 0 };
                VersionView {
                    hash: v.hash.clone(),
                    revision: v.revision.unwrap_or(0),
                    desired: v.desired,
                    ready: available,
                    available,
                    endpoints,
                }
            })
            .collect()
    } else {
        doc.spec
            .static_endpoints
            .iter()
            .map(|(hash, endpoints)| VersionView {
                hash: hash.clone(),
                revision: 0,
                desired: count(endpoints),
                ready: count(endpoints),
                available: count(endpoints),
                endpoints: endpoints.clone(),
            })
            .collect()
    };
    versions.sort_by(|a, b| {
        b.revision
            .cmp(&a.revision)
            .then_with(|| a.hash.cmp(&b.hash))
    });
    if doc.spec.version.is_some() {
        doc.status = record.status.clone();
        doc.spec.paused |= record.paused;
    }
    let rollout_json = serde_json::to_string(&doc)
        .map_err(|e| Status::internal(format!("rollout {name:?}: {e}")))?;
    let runs: Vec<serde_json::Value> = record
        .analysis_runs
        .iter()
        .map(|r| serde_json::json!({"name": r.name, "status": r.status}))
        .collect();
    let analysis_runs_json = if runs.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&runs)
            .map_err(|e| Status::internal(format!("rollout {name:?}: analysis runs: {e}")))?
    };
    Ok(RolloutView {
        rollout: name.to_owned(),
        rollout_json,
        versions,
        analysis_runs_json,
    })
}

fn rollout_status(r: &RolloutState, overridden: bool) -> RolloutStatus {
    let weights = r.version_weights_bp();
    RolloutStatus {
        name: r.name.clone(),
        hosts: r.hosts.clone(),
        stable_hash: r.stable_hash.clone(),
        canary_hash: r.canary_hash.clone().unwrap_or_default(),
        canary_weight_bp: r.canary_weight_bp,
        versions: r
            .versions
            .iter()
            .map(|(hash, v)| VersionStatus {
                hash: hash.clone(),
                endpoints: u32::try_from(v.endpoints.len()).unwrap_or(u32::MAX),
                weight_bp: weights.get(hash).copied().unwrap_or(0),
            })
            .collect(),
        overridden,
        current_step: None,
        phase: if r.canary_hash.is_some() {
            "Progressing".into()
        } else {
            "Healthy".into()
        },
    }
}
