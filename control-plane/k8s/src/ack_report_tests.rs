use super::*;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).expect("valid")
}

fn config(identity: &str) -> ReportConfig {
    ReportConfig {
        namespace: "sluice-system".into(),
        identity: identity.into(),
        duration: Duration::from_secs(15),
    }
}

fn report(pairs: &[(&str, &str, Option<i64>)]) -> AckReport {
    let mut report = AckReport::default();
    for (rollout, node, acked) in pairs {
        report
            .rollouts
            .entry((*rollout).into())
            .or_default()
            .push(ReportedProxy {
                node: (*node).into(),
                acked: *acked,
                nack: None,
            });
    }
    report
}

fn nodes(acks: &[ProxyAck]) -> Vec<(&str, Option<i64>)> {
    acks.iter()
        .map(|a| (a.node_id.as_str(), a.acked_generation))
        .collect()
}

#[test]
fn a_report_lease_round_trips_and_names_its_replica() {
    let written = report_lease(
        &config("sluice-b"),
        &report(&[("shop/cart", "envoy-1", Some(3))]),
        None,
        at(0),
    )
    .expect("encodes");
    assert_eq!(
        written.metadata.name.as_deref(),
        Some("sluice-acks-sluice-b")
    );
    assert_eq!(written.metadata.namespace.as_deref(), Some("sluice-system"));
    assert_eq!(
        written
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REPORT_LABEL))
            .map(String::as_str),
        Some("true")
    );
    let spec = written.spec.clone().expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("sluice-b"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    let mut reports = Reports::default();
    reports.apply(&written);
    assert_eq!(
        nodes(&reports.proxies("shop/cart", "sluice-a", at(1))),
        [("envoy-1", Some(3))]
    );
    assert!(reports.proxies("web/front", "sluice-a", at(1)).is_empty());
}

#[test]
fn a_renewal_keeps_the_resource_version_and_replaces_the_report() {
    let mut first = report_lease(&config("b"), &report(&[]), None, at(0)).expect("encodes");
    first.metadata.resource_version = Some("7".into());
    let next = report_lease(
        &config("b"),
        &report(&[("shop/cart", "e", Some(1))]),
        Some(&first),
        at(5),
    )
    .expect("encodes");
    assert_eq!(next.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(next.spec.and_then(|s| s.renew_time), Some(MicroTime(at(5))));
}

#[test]
fn a_stale_report_drops_out_and_the_own_one_is_skipped() {
    let mut reports = Reports::default();
    for (identity, renewed) in [("a", 0), ("b", 0), ("c", 10)] {
        let lease = report_lease(
            &config(identity),
            &report(&[("shop/cart", &format!("envoy-{identity}"), Some(2))]),
            None,
            at(renewed),
        )
        .expect("encodes");
        reports.apply(&lease);
    }
    // At 14 s all three are live; "a" is this replica.
    assert_eq!(
        nodes(&reports.proxies("shop/cart", "a", at(14))),
        [("envoy-b", Some(2)), ("envoy-c", Some(2))]
    );
    // b's expires at 15 s (then c's, at 25 s).
    assert_eq!(
        reports.next_expiry("a", at(14)),
        Some(Duration::from_secs(1))
    );
    assert_eq!(
        nodes(&reports.proxies("shop/cart", "a", at(16))),
        [("envoy-c", Some(2))]
    );
    assert_eq!(
        reports.next_expiry("a", at(16)),
        Some(Duration::from_secs(9))
    );
    assert!(reports.proxies("shop/cart", "a", at(26)).is_empty());
    assert_eq!(reports.next_expiry("a", at(26)), None);
}

#[test]
fn deleted_malformed_and_reset_reports_stop_counting() {
    let mut reports = Reports::default();
    let good =
        report_lease(&config("b"), &report(&[("r", "e", Some(1))]), None, at(0)).expect("encodes");
    reports.apply(&good);
    let mut broken = good.clone();
    broken
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(REPORT_ANNOTATION.into(), "{not json".into());
    reports.apply(&broken);
    assert!(reports.proxies("r", "a", at(1)).is_empty());
    reports.reset(std::slice::from_ref(&good));
    assert_eq!(reports.proxies("r", "a", at(1)).len(), 1);
    reports.delete(&good);
    assert!(reports.proxies("r", "a", at(1)).is_empty());
}

#[test]
fn a_nack_travels_with_its_detail_cut() {
    let ack = ProxyAck {
        node_id: "e".into(),
        acked_generation: Some(1),
        nacked: Some((2, "x".repeat(1000))),
    };
    let reported = ReportedProxy::from(&ack);
    let back = ProxyAck::from(&reported);
    assert_eq!(back.acked_generation, Some(1));
    assert_eq!(
        back.nacked.as_ref().map(|(g, d)| (*g, d.len())),
        Some((2, 256))
    );
}

#[test]
fn a_report_long_expired_is_abandoned_and_kept_at_its_resource_version() {
    let mut reports = Reports::default();
    for (identity, renewed) in [("a", 0), ("b", 0), ("c", 100)] {
        let mut lease =
            report_lease(&config(identity), &report(&[]), None, at(renewed)).expect("encodes");
        lease.metadata.resource_version = Some(format!("rv-{identity}"));
        reports.apply(&lease);
    }
    // Durations are 15 s (see `config`): b expired at 15 s and is abandoned at 150 s; "a" is
    // this replica and is never collected by itself.
    assert!(reports.abandoned("a", at(149)).is_empty());
    assert_eq!(
        reports.abandoned("a", at(150)),
        [Abandoned {
            name: report_name("b"),
            resource_version: Some("rv-b".into()),
        }]
    );
    // c, renewed at 100 s, is not abandoned before 250 s.
    assert_eq!(reports.abandoned("a", at(249)).len(), 1);
    assert_eq!(reports.abandoned("a", at(250)).len(), 2);
}
