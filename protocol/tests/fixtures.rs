//! Known-good record batches written by real producers (kcat/librdkafka and the Java
//! console producer, every codec), captured from a real broker's log segments by
//! `scripts/capture-fixtures`. Every file must decode to exactly the records listed in
//! `tests/fixtures/expected.txt`, which was written by independent decoders (kcat and a
//! Python batch walker), with valid CRCs and the codec its name says.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use paperboy_protocol::compression::{Compression, XERIAL_MAGIC};
use paperboy_protocol::records::{batches, DecodeLimits, RecordBatch};

/// Size of a v2 batch header; the (possibly compressed) records follow it.
const BATCH_HEADER_LEN: usize = 61;

#[derive(Debug)]
struct FileSpec {
    name: String,
    codec: Compression,
    size: usize,
    batches: Vec<BatchSpec>,
}

#[derive(Debug)]
struct BatchSpec {
    base_offset: i64,
    last_offset_delta: i32,
    record_count: i32,
    codec: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    crc: u32,
    records: Vec<RecordSpec>,
}

#[derive(Debug)]
struct RecordSpec {
    offset: i64,
    timestamp_ms: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<(Bytes, Option<Bytes>)>,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn codec(name: &str) -> Compression {
    match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => panic!("unknown codec {other:?}"),
    }
}

/// The codec a fixture's file name announces: `<client>-<codec>.bin`.
fn codec_of_file_name(name: &str) -> Compression {
    let stem = name
        .strip_suffix(".bin")
        .expect("fixture names end in .bin");
    let (_, c) = stem
        .rsplit_once('-')
        .expect("fixture names are <client>-<codec>.bin");
    codec(c)
}

/// `"text"` (no whitespace or quotes inside) or `null`.
fn string(token: &str) -> Option<Bytes> {
    if token == "null" {
        return None;
    }
    let inner = token
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("bad string token {token:?}"));
    Some(Bytes::copy_from_slice(inner.as_bytes()))
}

fn num<T: std::str::FromStr>(token: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    token
        .parse()
        .unwrap_or_else(|e| panic!("bad number {token:?}: {e:?}"))
}

fn manifest() -> Vec<FileSpec> {
    let path = fixtures_dir().join("expected.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut files: Vec<FileSpec> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t: Vec<&str> = line.split_whitespace().collect();
        let ctx = || format!("expected.txt line {}: {line}", n + 1);
        match t.first().copied() {
            None => {}
            Some(s) if s.starts_with('#') => {}
            Some("file") => {
                assert_eq!(t.len(), 4, "{}", ctx());
                files.push(FileSpec {
                    name: t[1].to_owned(),
                    codec: codec(t[2]),
                    size: num(t[3]),
                    batches: Vec::new(),
                });
            }
            Some("batch") => {
                assert_eq!(t.len(), 9, "{}", ctx());
                let file = files.last_mut().unwrap_or_else(|| panic!("{}", ctx()));
                file.batches.push(BatchSpec {
                    base_offset: num(t[1]),
                    last_offset_delta: num(t[2]),
                    record_count: num(t[3]),
                    codec: codec(t[4]),
                    producer_id: num(t[5]),
                    producer_epoch: num(t[6]),
                    base_sequence: num(t[7]),
                    crc: num(t[8]),
                    records: Vec::new(),
                });
            }
            Some("record") => {
                assert!(t.len() >= 5 && (t.len() - 5).is_multiple_of(2), "{}", ctx());
                let batch = files
                    .last_mut()
                    .and_then(|f| f.batches.last_mut())
                    .unwrap_or_else(|| panic!("{}", ctx()));
                let headers = t[5..]
                    .chunks(2)
                    .map(|h| {
                        (
                            string(h[0]).expect("header names are not null"),
                            string(h[1]),
                        )
                    })
                    .collect();
                batch.records.push(RecordSpec {
                    offset: num(t[1]),
                    timestamp_ms: num(t[2]),
                    key: string(t[3]),
                    value: string(t[4]),
                    headers,
                });
            }
            Some(_) => panic!("unknown entry: {}", ctx()),
        }
    }
    assert!(!files.is_empty(), "expected.txt lists no fixtures");
    files
}

fn read_fixture(name: &str) -> Bytes {
    let path = fixtures_dir().join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn decode_all(name: &str, bytes: Bytes) -> Vec<RecordBatch> {
    let mut it = batches(bytes, DecodeLimits::default());
    let out: Vec<RecordBatch> = (&mut it)
        .map(|b| b.unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect();
    assert!(
        !it.truncated_tail(),
        "{name}: a log segment has no truncated tail"
    );
    out
}

#[test]
fn manifest_covers_every_fixture_file() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .filter(|n| n.ends_with(".bin"))
        .collect();
    let listed: BTreeSet<String> = manifest().into_iter().map(|f| f.name).collect();
    assert_eq!(on_disk, listed);
    // Both producers, every codec.
    for client in ["kcat", "java"] {
        for c in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let name = format!("{client}-{c}.bin");
            assert!(listed.contains(&name), "missing fixture {name}");
        }
    }
}

#[test]
fn every_fixture_decodes_to_the_expected_records() {
    for file in manifest() {
        let name = file.name.as_str();
        assert_eq!(
            file.codec,
            codec_of_file_name(name),
            "{name}: manifest codec"
        );
        let bytes = read_fixture(name);
        assert_eq!(bytes.len(), file.size, "{name}: file size");
        let decoded = decode_all(name, bytes);
        assert_eq!(decoded.len(), file.batches.len(), "{name}: batch count");

        for (batch, want) in decoded.iter().zip(&file.batches) {
            let at = format!("{name}, batch at {}", want.base_offset);
            batch.verify_crc().unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(batch.crc(), want.crc, "{at}: crc");
            assert_eq!(batch.compression(), codec_of_file_name(name), "{at}: codec");
            assert_eq!(batch.compression(), want.codec, "{at}: codec");
            assert_eq!(batch.base_offset(), want.base_offset, "{at}: base offset");
            assert_eq!(
                batch.last_offset_delta(),
                want.last_offset_delta,
                "{at}: last offset delta"
            );
            assert_eq!(
                batch.record_count(),
                want.record_count,
                "{at}: record count"
            );
            assert_eq!(batch.producer_id(), want.producer_id, "{at}: producer id");
            assert_eq!(
                batch.producer_epoch(),
                want.producer_epoch,
                "{at}: producer epoch"
            );
            assert_eq!(
                batch.base_sequence(),
                want.base_sequence,
                "{at}: base sequence"
            );
            assert!(!batch.is_control(), "{at}: not a control batch");
            assert!(!batch.is_transactional(), "{at}: not transactional");
            assert_eq!(batch.size(), batch.as_bytes().len(), "{at}: size");

            let records: Vec<_> = batch
                .records()
                .unwrap_or_else(|e| panic!("{at}: {e}"))
                .map(|r| r.unwrap_or_else(|e| panic!("{at}: {e}")))
                .collect();
            assert_eq!(records.len(), want.records.len(), "{at}: records");
            for (r, w) in records.iter().zip(&want.records) {
                let at = format!("{name}, offset {}", w.offset);
                assert_eq!(r.offset, w.offset, "{at}: offset");
                assert_eq!(r.timestamp_ms, w.timestamp_ms, "{at}: timestamp");
                assert_eq!(r.key, w.key, "{at}: key");
                assert_eq!(r.value, w.value, "{at}: value");
                let headers: Vec<(Bytes, Option<Bytes>)> = r.headers().collect();
                assert_eq!(headers, w.headers, "{at}: headers");
                assert_eq!(r.header_count(), w.headers.len(), "{at}: header count");
            }
            let max_ts = want.records.iter().map(|r| r.timestamp_ms).max();
            assert_eq!(Some(batch.max_timestamp()), max_ts, "{at}: max timestamp");
            assert_eq!(
                batch.base_timestamp(),
                want.records
                    .iter()
                    .map(|r| r.timestamp_ms)
                    .min()
                    .unwrap_or_default(),
                "{at}: base timestamp"
            );
            assert_eq!(
                batch.last_offset(),
                want.base_offset + i64::from(want.last_offset_delta)
            );
        }
    }
}

/// The fixtures cover both snappy framings: librdkafka writes raw snappy, the Java
/// producer xerial-framed snappy.
#[test]
fn snappy_fixtures_cover_raw_and_xerial_framing() {
    let payload = |name: &str| {
        let batch = decode_all(name, read_fixture(name)).remove(0);
        batch.as_bytes().slice(BATCH_HEADER_LEN..)
    };
    assert!(
        !payload("kcat-snappy.bin").starts_with(&XERIAL_MAGIC),
        "kcat: raw snappy"
    );
    assert!(
        payload("java-snappy.bin").starts_with(&XERIAL_MAGIC),
        "java: xerial snappy"
    );
}

/// Real data, damaged: a flipped byte anywhere the CRC covers is caught, and a segment
/// cut short ends in a truncated tail rather than an error.
#[test]
fn damaged_fixtures_are_detected() {
    for file in manifest() {
        let name = file.name.as_str();
        let bytes = read_fixture(name);
        let first_len = decode_all(name, bytes.clone())[0].size();

        // Attributes start at byte 21; the CRC covers everything from there on.
        for pos in [21, BATCH_HEADER_LEN, first_len - 1] {
            let mut damaged = bytes.to_vec();
            damaged[pos] ^= 0x40;
            let batch = batches(Bytes::from(damaged), DecodeLimits::default())
                .next()
                .expect("one batch");
            if let Ok(batch) = batch {
                assert!(
                    batch.verify_crc().is_err(),
                    "{name}: flipped byte {pos} passed the CRC"
                );
            }
        }

        let mut it = batches(bytes.slice(..bytes.len() - 1), DecodeLimits::default());
        let mut whole = 0;
        for batch in &mut it {
            batch.unwrap_or_else(|e| panic!("{name}: whole batches before the cut: {e}"));
            whole += 1;
        }
        assert_eq!(
            whole,
            file.batches.len() - 1,
            "{name}: whole batches before the cut"
        );
        assert!(
            it.truncated_tail(),
            "{name}: cut segment reports a truncated tail"
        );
    }
}
