//! The verbs against a standalone control plane's admin API: the release engine there applies and
//! persists the commands in its state file. `get` and `list` draw the same view as in Kubernetes
//! ([`super::view`]), with each version's static endpoints in place of pods.

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
        let (view, _) = fetch(client, name).await?;
        let info = super::view::RolloutInfo::from_admin(&view)
            .with_context(|| format!("rollout {name:?}: the control plane's view"))?;
        let text = super::view::render(&info);
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
    let mut rollouts = Vec::with_capacity(list.rollouts.len());
    for view in &list.rollouts {
        let rollout: Rollout = serde_json::from_str(&view.rollout_json)
            .with_context(|| format!("rollout {:?}: the control plane's view", view.rollout))?;
        rollouts.push(("sluice.dev".to_owned(), rollout));
    }
    print!("{}", super::view::list_table(&rollouts));
    Ok(())
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
