//! The policy's rules, stated once: host normalisation and the syntax every field of a
//! `sluice.v1.FilterPolicy` must have. The filter (`sluice-filter`, policy validation and the
//! per-request host lookup) and the control plane (`sluice-model` validation, `sluice-xds` route
//! domains) both call these functions, so a policy one side accepts the other accepts too, and a
//! host the filter decides for is a host Envoy's router routes.
//!
//! Each check returns the problem as a [`Violation`] (a sentence about the value); the caller
//! adds the object and field it checked. [`cases`] is one table of accepted and rejected values
//! that the tests of both sides run.
//!
//! Pure and platform-independent (no I/O, no host calls): it builds for `wasm32-wasip1`.

use std::borrow::Cow;
use std::fmt;

/// Canary weight meaning "all traffic", in basis points (10000 = 100 %).
pub const MAX_WEIGHT_BP: u32 = 10_000;

/// Longest pod-template hash: hashes become parts of Envoy cluster names and label values.
pub const MAX_HASH_LEN: usize = 63;

/// Longest host name (RFC 1035).
pub const MAX_HOST_LEN: usize = 253;

/// What is wrong with a value, as a sentence that names the value (not the field: the caller
/// knows which field it checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

fn violation(message: String) -> Result<(), Violation> {
    Err(Violation(message))
}

// ---------------------------------------------------------------------------------------------
// Host normalisation
// ---------------------------------------------------------------------------------------------

/// The HTTP connection manager options every Sluice listener sets (the generated one and
/// `deploy/envoy/filter-only.yaml`), so that Envoy applies [`normalize_authority`] itself before
/// any filter or the router sees `:authority`: `strip_trailing_host_dot: true` and
/// `strip_any_host_port: true`.
pub const HCM_STRIP_TRAILING_HOST_DOT: bool = true;
/// See [`HCM_STRIP_TRAILING_HOST_DOT`].
pub const HCM_STRIP_ANY_HOST_PORT: bool = true;

/// The domains of a rollout host's virtual host: the host itself, and the host with an empty
/// port (`demo.local:`), which Envoy's `strip_any_host_port` leaves alone (it strips numeric
/// ports only). No `host:*` wildcard: a non-numeric "port" is not the rollout's host for the
/// filter either, so both answer "no rollout". `host` must pass [`check_host`].
pub fn route_domains(host: &str) -> [String; 2] {
    [host.to_owned(), format!("{host}:")]
}

/// The host an `:authority` names, case preserved: what Envoy's HCM makes of it with
/// `strip_trailing_host_dot` and `strip_any_host_port` (in that order, as Envoy applies them), an
/// empty port (`demo.local:`) cut off as well, repeated until nothing more is removed.
///
/// - trailing dot: the last `.` is removed when it ends the authority or directly precedes a
///   `:` (`demo.local.` → `demo.local`, `demo.local.:80` → `demo.local:80`);
/// - port: the text after the last `:` (when no `]` follows it) is removed with the `:` when it
///   is what Envoy's `absl::SimpleAtoi` reads as a `u32` (an optional `+`, then decimal digits,
///   at most 4294967295), or when it is empty.
///
/// Repeating makes the rule idempotent, so it gives the same host whether or not Envoy already
/// applied its one step to the authority the filter reads (`normalize(envoy(a)) ==
/// normalize(a)`): `Demo.Local.:8080` → `Demo.Local`, `demo.local..` → `demo.local`,
/// `[::1]:80` → `[::1]`; `demo.local:http` and `demo.local:99999999999` stay as they are (and
/// match no rollout). Allocates only in the odd case of a dot removed before a `:` that does not
/// start a port (`demo.local.:http`, `demo.local.:`).
pub fn normalize_authority(authority: &[u8]) -> Cow<'_, [u8]> {
    let mut current = Cow::Borrowed(authority);
    loop {
        let next = match &current {
            Cow::Borrowed(bytes) => normalize_step(bytes),
            Cow::Owned(bytes) => Cow::Owned(normalize_step(bytes).into_owned()),
        };
        // Every step that changes anything makes the authority shorter, so this ends.
        if next.len() == current.len() {
            return current;
        }
        current = next;
    }
}

/// What Envoy's HCM does to `:authority` with `strip_trailing_host_dot` and
/// `strip_any_host_port`: one trailing dot, then one numeric port. Exposed for tests that relate
/// the rule to Envoy's.
pub fn envoy_hcm_strip(authority: &[u8]) -> Cow<'_, [u8]> {
    match strip_trailing_dot(authority) {
        Cow::Borrowed(bytes) => Cow::Borrowed(strip_numeric_port(bytes)),
        Cow::Owned(bytes) => Cow::Owned(strip_numeric_port(&bytes).to_vec()),
    }
}

/// One step of [`normalize_authority`]: Envoy's, then an empty port.
fn normalize_step(authority: &[u8]) -> Cow<'_, [u8]> {
    match envoy_hcm_strip(authority) {
        Cow::Borrowed(bytes) => Cow::Borrowed(strip_empty_port(bytes)),
        Cow::Owned(bytes) => Cow::Owned(strip_empty_port(&bytes).to_vec()),
    }
}

/// Envoy's `HeaderUtility::stripTrailingHostDot`.
fn strip_trailing_dot(authority: &[u8]) -> Cow<'_, [u8]> {
    let Some(dot) = authority.iter().rposition(|&b| b == b'.') else {
        return Cow::Borrowed(authority);
    };
    let (host, rest) = authority.split_at(dot);
    // `rest` is the dot and what follows it.
    let after = rest.get(1..).unwrap_or_default();
    if after.is_empty() {
        return Cow::Borrowed(host);
    }
    if after.first() != Some(&b':') {
        return Cow::Borrowed(authority);
    }
    // `host.:…`: when only a port follows, removing the dot and then the port leaves `host`,
    // borrowed; otherwise the dot is cut out of the middle.
    if port_start(after) == Some(0) && is_u32_decimal(after.get(1..).unwrap_or_default()) {
        return Cow::Borrowed(host);
    }
    let mut dotless = Vec::with_capacity(authority.len());
    dotless.extend_from_slice(host);
    dotless.extend_from_slice(after);
    Cow::Owned(dotless)
}

/// Envoy's `HeaderUtility::getPortStart`: the last `:`, unless a `]` follows it.
fn port_start(authority: &[u8]) -> Option<usize> {
    let colon = authority.iter().rposition(|&b| b == b':')?;
    match authority.iter().rposition(|&b| b == b']') {
        Some(bracket) if bracket > colon => None,
        _ => Some(colon),
    }
}

/// Envoy's `HeaderUtility::stripPortFromHost` (any port).
fn strip_numeric_port(authority: &[u8]) -> &[u8] {
    match port_start(authority) {
        Some(colon) if is_u32_decimal(authority.get(colon + 1..).unwrap_or_default()) => {
            authority.get(..colon).unwrap_or(authority)
        }
        _ => authority,
    }
}

/// An empty port (`demo.local:`), which Envoy leaves.
fn strip_empty_port(authority: &[u8]) -> &[u8] {
    match port_start(authority) {
        Some(colon) if colon + 1 == authority.len() => authority.get(..colon).unwrap_or(authority),
        _ => authority,
    }
}

/// [`normalize_authority`] and ASCII lower-case: the key a host is looked up by. Policy hosts are
/// stored in this form (they must already be in it, see [`check_host`]).
pub fn normalize_host(authority: &str) -> Cow<'_, str> {
    let host = match normalize_authority(authority.as_bytes()) {
        // Only ASCII bytes are removed, so the rest is still UTF-8.
        Cow::Borrowed(bytes) => Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or(authority)),
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8(bytes).unwrap_or_default()),
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        host
    }
}

/// What `absl::SimpleAtoi` accepts as a `u32` in an authority (which Envoy has already checked
/// holds no whitespace): an optional `+`, one or more decimal digits, a value that fits.
fn is_u32_decimal(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"+").unwrap_or(text);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut value: u32 = 0;
    digits.iter().all(|&d| {
        match value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u32::from(d - b'0')))
        {
            Some(v) => {
                value = v;
                true
            }
            None => false,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Field syntax
// ---------------------------------------------------------------------------------------------

/// A rollout name: non-empty, without whitespace or control characters (`namespace/name`).
pub fn check_rollout_name(name: &str) -> Result<(), Violation> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return violation(format!(
            "{name:?} is not a rollout name (non-empty, without spaces or control characters)"
        ));
    }
    Ok(())
}

/// A rollout host: a lower-case DNS name without port or trailing dot (labels of `a-z`, `0-9`
/// and `-`, 1 to 63 long, not starting or ending with `-`; at most 253 characters). IPv4
/// addresses pass as such names. Wildcards are rejected: the filter looks hosts up exactly.
pub fn check_host(host: &str) -> Result<(), Violation> {
    if host.contains('*') {
        return violation(format!(
            "{host:?} is a wildcard; wildcard hosts are not supported, list each host"
        ));
    }
    let valid = !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !valid {
        return violation(format!(
            "{host:?} is not a lower-case DNS name without port or trailing dot \
             (labels of a-z, 0-9 and '-', separated by '.')"
        ));
    }
    Ok(())
}

/// A pod-template hash: 1 to [`MAX_HASH_LEN`] characters of `a-z`, `0-9` and `-`.
pub fn check_hash(hash: &str) -> Result<(), Violation> {
    let valid = !hash.is_empty()
        && hash.len() <= MAX_HASH_LEN
        && hash
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return violation(format!(
            "{hash:?} is not a pod-template hash (1 to {MAX_HASH_LEN} characters of a-z, 0-9, '-')"
        ));
    }
    Ok(())
}

/// A header route's name: non-empty (routes are told apart by name in logs and in Argo's
/// `setHeaderRoute`/`managedRoutes`); names are unique within a rollout.
pub fn check_route_name(name: &str) -> Result<(), Violation> {
    if name.is_empty() {
        return violation("must be non-empty".to_owned());
    }
    Ok(())
}

/// The canary, when there is one, is another version than stable.
pub fn check_canary_differs(stable: &str, canary: &str) -> Result<(), Violation> {
    if stable == canary {
        return violation(format!(
            "{canary:?} is also the stable hash; a canary must differ from stable"
        ));
    }
    Ok(())
}

/// A non-zero canary weight needs a canary.
pub fn check_weight_has_canary(weight_bp: u32, has_canary: bool) -> Result<(), Violation> {
    if weight_bp > 0 && !has_canary {
        return violation(format!("{weight_bp} needs a canary, and there is none"));
    }
    Ok(())
}

/// A canary weight in basis points: `0..=10000`.
pub fn check_weight_bp(weight_bp: u32) -> Result<(), Violation> {
    if weight_bp > MAX_WEIGHT_BP {
        return violation(format!("{weight_bp} is above {MAX_WEIGHT_BP} (100 %)"));
    }
    Ok(())
}

/// The newest policy schema this code implements (`FilterPolicy.schema_version`): 2 adds
/// `RolloutPolicy.additional_weights`.
pub const POLICY_SCHEMA: u32 = 2;

/// The schema a policy with (or without) additional weights needs: the lowest that holds it, so
/// a policy without them stays what it was before schema 2.
pub fn schema_for(has_additional_weights: bool) -> u32 {
    if has_additional_weights { 2 } else { 0 }
}

/// A policy's `schema_version` must be one this code implements.
pub fn check_schema_version(version: u32) -> Result<(), Violation> {
    if version > POLICY_SCHEMA {
        return violation(format!(
            "{version} is newer than this filter's schema {POLICY_SCHEMA}; upgrade the filter"
        ));
    }
    Ok(())
}

/// An additional weighted version (A/B/n) must differ from stable and from the canary: those have
/// their own shares.
pub fn check_additional_differs(
    hash: &str,
    stable: &str,
    canary: Option<&str>,
) -> Result<(), Violation> {
    if hash == stable {
        return violation(format!(
            "{hash:?} is the stable hash; stable gets what the others leave"
        ));
    }
    if canary == Some(hash) {
        return violation(format!(
            "{hash:?} is the canary hash; the canary has its own weight"
        ));
    }
    Ok(())
}

/// Adds one share to the running total of canary and additional weights: the sum may not pass
/// 10000 (100 %). Checked, so no input can overflow it.
pub fn add_weight(total_bp: u32, weight_bp: u32) -> Result<u32, Violation> {
    match total_bp.checked_add(weight_bp) {
        Some(sum) if sum <= MAX_WEIGHT_BP => Ok(sum),
        _ => Err(Violation(format!(
            "{weight_bp} brings canary and additional weights to more than {MAX_WEIGHT_BP} (100 %)"
        ))),
    }
}

/// RFC 9110 `tchar`: the bytes of a header name or a cookie name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A non-empty RFC 9110 token (a valid header field name or cookie name).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// A header a rule reads (a header-route match or the sticky header): a lower-case token, or a
/// `:`-prefixed pseudo-header such as `:path`.
pub fn check_header_name(name: &str) -> Result<(), Violation> {
    let token = name.strip_prefix(':').unwrap_or(name);
    if !is_token(token) || token.bytes().any(|b| b.is_ascii_uppercase()) {
        return violation(format!("{name:?} is not a lower-case HTTP header name"));
    }
    Ok(())
}

/// The routing header (the internal header that carries the chosen hash to Envoy's router): a
/// lower-case token, not a pseudo-header.
pub fn check_routing_header(name: &str) -> Result<(), Violation> {
    if !is_token(name) || name.bytes().any(|b| b.is_ascii_uppercase()) {
        return violation(format!(
            "{name:?} is not a lower-case HTTP header name (pseudo-headers are not allowed)"
        ));
    }
    Ok(())
}

/// The bucket header (weights in the routes: the header in which the filter hands the request's
/// bucket to the weighted route): a lower-case token other than the routing header, which must
/// keep meaning "this version".
pub fn check_bucket_header(name: &str, routing_header: &str) -> Result<(), Violation> {
    check_routing_header(name)?;
    if name == routing_header {
        return violation(format!(
            "{name:?} is also the routing header; the bucket header must differ from it"
        ));
    }
    Ok(())
}

/// A header that a rule reads must not be the routing header: a client could then pick a
/// version by sending it.
pub fn check_not_routing_header(name: &str, routing_header: &str) -> Result<(), Violation> {
    if name.eq_ignore_ascii_case(routing_header) {
        return violation(format!(
            "{name:?} is the routing header, which clients must not control"
        ));
    }
    Ok(())
}

/// A header-route regex, compiled as it is matched: against the whole value (anchored). The
/// pattern must also compile on its own, so that wrapping cannot give an unbalanced pattern such
/// as `a)|(b` a different meaning.
pub fn compile_header_regex(pattern: &str) -> Result<regex_lite::Regex, Violation> {
    regex_lite::Regex::new(pattern)
        .and_then(|_| regex_lite::Regex::new(&format!("^(?:{pattern})$")))
        .map_err(|e| Violation(format!("{pattern:?} is not a valid regex: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Cookies (RFC 6265bis)
// ---------------------------------------------------------------------------------------------

/// The `SameSite` attribute of the sticky cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// `SameSite=Lax`: the default (also what an empty policy field means).
    #[default]
    Lax,
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=None`: sent on cross-site requests too; requires `Secure`.
    None,
}

impl SameSite {
    /// The attribute value as written in `Set-Cookie` and in policies: `Lax`, `Strict`, `None`.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }

    /// Parses a policy's `sameSite` field: `Strict`, `Lax` or `None` (ASCII case ignored, as
    /// browsers do); empty means `Lax`.
    pub fn parse(text: &str) -> Result<Self, Violation> {
        match text.to_ascii_lowercase().as_str() {
            "" | "lax" => Ok(SameSite::Lax),
            "strict" => Ok(SameSite::Strict),
            "none" => Ok(SameSite::None),
            _ => Err(Violation(format!(
                "{text:?} is not a SameSite value (Strict, Lax or None)"
            ))),
        }
    }
}

/// The sticky cookie's name: an RFC 9110 token.
pub fn check_cookie_name(name: &str) -> Result<(), Violation> {
    if !is_token(name) {
        return violation(format!(
            "{name:?} is not a valid cookie name (an HTTP token: letters, digits and \
             !#$%&'*+-.^_`|~)"
        ));
    }
    Ok(())
}

/// Whether the sticky cookie must be `Secure` for a browser to keep it, and why: RFC 6265bis
/// cookie-name prefixes (matched ignoring ASCII case, as browsers do) and `SameSite=None`.
/// Sluice's cookie always has `Path=/` and never a `Domain`, which is what `__Host-` also needs.
pub fn check_cookie_secure(name: &str, secure: bool, same_site: SameSite) -> Result<(), Violation> {
    if secure {
        return Ok(());
    }
    let prefixed = |prefix: &str| {
        name.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    if prefixed("__Host-") || prefixed("__Secure-") {
        return violation(format!(
            "false, but a cookie named {name:?} must be Secure (RFC 6265bis cookie prefix); \
             set secure: true"
        ));
    }
    if same_site == SameSite::None {
        return violation(
            "false, but a SameSite=None cookie must be Secure (RFC 6265bis); set secure: true"
                .to_owned(),
        );
    }
    Ok(())
}

pub mod cases;

#[cfg(test)]
mod tests;
