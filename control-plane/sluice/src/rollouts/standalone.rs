//! The verbs against a standalone control plane's admin API: the release engine there applies and
//! persists the commands in its state file. `get` prints a plain view of its own here (the shared
//! rendering lives with the Kubernetes backend).

use std::time::Duration;

use anyhow::{Context as _, bail};
use sluice_api::Rollout;
use sluice_proto::admin::v1::{CommandRequest, RolloutRef, RolloutView, command_request};
use tokio::time::Instant;

use super::{RolloutsArgs, SetVerb, Verb};
use crate::admin_client::Client;

/// How often `get --watch` and `status` ask again.
const POLL: Duration = Duration::from_secs(1);

pub async fn run(args: RolloutsArgs) -> anyhow::Result<()> {
    let address = args.admin.clone().context("--admin is required")?;
    let mut client = args.credentials.connect(&address).await?;
    let namespace = args.namespace.clone().unwrap_or_else(|| "default".into());
    let full_name = |name: &str| {
        if name.contains('/') {
            name.to_owned()
        } else {
            format!("{namespace}/{name}")
        }
    };
    let command = |name: &str, verb: command_request::Verb, full: bool| CommandRequest {
        rollout: full_name(name),
        verb: verb.into(),
        full,
    };
    use command_request::Verb as V;
    let request = match &args.verb {
        Verb::Get { name, watch } => return get(&mut client, &full_name(name), *watch).await,
        Verb::List => return list(&mut client).await,
        Verb::Status { name, timeout } => {
            return status(&mut client, &full_name(name), timeout).await;
        }
        Verb::Promote { name, full } => command(name, V::Promote, *full),
        Verb::Abort { name } => command(name, V::Abort, false),
        Verb::Retry { name } => command(name, V::Retry, false),
        Verb::Pause { name } => command(name, V::Pause, false),
        Verb::Restart { name, .. } => command(name, V::Restart, false),
        Verb::Undo { name, .. } | Verb::Set(SetVerb::Image { name, .. }) => bail!(
            "rollout {:?}: in standalone mode the version to release is spec.version in the \
             rollouts file; change it there (to an older version to roll back)",
            full_name(name)
        ),
        Verb::Lint { .. } => bail!("lint runs offline, without --admin"),
    };
    let verb = V::try_from(request.verb).map_or("command", |v| v.as_str_name());
    let view = client
        .command(request)
        .await
        .with_context(|| verb.to_string())?
        .into_inner();
    println!("{}: {} sent", view.rollout, verb.to_ascii_lowercase());
    Ok(())
}

async fn fetch(client: &mut Client, name: &str) -> anyhow::Result<(RolloutView, Rollout)> {
    let view = client
        .get_rollout(RolloutRef {
            rollout: name.to_owned(),
        })
        .await
        .with_context(|| format!("rollout {name:?}"))?
        .into_inner();
    let rollout: Rollout = serde_json::from_str(&view.rollout_json)
        .with_context(|| format!("rollout {name:?}: the control plane's view"))?;
    Ok((view, rollout))
}

async fn get(client: &mut Client, name: &str, watch: bool) -> anyhow::Result<()> {
    let mut last = String::new();
    loop {
        let (view, rollout) = fetch(client, name).await?;
        let text = render(&view, &rollout);
        if text != last {
            if watch && !last.is_empty() {
                println!("---");
            }
            print!("{text}");
            last = text;
        }
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn list(client: &mut Client) -> anyhow::Result<()> {
    let list = client
        .list_rollouts(sluice_proto::admin::v1::StatusRequest {})
        .await
        .context("listing rollouts")?
        .into_inner();
    println!(
        "{:<32} {:<12} {:>5} {:<14} {:<14} {:>6}",
        "NAME", "PHASE", "STEP", "STABLE", "CANARY", "WEIGHT"
    );
    for view in &list.rollouts {
        let rollout: Rollout = serde_json::from_str(&view.rollout_json)
            .with_context(|| format!("rollout {:?}: the control plane's view", view.rollout))?;
        let status = rollout.status.unwrap_or_default();
        let traffic = status.data_plane.map(|d| d.traffic).unwrap_or_default();
        println!(
            "{:<32} {:<12} {:>5} {:<14} {:<14} {:>6}",
            view.rollout,
            status.phase.unwrap_or_else(|| "-".into()),
            status
                .current_step_index
                .map_or("-".into(), |i| i.to_string()),
            status.stable_rs.unwrap_or_else(|| "-".into()),
            traffic.canary.unwrap_or_else(|| "-".into()),
            traffic.canary_weight,
        );
    }
    Ok(())
}

/// A plain text view: phase, steps (the current one marked), traffic and the data-plane gate,
/// versions, conditions.
pub fn render(view: &RolloutView, rollout: &Rollout) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let status = rollout.status.clone().unwrap_or_default();
    let _ = writeln!(out, "Name:      {}", view.rollout);
    let _ = writeln!(
        out,
        "Phase:     {}{}",
        status.phase.as_deref().unwrap_or("-"),
        status
            .message
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "Version:   {}  stable {}",
        rollout.spec.version.as_deref().unwrap_or("-"),
        status.stable_rs.as_deref().unwrap_or("-")
    );
    if rollout.spec.paused {
        let _ = writeln!(out, "Paused:    by the user (promote to resume)");
    }
    let steps = rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .map(|c| c.steps.clone())
        .unwrap_or_default();
    let current = status
        .current_step_index
        .and_then(|i| usize::try_from(i).ok());
    let _ = writeln!(out, "Steps:");
    for (i, step) in steps.iter().enumerate() {
        let mark = if Some(i) == current { "▶" } else { " " };
        let done = if current.is_some_and(|c| i < c) {
            "✔"
        } else {
            " "
        };
        let text = serde_json::to_string(step).unwrap_or_default();
        let _ = writeln!(out, "  {mark}{done} {i}: {text}");
    }
    if let Some(dp) = &status.data_plane {
        let t = &dp.traffic;
        let _ = writeln!(
            out,
            "Traffic:   stable {} {}%{}",
            t.stable,
            100 - t.canary_weight,
            t.canary
                .as_deref()
                .map(|c| format!(", canary {c} {}%", t.canary_weight))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "Data plane: generation {} acknowledged by {} of {} proxies{}",
            dp.generation,
            dp.acknowledged,
            dp.proxies,
            dp.message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "Versions:");
    for v in &view.versions {
        let _ = writeln!(
            out,
            "  {:<16} revision {:<3} desired {} available {}  {}",
            v.hash,
            v.revision,
            v.desired,
            v.available,
            v.endpoints.join(" ")
        );
    }
    if !status.conditions.is_empty() {
        let _ = writeln!(out, "Conditions:");
        for c in &status.conditions {
            let _ = writeln!(
                out,
                "  {:<12} {:<6} {}",
                c.type_,
                c.status,
                c.message.as_deref().unwrap_or("")
            );
        }
    }
    out
}

/// Waits until Healthy (Ok), Degraded (Err) or the timeout (Err; `0` waits forever).
async fn status(client: &mut Client, name: &str, timeout: &str) -> anyhow::Result<()> {
    let seconds = sluice_api::duration::argo_duration_string_seconds(timeout)
        .map_err(|e| anyhow::anyhow!("--timeout {timeout:?}: {e}"))?;
    let deadline = (seconds > 0).then(|| Instant::now() + Duration::from_secs(seconds.into()));
    let mut last = String::new();
    loop {
        let (_, rollout) = fetch(client, name).await?;
        let status = rollout.status.unwrap_or_default();
        let phase = status.phase.clone().unwrap_or_default();
        let line = format!(
            "{name}: {phase}{}",
            status
                .message
                .as_deref()
                .map(|m| format!(" - {m}"))
                .unwrap_or_default()
        );
        if line != last {
            println!("{line}");
            last = line;
        }
        match phase.as_str() {
            "Healthy" => return Ok(()),
            "Degraded" => bail!("rollout {name:?} is Degraded"),
            _ => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bail!("rollout {name:?}: timed out after {timeout} ({phase})");
        }
        tokio::time::sleep(POLL).await;
    }
}
