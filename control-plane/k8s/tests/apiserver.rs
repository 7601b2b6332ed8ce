//! The test-support in-memory API server (`sluice_e2e::kube_api`) and kubelet
//! (`sluice_e2e::kubelet`), driven through a real `kube::Client`: the behaviour Sluice's
//! watches, leader and release driver rely on.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::{apps::v1::ReplicaSet, coordination::v1::Lease, core::v1::Pod};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use sluice_e2e::{
    Req,
    kube_api::{ApiServer, Key},
    kubelet::Kubelet,
    send_one,
};

fn client(server: &ApiServer) -> kube::Client {
    kube::Client::try_from(kube::Config::new(server.url().parse().expect("url"))).expect("client")
}

fn replica_set(name: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "prod", "labels": {"app": "demo"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "demo", "v": name}},
                 "template": {"metadata": {"labels": {"app": "demo", "v": name}},
                              "spec": {"containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]}}}
    }))
    .expect("rs")
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn create_get_list_replace_patch_and_delete_keep_resource_versions() {
    let server = ApiServer::start().await.expect("server");
    let api: Api<Lease> = Api::namespaced(client(&server), "sys");
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}))
            .expect("lease");
    let created = api
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    let rv1 = created.metadata.resource_version.clone().expect("rv");
    assert!(created.metadata.uid.is_some());
    // A second create: 409 AlreadyExists.
    match api.create(&PostParams::default(), &lease).await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("expected a conflict: {other:?}"),
    }
    // Replace with the current resourceVersion, then again with the stale one: 409 Conflict.
    let mut next = created.clone();
    next.spec.as_mut().expect("spec").holder_identity = Some("b".into());
    let replaced = api
        .replace("l", &PostParams::default(), &next)
        .await
        .expect("replace");
    assert_ne!(
        replaced.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );
    match api.replace("l", &PostParams::default(), &next).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409),
        other => panic!("a stale replace must fail: {other:?}"),
    }
    let patched = api
        .patch(
            "l",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "c"}})),
        )
        .await
        .expect("patch");
    assert_eq!(
        patched.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("c")
    );
    assert_eq!(
        api.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    api.delete("l", &DeleteParams::default())
        .await
        .expect("delete");
    match api.get("l").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 404),
        other => panic!("deleted: {other:?}"),
    }
}

#[tokio::test]
async fn status_is_a_subresource_and_spec_changes_bump_the_generation() {
    let server = ApiServer::start().await.expect("server");
    let api: Api<ReplicaSet> = Api::namespaced(client(&server), "prod");
    api.create(&PostParams::default(), &replica_set("a", 1))
        .await
        .expect("create");
    let merge = |v| Patch::Merge(v);
    // A write to the object does not change its status; a write to /status changes only that.
    let rs = api
        .patch(
            "a",
            &PatchParams::default(),
            &merge(json!({"spec": {"replicas": 3}, "status": {"replicas": 9}})),
        )
        .await
        .expect("patch");
    assert_eq!(rs.status, None);
    assert_eq!(rs.metadata.generation, Some(2));
    let rs = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &merge(json!({"spec": {"replicas": 5}, "status": {"replicas": 3}})),
        )
        .await
        .expect("status");
    assert_eq!(rs.spec.replicas, Some(3));
    assert_eq!(rs.status.map(|s| s.replicas), Some(3));
    assert_eq!(
        rs.metadata.generation,
        Some(2),
        "a status write is no new generation"
    );
}

#[tokio::test]
async fn watches_resume_from_a_resource_version_and_filter_by_label() {
    let server = ApiServer::start().await.expect("server");
    let api: Api<ReplicaSet> = Api::all(client(&server));
    let ns: Api<ReplicaSet> = Api::namespaced(client(&server), "prod");
    ns.create(&PostParams::default(), &replica_set("a", 0))
        .await
        .expect("a");
    let mut unlabelled = replica_set("b", 0);
    unlabelled.metadata.labels = None;
    ns.create(&PostParams::default(), &unlabelled)
        .await
        .expect("b");
    let mut events = watcher(api, watcher::Config::default().labels("app=demo"))
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("listed")
        .expect("open")
        .expect("ok");
    assert_eq!(first.metadata.name.as_deref(), Some("a"));
    ns.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("b changes: not watched");
    ns.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .expect("a changes");
    let next = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("watched")
        .expect("open")
        .expect("ok");
    assert_eq!(next.metadata.name.as_deref(), Some("a"));
    assert_eq!(next.spec.replicas, Some(2));
}

#[tokio::test]
async fn the_kubelet_runs_ready_pods_for_replica_sets_and_deleting_the_set_deletes_them() {
    let server = ApiServer::start().await.expect("server");
    let kubelet = Kubelet::start(&server);
    let rs_api: Api<ReplicaSet> = Api::namespaced(client(&server), "prod");
    let pods: Api<Pod> = Api::namespaced(client(&server), "prod");
    rs_api
        .create(&PostParams::default(), &replica_set("web", 2))
        .await
        .expect("rs");
    eventually("2 ready pods", async || {
        let rs = rs_api.get("web").await.ok()?;
        (rs.status?.available_replicas == Some(2)).then_some(())
    })
    .await;
    let list = pods
        .list(&ListParams::default().labels("v=web"))
        .await
        .expect("pods");
    assert_eq!(list.items.len(), 2);
    for pod in &list.items {
        let status = pod.status.clone().expect("status");
        assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));
        let port = pod.spec.as_ref().expect("spec").containers[0]
            .ports
            .as_ref()
            .expect("ports")[0]
            .container_port;
        // A real upstream answers on the pod's port, naming its ReplicaSet.
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).expect("port")));
        let response = send_one(addr, Req::get("web.local"))
            .await
            .expect("upstream answers");
        assert_eq!(response.upstream(), Some("web"));
    }
    rs_api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale");
    eventually("1 pod", async || (kubelet.running() == 1).then_some(())).await;
    rs_api
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("no pods", async || (kubelet.running() == 0).then_some(())).await;
    assert!(server.list("/v1/pods", None).is_empty());
    assert!(
        server
            .get(&Key::new("apps/v1/replicasets", "prod", "web"))
            .is_none()
    );
}
