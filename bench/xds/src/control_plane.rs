//! The control plane under test: a separate `sluice serve` process (so its memory and CPU are its
//! own), killed when the handle drops — also when the benchmark fails.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
};
use tracing::debug;

use crate::procfs;

/// CPUs the control plane is pinned to (`taskset -c`, which execs it: same pid):
/// `BENCH_CONTROL_PLANE_CPUS`, default CPU 0 when there are two or more and `taskset` exists
/// (`make bench` runs the clients on CPU 1), so the two do not take turns on one core; empty:
/// not pinned.
fn pinning() -> Option<(PathBuf, String)> {
    let cpus = match std::env::var("BENCH_CONTROL_PLANE_CPUS") {
        Ok(cpus) => cpus,
        Err(_) if std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2) => "0".into(),
        Err(_) => return None,
    };
    if cpus.is_empty() {
        return None;
    }
    let taskset = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("taskset"))
        .find(|candidate| candidate.is_file())?;
    Some((taskset, cpus))
}

/// A running `sluice serve`, killed on drop.
#[derive(Debug)]
pub struct ControlPlane {
    child: Child,
    pid: u32,
    pub xds_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The admin API's bearer token (its file sits beside the log file).
    pub admin_token: String,
}

/// What to start the control plane with.
#[derive(Debug)]
pub struct Launch<'a> {
    pub binary: &'a Path,
    pub rollouts_file: &'a Path,
    pub wasm_file: &'a Path,
    /// The process's stdout and stderr go here.
    pub log_file: &'a Path,
    pub ready_timeout: Duration,
}

impl ControlPlane {
    pub async fn start(launch: Launch<'_>) -> anyhow::Result<Self> {
        if !launch.binary.is_file() {
            bail!(
                "control plane binary {} not found: build it with `cargo build --profile \
                 control-plane -p sluice` (or point BENCH_SLUICE_BIN at one)",
                launch.binary.display()
            );
        }
        let [xds_addr, admin_addr, http_addr, envoy_listener] = free_ports().await?;
        // The admin API refuses changes without credentials: a token for this run only.
        let admin_token = format!(
            "bench-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let token_file = launch.log_file.with_extension("admin-token");
        std::fs::write(&token_file, &admin_token)
            .with_context(|| format!("writing {}", token_file.display()))?;
        let log = std::fs::File::create(launch.log_file)
            .with_context(|| format!("creating {}", launch.log_file.display()))?;
        let mut command = match pinning() {
            Some((taskset, cpus)) => {
                let mut command = Command::new(taskset);
                command.args(["-c", &cpus]).arg(launch.binary);
                command
            }
            None => Command::new(launch.binary),
        };
        let mut child = command
            .arg("serve")
            .arg("--file")
            .arg(launch.rollouts_file)
            .arg("--wasm")
            .arg(launch.wasm_file)
            .args(["--xds-addr", &xds_addr.to_string()])
            .args(["--admin-addr", &admin_addr.to_string()])
            .args(["--http-addr", &http_addr.to_string()])
            .args(["--envoy-listener", &envoy_listener.to_string()])
            .arg("--admin-token-file")
            .arg(&token_file)
            // Per-connection info logs would be part of what we measure; keep warnings.
            .env("SLUICE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", launch.binary.display()))?;
        let pid = child
            .id()
            .context("the control plane exited before its pid was read")?;

        let deadline = Instant::now() + launch.ready_timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the control plane exited with {status} before it was ready; see {}",
                    launch.log_file.display()
                );
            }
            match http_status(http_addr, "/readyz").await {
                Ok(200) => break,
                Ok(code) => debug!(code, "control plane not ready yet"),
                Err(e) => debug!(error = %e, "control plane not answering yet"),
            }
            if Instant::now() > deadline {
                bail!(
                    "the control plane was not ready (GET http://{http_addr}/readyz → 200) within {:?}; see {}",
                    launch.ready_timeout,
                    launch.log_file.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(ControlPlane {
            child,
            pid,
            xds_addr,
            admin_addr,
            admin_token,
        })
    }

    pub fn memory(&self) -> anyhow::Result<procfs::Memory> {
        procfs::read_memory(self.pid)
    }

    pub fn cpu_ticks(&self) -> anyhow::Result<u64> {
        procfs::read_cpu_ticks(self.pid)
    }

    /// Fails if the process has exited (it must survive the whole run).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("the control plane exited with {status} during the benchmark"),
            None => Ok(()),
        }
    }

    /// Kills the process and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .await
            .context("stopping the control plane")
    }
}

/// Four distinct free loopback ports (bound together, then released for the child to take).
async fn free_ports() -> anyhow::Result<[SocketAddr; 4]> {
    let mut listeners = Vec::new();
    for _ in 0..4 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let mut addrs = [SocketAddr::from(([127, 0, 0, 1], 0)); 4];
    for (addr, listener) in addrs.iter_mut().zip(&listeners) {
        *addr = listener.local_addr()?;
    }
    Ok(addrs)
}

/// Status code of a plain HTTP/1.1 GET.
async fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status_line(&head)
}

fn parse_status_line(head: &[u8]) -> anyhow::Result<u16> {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().next().unwrap_or_default();
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP status line: {line:?}"))
}

/// The benchmark's scratch directory: the rollouts file, a stand-in module, the process logs.
pub fn work_dir(target: &Path) -> PathBuf {
    target.join("bench").join("xds-work")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n").unwrap(), 200);
        assert_eq!(
            parse_status_line(b"HTTP/1.1 503 Service Unavailable\r\nx: y").unwrap(),
            503
        );
        assert!(parse_status_line(b"").is_err());
        assert!(parse_status_line(b"garbage\r\n").is_err());
    }

    #[tokio::test]
    async fn a_missing_binary_is_reported_with_the_build_command() {
        let dir = std::env::temp_dir();
        let err = ControlPlane::start(Launch {
            binary: Path::new("/nonexistent/sluice"),
            rollouts_file: &dir,
            wasm_file: &dir,
            log_file: &dir.join("unused.log"),
            ready_timeout: Duration::from_secs(1),
        })
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("cargo build --profile control-plane -p sluice"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_process_that_exits_is_reported_and_free_ports_are_distinct() {
        let ports = free_ports().await.unwrap();
        let unique: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), 4);

        let dir = tempdir();
        let err = ControlPlane::start(Launch {
            binary: Path::new("/bin/false"),
            rollouts_file: &dir,
            wasm_file: &dir,
            log_file: &dir.join("false.log"),
            ready_timeout: Duration::from_secs(60),
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("exited"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-bench-xds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
