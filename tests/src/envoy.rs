//! A real Envoy process: started from a config string, ready when admin `/ready` says LIVE,
//! killed on drop. Also `envoy --mode validate` and "start it and expect it to exit".

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::client::http_get;
use crate::paths::envoy_binary;
use crate::stats::{CounterKey, sluice_counters};

/// How long a starting Envoy may take to become LIVE (V8 compiles the module per worker; the
/// machine is shared and noisy).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the filter's batched counters may take to show up.
const COUNTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for starting Envoy.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// Worker threads (`--concurrency`).
    pub concurrency: usize,
    /// `--log-level`.
    pub log_level: String,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        Self {
            concurrency: 2,
            log_level: "warn".to_string(),
        }
    }
}

/// A running Envoy. Dropping it kills the process and removes its files.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    admin: SocketAddr,
    dir: TempDir,
}

/// The outcome of an Envoy run that was expected to end by itself.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    /// Everything Envoy wrote (log file, stdout, stderr).
    pub output: String,
}

impl Envoy {
    /// The process id (a test may pause it: SIGSTOP, SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts Envoy with default options. The config must contain an `admin` section (port 0 is
    /// fine: the real address is read back through `--admin-address-path`).
    pub async fn start(config_yaml: &str) -> anyhow::Result<Self> {
        Self::start_with(config_yaml, &EnvoyOptions::default()).await
    }

    /// Starts Envoy and waits until admin `/ready` answers LIVE.
    pub async fn start_with(config_yaml: &str, options: &EnvoyOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-e2e-envoy-")
            .tempdir()
            .context("creating a temp dir for Envoy")?;
        let child = spawn(dir.path(), config_yaml, options)?;
        let mut envoy = Self {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        envoy.admin = envoy.wait_ready().await?;
        Ok(envoy)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<SocketAddr> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let address_file = self.dir.path().join("admin-address");
        let mut last_state = String::from("no admin address yet");
        loop {
            if let Some(status) = self.child.try_wait().context("polling Envoy")? {
                bail!(
                    "Envoy exited during startup ({status}); its output:\n{}",
                    self.logs()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "Envoy not LIVE after {READY_TIMEOUT:?} ({last_state}); its output:\n{}",
                    self.logs()
                );
            }
            if let Ok(text) = std::fs::read_to_string(&address_file)
                && let Ok(admin) = text.trim().parse::<SocketAddr>()
            {
                match http_get(admin, "/ready").await {
                    Ok((200, body)) if body.trim() == "LIVE" => return Ok(admin),
                    Ok((status, body)) => last_state = format!("/ready: {status} {}", body.trim()),
                    Err(error) => last_state = format!("/ready: {error:#}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// GET an admin path (e.g. `/clusters`); fails on a non-200 answer or if Envoy died.
    pub async fn admin_get(&mut self, path: &str) -> anyhow::Result<String> {
        let result = http_get(self.admin, path).await;
        self.ensure_running()?;
        let (status, body) = result.with_context(|| format!("admin GET {path}"))?;
        if status != 200 {
            bail!("admin GET {path}: status {status}: {body}");
        }
        Ok(body)
    }

    /// The admin `/stats/prometheus` text.
    pub async fn stats_prometheus(&mut self) -> anyhow::Result<String> {
        self.admin_get("/stats/prometheus").await
    }

    /// The filter's request counters once their sum reaches `total`. The filter batches counts
    /// and adds them to Envoy's counters on a timer (about every second), so a scrape right after
    /// the traffic may not have them all yet.
    pub async fn sluice_counters_reaching(
        &mut self,
        total: u64,
    ) -> anyhow::Result<BTreeMap<CounterKey, u64>> {
        let deadline = tokio::time::Instant::now() + COUNTER_TIMEOUT;
        loop {
            let counters = sluice_counters(&self.stats_prometheus().await?)?;
            if counters.values().sum::<u64>() >= total {
                return Ok(counters);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the sluice counters did not reach {total} in {COUNTER_TIMEOUT:?}: {counters:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The value of one counter or gauge from admin `/stats` (e.g.
    /// `listener_manager.lds.update_rejected`), or None when Envoy does not have it.
    pub async fn stat(&mut self, name: &str) -> anyhow::Result<Option<u64>> {
        let body = self
            .admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")))
            .await?;
        for line in body.lines() {
            if let Some((key, value)) = line.split_once(": ")
                && key == name
            {
                let value = value
                    .trim()
                    .parse()
                    .with_context(|| format!("stat {name}: value {value:?} is not a number"))?;
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// The bound address of the listener called `name` (useful when the config says port 0).
    pub async fn listener_addr(&mut self, name: &str) -> anyhow::Result<SocketAddr> {
        let body = self.admin_get("/listeners?format=json").await?;
        let json: serde_json::Value =
            serde_json::from_str(&body).context("admin /listeners is not JSON")?;
        let statuses = json["listener_statuses"]
            .as_array()
            .context("admin /listeners: no listener_statuses")?;
        for status in statuses {
            if status["name"] == name {
                let socket = &status["local_address"]["socket_address"];
                let address = socket["address"]
                    .as_str()
                    .context("listener without an address")?;
                let port = socket["port_value"]
                    .as_u64()
                    .context("listener without a port")?;
                return format!("{address}:{port}")
                    .parse()
                    .with_context(|| format!("listener {name}: bad address {address}:{port}"));
            }
        }
        bail!("Envoy has no listener named {name:?}: {body}")
    }

    /// Fails (with Envoy's output) if the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("polling Envoy")? {
            bail!(
                "Envoy exited unexpectedly ({status}); its output:\n{}",
                self.logs()
            );
        }
        Ok(())
    }

    /// Envoy's log file alone (grows only by appending, so offsets into it stay valid).
    pub fn log_file(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// Everything Envoy has written so far (log file, stdout, stderr).
    pub fn logs(&self) -> String {
        collect_output(self.dir.path())
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if let Err(error) = self.child.kill() {
            tracing::debug!(%error, "killing Envoy (probably already exited)");
        }
        if let Err(error) = self.child.wait() {
            tracing::warn!(%error, "waiting for Envoy to exit");
        }
    }
}

/// Runs Envoy on a config that should make it exit by itself (e.g. a rejected policy) and
/// returns how it ended. Fails if it becomes LIVE or is still running after `timeout`.
pub async fn run_until_exit(config_yaml: &str, timeout: Duration) -> anyhow::Result<Exited> {
    let dir = tempfile::Builder::new()
        .prefix("sluice-e2e-envoy-")
        .tempdir()
        .context("creating a temp dir for Envoy")?;
    let mut child = KillOnDrop(spawn(dir.path(), config_yaml, &EnvoyOptions::default())?);
    let deadline = tokio::time::Instant::now() + timeout;
    let address_file = dir.path().join("admin-address");
    loop {
        if let Some(status) = child.0.try_wait().context("polling Envoy")? {
            return Ok(Exited {
                status,
                output: collect_output(dir.path()),
            });
        }
        if let Ok(text) = std::fs::read_to_string(&address_file)
            && let Ok(admin) = text.trim().parse::<SocketAddr>()
            && let Ok((200, body)) = http_get(admin, "/ready").await
            && body.trim() == "LIVE"
        {
            bail!(
                "Envoy became LIVE although it was expected to exit; its output:\n{}",
                collect_output(dir.path())
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "Envoy still running after {timeout:?}; its output:\n{}",
                collect_output(dir.path())
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `envoy --mode validate` on a config; returns the exit status and output.
pub fn validate(config_yaml: &str) -> anyhow::Result<Exited> {
    let dir = tempfile::Builder::new()
        .prefix("sluice-e2e-validate-")
        .tempdir()
        .context("creating a temp dir for Envoy")?;
    let config = dir.path().join("envoy.yaml");
    std::fs::write(&config, config_yaml).context("writing the Envoy config")?;
    validate_file(&config)
}

/// Runs `envoy --mode validate -c <path>`.
pub fn validate_file(config: &Path) -> anyhow::Result<Exited> {
    let output = Command::new(envoy_binary()?)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .context("running envoy --mode validate")?;
    Ok(Exited {
        status: output.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Errors mean the process already exited, which is what we want.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, config_yaml: &str, options: &EnvoyOptions) -> anyhow::Result<Child> {
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, config_yaml).context("writing the Envoy config")?;
    let stdout = File::create(dir.join("stdout")).context("creating Envoy's stdout file")?;
    let stderr = File::create(dir.join("stderr")).context("creating Envoy's stderr file")?;
    let binary = envoy_binary()?;
    Command::new(&binary)
        .arg("-c")
        .arg(&config)
        .args(["--concurrency", &options.concurrency.to_string()])
        .args(["--log-level", &options.log_level])
        // Concurrent tests each get their own shared-memory region.
        .arg("--use-dynamic-base-id")
        .arg("--log-path")
        .arg(dir.join("envoy.log"))
        .arg("--admin-address-path")
        .arg(dir.join("admin-address"))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

fn collect_output(dir: &Path) -> String {
    let mut output = String::new();
    for name in ["envoy.log", "stdout", "stderr"] {
        let path: PathBuf = dir.join(name);
        if let Ok(text) = std::fs::read_to_string(&path)
            && !text.is_empty()
        {
            output.push_str(&format!("--- {name} ---\n{text}"));
        }
    }
    output
}
