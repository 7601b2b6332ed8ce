//! The benchmark's output: a table for people, JSON for tools, and the product's goal check.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::run::Outcome;

/// The goal: at this size, p99 and RSS within these bounds.
pub const GOAL_CLIENTS: usize = 1_000;
pub const GOAL_ROLLOUTS: usize = 1_000;
pub const GOAL_P99: Duration = Duration::from_millis(100);
pub const GOAL_RSS_BYTES: u64 = 256 * MIB;

const MIB: u64 = 1024 * 1024;

/// One configuration's result: measured, or why it could not be.
#[derive(Debug)]
pub struct Row {
    pub clients: usize,
    pub rollouts: usize,
    pub result: Result<Outcome, String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// `Some(met)` when the goal configuration was measured, `None` if it was not run or failed.
pub fn goal_met(rows: &[Row]) -> Option<bool> {
    rows.iter()
        .find(|r| r.clients == GOAL_CLIENTS && r.rollouts == GOAL_ROLLOUTS)
        .and_then(|r| r.result.as_ref().ok())
        .map(|o| o.p99 <= GOAL_P99 && o.rss_bytes <= GOAL_RSS_BYTES)
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>13} {:>8}",
        "N", "M", "changes", "p50 ms", "p99 ms", "RSS MiB", "peak MiB", "CPU s/change", "sync s"
    );
    for row in rows {
        match &row.result {
            Ok(o) => {
                let _ = writeln!(
                    out,
                    "{:>6} {:>6} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>13.4} {:>8.1}",
                    o.clients,
                    o.rollouts,
                    o.changes,
                    ms(o.p50),
                    ms(o.p99),
                    mib(o.rss_bytes),
                    mib(o.hwm_bytes),
                    o.cpu_seconds_per_change,
                    o.sync_time.as_secs_f64()
                );
            }
            Err(e) => {
                let _ = writeln!(out, "{:>6} {:>6}  FAILED: {e}", row.clients, row.rollouts);
            }
        }
    }
    let goal = format!(
        "goal at N = {GOAL_CLIENTS}, M = {GOAL_ROLLOUTS}: p99 <= {} ms and RSS <= {} MiB",
        GOAL_P99.as_millis(),
        GOAL_RSS_BYTES / MIB
    );
    let _ = match goal_met(rows) {
        Some(true) => writeln!(out, "{goal}: met"),
        Some(false) => writeln!(out, "{goal}: NOT met"),
        None => writeln!(out, "{goal}: not measured"),
    };
    out
}

pub fn json(rows: &[Row], cpus: usize) -> Value {
    let results: Vec<Value> = rows
        .iter()
        .map(|row| match &row.result {
            Ok(o) => json!({
                "clients": o.clients,
                "rollouts": o.rollouts,
                "changes": o.changes,
                "p50_ms": ms(o.p50),
                "p99_ms": ms(o.p99),
                "max_ms": ms(o.max),
                "rss_mib": mib(o.rss_bytes),
                "peak_rss_mib": mib(o.hwm_bytes),
                "cpu_seconds_per_change": o.cpu_seconds_per_change,
                "sync_seconds": o.sync_time.as_secs_f64(),
                "changed_types": o.changed_types,
                "unexpected_pushes": o.unexpected_pushes,
                "latencies_ms": o.latencies.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            }),
            Err(e) => json!({
                "clients": row.clients,
                "rollouts": row.rollouts,
                "error": e,
            }),
        })
        .collect();
    json!({
        "benchmark": "xds",
        "description": "SetWeight on one rollout until the last of N ADS clients has the new RDS and ECDS; control plane RSS and CPU",
        "cpus": cpus,
        "goal": {
            "clients": GOAL_CLIENTS,
            "rollouts": GOAL_ROLLOUTS,
            "p99_ms": ms(GOAL_P99),
            "rss_mib": mib(GOAL_RSS_BYTES),
            "met": goal_met(rows),
        },
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
            result,
        }
    }

    #[test]
    fn goal_is_judged_on_the_goal_configuration_only() {
        let small = row(10, 10, Ok(outcome(10, 10, 500, 900)));
        assert_eq!(goal_met(&[small]), None);
        let good = row(1_000, 1_000, Ok(outcome(1_000, 1_000, 100, 256)));
        assert_eq!(goal_met(&[good]), Some(true));
        let slow = row(1_000, 1_000, Ok(outcome(1_000, 1_000, 101, 10)));
        assert_eq!(goal_met(&[slow]), Some(false));
        let fat = row(1_000, 1_000, Ok(outcome(1_000, 1_000, 5, 257)));
        assert_eq!(goal_met(&[fat]), Some(false));
        let failed = row(1_000, 1_000, Err("boom".into()));
        assert_eq!(goal_met(&[failed]), None);
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
        assert_eq!(j["goal"]["met"], Value::Null);
    }
}
