//! Sluice's wire schemas, generated at build time from `proto/sluice/v1/*.proto`.
//!
//! - [`v1`]: the filter policy. The control plane renders it from its traffic model and delivers it
//!   to every Envoy by ECDS; the filter (`sluice-filter`) decodes it in `on_configure`, as binary
//!   protobuf or as its proto3 JSON form (the form people write into static Envoy configs).
//! - [`admin::v1`] (feature `admin`): the control plane's admin/status gRPC API used by the CLI.
//! - [`rules`]: the policy's rules (host normalisation, field syntax, cookie attributes), stated
//!   once and used by both the filter and the control plane.
#![forbid(unsafe_code)]
#![allow(missing_docs)]

pub mod rules;

/// The filter policy, package `sluice.v1`.
#[allow(clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/sluice.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/sluice.v1.serde.rs"));
}

/// The admin/status API, package `sluice.admin.v1`.
#[cfg(feature = "admin")]
#[allow(clippy::all)]
pub mod admin {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/sluice.admin.v1.rs"));
    }
}

/// The routing header used when a policy leaves `routing_header` empty.
pub const DEFAULT_ROUTING_HEADER: &str = "x-sluice-hash";

/// Type URL of the policy message, for `google.protobuf.Any` wrappers.
pub const POLICY_TYPE_URL: &str = "type.googleapis.com/sluice.v1.FilterPolicy";

#[cfg(test)]
mod tests {
    use super::v1::*;

    #[test]
    fn json_form_round_trips_and_rejects_unknown_fields() {
        let json = r#"{
          "routingHeader": "x-sluice-hash",
          "rollouts": [{
            "name": "default/demo",
            "hosts": ["demo.local"],
            "versions": ["aaa", "bbb"],
            "stableHash": "aaa",
            "canaryHash": "bbb",
            "canaryWeightBp": 2500,
            "headerRoutes": [{"name": "testers", "matches": [{"name": "x-canary", "exact": "1"}], "canary": true}],
            "stickiness": {"cookie": {"name": "sluice", "maxAgeSeconds": 3600}}
          }]
        }"#;
        let policy: FilterPolicy = serde_json::from_str(json).expect("valid policy JSON");
        let r = &policy.rollouts[0];
        assert_eq!(r.canary_weight_bp, 2500);
        assert_eq!(
            r.header_routes[0].target,
            Some(header_route::Target::Canary(true))
        );
        let again: FilterPolicy =
            serde_json::from_str(&serde_json::to_string(&policy).expect("serialize"))
                .expect("round trip");
        assert_eq!(again, policy);

        let err = serde_json::from_str::<FilterPolicy>(r#"{"rollouts": [], "bogus": 1}"#)
            .expect_err("unknown field must be rejected");
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn snake_case_field_names_are_accepted() {
        let policy: FilterPolicy =
            serde_json::from_str(r#"{"rollouts": [{"name": "r", "canary_weight_bp": 7}]}"#)
                .expect("snake_case JSON");
        assert_eq!(policy.rollouts[0].canary_weight_bp, 7);
    }
}
