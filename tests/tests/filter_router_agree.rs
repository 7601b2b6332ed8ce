//! Issue 7, section 4: the filter and Envoy's router agree, in a real Envoy.
//!
//! - Host normalisation is one rule (`sluice_proto::rules::normalize_authority`): a request the
//!   filter decides for is routed by the rollout's routes, and a request the router answers 404
//!   is never counted — with the HCM options every Sluice listener sets, and without them (the
//!   filter then writes the normalised `:authority` itself).
//! - A repeated request header is matched as Envoy's routes match it: values joined with `,`.
//! - The sticky key is read from every `Cookie` line.
//! - A `__Host-` sticky cookie carries `Secure`, and a client with a cookie jar keeps one version
//!   with one `Set-Cookie`.
//!
//! Needs the release module (`make wasm`) and the Envoy binary (see `sluice_e2e::paths`).

use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use sluice_e2e::demo::{CANARY, CONNECTIONS, HOST, Rig, STABLE, Upstreams, count, policy, repeat};
use sluice_e2e::{Envoy, Req, Resp, send_all};
use sluice_proto::rules::cases::AUTHORITIES;

/// Requests per authority.
const N: usize = 20;

/// Sends every authority of the shared table (its rollout host is [`HOST`]) and checks
/// that each was either decided by the filter and served by the rollout's route for that decision
/// (the filter sends everything to canary; the fallback route would send it to stable), or
/// answered 404 by the router and not counted. Returns how many were served.
async fn check_agreement(envoy: &mut Envoy, addr: std::net::SocketAddr) -> anyhow::Result<u64> {
    assert_eq!(HOST, "demo.local", "the table's rollout host");
    let mut served = 0;
    for (authority, normal) in AUTHORITIES {
        let responses = send_all(addr, repeat(Req::get(authority), N), CONNECTIONS).await?;
        envoy.ensure_running()?;
        let is_rollout_host = *normal == HOST;
        for response in &responses {
            if is_rollout_host {
                ensure!(
                    response.status == 200
                        && response.upstream() == Some(CANARY)
                        && response.seen_hash() == Some(CANARY),
                    "Host {authority:?} is the rollout's: the filter's decision must route it: \
                     {response:?}"
                );
            } else {
                // 400: Envoy refused the authority itself (e.g. empty) before any filter ran.
                ensure!(
                    response.status == 404 || response.status == 400,
                    "Host {authority:?} is no rollout's: 404 expected: {response:?}"
                );
            }
        }
        if is_rollout_host {
            served += N as u64;
        }
    }
    // Every served request counted, and nothing else: the counters stop at `served`.
    envoy.sluice_counters_reaching(served).await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let counters = envoy.sluice_counters_reaching(served).await?;
    let counted: u64 = counters.values().sum();
    ensure!(
        counted == served,
        "counted {counted} requests, served {served}: {counters:#?}"
    );
    Ok(served)
}

/// Issue 7: `Host: demo.local.` got 404 "no rollout for this host", and `Host: demo.local:` got
/// 404 after the filter had counted a decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_normalised_alike_by_the_filter_and_the_router() -> anyhow::Result<()> {
    // 100 % canary by the filter, 100 % stable by the fallback route.
    let mut rig = Rig::start(Some(&policy(10_000, json!({}))), [100, 0, 0]).await?;
    let served = check_agreement(&mut rig.envoy, rig.addr).await?;
    ensure!(served >= 10 * N as u64, "the table serves most authorities");
    Ok(())
}

/// The same table on a listener without `strip_trailing_host_dot`/`strip_any_host_port` (a
/// hand-written config that lacks them): the filter writes the normalised `:authority`, so the
/// router still routes what the filter decided for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_hcm_options_the_filter_normalises_the_authority() -> anyhow::Result<()> {
    let upstreams = Upstreams::start().await?;
    let mut config: Value =
        serde_json::from_str(&upstreams.config(Some(&policy(10_000, json!({}))), [100, 0, 0])?)?;
    let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let hcm = hcm.as_object_mut().context("HCM config")?;
    ensure!(hcm.remove("strip_trailing_host_dot").is_some());
    ensure!(hcm.remove("strip_any_host_port").is_some());
    let mut envoy = Envoy::start(&config.to_string()).await?;
    let addr = envoy.listener_addr(sluice_e2e::config::LISTENER).await?;
    check_agreement(&mut envoy, addr).await?;
    Ok(())
}

/// Issue 7: `x-canary: 1` and `x-canary: 0` on two lines were matched on the first value only.
/// Envoy's route matching sees one value, `1,0`, which does not equal `1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_headers_are_matched_joined_like_envoy_routes() -> anyhow::Result<()> {
    let routes = json!({"headerRoutes": [
        {"name": "testers", "matches": [{"name": "x-canary", "exact": "1"}], "canary": true},
        {"name": "both", "matches": [{"name": "x-team", "exact": "a,b"}], "canary": true},
    ]});
    let mut rig = Rig::start(Some(&policy(0, routes)), [100, 0, 0]).await?;
    let one = rig
        .send(repeat(Req::get(HOST).header("x-canary", "1"), N))
        .await?;
    assert_eq!(count(&one, CANARY), N as u64, "x-canary: 1 alone");
    for (first, second) in [("1", "0"), ("0", "1")] {
        let both = rig
            .send(repeat(
                Req::get(HOST)
                    .header("x-canary", first)
                    .header("x-canary", second),
                N,
            ))
            .await?;
        assert_eq!(
            count(&both, STABLE),
            N as u64,
            "x-canary: {first} then x-canary: {second} is {first},{second}, not 1"
        );
    }
    let joined = rig
        .send(repeat(
            Req::get(HOST).header("x-team", "a").header("x-team", "b"),
            N,
        ))
        .await?;
    assert_eq!(
        count(&joined, CANARY),
        N as u64,
        "x-team: a + x-team: b is a,b"
    );
    Ok(())
}

/// The `name=value` part of a Set-Cookie header.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap_or_default().trim()
}

/// Issue 7: with two `Cookie:` lines and the sticky key in the second, the key was lost (a new
/// Set-Cookie on every request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sticky_key_is_read_from_every_cookie_line() -> anyhow::Result<()> {
    const CLIENTS: usize = 100;
    let sticky = json!({"stickiness": {"cookie": {"name": "sluice", "maxAgeSeconds": 3600}}});
    let mut rig = Rig::start(Some(&policy(5000, sticky)), [50, 50, 0]).await?;
    let first = rig.send(repeat(Req::get(HOST), CLIENTS)).await?;
    let visits: Vec<(String, String)> = first
        .iter()
        .map(|r| {
            let set_cookie = r
                .header("set-cookie")
                .context("first visit gets a cookie")?;
            Ok((
                cookie_pair(set_cookie).to_string(),
                r.upstream().unwrap_or_default().to_string(),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let returns: Vec<Req> = visits
        .iter()
        .map(|(pair, _)| {
            Req::get(HOST)
                .header("cookie", "theme=dark")
                .header("cookie", &format!("lang=en; {pair}"))
        })
        .collect();
    let responses = rig.send(returns).await?;
    for (response, (pair, version)) in responses.iter().zip(&visits) {
        assert_eq!(
            response.upstream(),
            Some(version.as_str()),
            "{pair} in the 2nd line"
        );
        assert!(
            response.header("set-cookie").is_none(),
            "no new Set-Cookie when {pair} is in the second Cookie line: {response:?}"
        );
    }
    Ok(())
}

/// A client cookie jar with the storage rules of RFC 6265bis that make browsers and curl drop a
/// cookie: `__Secure-` needs `Secure`; `__Host-` needs `Secure`, `Path=/` and no `Domain`;
/// `SameSite=None` needs `Secure`. The origin counts as secure (TLS in front of Envoy, as any
/// deployment of `Secure` cookies has).
#[derive(Debug, Default)]
struct CookieJar {
    cookies: Vec<(String, String)>,
}

impl CookieJar {
    /// Stores a Set-Cookie if a browser would; returns whether it did.
    fn store(&mut self, set_cookie: &str) -> bool {
        let mut parts = set_cookie.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else {
            return false;
        };
        let (mut secure, mut path, mut domain, mut same_site_none) = (false, None, false, false);
        for attribute in parts {
            let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
            match key.to_ascii_lowercase().as_str() {
                "secure" => secure = true,
                "path" => path = Some(val.to_string()),
                "domain" => domain = true,
                "samesite" => same_site_none = val.eq_ignore_ascii_case("none"),
                _ => {}
            }
        }
        let lower = name.to_ascii_lowercase();
        if (lower.starts_with("__secure-") || same_site_none) && !secure {
            return false;
        }
        if lower.starts_with("__host-") && !(secure && path.as_deref() == Some("/") && !domain) {
            return false;
        }
        self.cookies.retain(|(n, _)| n != name);
        self.cookies.push((name.to_string(), value.to_string()));
        true
    }

    fn header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// Issue 7: a `__Host-sluice` cookie never carried `Secure`, so a cookie jar dropped it: 21
/// requests, 21 Set-Cookie headers, split across versions. With `secure: true` (required for
/// such a name now): one Set-Cookie, one version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_prefixed_cookie_is_kept_by_a_cookie_jar() -> anyhow::Result<()> {
    for (name, same_site) in [("__Host-sluice", "Strict"), ("__Secure-sluice", "None")] {
        let sticky = json!({"stickiness": {"cookie": {
            "name": name, "maxAgeSeconds": 3600, "secure": true, "sameSite": same_site
        }}});
        let mut rig = Rig::start(Some(&policy(5000, sticky)), [50, 50, 0]).await?;
        let mut jar = CookieJar::default();
        let mut set_cookies = Vec::new();
        let mut versions = std::collections::BTreeSet::new();
        for _ in 0..21 {
            let mut req = Req::get(HOST);
            if let Some(cookie) = jar.header() {
                req = req.header("cookie", &cookie);
            }
            let response: Resp = rig.send(vec![req]).await?.remove(0);
            for set_cookie in response.header_all("set-cookie") {
                assert!(jar.store(set_cookie), "the jar drops {set_cookie:?}");
                set_cookies.push(set_cookie.to_string());
            }
            versions.insert(response.upstream().unwrap_or_default().to_string());
        }
        assert_eq!(
            set_cookies.len(),
            1,
            "{name}: one Set-Cookie: {set_cookies:?}"
        );
        assert!(
            set_cookies[0].ends_with(&format!(
                "; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite={same_site}"
            )) && !set_cookies[0].contains("Domain"),
            "{}",
            set_cookies[0]
        );
        assert_eq!(
            versions.len(),
            1,
            "{name}: one version for all 21: {versions:?}"
        );
    }
    Ok(())
}

/// The jar itself drops what the filter used to send for a `__Host-` name, so the test above
/// can fail.
#[test]
fn the_jar_drops_a_host_cookie_without_secure() {
    let mut jar = CookieJar::default();
    assert!(!jar.store("__Host-sluice=k; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"));
    assert!(!jar.store("__Secure-sluice=k; Path=/; HttpOnly; SameSite=Lax"));
    assert!(!jar.store("s=k; Path=/; HttpOnly; SameSite=None"));
    assert!(jar.store("__Host-sluice=k; Path=/; Secure; HttpOnly; SameSite=Lax"));
    assert_eq!(jar.header().as_deref(), Some("__Host-sluice=k"));
}
