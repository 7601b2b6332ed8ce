//! Text layout of the view (kept apart from the data gathering in `view.rs`).

use std::fmt::Write as _;

use sluice_api::Rollout;

use super::{RolloutInfo, VersionInfo, describe_step, icon, max_weight, phase, set_weight, steps};

/// The header line `Label:` padded to Argo's column.
fn field(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let label = if label.is_empty() {
        String::new()
    } else {
        format!("{label}:")
    };
    let _ = writeln!(out, "{label:<17}{value}");
}

/// `sluice rollouts get NAME`: the summary, the steps, the data-plane gate, the images and
/// replicas, the revisions with their versions and pods, and the conditions.
pub fn render(info: &RolloutInfo) -> String {
    let rollout = &info.rollout;
    let status = rollout.status.clone().unwrap_or_default();
    let (phase, message) = phase(rollout);
    let mut out = String::new();
    let name = rollout.metadata.name.as_deref().unwrap_or_default();
    field(&mut out, "Name", name);
    field(
        &mut out,
        "Namespace",
        rollout.metadata.namespace.as_deref().unwrap_or("default"),
    );
    field(&mut out, "Status", format!("{} {phase}", icon(phase)));
    if !message.is_empty() {
        field(&mut out, "Message", &message);
    }
    let steps = steps(rollout);
    match &rollout.spec.strategy.canary {
        Some(canary) => {
            field(&mut out, "Strategy", "Canary");
            let index = status.current_step_index.unwrap_or(0);
            if !steps.is_empty() {
                field(&mut out, "  Step", format!("{index}/{}", steps.len()));
            }
            field(&mut out, "  SetWeight", set_weight(rollout, &status));
            field(&mut out, "  ActualWeight", actual_weight(rollout, info));
            if canary
                .traffic_routing
                .as_ref()
                .and_then(|t| t.max_traffic_weight)
                .is_some()
            {
                field(&mut out, "  MaxWeight", max_weight(rollout));
            }
        }
        None if rollout.spec.strategy.blue_green.is_some() => {
            field(&mut out, "Strategy", "BlueGreen");
            let bg = status.blue_green.clone().unwrap_or_default();
            let active = bg.active_selector.unwrap_or_default();
            field(&mut out, "  Active", &active);
            let preview = bg.preview_selector.unwrap_or_default();
            let same = if preview == active && !preview.is_empty() {
                " (the active version)"
            } else {
                ""
            };
            field(&mut out, "  Preview", format!("{preview}{same}"));
            // Argo's status.blueGreen.{pre,post}PromotionAnalysisRunStatus.
            for (label, run) in [
                ("  PrePromotion", &bg.pre_promotion_analysis_run_status),
                ("  PostPromotion", &bg.post_promotion_analysis_run_status),
            ] {
                if let Some(run) = run {
                    let phase = if run.status.is_empty() {
                        "Pending"
                    } else {
                        run.status.as_str()
                    };
                    field(
                        &mut out,
                        label,
                        format!("{}  {} {phase}", run.name, icon(phase)),
                    );
                }
            }
        }
        None => field(&mut out, "Strategy", "none (all traffic to stable)"),
    }
    if !steps.is_empty() {
        let _ = writeln!(out, "Steps:");
        let current = usize::try_from(status.current_step_index.unwrap_or(0)).unwrap_or(0);
        for (i, step) in steps.iter().enumerate() {
            let mark = match i.cmp(&current) {
                std::cmp::Ordering::Less => "✔",
                std::cmp::Ordering::Equal => "►",
                std::cmp::Ordering::Greater => " ",
            };
            let _ = writeln!(out, "  {mark} {i:>2}  {}", describe_step(step));
        }
    }
    data_plane(&mut out, rollout);
    analysis_runs(&mut out, info);
    experiments(&mut out, info);
    images(&mut out, rollout, info);
    let _ = writeln!(out, "Replicas:");
    field(&mut out, "  Desired", rollout.spec.replicas.unwrap_or(1));
    field(&mut out, "  Current", status.replicas.unwrap_or(0));
    field(&mut out, "  Updated", status.updated_replicas.unwrap_or(0));
    field(&mut out, "  Ready", status.ready_replicas.unwrap_or(0));
    field(
        &mut out,
        "  Available",
        status.available_replicas.unwrap_or(0),
    );
    out.push('\n');
    tree(&mut out, info, phase);
    if !status.conditions.is_empty() {
        let _ = writeln!(out, "\nConditions:");
        let width = status
            .conditions
            .iter()
            .map(|c| c.type_.len())
            .max()
            .unwrap_or(0);
        for c in &status.conditions {
            let _ = writeln!(
                out,
                "  {:<width$}  {:<7}  {}{}",
                c.type_,
                c.status,
                c.reason.as_deref().unwrap_or_default(),
                c.message
                    .as_deref()
                    .filter(|m| !m.is_empty())
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default(),
            );
        }
    }
    out
}

/// The weight the canary has: the one the engine published (`status.canary.weights`), else the
/// set weight; 100 once every step is done.
fn actual_weight(rollout: &Rollout, info: &RolloutInfo) -> i32 {
    let status = rollout.status.clone().unwrap_or_default();
    let steps = steps(rollout).len();
    let index = usize::try_from(status.current_step_index.unwrap_or(0)).unwrap_or(0);
    if steps == 0 || index >= steps {
        return max_weight(rollout);
    }
    let available = status
        .available_replicas
        .unwrap_or_else(|| info.versions.iter().map(|v| v.available).sum());
    if available <= 0 {
        return 0;
    }
    status
        .canary
        .as_ref()
        .and_then(|c| c.weights.as_ref())
        .map_or_else(|| set_weight(rollout, &status), |w| w.canary.weight)
}

/// Each Experiment (Kubernetes): its phase and message, and per template its hash and available
/// replicas (as `kubectl argo rollouts get` lists a rollout's Experiments).
fn experiments(out: &mut String, info: &RolloutInfo) {
    if info.experiments.is_empty() {
        return;
    }
    let _ = writeln!(out, "Experiments:");
    for (name, status) in &info.experiments {
        let phase = if status.phase.is_empty() {
            "Pending"
        } else {
            status.phase.as_str()
        };
        let _ = write!(out, "  {} {name}  {phase}", icon(phase));
        if let Some(message) = status.message.as_deref().filter(|m| !m.is_empty()) {
            let _ = write!(out, "  {message}");
        }
        let _ = writeln!(out);
        for t in &status.template_statuses {
            let _ = writeln!(
                out,
                "      {}  {}  {}/{} available",
                t.name, t.pod_template_hash, t.available_replicas, t.replicas
            );
        }
    }
}

/// Each AnalysisRun: its phase and message, and per metric its phase and last values.
fn analysis_runs(out: &mut String, info: &RolloutInfo) {
    if info.analysis_runs.is_empty() {
        return;
    }
    let _ = writeln!(out, "AnalysisRuns:");
    for (name, status) in &info.analysis_runs {
        let phase = status.phase.to_string();
        let _ = write!(out, "  {} {name}  {phase}", icon(&phase));
        if !status.message.is_empty() {
            let _ = write!(out, "  {}", status.message);
        }
        let _ = writeln!(out);
        for metric in &status.metric_results {
            let values: Vec<&str> = metric
                .measurements
                .iter()
                .rev()
                .take(5)
                .rev()
                .map(|m| {
                    if m.value.is_empty() {
                        "(no value)"
                    } else {
                        m.value.as_str()
                    }
                })
                .collect();
            let dry = if metric.dry_run { " (dry run)" } else { "" };
            let _ = writeln!(
                out,
                "      {}{dry}  {}  ✔ {} ✖ {} ? {} ⚠ {}  last: {}",
                metric.name,
                metric.phase,
                metric.successful,
                metric.failed,
                metric.inconclusive,
                metric.error,
                values.join(", ")
            );
        }
    }
}

fn data_plane(out: &mut String, rollout: &Rollout) {
    let Some(dp) = rollout.status.as_ref().and_then(|s| s.data_plane.as_ref()) else {
        return;
    };
    let traffic = &dp.traffic;
    let mut line = format!("generation {}: stable {}", dp.generation, traffic.stable);
    if let Some(canary) = &traffic.canary {
        let _ = write!(line, ", canary {canary} at {}%", traffic.canary_weight);
    }
    if let Some(preview) = &traffic.preview {
        let _ = write!(line, ", preview {preview}");
    }
    if !traffic.header_routes.is_empty() {
        let _ = write!(line, ", {} header route(s)", traffic.header_routes.len());
    }
    if !traffic.mirror_routes.is_empty() {
        let _ = write!(line, ", {} mirror route(s)", traffic.mirror_routes.len());
    }
    field(out, "Data plane", line);
    let gate = if dp.acknowledged >= dp.proxies {
        "✔"
    } else {
        "◌"
    };
    field(
        out,
        "  Acknowledged",
        format!("{gate} {} of {} proxies", dp.acknowledged, dp.proxies),
    );
    if dp.held_canary_weight > 0 {
        field(out, "  Held weight", format!("{}%", dp.held_canary_weight));
    }
    if let Some(message) = dp.message.as_deref().filter(|m| !m.is_empty()) {
        field(out, "  Message", format!("⚠ {message}"));
    }
}

fn roles(rollout: &Rollout, version: &VersionInfo) -> Vec<&'static str> {
    let status = rollout.status.clone().unwrap_or_default();
    let stable = status.stable_rs.as_deref() == Some(version.hash.as_str());
    let mut out = Vec::new();
    if stable {
        out.push("stable");
    }
    if rollout.spec.strategy.blue_green.is_some() {
        // Argo's words: the active Service's version, and the preview's.
        let bg = status.blue_green.unwrap_or_default();
        let active = bg.active_selector.as_deref() == Some(version.hash.as_str());
        if active {
            out.push("active");
        }
        if !active && bg.preview_selector.as_deref() == Some(version.hash.as_str()) {
            out.push("preview");
        }
        return out;
    }
    if !stable && status.current_pod_hash.as_deref() == Some(version.hash.as_str()) {
        out.push("canary");
    }
    out
}

fn images(out: &mut String, rollout: &Rollout, info: &RolloutInfo) {
    let mut lines = Vec::new();
    for version in &info.versions {
        let roles = roles(rollout, version);
        if roles.is_empty() {
            continue;
        }
        for image in &version.images {
            lines.push(format!("{image} ({})", roles.join(", ")));
        }
    }
    if lines.is_empty() {
        lines = rollout
            .spec
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .map(|s| {
                s.containers
                    .iter()
                    .filter_map(|c| c.image.clone())
                    .collect()
            })
            .unwrap_or_default();
    }
    for (i, line) in lines.iter().enumerate() {
        field(out, if i == 0 { "Images" } else { "" }, line);
    }
}

/// Argo's tree: the rollout, each revision with its version and that version's pods (or, in
/// standalone mode, its endpoints).
fn tree(out: &mut String, info: &RolloutInfo, phase: &str) {
    let rollout = &info.rollout;
    let mut rows: Vec<[String; 4]> = vec![[
        format!("⟳ {}", rollout.metadata.name.as_deref().unwrap_or_default()),
        "Rollout".into(),
        format!("{} {phase}", icon(phase)),
        String::new(),
    ]];
    for (i, version) in info.versions.iter().enumerate() {
        let last = i + 1 == info.versions.len();
        let (branch, indent) = if last {
            ("└──", "   ")
        } else {
            ("├──", "│  ")
        };
        let revision = version
            .revision
            .map_or_else(|| "?".to_owned(), |r| r.to_string());
        rows.push([
            format!("{branch}# revision:{revision}"),
            String::new(),
            String::new(),
            String::new(),
        ]);
        let state = if version.desired == 0 {
            "ScaledDown"
        } else if version.available >= version.desired {
            "Healthy"
        } else {
            "Progressing"
        };
        let mut notes: Vec<String> = roles(rollout, version)
            .iter()
            .map(|r| (*r).to_owned())
            .collect();
        notes.push(format!(
            "desired:{} ready:{} available:{}",
            version.desired, version.ready, version.available
        ));
        let kind = if version.endpoints.is_empty() {
            "ReplicaSet"
        } else {
            "Version"
        };
        rows.push([
            format!("{indent}└──⧉ {}", version.name),
            kind.into(),
            format!("{} {state}", icon(state)),
            notes.join("  "),
        ]);
        let children = version.pods.len() + version.endpoints.len();
        let mut child = 0;
        let prefix = |child: &mut usize| {
            *child += 1;
            let twig = if *child == children {
                "└──"
            } else {
                "├──"
            };
            format!("{indent}   {twig}")
        };
        for pod in &version.pods {
            let mut note = format!("ready:{}/{}", pod.ready_containers, pod.containers);
            if pod.restarts > 0 {
                let _ = write!(note, ",restarts:{}", pod.restarts);
            }
            rows.push([
                format!("{}□ {}", prefix(&mut child), pod.name),
                "Pod".into(),
                format!("{} {}", icon(&pod.status), pod.status),
                note,
            ]);
        }
        for endpoint in &version.endpoints {
            rows.push([
                format!("{}◦ {endpoint}", prefix(&mut child)),
                "Endpoint".into(),
                String::new(),
                String::new(),
            ]);
        }
    }
    table(out, &["NAME", "KIND", "STATUS", "INFO"], &rows);
}

/// Left-aligned columns two spaces apart, widths counted in characters; trailing spaces trimmed.
fn table<const N: usize>(out: &mut String, header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: [&str; N]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i + 1 < N {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(*header);
    for row in rows {
        line(std::array::from_fn(|i| row[i].as_str()));
    }
}

/// `sluice rollouts list`: one line per rollout, with the API group it comes from.
pub fn list_table(rollouts: &[(String, Rollout)]) -> String {
    let rows: Vec<[String; 10]> = rollouts
        .iter()
        .map(|(group, rollout)| {
            let status = rollout.status.clone().unwrap_or_default();
            let steps = steps(rollout).len();
            let strategy = if rollout.spec.strategy.canary.is_some() {
                "Canary"
            } else if rollout.spec.strategy.blue_green.is_some() {
                "BlueGreen"
            } else {
                "-"
            };
            [
                rollout.metadata.name.clone().unwrap_or_default(),
                group.clone(),
                strategy.into(),
                phase(rollout).0.into(),
                if steps == 0 {
                    "-".into()
                } else {
                    format!("{}/{steps}", status.current_step_index.unwrap_or(0))
                },
                set_weight(rollout, &status).to_string(),
                status.ready_replicas.unwrap_or(0).to_string(),
                rollout.spec.replicas.unwrap_or(1).to_string(),
                status.updated_replicas.unwrap_or(0).to_string(),
                status.available_replicas.unwrap_or(0).to_string(),
            ]
        })
        .collect();
    let mut out = String::new();
    table(
        &mut out,
        &[
            "NAME",
            "API",
            "STRATEGY",
            "STATUS",
            "STEP",
            "SET-WEIGHT",
            "READY",
            "DESIRED",
            "UP-TO-DATE",
            "AVAILABLE",
        ],
        &rows,
    );
    out
}
