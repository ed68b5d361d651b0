//! How fast the engine hands records to a handler that does nothing: single mode and
//! bulk mode over one topic filled beforehand.
//!
//! ```sh
//! scripts/kafka start
//! cargo run --release --example engine_throughput -- 200000 100   # records, bytes each
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use paperboy::engine::{BoxError, Engine, EngineConfig, Handler, Message};
use paperboy::{ConsumerConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};

struct Count {
    topic: String,
    n: Arc<AtomicU64>,
}

impl Handler for Count {
    type Payload = Bytes;
    type Context = ();

    fn topics(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    async fn on_message(&self, _: &Message<Bytes>, _: &mut ()) -> Result<(), BoxError> {
        self.n.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn on_bulk(&self, msgs: &[Message<Bytes>], _: &mut ()) -> Result<(), BoxError> {
        self.n.fetch_add(msgs.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAPERBOY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let records: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let size: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let partitions: i32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(6);
    let bootstrap = std::env::var("PAPERBOY_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let topic = format!("engine-throughput-{run}");

    let producer = Producer::new(ProducerConfig::from_properties([
        ("bootstrap.servers", bootstrap.as_str()),
        ("linger.ms", "10"),
    ])?)
    .await?;
    producer
        .client()
        .create_topics(&[NewTopic::new(&topic, partitions, 1)])
        .await?;
    let value = Bytes::from(vec![b'x'; size]);
    let mut pending = Vec::new();
    for i in 0..records {
        let r = ProducerRecord::new(&topic)
            .with_key(format!("k{i}"))
            .with_value(value.clone());
        pending.push(producer.enqueue(r).await?);
    }
    for d in pending {
        d.await?;
    }
    println!("{records} records of {size} B in {partitions} partitions of {topic}");

    // The consumer alone, as a baseline: what the engine has to work with.
    {
        let consumer = paperboy::Consumer::new(ConsumerConfig::from_properties([
            ("bootstrap.servers", bootstrap.as_str()),
            ("group.id", &format!("{topic}-plain")),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ])?)
        .await?;
        consumer.subscribe(&[topic.as_str()])?;
        let mut got = 0u64;
        let mut started = None;
        while got < records {
            let batch = consumer.recv_batch(500, Duration::from_millis(100)).await?;
            if !batch.is_empty() && started.is_none() {
                started = Some(Instant::now());
            }
            got += batch.len() as u64;
        }
        let secs = started.unwrap().elapsed().as_secs_f64();
        println!(
            "consumer alone: {records} records in {secs:.3} s = {:.0} records/s",
            records as f64 / secs
        );
        consumer.close().await;
    }
    for (name, config) in [
        (
            "single",
            EngineConfig::default().with_max_pending_records(1_000_000),
        ),
        (
            "bulk",
            EngineConfig::default()
                .with_bulk_mode(true)
                .with_bulk_mode_threshold(None)
                .with_bulk_mode_timeout(Duration::from_millis(100)),
        ),
    ] {
        let n = Arc::new(AtomicU64::new(0));
        let engine = Engine::builder(ConsumerConfig::from_properties([
            ("bootstrap.servers", bootstrap.as_str()),
            ("group.id", &format!("{topic}-{name}")),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ])?)
        .config(config)
        .handler(Count {
            topic: topic.clone(),
            n: n.clone(),
        })
        .build()
        .await?;
        let stop = engine.shutdown_handle();
        let task = tokio::spawn(engine.run_until(std::future::pending()));
        // Timed from the first record handled (group join excluded) to the last.
        while n.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        while n.load(Ordering::Relaxed) < records {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        stop.shutdown();
        task.await??;
        println!(
            "{name:>6} mode: {records} records in {secs:.3} s = {:.0} records/s, {:.1} MB/s",
            records as f64 / secs,
            (records as f64 * size as f64) / secs / 1e6
        );
    }
    producer.client().delete_topics(&[topic.as_str()]).await?;
    producer.close().await;
    Ok(())
}
