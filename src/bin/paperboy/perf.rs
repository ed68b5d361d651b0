//! `paperboy perf produce|consume`: a quick load test, as Kafka's
//! kafka-producer-perf-test and kafka-consumer-perf-test: a progress line every second
//! while it runs, then records/s, MB/s and (producing) latency percentiles.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use futures_util::stream::{FuturesUnordered, StreamExt};
use paperboy::consumer::{Consumer, ConsumerConfig, TopicPartition};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use serde_json::json;

use crate::connect::ConnArgs;
use crate::signal::StopSignal;

#[derive(Debug, Subcommand)]
pub(crate) enum PerfCommand {
    /// Send --count records of --size bytes as fast as possible (or at --rate), and
    /// measure the latency from send to acknowledgement
    Produce(ProduceArgs),
    /// Read --count records from the beginning of a topic (every partition)
    Consume(ConsumeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic to write to
    #[arg(short = 't', long)]
    topic: String,
    /// Records to send
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Bytes of each value
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Records per second at most (default: as fast as it goes)
    #[arg(long)]
    rate: Option<u64>,
    /// The final figures as JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic to read
    #[arg(short = 't', long)]
    topic: String,
    /// Records to read (default: everything up to the end as it was at the start)
    #[arg(long)]
    count: Option<u64>,
    /// Give up after this long without a record
    #[arg(long = "timeout-ms", default_value_t = 10_000)]
    timeout_ms: u64,
    /// The final figures as JSON on stdout
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(c: PerfCommand) -> Result<(), String> {
    match c {
        PerfCommand::Produce(a) => produce(a).await,
        PerfCommand::Consume(a) => consume(a).await,
    }
}

/// Prints a progress line once a second.
struct Progress {
    start: Instant,
    last: Instant,
    last_records: u64,
    last_bytes: u64,
}

impl Progress {
    fn new() -> Self {
        let now = Instant::now();
        Progress {
            start: now,
            last: now,
            last_records: 0,
            last_bytes: 0,
        }
    }

    fn tick(&mut self, records: u64, bytes: u64, extra: &str) {
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64();
        if secs < 1.0 {
            return;
        }
        eprintln!(
            "{records} records, {:.0} records/s, {:.2} MB/s{extra}",
            (records - self.last_records) as f64 / secs,
            (bytes - self.last_bytes) as f64 / secs / 1e6
        );
        self.last = now;
        self.last_records = records;
        self.last_bytes = bytes;
    }

    fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64().max(1e-9)
    }
}

/// The `p`-th percentile of sorted `v`, in ms.
fn percentile(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 * p / 100.0).ceil() as usize).clamp(1, v.len()) - 1;
    f64::from(v[i]) / 1000.0
}

async fn produce(a: ProduceArgs) -> Result<(), String> {
    let mut cfg = ProducerConfig::default();
    for (k, v) in a.conn.properties()? {
        cfg.set(&k, &v).map_err(|e| e.to_string())?;
    }
    let stop = StopSignal::install()?;
    let producer = Producer::new(cfg).await.map_err(|e| e.to_string())?;
    let value = Bytes::from(
        (0..a.size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut progress = Progress::new();
    let mut pending = FuturesUnordered::new();
    let mut latencies: Vec<u32> = Vec::with_capacity(a.count.min(50_000_000) as usize);
    let (mut acked, mut failed, mut first_error) = (0u64, 0u64, None::<String>);
    let mut note = |r: (Instant, paperboy::Result<paperboy::Delivery>)| match r.1 {
        Ok(_) => {
            acked += 1;
            latencies.push(r.0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        }
        Err(e) => {
            failed += 1;
            first_error.get_or_insert_with(|| e.to_string());
        }
    };
    let interval = a
        .rate
        .filter(|r| *r > 0)
        .map(|r| Duration::from_secs_f64(1.0 / r as f64));
    let mut sent = 0u64;
    while sent < a.count && !stop.is_set() {
        if let Some(every) = interval {
            tokio::time::sleep_until((progress.start + every.mul_f64(sent as f64)).into()).await;
        }
        let record = ProducerRecord::new(&a.topic).with_value(value.clone());
        let started = Instant::now();
        let delivery = producer.enqueue(record).await.map_err(|e| e.to_string())?;
        pending.push(async move { (started, delivery.await) });
        sent += 1;
        // Deliveries that completed meanwhile, without waiting.
        while let Some(Some(r)) = futures_util::FutureExt::now_or_never(pending.next()) {
            note(r);
        }
        progress.tick(sent, sent * a.size as u64, "");
    }
    producer.flush().await;
    while let Some(r) = pending.next().await {
        note(r);
    }
    let secs = progress.secs();
    producer.close().await;
    latencies.sort_unstable();
    let avg = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|v| f64::from(*v)).sum::<f64>() / latencies.len() as f64 / 1000.0
    };
    let (p50, p95, p99, p999) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 95.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
    );
    let max = latencies.last().map_or(0.0, |v| f64::from(*v) / 1000.0);
    let rate = acked as f64 / secs;
    let mbs = (acked * a.size as u64) as f64 / secs / 1e6;
    if a.json {
        println!(
            "{}",
            json!({
                "records": acked, "failed": failed, "seconds": secs,
                "records_per_sec": rate, "mb_per_sec": mbs,
                "latency_ms": {"avg": avg, "p50": p50, "p95": p95, "p99": p99, "p99.9": p999, "max": max},
            })
        );
    }
    eprintln!(
        "{acked} records sent, {rate:.0} records/s ({mbs:.2} MB/s), {avg:.1} ms avg latency, \
         {max:.1} ms max latency, {p50:.1} ms 50th, {p95:.1} ms 95th, {p99:.1} ms 99th, {p999:.1} ms 99.9th."
    );
    if failed > 0 {
        return Err(format!(
            "{failed} records failed; first error: {}",
            first_error.unwrap_or_default()
        ));
    }
    if stop.is_set() {
        return Err(format!(
            "stopped by signal after {sent} of {} records",
            a.count
        ));
    }
    Ok(())
}

async fn consume(a: ConsumeArgs) -> Result<(), String> {
    let mut cfg = ConsumerConfig::default();
    cfg.set("enable.auto.commit", "false")
        .map_err(|e| e.to_string())?;
    for (k, v) in a.conn.properties()? {
        cfg.set(&k, &v).map_err(|e| e.to_string())?;
    }
    let stop = StopSignal::install()?;
    let consumer = Consumer::new(cfg).await.map_err(|e| e.to_string())?;
    let cluster = consumer
        .client()
        .refresh_metadata(&[&a.topic])
        .await
        .map_err(|e| e.to_string())?;
    let topic = cluster
        .topic(&a.topic)
        .ok_or_else(|| format!("unknown topic {}", a.topic))?;
    let tps: Vec<TopicPartition> = topic
        .partitions
        .iter()
        .map(|p| TopicPartition::new(&a.topic, p.id))
        .collect();
    let mut want = 0u64;
    let mut starts = Vec::new();
    for tp in &tps {
        let client = consumer.client();
        let first = client
            .list_offset(&tp.topic, tp.partition, paperboy::OffsetSpec::Earliest)
            .await
            .map_err(|e| e.to_string())?;
        let end = client
            .list_offset(&tp.topic, tp.partition, paperboy::OffsetSpec::Latest)
            .await
            .map_err(|e| e.to_string())?;
        want += (end - first).max(0) as u64;
        starts.push((tp, first));
    }
    let want = a.count.unwrap_or(want);
    consumer.assign(&tps).map_err(|e| e.to_string())?;
    for (tp, first) in starts {
        consumer.seek(tp, first).map_err(|e| e.to_string())?;
    }
    let mut progress = Progress::new();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut first_record: Option<Duration> = None;
    let mut last_record = Instant::now();
    let result = loop {
        if records >= want {
            break Ok(());
        }
        if stop.is_set() {
            break Err(format!(
                "stopped by signal after {records} of {want} records"
            ));
        }
        if last_record.elapsed() > Duration::from_millis(a.timeout_ms) {
            break Err(format!(
                "no record for {} ms: read {records} of {want}",
                a.timeout_ms
            ));
        }
        let batch = tokio::select! {
            _ = stop.wait() => continue,
            b = consumer.recv_batch(10_000, Duration::from_millis(200)) => b.map_err(|e| e.to_string())?,
        };
        if !batch.is_empty() {
            first_record.get_or_insert_with(|| progress.start.elapsed());
            last_record = Instant::now();
        }
        for r in &batch {
            records += 1;
            bytes += (r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len))
                as u64;
        }
        progress.tick(records, bytes, "");
    };
    let secs = progress.secs();
    consumer.close().await;
    let rate = records as f64 / secs;
    let mbs = bytes as f64 / secs / 1e6;
    let first_ms = first_record.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    if a.json {
        println!(
            "{}",
            json!({
                "records": records, "bytes": bytes, "seconds": secs,
                "records_per_sec": rate, "mb_per_sec": mbs, "first_record_ms": first_ms,
            })
        );
    }
    eprintln!(
        "{records} records read, {bytes} bytes, {secs:.2} s, {rate:.0} records/s, {mbs:.2} MB/s, first record after {first_ms:.0} ms"
    );
    result
}
