//! The plain-HTTP side: `/metrics` (Prometheus), `/healthz` (the process is up), `/readyz` (the
//! source delivered a valid state), and `/sluice_filter.wasm` (the filter module, for Envoys that
//! fetch it as a remote code source and check its sha256).

use std::{
    convert::Infallible, future::Future, net::SocketAddr, panic::AssertUnwindSafe, sync::Arc,
};

use futures::FutureExt as _;

use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, error};

use crate::serve::App;

pub const WASM_PATH: &str = "/sluice_filter.wasm";

pub async fn serve(
    app: Arc<App>,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let app = app.clone();
        let metrics = app.metrics.clone();
        let connection = async move {
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(respond(&app, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(error = %e, "HTTP connection ended with an error");
            }
        };
        tokio::spawn(async move {
            // One connection's panic ends only it, but is reported.
            if AssertUnwindSafe(connection).catch_unwind().await.is_err() {
                error!(task = "HTTP connection", "HTTP connection task panicked");
                metrics.task_failure("HTTP connection");
            }
        });
    }
}

async fn respond<B>(app: &App, req: Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            app.metrics
                .set_connected_proxies(app.registry.snapshot().len());
            metrics_response(app)
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let store = app.store.lock().await;
            let mut why = Vec::new();
            if !store.is_ready() {
                why.push(format!(
                    "no valid state yet: {}",
                    store.last_error().unwrap_or("nothing loaded yet")
                ));
            }
            drop(store);
            for (task, failure) in app.supervisor.down() {
                why.push(format!("task {task} is down: {failure}"));
            }
            if why.is_empty() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("not ready: {}\n", why.join("; ")),
                )
            }
        }
        WASM_PATH => Response::builder()
            .header("content-type", "application/wasm")
            .body(Full::new(Bytes::from(app.wasm.as_ref().clone())))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "module\n")),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn metrics_response(app: &App) -> Response<Full<Bytes>> {
    Response::builder()
        .header(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Full::new(Bytes::from(app.metrics.encode())))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "encode\n"))
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}
