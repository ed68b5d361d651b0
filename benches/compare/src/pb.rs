//! The Paperboy side: a tokio runtime, `Producer::enqueue` pipelining, `recv_batch`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use paperboy::consumer::{Consumer, ConsumerConfig};
use paperboy::producer::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use paperboy::ConfigError;
use tokio::sync::mpsc;

use crate::workload::{self, WorkerOut};
use crate::{Scenario, WorkerArgs};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub fn run(args: &WorkerArgs) -> Res<WorkerOut> {
    // With the feature `metrics`: every metric recorded, as a service exporting them would.
    #[cfg(feature = "metrics")]
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(async {
        match args.scenario {
            Scenario::Produce => produce(args).await,
            Scenario::Latency => latency(args).await,
            Scenario::Consume | Scenario::Memory | Scenario::Sweep => consume(args).await,
        }
    });
    #[cfg(feature = "metrics")]
    eprintln!(
        "paperboy metrics: {} lines of Prometheus text",
        metrics.render().lines().count()
    );
    out
}

async fn producer(args: &WorkerArgs) -> Res<Producer> {
    let mut props = workload::producer_props();
    props.push(("bootstrap.servers", args.bootstrap.clone()));
    let mut config = ProducerConfig::from_properties(props)?;
    for (k, v) in &args.property {
        match config.set(k, v) {
            // A consumer's property: skipped, as librdkafka does (a typo still fails).
            Err(ConfigError::UnknownKey { .. })
                if ConsumerConfig::from_properties([(k, v)]).is_ok() => {}
            r => {
                r?;
            }
        }
    }
    Ok(Producer::new(config).await?)
}

async fn produce(args: &WorkerArgs) -> Res<WorkerOut> {
    let pool = Bytes::from(workload::pool());
    let start = Instant::now();
    let producer = producer(args).await?;
    // Deliveries are awaited in order by a second task, so at most the producer's
    // buffer of them is outstanding (no vector of a million futures inflating RSS).
    let (tx, mut rx) = mpsc::unbounded_channel::<DeliveryFuture>();
    let collector = tokio::spawn(async move {
        let (mut ok, mut errors) = (0u64, 0u64);
        while let Some(d) = rx.recv().await {
            match d.await {
                Ok(_) => ok += 1,
                Err(e) => {
                    if errors == 0 {
                        eprintln!("paperboy: delivery failed: {e}");
                    }
                    errors += 1
                }
            }
        }
        (ok, errors)
    });
    for i in 0..args.messages {
        let value = pool.slice(workload::value_range(i, args.size));
        let record = ProducerRecord::new(args.topic.as_str()).with_value(value);
        tx.send(producer.enqueue(record).await?)?;
    }
    drop(tx);
    let (ok, errors) = collector.await?;
    let elapsed = start.elapsed();
    producer.close().await;
    Ok(WorkerOut {
        records: ok,
        bytes: ok * args.size as u64,
        elapsed_s: elapsed.as_secs_f64(),
        errors,
        ..WorkerOut::default()
    })
}

async fn latency(args: &WorkerArgs) -> Res<WorkerOut> {
    let pool = Bytes::from(workload::pool());
    let producer = producer(args).await?;
    let total = args.rate * (args.warmup_secs + args.secs);
    let warm = args.rate * args.warmup_secs;
    let (tx, rx) = mpsc::unbounded_channel();
    let collector = tokio::spawn(workload::collect_latencies(rx, warm));
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let due = workload::due(args.rate, start.elapsed(), total);
        while sent < due {
            let value = pool.slice(workload::value_range(sent, args.size));
            let record = ProducerRecord::new(args.topic.as_str()).with_value(value);
            let t = Instant::now();
            let d = producer.enqueue(record).await?;
            let _ = tx.send((sent, t, d));
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(tx);
    let (mut samples, ok, errors) = collector.await?;
    let elapsed = start.elapsed();
    producer.close().await;
    Ok(WorkerOut {
        records: ok,
        bytes: ok * args.size as u64,
        elapsed_s: elapsed.as_secs_f64(),
        latency_us: Some(workload::percentiles(&mut samples)),
        errors,
        ..WorkerOut::default()
    })
}

async fn consume(args: &WorkerArgs) -> Res<WorkerOut> {
    let mut props: Vec<(&str, &str)> = workload::consumer_props();
    props.push(("bootstrap.servers", &args.bootstrap));
    props.push(("group.id", &args.group));
    let budget = args.budget_kib.map(|k| k.to_string());
    if let Some(b) = &budget {
        props.push(("queued.max.messages.kbytes", b));
    }
    let mut config = ConsumerConfig::from_properties(props)?;
    for (k, v) in &args.property {
        match config.set(k, v) {
            // A producer's property: skipped, as librdkafka does (a typo still fails).
            Err(ConfigError::UnknownKey { .. })
                if ProducerConfig::from_properties([(k, v)]).is_ok() => {}
            r => {
                r?;
            }
        }
    }
    let start = Instant::now();
    let consumer = Arc::new(Consumer::new(config).await?);
    consumer.subscribe(&[args.topic.as_str()])?;
    let (mut records, mut bytes, mut check) = (0u64, 0u64, 0u64);
    let mut first: Option<Instant> = None;
    let debug = std::env::var_os("COMPARE_DEBUG").is_some();
    while records < args.messages {
        let want = (args.messages - records).min(1000) as usize;
        let batch = consumer
            .recv_batch(want, Duration::from_millis(100))
            .await?;
        if batch.is_empty() {
            continue;
        }
        if first.is_none() {
            first = Some(Instant::now());
            if args.stall_ms > 0 {
                // A slow handler: the prefetch fills up to what the settings allow.
                tokio::time::sleep(Duration::from_millis(args.stall_ms)).await;
            }
        }
        for r in &batch {
            let v = r.value.as_deref().unwrap_or_default();
            bytes += v.len() as u64;
            check = check.wrapping_add(v.first().copied().unwrap_or(0) as u64);
        }
        records += batch.len() as u64;
        if debug {
            let parts: std::collections::BTreeSet<i32> =
                batch.iter().map(|r| r.partition).collect();
            eprintln!(
                "{:.3} s: {} records from {parts:?}, {records} in all, {} B queued, VmHWM {} KiB",
                start.elapsed().as_secs_f64(),
                batch.len(),
                consumer.buffered_bytes(),
                workload::vm_hwm_kib()
            );
        }
    }
    let end = Instant::now();
    consumer.close().await;
    std::hint::black_box(check);
    let first = first.unwrap_or(end);
    let stall = Duration::from_millis(args.stall_ms);
    Ok(WorkerOut {
        records,
        bytes,
        elapsed_s: end
            .duration_since(first)
            .saturating_sub(stall)
            .as_secs_f64(),
        first_record_s: Some(first.duration_since(start).as_secs_f64()),
        ..WorkerOut::default()
    })
}
