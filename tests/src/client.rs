//! A fast HTTP/1.1 load client: many requests over a few keep-alive connections, concurrently,
//! returning every response (upstream name, headers) in request order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::upstream::{SEEN_HASH_HEADER, UPSTREAM_HEADER};

/// Upper bound for one request; far above anything a healthy loopback exchange needs.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One request to send: a GET (or `method`) of `path` with `Host: host` and extra headers.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: hyper::Method,
    pub host: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Req {
    /// GET / with the given Host.
    pub fn get(host: &str) -> Self {
        Self {
            method: hyper::Method::GET,
            host: host.to_string(),
            path: "/".to_string(),
            headers: Vec::new(),
        }
    }

    /// The same request with another method and path.
    pub fn at(mut self, method: hyper::Method, path: &str) -> Self {
        self.method = method;
        self.path = path.to_string();
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// One response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// The upstream that answered (its `x-upstream` header), if any.
    pub fn upstream(&self) -> Option<&str> {
        self.header(UPSTREAM_HEADER)
    }

    /// The `x-sluice-hash` value the upstream received ("" when none).
    pub fn seen_hash(&self) -> Option<&str> {
        self.header(SEEN_HASH_HEADER)
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// All values of a response header as text.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect()
    }
}

/// Sends one request on a fresh connection.
pub async fn send_one(addr: SocketAddr, req: Req) -> anyhow::Result<Resp> {
    let mut responses = send_all(addr, vec![req], 1).await?;
    responses.pop().context("no response")
}

/// Sends all requests over `connections` keep-alive connections (each sends its share one after
/// the other), and returns the responses in the order of `requests`.
pub async fn send_all(
    addr: SocketAddr,
    requests: Vec<Req>,
    connections: usize,
) -> anyhow::Result<Vec<Resp>> {
    let total = requests.len();
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.clamp(1, total.max(1)) {
        let requests = Arc::clone(&requests);
        let next = Arc::clone(&next);
        tasks.spawn(async move { drive_connection(addr, &requests, &next).await });
    }
    let mut slots: Vec<Option<Resp>> = vec![None; total];
    while let Some(joined) = tasks.join_next().await {
        for (index, response) in joined.context("client task panicked")?? {
            slots[index] = Some(response);
        }
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(index, slot)| slot.with_context(|| format!("request {index} got no response")))
        .collect()
}

async fn drive_connection(
    addr: SocketAddr,
    requests: &[Req],
    next: &AtomicUsize,
) -> anyhow::Result<Vec<(usize, Resp)>> {
    let mut sender = connect(addr).await?;
    let mut done = Vec::new();
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(req) = requests.get(index) else {
            return Ok(done);
        };
        // Envoy may close an idle or finished connection; open a new one before sending.
        if sender.is_closed() {
            sender = connect(addr).await?;
        }
        let response = tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut sender, req))
            .await
            .with_context(|| format!("request {index} to {addr} timed out"))?
            .with_context(|| format!("request {index} to {addr}"))?;
        done.push((index, response));
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "client connection ended with an error");
        }
    });
    Ok(sender)
}

async fn exchange(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    req: &Req,
) -> anyhow::Result<Resp> {
    let mut builder = Request::builder()
        .method(req.method.clone())
        .uri(req.path.as_str())
        .header("host", req.host.as_str());
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder.body(Empty::new()).context("building the request")?;
    sender.ready().await.context("connection not ready")?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.context("reading the body")?.to_bytes();
    Ok(Resp {
        status,
        headers: parts.headers,
        body,
    })
}

/// A GET of `path` on a fresh connection; returns (status, body). Used for admin endpoints.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let req = Req::get(&addr.to_string()).at(hyper::Method::GET, path);
    let exchange = async {
        let mut sender = connect(addr).await?;
        exchange(&mut sender, &req).await
    };
    let response = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .with_context(|| format!("GET {path} on {addr} timed out"))??;
    let body = String::from_utf8(response.body.to_vec())
        .with_context(|| format!("GET {path} on {addr}: body is not UTF-8"))?;
    Ok((response.status, body))
}
