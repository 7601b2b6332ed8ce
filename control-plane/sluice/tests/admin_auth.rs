//! The admin API is authenticated: `sluice serve` as a real process, called over gRPC and through
//! the `sluice` CLI without credentials, with wrong ones and with the right ones (bearer token
//! file, mutual TLS). A refused call changes nothing.
#![allow(clippy::unwrap_used)]

#[path = "pki/mod.rs"]
mod pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sluice_e2e::{client::http_get, free_port};
use sluice_proto::admin::v1::{
    RolloutRef, SetWeightRequest, StatusRequest, StatusResponse, admin_client::AdminClient,
};
use tonic::{
    Code, Request,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

const ROLLOUT: &str = "default/demo";
const TOKEN: &str = "correct-horse-battery-staple";

const ROLLOUTS: &str = r#"apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: demo, namespace: default}
spec:
  hosts: [demo.local]
  staticEndpoints:
    "aaa111": ["127.0.0.1:9"]
    "bbb222": ["127.0.0.1:10"]
  strategy:
    canary:
      steps:
        - setWeight: 30
        - pause: {}
status: {stableRS: "aaa111", currentPodHash: "bbb222", currentStepIndex: 1}
"#;

/// `sluice serve` with a rollout at 30 %, killed on drop.
struct Server {
    child: Child,
    admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts it with `args` (auth flags; `{dir}` in an argument is the server's temp dir) and
    /// waits for /readyz.
    async fn start(args: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("rollouts.yaml"), ROLLOUTS)?;
        std::fs::write(dir.path().join("module.wasm"), b"\0asm")?;
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n"))?;
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let xds = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = std::fs::File::create(dir.path().join("sluice.log"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--file")
            .arg(dir.path().join("rollouts.yaml"))
            .arg("--wasm")
            .arg(dir.path().join("module.wasm"))
            .args(["--xds-addr", &xds.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--http-addr", &http.to_string()])
            .args(
                args.iter()
                    .map(|a| a.replace("{dir}", &dir.path().display().to_string())),
            )
            .env_remove("SLUICE_ADMIN_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting sluice serve")?;
        let mut server = Server { child, admin, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("sluice serve exited ({status}): {}", server.log());
            }
            if let Ok((200, _)) = http_get(http, "/readyz").await {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("sluice serve not ready: {}", server.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sluice.log")).unwrap_or_default()
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    async fn plain(&self) -> anyhow::Result<AdminClient<Channel>> {
        Ok(AdminClient::connect(format!("http://{}", self.admin)).await?)
    }

    /// Runs the CLI against this server with `args` after the subcommand's own.
    fn cli(&self, command: &[&str], url: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(command).args(["--admin", url]).args(extra);
        for var in ["SLUICE_TOKEN", "SLUICE_TOKEN_FILE", "SLUICE_ADMIN"] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("running the sluice CLI")
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn set_weight(bp: u32) -> SetWeightRequest {
    SetWeightRequest {
        rollout: ROLLOUT.into(),
        weight_bp: bp,
    }
}

fn demo() -> RolloutRef {
    RolloutRef {
        rollout: ROLLOUT.into(),
    }
}

/// The demo rollout's (canary weight, overridden) and the snapshot version.
fn weight_of(status: &StatusResponse) -> (u32, bool, String) {
    let r = status
        .rollouts
        .iter()
        .find(|r| r.name == ROLLOUT)
        .expect("the demo rollout");
    (
        r.canary_weight_bp,
        r.overridden,
        status.snapshot_version.clone(),
    )
}

/// Every mutating call with `token` is refused with `code`.
async fn all_changes_refused(
    client: &mut AdminClient<Channel>,
    token: Option<&str>,
    code: Code,
) -> anyhow::Result<()> {
    let errors = [
        client
            .set_weight(with_token(set_weight(10_000), token))
            .await
            .err(),
        client.promote(with_token(demo(), token)).await.err(),
        client.abort(with_token(demo(), token)).await.err(),
    ];
    for (call, error) in ["SetWeight", "Promote", "Abort"].iter().zip(errors) {
        let Some(status) = error else {
            bail!("{call} with token {token:?} was allowed");
        };
        anyhow::ensure!(status.code() == code, "{call}: {status:?}");
    }
    Ok(())
}

#[tokio::test]
async fn without_configured_credentials_every_call_is_refused_and_says_how() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let mut client = server.plain().await?;
    let status = client
        .status(with_token(StatusRequest {}, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("--admin-token-file"),
        "{status:?}"
    );
    all_changes_refused(&mut client, None, Code::Unauthenticated).await?;
    all_changes_refused(&mut client, Some(TOKEN), Code::Unauthenticated).await?;

    // Status opened separately: readable, and the refused changes changed nothing.
    let server = Server::start(&["--admin-status-unauthenticated"]).await?;
    let mut client = server.plain().await?;
    let before = weight_of(&client.status(StatusRequest {}).await?.into_inner());
    assert_eq!(before.0, 3000);
    all_changes_refused(&mut client, None, Code::Unauthenticated).await?;
    let after = weight_of(&client.status(StatusRequest {}).await?.into_inner());
    assert_eq!(before, after);
    let cli = server.cli(
        &["set-weight", ROLLOUT, "100"],
        &format!("http://{}", server.admin),
        &[],
        &[],
    );
    assert!(!cli.status.success());
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(stderr.contains("--admin-token-file"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn a_token_file_admits_only_its_token() -> anyhow::Result<()> {
    let server = Server::start(&["--admin-token-file", "{dir}/token"]).await?;
    let mut client = server.plain().await?;
    for token in [None, Some("wrong"), Some("correct-horse")] {
        let status = client
            .status(with_token(StatusRequest {}, token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
        all_changes_refused(&mut client, token, Code::Unauthenticated).await?;
    }
    let status = |client: &mut AdminClient<Channel>| {
        let mut client = client.clone();
        async move {
            anyhow::Ok(weight_of(
                &client
                    .status(with_token(StatusRequest {}, Some(TOKEN)))
                    .await?
                    .into_inner(),
            ))
        }
    };
    let before = status(&mut client).await?;
    assert_eq!(
        (before.0, before.1),
        (3000, false),
        "refused calls changed it"
    );

    let changed = client
        .set_weight(with_token(set_weight(7500), Some(TOKEN)))
        .await?
        .into_inner();
    assert_eq!(changed.canary_weight_bp, 7500);
    assert_eq!(status(&mut client).await?.0, 7500);

    // The CLI: without a token refused; --token-file and SLUICE_TOKEN work.
    let url = format!("http://{}", server.admin);
    let refused = server.cli(&["set-weight", ROLLOUT, "100"], &url, &[], &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("bearer token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let wrong = server.cli(
        &["abort", ROLLOUT],
        &url,
        &[],
        &[("SLUICE_TOKEN", "not-it")],
    );
    assert!(!wrong.status.success());
    assert_eq!(status(&mut client).await?.0, 7500);
    let token_file = server.token_file().display().to_string();
    let ok = server.cli(
        &["set-weight", ROLLOUT, "20"],
        &url,
        &["--token-file", &token_file],
        &[],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(status(&mut client).await?.0, 2000);
    let ok = server.cli(&["status"], &url, &[], &[("SLUICE_TOKEN", TOKEN)]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("weight=20.00%"));
    Ok(())
}

async fn tls_client(
    server: &Server,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<AdminClient<Channel>> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca)?));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert)?,
            std::fs::read(key)?,
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{}", server.admin))?
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(AdminClient::new(channel))
}

#[tokio::test]
async fn mutual_tls_admits_only_a_certificate_from_the_client_ca() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    let pki = pki::Pki::generate(certs.path())?;
    let path = |p: &Path| p.display().to_string();
    let server = Server::start(&[
        "--admin-tls-cert",
        &path(&pki.server_cert),
        "--admin-tls-key",
        &path(&pki.server_key),
        "--admin-client-ca",
        &path(&pki.ca),
    ])
    .await?;

    // No certificate or a stranger's: the handshake fails, so no call gets through.
    for identity in [
        None,
        Some((pki.rogue_cert.as_path(), pki.rogue_key.as_path())),
    ] {
        let refused = match tls_client(&server, &pki.ca, identity).await {
            Err(_) => true,
            Ok(mut client) => client.set_weight(set_weight(10_000)).await.is_err(),
        };
        assert!(
            refused,
            "a call without a valid client certificate got through"
        );
    }
    // Plaintext gets nothing either.
    if let Ok(mut client) = server.plain().await {
        assert!(client.set_weight(set_weight(10_000)).await.is_err());
    }

    let mut client = tls_client(
        &server,
        &pki.ca,
        Some((pki.client_cert.as_path(), pki.client_key.as_path())),
    )
    .await?;
    let before = weight_of(&client.status(StatusRequest {}).await?.into_inner());
    assert_eq!(
        (before.0, before.1),
        (3000, false),
        "refused calls changed it"
    );
    let changed = client.set_weight(set_weight(5000)).await?.into_inner();
    assert_eq!(changed.canary_weight_bp, 5000);

    // The CLI with its TLS flags.
    let url = format!("https://{}", server.admin);
    let ca = path(&pki.ca);
    let without = server.cli(&["promote", ROLLOUT], &url, &["--ca-cert", &ca], &[]);
    assert!(!without.status.success());
    let ok = server.cli(
        &["set-weight", ROLLOUT, "40"],
        &url,
        &[
            "--ca-cert",
            &ca,
            "--cert",
            &path(&pki.client_cert),
            "--key",
            &path(&pki.client_key),
        ],
        &[],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("weight=40.00%"));
    Ok(())
}
