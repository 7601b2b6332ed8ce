//! When things go wrong: the control plane killed and restarted under load, invalid rollouts
//! files, a resource Envoy NACKs; and the filter module fetched over HTTP from the control plane.

use std::time::Duration;

use sluice_e2e::{Req, Upstream, check_binomial, parse_prometheus};

use crate::harness::{
    CANARY, ControlPlane, ECDS_TYPE, HOST, Ports, Proxy, ProxyOptions, RDS_TYPE, Rollout, STABLE,
    acked, acked_all, by_upstream, eventually,
};
use crate::load::Load;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_killed_and_restarted_under_load() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let rollout = Rollout::two(stable.addr(), canary.addr(), 50);
    let mut cp = ControlPlane::start(&rollout.yaml(), &[]).await?;
    let proxy = Proxy::start_serving(&cp, "survivor", ProxyOptions::default()).await?;
    let before = acked_all(&cp.wait_synced("survivor", |_| true).await?);

    let load = Load::start(proxy.listener, 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cp.kill()?;
    let at_kill = load.tally();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let while_dead = load.tally();
    assert_eq!(
        while_dead.failures(),
        0,
        "while the control plane is dead: {while_dead:?}"
    );
    // Still split by the last configuration.
    for version in [STABLE, CANARY] {
        assert!(
            while_dead.count(version) > at_kill.count(version),
            "{version} got no traffic after the kill: {at_kill:?} then {while_dead:?}"
        );
    }

    cp.restart().await?;
    // The proxy reconnects and ACKs exactly what it had: versions are content hashes.
    let after = cp.wait_synced("survivor", |_| true).await?;
    assert_eq!(acked_all(&after), before, "resynced to different versions");
    let resynced = load.tally();
    assert_eq!(resynced.failures(), 0, "after the restart: {resynced:?}");

    // The restarted control plane drives traffic: everything to the canary.
    cp.set_weight(100).await?;
    cp.wait_synced("survivor", |p| acked(p, RDS_TYPE) != before[RDS_TYPE])
        .await?;
    let responses = proxy.send(vec![Req::get(HOST); 500]).await?;
    let counts = by_upstream(&responses)?;
    assert_eq!(
        counts.get(CANARY),
        Some(&500),
        "after set-weight 100: {counts:?}"
    );

    let tally = load.stop();
    eprintln!("kill/restart under load: {tally:?}");
    assert_eq!(tally.failures(), 0, "{tally:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_file_is_not_pushed() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let rollout = Rollout::two(stable.addr(), canary.addr(), 10);
    let cp = ControlPlane::start(&rollout.yaml(), &[]).await?;
    let proxy = Proxy::start_serving(&cp, "invalid", ProxyOptions::default()).await?;
    let synced = cp.wait_synced("invalid", |_| true).await?;
    let good_snapshot = cp.status().await?.snapshot_version;
    let file = cp.file().display().to_string();

    let mut unknown_canary = rollout.clone();
    unknown_canary.canary = Some("0badc0ffee".into());
    let bad = [
        (
            "bad YAML",
            "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nspec: [unclosed\n".to_string(),
            "document 1",
        ),
        (
            "weight 150",
            rollout.clone().weight(150).yaml(),
            "setWeight",
        ),
        (
            "canary hash not in staticEndpoints",
            unknown_canary.yaml(),
            "currentPodHash",
        ),
    ];
    for (what, yaml, field) in bad {
        cp.write_file(&yaml)?;
        let error = eventually(what, Duration::from_secs(30), async || {
            let error = cp.status().await?.last_source_error;
            Ok((error.contains(field)).then_some(error))
        })
        .await?;
        eprintln!("{what}: {error}");
        assert!(
            error.contains(&file),
            "{what}: the error does not name the file: {error}"
        );
        let status = cp.status().await?;
        assert_eq!(status.snapshot_version, good_snapshot, "{what} was pushed");
        assert_eq!(
            cp.http("/readyz").await?.0,
            200,
            "{what}: not ready any more"
        );
        let cli = cp.cli(&["status"])?;
        assert!(
            cli.contains("SOURCE ERROR") && cli.contains(field),
            "{what}: {cli}"
        );
        // Traffic still split by the last good file.
        let counts = by_upstream(&proxy.send(vec![Req::get(HOST); 2_000]).await?)?;
        check_binomial(what, counts.get(CANARY).copied().unwrap_or(0), 2_000, 0.10)?;
    }

    // A fixed file is pushed and clears the error.
    let before = acked(&synced, RDS_TYPE);
    cp.write_file(&rollout.clone().weight(50).yaml())?;
    cp.wait_synced("invalid", |p| acked(p, RDS_TYPE) != before)
        .await?;
    assert_eq!(cp.status().await?.last_source_error, "");
    let counts = by_upstream(&proxy.send(vec![Req::get(HOST); 3_000]).await?)?;
    check_binomial(
        "fixed file",
        counts.get(CANARY).copied().unwrap_or(0),
        3_000,
        0.5,
    )?;
    Ok(())
}

/// Issue 7: a control plane restarted on an invalid file (`setWeight: 101`, written while it was
/// down) has no valid state. The Envoy that reconnects must be sent nothing — it keeps its
/// clusters and routes (before: an empty cluster set with the old routes, 503 on every request)
/// — while `/readyz`, `sluice status` and the log say why. Fixing the file then applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_an_invalid_file_pushes_nothing() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let rollout = Rollout::two(stable.addr(), canary.addr(), 50);
    let mut cp = ControlPlane::start(&rollout.yaml(), &[]).await?;
    let proxy = Proxy::start_serving(&cp, "keeper", ProxyOptions::default()).await?;
    let before = acked_all(&cp.wait_synced("keeper", |_| true).await?);
    let file = cp.file().display().to_string();

    cp.kill()?;
    cp.write_file(&rollout.clone().weight(101).yaml())?;
    cp.restart_not_ready().await?;

    // Not ready, and it says why: the file and the field.
    let (code, why) = cp.http("/readyz").await?;
    assert_eq!(code, 503, "{why}");
    assert!(
        why.contains(&file) && why.contains("document 1") && why.contains("setWeight"),
        "{why}"
    );
    let status = cp.status().await?;
    assert!(status.last_source_error.contains("setWeight"), "{status:?}");
    let cli = cp.cli(&["status"])?;
    assert!(
        cli.contains("SOURCE ERROR") && cli.contains("setWeight"),
        "{cli}"
    );
    let log = cp.log();
    assert!(
        log.lines().any(|l| l.contains("rollouts file rejected")
            && l.contains(&file)
            && l.contains("setWeight")),
        "{log}"
    );

    // The Envoy reconnects; give a push (there must be none) time to land.
    eventually("the reconnect", Duration::from_secs(60), async || {
        let status = cp.status().await?;
        Ok(status
            .proxies
            .iter()
            .any(|p| p.node_id == "keeper")
            .then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let responses = proxy.send(vec![Req::get(HOST); 200]).await?;
    let ok = responses.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok, 200,
        "of 200 requests answered 200 while the file is invalid"
    );
    let counts = by_upstream(&responses)?;
    assert!(
        counts.contains_key(STABLE) && counts.contains_key(CANARY),
        "still split by the last good configuration: {counts:?}"
    );

    let status = cp.status().await?;
    let keeper = status
        .proxies
        .iter()
        .find(|p| p.node_id == "keeper")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("keeper gone"))?;
    // What it reports holding is what it held before, and nothing else was sent.
    assert!(
        keeper.types.iter().all(|t| {
            before.get(&t.type_url) == Some(&t.acked_version) && t.sent_version == t.acked_version
        }),
        "nothing is sent before a valid state: {keeper:#?} (before: {before:#?})"
    );
    // Fixed: everything to the canary; ready again.
    cp.write_file(&rollout.clone().weight(100).yaml())?;
    cp.wait_synced("keeper", |p| acked(p, RDS_TYPE) != before[RDS_TYPE])
        .await?;
    assert_eq!(cp.http("/readyz").await?.0, 200);
    assert_eq!(cp.status().await?.last_source_error, "");
    let responses = proxy.send(vec![Req::get(HOST); 200]).await?;
    let counts = by_upstream(&responses)?;
    assert_eq!(counts.get(CANARY), Some(&200), "after the fix: {counts:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_filter_config_is_reported() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let rollout = Rollout::two(stable.addr(), canary.addr(), 50);
    let cp = ControlPlane::start(
        &rollout.yaml(),
        &[
            "--envoy-wasm-path".into(),
            "/nonexistent/sluice_filter.wasm".into(),
        ],
    )
    .await?;
    let mut proxy = Proxy::start(&cp, "nacker", ProxyOptions::default()).await?;

    let nack = eventually(
        "a NACK of the ECDS resource",
        Duration::from_secs(60),
        async || {
            let status = cp.status().await?;
            Ok(status
                .proxies
                .into_iter()
                .find(|p| p.node_id == "nacker")
                .and_then(|p| p.types.into_iter().find(|t| t.type_url == ECDS_TYPE))
                .filter(|t| t.nacks > 0 && !t.last_nack.is_empty()))
        },
    )
    .await?;
    eprintln!("ECDS NACK reported: {nack:?}");
    assert!(nack.acked_version.is_empty() || nack.acked_version != nack.last_nack_version);

    let cli = cp.cli(&["status"])?;
    assert!(
        cli.contains("nacker") && cli.contains("NACK("),
        "sluice status: {cli}"
    );

    let (_, metrics) = cp.http("/metrics").await?;
    let nacks: f64 = parse_prometheus(&metrics)
        .iter()
        .filter(|s| s.name.starts_with("sluice_xds_nacks") && s.mentions("TypedExtensionConfig"))
        .map(|s| s.value)
        .sum();
    assert!(
        nacks > 0.0,
        "no sluice_xds_nacks for the ECDS type:\n{metrics}"
    );

    // What Envoy does with a listener whose filter config never arrived: see the report.
    let outcome = sluice_e2e::send_one(proxy.listener, Req::get(HOST)).await;
    eprintln!(
        "request through the Envoy that NACKed the filter config: {:?}",
        outcome
            .as_ref()
            .map(|r| (r.status, r.upstream().map(str::to_owned), r.body.clone()))
    );
    proxy.envoy.ensure_running()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_module_fetched_from_the_control_plane() -> anyhow::Result<()> {
    let stable = Upstream::start(STABLE).await?;
    let canary = Upstream::start(CANARY).await?;
    let mut rollout = Rollout::two(stable.addr(), canary.addr(), 50);
    rollout.header_route = true;
    let ports = Ports::free()?;
    let url = format!("http://{}/sluice_filter.wasm", ports.http);
    let cp = ControlPlane::start_on(ports, &rollout.yaml(), &["--wasm-url".into(), url]).await?;
    let options = ProxyOptions {
        wasm_server: true,
        ..Default::default()
    };
    let mut proxy = Proxy::start_serving(&cp, "remote", options).await?;
    cp.wait_synced("remote", |_| true).await?;

    let counts = by_upstream(&proxy.send(vec![Req::get(HOST); 5_000]).await?)?;
    check_binomial(
        "remote module, 50 %",
        counts.get(CANARY).copied().unwrap_or(0),
        5_000,
        0.5,
    )?;
    let routed = vec![Req::get(HOST).header("x-canary", "1"); 300];
    let counts = by_upstream(&proxy.send(routed).await?)?;
    assert_eq!(counts.get(CANARY), Some(&300), "{counts:?}");
    // The module runs (its decision counters count) and was fetched over HTTP.
    let decisions = proxy
        .wait_decisions(|d| d.values().sum::<u64>() >= 5_300)
        .await?;
    assert_eq!(
        decisions.get(&(CANARY.to_string(), "header".to_string())),
        Some(&300),
        "{decisions:?}"
    );
    let fetched = proxy.envoy.stat("wasm.remote_load_fetch_successes").await?;
    eprintln!("wasm.remote_load_fetch_successes = {fetched:?}");
    assert!(fetched.unwrap_or(0) >= 1, "Envoy did not fetch the module");
    Ok(())
}
