//! Certificates made at test time (rcgen): a CA, a server certificate for 127.0.0.1/localhost,
//! a client certificate it signed, and a client certificate from an unrelated CA.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM files under one directory.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Signed by another CA: must be refused.
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

fn ca(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    dir: &Path,
    stem: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, stem);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).context("writing a certificate")?;
    std::fs::write(&key_path, key.serialize_pem()).context("writing a key")?;
    Ok((cert_path, key_path))
}

impl Pki {
    /// Generates everything into `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<Self> {
        let authority = ca("sluice test CA")?;
        let rogue_authority = ca("someone else's CA")?;
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, authority.pem()).context("writing the CA")?;
        let (server_cert, server_key) = leaf(
            &authority,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
            dir,
            "server",
        )?;
        let (client_cert, client_key) = leaf(
            &authority,
            &["envoy.test"],
            ExtendedKeyUsagePurpose::ClientAuth,
            dir,
            "client",
        )?;
        let (rogue_cert, rogue_key) = leaf(
            &rogue_authority,
            &["envoy.test"],
            ExtendedKeyUsagePurpose::ClientAuth,
            dir,
            "rogue",
        )?;
        Ok(Pki {
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
            rogue_cert,
            rogue_key,
        })
    }
}
