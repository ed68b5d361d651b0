//! Criterion benchmarks of the producer's accumulator and batch building.
//!
//! Both run the producer's own code (`src/producer/accumulator.rs`, reached through the
//! hidden `paperboy::__bench` module), with no broker and no I/O.
//!
//! - `accumulate`: what `Producer::enqueue` does to a record once the topic's partition
//!   count is known and the buffer has room: the size and topic checks, the partition
//!   choice (murmur2 of the key for keyed records, the sticky partition for unkeyed
//!   ones), the delivery channel, and the append to the partition's open batch, which
//!   closes at `batch.size`, with the buffer accounting. Records carry a 16-byte key
//!   (keyed) or none (unkeyed), a 100 B or 1000 B value and no timestamp (the producer
//!   stamps them), for a topic of 12 partitions, with `batch.size` at its default
//!   (1000000 bytes) or at 16 KiB. One iteration enqueues 1000 records, dropping their
//!   delivery futures (fire and forget), then takes out the batches that closed and
//!   releases their bytes, as the sender would once they are acknowledged; the closed
//!   batches are freed outside the measurement. Not measured: the metadata lookup, the
//!   mutex, waking the sender.
//! - `build`: one full batch of the accumulator (closed at `batch.size`, default or
//!   16 KiB, of 100 B or 1000 B keyed records) turned into the record batch bytes of a
//!   Produce request, as the sender does it (a fresh buffer, an idempotent producer's id,
//!   epoch and sequence), per codec.
//!
//! Throughput is records per second and bytes of keys and values per second.
//!
//! ```text
//! cargo bench --bench producer -- --warm-up-time 1 --measurement-time 3
//! cargo bench --bench producer --no-run        # CI: the benchmark still builds
//! ```
//!
//! Before measuring, the batches each case closes and each codec's output size are
//! printed.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use paperboy::__bench::{Accumulator, ReadyBatch};
use paperboy::producer::{ProducerConfig, ProducerRecord};
use paperboy::Compression;

const TOPIC: &str = "events";
const PARTITIONS: i32 = 12;
/// Records enqueued per `accumulate` iteration.
const CHUNK: usize = 1000;
const KEY_LEN: usize = 16;
const VALUE_SIZES: [(&str, usize); 2] = [("100B", 100), ("1KB", 1000)];
const BATCH_SIZES: [(&str, Option<usize>); 2] =
    [("batch1MB", None), ("batch16KiB", Some(16 << 10))];

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

const EVENTS: &[&str] = &["page_view", "click", "add_to_cart", "checkout", "search"];
const COUNTRIES: &[&str] = &["DE", "US", "FR", "GB", "JP", "BR", "IN", "NL"];

/// Values and keys for records: JSON events shaped like service payloads, cut into
/// values of one size, so compressors see realistic text.
struct Source {
    rng: Rng,
    text: Bytes,
    at: usize,
}

impl Source {
    fn new() -> Source {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut text = String::new();
        let mut i = 0u64;
        while text.len() < 4 << 20 {
            text.push_str(&format!(
                r#"{{"event_id":"{:016x}","user_id":{},"ts":{},"type":"{}","path":"/products/{}","amount":{}.{:02},"country":"{}"}}"#,
                rng.next(),
                rng.below(1_000_000),
                1_700_000_000_000u64 + i * 17 + rng.below(17),
                rng.pick(EVENTS),
                rng.below(100_000),
                rng.below(500),
                rng.below(100),
                rng.pick(COUNTRIES),
            ));
            i += 1;
        }
        Source {
            rng,
            text: Bytes::from(text),
            at: 0,
        }
    }

    fn value(&mut self, len: usize) -> Bytes {
        if self.at + len > self.text.len() {
            self.at = 0;
        }
        self.at += len;
        self.text.slice(self.at - len..self.at)
    }

    fn record(&mut self, keyed: bool, value_len: usize) -> ProducerRecord {
        let mut r = ProducerRecord::new(TOPIC).with_value(self.value(value_len));
        if keyed {
            let key = format!("user-{:011}", self.rng.below(100_000_000_000));
            debug_assert_eq!(key.len(), KEY_LEN);
            r = r.with_key(key);
        }
        r
    }
}

fn user_bytes(r: &ProducerRecord) -> u64 {
    (r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len)) as u64
}

fn config(batch_size: Option<usize>) -> ProducerConfig {
    let cfg = ProducerConfig::new("127.0.0.1:9092");
    match batch_size {
        Some(n) => cfg.with("batch.size", &n.to_string()).expect("batch.size"),
        None => cfg,
    }
}

/// The first batch a partition closes, with the sequence number the sender would give
/// it.
fn full_batch(source: &mut Source, batch_size: Option<usize>, value_len: usize) -> ReadyBatch {
    let mut acc = Accumulator::new(config(batch_size), 1);
    loop {
        drop(
            acc.enqueue(source.record(true, value_len))
                .expect("enqueues"),
        );
        if let Some(mut batch) = acc.drain().pop() {
            batch.set_base_sequence(0);
            return batch;
        }
    }
}

fn bench_accumulate(c: &mut Criterion) {
    let mut source = Source::new();
    let mut group = c.benchmark_group("accumulate");
    eprintln!("\naccumulate: batches closed per 100000 records");
    for (batch_name, batch_size) in BATCH_SIZES {
        for (size_name, value_len) in VALUE_SIZES {
            for keyed in [true, false] {
                let chunk: Vec<ProducerRecord> = (0..CHUNK)
                    .map(|_| source.record(keyed, value_len))
                    .collect();
                let bytes = chunk.iter().map(user_bytes).sum();
                let mut acc = Accumulator::new(config(batch_size), PARTITIONS);
                let name = format!(
                    "{}/{size_name}/{batch_name}",
                    if keyed { "keyed" } else { "unkeyed" }
                );

                // What the case does: batches closed and their sizes.
                let (mut batches, mut records) = (0, 0);
                for _ in 0..100_000 / CHUNK {
                    for r in chunk.clone() {
                        drop(acc.enqueue(r).expect("enqueues"));
                    }
                    for b in acc.drain() {
                        batches += 1;
                        records += b.len();
                    }
                }
                eprintln!(
                    "{name:<28} {batches:>5} batches, {:>6.0} records each; {} records buffered",
                    records as f64 / batches.max(1) as f64,
                    acc.buffered_records()
                );

                group.throughput(Throughput::ElementsAndBytes {
                    elements: CHUNK as u64,
                    bytes,
                });
                group.bench_function(BenchmarkId::from_parameter(&name), |b| {
                    b.iter_batched(
                        || chunk.clone(),
                        |records| {
                            for r in records {
                                drop(acc.enqueue(black_box(r)).expect("enqueues"));
                            }
                            // Freed outside the measurement.
                            acc.drain()
                        },
                        BatchSize::SmallInput,
                    )
                });
            }
        }
    }
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    let mut source = Source::new();
    let mut group = c.benchmark_group("build");
    // Flat sampling: gzip and zstd take milliseconds per full batch, and linear sampling
    // would not fit 20 samples in a 3 s measurement.
    group.sampling_mode(SamplingMode::Flat).sample_size(20);
    eprintln!("\nbuild: the batches and their encoded sizes");
    eprintln!(
        "{:<16} {:>7} {:>10} {:>10} {:>7} {:>10} {:>7}",
        "batch", "records", "user data", "accounted", "codec", "encoded", "ratio"
    );
    for (batch_name, batch_size) in BATCH_SIZES {
        for (size_name, value_len) in VALUE_SIZES {
            let batch = full_batch(&mut source, batch_size, value_len);
            let user = (batch.len() * (KEY_LEN + value_len)) as u64;
            let set = format!("{size_name}/{batch_name}");
            for codec in Compression::ALL {
                let size = batch.encode(codec, 1000, 0).expect("encodes").len();
                eprintln!(
                    "{set:<16} {:>7} {user:>10} {:>10} {:>7} {size:>10} {:>7.2}",
                    batch.len(),
                    batch.accounted_bytes(),
                    codec.name(),
                    user as f64 / size as f64
                );
            }
            group.throughput(Throughput::ElementsAndBytes {
                elements: batch.len() as u64,
                bytes: user,
            });
            for codec in Compression::ALL {
                group.bench_with_input(BenchmarkId::new(codec.name(), &set), &batch, |b, batch| {
                    b.iter(|| black_box(batch.encode(codec, 1000, 0).expect("encodes")))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_accumulate, bench_build);
criterion_main!(benches);
