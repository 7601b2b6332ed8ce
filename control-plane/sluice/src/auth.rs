//! Who may call the admin API, and the TLS of the admin and xDS servers.
//!
//! ```text
//!  admin call ──► Caller { bearer token?, verified client certificate? }
//!                    │
//!                    ▼  AdminAuth::authorize(caller, Access::Read | Access::Write { rollout })
//!   Read and --admin-status-unauthenticated ......................... allowed
//!   nothing configured (no token file, no client CA, no kube) ....... refused, says which flag
//!   verified client certificate (--admin-client-ca) ................. allowed
//!   bearer == --admin-token-file (constant time) .................... allowed
//!   bearer and --admin-kube-auth: TokenReview, then SubjectAccessReview
//!       Read  = `list` rollouts.sluice.dev (cluster-wide)
//!       Write = `update` rollouts.sluice.dev/<name> in the rollout's namespace
//!   otherwise ........................................................ refused
//! ```
//!
//! Secure by default: a control plane started without any credentials refuses every admin call
//! (status too, unless `--admin-status-unauthenticated`), and its error names the flags.

mod kube_review;
#[cfg(test)]
mod tests;

use std::{path::Path, path::PathBuf};

use anyhow::Context as _;
use clap::Args;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use tonic::{
    Request, Status,
    transport::{Certificate, Identity, ServerTlsConfig},
};
use tracing::{info, warn};

pub use kube_review::KubeReviewer;

/// The admin and xDS servers' security flags (`sluice serve`).
#[derive(Debug, Args)]
pub struct SecurityArgs {
    /// File holding the admin API's bearer token (standalone mode). Callers send
    /// `authorization: Bearer <token>` (`sluice --token-file`). Trailing whitespace is ignored.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Check admin bearer tokens with the Kubernetes API (TokenReview, then SubjectAccessReview:
    /// `update` on rollouts.sluice.dev in the rollout's namespace for changes, `list` on
    /// rollouts.sluice.dev for status).
    #[arg(long, env = "SLUICE_ADMIN_KUBE_AUTH")]
    pub admin_kube_auth: bool,
    /// Serve the admin API over TLS with this certificate chain (PEM); needs --admin-tls-key.
    #[arg(long, env = "SLUICE_ADMIN_TLS_CERT", requires = "admin_tls_key")]
    pub admin_tls_cert: Option<PathBuf>,
    /// The admin TLS certificate's private key (PEM).
    #[arg(long, env = "SLUICE_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
    pub admin_tls_key: Option<PathBuf>,
    /// Mutual TLS for the admin API: a client certificate signed by this CA (PEM) authorises
    /// every call. Needs --admin-tls-cert.
    #[arg(long, env = "SLUICE_ADMIN_CLIENT_CA", requires = "admin_tls_cert")]
    pub admin_client_ca: Option<PathBuf>,
    /// Allow the read-only Status call without credentials (changes still need them).
    #[arg(long, env = "SLUICE_ADMIN_STATUS_UNAUTHENTICATED")]
    pub admin_status_unauthenticated: bool,
    /// Serve xDS over TLS with this certificate chain (PEM); needs --xds-tls-key.
    #[arg(long, env = "SLUICE_XDS_TLS_CERT", requires = "xds_tls_key")]
    pub xds_tls_cert: Option<PathBuf>,
    /// The xDS TLS certificate's private key (PEM).
    #[arg(long, env = "SLUICE_XDS_TLS_KEY", requires = "xds_tls_cert")]
    pub xds_tls_key: Option<PathBuf>,
    /// Require every Envoy to present a client certificate signed by this CA (PEM) on xDS.
    /// Needs --xds-tls-cert. (`sluice bootstrap --xds-cert/--xds-key/--xds-ca` is the Envoy side.)
    #[arg(long, env = "SLUICE_XDS_CLIENT_CA", requires = "xds_tls_cert")]
    pub xds_client_ca: Option<PathBuf>,
}

/// What a call wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// Status: every rollout and proxy, read-only.
    Read,
    /// A change to one rollout (`namespace/name`).
    Write { rollout: &'a str },
}

/// The credentials a call arrived with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The bearer token of the `authorization` header, if any.
    pub bearer: Option<String>,
    /// Whether the TLS layer verified a client certificate against `--admin-client-ca`.
    pub verified_certificate: bool,
}

impl Caller {
    /// The credentials of a tonic request (header, TLS session).
    pub fn of<T>(request: &Request<T>) -> Self {
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .map(str::to_owned);
        let verified_certificate = request.peer_certs().is_some_and(|certs| !certs.is_empty());
        Caller {
            bearer,
            verified_certificate,
        }
    }
}

/// The token of an `authorization` header value `Bearer <token>` (scheme case-insensitive).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Who was let in (for the log line of a change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    ClientCertificate,
    TokenFile,
    Kubernetes { username: String },
}

/// The outcome of the checks that need no I/O.
#[derive(Debug)]
pub enum Local {
    Allowed(Principal),
    /// A bearer token only the Kubernetes API can judge.
    AskKubernetes(String),
    Refused(Status),
}

/// The admin API's authentication and authorisation policy.
#[derive(Debug, Default)]
pub struct AdminAuth {
    /// SHA-256 of the token file's token: compared digest to digest, in constant time, so
    /// neither the token's bytes nor its length leak through timing.
    token_digest: Option<[u8; 32]>,
    /// A client certificate verified against the client CA authorises.
    mtls: bool,
    kube: Option<KubeReviewer>,
    status_unauthenticated: bool,
}

/// What the refusal says when no credentials are configured at all.
pub const NOT_CONFIGURED: &str = "the admin API has no credentials configured, so it refuses every \
     call: start `sluice serve` with --admin-token-file (a bearer token), --admin-client-ca \
     with --admin-tls-cert/--admin-tls-key (mutual TLS) or --admin-kube-auth (Kubernetes \
     TokenReview); --admin-status-unauthenticated allows read-only status without credentials";

impl AdminAuth {
    /// A policy from its parts (`token` as read from the token file).
    pub fn new(
        token: Option<&str>,
        mtls: bool,
        kube: Option<KubeReviewer>,
        status_unauthenticated: bool,
    ) -> Self {
        AdminAuth {
            token_digest: token.map(digest),
            mtls,
            kube,
            status_unauthenticated,
        }
    }

    /// From `sluice serve`'s flags: reads the token file, connects the Kubernetes client.
    pub async fn from_args(args: &SecurityArgs) -> anyhow::Result<Self> {
        let token = match &args.admin_token_file {
            Some(path) => Some(read_token_file(path)?),
            None => None,
        };
        let kube = if args.admin_kube_auth {
            let client = kube::Client::try_default().await.context(
                "connecting to the Kubernetes API for --admin-kube-auth (in-cluster config or kubeconfig)",
            )?;
            Some(KubeReviewer::new(client))
        } else {
            None
        };
        let auth = AdminAuth::new(
            token.as_deref(),
            args.admin_client_ca.is_some(),
            kube,
            args.admin_status_unauthenticated,
        );
        if !auth.any_credentials() {
            warn!("{NOT_CONFIGURED}");
        }
        Ok(auth)
    }

    fn any_credentials(&self) -> bool {
        self.token_digest.is_some() || self.mtls || self.kube.is_some()
    }

    /// The checks that need no I/O, in the order of the module docs.
    pub fn check_local(&self, caller: &Caller, access: Access<'_>) -> Local {
        if access == Access::Read && self.status_unauthenticated {
            return Local::Allowed(Principal::Anonymous);
        }
        if !self.any_credentials() {
            return Local::Refused(Status::unauthenticated(NOT_CONFIGURED));
        }
        if self.mtls && caller.verified_certificate {
            return Local::Allowed(Principal::ClientCertificate);
        }
        let Some(bearer) = &caller.bearer else {
            return Local::Refused(Status::unauthenticated(self.missing_credentials()));
        };
        if let Some(expected) = &self.token_digest
            && bool::from(digest(bearer).ct_eq(expected))
        {
            return Local::Allowed(Principal::TokenFile);
        }
        if self.kube.is_some() {
            return Local::AskKubernetes(bearer.clone());
        }
        Local::Refused(Status::unauthenticated(
            "the bearer token is not the admin token (--admin-token-file)",
        ))
    }

    fn missing_credentials(&self) -> String {
        let mut ways = Vec::new();
        if self.token_digest.is_some() || self.kube.is_some() {
            ways.push("a bearer token (`authorization: Bearer <token>`; sluice --token-file)");
        }
        if self.mtls {
            ways.push("a client certificate (sluice --cert/--key)");
        }
        format!(
            "the admin API needs credentials and this call has none: send {}",
            ways.join(" or ")
        )
    }

    /// Allows or refuses a call; a refusal is the gRPC status to return.
    pub async fn authorize(
        &self,
        caller: &Caller,
        access: Access<'_>,
    ) -> Result<Principal, Status> {
        match self.check_local(caller, access) {
            Local::Allowed(principal) => Ok(principal),
            Local::Refused(status) => Err(status),
            Local::AskKubernetes(token) => match &self.kube {
                Some(kube) => kube.review(&token, access).await,
                None => Err(Status::internal(
                    "no Kubernetes client for the token review",
                )),
            },
        }
    }

    /// [`AdminAuth::authorize`] for a tonic request, logging refusals and changes.
    pub async fn check<T>(&self, request: &Request<T>, access: Access<'_>) -> Result<(), Status> {
        let peer = request.remote_addr();
        match self.authorize(&Caller::of(request), access).await {
            Ok(principal) => {
                if let Access::Write { rollout } = access {
                    info!(rollout, ?principal, ?peer, "admin change authorised");
                }
                Ok(())
            }
            Err(status) => {
                warn!(?access, ?peer, code = ?status.code(), reason = status.message(), "admin call refused");
                Err(status)
            }
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token in a token file: its content without surrounding whitespace; empty is an error.
pub fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the admin token file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the admin token file {} is empty",
        path.display()
    );
    anyhow::ensure!(
        token.bytes().all(|b| b.is_ascii_graphic()),
        "the admin token file {} holds characters other than printable ASCII (not a header value)",
        path.display()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            warn!(file = %path.display(), "the admin token file is readable by other users; chmod 600 it");
        }
    }
    Ok(token.to_owned())
}

/// A server TLS configuration from PEM files: `cert`/`key` the server's identity, `client_ca`
/// (optional) the CA client certificates must chain to. `client_auth_optional` lets clients
/// without a certificate complete the handshake (to authenticate by token instead).
pub fn server_tls(
    what: &str,
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    client_auth_optional: bool,
) -> anyhow::Result<ServerTlsConfig> {
    let read = |path: &Path, name: &str| {
        std::fs::read(path).with_context(|| format!("reading the {what} {name} {}", path.display()))
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
        read(cert, "certificate")?,
        read(key, "key")?,
    ));
    if let Some(ca) = client_ca {
        config = config
            .client_ca_root(Certificate::from_pem(read(ca, "client CA")?))
            .client_auth_optional(client_auth_optional);
    }
    Ok(config)
}

impl SecurityArgs {
    /// The admin server's TLS, if configured. A client certificate is optional at the handshake
    /// only when a token may authenticate instead.
    pub fn admin_tls(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.admin_tls_cert, &self.admin_tls_key) else {
            return Ok(None);
        };
        let token_possible = self.admin_token_file.is_some() || self.admin_kube_auth;
        server_tls(
            "admin TLS",
            cert,
            key,
            self.admin_client_ca.as_deref(),
            token_possible || self.admin_status_unauthenticated,
        )
        .map(Some)
    }

    /// The xDS server's TLS, if configured; with a client CA every Envoy must present a
    /// certificate it signed.
    pub fn xds_tls(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.xds_tls_cert, &self.xds_tls_key) else {
            return Ok(None);
        };
        if self.xds_client_ca.is_none() {
            warn!(
                "xDS serves TLS without --xds-client-ca: any client that reaches it reads every rollout's configuration"
            );
        }
        server_tls("xDS TLS", cert, key, self.xds_client_ca.as_deref(), false).map(Some)
    }
}
