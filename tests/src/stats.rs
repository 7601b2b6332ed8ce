//! Statistics for the tests: the binomial tolerance check and a tolerant Prometheus text parser.

use std::collections::BTreeMap;

use anyhow::{Context, bail};

/// Whether `observed` successes out of `n` trials are within 4 standard deviations of a
/// binomial(n, p): `|observed - n p| <= 4 sqrt(n p (1 - p))`. At p = 0 or 1 this is exact.
pub fn within_binomial(observed: u64, n: u64, p: f64) -> bool {
    let n = n as f64;
    let expected = n * p;
    let tolerance = 4.0 * (n * p * (1.0 - p)).sqrt();
    (observed as f64 - expected).abs() <= tolerance
}

/// Fails with a readable message unless [`within_binomial`] holds.
pub fn check_binomial(what: &str, observed: u64, n: u64, p: f64) -> anyhow::Result<()> {
    if !within_binomial(observed, n, p) {
        let n_f = n as f64;
        bail!(
            "{what}: observed {observed} of {n} ({:.2} %), expected {:.1} ± {:.1} (p = {p})",
            100.0 * observed as f64 / n_f.max(1.0),
            n_f * p,
            4.0 * (n_f * p * (1.0 - p)).sqrt()
        );
    }
    Ok(())
}

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether the metric name or any label value contains `text`.
    pub fn mentions(&self, text: &str) -> bool {
        self.name.contains(text) || self.labels.values().any(|value| value.contains(text))
    }
}

/// Parses the sample lines of a Prometheus text exposition; skips comments and lines it cannot
/// read (the tests only look for the samples they know).
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(at) => line.split_at(at),
        None => return None,
    };
    let (labels, rest) = if let Some(inner) = rest.strip_prefix('{') {
        parse_labels(inner)?
    } else {
        (BTreeMap::new(), rest)
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the closing brace.
fn parse_labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (at, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break at,
                other => value.push(other),
            }
        };
        labels.insert(key.trim().to_string(), value);
        text = &rest[end + 1..];
    }
}

/// The Prometheus names of the filter's request counter: Wasm build, native build.
pub const SLUICE_COUNTER_NAMES: [&str; 2] = [
    "sluice_requests_total",
    "envoy_wasmcustom_sluice_requests_total",
];

/// A filter counter's labels: (rollout, version, reason).
pub type CounterKey = (String, String, String);

/// The filter's request counters by (rollout, version, reason), read from the Prometheus labels
/// that the bootstrap's `stats_tags` (see [`crate::config::sluice_stats_config`]) extract from the
/// counter names. The Wasm build's counters are `sluice_requests_total` (Envoy strips the Wasm
/// stats namespace); the native build's, `envoy_wasmcustom_sluice_requests_total` (Envoy 1.40
/// strips no dynamic-module namespace), with the same labels.
pub fn sluice_counters(prometheus: &str) -> anyhow::Result<BTreeMap<CounterKey, u64>> {
    let mut counters = BTreeMap::new();
    for sample in parse_prometheus(prometheus) {
        if !SLUICE_COUNTER_NAMES.contains(&sample.name.as_str()) {
            continue;
        }
        let label = |name: &str| {
            sample
                .labels
                .get(name)
                .cloned()
                .with_context(|| format!("label {name} missing in {sample:?}"))
        };
        let key = (label("rollout")?, label("version")?, label("reason")?);
        if counters.insert(key, sample.value as u64).is_some() {
            bail!("duplicate sample {sample:?}");
        }
    }
    Ok(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_bounds() {
        // n = 10000, p = 0.5: sd = 50, tolerance 200.
        assert!(within_binomial(5000, 10_000, 0.5));
        assert!(within_binomial(5200, 10_000, 0.5));
        assert!(!within_binomial(5201, 10_000, 0.5));
        assert!(!within_binomial(4799, 10_000, 0.5));
        // The ends are exact.
        assert!(within_binomial(0, 5000, 0.0));
        assert!(!within_binomial(1, 5000, 0.0));
        assert!(within_binomial(5000, 5000, 1.0));
        assert!(!within_binomial(4999, 5000, 1.0));
        assert!(check_binomial("x", 4999, 5000, 1.0).is_err());
    }

    #[test]
    fn parses_prometheus_lines() {
        let text = "# TYPE envoy_x counter\n\
                    envoy_x{a=\"1\",b=\"q\\\"uote\"} 42\n\
                    plain 7\n\
                    envoy_h_bucket{le=\"+Inf\"} 3\n\
                    garbage\n";
        let samples = parse_prometheus(text);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "envoy_x");
        assert_eq!(samples[0].labels["a"], "1");
        assert_eq!(samples[0].labels["b"], "q\"uote");
        assert_eq!(samples[0].value, 42.0);
        assert!(samples[0].mentions("uote"));
        assert_eq!(samples[1].name, "plain");
        assert_eq!(samples[1].value, 7.0);
        assert_eq!(samples[2].labels["le"], "+Inf");
    }

    #[test]
    fn reads_labelled_sluice_counters() {
        let text = "# TYPE sluice_requests_total counter\n\
                    sluice_requests_total{rollout=\"default_demo\",version=\"a1\",reason=\"weight\"} 5\n\
                    sluice_requests_total{rollout=\"default_demo\",version=\"b2\",reason=\"header\"} 2\n\
                    envoy_other{} 9\n";
        let counters = sluice_counters(text).expect("parses");
        assert_eq!(counters.len(), 2);
        let key = (
            "default_demo".to_string(),
            "a1".to_string(),
            "weight".to_string(),
        );
        assert_eq!(counters[&key], 5);
        assert!(sluice_counters("sluice_requests_total{rollout=\"r\"} 1").is_err());
        // The native build's counters carry the dynamic module's namespace and Envoy's prefix.
        let native = "envoy_wasmcustom_sluice_requests_total{rollout=\"r\",version=\"a1\",reason=\"sticky\"} 3\n\
                      envoy_other_total{rollout=\"r\",version=\"a1\",reason=\"sticky\"} 9\n";
        let counters = sluice_counters(native).expect("valid");
        assert_eq!(counters.len(), 1);
        assert_eq!(
            counters[&("r".to_string(), "a1".to_string(), "sticky".to_string())],
            3
        );
    }
}
