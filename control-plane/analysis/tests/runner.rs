//! The runner against a small local HTTP server: measurements on the metric's interval (timers),
//! the run's status reported on every change, terminate ends a run that would measure forever,
//! and a run resumed from a kept status takes only the measurements still due.

use std::{net::SocketAddr, time::Duration};

use sluice_analysis::{
    AnalysisDocument, AnalysisPhase, AnalysisRunStatus, PodHashes, RunPlan,
    parse_analysis_documents, plan_run,
    runner::{RunUpdate, spawn},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};

/// Answers every request with 200 and `{"ok": 1}`.
async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut len = 0;
                while !String::from_utf8_lossy(&buf[..len]).contains("\r\n\r\n") {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => len += n,
                    }
                }
                let body = "{\"ok\": 1}";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

fn plan(addr: SocketAddr, schedule: &str) -> RunPlan {
    let yaml = format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: web}}
spec:
  metrics:
  - name: ok
    {schedule}
    successCondition: result == 1
    provider:
      web:
        url: "http://{addr}/check"
        jsonPath: "{{$.ok}}"
"#
    );
    let docs = parse_analysis_documents(&yaml).expect("parses");
    let AnalysisDocument::Template(t) = &docs[0] else {
        panic!("a template")
    };
    plan_run(&[&t.spec], &[], &PodHashes::default()).expect("plans")
}

async fn last(rx: &mut mpsc::UnboundedReceiver<RunUpdate>) -> Vec<AnalysisRunStatus> {
    let mut seen = Vec::new();
    while let Some(update) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an update within 20 s")
    {
        assert_eq!(update.name, "run-1");
        let done = update.status.phase.completed();
        seen.push(update.status);
        if done {
            break;
        }
    }
    seen
}

#[tokio::test]
async fn a_run_measures_on_its_interval_and_completes() {
    let addr = server().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = std::time::Instant::now();
    let _run = spawn(
        "run-1".into(),
        plan(addr, "interval: 300ms\n    count: 3"),
        AnalysisRunStatus::default(),
        false,
        reqwest::Client::new(),
        tx,
    );
    let seen = last(&mut rx).await;
    let elapsed = started.elapsed();
    let status = seen.last().expect("a status");
    assert_eq!(status.phase, AnalysisPhase::Successful, "{status:?}");
    let measurements = &status.metric_results[0].measurements;
    assert_eq!(measurements.len(), 3);
    assert!(
        measurements.iter().all(|m| m.value == "1"),
        "{measurements:?}"
    );
    // Two intervals between three measurements: the timers, not a busy loop.
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(status.started_at.is_some() && status.completed_at.is_some());
}

#[tokio::test]
async fn terminate_ends_an_endless_run() {
    let addr = server().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let run = spawn(
        "run-1".into(),
        plan(addr, "interval: 100ms"),
        AnalysisRunStatus::default(),
        false,
        reqwest::Client::new(),
        tx,
    );
    // Wait for two measurements, then terminate.
    loop {
        let update = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("an update")
            .expect("open");
        if update.status.metric_results.first().map_or(0, |r| r.count) >= 2 {
            break;
        }
    }
    run.terminate();
    let seen = last(&mut rx).await;
    let status = seen.last().expect("a status");
    assert_eq!(status.phase, AnalysisPhase::Successful, "{status:?}");
    assert_eq!(status.message, "Run Terminated");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(run.is_finished());
}

#[tokio::test]
async fn a_resumed_run_takes_only_what_is_still_due() {
    let addr = server().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let plan = plan(addr, "interval: 100ms\n    count: 3");
    // Two measurements recorded before a restart.
    let _first = spawn(
        "run-1".into(),
        plan.clone(),
        AnalysisRunStatus::default(),
        false,
        reqwest::Client::new(),
        tx,
    );
    let kept = loop {
        let update = rx.recv().await.expect("open");
        if update.status.metric_results.first().map_or(0, |r| r.count) == 2 {
            break update.status;
        }
    };
    drop(_first);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _resumed = spawn(
        "run-1".into(),
        plan,
        kept.clone(),
        false,
        reqwest::Client::new(),
        tx,
    );
    let seen = last(&mut rx).await;
    let status = seen.last().expect("a status");
    assert_eq!(status.phase, AnalysisPhase::Successful);
    let measurements = &status.metric_results[0].measurements;
    assert_eq!(
        measurements.len(),
        3,
        "one more, not three: {measurements:?}"
    );
    assert_eq!(measurements[..2], kept.metric_results[0].measurements[..]);
    assert_eq!(status.started_at, kept.started_at);
}
