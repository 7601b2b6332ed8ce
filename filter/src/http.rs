//! Small HTTP helpers with no host calls: host normalisation, header-name tokens, cookie parsing and
//! the `Set-Cookie` value for a new sticky key.

use std::borrow::Cow;

/// Normalises an `:authority` (or a policy host) for lookup: the port is stripped (also from a
/// bracketed IPv6 literal, `[::1]:8080` → `[::1]`) and ASCII letters are lower-cased. Allocates only
/// when the host has upper-case letters.
pub fn normalize_host(authority: &str) -> Cow<'_, str> {
    // `strip_port` cuts at an ASCII byte (`:` or after `]`), so the length is a char boundary.
    let host = authority
        .get(..strip_port(authority.as_bytes()).len())
        .unwrap_or(authority);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The host part of an `:authority`: a trailing `:<digits>` port is cut off (also after a
/// bracketed IPv6 literal); a bare IPv6 address or a non-numeric "port" is left whole. Case is
/// unchanged.
pub fn strip_port(authority: &[u8]) -> &[u8] {
    if authority.first() == Some(&b'[') {
        // IPv6 literal: everything up to and including the closing bracket.
        return match authority.iter().position(|&b| b == b']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        };
    }
    let Some(colon) = authority.iter().rposition(|&b| b == b':') else {
        return authority;
    };
    let host = authority.get(..colon).unwrap_or_default();
    let port = authority.get(colon + 1..).unwrap_or_default();
    // A bare IPv6 address (more than one colon, no brackets) has no port to strip.
    if !host.contains(&b':') && port.iter().all(u8::is_ascii_digit) {
        host
    } else {
        authority
    }
}

/// RFC 9110 `tchar`: the bytes allowed in a header name or a cookie name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A non-empty RFC 9110 token (a valid header field name or cookie name).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// A valid header name for matching: a token, optionally a `:`-prefixed pseudo-header (`:path`).
pub fn is_match_header_name(s: &str) -> bool {
    is_token(s.strip_prefix(':').unwrap_or(s))
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

/// The `Set-Cookie` value that hands a client its sticky key. `max_age_seconds == 0` makes it a
/// session cookie (no `Max-Age`).
pub fn set_cookie_value(name: &str, key: &str, max_age_seconds: u32) -> String {
    if max_age_seconds == 0 {
        format!("{name}={key}; Path=/; HttpOnly; SameSite=Lax")
    } else {
        format!("{name}={key}; Path=/; Max-Age={max_age_seconds}; HttpOnly; SameSite=Lax")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hosts_are_normalised() {
        let cases = [
            ("demo.local", "demo.local"),
            ("demo.local:8080", "demo.local"),
            ("Demo.LOCAL:80", "demo.local"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
            ("[FE80::1]:443", "[fe80::1]"),
            ("::1", "::1"),
            ("demo.local:", "demo.local"),
            ("demo.local:http", "demo.local:http"),
            ("[broken", "[broken"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_host(input), want, "input {input:?}");
        }
    }

    #[test]
    fn lower_case_hosts_do_not_allocate() {
        assert!(matches!(normalize_host("demo.local:80"), Cow::Borrowed(_)));
        assert!(matches!(normalize_host("Demo.local"), Cow::Owned(_)));
    }

    #[test]
    fn tokens() {
        assert!(is_token("x-sluice-hash"));
        assert!(is_token("X-Upper"));
        assert!(!is_token(""));
        assert!(!is_token("has space"));
        assert!(!is_token("semi;colon"));
        assert!(!is_token("é"));
        assert!(is_match_header_name(":path"));
        assert!(!is_match_header_name(":"));
        assert!(!is_match_header_name("a:b"));
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
        assert_eq!(
            set_cookie_value("sluice", "00ff", 3600),
            "sluice=00ff; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            set_cookie_value("sluice", "00ff", 0),
            "sluice=00ff; Path=/; HttpOnly; SameSite=Lax"
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

        #[test]
        fn host_normalisation_never_panics_and_is_idempotent(host in "\\PC{0,64}") {
            let once = normalize_host(&host).into_owned();
            let twice = normalize_host(&once).into_owned();
            // Stripping a port can expose another `:digits` suffix only for odd inputs like
            // "a:1:2", which are left alone (more than one colon), so one pass is enough.
            prop_assert_eq!(once, twice);
        }
    }
}
