//! The rdkafka side: `BaseProducer` with delivery callbacks (polled by the sending
//! thread for throughput, by rdkafka's polling thread for latency), `BaseConsumer::poll`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use crate::workload::{self, WorkerOut};
use crate::{Scenario, WorkerArgs};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub fn run(args: &WorkerArgs) -> Res<WorkerOut> {
    match args.scenario {
        Scenario::Produce => produce(args),
        Scenario::Latency => latency(args),
        Scenario::Consume | Scenario::Memory | Scenario::Sweep => consume(args),
    }
}

/// Counts deliveries.
#[derive(Default)]
struct Ctx {
    ok: AtomicU64,
    errors: AtomicU64,
}

impl Ctx {
    fn count(&self, result: &DeliveryResult<'_>) -> bool {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err((e, _)) => {
                if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("rdkafka: delivery failed: {e}");
                }
                false
            }
        }
    }
}

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        self.count(result);
    }
}

/// Counts deliveries and records each one's latency (the send time is the opaque).
#[derive(Default)]
struct LatencyCtx {
    counts: Ctx,
    samples: Mutex<Vec<(u64, u64)>>,
}

impl ClientContext for LatencyCtx {}

impl ProducerContext for LatencyCtx {
    type DeliveryOpaque = Box<(u64, Instant)>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<(u64, Instant)>) {
        let us = sent.1.elapsed().as_micros() as u64;
        if self.counts.count(result) {
            self.samples.lock().unwrap().push((sent.0, us));
        }
    }
}

fn producer_config(args: &WorkerArgs) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.bootstrap);
    for (k, v) in workload::producer_props() {
        c.set(k, v);
    }
    for (k, v) in &args.property {
        c.set(k, v);
    }
    c
}

fn produce(args: &WorkerArgs) -> Res<WorkerOut> {
    let pool = workload::pool();
    let start = Instant::now();
    let producer: BaseProducer<Ctx> = producer_config(args).create_with_context(Ctx::default())?;
    for i in 0..args.messages {
        let mut record = BaseRecord::<(), [u8]>::to(&args.topic)
            .payload(&pool[workload::value_range(i, args.size)]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    // Wait for room without spinning: rdkafka 0.39's poll(timeout) loops
                    // until its deadline and hands librdkafka the time left in whole
                    // milliseconds, so poll(1 ms) is a busy loop of poll(0) calls (a
                    // third of rdkafka's CPU in the 1 KiB produce row, and a core taken
                    // from the broker and librdkafka's threads).
                    std::thread::sleep(Duration::from_millis(1));
                    producer.poll(Duration::ZERO);
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if i % 128 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(150))?;
    let elapsed = start.elapsed();
    let ctx = producer.context();
    let ok = ctx.ok.load(Ordering::Relaxed);
    Ok(WorkerOut {
        records: ok,
        bytes: ok * args.size as u64,
        elapsed_s: elapsed.as_secs_f64(),
        errors: ctx.errors.load(Ordering::Relaxed),
        ..WorkerOut::default()
    })
}

fn latency(args: &WorkerArgs) -> Res<WorkerOut> {
    let pool = workload::pool();
    let producer: ThreadedProducer<LatencyCtx> =
        producer_config(args).create_with_context(LatencyCtx::default())?;
    let total = args.rate * (args.warmup_secs + args.secs);
    let warm = args.rate * args.warmup_secs;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let due = workload::due(args.rate, start.elapsed(), total);
        while sent < due {
            let opaque = Box::new((sent, Instant::now()));
            let record = BaseRecord::<(), [u8], _>::with_opaque_to(&args.topic, opaque)
                .payload(&pool[workload::value_range(sent, args.size)]);
            if let Err((e, _)) = producer.send(record) {
                return Err(e.into());
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    producer.flush(Duration::from_secs(150))?;
    let elapsed = start.elapsed();
    let ctx = producer.context();
    let mut samples: Vec<u64> = ctx
        .samples
        .lock()
        .unwrap()
        .iter()
        .filter(|(i, _)| *i >= warm)
        .map(|(_, us)| *us)
        .collect();
    let ok = ctx.counts.ok.load(Ordering::Relaxed);
    Ok(WorkerOut {
        records: ok,
        bytes: ok * args.size as u64,
        elapsed_s: elapsed.as_secs_f64(),
        latency_us: Some(workload::percentiles(&mut samples)),
        errors: ctx.counts.errors.load(Ordering::Relaxed),
        ..WorkerOut::default()
    })
}

fn consume(args: &WorkerArgs) -> Res<WorkerOut> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.bootstrap);
    c.set("group.id", &args.group);
    for (k, v) in workload::consumer_props() {
        c.set(k, v);
    }
    if let Some(kib) = args.budget_kib {
        // fetch.max.bytes left unset: librdkafka then makes it
        // max(min(52428800, kib x 1024), message.max.bytes), so one fetch cannot be
        // larger than the budget (above 1000000 bytes).
        c.set("queued.max.messages.kbytes", kib.to_string());
    }
    if let Some(n) = args.queued_min_messages {
        c.set("queued.min.messages", n.to_string());
    }
    for (k, v) in &args.property {
        c.set(k, v);
    }
    let start = Instant::now();
    let consumer: BaseConsumer = c.create()?;
    consumer.subscribe(&[args.topic.as_str()])?;
    let (mut records, mut bytes, mut check) = (0u64, 0u64, 0u64);
    let mut first: Option<Instant> = None;
    while records < args.messages {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg?;
        if first.is_none() {
            first = Some(Instant::now());
            if args.stall_ms > 0 {
                std::thread::sleep(Duration::from_millis(args.stall_ms));
            }
        }
        let v = msg.payload().unwrap_or_default();
        bytes += v.len() as u64;
        check = check.wrapping_add(v.first().copied().unwrap_or(0) as u64);
        records += 1;
    }
    let end = Instant::now();
    drop(consumer);
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
