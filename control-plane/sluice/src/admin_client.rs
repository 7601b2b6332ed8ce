//! The CLI's side of admin authentication: a bearer token (`--token-file`, or `SLUICE_TOKEN`)
//! sent on every call, and TLS (`https://` admin address, `--ca-cert`; `--cert`/`--key` for
//! mutual TLS).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use sluice_proto::admin::v1::admin_client::AdminClient;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

/// How the CLI authenticates to the admin API. The flags are global: `sluice rollouts --admin URL
/// --token-file F promote demo` and `sluice rollouts promote demo --admin URL --token-file F` are
/// the same.
#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// File holding the admin bearer token (the server's --admin-token-file, or a Kubernetes
    /// token from `kubectl create token`).
    #[arg(long, env = "SLUICE_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// The bearer token itself (prefer SLUICE_TOKEN or --token-file: arguments are visible
    /// to other local users).
    #[arg(
        long,
        env = "SLUICE_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file",
        global = true
    )]
    pub token: Option<String>,
    /// CA certificate (PEM) that signed the admin server's certificate (for https://).
    #[arg(long, env = "SLUICE_ADMIN_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(long, env = "SLUICE_ADMIN_CERT", requires = "key", global = true)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "SLUICE_ADMIN_KEY", requires = "cert", global = true)]
    pub key: Option<PathBuf>,
    /// Name to verify the server certificate against (default: the admin address's host).
    #[arg(long, env = "SLUICE_ADMIN_TLS_SERVER_NAME", global = true)]
    pub tls_server_name: Option<String>,
}

/// Adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Clone, Debug)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// A token as a header value; refuses characters a header cannot carry.
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        let value = match token {
            Some(token) => {
                let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
                    .parse()
                    .context("the admin token is not a valid header value")?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Bearer(value))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// An admin client that presents the credentials.
pub type Client = AdminClient<InterceptedService<Channel, Bearer>>;

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

impl CredentialArgs {
    /// The bearer token from --token / SLUICE_TOKEN or --token-file, if any.
    pub fn bearer(&self) -> anyhow::Result<Bearer> {
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.trim().to_owned()),
            (None, Some(path)) => Some(crate::auth::read_token_file(path)?),
            (None, None) => None,
        };
        Bearer::new(token.as_deref())
    }

    /// Connects to `address` (http:// or https://) with these credentials.
    pub async fn connect(&self, address: &str) -> anyhow::Result<Client> {
        let mut endpoint = Endpoint::from_shared(address.to_owned())
            .with_context(|| format!("the admin address {address:?} is not a URL"))?;
        let tls_flags = self.ca_cert.is_some() || self.cert.is_some();
        if address.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.ca_cert {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca, "admin CA certificate")?));
            }
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "client certificate")?,
                    read(key, "client key")?,
                ));
            }
            if let Some(name) = &self.tls_server_name {
                tls = tls.domain_name(name.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .context("the admin API's TLS configuration")?;
        } else {
            anyhow::ensure!(
                !tls_flags,
                "--ca-cert/--cert need an https:// admin address (got {address})"
            );
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to the admin API at {address}"))?;
        Ok(AdminClient::with_interceptor(channel, self.bearer()?))
    }
}
