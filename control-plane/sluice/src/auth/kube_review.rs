//! Bearer tokens judged by the Kubernetes API: a TokenReview says who the token belongs to, a
//! SubjectAccessReview whether that user may do what the call does (RBAC decides, as for
//! `kubectl`).
//!
//! The checked permission (see [`resource_attributes`]):
//! - status (read): `list` on `rollouts.sluice.dev`, cluster-wide (status shows every rollout);
//! - a change to `namespace/name`: `update` on `rollouts.sluice.dev` named `name` in `namespace`.

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
    },
};
use kube::api::{Api, PostParams};
use tonic::Status;

use super::{Access, Principal};

/// The API group and resource an admin call is checked against.
pub const GROUP: &str = "sluice.dev";
pub const RESOURCE: &str = "rollouts";
/// The verb a change needs; status needs `list`.
pub const WRITE_VERB: &str = "update";
pub const READ_VERB: &str = "list";

/// Reviews tokens with a Kubernetes client (in-cluster service account with `create` on
/// tokenreviews and subjectaccessreviews).
#[derive(Clone)]
pub struct KubeReviewer {
    client: kube::Client,
}

impl std::fmt::Debug for KubeReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeReviewer").finish_non_exhaustive()
    }
}

/// What an access is checked as: (verb, namespace, name) on rollouts.sluice.dev.
pub fn resource_attributes(access: Access<'_>) -> ResourceAttributes {
    let (verb, namespace, name) = match access {
        Access::Read => (READ_VERB, None, None),
        Access::Write { rollout } => match rollout.split_once('/') {
            Some((namespace, name)) => (WRITE_VERB, Some(namespace), Some(name)),
            // A name without a namespace is checked cluster-wide: the stricter grant.
            None => (WRITE_VERB, None, Some(rollout)),
        },
    };
    ResourceAttributes {
        group: Some(GROUP.into()),
        resource: Some(RESOURCE.into()),
        verb: Some(verb.into()),
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        ..ResourceAttributes::default()
    }
}

impl KubeReviewer {
    pub fn new(client: kube::Client) -> Self {
        KubeReviewer { client }
    }

    /// Authenticates `token` (TokenReview) and authorises `access` for its user
    /// (SubjectAccessReview). Errors: `unauthenticated` for a token the API server rejects,
    /// `permission_denied` when RBAC says no, `unavailable` when the API cannot be asked.
    pub async fn review(&self, token: &str, access: Access<'_>) -> Result<Principal, Status> {
        let unavailable = |what: &str, e: kube::Error| {
            Status::unavailable(format!(
                "cannot check the admin token with the Kubernetes API ({what}): {e}"
            ))
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let review = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| unavailable("TokenReview", e))?;
        let status = review.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => user,
            _ => {
                return Err(Status::unauthenticated(format!(
                    "the Kubernetes API rejected the admin token (TokenReview: {})",
                    status.error.as_deref().unwrap_or("not authenticated")
                )));
            }
        };
        let username = user.username.clone().unwrap_or_default();
        let attributes = resource_attributes(access);
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                resource_attributes: Some(attributes.clone()),
                non_resource_attributes: None,
            },
            ..SubjectAccessReview::default()
        };
        let sar = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &sar)
            .await
            .map_err(|e| unavailable("SubjectAccessReview", e))?;
        match sar.status {
            Some(SubjectAccessReviewStatus { allowed: true, .. }) => {
                Ok(Principal::Kubernetes { username })
            }
            status => {
                let why = status
                    .and_then(|s| s.reason.or(s.evaluation_error))
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "no RBAC rule allows it".into());
                Err(Status::permission_denied(format!(
                    "{username:?} may not {} {RESOURCE}.{GROUP}{}{}: {why}",
                    attributes.verb.as_deref().unwrap_or_default(),
                    attributes
                        .name
                        .as_deref()
                        .map(|n| format!(" {n:?}"))
                        .unwrap_or_default(),
                    attributes
                        .namespace
                        .as_deref()
                        .map(|ns| format!(" in namespace {ns:?}"))
                        .unwrap_or_else(|| " cluster-wide".into()),
                )))
            }
        }
    }
}
