//! A real Prometheus (the Debian package `prometheus`, installed by `scripts/setup.sh`) on
//! loopback, scraping given targets every second, for analysis tests and the demo. It stops and
//! its data directory is removed when dropped.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::{client::http_get, paths::free_port};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One scrape job: a name, `host:port` targets and the metrics path.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    pub name: String,
    pub targets: Vec<SocketAddr>,
    pub metrics_path: String,
}

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

/// `$PROMETHEUS_BIN`, or `prometheus` on the PATH (the Debian package puts it in /usr/bin).
pub fn prometheus_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("PROMETHEUS_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .context("no prometheus binary: run `make setup` (apt-get install prometheus) or set $PROMETHEUS_BIN")
}

impl Prometheus {
    /// Starts Prometheus on 127.0.0.1 (a free port), scraping `jobs` every second, and waits
    /// until it is ready.
    pub async fn start(jobs: &[ScrapeJob]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-e2e-prometheus-")
            .tempdir()
            .context("creating a temp dir for Prometheus")?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_text(jobs)).context("writing prometheus.yml")?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(dir.path().join("log")).context("creating the log")?;
        let child = Command::new(prometheus_binary()?)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        let mut prometheus = Self { child, addr, dir };
        prometheus.wait_ready().await?;
        Ok(prometheus)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("polling prometheus")? {
                bail!(
                    "prometheus exited during startup ({status}):\n{}",
                    self.logs()
                );
            }
            if let Ok((200, _)) = http_get(self.addr, "/-/ready").await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "prometheus not ready after {READY_TIMEOUT:?}:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What Prometheus logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Errors mean it already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(jobs: &[ScrapeJob]) -> String {
    let mut text = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for job in jobs {
        let targets: Vec<String> = job.targets.iter().map(|t| format!("'{t}'")).collect();
        text.push_str(&format!(
            "  - job_name: '{}'\n    metrics_path: '{}'\n    static_configs:\n      - targets: [{}]\n",
            job.name,
            job.metrics_path,
            targets.join(", ")
        ));
    }
    text
}
