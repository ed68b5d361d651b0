//! Helpers shared by the fuzz targets and the seed generator (`examples/gen_seeds.rs`).
//!
//! Everything here drives the public API of `paperboy-protocol` the way a consumer would
//! and checks invariants that must hold for *any* input; a violated invariant panics,
//! which libFuzzer reports as a crash.

use bytes::{BufMut, Bytes, BytesMut};
use paperboy_protocol::compression::{self, Compression};
use paperboy_protocol::records::{
    batches, encode_batch, BatchOptions, DecodeLimits, NewRecord, RecordBatch, RecordHeader,
    BATCH_HEADER_LEN, LOG_OVERHEAD,
};

/// The decompression cap every target uses.
pub const LIMIT: usize = 1 << 20;

/// The limits every target decodes with.
pub const LIMITS: DecodeLimits = DecodeLimits {
    max_decompressed_bytes: LIMIT,
};

// Field offsets of a v2 batch (see protocol/src/records/mod.rs).
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;

/// Builds a v2 batch header around `section` (the records section as it is on the
/// wire, compressed or not) with the given attributes and record count, and a correct
/// CRC-32C, so that a fuzzer reaches the decompressors and the record parser without
/// having to guess a checksum.
pub fn wrap_in_batch(attributes: i16, record_count: i32, section: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(BATCH_HEADER_LEN + section.len());
    b.put_i64(100); // base offset
    b.put_i32((BATCH_HEADER_LEN - LOG_OVERHEAD + section.len()) as i32);
    b.put_i32(5); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // CRC, below
    b.put_i16(attributes);
    b.put_i32(record_count.saturating_sub(1)); // last offset delta
    b.put_i64(1_700_000_000_000); // base timestamp
    b.put_i64(1_700_000_000_999); // max timestamp
    b.put_i64(-1); // producer id
    b.put_i16(-1); // producer epoch
    b.put_i32(-1); // base sequence
    b.put_i32(record_count);
    debug_assert_eq!(b.len(), BATCH_HEADER_LEN);
    b.extend_from_slice(section);
    fix_crc(&mut b);
    b
}

/// Rewrites the CRC of a batch: CRC-32C of everything from the attributes to the end,
/// stored big-endian at offset 17.
pub fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The record count a wrapped batch declares, from one fuzzer byte: mostly small
/// counts, plus the hostile extremes.
pub fn count_from_byte(b: u8) -> i32 {
    match b {
        0..=250 => i32::from(b),
        251 => -1,
        252 => i32::MAX,
        253 => i32::MIN,
        254 => 1 << 20,
        255 => 100_000,
    }
}

/// What [`exercise_record_set`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    /// Batches that parsed.
    pub batches: usize,
    /// Batches whose CRC verified.
    pub crc_ok: usize,
    /// Records that decoded.
    pub records: usize,
}

/// Walks a record set the way a consumer does: every batch, every getter, the CRC, the
/// control marker, every record and every header; checks the invariants that hold for
/// any input; and, for a batch whose records all decode, re-encodes them and checks
/// that they decode back the same.
pub fn exercise_record_set(data: Bytes) -> Seen {
    let total = data.len();
    let mut seen = Seen::default();
    let mut it = batches(data, LIMITS);
    let mut consumed = 0usize;
    for batch in it.by_ref() {
        let Ok(batch) = batch else { break };
        seen.batches += 1;
        consumed += batch.size();
        assert!(consumed <= total, "batches cover more bytes than the input");
        assert_eq!(batch.size(), batch.as_bytes().len());
        if batch.verify_crc().is_ok() {
            seen.crc_ok += 1;
        }
        seen.records += exercise_batch(&batch);
    }
    let _ = it.truncated_tail();
    assert!(it.next().is_none(), "Batches is fused");
    seen
}

/// Every getter and every record of one batch; returns how many records decoded.
pub fn exercise_batch(batch: &RecordBatch) -> usize {
    let _ = format!("{batch:?}");
    let _ = batch.base_offset();
    let _ = batch.partition_leader_epoch();
    let _ = batch.crc();
    let attributes = batch.attributes();
    assert_eq!(batch.compression().id(), attributes & 0x07);
    let _ = batch.timestamp_type();
    let _ = batch.is_transactional();
    let _ = batch.is_control();
    let _ = batch.last_offset_delta();
    let _ = batch.last_offset();
    let _ = batch.next_offset();
    let _ = batch.base_timestamp();
    let _ = batch.max_timestamp();
    let _ = batch.producer_id();
    let _ = batch.producer_epoch();
    let _ = batch.base_sequence();
    let declared = batch.record_count();
    let _ = batch.control_marker();

    let Ok(records) = batch.records() else {
        return 0;
    };
    assert_eq!(records.remaining(), declared as usize);
    let mut decoded = Vec::new();
    let mut failed = false;
    for record in records {
        match record {
            Ok(record) => {
                let headers: Vec<_> = record.headers().collect();
                assert_eq!(headers.len(), record.header_count(), "headers vs count");
                assert_eq!(record.headers().len(), record.header_count());
                if let Some((name, value)) = headers.first() {
                    assert_eq!(record.header(name), Some(value.clone()));
                }
                let _ = record.header(b"no-such-header-name-in-any-seed");
                decoded.push((record, headers));
            }
            Err(e) => {
                let _ = e.to_string();
                let _ = e.is_too_large();
                failed = true;
            }
        }
    }
    let n = decoded.len();
    if !failed {
        assert_eq!(
            n, declared as usize,
            "records all decoded but count differs"
        );
        reencode_and_compare(batch, &decoded);
    }
    n
}

type Decoded = (
    paperboy_protocol::records::Record,
    Vec<(Bytes, Option<Bytes>)>,
);

/// Encodes decoded records again (same codec) and checks they decode to the same keys,
/// values, headers and timestamps, at consecutive offsets.
fn reencode_and_compare(batch: &RecordBatch, decoded: &[Decoded]) {
    // Timestamps below 0 cannot be written (-1 means "now", below is invalid).
    if decoded.is_empty() || decoded.iter().any(|(r, _)| r.timestamp_ms < 0) {
        return;
    }
    let records: Vec<NewRecord> = decoded
        .iter()
        .map(|(r, headers)| NewRecord {
            key: r.key.clone(),
            value: r.value.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| RecordHeader {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            timestamp_ms: r.timestamp_ms,
        })
        .collect();
    let opts = BatchOptions {
        base_offset: batch.base_offset().clamp(0, i64::MAX / 2),
        compression: batch.compression(),
        ..Default::default()
    };
    let mut out = BytesMut::new();
    let size = encode_batch(&records, &opts, &mut out).expect("decoded records re-encode");
    assert_eq!(size, out.len());
    // Varints may grow a little (timestamp deltas are re-based), so allow more room.
    let limits = DecodeLimits {
        max_decompressed_bytes: 4 * LIMIT,
    };
    let mut again = batches(out.freeze(), limits);
    let b = again
        .next()
        .expect("one batch")
        .expect("re-encoded batch parses");
    assert!(again.next().is_none());
    b.verify_crc().expect("re-encoded CRC");
    assert_eq!(b.record_count() as usize, records.len());
    let back: Vec<_> = b
        .records()
        .expect("re-encoded records")
        .map(|r| r.expect("re-encoded record"))
        .collect();
    assert_eq!(back.len(), records.len());
    for (i, (r, (orig, headers))) in back.iter().zip(decoded).enumerate() {
        assert_eq!(r.offset, opts.base_offset + i as i64);
        assert_eq!(r.key, orig.key);
        assert_eq!(r.value, orig.value);
        assert_eq!(r.timestamp_ms, orig.timestamp_ms);
        assert_eq!(&r.headers().collect::<Vec<_>>(), headers);
    }
}

/// The codec with this id modulo 5.
pub fn codec_from_byte(b: u8) -> Compression {
    Compression::ALL[usize::from(b) % Compression::ALL.len()]
}

/// Compresses `input` with `codec` (infallible for the codecs we have).
pub fn compress(codec: Compression, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    compression::compress(codec, input, &mut out).expect("compression does not fail");
    out
}

/// Sample records for seeds: JSON-ish values, keys, one header, a tombstone.
pub fn sample_records(n: usize) -> Vec<NewRecord> {
    (0..n)
        .map(|i| NewRecord {
            key: Some(Bytes::from(format!("key-{i:04}"))),
            value: if i % 7 == 6 {
                None
            } else {
                Some(Bytes::from(format!(
                    r#"{{"id":{i},"user":"u{}","event":"click","ok":true}}"#,
                    i % 13
                )))
            },
            headers: if i % 3 == 0 {
                vec![RecordHeader {
                    key: Bytes::from_static(b"trace"),
                    value: Some(Bytes::from(format!("t-{i}"))),
                }]
            } else {
                vec![]
            },
            timestamp_ms: 1_700_000_000_000 + i as i64,
        })
        .collect()
}

/// Response decoding, shared by the `response_decode` target and the seed generator.
pub mod responses {
    use std::fmt::Debug;

    use bytes::{Buf, Bytes, BytesMut};
    use paperboy_protocol::frame::{api_key_of, decode_response, response_header_version};
    use paperboy_protocol::kafka_protocol::messages::{
        ApiVersionsRequest, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest, FetchResponse,
        FindCoordinatorRequest, HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest,
        ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest,
        ProduceRequest, ResponseHeader, SyncGroupRequest,
    };
    use paperboy_protocol::kafka_protocol::protocol::{
        Decodable, Encodable, Message, Request, VersionRange,
    };

    /// The APIs the target decodes responses of, indexed by `data[0] % APIS.len()`.
    pub const APIS: [&str; 14] = [
        "ApiVersions",
        "Metadata",
        "Produce",
        "Fetch",
        "ListOffsets",
        "FindCoordinator",
        "JoinGroup",
        "SyncGroup",
        "Heartbeat",
        "OffsetCommit",
        "OffsetFetch",
        "CreateTopics",
        "DeleteTopics",
        "InitProducerId",
    ];

    /// The response version `vsel` selects: `min + vsel % span` for `vsel < 0xf0`
    /// (a valid version), else one outside the range (-1, `min - 1`, `max + 1`...).
    pub fn version_for(range: VersionRange, vsel: u8) -> i16 {
        let span = (range.max - range.min + 1) as u8;
        match vsel {
            0..=0xef => range.min + i16::from(vsel % span),
            0xff => -1,
            0xfe => range.min - 1,
            v => range.max + 1 + i16::from(v - 0xf0),
        }
    }

    /// The selector byte that gives `version` for a valid version of `range`.
    pub fn vsel_for(range: VersionRange, version: i16) -> u8 {
        assert!(range.min <= version && version <= range.max);
        (version - range.min) as u8
    }

    /// Decodes `frame` as a response of API `index` at the version `vsel` picks; on
    /// success, encodes header and body again and checks they decode to the same
    /// values (and that `compute_size` agrees with `encode`). Fetch responses' record
    /// sets are walked with [`crate::exercise_record_set`].
    pub fn fuzz_one(index: u8, vsel: u8, frame: &[u8]) {
        match usize::from(index) % APIS.len() {
            0 => run::<ApiVersionsRequest>(vsel, frame, |_| {}),
            1 => run::<MetadataRequest>(vsel, frame, |_| {}),
            2 => run::<ProduceRequest>(vsel, frame, |_| {}),
            3 => run::<FetchRequest>(vsel, frame, walk_fetch),
            4 => run::<ListOffsetsRequest>(vsel, frame, |_| {}),
            5 => run::<FindCoordinatorRequest>(vsel, frame, |_| {}),
            6 => run::<JoinGroupRequest>(vsel, frame, |_| {}),
            7 => run::<SyncGroupRequest>(vsel, frame, |_| {}),
            8 => run::<HeartbeatRequest>(vsel, frame, |_| {}),
            9 => run::<OffsetCommitRequest>(vsel, frame, |_| {}),
            10 => run::<OffsetFetchRequest>(vsel, frame, |_| {}),
            11 => run::<CreateTopicsRequest>(vsel, frame, |_| {}),
            12 => run::<DeleteTopicsRequest>(vsel, frame, |_| {}),
            _ => run::<InitProducerIdRequest>(vsel, frame, |_| {}),
        }
    }

    /// The version range of API `index`'s response.
    pub fn range_of(index: usize) -> VersionRange {
        fn r<R: Request>() -> VersionRange {
            <R::Response as Message>::VERSIONS
        }
        match index % APIS.len() {
            0 => r::<ApiVersionsRequest>(),
            1 => r::<MetadataRequest>(),
            2 => r::<ProduceRequest>(),
            3 => r::<FetchRequest>(),
            4 => r::<ListOffsetsRequest>(),
            5 => r::<FindCoordinatorRequest>(),
            6 => r::<JoinGroupRequest>(),
            7 => r::<SyncGroupRequest>(),
            8 => r::<HeartbeatRequest>(),
            9 => r::<OffsetCommitRequest>(),
            10 => r::<OffsetFetchRequest>(),
            11 => r::<CreateTopicsRequest>(),
            12 => r::<DeleteTopicsRequest>(),
            _ => r::<InitProducerIdRequest>(),
        }
    }

    fn walk_fetch(resp: &FetchResponse) {
        for topic in &resp.responses {
            for p in &topic.partitions {
                if let Some(records) = &p.records {
                    crate::exercise_record_set(records.clone());
                }
            }
        }
    }

    fn run<R: Request>(vsel: u8, frame: &[u8], inspect: fn(&R::Response))
    where
        R::Response: PartialEq + Debug,
    {
        let range = <R::Response as Message>::VERSIONS;
        let version = version_for(range, vsel);
        let Ok((header, body)) = decode_response::<R>(Bytes::copy_from_slice(frame), version)
        else {
            return;
        };
        inspect(&body);
        // Known upstream quirk (kafka-protocol 0.18, see fuzz/README.md): a tag >= 2^31
        // decodes to a negative key in `unknown_tagged_fields`, which `compute_size`
        // and the tag count include but `encode` skips (it writes the range `0..`).
        // Such a response cannot round trip; skip the check rather than stop on it. A
        // BTreeMap prints its smallest key first, so a negative key shows as `{-`.
        let debug = format!("{header:?} {body:?}");
        if debug.contains("unknown_tagged_fields: {-") {
            return;
        }
        let hv = response_header_version(api_key_of::<R>(), version);
        let size = header.compute_size(hv).expect("header compute_size")
            + body.compute_size(version).expect("body compute_size");
        let mut out = BytesMut::new();
        header
            .encode(&mut out, hv)
            .expect("decoded header re-encodes");
        body.encode(&mut out, version)
            .expect("decoded body re-encodes");
        assert_eq!(out.len(), size, "compute_size disagrees with encode");
        let mut again = out.freeze();
        let header2 = ResponseHeader::decode(&mut again, hv).expect("header decodes again");
        let body2 = R::Response::decode(&mut again, version).expect("body decodes again");
        assert_eq!(
            again.remaining(),
            0,
            "re-encoded response has trailing bytes"
        );
        assert_eq!(header2, header);
        assert_eq!(body2, body, "response round trip");
    }
}
