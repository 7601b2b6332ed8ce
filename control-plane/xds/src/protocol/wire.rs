//! The responses the state machines produce, and their protobuf encoding.
//!
//! They are `DiscoveryResponse` and `DeltaDiscoveryResponse` (envoy/service/discovery/v3/
//! discovery.proto) with each resource held as the snapshot's shared `Arc<Resource>` instead of a
//! copy of its bytes: a thousand connections syncing the same snapshot then queue a thousand
//! lists of pointers, and each resource body is copied only once, straight into the outgoing
//! gRPC buffer. The fields Sluice never sets (`canary`, `control_plane`, aliases, TTLs…) are
//! left out, which protobuf reads as their defaults.

use std::sync::Arc;

use prost::bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use prost::encoding::{message, string};

use crate::snapshot::Resource;

/// A state-of-the-world `DiscoveryResponse`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SotwResponse {
    pub version_info: String,
    /// Encoded as `google.protobuf.Any`s.
    pub resources: Vec<Arc<Resource>>,
    pub type_url: String,
    pub nonce: String,
}

/// A `DeltaDiscoveryResponse`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeltaResponse {
    pub system_version_info: String,
    /// Encoded as `envoy.service.discovery.v3.Resource`s (name, version, body).
    pub resources: Vec<Arc<Resource>>,
    pub type_url: String,
    pub removed_resources: Vec<String>,
    pub nonce: String,
}

/// A message the ADS codec can write (it never reads responses).
pub trait Encode {
    /// Length of the encoded message, without its own length prefix.
    fn encoded_len(&self) -> usize;
    fn encode_raw(&self, buf: &mut impl BufMut);
}

// Field numbers from discovery.proto.
mod tag {
    pub const SOTW_VERSION_INFO: u32 = 1;
    pub const SOTW_RESOURCES: u32 = 2;
    pub const SOTW_TYPE_URL: u32 = 4;
    pub const SOTW_NONCE: u32 = 5;

    pub const DELTA_SYSTEM_VERSION_INFO: u32 = 1;
    pub const DELTA_RESOURCES: u32 = 2;
    pub const DELTA_TYPE_URL: u32 = 4;
    pub const DELTA_NONCE: u32 = 5;
    pub const DELTA_REMOVED_RESOURCES: u32 = 6;

    pub const RESOURCE_VERSION: u32 = 1;
    pub const RESOURCE_BODY: u32 = 2;
    pub const RESOURCE_NAME: u32 = 3;
}

/// Proto3 leaves empty strings off the wire.
fn string_len(tag: u32, value: &String) -> usize {
    if value.is_empty() {
        0
    } else {
        string::encoded_len(tag, value)
    }
}

fn encode_string(tag: u32, value: &String, buf: &mut impl BufMut) {
    if !value.is_empty() {
        string::encode(tag, value, buf);
    }
}

impl Encode for SotwResponse {
    fn encoded_len(&self) -> usize {
        string_len(tag::SOTW_VERSION_INFO, &self.version_info)
            + self
                .resources
                .iter()
                .map(|r| message::encoded_len(tag::SOTW_RESOURCES, &r.body))
                .sum::<usize>()
            + string_len(tag::SOTW_TYPE_URL, &self.type_url)
            + string_len(tag::SOTW_NONCE, &self.nonce)
    }

    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_string(tag::SOTW_VERSION_INFO, &self.version_info, buf);
        for resource in &self.resources {
            message::encode(tag::SOTW_RESOURCES, &resource.body, buf);
        }
        encode_string(tag::SOTW_TYPE_URL, &self.type_url, buf);
        encode_string(tag::SOTW_NONCE, &self.nonce, buf);
    }
}

/// Bytes one resource takes in a `DeltaDiscoveryResponse`: its `resources` field, key and
/// length prefix included.
pub(super) fn delta_resource_encoded_len(resource: &Resource) -> usize {
    let len = delta_resource_len(resource);
    key_len(tag::DELTA_RESOURCES) + encoded_len_varint(len as u64) + len
}

/// Length of one `envoy.service.discovery.v3.Resource` message body.
fn delta_resource_len(resource: &Resource) -> usize {
    string_len(tag::RESOURCE_VERSION, &resource.version)
        + message::encoded_len(tag::RESOURCE_BODY, &resource.body)
        + string_len(tag::RESOURCE_NAME, &resource.name)
}

impl Encode for DeltaResponse {
    fn encoded_len(&self) -> usize {
        let resources: usize = self
            .resources
            .iter()
            .map(|r| delta_resource_encoded_len(r))
            .sum();
        string_len(tag::DELTA_SYSTEM_VERSION_INFO, &self.system_version_info)
            + resources
            + string_len(tag::DELTA_TYPE_URL, &self.type_url)
            + string_len(tag::DELTA_NONCE, &self.nonce)
            + string::encoded_len_repeated(tag::DELTA_REMOVED_RESOURCES, &self.removed_resources)
    }

    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_string(
            tag::DELTA_SYSTEM_VERSION_INFO,
            &self.system_version_info,
            buf,
        );
        for resource in &self.resources {
            encode_key(tag::DELTA_RESOURCES, WireType::LengthDelimited, buf);
            encode_varint(delta_resource_len(resource) as u64, buf);
            encode_string(tag::RESOURCE_VERSION, &resource.version, buf);
            message::encode(tag::RESOURCE_BODY, &resource.body, buf);
            encode_string(tag::RESOURCE_NAME, &resource.name, buf);
        }
        encode_string(tag::DELTA_TYPE_URL, &self.type_url, buf);
        encode_string(tag::DELTA_NONCE, &self.nonce, buf);
        string::encode_repeated(tag::DELTA_REMOVED_RESOURCES, &self.removed_resources, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource as PbResource,
    };
    use envoy_types::pb::google::protobuf::Any as PbAny;
    use prost::Message;

    fn resource(name: &str, value: &[u8]) -> Arc<Resource> {
        Arc::new(Resource::new(
            name,
            prost_types::Any {
                type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
                value: value.to_vec(),
            },
        ))
    }

    fn pb_any(resource: &Resource) -> PbAny {
        PbAny {
            type_url: resource.body.type_url.clone(),
            value: resource.body.value.clone(),
        }
    }

    fn encode(message: &impl Encode) -> Vec<u8> {
        let mut buf = Vec::new();
        message.encode_raw(&mut buf);
        assert_eq!(buf.len(), message.encoded_len(), "encoded_len is exact");
        buf
    }

    #[test]
    fn a_sotw_response_decodes_as_envoys_discovery_response() {
        // A long body makes the length prefixes multi-byte.
        let big = vec![7u8; 300];
        let response = SotwResponse {
            version_info: "v1".into(),
            resources: vec![resource("a", b"one"), resource("b", &big)],
            type_url: "t".into(),
            nonce: "3".into(),
        };
        let decoded = DiscoveryResponse::decode(encode(&response).as_slice()).expect("decodes");
        assert_eq!(
            decoded,
            DiscoveryResponse {
                version_info: "v1".into(),
                resources: response.resources.iter().map(|r| pb_any(r)).collect(),
                type_url: "t".into(),
                nonce: "3".into(),
                ..Default::default()
            }
        );

        let empty = DiscoveryResponse::decode(encode(&SotwResponse::default()).as_slice())
            .expect("decodes");
        assert_eq!(empty, DiscoveryResponse::default());
    }

    #[test]
    fn a_delta_response_decodes_as_envoys_delta_discovery_response() {
        let big = vec![9u8; 200];
        let response = DeltaResponse {
            system_version_info: "sys".into(),
            resources: vec![resource("a", b"one"), resource("b", &big)],
            type_url: "t".into(),
            removed_resources: vec!["gone".into(), String::new(), "x".into()],
            nonce: "4".into(),
        };
        let decoded =
            DeltaDiscoveryResponse::decode(encode(&response).as_slice()).expect("decodes");
        assert_eq!(
            decoded,
            DeltaDiscoveryResponse {
                system_version_info: "sys".into(),
                resources: response
                    .resources
                    .iter()
                    .map(|r| PbResource {
                        name: r.name.clone(),
                        version: r.version.clone(),
                        resource: Some(pb_any(r)),
                        ..Default::default()
                    })
                    .collect(),
                type_url: "t".into(),
                removed_resources: vec!["gone".into(), String::new(), "x".into()],
                nonce: "4".into(),
                ..Default::default()
            }
        );

        let empty = DeltaDiscoveryResponse::decode(encode(&DeltaResponse::default()).as_slice())
            .expect("decodes");
        assert_eq!(empty, DeltaDiscoveryResponse::default());
    }
}
