//! The hooks driven as Envoy drives them, against the fake host (`crate::fake_host`).

use std::ffi::c_void;

use crate::abi::{CONTINUE, ConfigModulePtr, EnvoyBuffer};
use crate::fake_host::{Host, with_host};
use crate::hooks::*;

/// A dummy non-null Envoy pointer (the fake host keeps its state per thread).
fn envoy_ptr() -> *mut c_void {
    std::ptr::NonNull::<u8>::dangling().as_ptr().cast()
}

fn buffer(bytes: &[u8]) -> EnvoyBuffer {
    EnvoyBuffer {
        ptr: bytes.as_ptr(),
        length: bytes.len(),
    }
}

fn reset() {
    with_host(|host| *host = Host::default());
}

fn configure(policy: &str) -> ConfigModulePtr {
    envoy_dynamic_module_on_http_filter_config_new(
        envoy_ptr(),
        buffer(b"sluice"),
        buffer(policy.as_bytes()),
    )
}

const POLICY: &str = r#"{"routingHeader": "x-sluice-hash", "rollouts": [{
    "name": "default/demo", "hosts": ["demo.local"], "versions": ["s1", "c1"],
    "stableHash": "s1", "canaryHash": "c1", "canaryWeightBp": 10000}]}"#;

/// One request through the hooks: request headers, response headers, destroy.
fn request(config: ConfigModulePtr, headers: &[(&str, &str)]) -> Host {
    with_host(|host| {
        host.request = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        host.response.clear();
        host.route_cache_clears = 0;
    });
    let filter = envoy_dynamic_module_on_http_filter_new(config, envoy_ptr());
    assert!(!filter.is_null());
    assert_eq!(
        envoy_dynamic_module_on_http_filter_request_headers(envoy_ptr(), filter, true),
        CONTINUE
    );
    assert_eq!(
        envoy_dynamic_module_on_http_filter_response_headers(envoy_ptr(), filter, true),
        CONTINUE
    );
    envoy_dynamic_module_on_http_filter_stream_complete(envoy_ptr(), filter);
    envoy_dynamic_module_on_http_filter_destroy(filter);
    with_host(std::mem::take)
}

fn header<'a>(map: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
    map.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
        .collect()
}

#[test]
fn program_init_returns_the_pinned_abi_version() {
    let version = envoy_dynamic_module_on_program_init();
    // SAFETY: the hook returns a pointer to a NUL-terminated static string.
    let version = unsafe { std::ffi::CStr::from_ptr(version) };
    assert_eq!(version.to_str(), Ok("v0.2.0"));
}

#[test]
fn config_defines_the_wasm_builds_counters() {
    reset();
    let config = configure(POLICY);
    assert!(!config.is_null());
    let names = with_host(|host| host.counter_names.clone());
    assert_eq!(names.len(), 6);
    assert_eq!(
        names[0],
        "sluice_requests_total.rollout.default_demo.version.s1.reason.header"
    );
    assert_eq!(
        names[5],
        "sluice_requests_total.rollout.default_demo.version.c1.reason.weight"
    );
    envoy_dynamic_module_on_http_filter_config_destroy(config);
}

#[test]
fn invalid_policy_is_rejected_with_the_cores_message() {
    reset();
    let config = configure(&POLICY.replace("10000}", "12000}"));
    assert!(config.is_null());
    let logs = with_host(|host| host.logs.clone());
    assert!(
        logs.iter()
            .any(|l| l.starts_with("sluice: invalid policy: ")
                && l.contains("default/demo")
                && l.contains("canaryWeightBp: 12000 is above 10000")),
        "{logs:?}"
    );
    assert!(configure("not a policy").is_null());
}

#[test]
fn known_host_is_routed_counted_and_the_route_cache_cleared() {
    reset();
    let config = configure(POLICY);
    // A client-sent routing header is replaced, not added to.
    let host = request(
        config,
        &[(":authority", "Demo.Local:8080"), ("x-sluice-hash", "s1")],
    );
    assert_eq!(header(&host.request, "x-sluice-hash"), [b"c1".as_slice()]);
    assert_eq!(host.route_cache_clears, 1);
    envoy_dynamic_module_on_http_filter_config_destroy(config);
}

#[test]
fn counts_one_per_request_in_the_decisions_slot() {
    reset();
    let config = configure(POLICY);
    for _ in 0..3 {
        with_host(|host| {
            host.request = vec![(":authority".into(), b"demo.local".to_vec())];
        });
        let filter = envoy_dynamic_module_on_http_filter_new(config, envoy_ptr());
        envoy_dynamic_module_on_http_filter_request_headers(envoy_ptr(), filter, true);
        envoy_dynamic_module_on_http_filter_destroy(filter);
    }
    let (names, counters) = with_host(|host| (host.counter_names.clone(), host.counters.clone()));
    let weight_c1 = names
        .iter()
        .position(|n| n.ends_with("version.c1.reason.weight"))
        .expect("counter defined");
    assert_eq!(counters[weight_c1], 3);
    assert_eq!(counters.iter().sum::<u64>(), 3);
    envoy_dynamic_module_on_http_filter_config_destroy(config);
}

#[test]
fn unknown_host_passes_untouched() {
    reset();
    let config = configure(POLICY);
    let host = request(
        config,
        &[(":authority", "other.local"), ("x-sluice-hash", "s1")],
    );
    assert_eq!(header(&host.request, "x-sluice-hash"), [b"s1".as_slice()]);
    assert_eq!(host.route_cache_clears, 0);
    assert!(host.counters.iter().all(|&c| c == 0));
    let host = request(config, &[]);
    assert_eq!(host.route_cache_clears, 0);
    envoy_dynamic_module_on_http_filter_config_destroy(config);
}

#[test]
fn cookie_stickiness_hands_out_a_cookie_once() {
    reset();
    let policy = POLICY.replace(
        "\"canaryWeightBp\": 10000",
        "\"canaryWeightBp\": 5000, \"stickiness\": {\"cookie\": {\"name\": \"sl\"}}",
    );
    let config = configure(&policy);
    assert!(!config.is_null());
    let first = request(config, &[(":authority", "demo.local")]);
    let cookies = header(&first.response, "set-cookie");
    assert_eq!(cookies.len(), 1, "{:?}", first.response);
    let cookie = String::from_utf8_lossy(cookies[0]).into_owned();
    assert!(cookie.starts_with("sl="), "{cookie}");
    let pair = cookie.split(';').next().unwrap_or_default().to_string();
    let chosen = header(&first.request, "x-sluice-hash")[0].to_vec();
    // The cookie's key keeps the version, and no new cookie is handed out.
    for _ in 0..5 {
        let again = request(config, &[(":authority", "demo.local"), ("cookie", &pair)]);
        assert!(header(&again.response, "set-cookie").is_empty());
        assert_eq!(
            header(&again.request, "x-sluice-hash")[0],
            chosen.as_slice()
        );
    }
    envoy_dynamic_module_on_http_filter_config_destroy(config);
}

#[test]
fn null_pointers_from_envoy_are_ignored() {
    reset();
    let null = std::ptr::null();
    assert_eq!(
        envoy_dynamic_module_on_http_filter_request_headers(envoy_ptr(), null, true),
        CONTINUE
    );
    assert_eq!(
        envoy_dynamic_module_on_http_filter_response_headers(envoy_ptr(), null, false),
        CONTINUE
    );
    envoy_dynamic_module_on_http_filter_destroy(null);
    envoy_dynamic_module_on_http_filter_config_destroy(null);
    // A filter made from a null config passes requests through.
    let host = request(null, &[(":authority", "demo.local")]);
    assert!(header(&host.request, "x-sluice-hash").is_empty());
}

#[test]
fn a_panicking_hook_body_returns_the_fallback_and_logs_once() {
    reset();
    let hook = || -> u32 { panic!("boom") };
    assert_eq!(guard_for_test(7, hook), 7);
    assert_eq!(guard_for_test(7, hook), 7);
    let logs = with_host(|host| host.logs.clone());
    assert!(logs.len() <= 1, "{logs:?}");
}

/// What the control plane sends: weights in the routes (`bucketHeader`), a header route.
const SPLIT_POLICY: &str = r#"{"routingHeader": "x-sluice-hash", "bucketHeader": "x-sluice-bucket",
    "rollouts": [{"name": "default/demo", "hosts": ["demo.local"], "versions": ["s1", "c1"],
    "stableHash": "s1", "canaryHash": "c1",
    "headerRoutes": [{"name": "testers", "matches": [{"name": "x-canary", "exact": "1"}],
                      "canary": true}]}]}"#;

fn counter(host: &Host, suffix: &str) -> u64 {
    let index = host
        .counter_names
        .iter()
        .position(|n| n.ends_with(suffix))
        .expect("counter defined");
    host.counters[index]
}

/// Issue 7 §5 in the native build: with a bucket header the module writes the request's bucket
/// (the router applies the weight), not a version picked with the policy's (absent) weight.
#[test]
fn bucket_mode_writes_the_bucket_and_counts_a_split_decision() {
    reset();
    let config = configure(SPLIT_POLICY);
    assert!(!config.is_null());
    assert_eq!(with_host(|host| host.counter_names.len()), 8);
    let host = request(
        config,
        &[(":authority", "demo.local"), ("x-sluice-bucket", "1")],
    );
    let buckets = header(&host.request, "x-sluice-bucket");
    assert_eq!(buckets.len(), 1, "{:?}", host.request);
    let bucket: u32 = std::str::from_utf8(buckets[0])
        .ok()
        .and_then(|b| b.parse().ok())
        .expect("a decimal bucket");
    assert!(bucket < 10_000);
    assert!(header(&host.request, "x-sluice-hash").is_empty());
    assert_eq!(host.route_cache_clears, 1);
    assert_eq!(counter(&host, "version._split.reason.weight"), 1);
    envoy_dynamic_module_on_http_filter_config_destroy(config);
}

#[test]
fn bucket_mode_header_route_pins_the_version_and_removes_the_bucket() {
    reset();
    let config = configure(SPLIT_POLICY);
    let host = request(
        config,
        &[
            (":authority", "demo.local"),
            ("x-canary", "1"),
            ("x-sluice-bucket", "9999"),
        ],
    );
    assert_eq!(header(&host.request, "x-sluice-hash"), [b"c1".as_slice()]);
    assert!(header(&host.request, "x-sluice-bucket").is_empty());
    assert_eq!(counter(&host, "version.c1.reason.header"), 1);
    envoy_dynamic_module_on_http_filter_config_destroy(config);
}

/// Issue 7 §4 in the native build: repeated headers joined (`1,0` does not match `1`), the
/// sticky cookie found in a second `Cookie` field, `:authority` written back in normal form.
#[test]
fn native_reads_headers_by_the_shared_rules() {
    reset();
    let config = configure(SPLIT_POLICY);
    let host = request(
        config,
        &[
            (":authority", "demo.local."),
            ("x-canary", "1"),
            ("x-canary", "0"),
        ],
    );
    assert!(header(&host.request, "x-sluice-hash").is_empty());
    assert_eq!(
        header(&host.request, ":authority"),
        [b"demo.local".as_slice()]
    );
    envoy_dynamic_module_on_http_filter_config_destroy(config);

    let sticky = SPLIT_POLICY.replace(
        "\"canaryHash\": \"c1\",",
        "\"canaryHash\": \"c1\", \"stickiness\": {\"cookie\": {\"name\": \"sl\"}},",
    );
    let config = configure(&sticky);
    assert!(!config.is_null());
    let host = request(
        config,
        &[
            (":authority", "demo.local"),
            ("cookie", "a=1"),
            ("cookie", "b=2; sl=key-9"),
        ],
    );
    assert!(header(&host.response, "set-cookie").is_empty());
    let want = sluice_filter::decision::bucket(b"key-9").to_string();
    assert_eq!(header(&host.request, "x-sluice-bucket"), [want.as_bytes()]);
    envoy_dynamic_module_on_http_filter_config_destroy(config);
}

/// A/B/n through the native hooks: the whole share on an additional version routes and counts
/// every request there (the core's `version_of_bucket`, as the Wasm build applies it).
#[test]
fn an_additional_version_is_routed_and_counted_in_its_own_slot() {
    reset();
    let config = configure(
        r#"{"rollouts": [{"name": "default/demo", "hosts": ["demo.local"],
            "versions": ["s1", "c1", "b1"], "stableHash": "s1", "canaryHash": "c1",
            "additionalWeights": [{"name": "baseline", "hash": "b1", "weightBp": 10000}]}]}"#,
    );
    assert!(!config.is_null());
    let names = with_host(|host| host.counter_names.clone());
    let b1 = names
        .iter()
        .position(|n| n.ends_with("version.b1.reason.weight"))
        .expect("a counter for b1");
    for _ in 0..3 {
        with_host(|host| {
            host.request = vec![(":authority".into(), b"demo.local".to_vec())];
        });
        let filter = envoy_dynamic_module_on_http_filter_new(config, envoy_ptr());
        envoy_dynamic_module_on_http_filter_request_headers(envoy_ptr(), filter, true);
        envoy_dynamic_module_on_http_filter_destroy(filter);
        let written = with_host(|host| header(&host.request, "x-sluice-hash").concat());
        assert_eq!(written, b"b1");
    }
    let counters = with_host(|host| host.counters.clone());
    assert_eq!(counters[b1], 3);
    assert_eq!(counters.iter().sum::<u64>(), 3);
    envoy_dynamic_module_on_http_filter_config_destroy(config);
}
