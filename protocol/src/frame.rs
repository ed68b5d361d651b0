//! Request and response framing.
//!
//! Every Kafka message on the wire is a frame: a big-endian `i32` length followed by that many
//! bytes. A request frame holds a [`RequestHeader`] (at the header version its API key and
//! version call for) and the request body; a response frame holds a [`ResponseHeader`] and the
//! body. This module encodes request frames, splits a byte stream into frames, and decodes
//! response frames. It never touches a socket.
//!
//! # References
//! - <https://kafka.apache.org/protocol#protocol_common>
//! - KIP-482 (tagged fields and flexible header versions)
//! - KIP-511 (ApiVersions responses always use response header v0)

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

/// The largest frame this crate will accept by default: 100 MiB, as the Java client's
/// `socket.request.max.bytes` default on the broker side.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// What went wrong while framing or unframing a message.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix is negative.
    #[error("frame length {0} is negative")]
    NegativeLength(i32),
    /// The length prefix exceeds the configured maximum.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The size the peer announced.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The API key is not one this crate knows.
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    /// The message could not be encoded (kafka-protocol refused it).
    #[error("cannot encode {} v{version}: {source}", api_name(*api))]
    Encode {
        /// The API being encoded: its key (0 Produce, 1 Fetch, ...).
        api: i16,
        /// The version being encoded.
        version: i16,
        /// The underlying error.
        source: anyhow_like::Error,
    },
    /// The response body or header could not be decoded.
    #[error("cannot decode {} v{version} response: {source}", api_name(*api))]
    Decode {
        /// The API being decoded: its key.
        api: i16,
        /// The version being decoded.
        version: i16,
        /// The underlying error.
        source: anyhow_like::Error,
    },
    /// The response decoded, but bytes were left over: the version or the framing is wrong.
    #[error("{} v{version} response has {left} unread bytes", api_name(*api))]
    TrailingBytes {
        /// The API being decoded: its key.
        api: i16,
        /// The version being decoded.
        version: i16,
        /// How many bytes were left.
        left: usize,
    },
}

/// Kafka's name of the API with key `key` (`Produce`), or the number.
pub fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|_| format!("API {key}"), |k| format!("{k:?}"))
}

/// A boxed error from kafka-protocol, kept opaque so `anyhow` stays out of our public API.
pub mod anyhow_like {
    /// An opaque error from the generated message code.
    #[derive(Debug, Clone)]
    pub struct Error(pub(crate) String);

    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Error {}
}

fn opaque(e: impl std::fmt::Display) -> anyhow_like::Error {
    anyhow_like::Error(e.to_string())
}

/// The API key of a request type.
///
/// # Panics
/// Never for the request types kafka-protocol generates, whose keys are all known.
pub fn api_key_of<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).expect("kafka-protocol request types have known keys")
}

/// The header version a response of `api` at `version` uses.
///
/// ApiVersions is special: its response header is always v0, so that a client can read
/// the answer before it knows which versions the broker speaks (KIP-511).
pub fn response_header_version(api: ApiKey, version: i16) -> i16 {
    if api == ApiKey::ApiVersions {
        0
    } else {
        api.response_header_version(version)
    }
}

/// Appends one complete request frame (length, header, body) to `out`.
///
/// # Errors
/// [`FrameError::Encode`] when kafka-protocol cannot encode the header or the body at
/// `version` (for instance a field that the version does not carry was set).
pub fn encode_request<R: Request>(
    out: &mut BytesMut,
    correlation_id: i32,
    client_id: Option<&str>,
    version: i16,
    request: &R,
) -> Result<(), FrameError> {
    let api = api_key_of::<R>();
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id.map(|s| StrBytes::from_string(s.to_owned())));
    let header_version = api.request_header_version(version);
    let enc = |e| FrameError::Encode {
        api: R::KEY,
        version,
        source: opaque(e),
    };
    let size = header.compute_size(header_version).map_err(enc)?
        + request.compute_size(version).map_err(enc)?;
    let size_i32 = i32::try_from(size).map_err(|_| FrameError::TooLarge {
        size,
        limit: i32::MAX as usize,
    })?;
    out.reserve(4 + size);
    out.put_i32(size_i32);
    let start = out.len();
    header.encode(out, header_version).map_err(enc)?;
    request.encode(out, version).map_err(enc)?;
    debug_assert_eq!(
        out.len() - start,
        size,
        "compute_size disagrees with encode"
    );
    Ok(())
}

/// Splits the next whole frame off the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame (read more and call
/// again), and the frame's payload (without the length prefix) otherwise.
///
/// # Errors
/// [`FrameError::NegativeLength`] or [`FrameError::TooLarge`] when the length prefix is
/// not one to trust; the stream is then unusable.
pub fn split_frame(
    buf: &mut BytesMut,
    max_frame_bytes: usize,
) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 0 {
        return Err(FrameError::NegativeLength(len));
    }
    let len = len as usize;
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            size: len,
            limit: max_frame_bytes,
        });
    }
    if buf.len() < 4 + len {
        // Reserve what the rest of this frame needs, so the reader makes one allocation.
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Reads the correlation id at the front of a response frame without consuming it.
///
/// Every response header version starts with the correlation id, so a reader can route a
/// frame before it knows which request it answers.
pub fn peek_correlation_id(frame: &[u8]) -> Option<i32> {
    frame
        .get(..4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes a response frame (as returned by [`split_frame`]) for request type `R` at
/// `version`, returning its header and body.
///
/// Byte fields of the body (record sets) are zero-copy slices of `frame`.
///
/// # Errors
/// [`FrameError::Decode`] when the frame does not decode, [`FrameError::TrailingBytes`]
/// when bytes remain after the body.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
) -> Result<(ResponseHeader, R::Response), FrameError> {
    let api = api_key_of::<R>();
    let dec = |e| FrameError::Decode {
        api: R::KEY,
        version,
        source: opaque(e),
    };
    let header =
        ResponseHeader::decode(&mut frame, response_header_version(api, version)).map_err(dec)?;
    let body = R::Response::decode(&mut frame, version).map_err(dec)?;
    if frame.has_remaining() {
        return Err(FrameError::TrailingBytes {
            api: R::KEY,
            version,
            left: frame.remaining(),
        });
    }
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};

    #[test]
    fn request_frame_has_length_header_and_body() {
        let mut out = BytesMut::new();
        let req = MetadataRequest::default();
        encode_request(&mut out, 7, Some("pb"), 12, &req).unwrap();
        let len = i32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 4);
        // Header v2: api key, version, correlation id, client id (i16 len + bytes), tags.
        assert_eq!(&out[4..6], &3i16.to_be_bytes());
        assert_eq!(&out[6..8], &12i16.to_be_bytes());
        assert_eq!(&out[8..12], &7i32.to_be_bytes());
        assert_eq!(&out[12..14], &2i16.to_be_bytes());
        assert_eq!(&out[14..16], b"pb");
    }

    #[test]
    fn split_frame_waits_for_whole_frame() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1, 2][..]);
        assert!(split_frame(&mut buf, 100).unwrap().is_none());
        buf.extend_from_slice(&[3, 0, 0]);
        let f = split_frame(&mut buf, 100).unwrap().unwrap();
        assert_eq!(&f[..], &[1, 2, 3]);
        assert_eq!(&buf[..], &[0, 0]);
    }

    #[test]
    fn split_frame_rejects_hostile_lengths() {
        let mut neg = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert!(matches!(
            split_frame(&mut neg, 100),
            Err(FrameError::NegativeLength(-1))
        ));
        let mut big = BytesMut::from(&1000i32.to_be_bytes()[..]);
        assert!(matches!(
            split_frame(&mut big, 100),
            Err(FrameError::TooLarge {
                size: 1000,
                limit: 100
            })
        ));
    }

    #[test]
    fn api_versions_response_uses_header_v0() {
        assert_eq!(response_header_version(ApiKey::ApiVersions, 3), 0);
        assert_eq!(response_header_version(ApiKey::Metadata, 12), 1);
        // Round trip an ApiVersions request frame's key.
        let mut out = BytesMut::new();
        encode_request(&mut out, 1, None, 3, &ApiVersionsRequest::default()).unwrap();
        assert_eq!(&out[4..6], &18i16.to_be_bytes());
    }

    #[test]
    fn decode_response_rejects_garbage_without_panicking() {
        let frame = Bytes::from_static(&[0, 0, 0, 1, 0xff, 0xff]);
        assert!(decode_response::<MetadataRequest>(frame, 12).is_err());
    }
}
