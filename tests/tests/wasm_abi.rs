//! The Wasm filter relies on its proxy-wasm ABI: it does not call Envoy's `clear_route_cache`
//! foreign function because Envoy (1.33 and later) clears the route cache itself when a module of
//! ABI 0.2.1 or older writes a request header (`WRITE_CLEARS_ROUTE_CACHE` in `filter/src/lib.rs`).
//! The re-routing e2e tests (`--test filter`, `--test filter_router_agree`) prove that Envoy does;
//! this test catches the other half: an SDK upgrade that makes the module declare a newer ABI,
//! for which Envoy no longer clears the cache (then the explicit call must come back).
//!
//! Needs the release module (`make wasm`), or `$SLUICE_WASM`.

use anyhow::Context;

/// The ABI marker functions a proxy-wasm module exports, one per declared ABI version.
const ABI_EXPORT: &[u8] = b"proxy_abi_version_";

/// Names of the `proxy_abi_version_*` exports found in `module` (a stripped release module keeps
/// export names only in its export section).
fn abi_exports(module: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = module;
    while let Some(at) = rest.windows(ABI_EXPORT.len()).position(|w| w == ABI_EXPORT) {
        let tail = &rest[at..];
        let end = tail
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .unwrap_or(tail.len());
        found.push(String::from_utf8_lossy(&tail[..end]).into_owned());
        rest = &tail[end..];
    }
    found
}

#[test]
fn the_module_declares_abi_0_2_1() -> anyhow::Result<()> {
    let path = sluice_e2e::paths::filter_wasm()?;
    let module = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let exports = abi_exports(&module);
    assert_eq!(
        exports,
        ["proxy_abi_version_0_2_1"],
        "{} must declare exactly ABI 0.2.1: with a newer ABI Envoy no longer clears the route \
         cache on header writes, so set WRITE_CLEARS_ROUTE_CACHE = false in filter/src/lib.rs",
        path.display()
    );
    Ok(())
}

#[test]
fn abi_exports_are_found_by_name() {
    let module =
        b"\x00asm..proxy_abi_version_0_2_1\x00..proxy_on_tick..proxy_abi_version_0_3_0\x01";
    assert_eq!(
        abi_exports(module),
        ["proxy_abi_version_0_2_1", "proxy_abi_version_0_3_0"]
    );
    assert!(abi_exports(b"\x00asm no marker").is_empty());
}
