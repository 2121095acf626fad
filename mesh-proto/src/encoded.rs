//! A `DeltaDiscoveryResponse` whose resources are already encoded, and the
//! ADS server that sends it.
//!
//! A server that serves the same resource to many clients encodes it once
//! ([`encode_resource`]) and hands each client's response a reference to
//! those bytes ([`Bytes`] clones are reference counts), instead of a copy of
//! every resource for every client. On the wire an [`EncodedDeltaResponse`]
//! is exactly the `DeltaDiscoveryResponse` with the same content, so clients
//! decode it with the generated type.
//!
//! [`aggregated_discovery_service_server`] is the same route as the
//! generated one (`envoy.service.discovery.v3.AggregatedDiscoveryService/
//! DeltaAggregatedResources`), with this response type.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::envoy::service::discovery::v3::Resource;

include!(concat!(
    env!("OUT_DIR"),
    "/envoy.service.discovery.v3.AggregatedDiscoveryService.rs"
));

/// `DeltaDiscoveryResponse`, field for field, with each `Resource` as its
/// encoded message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedDeltaResponse {
    pub system_version_info: String,
    /// Each an encoded `envoy.service.discovery.v3.Resource` (its fields,
    /// without the tag and length that make it field 2 of the response).
    pub resources: Vec<Bytes>,
    pub type_url: String,
    pub nonce: String,
    pub removed_resources: Vec<String>,
}

/// `resource` encoded once, to be shared by every response that carries it.
pub fn encode_resource(resource: &Resource) -> Bytes {
    Bytes::from(resource.encode_to_vec())
}

// Field numbers of `DeltaDiscoveryResponse` (discovery.proto).
const SYSTEM_VERSION_INFO: u32 = 1;
const RESOURCES: u32 = 2;
const TYPE_URL: u32 = 4;
const NONCE: u32 = 5;
const REMOVED_RESOURCES: u32 = 6;

impl Message for EncodedDeltaResponse {
    // The order and the omission of empty strings are prost's for the
    // generated type, so that both encode to the same bytes.
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.system_version_info.is_empty() {
            encoding::string::encode(SYSTEM_VERSION_INFO, &self.system_version_info, buf);
        }
        // A message field is length-delimited like `bytes`.
        encoding::bytes::encode_repeated(RESOURCES, &self.resources, buf);
        if !self.type_url.is_empty() {
            encoding::string::encode(TYPE_URL, &self.type_url, buf);
        }
        if !self.nonce.is_empty() {
            encoding::string::encode(NONCE, &self.nonce, buf);
        }
        encoding::string::encode_repeated(REMOVED_RESOURCES, &self.removed_resources, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            SYSTEM_VERSION_INFO => {
                encoding::string::merge(wire_type, &mut self.system_version_info, buf, ctx)
            }
            RESOURCES => encoding::bytes::merge_repeated(wire_type, &mut self.resources, buf, ctx),
            TYPE_URL => encoding::string::merge(wire_type, &mut self.type_url, buf, ctx),
            NONCE => encoding::string::merge(wire_type, &mut self.nonce, buf, ctx),
            REMOVED_RESOURCES => {
                encoding::string::merge_repeated(wire_type, &mut self.removed_resources, buf, ctx)
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let mut len = 0;
        if !self.system_version_info.is_empty() {
            len += encoding::string::encoded_len(SYSTEM_VERSION_INFO, &self.system_version_info);
        }
        len += encoding::bytes::encoded_len_repeated(RESOURCES, &self.resources);
        if !self.type_url.is_empty() {
            len += encoding::string::encoded_len(TYPE_URL, &self.type_url);
        }
        if !self.nonce.is_empty() {
            len += encoding::string::encoded_len(NONCE, &self.nonce);
        }
        len + encoding::string::encoded_len_repeated(REMOVED_RESOURCES, &self.removed_resources)
    }

    fn clear(&mut self) {
        *self = EncodedDeltaResponse::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::service::discovery::v3::DeltaDiscoveryResponse;

    fn resource(name: &str, version: &str, value: &[u8]) -> Resource {
        Resource {
            version: version.into(),
            resource: Some(prost_types::Any {
                type_url: crate::type_urls::WORKLOAD.into(),
                value: value.to_vec(),
            }),
            name: name.into(),
            aliases: Vec::new(),
        }
    }

    #[test]
    fn encodes_exactly_as_the_generated_response() {
        let resources = vec![
            resource("ns/a", "0123456789abcdef", b"\x0a\x01a"),
            resource("ns/b", "fedcba9876543210", &[7u8; 300]),
        ];
        let generated = DeltaDiscoveryResponse {
            system_version_info: "42".into(),
            resources: resources.clone(),
            type_url: crate::type_urls::WORKLOAD.into(),
            nonce: "1-7".into(),
            removed_resources: vec!["ns/gone".into(), "ns/old".into()],
        };
        let encoded = EncodedDeltaResponse {
            system_version_info: "42".into(),
            resources: resources.iter().map(encode_resource).collect(),
            type_url: crate::type_urls::WORKLOAD.into(),
            nonce: "1-7".into(),
            removed_resources: vec!["ns/gone".into(), "ns/old".into()],
        };
        let bytes = encoded.encode_to_vec();
        assert_eq!(bytes, generated.encode_to_vec());
        assert_eq!(encoded.encoded_len(), bytes.len());
        let back = EncodedDeltaResponse::decode(bytes.as_slice()).expect("decode");
        assert_eq!(back, encoded);
    }

    #[test]
    fn empty_fields_are_omitted_as_prost_does() {
        let generated = DeltaDiscoveryResponse {
            type_url: crate::type_urls::SERVICE.into(),
            ..Default::default()
        };
        let encoded = EncodedDeltaResponse {
            type_url: crate::type_urls::SERVICE.into(),
            ..Default::default()
        };
        assert_eq!(encoded.encode_to_vec(), generated.encode_to_vec());
        assert_eq!(EncodedDeltaResponse::default().encoded_len(), 0);
    }
}
