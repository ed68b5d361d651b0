//! Writes the seed corpora into `fuzz/seeds/<target>/`.
//!
//! ```text
//! cd fuzz && cargo run --example gen_seeds
//! ```
//!
//! The seeds are deterministic (fixed timestamps, no randomness), so running this again
//! rewrites the same files. Existing files in `fuzz/seeds/` are replaced, others kept.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use paperboy_protocol::compression::{decompress, Compression, XERIAL_MAGIC};
use paperboy_protocol::frame::{decode_response, response_header_version};
use paperboy_protocol::kafka_protocol::messages::api_versions_response::ApiVersion;
use paperboy_protocol::kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, PartitionData,
};
use paperboy_protocol::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use paperboy_protocol::kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, CreateTopicsResponse, DeleteTopicsResponse,
    FetchRequest, FetchResponse, FindCoordinatorResponse, HeartbeatResponse,
    InitProducerIdResponse, JoinGroupResponse, ListOffsetsResponse, MetadataResponse,
    OffsetCommitResponse, OffsetFetchResponse, ProduceResponse, ResponseHeader, SyncGroupResponse,
    TopicName,
};
use paperboy_protocol::kafka_protocol::protocol::{Encodable, StrBytes};
use paperboy_protocol::records::{encode_batch, BatchOptions, NewRecord};
use paperboy_protocol_fuzz::responses::{range_of, vsel_for, APIS};
use paperboy_protocol_fuzz::{compress, sample_records, wrap_in_batch};

struct Out {
    root: PathBuf,
    total: usize,
}

impl Out {
    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), bytes).unwrap();
        self.total += bytes.len();
    }
}

fn batch(records: &[NewRecord], opts: BatchOptions) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_batch(records, &opts, &mut buf).unwrap();
    buf.to_vec()
}

/// The plain records section of `records` (a batch without its 61-byte header).
fn plain_section(records: &[NewRecord]) -> Vec<u8> {
    batch(records, BatchOptions::default())[61..].to_vec()
}

fn text(n: usize) -> Vec<u8> {
    (0..)
        .flat_map(|i| {
            format!(r#"{{"seq":{i},"msg":"hello paperboy","n":{}}} "#, i % 17).into_bytes()
        })
        .take(n)
        .collect()
}

fn record_batch_seeds(out: &mut Out) {
    let t = "record_batch_decode";
    let recs = sample_records(8);
    // Raw mode: whole record sets (their first byte, the base offset's high byte, is 0).
    for codec in Compression::ALL {
        let opts = BatchOptions {
            base_offset: 42,
            compression: codec,
            ..Default::default()
        };
        out.write(t, &format!("raw-{codec}"), &batch(&recs, opts));
    }
    // Two batches and a cut third: a fetch response's record set.
    let mut set = batch(&recs[..3], BatchOptions::default());
    set.extend(batch(
        &recs[3..],
        BatchOptions {
            base_offset: 3,
            compression: Compression::Lz4,
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 3,
            transactional: true,
            ..Default::default()
        },
    ));
    let third = batch(
        &recs,
        BatchOptions {
            base_offset: 8,
            ..Default::default()
        },
    );
    set.extend_from_slice(&third[..third.len() / 2]);
    out.write(t, "raw-record-set-with-tail", &set);
    // A commit marker (control batch) and a log-append-time batch.
    let marker = NewRecord {
        key: Some(Bytes::from_static(&[0, 0, 0, 1])),
        value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
        headers: vec![],
        timestamp_ms: 1_700_000_000_000,
    };
    let control = BatchOptions {
        base_offset: 20,
        control: true,
        transactional: true,
        producer_id: 7,
        producer_epoch: 1,
        ..Default::default()
    };
    out.write(t, "raw-control-commit", &batch(&[marker], control));
    let lat = BatchOptions {
        base_offset: 30,
        log_append_time: true,
        compression: Compression::Snappy,
        ..Default::default()
    };
    out.write(t, "raw-log-append-time", &batch(&recs[..2], lat));

    // Wrapped mode: selector (0x80 | codec | flags), count byte, then the section.
    let section = plain_section(&recs);
    for codec in Compression::ALL {
        // The fuzzer's bytes are the plain records; the target compresses them.
        let mut seed = vec![0x80 | 0x40 | codec.id() as u8, recs.len() as u8];
        seed.extend_from_slice(&section);
        out.write(t, &format!("wrapped-compress-{codec}"), &seed);
        // The fuzzer's bytes are the compressed section itself.
        let mut seed = vec![0x80 | codec.id() as u8, recs.len() as u8];
        seed.extend_from_slice(&compress(codec, &section));
        out.write(t, &format!("wrapped-section-{codec}"), &seed);
    }
    // Raw snappy (librdkafka style) rather than xerial, as a wrapped section.
    let raw = snap::raw::Encoder::new().compress_vec(&section).unwrap();
    let mut seed = vec![0x80 | 2, recs.len() as u8];
    seed.extend_from_slice(&raw);
    out.write(t, "wrapped-section-snappy-raw", &seed);
    // Sanity: the wrapped builder agrees with the encoder's header layout.
    let w = wrap_in_batch(0, recs.len() as i32, &section);
    assert_eq!(w.len(), 61 + section.len());
}

fn snappy_seeds(out: &mut Out) {
    let t = "snappy_xerial_decode";
    let small = text(300);
    out.write(t, "xerial-small", &compress(Compression::Snappy, &small));
    // More than one 32 KiB xerial block.
    out.write(
        t,
        "xerial-3-blocks",
        &compress(Compression::Snappy, &text(70_000)),
    );
    out.write(t, "xerial-empty", &compress(Compression::Snappy, b""));
    out.write(
        t,
        "raw-block",
        &snap::raw::Encoder::new().compress_vec(&small).unwrap(),
    );
    out.write(
        t,
        "raw-block-empty",
        &snap::raw::Encoder::new().compress_vec(b"").unwrap(),
    );
    let mut header_only = XERIAL_MAGIC.to_vec();
    header_only.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
    out.write(t, "xerial-header-only", &header_only);
}

fn compression_seeds(out: &mut Out) {
    let input = text(2000);
    for codec in Compression::ALL {
        let mut seed = vec![codec.id() as u8];
        seed.extend_from_slice(&input);
        out.write("compression_round_trip", &format!("{codec}"), &seed);

        let mut seed = vec![codec.id() as u8];
        seed.extend_from_slice(&compress(codec, &input));
        out.write("decompress", &format!("{codec}"), &seed);
        let mut seed = vec![codec.id() as u8 | 0x08];
        seed.extend_from_slice(&compress(codec, &text(10_000)));
        out.write("decompress", &format!("{codec}-small-cap"), &seed);
    }
    let mut seed = vec![2u8];
    seed.extend_from_slice(&snap::raw::Encoder::new().compress_vec(&input).unwrap());
    out.write("decompress", "snappy-raw", &seed);
}

/// A response seed: API index, version selector, header, body.
fn response_seed<M: Encodable>(out: &mut Out, index: usize, api: ApiKey, version: i16, body: &M) {
    let range = range_of(index);
    let hv = response_header_version(api, version);
    let mut buf = BytesMut::new();
    buf.put_u8(index as u8);
    buf.put_u8(vsel_for(range, version));
    ResponseHeader::default()
        .with_correlation_id(0x1234)
        .encode(&mut buf, hv)
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    out.write(
        "response_decode",
        &format!("{}-v{version}", APIS[index]),
        &buf,
    );
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}

fn response_seeds(out: &mut Out) {
    // Each API at its lowest and highest version (and the versions Paperboy negotiates,
    // which are the highest in kafka-protocol 0.18), with a few populated bodies.
    let api_versions = ApiVersionsResponse::default().with_api_keys(vec![
        ApiVersion::default()
            .with_api_key(3)
            .with_min_version(0)
            .with_max_version(13),
        ApiVersion::default()
            .with_api_key(1)
            .with_min_version(4)
            .with_max_version(18),
    ]);
    let metadata = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(1))
            .with_host(s("broker-1"))
            .with_port(9092)])
        .with_cluster_id(Some(s("cluster")))
        .with_controller_id(BrokerId(1))
        .with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(TopicName(s("events"))))
            .with_partitions(vec![MetadataResponsePartition::default()
                .with_partition_index(0)
                .with_leader_id(BrokerId(1))
                .with_replica_nodes(vec![BrokerId(1)])
                .with_isr_nodes(vec![BrokerId(1)])])]);
    let mut records = BytesMut::new();
    encode_batch(
        &sample_records(4),
        &BatchOptions {
            compression: Compression::Lz4,
            ..Default::default()
        },
        &mut records,
    )
    .unwrap();
    let fetch = |version: i16| {
        let topic =
            FetchableTopicResponse::default().with_partitions(vec![PartitionData::default()
                .with_partition_index(0)
                .with_high_watermark(4)
                .with_records(Some(records.clone().freeze()))]);
        // v13+ names topics by id (left nil here), earlier versions by name.
        let topic = if version >= 13 {
            topic
        } else {
            topic.with_topic(TopicName(s("events")))
        };
        FetchResponse::default().with_responses(vec![topic])
    };
    for index in 0..APIS.len() {
        let range = range_of(index);
        for version in [range.min, range.max] {
            match index {
                0 => response_seed(out, index, ApiKey::ApiVersions, version, &api_versions),
                1 => response_seed(out, index, ApiKey::Metadata, version, &metadata),
                2 => response_seed(
                    out,
                    index,
                    ApiKey::Produce,
                    version,
                    &ProduceResponse::default(),
                ),
                3 => response_seed(out, index, ApiKey::Fetch, version, &fetch(version)),
                4 => response_seed(
                    out,
                    index,
                    ApiKey::ListOffsets,
                    version,
                    &ListOffsetsResponse::default(),
                ),
                5 => response_seed(
                    out,
                    index,
                    ApiKey::FindCoordinator,
                    version,
                    &FindCoordinatorResponse::default(),
                ),
                6 => response_seed(
                    out,
                    index,
                    ApiKey::JoinGroup,
                    version,
                    &JoinGroupResponse::default(),
                ),
                7 => response_seed(
                    out,
                    index,
                    ApiKey::SyncGroup,
                    version,
                    &SyncGroupResponse::default(),
                ),
                8 => response_seed(
                    out,
                    index,
                    ApiKey::Heartbeat,
                    version,
                    &HeartbeatResponse::default(),
                ),
                9 => response_seed(
                    out,
                    index,
                    ApiKey::OffsetCommit,
                    version,
                    &OffsetCommitResponse::default(),
                ),
                10 => response_seed(
                    out,
                    index,
                    ApiKey::OffsetFetch,
                    version,
                    &OffsetFetchResponse::default(),
                ),
                11 => response_seed(
                    out,
                    index,
                    ApiKey::CreateTopics,
                    version,
                    &CreateTopicsResponse::default(),
                ),
                12 => response_seed(
                    out,
                    index,
                    ApiKey::DeleteTopics,
                    version,
                    &DeleteTopicsResponse::default(),
                ),
                _ => response_seed(
                    out,
                    index,
                    ApiKey::InitProducerId,
                    version,
                    &InitProducerIdResponse::default(),
                ),
            }
        }
    }
}

/// The files of a directory with the given extension, sorted by name.
fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// Splits a record set (a log segment) into its v2 batches.
fn split_batches(mut set: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while set.len() >= 12 {
        let len = i32::from_be_bytes(set[8..12].try_into().unwrap()) as usize;
        out.push(&set[..12 + len]);
        set = &set[12 + len..];
    }
    out
}

/// Seeds from bytes real clients and a real broker wrote:
///
/// - `protocol/tests/fixtures/<client>-<codec>.bin`: log segments captured from Kafka
///   4.4 after kcat (librdkafka, raw snappy) and the Java producer (xerial snappy)
///   produced to it, every codec (`scripts/capture-fixtures`);
/// - `fuzz/fixtures/fetch-v<N>.frame`: Fetch response frames the broker sent for a
///   partition holding all of those batches (`examples/capture_fetch.rs`).
///
/// Each file becomes a raw-mode record set; each of its batches a wrapped-mode seed
/// (its real records section, header flags and count), and its compressed section a
/// `decompress` seed (and a `snappy_xerial_decode` seed for snappy). The plain
/// sections feed `compression_round_trip` in every codec. The Fetch frames become
/// `response_decode` seeds at their version, and their record set a raw-mode seed.
fn real_seeds(out: &mut Out) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t = "record_batch_decode";
    for path in files_with_ext(&root.join("../protocol/tests/fixtures"), "bin") {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let file = fs::read(&path).unwrap();
        out.write(t, &format!("real-{stem}"), &file);
        for (i, batch) in split_batches(&file).into_iter().enumerate() {
            let attributes = i16::from_be_bytes([batch[21], batch[22]]);
            let count = i32::from_be_bytes(batch[57..61].try_into().unwrap());
            let codec_id = (attributes & 0x07) as u8;
            let codec = Compression::from_attributes(attributes).unwrap();
            let section = &batch[61..];
            // Codec in bits 0-2, timestamp type / transactional / control in bits 3-5:
            // the same bits as the attributes.
            let mut seed = vec![
                0x80 | (attributes & 0x3f) as u8,
                u8::try_from(count).unwrap(),
            ];
            seed.extend_from_slice(section);
            out.write(t, &format!("real-{stem}-b{i}-wrapped"), &seed);
            if codec != Compression::None {
                let mut seed = vec![codec_id];
                seed.extend_from_slice(section);
                out.write("decompress", &format!("real-{stem}-b{i}"), &seed);
            }
            if codec == Compression::Snappy {
                out.write(
                    "snappy_xerial_decode",
                    &format!("real-{stem}-b{i}"),
                    section,
                );
            }
            if codec == Compression::None && i == 0 {
                let plain = decompress(codec, section, 1 << 20).unwrap();
                for c in Compression::ALL {
                    let mut seed = vec![c.id() as u8];
                    seed.extend_from_slice(&plain);
                    out.write(
                        "compression_round_trip",
                        &format!("real-{stem}-records-{c}"),
                        &seed,
                    );
                }
            }
        }
    }
    let index = APIS.iter().position(|a| *a == "Fetch").unwrap();
    for path in files_with_ext(&root.join("fixtures"), "frame") {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let version: i16 = stem.strip_prefix("fetch-v").unwrap().parse().unwrap();
        let frame = fs::read(&path).unwrap();
        let mut seed = vec![index as u8, vsel_for(range_of(index), version)];
        seed.extend_from_slice(&frame);
        out.write("response_decode", &format!("real-Fetch-v{version}"), &seed);
        let (_, resp) = decode_response::<FetchRequest>(Bytes::from(frame), version)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if version == 4 {
            // The same record set is in every version's frame; one copy is enough.
            let records = resp.responses[0].partitions[0].records.clone().unwrap();
            out.write(t, "real-fetch-record-set", &records);
        }
    }
}

fn split_frame_seeds(out: &mut Out) {
    let mut stream = vec![32u8, 6]; // max 256 bytes, reads of 7 bytes
    for (i, body) in [&b"abc"[..], b"", &[0x55; 100]].iter().enumerate() {
        stream.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        stream.extend_from_slice(&(i as i32).to_be_bytes());
        stream.extend_from_slice(body);
    }
    stream.extend_from_slice(&[0, 0, 0, 9, 1, 2]); // a cut frame
    out.write("split_frame", "three-frames-and-a-cut-one", &stream);
    let mut big = vec![1u8, 0];
    big.extend_from_slice(&1000i32.to_be_bytes());
    out.write("split_frame", "too-large", &big);
    let mut neg = vec![255u8, 255];
    neg.extend_from_slice(&(-5i32).to_be_bytes());
    out.write("split_frame", "negative", &neg);
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut out = Out { root, total: 0 };
    record_batch_seeds(&mut out);
    snappy_seeds(&mut out);
    compression_seeds(&mut out);
    response_seeds(&mut out);
    split_frame_seeds(&mut out);
    real_seeds(&mut out);
    println!(
        "wrote {} bytes of seeds under {}",
        out.total,
        out.root.display()
    );
}
