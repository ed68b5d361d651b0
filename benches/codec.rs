//! Criterion benchmarks of the record batch v2 codec, per compression codec.
//!
//! Two record sets, deterministic, shaped like service payloads:
//! - `1000x200B`: 1000 records, 16-byte keys, ~200-byte JSON event values, one header;
//! - `100x10KB`: 100 records, 16-byte keys, ~10 KB JSON documents, one header.
//!
//! For each codec (none, gzip, snappy, lz4, zstd) and set:
//! - `encode`: `records::encode_batch` into a reused buffer;
//! - `decode`: `records::batches` + `verify_crc` + every record, touching key, value and
//!   every header.
//!
//! The `*_bytes` groups report throughput as bytes of user data (keys + values + header
//! names and values, uncompressed) per second; the `*_records` groups time the same
//! work and report records per second.
//!
//! ```text
//! cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3
//! cargo bench --bench codec --no-run        # CI: the benchmark still builds
//! ```
//!
//! Before measuring, the compression ratio of each codec on each set is printed.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use paperboy_protocol::compression::Compression;
use paperboy_protocol::records::{
    batches, encode_batch, BatchOptions, DecodeLimits, NewRecord, RecordHeader, BATCH_HEADER_LEN,
};

/// A small deterministic PRNG (xorshift64*), so every run benchmarks the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const EVENTS: &[&str] = &[
    "page_view",
    "click",
    "add_to_cart",
    "checkout",
    "search",
    "login",
];
const COUNTRIES: &[&str] = &["DE", "US", "FR", "GB", "JP", "BR", "IN", "NL"];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
];

/// One JSON event of about 200 bytes.
fn event(rng: &mut Rng, i: usize) -> String {
    format!(
        r#"{{"event_id":"{:016x}","user_id":{},"ts":{},"type":"{}","path":"/products/{}","ua":"{}","amount":{}.{:02},"country":"{}"}}"#,
        rng.next(),
        rng.below(1_000_000),
        1_700_000_000_000u64 + i as u64 * 17 + rng.below(17),
        rng.pick(EVENTS),
        rng.below(100_000),
        rng.pick(AGENTS),
        rng.below(500),
        rng.below(100),
        rng.pick(COUNTRIES),
    )
}

/// A record set of `n` records whose values are `events_per_value` events in a JSON
/// array (1 for ~200-byte values, 50 for ~10 KB documents).
fn record_set(n: usize, events_per_value: usize) -> Vec<NewRecord> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|i| {
            let value = if events_per_value == 1 {
                event(&mut rng, i)
            } else {
                let items: Vec<String> = (0..events_per_value)
                    .map(|j| event(&mut rng, i * 64 + j))
                    .collect();
                format!(r#"{{"batch":{i},"items":[{}]}}"#, items.join(","))
            };
            NewRecord {
                key: Some(Bytes::from(format!(
                    "user-{:011}",
                    rng.below(100_000_000_000)
                ))),
                value: Some(Bytes::from(value)),
                headers: vec![RecordHeader {
                    key: Bytes::from_static(b"trace-id"),
                    value: Some(Bytes::from(format!("{:016x}", rng.next()))),
                }],
                timestamp_ms: 1_700_000_000_000 + i as i64,
            }
        })
        .collect()
}

/// Bytes of user data: keys, values, header names and values.
fn payload_bytes(records: &[NewRecord]) -> u64 {
    records
        .iter()
        .map(|r| {
            r.key.as_ref().map_or(0, Bytes::len)
                + r.value.as_ref().map_or(0, Bytes::len)
                + r.headers
                    .iter()
                    .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
                    .sum::<usize>()
        })
        .sum::<usize>() as u64
}

fn encode(records: &[NewRecord], codec: Compression) -> Bytes {
    let opts = BatchOptions {
        compression: codec,
        ..Default::default()
    };
    let mut buf = BytesMut::new();
    encode_batch(records, &opts, &mut buf).expect("encodes");
    buf.freeze()
}

/// Decodes every batch and record, touching every key, value and header; returns a sum
/// of lengths so nothing is optimised away.
fn decode(batch: &Bytes) -> usize {
    let mut touched = 0;
    for b in batches(batch.clone(), DecodeLimits::default()) {
        let b = b.expect("batch");
        b.verify_crc().expect("crc");
        for r in b.records().expect("records") {
            let r = r.expect("record");
            touched += r.key.as_ref().map_or(0, Bytes::len);
            touched += r.value.as_ref().map_or(0, Bytes::len);
            for (name, value) in r.headers() {
                touched += name.len() + value.as_ref().map_or(0, Bytes::len);
            }
            touched += r.offset as usize & 1;
        }
    }
    touched
}

struct Set {
    name: &'static str,
    records: Vec<NewRecord>,
    payload: u64,
}

fn sets() -> Vec<Set> {
    [("1000x200B", 1000, 1), ("100x10KB", 100, 50)]
        .into_iter()
        .map(|(name, n, per)| {
            let records = record_set(n, per);
            let payload = payload_bytes(&records);
            Set {
                name,
                records,
                payload,
            }
        })
        .collect()
}

fn print_ratios(sets: &[Set]) {
    eprintln!("\ncompression ratio (user data bytes / encoded batch bytes):");
    eprintln!(
        "{:<10} {:<7} {:>10} {:>12} {:>10} {:>7}",
        "set", "codec", "user data", "plain batch", "batch", "ratio"
    );
    for set in sets {
        let plain = encode(&set.records, Compression::None).len();
        for codec in Compression::ALL {
            let size = encode(&set.records, codec).len();
            eprintln!(
                "{:<10} {:<7} {:>10} {:>12} {:>10} {:>7.2}",
                set.name,
                codec.name(),
                set.payload,
                plain,
                size,
                set.payload as f64 / size as f64
            );
        }
    }
    eprintln!("(batch header: {BATCH_HEADER_LEN} bytes)\n");
}

fn bench_codec(c: &mut Criterion) {
    let sets = sets();
    print_ratios(&sets);

    for unit in ["bytes", "records"] {
        let mut group = c.benchmark_group(format!("encode_{unit}"));
        // Flat sampling: gzip and zstd take milliseconds per batch, and linear sampling
        // would not fit 20 samples in a 3 s measurement.
        group.sampling_mode(SamplingMode::Flat).sample_size(20);
        for set in &sets {
            group.throughput(if unit == "bytes" {
                Throughput::Bytes(set.payload)
            } else {
                Throughput::Elements(set.records.len() as u64)
            });
            for codec in Compression::ALL {
                let opts = BatchOptions {
                    compression: codec,
                    ..Default::default()
                };
                let mut buf = BytesMut::with_capacity(2 * set.payload as usize);
                group.bench_with_input(
                    BenchmarkId::new(codec.name(), set.name),
                    &set.records,
                    |b, records| {
                        b.iter(|| {
                            buf.clear();
                            encode_batch(black_box(records), &opts, &mut buf).expect("encodes");
                            black_box(buf.len())
                        })
                    },
                );
            }
        }
        group.finish();

        let mut group = c.benchmark_group(format!("decode_{unit}"));
        // Flat sampling: gzip and zstd take milliseconds per batch, and linear sampling
        // would not fit 20 samples in a 3 s measurement.
        group.sampling_mode(SamplingMode::Flat).sample_size(20);
        for set in &sets {
            group.throughput(if unit == "bytes" {
                Throughput::Bytes(set.payload)
            } else {
                Throughput::Elements(set.records.len() as u64)
            });
            for codec in Compression::ALL {
                let batch = encode(&set.records, codec);
                // Every byte of user data is touched (plus one per odd offset).
                assert_eq!(
                    decode(&batch) as u64,
                    set.payload + set.records.len() as u64 / 2
                );
                group.bench_with_input(
                    BenchmarkId::new(codec.name(), set.name),
                    &batch,
                    |b, batch| b.iter(|| black_box(decode(black_box(batch)))),
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
