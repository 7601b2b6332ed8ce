//! The verbs against the Kubernetes API, with the user's kubeconfig (`kube::Client::try_default`),
//! so RBAC decides who may. Each write is one of the requests `patch.rs` builds, sent as
//! kubectl-argo-rollouts sends it (merge patches, the status subresource where Argo uses it, a
//! JSON patch for `undo`, a whole-object update for `set image`). Only `sluice.dev` Rollouts are
//! changed: an `argoproj.io` Rollout is refused by name (Sluice observes those read-only); the
//! read verbs (`get`, `list`, `status`) show both.

use std::{io::IsTerminal as _, time::Duration};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::{
    api::{apps::v1::ReplicaSet, core::v1::Pod},
    jiff::Timestamp,
};
use kube::{
    Api,
    api::ListParams,
    runtime::{WatchStreamExt as _, reflector, watcher},
};
use serde_json::Value;
use sluice_api::{ArgoRollout, Rollout};

use super::{
    SetVerb, Verb,
    patch::{self, JSON_PATCH, MERGE_PATCH, MergePatch},
    view,
};

/// A Kubernetes client bound to one namespace.
#[derive(Clone)]
pub struct Kube {
    client: kube::Client,
    namespace: String,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// An API error's HTTP code, if the server answered with one.
fn code(error: &anyhow::Error) -> Option<u16> {
    match error.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(status)) => Some(status.code),
        _ => None,
    }
}

/// Which API group a rollout of that name is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Sluice,
    Argo,
}

impl Kube {
    pub fn new(client: kube::Client, namespace: Option<String>) -> Self {
        let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
        Kube { client, namespace }
    }

    /// One request; the answer's JSON.
    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut request = http::Request::builder().method(method).uri(path);
        if let Some(content_type) = content_type {
            request = request.header(http::header::CONTENT_TYPE, content_type);
        }
        let body = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let request = request.body(body).context("building the request")?;
        tracing::debug!(method, path, "kubernetes request");
        Ok(self.client.request::<Value>(request).await?)
    }

    async fn merge(&self, name: &str, patch: &MergePatch) -> anyhow::Result<Value> {
        let path = patch::rollout_path(&self.namespace, name, patch.status);
        self.send("PATCH", &path, Some(MERGE_PATCH), Some(&patch.body))
            .await
    }

    /// The error for a `sluice.dev` Rollout that was not found: a clear refusal when an
    /// `argoproj.io` Rollout has that name, else "not found".
    async fn not_found(&self, name: &str, verb: &str) -> anyhow::Error {
        let path = format!("{}/{name}", patch::argo_rollouts_path(&self.namespace));
        match self.send("GET", &path, None, None).await {
            Ok(_) => anyhow::anyhow!(
                "rollout {ns}/{name} is an argoproj.io Rollout: Sluice observes it read-only \
                 (Argo Rollouts runs its steps); use `kubectl argo rollouts {verb} {name} -n {ns}`, \
                 or move it to Sluice by changing its apiVersion to sluice.dev/v1alpha1",
                ns = self.namespace
            ),
            Err(_) => anyhow::anyhow!(
                "rollouts.sluice.dev {name:?} not found in namespace {:?}",
                self.namespace
            ),
        }
    }

    /// Runs `request`; a 404 becomes [`Self::not_found`].
    async fn or_refused(
        &self,
        name: &str,
        verb: &str,
        result: anyhow::Result<Value>,
    ) -> anyhow::Result<Value> {
        match result {
            Err(e) if code(&e) == Some(404) => Err(self.not_found(name, verb).await),
            other => other,
        }
    }

    async fn get_sluice(&self, name: &str, verb: &str) -> anyhow::Result<Value> {
        let path = patch::rollout_path(&self.namespace, name, false);
        let result = self.send("GET", &path, None, None).await;
        self.or_refused(name, verb, result).await
    }

    /// A status patch as Argo sends it: to the status subresource, and on NotFound to the object.
    async fn status_patch(&self, name: &str, verb: &str, patch: &MergePatch) -> anyhow::Result<()> {
        match self.merge(name, patch).await {
            Err(e) if code(&e) == Some(404) => {
                let fallback = MergePatch {
                    status: false,
                    body: patch.body.clone(),
                };
                let result = self.merge(name, &fallback).await;
                self.or_refused(name, verb, result).await.map(drop)
            }
            other => other.map(drop),
        }
    }

    pub async fn promote(&self, name: &str, full: bool) -> anyhow::Result<String> {
        let rollout: Rollout = serde_json::from_value(self.get_sluice(name, "promote").await?)
            .with_context(|| format!("reading rollout {name:?}"))?;
        let patches = patch::promote(&rollout, full);
        let mut spec = patches.spec.clone();
        if let Some(status) = &patches.status {
            let at_status = MergePatch {
                status: true,
                body: status.clone(),
            };
            match self.merge(name, &at_status).await {
                Err(e) if code(&e) == Some(404) => spec = Some(patches.unified.clone()),
                other => drop(other?),
            }
        }
        if let Some(body) = spec {
            let result = self
                .merge(
                    name,
                    &MergePatch {
                        status: false,
                        body,
                    },
                )
                .await;
            self.or_refused(name, "promote", result).await?;
        }
        Ok(if full {
            format!("rollout '{name}' fully promoted")
        } else {
            format!("rollout '{name}' promoted")
        })
    }

    pub async fn abort(&self, name: &str) -> anyhow::Result<String> {
        self.status_patch(name, "abort", &patch::abort()).await?;
        Ok(format!("rollout '{name}' aborted"))
    }

    pub async fn retry(&self, name: &str) -> anyhow::Result<String> {
        self.status_patch(name, "retry rollout", &patch::retry())
            .await?;
        Ok(format!("rollout '{name}' retried"))
    }

    pub async fn pause(&self, name: &str) -> anyhow::Result<String> {
        let result = self.merge(name, &patch::pause()).await;
        self.or_refused(name, "pause", result).await?;
        Ok(format!("rollout '{name}' paused"))
    }

    pub async fn restart(&self, name: &str, at: Timestamp) -> anyhow::Result<String> {
        let result = self.merge(name, &patch::restart(at)).await;
        self.or_refused(name, "restart", result).await?;
        Ok(format!("rollout '{name}' restarts at {at}"))
    }

    /// The ReplicaSets that `selector` (a label-selector string) selects.
    async fn replica_sets(&self, selector: &str) -> anyhow::Result<Vec<ReplicaSet>> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api
            .list(&ListParams::default().labels(selector))
            .await?
            .items)
    }

    pub async fn undo(&self, name: &str, to_revision: u64) -> anyhow::Result<String> {
        let object = self.get_sluice(name, "undo").await?;
        let rollout: Rollout = serde_json::from_value(object.clone())
            .with_context(|| format!("reading rollout {name:?}"))?;
        let selector = selector_string(&rollout)?;
        let sets = self.replica_sets(&selector).await?;
        let rs = patch::undo_target(&rollout, &sets, to_revision)?;
        let workload = rollout
            .spec
            .workload_ref
            .as_ref()
            .and_then(|w| w.name.clone());
        let (path, current) = match &workload {
            Some(deployment) => {
                let path = patch::deployment_path(&self.namespace, deployment);
                let object = self.send("GET", &path, None, None).await?;
                let template = object.pointer("/spec/template").cloned();
                (path, template)
            }
            None => (
                patch::rollout_path(&self.namespace, name, false),
                object.pointer("/spec/template").cloned(),
            ),
        };
        match patch::undo(current.as_ref(), rs)? {
            None => Ok(format!(
                "skipped rollback (current template already matches revision {to_revision})"
            )),
            Some(body) => {
                self.send("PATCH", &path, Some(JSON_PATCH), Some(&body))
                    .await
                    .with_context(|| format!("failed restoring revision {to_revision}"))?;
                Ok(format!("rollout '{name}' undo"))
            }
        }
    }

    /// `set image`: reads the whole object (the rollout, or its workloadRef Deployment), sets the
    /// images and writes it back with its resourceVersion; retried on a conflict, 5 attempts.
    pub async fn set_image(&self, name: &str, images: &[String]) -> anyhow::Result<String> {
        let pairs = images
            .iter()
            .map(|arg| patch::parse_container_image(arg).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if pairs.is_empty() {
            bail!("set image {name}: give at least one CONTAINER=IMAGE");
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let rollout = self.get_sluice(name, "set image").await?;
            let (kind, path, mut object) = match rollout
                .pointer("/spec/workloadRef/name")
                .and_then(Value::as_str)
            {
                Some(deployment) => {
                    let path = patch::deployment_path(&self.namespace, deployment);
                    let object = self.send("GET", &path, None, None).await?;
                    ("deployment", path, object)
                }
                None => (
                    "rollout",
                    patch::rollout_path(&self.namespace, name, false),
                    rollout,
                ),
            };
            for (container, image) in &pairs {
                patch::set_image(&mut object, container, image).map_err(anyhow::Error::msg)?;
            }
            match self
                .send("PUT", &path, Some("application/json"), Some(&object))
                .await
            {
                Err(e) if code(&e) == Some(409) && attempt < 5 => continue,
                Err(e) => return Err(e),
                Ok(_) => {
                    let shown = object
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or(name);
                    return Ok(format!("{kind} \"{shown}\" image updated"));
                }
            }
        }
    }

    /// The rollout of that name, in either API group (Sluice's first).
    async fn find(&self, name: &str) -> anyhow::Result<(Group, Rollout)> {
        let sluice: Api<Rollout> = Api::namespaced(self.client.clone(), &self.namespace);
        if let Some(rollout) = sluice.get_opt(name).await? {
            return Ok((Group::Sluice, rollout));
        }
        let argo: Api<ArgoRollout> = Api::namespaced(self.client.clone(), &self.namespace);
        match argo.get_opt(name).await {
            Ok(Some(rollout)) => Ok((Group::Argo, rollout.into())),
            _ => bail!(
                "rollout {name:?} not found in namespace {:?}",
                self.namespace
            ),
        }
    }

    /// The rollout with its ReplicaSets and pods, as the view shows it.
    async fn snapshot(&self, name: &str) -> anyhow::Result<view::RolloutInfo> {
        let (_, rollout) = self.find(name).await?;
        let selector = selector_string(&rollout)?;
        let sets = self.replica_sets(&selector).await?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let pods = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        let mut info = view::RolloutInfo::from_kubernetes(rollout, &sets, &pods);
        info.analysis_runs = self.analysis_runs(name).await;
        info.experiments = self.experiments(info.rollout.metadata.uid.as_deref()).await;
        Ok(info)
    }

    /// The rollout's AnalysisRuns (label `sluice.dev/rollout`), oldest first, as (name, status).
    /// Shown when they can be read: an Argo rollout, a cluster without the CRD or a user without
    /// `list` on them gets the view without its runs (logged), never an error.
    async fn analysis_runs(
        &self,
        rollout: &str,
    ) -> Vec<(String, sluice_analysis::AnalysisRunStatus)> {
        let api: Api<sluice_analysis::AnalysisRun> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("{}={rollout}", sluice_k8s::analysis_runs::ROLLOUT_LABEL);
        match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                let mut runs = list.items;
                runs.sort_by(|a, b| {
                    a.metadata
                        .creation_timestamp
                        .cmp(&b.metadata.creation_timestamp)
                        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
                });
                runs.into_iter()
                    .map(|run| {
                        (
                            run.metadata.name.unwrap_or_default(),
                            run.status.unwrap_or_default(),
                        )
                    })
                    .collect()
            }
            Err(error) => {
                tracing::debug!(%error, "listing the rollout's AnalysisRuns");
                Vec::new()
            }
        }
    }

    /// The Experiments the rollout `uid` controls, oldest first, as (name, status); as for
    /// AnalysisRuns, none (logged) when they cannot be read.
    async fn experiments(
        &self,
        uid: Option<&str>,
    ) -> Vec<(String, sluice_api::experiment_object::ExperimentStatus)> {
        let Some(uid) = uid else {
            return Vec::new();
        };
        let api: Api<sluice_api::experiment_object::Experiment> =
            Api::namespaced(self.client.clone(), &self.namespace);
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let mut items: Vec<_> = list
                    .items
                    .into_iter()
                    .filter(|e| {
                        e.metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .any(|o| o.controller == Some(true) && o.uid == uid)
                    })
                    .collect();
                items.sort_by(|a, b| {
                    a.metadata
                        .creation_timestamp
                        .cmp(&b.metadata.creation_timestamp)
                        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
                });
                items
                    .into_iter()
                    .map(|e| {
                        (
                            e.metadata.name.unwrap_or_default(),
                            e.status.unwrap_or_default(),
                        )
                    })
                    .collect()
            }
            Err(error) => {
                tracing::debug!(%error, "listing the rollout's Experiments");
                Vec::new()
            }
        }
    }

    pub async fn get(&self, name: &str) -> anyhow::Result<String> {
        Ok(view::render(&self.snapshot(name).await?))
    }

    /// `get --watch`: redraws on every event of the rollout, its ReplicaSets or its pods.
    pub async fn watch(&self, name: &str) -> anyhow::Result<()> {
        let (group, rollout) = self.find(name).await?;
        let selector = selector_string(&rollout)?;
        let by_name = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let by_labels = watcher::Config::default().labels(&selector);
        let (rollouts, rollout_writer) = reflector::store::<Rollout>();
        let (argo, argo_writer) = reflector::store::<ArgoRollout>();
        let (sets, set_writer) = reflector::store::<ReplicaSet>();
        let (pods, pod_writer) = reflector::store::<Pod>();
        let ns = &self.namespace;
        let rollout_events = match group {
            Group::Sluice => reflector(
                rollout_writer,
                watcher(Api::<Rollout>::namespaced(self.client.clone(), ns), by_name),
            )
            .map_ok(drop)
            .boxed(),
            Group::Argo => reflector(
                argo_writer,
                watcher(
                    Api::<ArgoRollout>::namespaced(self.client.clone(), ns),
                    by_name,
                ),
            )
            .map_ok(drop)
            .boxed(),
        };
        let set_events = reflector(
            set_writer,
            watcher(
                Api::<ReplicaSet>::namespaced(self.client.clone(), ns),
                by_labels.clone(),
            ),
        )
        .map_ok(drop);
        let pod_events = reflector(
            pod_writer,
            watcher(Api::<Pod>::namespaced(self.client.clone(), ns), by_labels),
        )
        .map_ok(drop);
        let mut events = futures::stream::select(
            rollout_events,
            futures::stream::select(set_events, pod_events),
        )
        .default_backoff()
        .boxed();
        let tty = std::io::stdout().is_terminal();
        while let Some(event) = events.next().await {
            if let Err(error) = event {
                tracing::warn!(%error, "watch");
                continue;
            }
            let current: Option<Rollout> = match group {
                Group::Sluice => rollouts.state().first().map(|r| (**r).clone()),
                Group::Argo => argo.state().first().map(|r| Rollout::from((**r).clone())),
            };
            let Some(current) = current else { continue };
            let sets: Vec<ReplicaSet> = sets.state().iter().map(|r| (**r).clone()).collect();
            let pods: Vec<Pod> = pods.state().iter().map(|p| (**p).clone()).collect();
            let mut info = view::RolloutInfo::from_kubernetes(current, &sets, &pods);
            // The runs' statuses change with the rollout's (the engine writes both): read on
            // each redraw rather than watched.
            info.analysis_runs = self.analysis_runs(name).await;
            info.experiments = self.experiments(info.rollout.metadata.uid.as_deref()).await;
            let text = view::render(&info);
            if tty {
                // Clear the screen and draw from the top.
                print!("\x1b[H\x1b[2J{text}");
            } else {
                println!("{text}");
            }
        }
        Ok(())
    }

    /// `list`: both API groups (Argo's only when its CRD is installed).
    pub async fn list(&self) -> anyhow::Result<String> {
        let sluice: Api<Rollout> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut rollouts: Vec<(String, Rollout)> = sluice
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|r| ("sluice.dev".to_owned(), r))
            .collect();
        let argo: Api<ArgoRollout> = Api::namespaced(self.client.clone(), &self.namespace);
        match argo.list(&ListParams::default()).await {
            Ok(list) => rollouts.extend(
                list.items
                    .into_iter()
                    .map(|r| ("argoproj.io".to_owned(), Rollout::from(r))),
            ),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
        Ok(view::list_table(&rollouts))
    }

    /// `status NAME --timeout`: watches until Healthy (Ok), Degraded (Err with the message) or
    /// the timeout (Err); prints each new status line, as Argo's `status`.
    pub async fn status(&self, name: &str, timeout: Option<Duration>) -> anyhow::Result<()> {
        let (group, _) = self.find(name).await?;
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let ns = &self.namespace;
        let rollouts = match group {
            Group::Sluice => watcher(Api::<Rollout>::namespaced(self.client.clone(), ns), config)
                .default_backoff()
                .applied_objects()
                .boxed(),
            Group::Argo => watcher(
                Api::<ArgoRollout>::namespaced(self.client.clone(), ns),
                config,
            )
            .default_backoff()
            .applied_objects()
            .map_ok(Rollout::from)
            .boxed(),
        };
        let wait = wait_for_status(rollouts, |line| println!("{line}"));
        match timeout {
            None => wait.await,
            Some(limit) => tokio::time::timeout(limit, wait)
                .await
                .unwrap_or_else(|_| bail!("Rollout status watch exceeded timeout")),
        }
    }
}

/// Follows a stream of the rollout's versions until Healthy (Ok) or Degraded (Err naming the
/// message); `print` gets each status line that differs from the last.
pub async fn wait_for_status<S, E>(
    mut rollouts: S,
    mut print: impl FnMut(&str),
) -> anyhow::Result<()>
where
    S: futures::Stream<Item = Result<Rollout, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut last = String::new();
    while let Some(next) = rollouts.next().await {
        let rollout = match next {
            Ok(rollout) => rollout,
            Err(error) => {
                tracing::warn!(%error, "watch");
                continue;
            }
        };
        let (phase, message) = view::phase(&rollout);
        let line = if message.is_empty() || phase == "Healthy" || phase == "Degraded" {
            phase.to_owned()
        } else {
            format!("{phase} - {message}")
        };
        if line != last {
            print(&line);
            last = line;
        }
        match phase {
            "Healthy" => return Ok(()),
            "Degraded" => bail!("The rollout is in a degraded state with message: {message}"),
            _ => {}
        }
    }
    bail!("the watch of the rollout ended")
}

/// The rollout's pods as a label-selector string: `status.selector` as the engine wrote it, else
/// `spec.selector`.
fn selector_string(rollout: &Rollout) -> anyhow::Result<String> {
    if let Some(selector) = rollout
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .filter(|s| !s.is_empty())
    {
        return Ok(selector);
    }
    let name = rollout.metadata.name.as_deref().unwrap_or_default();
    let selector = rollout
        .spec
        .selector
        .clone()
        .with_context(|| format!("rollout {name:?}: spec.selector is required"))?;
    let selector = kube::core::Selector::try_from(selector)
        .map_err(|e| anyhow::anyhow!("rollout {name:?}: spec.selector: {e}"))?;
    Ok(selector.to_string())
}

/// Parses `--timeout` (`5m`, `90s`, `10` = seconds); 0 waits forever.
pub fn parse_timeout(text: &str) -> anyhow::Result<Option<Duration>> {
    let seconds = sluice_api::duration::argo_duration_string_seconds(text)
        .map_err(|problem| anyhow::anyhow!("--timeout {text:?}: {problem}"))?;
    Ok((seconds > 0).then(|| Duration::from_secs(u64::from(seconds))))
}

pub async fn run(args: super::RolloutsArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes with the kubeconfig")?;
    let kube = Kube::new(client, args.namespace);
    let message = match args.verb {
        Verb::Get { name, watch: false } => kube.get(&name).await?,
        Verb::Get { name, watch: true } => return kube.watch(&name).await,
        Verb::List => kube.list().await?,
        Verb::Promote { name, full } => kube.promote(&name, full).await?,
        Verb::Abort { name } => kube.abort(&name).await?,
        Verb::Retry { name } => kube.retry(&name).await?,
        Verb::Pause { name } => kube.pause(&name).await?,
        Verb::Restart { name, r#in } => {
            let delay = match r#in {
                Some(text) => parse_timeout(&text)?.unwrap_or_default(),
                None => Duration::ZERO,
            };
            let at = Timestamp::now()
                .checked_add(delay)
                .context("--in is too far in the future")?;
            kube.restart(&name, at).await?
        }
        Verb::Undo { name, to_revision } => kube.undo(&name, to_revision.unwrap_or(0)).await?,
        Verb::Set(SetVerb::Image { name, images }) => kube.set_image(&name, &images).await?,
        Verb::Status { name, timeout } => {
            return kube.status(&name, parse_timeout(&timeout)?).await;
        }
        Verb::Lint { .. } => bail!("lint runs offline, without a cluster"),
    };
    println!("{message}");
    Ok(())
}

#[cfg(test)]
#[path = "kube_tests.rs"]
mod tests;
