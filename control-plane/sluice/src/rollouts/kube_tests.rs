//! The verbs' requests against a `tower-test` mock API server: method, path, patch type and body,
//! as kubectl-argo-rollouts sends them.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

use super::*;

#[derive(Clone, Debug, PartialEq)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

type Route = Box<dyn FnMut(&Seen) -> Option<(u16, Value)> + Send>;

/// A mock API server answering with `route` (`None` leaves the request pending, as an open watch
/// that delivers nothing); every request is logged.
fn apiserver(mut route: Route) -> (Kube, Arc<Mutex<Vec<Seen>>>) {
    let (service, mut handle): (_, Handle<Request<Body>, Response<Body>>) =
        tower_test::mock::pair();
    let log = Arc::new(Mutex::new(Vec::new()));
    let task_log = log.clone();
    tokio::spawn(async move {
        let mut pending: Vec<SendResponse<Response<Body>>> = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let seen = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            task_log.lock().expect("log").push(seen.clone());
            match route(&seen) {
                Some((code, body)) => send.send_response(
                    Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&body).expect("json")))
                        .expect("response"),
                ),
                None => pending.push(send),
            }
        }
    });
    let client = kube::Client::new(service, "default");
    (Kube::new(client, Some("shop".into())), log)
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
               "message": "not found", "code": 404}),
    )
}

fn conflict() -> (u16, Value) {
    (
        409,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
               "message": "the object has been modified", "code": 409}),
    )
}

const ROLLOUT: &str = "/apis/sluice.dev/v1alpha1/namespaces/shop/rollouts/demo";
const ARGO: &str = "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/demo";

fn rollout_object(status: Value, spec_extra: Value) -> Value {
    let mut spec = json!({
        "replicas": 2,
        "selector": {"matchLabels": {"app": "demo"}},
        "template": {"metadata": {"labels": {"app": "demo"}},
                     "spec": {"containers": [{"name": "app", "image": "app:2"}]}},
        "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}]}},
        "someFieldSluiceDoesNotKnow": {"kept": true}
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
           "metadata": {"name": "demo", "namespace": "shop", "uid": "uid-1", "resourceVersion": "7"},
           "spec": spec, "status": status})
}

fn writes(log: &Arc<Mutex<Vec<Seen>>>) -> Vec<(String, String, String, Value)> {
    log.lock()
        .expect("log")
        .iter()
        .filter(|s| s.method != "GET")
        .map(|s| {
            (
                s.method.clone(),
                s.path.clone(),
                s.content_type.clone(),
                s.body.clone(),
            )
        })
        .collect()
}

const MERGE: &str = "application/merge-patch+json";

#[tokio::test]
async fn promote_patches_the_status_subresource_then_the_spec() {
    let object = rollout_object(
        json!({"stableRS": "a", "currentPodHash": "b", "currentStepIndex": 1,
               "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-11-30T09:00:00Z"}],
               "controllerPause": true}),
        json!({"paused": true}),
    );
    let (kube, log) = apiserver(Box::new(move |seen| {
        Some((200, object.clone())).filter(|_| seen.path.starts_with(ROLLOUT))
    }));
    let message = kube.promote("demo", false).await.expect("promoted");
    assert_eq!(message, "rollout 'demo' promoted");
    assert_eq!(
        writes(&log),
        vec![
            (
                "PATCH".into(),
                format!("{ROLLOUT}/status"),
                MERGE.into(),
                json!({"status": {"pauseConditions": null}})
            ),
            (
                "PATCH".into(),
                ROLLOUT.into(),
                MERGE.into(),
                json!({"spec": {"paused": false}})
            ),
        ]
    );
}

#[tokio::test]
async fn promote_full_sets_status_promote_full() {
    let object = rollout_object(json!({"stableRS": "a", "currentPodHash": "b"}), json!({}));
    let (kube, log) = apiserver(Box::new(move |_| Some((200, object.clone()))));
    kube.promote("demo", true).await.expect("promoted");
    assert_eq!(
        writes(&log),
        vec![(
            "PATCH".into(),
            format!("{ROLLOUT}/status"),
            MERGE.into(),
            json!({"status": {"promoteFull": true}})
        )]
    );
}

#[tokio::test]
async fn abort_and_retry_patch_status_abort_and_fall_back_to_the_object() {
    let (kube, log) = apiserver(Box::new(|_| Some((200, json!({})))));
    kube.abort("demo").await.expect("aborted");
    kube.retry("demo").await.expect("retried");
    assert_eq!(
        writes(&log),
        vec![
            (
                "PATCH".into(),
                format!("{ROLLOUT}/status"),
                MERGE.into(),
                json!({"status": {"abort": true}})
            ),
            (
                "PATCH".into(),
                format!("{ROLLOUT}/status"),
                MERGE.into(),
                json!({"status": {"abort": false}})
            ),
        ]
    );
    // Without the status subresource (404 there), Argo sends the same patch to the object.
    let (kube, log) = apiserver(Box::new(|seen| {
        Some(if seen.path.ends_with("/status") {
            not_found()
        } else {
            (200, json!({}))
        })
    }));
    kube.abort("demo").await.expect("aborted");
    assert_eq!(
        writes(&log),
        vec![
            (
                "PATCH".into(),
                format!("{ROLLOUT}/status"),
                MERGE.into(),
                json!({"status": {"abort": true}})
            ),
            (
                "PATCH".into(),
                ROLLOUT.into(),
                MERGE.into(),
                json!({"status": {"abort": true}})
            ),
        ]
    );
}

#[tokio::test]
async fn pause_and_restart_patch_the_spec() {
    let (kube, log) = apiserver(Box::new(|_| Some((200, json!({})))));
    kube.pause("demo").await.expect("paused");
    let at: Timestamp = "2026-11-30T09:15:00Z".parse().expect("time");
    kube.restart("demo", at).await.expect("restarted");
    assert_eq!(
        writes(&log),
        vec![
            (
                "PATCH".into(),
                ROLLOUT.into(),
                MERGE.into(),
                json!({"spec": {"paused": true}})
            ),
            (
                "PATCH".into(),
                ROLLOUT.into(),
                MERGE.into(),
                json!({"spec": {"restartAt": "2026-11-30T09:15:00Z"}})
            ),
        ]
    );
}

#[tokio::test]
async fn an_argo_rollout_is_refused_by_name_and_nothing_is_written() {
    let (kube, log) = apiserver(Box::new(|seen| {
        Some(if seen.path == ARGO {
            (200, json!({"metadata": {"name": "demo"}}))
        } else {
            not_found()
        })
    }));
    for result in [
        kube.pause("demo").await,
        kube.abort("demo").await,
        kube.promote("demo", false).await,
        kube.set_image("demo", &["app=app:3".into()]).await,
    ] {
        let error = result.expect_err("refused").to_string();
        assert!(
            error.contains("argoproj.io Rollout") && error.contains("read-only"),
            "{error}"
        );
    }
    // The only writes tried were to the sluice.dev Rollout (which does not exist).
    assert!(
        writes(&log)
            .iter()
            .all(|(_, path, _, _)| path.starts_with(ROLLOUT))
    );
    // Neither group has it: not found.
    let (kube, _) = apiserver(Box::new(|_| Some(not_found())));
    let error = kube.pause("demo").await.expect_err("absent").to_string();
    assert!(error.contains("not found"), "{error}");
}

fn replica_set(hash: &str, revision: &str, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
           "metadata": {"name": format!("demo-{hash}"), "namespace": "shop",
                        "labels": {"app": "demo", "rollouts-pod-template-hash": hash},
                        "annotations": {"rollout.sluice.dev/revision": revision},
                        "ownerReferences": [{"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
                                             "name": "demo", "uid": "uid-1", "controller": true}]},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "demo"}},
                    "template": {"metadata": {"labels": {"app": "demo", "rollouts-pod-template-hash": hash}},
                                 "spec": {"containers": [{"name": "app", "image": image}]}}}})
}

#[tokio::test]
async fn undo_lists_the_replica_sets_and_json_patches_the_template() {
    let object = rollout_object(json!({"stableRS": "a"}), json!({}));
    let (kube, log) = apiserver(Box::new(move |seen| {
        Some(match seen.path.as_str() {
            ROLLOUT => (200, object.clone()),
            "/apis/apps/v1/namespaces/shop/replicasets" => (
                200,
                json!({
                "apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"},
                "items": [replica_set("a", "1", "app:1"), replica_set("b", "2", "app:2")]}),
            ),
            _ => not_found(),
        })
    }));
    assert_eq!(
        kube.undo("demo", 0).await.expect("undone"),
        "rollout 'demo' undo"
    );
    let seen = log.lock().expect("log").clone();
    let list = seen
        .iter()
        .find(|s| s.path.ends_with("/replicasets"))
        .expect("listed");
    assert!(
        list.query.contains("labelSelector=app%3Ddemo"),
        "{}",
        list.query
    );
    assert_eq!(
        writes(&log),
        vec![(
            "PATCH".into(),
            ROLLOUT.into(),
            "application/json-patch+json".into(),
            json!([{"op": "replace", "path": "/spec/template", "value": {
                  "metadata": {"labels": {"app": "demo"}},
                  "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}])
        )]
    );
    // Back to revision 2, which the template already is: nothing written.
    let message = kube.undo("demo", 2).await.expect("skipped");
    assert!(message.starts_with("skipped rollback"), "{message}");
    assert_eq!(writes(&log).len(), 1);
}

#[tokio::test]
async fn set_image_updates_the_whole_object_and_retries_a_conflict() {
    let object = rollout_object(json!({"stableRS": "a"}), json!({}));
    let puts = Arc::new(Mutex::new(0));
    let counter = puts.clone();
    let (kube, log) = apiserver(Box::new(move |seen| {
        Some(match seen.method.as_str() {
            "GET" => (200, object.clone()),
            _ => {
                let mut n = counter.lock().expect("count");
                *n += 1;
                if *n == 1 {
                    conflict()
                } else {
                    (200, seen.body.clone())
                }
            }
        })
    }));
    let message = kube
        .set_image("demo", &["app=app:3".into()])
        .await
        .expect("set");
    assert_eq!(message, "rollout \"demo\" image updated");
    let writes = writes(&log);
    assert_eq!(writes.len(), 2, "one conflict, one success");
    let (method, path, content_type, body) = &writes[1];
    assert_eq!(
        (method.as_str(), path.as_str(), content_type.as_str()),
        ("PUT", ROLLOUT, "application/json")
    );
    assert_eq!(
        body["spec"]["template"]["spec"]["containers"][0]["image"],
        "app:3"
    );
    // Fields Sluice's types do not know survive; the resourceVersion guards the update.
    assert_eq!(
        body["spec"]["someFieldSluiceDoesNotKnow"],
        json!({"kept": true})
    );
    assert_eq!(body["metadata"]["resourceVersion"], "7");
    // A container the template does not have: nothing written.
    let error = kube
        .set_image("demo", &["nope=x:1".into()])
        .await
        .expect_err("no container");
    assert_eq!(error.to_string(), "unable to find container named \"nope\"");
}

#[tokio::test]
async fn status_waits_until_healthy_or_degraded_or_the_timeout() {
    let phases = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(phase, message)| {
                let mut object =
                    rollout_object(json!({"phase": phase, "message": message}), json!({}));
                object["metadata"]["generation"] = json!(1);
                Ok::<_, std::convert::Infallible>(
                    serde_json::from_value::<Rollout>(object).expect("rollout"),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut lines = Vec::new();
    let healthy = phases(&[
        ("Progressing", "more replicas need to be updated"),
        ("Paused", "CanaryPauseStep"),
        ("Paused", "CanaryPauseStep"),
        ("Healthy", ""),
        ("Degraded", "never read"),
    ]);
    wait_for_status(futures::stream::iter(healthy), |l| lines.push(l.to_owned()))
        .await
        .expect("healthy");
    assert_eq!(
        lines,
        [
            "Progressing - more replicas need to be updated",
            "Paused - CanaryPauseStep",
            "Healthy"
        ]
    );
    let degraded = phases(&[
        ("Progressing", ""),
        ("Degraded", "ProgressDeadlineExceeded: too slow"),
    ]);
    let error = wait_for_status(futures::stream::iter(degraded), |_| {})
        .await
        .expect_err("degraded");
    assert_eq!(
        error.to_string(),
        "The rollout is in a degraded state with message: ProgressDeadlineExceeded: too slow"
    );
    // Through the watch: the list says Progressing, the watch then delivers nothing.
    let object = rollout_object(json!({"phase": "Progressing"}), json!({}));
    let (kube, log) = apiserver(Box::new(move |seen| {
        if seen.query.contains("watch=true") {
            return None;
        }
        Some(if seen.path == ROLLOUT {
            (200, object.clone())
        } else {
            (
                200,
                json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "RolloutList",
                         "metadata": {"resourceVersion": "9"}, "items": [object.clone()]}),
            )
        })
    }));
    let error = kube
        .status("demo", Some(Duration::from_millis(300)))
        .await
        .expect_err("times out");
    assert_eq!(error.to_string(), "Rollout status watch exceeded timeout");
    let seen = log.lock().expect("log").clone();
    assert!(
        seen.iter().any(
            |s| s.path == "/apis/sluice.dev/v1alpha1/namespaces/shop/rollouts"
                && s.query.contains("fieldSelector=metadata.name%3Ddemo")
        ),
        "{seen:#?}"
    );
}

#[test]
fn timeouts_parse_as_argo_durations() {
    assert_eq!(parse_timeout("0").expect("zero"), None);
    assert_eq!(
        parse_timeout("90s").expect("90s"),
        Some(Duration::from_secs(90))
    );
    assert_eq!(
        parse_timeout("5m").expect("5m"),
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        parse_timeout("10").expect("10"),
        Some(Duration::from_secs(10))
    );
    assert!(parse_timeout("soon").is_err());
}

#[tokio::test]
async fn get_shows_the_rollouts_analysis_runs_and_goes_on_without_them() {
    let object = rollout_object(json!({"stableRS": "a", "phase": "Degraded"}), json!({}));
    let run = |name: &str, created: &str, phase: &str| {
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "AnalysisRun",
               "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created,
                            "labels": {"sluice.dev/rollout": "demo"}},
               "spec": {"metrics": []},
               "status": {"phase": phase, "message": format!("{name} says {phase}")}})
    };
    let runs = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"},
        "items": [run("demo-b-1", "2026-11-30T10:05:00Z", "Failed"),
                  run("demo-a-1", "2026-11-30T10:00:00Z", "Successful")]});
    let empty = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"},
                       "items": []});
    let listed = Arc::new(Mutex::new(true));
    let allow = listed.clone();
    let (kube, log) = apiserver(Box::new(move |seen| {
        Some(match seen.path.as_str() {
            ROLLOUT => (200, object.clone()),
            "/apis/sluice.dev/v1alpha1/namespaces/shop/analysisruns" => {
                if *allow.lock().expect("flag") {
                    (200, runs.clone())
                } else {
                    (
                        403,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "reason": "Forbidden", "message": "forbidden", "code": 403}),
                    )
                }
            }
            _ if seen.path.ends_with("/replicasets") || seen.path.ends_with("/pods") => {
                (200, empty.clone())
            }
            _ => not_found(),
        })
    }));
    let text = kube.get("demo").await.expect("shown");
    let (a, b) = (text.find("demo-a-1"), text.find("demo-b-1"));
    assert!(a.is_some() && b.is_some() && a < b, "oldest first:\n{text}");
    assert!(text.contains("demo-b-1 says Failed"), "{text}");
    let list = log
        .lock()
        .expect("log")
        .iter()
        .find(|s| s.path.ends_with("/analysisruns"))
        .cloned()
        .expect("listed");
    assert!(
        list.query
            .contains("labelSelector=sluice.dev%2Frollout%3Ddemo"),
        "{}",
        list.query
    );
    // A user who may not list runs still gets the rollout.
    *listed.lock().expect("flag") = false;
    let text = kube.get("demo").await.expect("shown without runs");
    assert!(!text.contains("demo-a-1"), "{text}");
}
