//! The host → rollout map of a compiled policy, looked up once per request with the raw
//! `:authority` bytes, normalised by `sluice_proto::rules::normalize_authority` (trailing dot and
//! port cut off, as Envoy's HCM does) and case-folded without allocating in the usual case (a
//! stack buffer holds the lower-cased host) and without UTF-8 validation.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::http::normalize_authority;

/// Hosts up to this length are lower-cased on the stack; longer ones (not valid DNS names, but
/// nothing forbids them in a policy) in a heap buffer.
const STACK_HOST_LEN: usize = 256;

/// Normalised (port-free, lower-case) host → rollout index.
#[derive(Debug, Clone, Default)]
pub struct HostMap {
    map: HashMap<Box<[u8]>, usize, BuildHasherDefault<FxHasher>>,
}

impl HostMap {
    /// Maps `host` (already normalised, see [`crate::http::normalize_host`]) to `index`; returns
    /// the index it had before, if any.
    pub fn insert(&mut self, host: &str, index: usize) -> Option<usize> {
        self.map.insert(host.as_bytes().into(), index)
    }

    /// The index for an `:authority` as sent: normalised, ASCII case ignored.
    pub fn get(&self, authority: &[u8]) -> Option<usize> {
        let host = normalize_authority(authority);
        let host: &[u8] = &host;
        if !host.iter().any(u8::is_ascii_uppercase) {
            return self.map.get(host).copied();
        }
        let mut stack = [0u8; STACK_HOST_LEN];
        match stack.get_mut(..host.len()) {
            Some(lower) => {
                lower.copy_from_slice(host);
                lower.make_ascii_lowercase();
                self.map.get(&*lower).copied()
            }
            None => self.map.get(&*host.to_ascii_lowercase()).copied(),
        }
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no hosts.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The Fx hash (rustc's): a multiply and a rotate per 8 bytes, much cheaper than the default
/// SipHash on short keys. Keys come from the policy; a client's `:authority` is only looked up,
/// so it cannot lengthen the probe sequences the policy's keys laid out.
#[derive(Debug, Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            if let Some(head) = word.get_mut(..rest.len()) {
                head.copy_from_slice(rest);
            }
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::normalize_host;
    use proptest::prelude::*;

    fn map(hosts: &[&str]) -> HostMap {
        let mut m = HostMap::default();
        for (i, h) in hosts.iter().enumerate() {
            assert_eq!(m.insert(&normalize_host(h), i), None);
        }
        m
    }

    #[test]
    fn lookups_strip_the_port_and_ignore_case() {
        let m = map(&["demo.local", "[::1]", "API.example"]);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(b"demo.local"), Some(0));
        assert_eq!(m.get(b"DEMO.Local:8080"), Some(0));
        assert_eq!(m.get(b"demo.local."), Some(0));
        assert_eq!(m.get(b"demo.local:"), Some(0));
        assert_eq!(m.get(b"Demo.Local.:"), Some(0));
        assert_eq!(m.get(b"demo.local.."), Some(0));
        assert_eq!(m.get(b"demo.local:http"), None);
        assert_eq!(m.get(b"[::1]:80"), Some(1));
        assert_eq!(m.get(b"api.example"), Some(2));
        assert_eq!(m.get(b"api.EXAMPLE:443"), Some(2));
        assert_eq!(m.get(b"demo.local:http"), None);
        assert_eq!(m.get(b"demo.locals"), None);
        assert_eq!(m.get(b""), None);
        assert_eq!(m.get(b"\xff\xfe"), None);
    }

    #[test]
    fn long_hosts_are_found_too() {
        let long = format!("{}.local", "a".repeat(300));
        let m = map(&[&long]);
        assert_eq!(m.get(long.to_ascii_uppercase().as_bytes()), Some(0));
        assert_eq!(m.get(format!("{long}:80").as_bytes()), Some(0));
    }

    proptest! {
        /// The byte lookup agrees with normalising the authority as a string.
        #[test]
        fn byte_lookup_agrees_with_string_normalisation(
            hosts in proptest::collection::vec("[a-zA-Z0-9.:\\[\\]-]{0,12}", 0..6),
            authority in "[a-zA-Z0-9.:\\[\\]-]{0,14}",
        ) {
            let mut m = HostMap::default();
            let mut reference = std::collections::HashMap::new();
            for (i, h) in hosts.iter().enumerate() {
                let key = normalize_host(h).into_owned();
                m.insert(&key, i);
                reference.insert(key, i);
            }
            let want = reference.get(normalize_host(&authority).as_ref()).copied();
            prop_assert_eq!(m.get(authority.as_bytes()), want);
        }
    }
}
