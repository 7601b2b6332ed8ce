//! The providers against small local HTTP servers: values as Argo reads them, and every fault a
//! measurement Error with a message saying which.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use sluice_analysis::{
    AnalysisDocument, AnalysisPhase, PodHashes, parse_analysis_documents, plan_run,
    provider::{measure, prometheus_value, rfc_json_path, web_value},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::Mutex,
};

/// Answers every request with `status` and `body`; records the requests.
async fn server(
    status: u16,
    body: &'static str,
    delay: Duration,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut len = 0;
                // Read the head and the body (by Content-Length).
                loop {
                    let Ok(n) = stream.read(&mut buf[len..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    len += n;
                    let text = String::from_utf8_lossy(&buf[..len]).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if len >= head_end + 4 + length {
                            log.lock().await.push(text);
                            break;
                        }
                    }
                }
                tokio::time::sleep(delay).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

fn metric(provider: &str, condition: &str) -> sluice_analysis::PlannedMetric {
    let text = format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: t}}\nspec:\n  metrics:\n  - name: m\n    successCondition: \"{condition}\"\n    provider:\n{provider}\n"
    );
    let docs = parse_analysis_documents(&text).expect("parses");
    let AnalysisDocument::Template(t) = &docs[0] else {
        panic!("template")
    };
    plan_run(&[&t.spec], &[], &PodHashes::default())
        .expect("plan")
        .metrics
        .remove(0)
}

fn prometheus(addr: &str, extra: &str) -> String {
    format!("      prometheus:\n        address: {addr}\n        query: 'sum(up)'\n{extra}")
}

fn web(url: &str, extra: &str) -> String {
    format!("      web:\n        url: {url}\n{extra}")
}

async fn run(metric: &sluice_analysis::PlannedMetric) -> sluice_analysis::Measurement {
    measure(&reqwest::Client::new(), metric, Timestamp::now).await
}

const VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"v":"a"},"value":[1.5,"0.98"]},{"metric":{"v":"b"},"value":[1.5,"NaN"]}]}}"#;

#[test]
fn prometheus_results_as_argo_reads_them() {
    let v: serde_json::Value = serde_json::from_str(VECTOR).expect("json");
    let measured = prometheus_value(&v["data"]).expect("vector");
    assert_eq!(measured.shown, "[0.98,NaN]");
    let scalar = serde_json::json!({"resultType": "scalar", "result": [1.5, "+Inf"]});
    assert_eq!(prometheus_value(&scalar).expect("scalar").shown, "+Inf");
    let empty = serde_json::json!({"resultType": "vector", "result": []});
    assert_eq!(prometheus_value(&empty).expect("empty").shown, "[]");
    let matrix = serde_json::json!({"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "1"], [2, "2.5"]]}]});
    assert_eq!(prometheus_value(&matrix).expect("matrix").shown, "[1,2.5]");
    let string = serde_json::json!({"resultType": "string", "result": [1, "x"]});
    assert!(
        prometheus_value(&string)
            .expect_err("string")
            .contains("not supported")
    );
}

#[tokio::test]
async fn prometheus_measurement_posts_the_query() {
    let (addr, seen) = server(200, VECTOR, Duration::ZERO).await;
    let m = metric(
        &prometheus(
            &format!("http://{addr}"),
            "        headers: [{key: X-Scope-OrgID, value: team-a}]",
        ),
        "result[0] >= 0.95",
    );
    let measurement = run(&m).await;
    assert_eq!(
        measurement.phase,
        AnalysisPhase::Successful,
        "{measurement:?}"
    );
    assert_eq!(measurement.value, "[0.98,NaN]");
    let request = seen.lock().await.join("");
    assert!(request.starts_with("POST /api/v1/query "), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("x-scope-orgid: team-a"),
        "{request}"
    );
    assert!(request.contains("query=sum%28up%29"), "{request}");
}

#[tokio::test]
async fn prometheus_faults_are_errors() {
    // Unreachable: a port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let m = metric(
        &prometheus(&format!("http://{closed}"), ""),
        "result[0] >= 0.95",
    );
    let measurement = run(&m).await;
    assert_eq!(measurement.phase, AnalysisPhase::Error);
    assert!(
        measurement.message.contains("cannot connect"),
        "{}",
        measurement.message
    );

    // Slow: past the query timeout.
    let (addr, _) = server(200, VECTOR, Duration::from_secs(5)).await;
    let m = metric(
        &prometheus(&format!("http://{addr}"), "        timeout: 1"),
        "result[0] >= 0.95",
    );
    let measurement = run(&m).await;
    assert_eq!(measurement.phase, AnalysisPhase::Error);
    assert!(
        measurement.message.contains("timed out"),
        "{}",
        measurement.message
    );

    // Not JSON, and Prometheus' own error answer.
    let (addr, _) = server(502, "<html>bad gateway</html>", Duration::ZERO).await;
    let measurement = run(&metric(&prometheus(&format!("http://{addr}"), ""), "true")).await;
    assert_eq!(measurement.phase, AnalysisPhase::Error);
    assert!(
        measurement.message.contains("not JSON"),
        "{}",
        measurement.message
    );
    let (addr, _) = server(
        400,
        r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#,
        Duration::ZERO,
    )
    .await;
    let measurement = run(&metric(&prometheus(&format!("http://{addr}"), ""), "true")).await;
    assert_eq!(measurement.phase, AnalysisPhase::Error);
    assert!(
        measurement.message.contains("bad_data: parse error"),
        "{}",
        measurement.message
    );

    // Empty result with an unguarded condition.
    let (addr, _) = server(
        200,
        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        Duration::ZERO,
    )
    .await;
    let measurement = run(&metric(
        &prometheus(&format!("http://{addr}"), ""),
        "result[0] >= 0.95",
    ))
    .await;
    assert_eq!(measurement.phase, AnalysisPhase::Error);
    assert!(
        measurement.message.contains("no data returned"),
        "{}",
        measurement.message
    );
}

#[tokio::test]
async fn web_json_path_and_text() {
    let (addr, seen) = server(
        200,
        r#"{"data": {"ok": true, "rate": 0.97}}"#,
        Duration::ZERO,
    )
    .await;
    let m = metric(
        &web(
            &format!("http://{addr}/check"),
            "        jsonPath: \"{$.data.rate}\"\n        headers: [{key: Authorization, value: Bearer t}]",
        ),
        "result >= 0.95",
    );
    let measurement = run(&m).await;
    assert_eq!(
        measurement.phase,
        AnalysisPhase::Successful,
        "{measurement:?}"
    );
    assert_eq!(measurement.value, "0.97");
    let request = seen.lock().await.join("");
    assert!(request.starts_with("GET /check "), "{request}");
    assert!(
        request.contains("Bearer t") || request.contains("bearer t"),
        "{request}"
    );

    // A body that is not JSON is the result as text (Argo's behaviour).
    let (addr, _) = server(200, "ok", Duration::ZERO).await;
    let measurement = run(&metric(
        &web(&format!("http://{addr}/"), ""),
        "result == 'ok'",
    ))
    .await;
    assert_eq!(
        measurement.phase,
        AnalysisPhase::Successful,
        "{measurement:?}"
    );
    let measurement = run(&metric(&web(&format!("http://{addr}/"), ""), "result > 1")).await;
    assert_eq!(
        measurement.phase,
        AnalysisPhase::Error,
        "text compared to a number"
    );
}

#[tokio::test]
async fn web_faults_are_errors() {
    let (addr, _) = server(200, r#"{"data": {}}"#, Duration::ZERO).await;
    let m = metric(
        &web(
            &format!("http://{addr}/"),
            "        jsonPath: \"{$.data.ok}\"",
        ),
        "result == true",
    );
    let measurement = run(&m).await;
    assert_eq!(measurement.phase, AnalysisPhase::Error);
    assert!(
        measurement.message.contains("Could not find JSONPath"),
        "{}",
        measurement.message
    );

    let (addr, _) = server(503, "{}", Duration::ZERO).await;
    let measurement = run(&metric(&web(&format!("http://{addr}/"), ""), "true")).await;
    assert_eq!(measurement.phase, AnalysisPhase::Error);
    assert!(
        measurement.message.contains("non 2xx response code: 503"),
        "{}",
        measurement.message
    );

    let (addr, _) = server(200, "{}", Duration::from_secs(5)).await;
    let m = metric(
        &web(&format!("http://{addr}/"), "        timeoutSeconds: 1"),
        "true",
    );
    let measurement = run(&m).await;
    assert_eq!(measurement.phase, AnalysisPhase::Error);
    assert!(
        measurement.message.contains("timed out"),
        "{}",
        measurement.message
    );

    let m = metric(
        &web(
            "http://127.0.0.1:9/",
            "        method: GET\n        body: x",
        ),
        "true",
    );
    let measurement = run(&m).await;
    assert_eq!(measurement.phase, AnalysisPhase::Error);
    assert!(
        measurement
            .message
            .contains("only be used with POST or PUT"),
        "{}",
        measurement.message
    );
}

#[test]
fn json_paths_in_kubernetes_form() {
    assert_eq!(rfc_json_path("{$.data.ok}"), "$.data.ok");
    assert_eq!(rfc_json_path("{.data}"), "$.data");
    assert_eq!(rfc_json_path("{$}"), "$");
    let value = web_value(
        br#"{"items": [{"x": 1}, {"x": 2}]}"#,
        Some("{$.items[*].x}"),
    )
    .expect("found");
    assert_eq!(value.shown, "1", "the first match, as Argo");
}
