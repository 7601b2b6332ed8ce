//! The admin policy without I/O, and the TokenReview + SubjectAccessReview path against a
//! `tower-test` mock API server.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tonic::Code;
use tower_test::mock::Handle;

use super::*;

const TOKEN: &str = "s3cret-token";

fn caller(bearer: Option<&str>, cert: bool) -> Caller {
    Caller {
        bearer: bearer.map(str::to_owned),
        verified_certificate: cert,
    }
}

const WRITE: Access<'static> = Access::Write {
    rollout: "default/demo",
};

fn refused(local: Local) -> Status {
    match local {
        Local::Refused(status) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn nothing_configured_refuses_everything_and_names_the_flags() {
    let auth = AdminAuth::default();
    for access in [WRITE, Access::Read] {
        for who in [caller(None, false), caller(Some(TOKEN), true)] {
            let status = refused(auth.check_local(&who, access));
            assert_eq!(status.code(), Code::Unauthenticated);
            assert!(
                status.message().contains("--admin-token-file")
                    && status.message().contains("--admin-client-ca")
                    && status.message().contains("--admin-kube-auth"),
                "{}",
                status.message()
            );
        }
    }
}

#[test]
fn status_may_be_opened_separately_but_changes_stay_closed() {
    let auth = AdminAuth::new(None, false, None, true);
    assert!(matches!(
        auth.check_local(&caller(None, false), Access::Read),
        Local::Allowed(Principal::Anonymous)
    ));
    assert_eq!(
        refused(auth.check_local(&caller(None, false), WRITE)).code(),
        Code::Unauthenticated
    );
    let auth = AdminAuth::new(Some(TOKEN), false, None, true);
    assert_eq!(
        refused(auth.check_local(&caller(Some("wrong"), false), WRITE)).code(),
        Code::Unauthenticated
    );
}

#[test]
fn token_file_admits_only_the_exact_token() {
    let auth = AdminAuth::new(Some(TOKEN), false, None, false);
    for access in [WRITE, Access::Read] {
        let status = refused(auth.check_local(&caller(None, false), access));
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("bearer token"), "{status:?}");
        for wrong in [
            "",
            "s3cret",
            "s3cret-token ",
            "S3CRET-TOKEN",
            "s3cret-token2",
        ] {
            assert!(
                matches!(
                    auth.check_local(&caller(Some(wrong), false), access),
                    Local::Refused(_)
                ),
                "{wrong:?} was let in"
            );
        }
        // A client certificate is no credential when mutual TLS is not configured.
        assert!(matches!(
            auth.check_local(&caller(None, true), access),
            Local::Refused(_)
        ));
        assert!(matches!(
            auth.check_local(&caller(Some(TOKEN), false), access),
            Local::Allowed(Principal::TokenFile)
        ));
    }
}

#[test]
fn a_verified_client_certificate_admits_when_mtls_is_configured() {
    let auth = AdminAuth::new(None, true, None, false);
    assert!(matches!(
        auth.check_local(&caller(None, true), WRITE),
        Local::Allowed(Principal::ClientCertificate)
    ));
    let status = refused(auth.check_local(&caller(None, false), WRITE));
    assert!(
        status.message().contains("client certificate"),
        "{status:?}"
    );
    // No token is configured, so any token is wrong.
    assert!(matches!(
        auth.check_local(&caller(Some(TOKEN), false), WRITE),
        Local::Refused(_)
    ));
}

#[test]
fn bearer_header_parsing() {
    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("bearer  abc "), Some("abc"));
    assert_eq!(bearer_token("Basic abc"), None);
    assert_eq!(bearer_token("Bearer "), None);
    assert_eq!(bearer_token("abc"), None);
}

#[test]
fn token_files_are_trimmed_and_empty_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    assert_eq!(read_token_file(&path).unwrap(), TOKEN);
    std::fs::write(&path, " \n").unwrap();
    let err = read_token_file(&path).unwrap_err().to_string();
    assert!(err.contains("empty") && err.contains("token"), "{err}");
    let err = read_token_file(&dir.path().join("missing")).unwrap_err();
    assert!(format!("{err:#}").contains("missing"), "{err:#}");
}

/// One request the mock API server saw: (method, path, body).
type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A mock API server answering TokenReviews with `token_review` (the status) and
/// SubjectAccessReviews with `access` (the status), or `error` for both.
fn apiserver(
    token_review: Value,
    access: Value,
    error: Option<u16>,
) -> (KubeReviewer, Seen, tokio::task::JoinHandle<()>) {
    let (service, mut handle): (_, Handle<Request<Body>, Response<Body>>) =
        tower_test::mock::pair();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let task = tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body: Value = serde_json::from_slice(&body.collect_bytes().await.unwrap()).unwrap();
            let path = parts.uri.path().to_owned();
            log.lock()
                .unwrap()
                .push((parts.method.to_string(), path.clone(), body.clone()));
            let (code, reply) = match error {
                Some(code) => (
                    code,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": "etcd is down", "reason": "InternalError", "code": code}),
                ),
                None => {
                    let mut reply = body;
                    reply["status"] = if path.ends_with("/tokenreviews") {
                        token_review.clone()
                    } else {
                        access.clone()
                    };
                    (201, reply)
                }
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    (
        KubeReviewer::new(kube::Client::new(service, "default")),
        seen,
        task,
    )
}

fn alice() -> Value {
    json!({"authenticated": true, "user": {
        "username": "system:serviceaccount:ops:deployer",
        "uid": "u-1",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:ops"],
    }})
}

#[tokio::test]
async fn kubernetes_token_allowed_by_rbac_is_let_in_with_the_checked_attributes() {
    let (kube, log, _task) = apiserver(alice(), json!({"allowed": true}), None);
    let auth = AdminAuth::new(Some(TOKEN), false, Some(kube), false);
    let principal = auth
        .authorize(
            &caller(Some("k8s-token"), false),
            Access::Write {
                rollout: "shop/web",
            },
        )
        .await
        .unwrap();
    assert_eq!(
        principal,
        Principal::Kubernetes {
            username: "system:serviceaccount:ops:deployer".into()
        }
    );
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].0, "POST");
    assert_eq!(seen[0].1, "/apis/authentication.k8s.io/v1/tokenreviews");
    assert_eq!(seen[0].2["spec"]["token"], "k8s-token");
    assert_eq!(seen[1].0, "POST");
    assert_eq!(
        seen[1].1,
        "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    );
    let spec = &seen[1].2["spec"];
    assert_eq!(spec["user"], "system:serviceaccount:ops:deployer");
    assert_eq!(spec["uid"], "u-1");
    assert_eq!(spec["groups"][1], "system:serviceaccounts:ops");
    assert_eq!(
        spec["resourceAttributes"],
        json!({"group": "sluice.dev", "resource": "rollouts", "verb": "update",
               "namespace": "shop", "name": "web"})
    );

    // The token file's token is judged locally: no review.
    auth.authorize(&caller(Some(TOKEN), false), WRITE)
        .await
        .unwrap();
    assert_eq!(
        log.lock().unwrap().len(),
        2,
        "the token file's token was reviewed"
    );
}

#[tokio::test]
async fn status_is_checked_as_a_cluster_wide_list() {
    let (kube, seen, _task) = apiserver(alice(), json!({"allowed": true}), None);
    let auth = AdminAuth::new(None, false, Some(kube), false);
    auth.authorize(&caller(Some("k8s-token"), false), Access::Read)
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[1].2["spec"]["resourceAttributes"],
        json!({"group": "sluice.dev", "resource": "rollouts", "verb": "list"})
    );
}

#[tokio::test]
async fn rbac_denial_is_permission_denied_and_names_the_user_and_namespace() {
    let (kube, _seen, _task) = apiserver(
        alice(),
        json!({"allowed": false, "reason": "no RoleBinding for deployer"}),
        None,
    );
    let auth = AdminAuth::new(None, false, Some(kube), false);
    let status = auth
        .authorize(
            &caller(Some("k8s-token"), false),
            Access::Write {
                rollout: "shop/web",
            },
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let message = status.message();
    assert!(
        message.contains("deployer")
            && message.contains("update rollouts.sluice.dev \"web\" in namespace \"shop\"")
            && message.contains("no RoleBinding"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unauthenticated_token_is_refused_before_any_access_review() {
    let (kube, seen, _task) = apiserver(
        json!({"authenticated": false, "error": "token expired"}),
        json!({"allowed": true}),
        None,
    );
    let auth = AdminAuth::new(None, false, Some(kube), false);
    let status = auth
        .authorize(&caller(Some("old-token"), false), WRITE)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("token expired"), "{status:?}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "a SubjectAccessReview was sent"
    );

    // No token at all never reaches the API server.
    let status = auth
        .authorize(&caller(None, false), WRITE)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_api_server_failure_refuses_as_unavailable() {
    let (kube, _seen, _task) = apiserver(alice(), json!({"allowed": true}), Some(500));
    let auth = AdminAuth::new(None, false, Some(kube), false);
    let status = auth
        .authorize(&caller(Some("k8s-token"), false), WRITE)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("TokenReview"), "{status:?}");
}
