//! xDS over mutual TLS: a real Envoy bootstrapped with `sluice bootstrap --xds-ca/--xds-cert/
//! --xds-key` connects, ACKs everything and serves traffic; Envoys without a client certificate,
//! or with one from another CA, never register and serve nothing. Certificates are generated at
//! test time.

use std::time::Duration;

use sluice_e2e::{Req, Upstream};

use crate::harness::{
    CANARY, ControlPlane, HOST, Proxy, ProxyOptions, Rollout, STABLE, by_upstream,
};
use crate::pki::Pki;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gets_xds_only_with_a_client_certificate_from_the_ca() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    let pki = Pki::generate(certs.path())?;
    let path = |p: &std::path::Path| p.display().to_string();
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let rollout = Rollout::two(stable.addr(), canary.addr(), 50);
    let cp = ControlPlane::start(
        &rollout.yaml(),
        &[
            "--xds-tls-cert".into(),
            path(&pki.server_cert),
            "--xds-tls-key".into(),
            path(&pki.server_key),
            "--xds-client-ca".into(),
            path(&pki.ca),
        ],
    )
    .await?;

    let tls = |cert: &std::path::Path, key: &std::path::Path| {
        vec![
            "--xds-ca".to_string(),
            path(&pki.ca),
            "--xds-cert".into(),
            path(cert),
            "--xds-key".into(),
            path(key),
        ]
    };
    // Outsiders: a plaintext Envoy, one with TLS but no certificate, one with a certificate
    // from another CA. They start together (each goes LIVE only after its initial-fetch
    // timeouts) with the one that holds a valid certificate.
    let (no_cert, rogue) = (
        vec!["--xds-ca".to_string(), path(&pki.ca)],
        tls(&pki.rogue_cert, &pki.rogue_key),
    );
    let valid = tls(&pki.client_cert, &pki.client_key);
    let options = ProxyOptions::default();
    let (plain, no_cert, rogue, mut proxy) = tokio::try_join!(
        Proxy::start_with(&cp, "plain", options, &[]),
        Proxy::start_with(&cp, "no-cert", options, &no_cert),
        Proxy::start_with(&cp, "rogue", options, &rogue),
        Proxy::start_with(&cp, "mtls", options, &valid),
    )?;
    let mut rejected = [plain, no_cert, rogue];
    proxy.wait_serving().await?;
    cp.wait_synced("mtls", |_| true).await?;
    let responses = proxy
        .send((0..200).map(|_| Req::get(HOST)).collect())
        .await?;
    let counts = by_upstream(&responses)?;
    assert!(
        counts.get(STABLE).copied().unwrap_or(0) > 0
            && counts.get(CANARY).copied().unwrap_or(0) > 0,
        "a 50 % split over mTLS xDS reached one version only: {counts:?}"
    );

    // By now the outsiders have had every chance to connect (they retry every ~second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = cp.status().await?;
    let nodes: Vec<&str> = status.proxies.iter().map(|p| p.node_id.as_str()).collect();
    assert_eq!(
        nodes,
        ["mtls"],
        "only the Envoy with a valid certificate registers"
    );
    for proxy in &mut rejected {
        proxy.envoy.ensure_running()?;
        // Asked of the Envoy itself: a connection to its would-be listener port proves nothing,
        // since another process may bind that port once this Envoy never does (a run met
        // another Envoy's admin page there).
        let listeners = proxy.envoy.admin_get("/listeners").await?;
        assert!(
            !listeners.contains(&proxy.listener.to_string()),
            "Envoy {} has a listener without valid xDS credentials: {listeners}",
            proxy.node_id
        );
        let clusters = proxy.envoy.admin_get("/clusters").await?;
        assert!(
            !clusters.contains(STABLE) && !clusters.contains(CANARY),
            "Envoy {} received clusters: {clusters}",
            proxy.node_id
        );
    }
    Ok(())
}
