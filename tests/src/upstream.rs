//! A real HTTP/1.1 upstream on loopback that names itself in every response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Response header naming the upstream that answered.
pub const UPSTREAM_HEADER: &str = "x-upstream";
/// Response header echoing the `x-sluice-hash` request header the upstream received ("" if none).
pub const SEEN_HASH_HEADER: &str = "x-seen-sluice-hash";

/// An upstream server answering every request with 200, `x-upstream: <name>` and body `<name>`.
/// It stops (and closes its connections) when dropped.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

/// One request an upstream received, as it received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// The `Host` header ("" when none). Envoy appends `-shadow` to the host of mirrored copies.
    pub host: String,
    pub path: String,
}

impl Seen {
    /// Whether Envoy sent this as a mirrored copy (its host ends with `-shadow`).
    pub fn is_shadow(&self) -> bool {
        self.host.ends_with("-shadow")
    }
}

impl Upstream {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_failing(name, 0).await
    }

    /// As [`Self::start`], but every `fail_every`-th request (counting from the first) is
    /// answered 500: 5 gives a 20 % error rate, as a bad release. 0 never fails.
    pub async fn start_failing(name: &str, fail_every: u64) -> anyhow::Result<Self> {
        Self::start_with(name, fail_every, std::time::Duration::ZERO).await
    }

    /// As [`Self::start`], but every answer (still 200) takes `delay`: a slow release that
    /// fails a latency objective without failing a request.
    pub async fn start_slow(name: &str, delay: std::time::Duration) -> anyhow::Result<Self> {
        Self::start_with(name, 0, delay).await
    }

    async fn start_with(
        name: &str,
        fail_every: u64,
        delay: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .with_context(|| format!("upstream {name}: binding 127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let header_name = HeaderValue::from_str(name)
            .with_context(|| format!("upstream name {name:?} is not a valid header value"))?;
        let requests = Arc::new(AtomicU64::new(0));

        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(serve(
            listener,
            header_name,
            Arc::clone(&requests),
            fail_every,
            delay,
            Arc::clone(&seen),
        ));
        Ok(Self {
            name: name.to_string(),
            addr,
            requests,
            seen,
            task,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Every request answered so far, in the order received.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    name: HeaderValue,
    requests: Arc<AtomicU64>,
    fail_every: u64,
    delay: std::time::Duration,
    seen_log: Arc<Mutex<Vec<Seen>>>,
) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(?name, %error, "upstream accept failed");
                continue;
            }
        };
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let name = name.clone();
        let requests = Arc::clone(&requests);
        let seen_log = Arc::clone(&seen_log);
        connections.spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let nth = requests.fetch_add(1, Ordering::Relaxed) + 1;

                let text = |v: Option<&HeaderValue>| {
                    v.and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
                };
                if let Ok(mut log) = seen_log.lock() {
                    log.push(Seen {
                        method: request.method().to_string(),
                        host: text(request.headers().get(hyper::header::HOST)),
                        path: request.uri().to_string(),
                    });
                }
                let seen = request
                    .headers()
                    .get("x-sluice-hash")
                    .cloned()
                    .unwrap_or_else(|| HeaderValue::from_static(""));
                let mut response =
                    Response::new(Full::new(Bytes::copy_from_slice(name.as_bytes())));
                response.headers_mut().insert(UPSTREAM_HEADER, name.clone());
                response.headers_mut().insert(SEEN_HASH_HEADER, seen);
                if fail_every > 0 && nth.is_multiple_of(fail_every) {
                    *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                }
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
    }
}
