//! Invalid policies in a real Envoy: `envoy --mode validate` fails with the filter's message, a
//! starting Envoy exits with it, and a running Envoy rejects the update (file-based LDS), keeps
//! serving the last good policy and never crashes.
//!
//! What Envoy 1.40 does (checked here): validate mode instantiates the Wasm VM and calls
//! `on_configure`, so a policy error fails validation; the module file must exist for that.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::json;
use sluice_e2e::config::LISTENER;
use sluice_e2e::demo::{
    CANARY, CONNECTIONS, HOST, STABLE, Upstreams, count, header_routes, invalid_policies, policy,
    repeat,
};
use sluice_e2e::{Envoy, Req, free_port, send_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policies_fail_validation_with_the_filters_message() -> anyhow::Result<()> {
    let upstreams = Upstreams::start().await?;
    let marker = sluice_e2e::filter_module()?.log_marker();
    for (what, policy, needle) in invalid_policies() {
        let outcome = sluice_e2e::validate(&upstreams.config(Some(&policy), [50, 50, 0])?)?;
        assert!(!outcome.status.success(), "{what}: validate accepted it");
        let filter_line = outcome
            .output
            .lines()
            .find(|line| line.contains(marker))
            .with_context(|| format!("{what}: no filter log line in:\n{}", outcome.output))?;
        assert!(
            filter_line.contains(needle),
            "{what}: filter message lacks {needle:?}: {filter_line}"
        );
        assert!(
            filter_line.contains("default/demo") || filter_line.contains("policy JSON"),
            "{what}: filter message names no rollout: {filter_line}"
        );
    }
    // The valid policy passes.
    let outcome = sluice_e2e::validate(
        &upstreams.config(Some(&policy(1000, header_routes())), [50, 50, 0])?,
    )?;
    assert!(
        outcome.status.success(),
        "valid policy rejected:\n{}",
        outcome.output
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policy_stops_envoy_at_startup_with_the_message() -> anyhow::Result<()> {
    let upstreams = Upstreams::start().await?;
    for (what, policy, needle) in invalid_policies() {
        let config = upstreams.config(Some(&policy), [50, 50, 0])?;
        let exited = sluice_e2e::run_until_exit(&config, Duration::from_secs(90)).await?;
        assert!(
            !exited.status.success(),
            "{what}: Envoy exited successfully:\n{}",
            exited.output
        );
        assert!(
            exited.output.contains(needle),
            "{what}: the filter's message ({needle:?}) is missing:\n{}",
            exited.output
        );
    }
    Ok(())
}

/// Replaces the file-based LDS source atomically (Envoy reacts to the rename).
fn write_lds(path: &Path, content: &str) -> anyhow::Result<()> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, content).context("writing the LDS file")?;
    std::fs::rename(&temp, path).context("renaming the LDS file into place")?;
    Ok(())
}

/// Waits until the counter `stat` reaches `at_least`.
async fn wait_for_stat(envoy: &mut Envoy, stat: &str, at_least: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if envoy.stat(stat).await?.unwrap_or(0) >= at_least {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{stat} did not reach {at_least}; Envoy output:\n{}",
            envoy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until Envoy's log has a filter error line containing `needle`.
/// Only output after byte `since` counts.
async fn wait_for_log(envoy: &Envoy, since: usize, needle: &str) -> anyhow::Result<()> {
    let marker = sluice_e2e::filter_module()?.log_marker();
    let started = tokio::time::Instant::now();
    loop {
        let logs = envoy.log_file();
        if logs
            .get(since..)
            .unwrap_or_default()
            .lines()
            .any(|line| line.contains(marker) && line.contains(needle))
        {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "no filter error mentioning {needle:?} in:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_envoy_rejects_an_invalid_policy_update_and_keeps_serving() -> anyhow::Result<()> {
    const N: usize = 300;
    let upstreams = Upstreams::start().await?;
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let lds = dir.path().join("lds.json");
    let good = upstreams.rollout_config(Some(&policy(10_000, json!({}))), [100, 0, 0], port)?;
    write_lds(&lds, &good.lds_file())?;
    let mut envoy = Envoy::start(&good.render_with_file_lds(&lds)).await?;
    let addr = envoy.listener_addr(LISTENER).await?;
    let responses = send_all(addr, repeat(Req::get(HOST), N), CONNECTIONS).await?;
    assert_eq!(count(&responses, CANARY), N as u64);

    for (n, (what, bad_policy, needle)) in invalid_policies().into_iter().enumerate() {
        let bad = upstreams.rollout_config(Some(&bad_policy), [100, 0, 0], port)?;
        let log_len = envoy.log_file().len();
        write_lds(&lds, &bad.lds_file())?;
        wait_for_stat(
            &mut envoy,
            "listener_manager.lds.update_rejected",
            n as u64 + 1,
        )
        .await?;
        envoy.ensure_running()?;
        wait_for_log(&envoy, log_len, needle).await?;
        // The last good policy keeps serving.
        let responses = send_all(addr, repeat(Req::get(HOST), N), CONNECTIONS).await?;
        assert_eq!(
            count(&responses, CANARY),
            N as u64,
            "after rejecting: {what}"
        );
    }

    // A valid update still applies: weight 0 sends everything to stable.
    let accepted = envoy
        .stat("listener_manager.lds.update_success")
        .await?
        .unwrap_or(0);
    let next = upstreams.rollout_config(Some(&policy(0, json!({}))), [0, 100, 0], port)?;
    write_lds(&lds, &next.lds_file())?;
    wait_for_stat(
        &mut envoy,
        "listener_manager.lds.update_success",
        accepted + 1,
    )
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        // The old listener drains while the new one warms; new connections soon reach the new one.
        let responses = send_all(addr, repeat(Req::get(HOST), N), CONNECTIONS).await?;
        if count(&responses, STABLE) == N as u64 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the valid update never took effect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    envoy.ensure_running()?;
    Ok(())
}
