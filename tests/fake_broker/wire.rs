//! The Kafka framing the test fakes speak: reading a request, writing a response, and
//! the ApiVersions answer listing what a fake serves.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The next request on `sock`: its header, API, version and body. `None` when the peer
/// hung up or sent what is not a request.
pub async fn read_request<S: AsyncRead + Unpin>(
    sock: &mut S,
) -> Option<(RequestHeader, ApiKey, i16, Bytes)> {
    let mut len = [0u8; 4];
    sock.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
    sock.read_exact(&mut buf).await.ok()?;
    let mut b = Bytes::from(buf);
    let key = ApiKey::try_from(i16::from_be_bytes([b[0], b[1]])).ok()?;
    let version = i16::from_be_bytes([b[2], b[3]]);
    let header = RequestHeader::decode(&mut b, key.request_header_version(version)).ok()?;
    Some((header, key, version, b))
}

/// A response frame: length, header (the version `key` answers with) and `body`.
pub fn frame<R: Encodable>(correlation_id: i32, key: ApiKey, version: i16, body: &R) -> BytesMut {
    let hv = key.response_header_version(version);
    let h = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = h.compute_size(hv).unwrap() + body.compute_size(version).unwrap();
    let mut out = BytesMut::new();
    out.extend_from_slice(&(size as i32).to_be_bytes());
    h.encode(&mut out, hv).unwrap();
    body.encode(&mut out, version).unwrap();
    out
}

/// The ApiVersions answer for `keys`: (API, lowest version, highest version).
pub fn api_versions(keys: &[(ApiKey, i16, i16)]) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        keys.iter()
            .map(|(k, min, max)| {
                ApiVersion::default()
                    .with_api_key(*k as i16)
                    .with_min_version(*min)
                    .with_max_version(*max)
            })
            .collect(),
    )
}
