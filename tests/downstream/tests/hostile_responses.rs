//! Hostile responses reach a crate that merely depends on `paperboy` as typed errors, not
//! as an aborted process.
//!
//! kafka-protocol 0.18.0 from the registry reserves room for an array's element count as
//! read from the wire before decoding a single element, so a frame of a few bytes that
//! announces 2^31 elements aborts the process ("memory allocation of N bytes failed",
//! SIGABRT). Paperboy's fix (`vendor/kafka-protocol`) must travel with the library: if it
//! does not, this test binary dies instead of reporting.
//!
//! The frames are those of `protocol/tests/hostile_responses.rs`, sent by a plain TCP peer
//! to a real `Client` (ApiVersions, Metadata and Fetch answers), and handed to the
//! protocol layer directly (`paperboy-protocol`, whose `FrameError` paperboy re-exports) (OffsetCommit, Metadata, Fetch).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use paperboy::protocol::frame::FrameError;
use paperboy::{Client, ClientConfig, Error, FetchOptions};
use paperboy_protocol::frame::decode_response;
use paperboy_protocol::kafka_protocol::messages::api_versions_response::ApiVersion;
use paperboy_protocol::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use paperboy_protocol::kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FetchRequest, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, ResponseHeader, TopicName,
};
use paperboy_protocol::kafka_protocol::protocol::{Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// --- the protocol layer, as re-exported by paperboy -----------------------------------

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

/// OffsetCommit v2, response header v0 (correlation id 1): topics, an array announcing
/// i32::MAX elements, and nothing after it.
const OFFSET_COMMIT_V2_ARRAY: &[u8] = &[0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff];
/// Metadata v12, response header v1 (correlation id 1, no tagged fields): throttle 0,
/// then brokers as a compact array of u32::MAX - 1 elements.
const METADATA_V12_COMPACT_ARRAY: &[u8] =
    &[0, 0, 0, 1, 0x00, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
/// Fetch v12, header v1: throttle 0, error 0, session id 0, then the responses compact
/// array with a count of 2^28.
const FETCH_V12_NESTED_COUNT: &[u8] = &[
    0, 0, 0, 7, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x01,
];
/// Metadata v8 (not flexible), header v0: throttle 0, then brokers as an array of
/// i32::MAX elements.
const METADATA_V8_ARRAY: &[u8] = &[0, 0, 0, 1, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff];
/// ApiVersions v3 (header v0 always): error 0, then api_keys as a compact array of
/// u32::MAX - 1 elements.
const API_VERSIONS_V3_COMPACT_ARRAY: &[u8] = &[0, 0, 0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];

#[test]
fn protocol_layer_array_count_far_beyond_the_frame_is_an_error() {
    expect_decode_error::<OffsetCommitRequest>(OFFSET_COMMIT_V2_ARRAY, 2);
}

#[test]
fn protocol_layer_compact_array_count_far_beyond_the_frame_is_an_error() {
    expect_decode_error::<MetadataRequest>(METADATA_V12_COMPACT_ARRAY, 12);
}

#[test]
fn protocol_layer_huge_nested_count_in_a_fetch_response_is_an_error() {
    expect_decode_error::<FetchRequest>(FETCH_V12_NESTED_COUNT, 12);
}

// --- a real Client against a peer that answers with those frames ----------------------

/// What the peer answers with a hostile frame; everything before it is answered well.
#[derive(Clone, Copy, PartialEq)]
enum Hostile {
    ApiVersions,
    /// Metadata at this version (the peer advertises it as its highest).
    Metadata(i16),
    Fetch,
}

/// One request off the socket: API key, version, correlation id.
async fn read_request(sock: &mut TcpStream) -> Option<(i16, i16, i32)> {
    let mut len = [0u8; 4];
    sock.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; usize::try_from(i32::from_be_bytes(len)).ok()?];
    sock.read_exact(&mut buf).await.ok()?;
    let key = i16::from_be_bytes([buf[0], buf[1]]);
    let version = i16::from_be_bytes([buf[2], buf[3]]);
    let correlation_id = i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Some((key, version, correlation_id))
}

/// A well-formed response frame.
fn frame<B: Encodable>(correlation_id: i32, api: ApiKey, version: i16, body: &B) -> Bytes {
    let header_version = api.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut out = BytesMut::new();
    let size = header.compute_size(header_version).unwrap() + body.compute_size(version).unwrap();
    out.put_i32(size as i32);
    header.encode(&mut out, header_version).unwrap();
    body.encode(&mut out, version).unwrap();
    out.freeze()
}

/// `hostile` (whose first four bytes are a correlation id) with the request's id.
fn hostile_frame(correlation_id: i32, hostile: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(hostile.len() as i32);
    out.put_i32(correlation_id);
    out.put_slice(&hostile[4..]);
    out.freeze()
}

/// A listener that speaks just enough Kafka to get a client to the hostile answer: it
/// names itself broker 1, leader of partition 0 of topic `t`.
async fn peer(hostile: Hostile) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                while let Some((key, version, id)) = read_request(&mut sock).await {
                    let answer = match ApiKey::try_from(key) {
                        Ok(ApiKey::ApiVersions) if hostile == Hostile::ApiVersions => {
                            hostile_frame(id, API_VERSIONS_V3_COMPACT_ARRAY)
                        }
                        Ok(ApiKey::ApiVersions) => {
                            let metadata_max = match hostile {
                                Hostile::Metadata(v) => v,
                                _ => 12,
                            };
                            let range = |api: ApiKey, max: i16| {
                                ApiVersion::default()
                                    .with_api_key(api as i16)
                                    .with_min_version(0)
                                    .with_max_version(max)
                            };
                            let body = ApiVersionsResponse::default().with_api_keys(vec![
                                range(ApiKey::ApiVersions, 3),
                                range(ApiKey::Metadata, metadata_max),
                                range(ApiKey::Fetch, 12),
                            ]);
                            frame(id, ApiKey::ApiVersions, version, &body)
                        }
                        Ok(ApiKey::Metadata) => match hostile {
                            Hostile::Metadata(12) => hostile_frame(id, METADATA_V12_COMPACT_ARRAY),
                            Hostile::Metadata(8) => hostile_frame(id, METADATA_V8_ARRAY),
                            _ => frame(id, ApiKey::Metadata, version, &metadata(addr.port())),
                        },
                        Ok(ApiKey::Fetch) => hostile_frame(id, FETCH_V12_NESTED_COUNT),
                        _ => return,
                    };
                    if sock.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr.to_string()
}

fn metadata(port: u16) -> MetadataResponse {
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(1))
            .with_host(StrBytes::from_static_str("127.0.0.1"))
            .with_port(i32::from(port))])
        .with_controller_id(BrokerId(1))
        .with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
            .with_partitions(vec![MetadataResponsePartition::default()
                .with_partition_index(0)
                .with_leader_id(BrokerId(1))
                .with_replica_nodes(vec![BrokerId(1)])
                .with_isr_nodes(vec![BrokerId(1)])])])
}

fn config(addr: &str) -> ClientConfig {
    ClientConfig::new(addr)
        .with_connect_timeout(Duration::from_millis(800))
        .with_request_timeout(Duration::from_millis(800))
        .with_retry_backoff(Duration::from_millis(10), Duration::from_millis(20))
}

/// `err` is the decode error of `api` at `version`, as Paperboy types it.
fn assert_decode_error(err: &Error, api: ApiKey, version: i16) {
    match err {
        Error::Protocol {
            source: FrameError::Decode {
                api: a, version: v, ..
            },
            ..
        } => {
            assert_eq!((*a, *v), (api as i16, version), "{err}");
        }
        other => panic!("expected Error::Protocol with FrameError::Decode, got {other:?}"),
    }
}

#[tokio::test]
async fn client_api_versions_with_a_compact_array_count_beyond_the_frame_is_an_error() {
    let addr = peer(Hostile::ApiVersions).await;
    let err = Client::connect(config(&addr)).await.unwrap_err();
    // Every bootstrap attempt fails on the answer; the client says why once time is up.
    assert!(matches!(err, Error::NoBrokerAvailable(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("cannot decode ApiVersions v3 response"),
        "{err}"
    );
}

#[tokio::test]
async fn client_metadata_with_a_compact_array_count_beyond_the_frame_is_an_error() {
    let addr = peer(Hostile::Metadata(12)).await;
    let err = Client::connect(config(&addr)).await.unwrap_err();
    assert_decode_error(&err, ApiKey::Metadata, 12);
}

#[tokio::test]
async fn client_metadata_with_an_array_count_beyond_the_frame_is_an_error() {
    let addr = peer(Hostile::Metadata(8)).await;
    let err = Client::connect(config(&addr)).await.unwrap_err();
    assert_decode_error(&err, ApiKey::Metadata, 8);
}

#[tokio::test]
async fn client_fetch_with_a_huge_nested_count_is_an_error() {
    let addr = peer(Hostile::Fetch).await;
    let client = Client::connect(config(&addr)).await.unwrap();
    assert_eq!(client.cluster().brokers.len(), 1);
    let err = client
        .fetch("t", 0, 0, FetchOptions::default())
        .await
        .unwrap_err();
    assert_decode_error(&err, ApiKey::Fetch, 12);
}
