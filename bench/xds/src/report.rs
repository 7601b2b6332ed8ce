//! The benchmark's output: a table for people, JSON for tools, and the product's goal check.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::run::Outcome;

/// A goal of the issue: at this shape, p99 and RSS within these bounds (and, for a scoped
/// shape, nothing sent to the clients a change does not concern).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Goal {
    pub clients: usize,
    pub rollouts: usize,
    pub scope: Option<usize>,
    /// Delta ADS clients.
    pub delta: bool,
    pub p99: Duration,
    pub rss_bytes: u64,
}

pub const GOALS: [Goal; 2] = [
    Goal {
        clients: 1_000,
        rollouts: 1_000,
        scope: None,
        delta: true,
        p99: Duration::from_millis(100),
        rss_bytes: 256 * MIB,
    },
    Goal {
        clients: 10_000,
        rollouts: 2_000,
        scope: Some(20),
        delta: false,
        p99: Duration::from_millis(50),
        rss_bytes: 512 * MIB,
    },
];

const MIB: u64 = 1024 * 1024;

/// One configuration's result: measured, or why it could not be.
#[derive(Debug)]
pub struct Row {
    pub clients: usize,
    pub rollouts: usize,
    pub scope: Option<usize>,
    pub delta: bool,
    pub result: Result<Outcome, String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

fn shape(clients: usize, rollouts: usize, scope: Option<usize>, delta: bool) -> String {
    let ads = if delta { " delta" } else { " sotw" };
    match scope {
        Some(s) => format!("{clients} x {rollouts} / {s}{ads}"),
        None => format!("{clients} x {rollouts}{ads}"),
    }
}

impl Goal {
    /// `Some(met)` when the goal's shape was measured, `None` if it was not run or failed.
    pub fn met(&self, rows: &[Row]) -> Option<bool> {
        rows.iter()
            .find(|r| {
                r.clients == self.clients
                    && r.rollouts == self.rollouts
                    && r.scope == self.scope
                    && r.delta == self.delta
            })
            .and_then(|r| r.result.as_ref().ok())
            .map(|o| o.p99 <= self.p99 && o.rss_bytes <= self.rss_bytes && o.unaffected_bytes == 0)
    }

    fn describe(&self) -> String {
        let scoped = if self.scope.is_some() {
            ", nothing to unconcerned clients"
        } else {
            ""
        };
        format!(
            "goal at {}: p99 <= {} ms and RSS <= {} MiB{scoped}",
            shape(self.clients, self.rollouts, self.scope, self.delta),
            self.p99.as_millis(),
            self.rss_bytes / MIB
        )
    }
}

/// Bytes per concerned client and change (0 when none is concerned).
pub fn bytes_per_client(o: &Outcome) -> u64 {
    o.bytes_per_change
        .checked_div(o.affected as u64)
        .unwrap_or(0)
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>22} {:>7} {:>8} {:>8} {:>8} {:>8} {:>12} {:>10} {:>9} {:>8} {:>7}",
        "N x M / scope ADS",
        "changes",
        "p50 ms",
        "p99 ms",
        "RSS MiB",
        "peak MiB",
        "bytes/change",
        "B/client",
        "B/others",
        "CPU s/ch",
        "sync s"
    );
    for row in rows {
        match &row.result {
            Ok(o) => {
                let _ = writeln!(
                    out,
                    "{:>22} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>12} {:>10} {:>9} {:>8.4} {:>7.1}",
                    shape(o.clients, o.rollouts, o.scope, o.delta),
                    o.changes,
                    ms(o.p50),
                    ms(o.p99),
                    mib(o.rss_bytes),
                    mib(o.hwm_bytes),
                    o.bytes_per_change,
                    bytes_per_client(o),
                    o.unaffected_bytes,
                    o.cpu_seconds_per_change,
                    o.sync_time.as_secs_f64()
                );
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{:>22}  FAILED: {e}",
                    shape(row.clients, row.rollouts, row.scope, row.delta)
                );
            }
        }
    }
    for goal in &GOALS {
        let _ = match goal.met(rows) {
            Some(true) => writeln!(out, "{}: met", goal.describe()),
            Some(false) => writeln!(out, "{}: NOT met", goal.describe()),
            None => writeln!(out, "{}: not measured", goal.describe()),
        };
    }
    out
}

pub fn json(rows: &[Row], cpus: usize) -> Value {
    let results: Vec<Value> = rows
        .iter()
        .map(|row| match &row.result {
            Ok(o) => json!({
                "clients": o.clients,
                "rollouts": o.rollouts,
                "scoped": o.scope,
                "delta": o.delta,
                "changes": o.changes,
                "p50_ms": ms(o.p50),
                "p99_ms": ms(o.p99),
                "max_ms": ms(o.max),
                "rss_mib": mib(o.rss_bytes),
                "peak_rss_mib": mib(o.hwm_bytes),
                "bytes_per_change": o.bytes_per_change,
                "affected_clients": o.affected,
                "bytes_per_client": bytes_per_client(o),
                "unaffected_bytes": o.unaffected_bytes,
                "cpu_seconds_per_change": o.cpu_seconds_per_change,
                "sync_seconds": o.sync_time.as_secs_f64(),
                "changed_types": o.changed_types,
                "unexpected_pushes": o.unexpected_pushes,
                "latencies_ms": o.latencies.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            }),
            Err(e) => json!({
                "clients": row.clients,
                "rollouts": row.rollouts,
                "scoped": row.scope,
                "delta": row.delta,
                "error": e,
            }),
        })
        .collect();
    let goals: Vec<Value> = GOALS
        .iter()
        .map(|g| {
            json!({
                "clients": g.clients,
                "rollouts": g.rollouts,
                "scoped": g.scope,
                "delta": g.delta,
                "p99_ms": ms(g.p99),
                "rss_mib": mib(g.rss_bytes),
                "met": g.met(rows),
            })
        })
        .collect();
    json!({
        "benchmark": "xds",
        "description": "SetWeight on one rollout until the last concerned ADS client (of N; scoped clients: those whose scope holds the rollout) has the new configuration; bytes received per change; control plane RSS and CPU",
        "cpus": cpus,
        "goals": goals,
        "results": results,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn outcome(clients: usize, rollouts: usize, p99_ms: u64, rss_mib: u64) -> Outcome {
        let p99 = Duration::from_millis(p99_ms);
        Outcome {
            clients,
            rollouts,
            scope: None,
            delta: false,
            affected: clients,
            bytes_per_change: 1_000 * clients as u64,
            unaffected_bytes: 0,
            changes: 2,
            latencies: vec![Duration::from_millis(1), p99],
            p50: Duration::from_millis(1),
            p99,
            max: p99,
            rss_bytes: rss_mib * MIB,
            hwm_bytes: rss_mib * MIB,
            cpu_seconds_per_change: 0.01,
            sync_time: Duration::from_secs(1),
            changed_types: "RouteConfiguration".into(),
            unexpected_pushes: 0,
        }
    }

    fn row(clients: usize, rollouts: usize, result: Result<Outcome, String>) -> Row {
        Row {
            clients,
            rollouts,
            scope: result.as_ref().ok().and_then(|o| o.scope),
            delta: result.as_ref().is_ok_and(|o| o.delta),
            result,
        }
    }

    #[test]
    fn goal_is_judged_on_the_goal_configuration_only() {
        let goal = &GOALS[0];
        let delta = |mut o: Outcome| {
            o.delta = true;
            o
        };
        let small = row(10, 10, Ok(delta(outcome(10, 10, 500, 900))));
        assert_eq!(goal.met(&[small]), None);
        let good = row(1_000, 1_000, Ok(delta(outcome(1_000, 1_000, 100, 256))));
        assert_eq!(goal.met(&[good]), Some(true));
        let sotw = row(1_000, 1_000, Ok(outcome(1_000, 1_000, 100, 256)));
        assert_eq!(goal.met(&[sotw]), None, "the goal is for delta clients");
        let slow = row(1_000, 1_000, Ok(delta(outcome(1_000, 1_000, 101, 10))));
        assert_eq!(goal.met(&[slow]), Some(false));
        let fat = row(1_000, 1_000, Ok(delta(outcome(1_000, 1_000, 5, 257))));
        assert_eq!(goal.met(&[fat]), Some(false));
        let failed = row(1_000, 1_000, Err("boom".into()));
        assert_eq!(goal.met(&[failed]), None);
    }

    #[test]
    fn the_scoped_goal_needs_its_scope_and_nothing_sent_to_the_others() {
        let goal = &GOALS[1];
        let mut scoped = outcome(10_000, 2_000, 50, 512);
        scoped.scope = Some(20);
        scoped.affected = 100;
        scoped.bytes_per_change = 100 * 4_000;
        assert_eq!(bytes_per_client(&scoped), 4_000);
        let unscoped = row(10_000, 2_000, Ok(outcome(10_000, 2_000, 50, 512)));
        assert_eq!(
            goal.met(&[unscoped]),
            None,
            "the unscoped shape is another one"
        );
        assert_eq!(
            goal.met(&[row(10_000, 2_000, Ok(scoped.clone()))]),
            Some(true)
        );
        scoped.unaffected_bytes = 1;
        assert_eq!(goal.met(&[row(10_000, 2_000, Ok(scoped))]), Some(false));
    }

    #[test]
    fn table_and_json_show_results_and_failures() {
        let rows = [
            row(10, 10, Ok(outcome(10, 10, 7, 20))),
            row(1_000, 1_000, Err("timed out".into())),
        ];
        let t = table(&rows);
        assert!(t.contains("FAILED: timed out"), "{t}");
        assert!(t.contains("7.0"), "{t}");
        assert!(t.contains("not measured"), "{t}");
        let j = json(&rows, 2);
        assert_eq!(j["results"][0]["p99_ms"], 7.0);
        assert_eq!(j["results"][0]["rss_mib"], 20.0);
        assert_eq!(j["results"][0]["latencies_ms"].as_array().unwrap().len(), 2);
        assert_eq!(j["results"][1]["error"], "timed out");
        assert_eq!(j["results"][0]["bytes_per_change"], 10_000);
        assert_eq!(j["results"][0]["bytes_per_client"], 1_000);
        assert_eq!(j["results"][0]["scoped"], Value::Null);
        assert_eq!(j["goals"][0]["met"], Value::Null);
    }
}
