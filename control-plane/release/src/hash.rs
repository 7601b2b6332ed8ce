//! The pod-template hash: names a version (`<rollout>-<hash>` ReplicaSets, the
//! `rollouts-pod-template-hash` label, the Envoy cluster).
//!
//! Kubernetes' scheme with a serialization of our own: FNV-1a (32 bit) over the canonical JSON of
//! `spec.template` (object keys sorted, no whitespace), then, when `collisionCount` is set, its
//! value as 8 bytes (little-endian `u32`, 4 zero bytes), as Kubernetes' `ComputeHash` appends it;
//! the decimal digits of the sum are written in Kubernetes' safe alphabet (`SafeEncodeString`).
//! Stable across Sluice releases: the test vectors below pin it. It does not equal Argo's hash,
//! which depends on Go's struct layout.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// Kubernetes' alphabet without vowels and look-alikes (`k8s.io/apimachinery/pkg/util/rand`).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The hash of `template` with `collision_count`, e.g. `"5f7b8c9d4"`. `Err` when the template
/// cannot be serialized (serde_json's message).
pub fn pod_template_hash(
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> Result<String, String> {
    let value = serde_json::to_value(template).map_err(|e| e.to_string())?;
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    let mut hash = fnv1a32(FNV_OFFSET, canonical.as_bytes());
    if let Some(count) = collision_count {
        // Kubernetes writes the int32 as its u32 bits, little-endian, in an 8-byte buffer.
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&u32::from_ne_bytes(count.to_ne_bytes()).to_le_bytes());
        hash = fnv1a32(hash, &bytes);
    }
    Ok(safe_encode(&hash.to_string()))
}

/// A hash of any serializable value in the same alphabet (Argo's `currentStepHash`).
pub fn value_hash(value: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(value, &mut canonical);
    safe_encode(&fnv1a32(FNV_OFFSET, canonical.as_bytes()).to_string())
}

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

fn fnv1a32(mut hash: u32, bytes: &[u8]) -> u32 {
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

fn safe_encode(text: &str) -> String {
    text.bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// JSON with object keys sorted at every level and no whitespace, whatever map type serde_json
/// was built with.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(&Value::String(key.clone()), out);
                out.push(':');
                if let Some(item) = map.get(key) {
                    write_canonical(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars: serde_json's own rendering (escapes, number forms) is canonical already.
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(json: &str) -> PodTemplateSpec {
        serde_json::from_str(json).expect("template")
    }

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        assert_eq!(fnv1a32(FNV_OFFSET, b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(FNV_OFFSET, b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(FNV_OFFSET, b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn safe_encoding_is_kubernetes_alphabet() {
        // '0' is byte 48: 48 % 27 = 21 -> '4'; '9' is 57 % 27 = 3 -> 'f'.
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    const NGINX: &str = r#"{"metadata":{"labels":{"app":"demo"}},
        "spec":{"containers":[{"name":"app","image":"nginx:1.27"}]}}"#;

    #[test]
    fn pod_template_hash_vectors() {
        let nginx = template(NGINX);
        let v1 = pod_template_hash(&nginx, None).expect("hash");
        let mut newer = nginx.clone();
        if let Some(spec) = newer.spec.as_mut() {
            spec.containers[0].image = Some("nginx:1.28".into());
        }
        // Checked-in vectors (also computed by an independent Python FNV-1a over the canonical
        // JSON): changing them renames every running rollout's ReplicaSets.
        assert_eq!(v1, "594fffd45");
        assert_eq!(pod_template_hash(&newer, None).expect("hash"), "6656b966b8");
        assert_eq!(
            pod_template_hash(&nginx, Some(1)).expect("hash"),
            "645799f6dd"
        );
        assert_ne!(pod_template_hash(&nginx, Some(0)).expect("hash"), v1);
    }

    #[test]
    fn the_hash_ignores_key_order_and_whitespace() {
        let reordered = template(
            r#"{"spec":{"containers":[{"image":"nginx:1.27","name":"app"}]},
                "metadata":{"labels":{"app":"demo"}}}"#,
        );
        assert_eq!(
            pod_template_hash(&reordered, None),
            pod_template_hash(&template(NGINX), None)
        );
    }

    #[test]
    fn hashes_use_only_the_safe_alphabet() {
        let hash = pod_template_hash(&template(NGINX), Some(7)).expect("hash");
        assert!(!hash.is_empty() && hash.len() <= 10, "{hash}");
        assert!(hash.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{hash}");
    }
}
