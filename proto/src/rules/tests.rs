use super::cases::*;
use super::*;

#[test]
fn authorities_normalise_as_envoy_strips_them() {
    for (authority, want) in AUTHORITIES {
        assert_eq!(normalize_host(authority), *want, "authority {authority:?}");
    }
}

#[test]
fn normalising_borrows_unless_a_dot_before_a_non_port_is_removed() {
    assert!(matches!(
        normalize_authority(b"demo.local.:80"),
        Cow::Borrowed(b"demo.local")
    ));
    assert_eq!(normalize_authority(b"demo.local.:").as_ref(), b"demo.local");
    assert!(matches!(
        normalize_authority(b"demo.local.:http"),
        Cow::Owned(_)
    ));
    assert!(matches!(
        normalize_authority(b"demo.local..:80"),
        Cow::Borrowed(b"demo.local")
    ));
    assert!(matches!(
        normalize_authority(b"demo.local:80"),
        Cow::Borrowed(b"demo.local")
    ));
    assert!(matches!(
        normalize_authority(b"demo.local."),
        Cow::Borrowed(b"demo.local")
    ));
    assert!(matches!(
        normalize_host("demo.local:80"),
        Cow::Borrowed("demo.local")
    ));
    assert_eq!(
        normalize_authority(b"Demo.Local.:80").as_ref(),
        b"Demo.Local"
    );
}

#[test]
fn route_domains_cover_the_empty_port() {
    assert_eq!(route_domains("demo.local"), ["demo.local", "demo.local:"]);
}

#[test]
fn field_tables() {
    for (host, ok) in HOSTS {
        assert_eq!(check_host(host).is_ok(), *ok, "host {host:?}");
    }
    for (hash, ok) in HASHES {
        assert_eq!(check_hash(hash).is_ok(), *ok, "hash {hash:?}");
    }
    for (name, ok) in HEADER_NAMES {
        assert_eq!(check_header_name(name).is_ok(), *ok, "header {name:?}");
    }
    for (name, ok) in ROLLOUT_NAMES {
        assert_eq!(
            check_rollout_name(name).is_ok(),
            *ok,
            "rollout name {name:?}"
        );
    }
    for (weight, ok) in WEIGHTS {
        assert_eq!(check_weight_bp(*weight).is_ok(), *ok, "weight {weight}");
    }
    for (re, ok) in REGEXES {
        assert_eq!(compile_header_regex(re).is_ok(), *ok, "regex {re:?}");
    }
    for (name, secure, same_site, ok) in COOKIES {
        let got = check_cookie_name(name).is_ok()
            && SameSite::parse(same_site)
                .is_ok_and(|same_site| check_cookie_secure(name, *secure, same_site).is_ok());
        assert_eq!(
            got, *ok,
            "cookie {name:?} secure={secure} sameSite={same_site:?}"
        );
    }
}

#[test]
fn wildcard_hosts_are_named_as_such() {
    let e = check_host("*.example.com").expect_err("wildcard");
    assert!(e.to_string().contains("wildcard"), "{e}");
}

#[test]
fn anchored_regexes_match_whole_values() {
    let re = compile_header_regex("c+").expect("valid");
    assert!(re.is_match("ccc"));
    assert!(!re.is_match("xccc"));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The rule gives the same host whether or not Envoy's HCM stripped the authority first,
        /// and normalising twice changes nothing.
        #[test]
        fn normalising_after_envoy_is_normalising(authority in "[aA.:+1-9\\[\\]-]{0,16}") {
            let bytes = authority.as_bytes();
            let once = normalize_authority(bytes).into_owned();
            prop_assert_eq!(normalize_authority(&envoy_hcm_strip(bytes)).into_owned(), once.clone());
            prop_assert_eq!(normalize_authority(&once).into_owned(), once);
        }

        #[test]
        fn normalising_never_panics_and_is_idempotent_on_hosts(authority in "\\PC{0,40}") {
            let once = normalize_host(&authority).into_owned();
            // A normalised rollout host normalises to itself.
            if check_host(&once).is_ok() {
                prop_assert_eq!(normalize_host(&once), once.as_str());
            }
        }

        #[test]
        fn every_valid_host_is_its_own_normal_form_with_any_suffix(
            host in "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,3}",
            port in proptest::option::of(0u32..=65535),
            dot in any::<bool>(),
        ) {
            let mut authority = host.clone();
            if dot { authority.push('.'); }
            if let Some(port) = port { authority.push_str(&format!(":{port}")); }
            prop_assert_eq!(normalize_host(&authority), host.as_str());
        }
    }
}

#[test]
fn the_bucket_header_is_a_lower_case_token_other_than_the_routing_header() {
    assert!(check_bucket_header("x-sluice-bucket", "x-sluice-hash").is_ok());
    for bad in ["X-Bucket", "bad header", ":authority", "", "x-sluice-hash"] {
        assert!(
            check_bucket_header(bad, "x-sluice-hash").is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn additional_weights_differ_from_stable_and_canary_and_sum_to_at_most_100_percent() {
    assert!(check_additional_differs("ccc", "aaa", Some("bbb")).is_ok());
    assert!(check_additional_differs("aaa", "aaa", Some("bbb")).is_err());
    assert!(check_additional_differs("bbb", "aaa", Some("bbb")).is_err());
    assert!(check_additional_differs("bbb", "aaa", None).is_ok());
    assert_eq!(add_weight(9000, 1000), Ok(10_000));
    assert!(add_weight(9000, 1001).is_err());
    assert!(add_weight(1, u32::MAX).is_err());
}

#[test]
fn schema_versions_up_to_this_codes_are_accepted() {
    assert!(check_schema_version(0).is_ok());
    assert!(check_schema_version(POLICY_SCHEMA).is_ok());
    assert!(check_schema_version(POLICY_SCHEMA + 1).is_err());
    assert_eq!(schema_for(false), 0);
    assert_eq!(schema_for(true), 2);
}
