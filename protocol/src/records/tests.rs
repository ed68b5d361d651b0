use super::*;
use bytes::{BufMut, BytesMut};
use proptest::prelude::*;

fn rec(key: &str, value: Option<&str>, ts: i64) -> NewRecord {
    NewRecord {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        headers: vec![],
        timestamp_ms: ts,
    }
}

fn encode(records: &[NewRecord], opts: BatchOptions) -> Bytes {
    let mut buf = BytesMut::new();
    let n = encode_batch(records, &opts, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    buf.freeze()
}

fn one_batch(bytes: Bytes) -> RecordBatch {
    let mut it = batches(bytes, DecodeLimits::default());
    let b = it.next().unwrap().unwrap();
    assert!(it.next().is_none());
    assert!(!it.truncated_tail());
    b
}

fn decode_all(batch: &RecordBatch) -> Vec<Record> {
    batch.records().unwrap().map(|r| r.unwrap()).collect()
}

/// Rewrites the CRC after a test has edited a batch on purpose.
fn fix_crc(buf: &mut [u8]) {
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The example batch of Kafka's protocol documentation, built by hand field by field:
/// one record, key "key", value "value", one header, at offset 0.
#[test]
fn decodes_a_batch_built_by_hand() {
    let mut records = Vec::new();
    let mut body = Vec::new();
    body.put_u8(0); // attributes
    varint::put_varlong(&mut body, 5); // timestamp delta
    varint::put_varint(&mut body, 0); // offset delta
    varint::put_varint(&mut body, 3);
    body.put_slice(b"key");
    varint::put_varint(&mut body, 5);
    body.put_slice(b"value");
    varint::put_varint(&mut body, 1);
    varint::put_varint(&mut body, 2);
    body.put_slice(b"h1");
    varint::put_varint(&mut body, -1);
    varint::put_varint(&mut records, body.len() as i32);
    records.extend_from_slice(&body);

    let mut b = Vec::new();
    b.put_i64(1000); // base offset
    b.put_i32((49 + records.len()) as i32);
    b.put_i32(7); // leader epoch
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(0x10); // transactional
    b.put_i32(0);
    b.put_i64(1_700_000_000_000);
    b.put_i64(1_700_000_000_005);
    b.put_i64(42);
    b.put_i16(3);
    b.put_i32(9);
    b.put_i32(1);
    b.extend_from_slice(&records);
    fix_crc(&mut b);

    let batch = one_batch(Bytes::from(b));
    batch.verify_crc().unwrap();
    assert_eq!(batch.base_offset(), 1000);
    assert_eq!(batch.partition_leader_epoch(), 7);
    assert!(batch.is_transactional());
    assert!(!batch.is_control());
    assert_eq!(batch.producer_id(), 42);
    assert_eq!(batch.producer_epoch(), 3);
    assert_eq!(batch.base_sequence(), 9);
    assert_eq!(batch.next_offset(), 1001);
    let r = decode_all(&batch);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].offset, 1000);
    assert_eq!(r[0].timestamp_ms, 1_700_000_000_005);
    assert_eq!(r[0].key.as_deref(), Some(&b"key"[..]));
    assert_eq!(r[0].value.as_deref(), Some(&b"value"[..]));
    assert_eq!(
        r[0].headers().collect::<Vec<_>>(),
        vec![(Bytes::from("h1"), None)]
    );
    assert_eq!(r[0].header(b"h1"), Some(None));
}

#[test]
fn encodes_every_field_and_attribute() {
    let records = vec![
        NewRecord {
            headers: vec![
                RecordHeader {
                    key: "a".into(),
                    value: Some("1".into()),
                },
                RecordHeader {
                    key: "".into(),
                    value: None,
                },
            ],
            ..rec("k0", Some("v0"), 2_000)
        },
        NewRecord {
            key: None,
            ..rec("", None, 1_000)
        },
        rec("k2", Some(""), 3_000),
    ];
    for codec in Compression::ALL {
        let opts = BatchOptions {
            base_offset: 77,
            partition_leader_epoch: 4,
            compression: codec,
            producer_id: 5,
            producer_epoch: 6,
            base_sequence: 8,
            transactional: true,
            ..Default::default()
        };
        let batch = one_batch(encode(&records, opts));
        batch.verify_crc().unwrap();
        assert_eq!(batch.compression(), codec);
        assert_eq!(batch.base_offset(), 77);
        assert_eq!(batch.partition_leader_epoch(), 4);
        assert_eq!(batch.last_offset_delta(), 2);
        assert_eq!(batch.record_count(), 3);
        assert_eq!(batch.base_timestamp(), 2_000);
        assert_eq!(batch.max_timestamp(), 3_000);
        assert_eq!(batch.producer_id(), 5);
        assert_eq!(batch.producer_epoch(), 6);
        assert_eq!(batch.base_sequence(), 8);
        assert!(batch.is_transactional());
        assert_eq!(batch.timestamp_type(), TimestampType::CreateTime);
        let got = decode_all(&batch);
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [77, 78, 79]
        );
        assert_eq!(
            got.iter().map(|r| r.timestamp_ms).collect::<Vec<_>>(),
            [2_000, 1_000, 3_000]
        );
        assert_eq!(got[0].key.as_deref(), Some(&b"k0"[..]));
        assert_eq!(got[1].key, None);
        assert_eq!(got[1].value, None);
        assert_eq!(got[2].value.as_deref(), Some(&b""[..]));
        assert_eq!(
            got[0].headers().collect::<Vec<_>>(),
            vec![
                (Bytes::from("a"), Some(Bytes::from("1"))),
                (Bytes::new(), None)
            ]
        );
        assert_eq!(got[0].header_count(), 2);
    }
}

#[test]
fn log_append_time_gives_every_record_the_max_timestamp() {
    let records = vec![rec("a", Some("1"), 10), rec("b", Some("2"), 20)];
    let batch = one_batch(encode(
        &records,
        BatchOptions {
            log_append_time: true,
            ..Default::default()
        },
    ));
    assert_eq!(batch.timestamp_type(), TimestampType::LogAppendTime);
    let ts: Vec<i64> = decode_all(&batch).iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(ts, [20, 20]);
}

#[test]
fn default_timestamp_is_the_time_of_encoding() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let batch = one_batch(encode(
        &[NewRecord::new(None::<Bytes>, Some("x"))],
        BatchOptions::default(),
    ));
    let ts = decode_all(&batch)[0].timestamp_ms;
    assert!(ts >= before && ts <= before + 60_000, "{ts} vs {before}");
}

#[test]
fn control_batches_expose_their_marker() {
    for (ty, marker) in [(0i16, ControlMarker::Abort), (1, ControlMarker::Commit)] {
        let mut key = Vec::new();
        key.put_i16(0);
        key.put_i16(ty);
        let r = NewRecord {
            key: Some(key.into()),
            value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
            headers: vec![],
            timestamp_ms: 5,
        };
        let batch = one_batch(encode(
            &[r],
            BatchOptions {
                control: true,
                transactional: true,
                producer_id: 1,
                ..Default::default()
            },
        ));
        assert!(batch.is_control());
        assert_eq!(batch.control_marker().unwrap(), Some(marker));
    }
    let plain = one_batch(encode(&[rec("k", None, 1)], BatchOptions::default()));
    assert_eq!(plain.control_marker().unwrap(), None);
}

#[test]
fn uncompressed_records_are_slices_of_the_input() {
    let bytes = encode(&[rec("key", Some("value"), 1)], BatchOptions::default());
    let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
    let batch = one_batch(bytes.clone());
    let r = decode_all(&batch).pop().unwrap();
    let v = r.value.unwrap();
    assert!(range.contains(&(v.as_ptr() as usize)), "value was copied");
    assert!(range.contains(&(r.key.unwrap().as_ptr() as usize)));
}

#[test]
fn several_batches_and_a_truncated_tail() {
    let mut buf = BytesMut::new();
    for i in 0..3 {
        let opts = BatchOptions {
            base_offset: i * 10,
            ..Default::default()
        };
        encode_batch(&[rec("k", Some("v"), 1)], &opts, &mut buf).unwrap();
    }
    let whole = buf.freeze();
    for cut in 1..whole.len() {
        let mut it = batches(whole.slice(..cut), DecodeLimits::default());
        let got: Vec<i64> = it.by_ref().map(|b| b.unwrap().base_offset()).collect();
        let batch_len = whole.len() / 3;
        assert_eq!(got.len(), cut / batch_len, "cut at {cut}");
        assert_eq!(it.truncated_tail(), cut % batch_len != 0, "cut at {cut}");
    }
    let mut it = batches(whole, DecodeLimits::default());
    assert_eq!(it.by_ref().count(), 3);
    assert!(!it.truncated_tail());
}

#[test]
fn crc_mismatch_is_reported_with_both_values() {
    let mut b = BytesMut::from(&encode(&[rec("k", Some("v"), 1)], BatchOptions::default())[..]);
    let last = b.len() - 1;
    b[last] ^= 0xff;
    let batch = one_batch(b.freeze());
    let err = batch.verify_crc().unwrap_err();
    assert!(matches!(
        err,
        DecodeError::CrcMismatch { base_offset: 0, .. }
    ));
    assert!(err.to_string().contains("CRC-32C mismatch"), "{err}");
}

#[test]
fn header_faults_are_typed_errors() {
    let good = encode(&[rec("k", Some("v"), 1)], BatchOptions::default());
    let set = |at: usize, v: &[u8]| {
        let mut b = good.to_vec();
        b[at..at + v.len()].copy_from_slice(v);
        fix_crc(&mut b);
        Bytes::from(b)
    };
    let first_err = |b: Bytes| {
        batches(b, DecodeLimits::default())
            .next()
            .unwrap()
            .unwrap_err()
    };
    assert!(matches!(
        first_err(set(MAGIC_AT, &[1])),
        DecodeError::UnsupportedMagic { magic: 1, .. }
    ));
    assert!(matches!(
        first_err(set(ATTRIBUTES_AT, &[0, 6])),
        DecodeError::UnknownCodec { id: 6, .. }
    ));
    assert!(matches!(
        first_err(set(8, &10i32.to_be_bytes())),
        DecodeError::BatchLength { length: 10, .. }
    ));
    assert!(matches!(
        first_err(set(8, &(-5i32).to_be_bytes())),
        DecodeError::BatchLength { length: -5, .. }
    ));
    // After an error, the iterator ends.
    let mut two = good.to_vec();
    two[MAGIC_AT] = 0;
    two.extend_from_slice(&good);
    let mut it = batches(Bytes::from(two), DecodeLimits::default());
    assert!(it.next().unwrap().is_err());
    assert!(it.next().is_none());
}

#[test]
fn record_count_lies_are_typed_errors() {
    let good = encode(
        &[
            rec("a", Some("1111111111"), 1),
            rec("b", Some("2222222222"), 1),
        ],
        BatchOptions::default(),
    );
    let with_count = |n: i32| {
        let mut b = good.to_vec();
        b[57..61].copy_from_slice(&n.to_be_bytes());
        fix_crc(&mut b);
        one_batch(Bytes::from(b))
    };
    // Fewer declared than present: the rest is reported.
    let batch = with_count(1);
    let items: Vec<_> = batch.records().unwrap().collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(
        matches!(&items[1], Err(DecodeError::RecordCount { declared: 1, reason, .. }) if reason.contains("follow")),
        "{items:?}"
    );
    // More declared than present.
    let batch = with_count(3);
    let items: Vec<_> = batch.records().unwrap().collect();
    assert_eq!(items.len(), 3);
    assert!(matches!(
        &items[2],
        Err(DecodeError::RecordCount { declared: 3, .. })
    ));
    // A count that no byte count could hold fails before iterating; so does a negative one.
    assert!(matches!(
        with_count(i32::MAX).records(),
        Err(DecodeError::RecordCount { .. })
    ));
    assert!(matches!(
        with_count(-1).records(),
        Err(DecodeError::RecordCount { declared: -1, .. })
    ));
}

#[test]
fn record_faults_are_typed_errors() {
    let good = encode(&[rec("key", Some("value"), 1)], BatchOptions::default());
    // The record starts at 61: length varint, attributes, ts delta, offset delta, key len.
    let key_len_at = BATCH_HEADER_LEN + 4;
    let mut b = good.to_vec();
    b[key_len_at] = 0x7e; // key length 63: overruns the record
    fix_crc(&mut b);
    let err = one_batch(Bytes::from(b))
        .records()
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, DecodeError::Record { index: 0, reason, .. } if reason.contains("key of 63 bytes")),
        "{err}"
    );
    let mut b = good.to_vec();
    b[key_len_at] = 0x03; // key length -2
    fix_crc(&mut b);
    let err = one_batch(Bytes::from(b))
        .records()
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string().contains("key length -2 is invalid"),
        "{err}"
    );
}

#[test]
fn decompress_bomb_bounded_every_codec() {
    // 8 MiB of zeros compresses to very little in every codec.
    let bomb = NewRecord {
        value: Some(Bytes::from(vec![0u8; 8 << 20])),
        ..rec("k", None, 1)
    };
    let limits = DecodeLimits {
        max_decompressed_bytes: 1 << 20,
    };
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let bytes = encode(
            std::slice::from_ref(&bomb),
            BatchOptions {
                compression: codec,
                ..Default::default()
            },
        );
        assert!(bytes.len() < 1 << 20, "{codec}: {} bytes", bytes.len());
        let batch = batches(bytes.clone(), limits).next().unwrap().unwrap();
        let err = batch.records().unwrap_err();
        assert!(err.is_too_large(), "{codec}: {err}");
        assert!(err.to_string().contains("1048576"), "{err}");
        // With room, the same batch decodes.
        let batch = one_batch(bytes);
        let r = decode_all(&batch);
        assert_eq!(r[0].value.as_ref().unwrap().len(), 8 << 20);
    }
    // A raw snappy block that claims 3 GiB is refused before anything is allocated.
    let mut claim = Vec::new();
    let mut n: u64 = 3 << 30;
    while n >= 0x80 {
        claim.push((n as u8) | 0x80);
        n >>= 7;
    }
    claim.push(n as u8);
    claim.extend_from_slice(&[0; 16]);
    let err = crate::compression::decompress(Compression::Snappy, &claim, 1 << 20).unwrap_err();
    assert!(matches!(err, CompressionError::TooLarge { .. }), "{err}");
}

#[test]
fn encode_errors_leave_nothing_behind() {
    let mut buf = BytesMut::from(&b"prefix"[..]);
    assert!(matches!(
        encode_batch(&[], &BatchOptions::default(), &mut buf),
        Err(EncodeError::Empty)
    ));
    assert!(matches!(
        encode_batch(&[rec("k", None, -5)], &BatchOptions::default(), &mut buf),
        Err(EncodeError::InvalidTimestamp {
            index: 0,
            timestamp_ms: -5
        })
    ));
    assert_eq!(&buf[..], b"prefix");
}

fn arb_bytes() -> impl Strategy<Value = Option<Bytes>> {
    prop::option::weighted(
        0.85,
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from),
    )
}

fn arb_record() -> impl Strategy<Value = NewRecord> {
    (
        arb_bytes(),
        arb_bytes(),
        prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..20), arb_bytes()),
            0..4,
        ),
        0i64..4_000_000_000_000,
    )
        .prop_map(|(key, value, headers, ts)| NewRecord {
            key,
            value,
            headers: headers
                .into_iter()
                .map(|(k, v)| RecordHeader {
                    key: k.into(),
                    value: v,
                })
                .collect(),
            timestamp_ms: ts,
        })
}

fn arb_codec() -> impl Strategy<Value = Compression> {
    prop::sample::select(Compression::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn round_trip(
        records in prop::collection::vec(arb_record(), 1..40),
        codec in arb_codec(),
        base_offset in 0i64..1 << 50,
    ) {
        let bytes = encode(&records, BatchOptions { base_offset, compression: codec, ..Default::default() });
        let batch = one_batch(bytes);
        batch.verify_crc().unwrap();
        prop_assert_eq!(batch.compression(), codec);
        let got = decode_all(&batch);
        prop_assert_eq!(got.len(), records.len());
        for (i, (g, r)) in got.iter().zip(&records).enumerate() {
            prop_assert_eq!(g.offset, base_offset + i as i64);
            prop_assert_eq!(g.timestamp_ms, r.timestamp_ms);
            prop_assert_eq!(&g.key, &r.key);
            prop_assert_eq!(&g.value, &r.value);
            let headers: Vec<RecordHeader> = g.headers().map(|(key, value)| RecordHeader { key, value }).collect();
            prop_assert_eq!(&headers, &r.headers);
        }
    }

    /// Arbitrary bytes, and valid batches with bytes flipped (the CRC patched so the
    /// damage reaches the record parser): never a panic, always an end.
    #[test]
    fn hostile_input_never_panics(
        junk in prop::collection::vec(any::<u8>(), 0..400),
        records in prop::collection::vec(arb_record(), 1..5),
        codec in arb_codec(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        drain(Bytes::from(junk));
        let mut b = encode(&records, BatchOptions { compression: codec, ..Default::default() }).to_vec();
        for (at, x) in flips {
            let i = at.index(b.len());
            b[i] ^= x;
        }
        if b.len() > ATTRIBUTES_AT {
            fix_crc(&mut b);
        }
        drain(Bytes::from(b));
    }
}

fn drain(bytes: Bytes) {
    let limits = DecodeLimits {
        max_decompressed_bytes: 1 << 20,
    };
    for batch in batches(bytes, limits) {
        let Ok(batch) = batch else { break };
        let _ = batch.verify_crc();
        let _ = batch.control_marker();
        if let Ok(records) = batch.records() {
            for r in records.flatten() {
                let _ = r.headers().count();
            }
        }
    }
}
