//! The admin/status gRPC API (`sluice.admin.v1.Admin`): status for the CLI and manual overrides.

use std::sync::Arc;

use sluice_model::{Override, RolloutState};
use sluice_proto::admin::v1::{
    CommandRequest, ProxyStatus, RolloutList, RolloutRef, RolloutStatus, RolloutView,
    SetWeightRequest, StatusRequest, StatusResponse, TypeStatus, VersionStatus,
    admin_server::Admin,
};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::{
    auth::{Access, AdminAuth},
    serve::App,
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

    async fn apply(&self, rollout: &str, over: Override) -> Result<RolloutStatus, Status> {
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

    // The release engine's commands: implemented by the standalone driver (in progress).
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
        Err(Status::unimplemented(
            "release engine commands are not wired yet",
        ))
    }

    async fn get_rollout(
        &self,
        request: Request<RolloutRef>,
    ) -> Result<Response<RolloutView>, Status> {
        self.auth.check(&request, Access::Read).await?;
        Err(Status::unimplemented(
            "the release engine's view is not wired yet",
        ))
    }

    async fn list_rollouts(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<RolloutList>, Status> {
        self.auth.check(&request, Access::Read).await?;
        Err(Status::unimplemented(
            "the release engine's view is not wired yet",
        ))
    }
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
