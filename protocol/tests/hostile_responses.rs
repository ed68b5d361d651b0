//! Response frames a hostile or broken broker could send: each must come back as a
//! typed [`FrameError`], never a panic or an aborted process.
//!
//! The first two are the frames the `response_decode` fuzz target found: an array count
//! of 2^31-1 (or a compact count of 2^32-2) in a frame of a few bytes. Before the patch
//! in `vendor/kafka-protocol` the decoder reserved that many elements up front and the
//! process aborted on the failed allocation, so this test binary would not even finish.

use bytes::Bytes;
use paperboy_protocol::frame::{decode_response, FrameError};
use paperboy_protocol::kafka_protocol::messages::{
    FetchRequest, MetadataRequest, OffsetCommitRequest,
};
use paperboy_protocol::kafka_protocol::protocol::Request;

fn expect_decode_error<R: Request>(frame: &'static [u8], version: i16) {
    match decode_response::<R>(Bytes::from_static(frame), version) {
        Err(FrameError::Decode {
            api, version: v, ..
        }) => {
            assert_eq!(api, R::KEY, "error names the API");
            assert_eq!(v, version, "error names the version");
        }
        Err(other) => panic!("expected FrameError::Decode, got {other:?}"),
        Ok(_) => panic!("a truncated frame decoded"),
    }
}

#[test]
fn array_count_far_beyond_the_frame_is_an_error() {
    // Response header v0 (correlation id 1); OffsetCommit v2 body: topics, an array
    // announcing i32::MAX elements, and nothing after it.
    expect_decode_error::<OffsetCommitRequest>(&[0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff], 2);
}

#[test]
fn compact_array_count_far_beyond_the_frame_is_an_error() {
    // Response header v1 (correlation id 1, no tagged fields); Metadata v12 body:
    // throttle_time_ms 0, then brokers as a compact array of u32::MAX - 1 elements.
    expect_decode_error::<MetadataRequest>(
        &[0, 0, 0, 1, 0x00, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f],
        12,
    );
}

#[test]
fn huge_nested_count_in_a_fetch_response_is_an_error() {
    // Fetch v12 (flexible): header v1, throttle 0, error 0, session id 0, then the
    // responses compact array with a count of 2^28.
    expect_decode_error::<FetchRequest>(
        &[
            0, 0, 0, 7, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x01,
        ],
        12,
    );
}

#[test]
fn every_truncation_of_a_valid_frame_is_an_error() {
    use paperboy_protocol::kafka_protocol::messages::metadata_response::{
        MetadataResponse, MetadataResponseBroker,
    };
    use paperboy_protocol::kafka_protocol::messages::{BrokerId, ResponseHeader};
    use paperboy_protocol::kafka_protocol::protocol::{Encodable, StrBytes};

    let version = 12;
    let mut body = MetadataResponse::default();
    body.brokers.push(
        MetadataResponseBroker::default()
            .with_node_id(BrokerId(1))
            .with_host(StrBytes::from_static_str("127.0.0.1"))
            .with_port(9092),
    );
    let mut buf = bytes::BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(3)
        .encode(&mut buf, 1)
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let full = buf.freeze();
    let (header, decoded) = decode_response::<MetadataRequest>(full.clone(), version).unwrap();
    assert_eq!(header.correlation_id, 3);
    assert_eq!(decoded.brokers.len(), 1);
    for len in 0..full.len() {
        assert!(
            decode_response::<MetadataRequest>(full.slice(..len), version).is_err(),
            "a frame cut to {len} of {} bytes decoded",
            full.len()
        );
    }
}
