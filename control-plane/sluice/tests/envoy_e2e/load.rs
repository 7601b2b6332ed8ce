//! Continuous load: a keep-alive client that sends one request at a time, and a background load of
//! a few such clients that counts every outcome (upstream, non-200, connection error).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::harness::HOST;

/// Far above any healthy loopback exchange: a request that takes this long is a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// One keep-alive HTTP/1.1 connection to Envoy's listener, reopened when Envoy closes it cleanly.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    host: String,
    sender: Option<http1::SendRequest<Empty<Bytes>>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_host(addr, HOST)
    }

    /// A client whose requests carry `Host: host`.
    pub fn with_host(addr: SocketAddr, host: &str) -> Self {
        Self {
            addr,
            host: host.to_owned(),
            sender: None,
        }
    }

    /// GET / with Host demo.local (or the client's host): (status, upstream that answered).
    pub async fn get(&mut self) -> anyhow::Result<(u16, Option<String>)> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange())
            .await
            .context("request timed out")
            .and_then(|r| r);
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn exchange(&mut self) -> anyhow::Result<(u16, Option<String>)> {
        // A connection Envoy closed after its last response (e.g. `connection: close` while
        // draining) is not a failure; one that breaks under a request is.
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(connect(self.addr).await?);
        }
        let sender = self.sender.as_mut().context("no connection")?;
        let request = hyper::Request::get("/")
            .header("host", self.host.as_str())
            .body(Empty::new())
            .context("building the request")?;
        sender.ready().await.context("connection not ready")?;
        let response = sender.send_request(request).await.context("sending")?;
        let status = response.status().as_u16();
        let upstream = response
            .headers()
            .get(sluice_e2e::upstream::UPSTREAM_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        response
            .into_body()
            .collect()
            .await
            .context("reading the body")?;
        Ok((status, upstream))
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        // Ends when either side closes; errors show up on the request that hits them.
        let _ = connection.await;
    });
    Ok(sender)
}

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub by_upstream: BTreeMap<String, u64>,
    /// Responses other than 200 (or without an upstream), by status.
    pub bad_status: BTreeMap<u16, u64>,
    pub errors: u64,
    /// The first few errors, for the failure message.
    pub error_samples: Vec<String>,
}

impl Tally {
    pub fn ok(&self) -> u64 {
        self.by_upstream.values().sum()
    }

    pub fn failures(&self) -> u64 {
        self.errors + self.bad_status.values().sum::<u64>()
    }

    pub fn count(&self, upstream: &str) -> u64 {
        self.by_upstream.get(upstream).copied().unwrap_or(0)
    }
}

/// A few clients sending requests back to back until dropped.
#[derive(Debug)]
pub struct Load {
    tally: Arc<Mutex<Tally>>,
    _tasks: JoinSet<()>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize) -> Self {
        Self::start_on_host(addr, clients, HOST)
    }

    /// [`Load::start`] with `Host: host`.
    pub fn start_on_host(addr: SocketAddr, clients: usize, host: &str) -> Self {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let mut tasks = JoinSet::new();
        for _ in 0..clients {
            let tally = Arc::clone(&tally);
            let host = host.to_owned();
            tasks.spawn(async move {
                let mut client = Client::with_host(addr, &host);
                loop {
                    let outcome = client.get().await;
                    let failed = outcome.is_err();
                    {
                        let mut tally = tally.lock().expect("tally lock");
                        match outcome {
                            Ok((200, Some(upstream))) => {
                                *tally.by_upstream.entry(upstream).or_default() += 1;
                            }
                            Ok((status, _)) => *tally.bad_status.entry(status).or_default() += 1,
                            Err(error) => {
                                tally.errors += 1;
                                if tally.error_samples.len() < 5 {
                                    tally.error_samples.push(format!("{error:#}"));
                                }
                            }
                        }
                    }
                    if failed {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
        }
        Self {
            tally,
            _tasks: tasks,
        }
    }

    /// What the clients saw so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().expect("tally lock").clone()
    }

    /// Stops the clients (dropping the tasks aborts them) and returns the final tally.
    pub fn stop(self) -> Tally {
        self.tally()
    }
}
