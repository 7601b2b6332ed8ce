//! One table of values the policy rules accept or reject, run by the tests of the filter
//! (`filter/tests/policy.rs`) and of the control plane (`sluice-model`), so the two sides are
//! checked against the same cases and cannot drift. `true`: accepted.

/// Rollout hosts.
pub const HOSTS: &[(&str, bool)] = &[
    ("demo.local", true),
    ("demo", true),
    ("a-b.example.com", true),
    ("10.0.0.1", true),
    ("xn--bcher-kva.example", true),
    ("*.example.com", false),
    ("*", false),
    ("demo.*", false),
    ("Demo.local", false),
    ("demo.local:8080", false),
    ("demo.local:", false),
    ("demo.local.", false),
    ("", false),
    ("a..b", false),
    (".demo", false),
    ("-a.local", false),
    ("a-.local", false),
    ("under_score.local", false),
    ("[::1]", false),
    ("d\u{e9}mo.local", false),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.local",
        true,
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.local",
        false,
    ),
];

/// Pod-template hashes.
pub const HASHES: &[(&str, bool)] = &[
    ("6d4f8b7c9", true),
    ("stable-1", true),
    ("a", true),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        true,
    ),
    (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        false,
    ),
    ("", false),
    ("ABC", false),
    ("a b", false),
    ("a.b", false),
    ("a_b", false),
];

/// Names of headers a rule reads (header-route matches, the sticky header).
pub const HEADER_NAMES: &[(&str, bool)] = &[
    ("x-canary", true),
    ("user-agent", true),
    (":path", true),
    ("x_under", true),
    ("X-Canary", false),
    ("", false),
    (":", false),
    ("x canary", false),
    ("a:b", false),
    ("x-caf\u{e9}", false),
];

/// Rollout names.
pub const ROLLOUT_NAMES: &[(&str, bool)] = &[
    ("default/demo", true),
    ("demo", true),
    ("", false),
    ("default/ demo", false),
    ("default/demo\n", false),
];

/// Canary weights in basis points.
pub const WEIGHTS: &[(u32, bool)] = &[
    (0, true),
    (1, true),
    (10_000, true),
    (10_001, false),
    (u32::MAX, false),
];

/// Header-route regexes.
pub const REGEXES: &[(&str, bool)] = &[
    (".*Mobile.*", true),
    ("c+", true),
    ("", true),
    ("(", false),
    ("a)|(b", false),
    ("[", false),
];

/// Sticky cookies: (name, secure, sameSite as written in a policy, accepted).
pub const COOKIES: &[(&str, bool, &str, bool)] = &[
    ("sluice", false, "", true),
    ("sluice", false, "Lax", true),
    ("sluice", false, "Strict", true),
    ("sluice", true, "None", true),
    ("sluice", false, "None", false),
    ("sluice", false, "Sometimes", false),
    ("__Host-sluice", true, "", true),
    ("__Host-sluice", false, "", false),
    ("__host-sluice", false, "Lax", false),
    ("__Secure-sluice", true, "Strict", true),
    ("__Secure-sluice", false, "Strict", false),
    ("__SECURE-sluice", false, "", false),
    ("", true, "", false),
    ("a;b", true, "", false),
    ("a b", false, "", false),
];

/// `:authority` values and the host they normalise to (see
/// [`normalize_host`](super::normalize_host)), whether or not Envoy's HCM already stripped them
/// (`strip_trailing_host_dot`, `strip_any_host_port`).
pub const AUTHORITIES: &[(&str, &str)] = &[
    ("demo.local", "demo.local"),
    ("DEMO.Local", "demo.local"),
    ("demo.local:8080", "demo.local"),
    ("demo.local:", "demo.local"),
    ("demo.local.", "demo.local"),
    ("demo.local.:8080", "demo.local"),
    ("Demo.Local.:", "demo.local"),
    ("demo.local:80.", "demo.local"),
    ("demo.local:+80", "demo.local"),
    ("demo.local:4294967295", "demo.local"),
    ("demo.local:4294967296", "demo.local:4294967296"),
    ("demo.local:99999999999", "demo.local:99999999999"),
    ("demo.local:http", "demo.local:http"),
    ("demo.local:+", "demo.local:+"),
    ("demo.local:-1", "demo.local:-1"),
    ("demo.local..", "demo.local"),
    ("demo.local:80:80", "demo.local"),
    ("demo.local.:80.", "demo.local"),
    ("demo.local:http:80", "demo.local:http"),
    ("demo.local.:http", "demo.local:http"),
    ("[::1]:80", "[::1]"),
    ("[::1]", "[::1]"),
    ("[FE80::1]:443", "[fe80::1]"),
    ("", ""),
    (".", ""),
    (":", ""),
];
