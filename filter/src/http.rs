//! Small HTTP helpers with no host calls: the `:authority` rewrite, cookie parsing and the
//! `Set-Cookie` value for a new sticky key. Host normalisation itself is
//! `sluice_proto::rules::normalize_host` (re-exported here), shared with the control plane.

use std::borrow::Cow;

use crate::policy::StickyCookie;

pub use sluice_proto::rules::{is_token, normalize_authority, normalize_host};

/// The `:authority` to write back when `authority` is not in its normal form apart from case
/// (`demo.local.`, `demo.local:`, `demo.local:8080`): the normalised host, case preserved.
/// Envoy's router then matches the host the filter decided for even on a listener without the
/// HCM options `strip_trailing_host_dot`/`strip_any_host_port`, or with the empty port those
/// leave alone. `None` when the authority is already normal (the usual case: no host call).
pub fn authority_rewrite(authority: &[u8]) -> Option<Cow<'_, [u8]>> {
    let host = normalize_authority(authority);
    (host.len() != authority.len()).then_some(host)
}

/// The value of cookie `name` in a `Cookie` header value, if present. Parsing is tolerant: pairs
/// without `=` or with an empty name are skipped, whitespace around names and values is trimmed,
/// and a value in double quotes is unquoted. The first occurrence wins.
pub fn find_cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (pair.get(..eq)?, pair.get(eq + 1..)?);
        if trim(key) != name.as_bytes() {
            return None;
        }
        let value = trim(value);
        Some(match value {
            [b'"', inner @ .., b'"'] => inner,
            _ => value,
        })
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// A new random sticky key: 16 lower-case hex digits.
pub fn new_sticky_key(rng: &mut fastrand::Rng) -> String {
    format!("{:016x}", rng.u64(..))
}

/// The `Set-Cookie` value that hands a client its sticky key (RFC 6265bis):
/// `<name>=<key>; Path=/[; Max-Age=<n>][; Secure]; HttpOnly; SameSite=<Lax|Strict|None>`, never a
/// `Domain` (so a `__Host-` name is valid once `Secure`, which policy validation requires).
/// `max_age_seconds == 0` makes it a session cookie (no `Max-Age`).
pub fn set_cookie_value(cookie: &StickyCookie, key: &str) -> String {
    let mut value = format!("{}={key}; Path=/", cookie.name);
    if cookie.max_age_seconds != 0 {
        value.push_str(&format!("; Max-Age={}", cookie.max_age_seconds));
    }
    if cookie.secure {
        value.push_str("; Secure");
    }
    value.push_str("; HttpOnly; SameSite=");
    value.push_str(cookie.same_site.as_str());
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_non_normal_authorities_are_rewritten() {
        assert_eq!(authority_rewrite(b"demo.local"), None);
        assert_eq!(
            authority_rewrite(b"Demo.Local"),
            None,
            "case alone is no reason"
        );
        for (authority, want) in [
            (&b"demo.local."[..], &b"demo.local"[..]),
            (b"demo.local:", b"demo.local"),
            (b"Demo.local.:8080", b"Demo.local"),
        ] {
            assert_eq!(authority_rewrite(authority).as_deref(), Some(want));
        }
        assert_eq!(authority_rewrite(b"demo.local:http"), None);
    }

    #[test]
    fn cookies_are_found_tolerantly() {
        let h = b"a=1; sluice=abc ;  b=2";
        assert_eq!(find_cookie(h, "sluice"), Some(&b"abc"[..]));
        assert_eq!(find_cookie(h, "a"), Some(&b"1"[..]));
        assert_eq!(find_cookie(h, "c"), None);
        assert_eq!(
            find_cookie(b"garbage; ;=; sluice=x=y", "sluice"),
            Some(&b"x=y"[..])
        );
        assert_eq!(find_cookie(b"sluice=\"q\"", "sluice"), Some(&b"q"[..]));
        assert_eq!(find_cookie(b"sluice=", "sluice"), Some(&b""[..]));
        assert_eq!(
            find_cookie(b"sluice=1; sluice=2", "sluice"),
            Some(&b"1"[..])
        );
        assert_eq!(find_cookie(b"xsluice=1", "sluice"), None);
        assert_eq!(
            find_cookie(b"\xff\xfe=\x00; sluice=\xff", "sluice"),
            Some(&b"\xff"[..])
        );
        assert_eq!(find_cookie(b"", "sluice"), None);
    }

    #[test]
    fn set_cookie_values() {
        use sluice_proto::rules::SameSite;
        let cookie = |name: &str, max_age_seconds, secure, same_site| StickyCookie {
            name: name.into(),
            max_age_seconds,
            secure,
            same_site,
        };
        assert_eq!(
            set_cookie_value(&cookie("sluice", 3600, false, SameSite::Lax), "00ff"),
            "sluice=00ff; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            set_cookie_value(&cookie("sluice", 0, false, SameSite::Lax), "00ff"),
            "sluice=00ff; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            set_cookie_value(&cookie("__Host-sluice", 60, true, SameSite::Strict), "00ff"),
            "__Host-sluice=00ff; Path=/; Max-Age=60; Secure; HttpOnly; SameSite=Strict"
        );
        assert_eq!(
            set_cookie_value(&cookie("s", 0, true, SameSite::None), "k"),
            "s=k; Path=/; Secure; HttpOnly; SameSite=None"
        );
    }

    #[test]
    fn sticky_keys_are_16_hex_digits() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..100 {
            let key = new_sticky_key(&mut rng);
            assert_eq!(key.len(), 16);
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
    }

    proptest! {
        #[test]
        fn cookie_parsing_never_panics(header in proptest::collection::vec(any::<u8>(), 0..512),
                                       name in "[a-z]{1,8}") {
            let _ = find_cookie(&header, &name);
        }
    }
}
