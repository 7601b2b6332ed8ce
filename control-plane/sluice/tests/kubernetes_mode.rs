//! `sluice serve --kubernetes` as a real process against a scripted Kubernetes API server.
//!
//! No API server can run here, so a small fake one (plain HTTP on 127.0.0.1) answers the lists
//! the control plane's watches make — an Argo Rollout (observe mode), its Pods and Services — and
//! holds the watches open. This proves the binary's wiring: kubeconfig → watches → index → store,
//! readiness only once every watch has listed, and the rollout visible through the admin API with
//! the weight derived from its status.

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{Value, json};

/// Kills the control plane when the test ends, also on failure.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn pod(name: &str, hash: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "resourceVersion": "1",
                     "labels": {"app": "demo", "rollouts-pod-template-hash": hash}},
        "spec": {"containers": [{"name": "demo", "image": "demo",
                                 "ports": [{"name": "http", "containerPort": port}]}]},
        "status": {"podIP": "127.0.0.1", "phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "demo", "resourceVersion": "1"},
        "spec": {"selector": {"app": "demo"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    })
}

fn argo_rollout() -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "demo", "namespace": "demo", "resourceVersion": "1", "generation": 1},
        "spec": {
            "selector": {"matchLabels": {"app": "demo"}},
            "strategy": {"canary": {
                "stableService": "demo", "canaryService": "demo-canary",
                "steps": [{"setWeight": 30}, {"pause": {}}, {"setWeight": 60}]
            }}
        },
        "status": {"stableRS": "aaa", "currentPodHash": "bbb", "currentStepIndex": 1}
    })
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
           "metadata": {"resourceVersion": "1"}, "items": items})
}

/// Answers one request: lists by path; watches are held open (nothing changes).
fn serve(mut stream: TcpStream) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if query.contains("watch=true") || query.contains("watch=1") {
        // A quiet watch: headers now, no events; the control plane keeps waiting.
        stream.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        )?;
        stream.flush()?;
        thread::sleep(Duration::from_secs(120));
        return Ok(());
    }
    let (status, body) = match path {
        "/apis/argoproj.io/v1alpha1/rollouts" => (
            "200 OK",
            list("RolloutList", "argoproj.io/v1alpha1", vec![argo_rollout()]),
        ),
        "/api/v1/pods" => (
            "200 OK",
            list(
                "PodList",
                "v1",
                vec![pod("demo-aaa", "aaa", 18080), pod("demo-bbb", "bbb", 18081)],
            ),
        ),
        "/api/v1/services" => (
            "200 OK",
            list(
                "ServiceList",
                "v1",
                vec![service("demo"), service("demo-canary")],
            ),
        ),
        _ => (
            "404 Not Found",
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "NotFound", "code": 404, "message": format!("{path} not found")}),
        ),
    };
    let body = body.to_string();
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

fn fake_api_server() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let _ = serve(stream);
            });
        }
    });
    Ok(port)
}

fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    Ok((code, response))
}

#[test]
fn kubernetes_mode_serves_an_argo_rollout_from_the_api_server() -> anyhow::Result<()> {
    let api_port = fake_api_server()?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{api_port}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\n    namespace: demo\nusers:\n- name: nobody\n  user: {{}}\n"
        ),
    )?;
    let wasm = dir.path().join("module.wasm");
    std::fs::write(&wasm, b"\0asm")?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "k8s-mode-token\n")?;
    let (xds, admin, http) = (free_port()?, free_port()?, free_port()?);

    let _control_plane = Guard(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "serve",
                "--kubernetes",
                "--observe-argo",
                "--no-sluice-rollouts",
            ])
            .arg("--wasm")
            .arg(&wasm)
            .args(["--xds-addr", &format!("127.0.0.1:{xds}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            // Read-only status without credentials; changes would still need them.
            .arg("--admin-status-unauthenticated")
            .arg("--admin-token-file")
            .arg(&token_file)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );

    // Ready only once every watch has listed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = http_get(http, "/readyz") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "never became ready");
        thread::sleep(Duration::from_millis(200));
    }

    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["status", "--admin", &format!("http://127.0.0.1:{admin}")])
        .output()?;
    let status = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "sluice status failed: {status}");
    assert!(
        status.contains("demo/demo") && status.contains("stable=aaa"),
        "{status}"
    );
    assert!(
        status.contains("canary=bbb") && status.contains("weight=30.00%"),
        "{status}"
    );
    assert!(
        status.contains("demo.demo.svc.cluster.local"),
        "Service hosts missing: {status}"
    );
    // Both versions resolved to their pod's named port.
    assert!(status.contains("endpoints=1"), "{status}");

    // An authenticated override is still refused: in Kubernetes mode commands go through the
    // Rollout, so every replica converges from it; nothing changed.
    for command in [
        &["set-weight", "demo/demo", "80"][..],
        &["promote", "demo/demo"],
        &["abort", "demo/demo"],
    ] {
        let refused = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(command)
            .args(["--admin", &format!("http://127.0.0.1:{admin}")])
            .arg("--token-file")
            .arg(&token_file)
            .output()?;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{command:?} accepted: {stderr}");
        assert!(
            stderr.contains("Kubernetes mode") && stderr.contains("sluice rollouts"),
            "{command:?}: {stderr}"
        );
    }
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["status", "--admin", &format!("http://127.0.0.1:{admin}")])
        .output()?;
    let after = String::from_utf8_lossy(&output.stdout);
    assert!(after.contains("weight=30.00%"), "{after}");
    Ok(())
}
