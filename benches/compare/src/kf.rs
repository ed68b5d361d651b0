//! The krafka side: a tokio runtime, `Producer::enqueue` pipelining (deliveries awaited in
//! order by a second task, as for Paperboy), `Consumer::poll` with `max_poll_records(1000)`.
//!
//! krafka takes no properties: it is configured through builders. The benchmark's settings
//! and the `-X` properties, by their librdkafka names, are mapped onto those builders here
//! ([`setting`]); a property krafka cannot express makes every krafka row of the run
//! "n/a" ([`unsupported`], checked by the parent before any worker runs) rather than
//! measuring something else under the same name.

use std::time::{Duration, Instant};

use krafka::auth::{AuthConfig, TlsConfig};
use krafka::consumer::{
    AutoOffsetReset, ConsumerBuilder, GroupProtocol, IsolationLevel, PartitionAssignmentStrategy,
};
use krafka::producer::{Acks, DeliveryHandle, Producer, ProducerBuilder};
use krafka::{Compression, Kafka, Record};
use tokio::sync::mpsc;

use crate::workload::{self, WorkerOut};
use crate::{Scenario, WorkerArgs};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Records per `poll`, as Paperboy's `recv_batch(1000, ..)` (krafka's default is 500).
const MAX_POLL_RECORDS: i32 = 1000;

/// Producer settings of the benchmark that krafka has no equivalent of: noted in the
/// report, not applied.
pub const NOT_MATCHED: &str = "batch.num.messages (krafka caps a batch by batch.size bytes only), queue.buffering.max.messages (its buffer is bounded in bytes only: buffer_memory), max.in.flight.requests.per.connection (fixed: at most 5 produce requests per broker and one batch per partition on the wire)";

pub fn run(args: &WorkerArgs) -> Res<WorkerOut> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match args.scenario {
            Scenario::Produce => produce(args).await,
            Scenario::Latency => latency(args).await,
            Scenario::Consume | Scenario::Memory | Scenario::Sweep => consume(args).await,
        }
    })
}

/// A property by its librdkafka name, as krafka can take it.
enum Setting {
    Client(ClientSetting),
    Producer(ProducerSetting),
    Consumer(ConsumerSetting),
    /// A producer property with no krafka equivalent that only tunes batching or
    /// pipelining (see [`NOT_MATCHED`]): skipped.
    Skipped,
}

enum ClientSetting {
    Bootstrap(String),
    ClientId(String),
    Protocol(String),
    Mechanism(String),
    Username(String),
    Password(String),
    CaLocation(String),
    CertLocation(String),
    KeyLocation(String),
    RequestTimeout(Duration),
    ConnectTimeout(Duration),
    MetadataMaxAge(Duration),
    AutoCreateTopics(bool),
}

enum ProducerSetting {
    Acks(Acks),
    Idempotent(bool),
    Compression(Compression),
    Linger(Duration),
    BatchSize(usize),
    BufferMemory(usize),
    DeliveryTimeout(Duration),
    RetryBackoff(Duration),
    MaxBlock(Duration),
}

enum ConsumerSetting {
    GroupId(String),
    Reset(AutoOffsetReset),
    AutoCommit(bool),
    AutoCommitInterval(Duration),
    FetchMinBytes(i32),
    FetchMaxBytes(i32),
    MaxPartitionFetchBytes(i32),
    FetchMaxWait(Duration),
    SessionTimeout(Duration),
    HeartbeatInterval(Duration),
    MaxPollInterval(Duration),
    GroupProtocol(GroupProtocol),
    GroupInstanceId(String),
    Isolation(IsolationLevel),
    Assignors(Vec<PartitionAssignmentStrategy>),
}

fn ms(key: &str, v: &str) -> Result<Duration, String> {
    v.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{key}: expected milliseconds"))
}

fn int<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse::<T>()
        .map_err(|_| format!("{key}: expected a number"))
}

fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key}: expected true or false")),
    }
}

/// What `key=value` is to krafka; an error says why krafka cannot express it.
fn setting(key: &str, value: &str) -> Result<Setting, String> {
    use ClientSetting as C;
    use ConsumerSetting as G;
    use ProducerSetting as P;
    let v = value.trim();
    let upper = v.to_ascii_uppercase();
    Ok(match key {
        "bootstrap.servers" | "metadata.broker.list" => Setting::Client(C::Bootstrap(v.into())),
        "client.id" => Setting::Client(C::ClientId(v.into())),
        "security.protocol" => match upper.as_str() {
            "PLAINTEXT" | "SSL" | "SASL_PLAINTEXT" | "SASL_SSL" => {
                Setting::Client(C::Protocol(upper))
            }
            _ => return Err(format!("krafka has no security.protocol {v}")),
        },
        "sasl.mechanism" | "sasl.mechanisms" => match upper.as_str() {
            "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => Setting::Client(C::Mechanism(upper)),
            // krafka has OAUTHBEARER (a token or a provider in code) but not librdkafka's
            // unsecured-JWT properties.
            _ => return Err(format!("sasl.mechanism {v} is not mapped onto krafka here")),
        },
        "sasl.username" => Setting::Client(C::Username(value.into())),
        "sasl.password" => Setting::Client(C::Password(value.into())),
        "ssl.ca.location" => Setting::Client(C::CaLocation(v.into())),
        "ssl.certificate.location" => Setting::Client(C::CertLocation(v.into())),
        "ssl.key.location" => Setting::Client(C::KeyLocation(v.into())),
        "request.timeout.ms" | "socket.timeout.ms" => {
            Setting::Client(C::RequestTimeout(ms(key, v)?))
        }
        "socket.connection.setup.timeout.ms" => Setting::Client(C::ConnectTimeout(ms(key, v)?)),
        "metadata.max.age.ms" => Setting::Client(C::MetadataMaxAge(ms(key, v)?)),
        "allow.auto.create.topics" => Setting::Client(C::AutoCreateTopics(boolean(key, v)?)),

        "acks" | "request.required.acks" => Setting::Producer(P::Acks(match v {
            "all" | "-1" => Acks::All,
            "1" => Acks::Leader,
            "0" => Acks::None,
            _ => return Err(format!("{key}: krafka has no acks={v}")),
        })),
        "enable.idempotence" => Setting::Producer(P::Idempotent(boolean(key, v)?)),
        "compression.codec" | "compression.type" => {
            Setting::Producer(P::Compression(match v.to_ascii_lowercase().as_str() {
                "none" => Compression::None,
                "gzip" => Compression::Gzip,
                "snappy" => Compression::Snappy,
                "lz4" => Compression::Lz4,
                "zstd" => {
                    return Err(
                        "krafka encodes zstd only with its zstd feature (C), not built here".into(),
                    )
                }
                _ => return Err(format!("{key}: krafka has no codec {v}")),
            }))
        }
        "linger.ms" | "queue.buffering.max.ms" => Setting::Producer(P::Linger(ms(key, v)?)),
        "batch.size" => Setting::Producer(P::BatchSize(int(key, v)?)),
        "queue.buffering.max.kbytes" => {
            Setting::Producer(P::BufferMemory(int::<usize>(key, v)?.saturating_mul(1024)))
        }
        "buffer.memory" => Setting::Producer(P::BufferMemory(int(key, v)?)),
        "message.timeout.ms" | "delivery.timeout.ms" => {
            Setting::Producer(P::DeliveryTimeout(ms(key, v)?))
        }
        "retry.backoff.ms" => Setting::Producer(P::RetryBackoff(ms(key, v)?)),
        "max.block.ms" => Setting::Producer(P::MaxBlock(ms(key, v)?)),
        "batch.num.messages"
        | "queue.buffering.max.messages"
        | "max.in.flight.requests.per.connection"
        | "max.in.flight" => Setting::Skipped,

        "group.id" => Setting::Consumer(G::GroupId(v.into())),
        "auto.offset.reset" => Setting::Consumer(G::Reset(match v {
            "earliest" | "smallest" | "beginning" => AutoOffsetReset::Earliest,
            "latest" | "largest" | "end" => AutoOffsetReset::Latest,
            "error" | "none" => AutoOffsetReset::None,
            _ => return Err(format!("{key}: krafka has no {v}")),
        })),
        "enable.auto.commit" => Setting::Consumer(G::AutoCommit(boolean(key, v)?)),
        "auto.commit.interval.ms" => Setting::Consumer(G::AutoCommitInterval(ms(key, v)?)),
        "fetch.min.bytes" => Setting::Consumer(G::FetchMinBytes(int(key, v)?)),
        "fetch.max.bytes" => Setting::Consumer(G::FetchMaxBytes(int(key, v)?)),
        "max.partition.fetch.bytes" | "fetch.message.max.bytes" => {
            Setting::Consumer(G::MaxPartitionFetchBytes(int(key, v)?))
        }
        "fetch.wait.max.ms" | "fetch.max.wait.ms" => {
            Setting::Consumer(G::FetchMaxWait(ms(key, v)?))
        }
        "session.timeout.ms" => Setting::Consumer(G::SessionTimeout(ms(key, v)?)),
        "heartbeat.interval.ms" => Setting::Consumer(G::HeartbeatInterval(ms(key, v)?)),
        "max.poll.interval.ms" => Setting::Consumer(G::MaxPollInterval(ms(key, v)?)),
        "group.protocol" => {
            Setting::Consumer(G::GroupProtocol(match v.to_ascii_lowercase().as_str() {
                "classic" => GroupProtocol::Classic,
                "consumer" => GroupProtocol::Consumer,
                _ => return Err(format!("{key}: krafka has no {v}")),
            }))
        }
        "group.instance.id" => Setting::Consumer(G::GroupInstanceId(v.into())),
        "isolation.level" => Setting::Consumer(G::Isolation(match v {
            "read_committed" => IsolationLevel::ReadCommitted,
            "read_uncommitted" => IsolationLevel::ReadUncommitted,
            _ => return Err(format!("{key}: krafka has no {v}")),
        })),
        "partition.assignment.strategy" => {
            let mut list = Vec::new();
            for name in v.split(',') {
                match PartitionAssignmentStrategy::from_protocol_name(name.trim()) {
                    Some(s) => list.push(s),
                    None => return Err(format!("{key}: krafka has no assignor {name}")),
                }
            }
            Setting::Consumer(G::Assignors(list))
        }
        "queued.max.messages.kbytes" => {
            return Err(
                "krafka has no byte budget for its prefetch (max_buffered_records counts records)"
                    .into(),
            )
        }
        _ => return Err(format!("krafka has no equivalent of {key}")),
    })
}

/// Why krafka cannot run with these properties, if it cannot: the parent marks every
/// krafka row "n/a: ..." then. The value is never part of the reason (it may be secret).
pub fn unsupported(props: &[(String, String)]) -> Option<String> {
    props
        .iter()
        .find_map(|(k, v)| setting(k, v).err())
        .or_else(|| security(props).err())
}

/// The security settings among the properties, as one `AuthConfig` (None: plaintext).
fn security(props: &[(String, String)]) -> Result<Option<AuthConfig>, String> {
    let (mut protocol, mut mechanism) = ("PLAINTEXT".to_owned(), None::<String>);
    let (mut user, mut password) = (None::<String>, None::<String>);
    let (mut ca, mut cert, mut key) = (None::<String>, None::<String>, None::<String>);
    for (k, v) in props {
        if let Ok(Setting::Client(c)) = setting(k, v) {
            match c {
                ClientSetting::Protocol(p) => protocol = p,
                ClientSetting::Mechanism(m) => mechanism = Some(m),
                ClientSetting::Username(u) => user = Some(u),
                ClientSetting::Password(p) => password = Some(p),
                ClientSetting::CaLocation(p) => ca = Some(p),
                ClientSetting::CertLocation(p) => cert = Some(p),
                ClientSetting::KeyLocation(p) => key = Some(p),
                _ => {}
            }
        }
    }
    let tls = || -> Result<TlsConfig, String> {
        let mut tls = TlsConfig::new();
        if let Some(ca) = &ca {
            tls = tls.with_ca_cert(ca.clone());
        }
        match (&cert, &key) {
            (Some(c), Some(k)) => tls = tls.with_client_cert(c.clone(), k.clone()),
            (None, None) => {}
            _ => return Err("ssl.certificate.location and ssl.key.location go together".into()),
        }
        Ok(tls)
    };
    let sasl = || -> Result<AuthConfig, String> {
        let (Some(u), Some(p)) = (user.clone(), password.clone()) else {
            return Err("krafka's SASL here needs sasl.username and sasl.password".into());
        };
        match mechanism.as_deref().unwrap_or("PLAIN") {
            "PLAIN" => Ok(AuthConfig::sasl_plain(u, p)),
            "SCRAM-SHA-256" => Ok(AuthConfig::sasl_scram_sha256(u, p)),
            "SCRAM-SHA-512" => Ok(AuthConfig::sasl_scram_sha512(u, p)),
            m => Err(format!("sasl.mechanism {m} is not mapped onto krafka here")),
        }
    };
    Ok(match protocol.as_str() {
        "SSL" => Some(AuthConfig::ssl(tls()?)),
        "SASL_PLAINTEXT" => Some(sasl()?),
        "SASL_SSL" => Some(sasl()?.with_tls(tls()?)),
        _ => None,
    })
}

/// The benchmark's producer settings, then the `-X` properties (which override them).
fn all_props(args: &WorkerArgs, extra: Vec<(&str, String)>) -> Vec<(String, String)> {
    let mut props: Vec<(String, String)> =
        vec![("bootstrap.servers".into(), args.bootstrap.clone())];
    props.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
    props.extend(args.property.iter().cloned());
    props
}

/// The connection handle: bootstrap, client id, TLS and SASL, request timeout.
async fn connect(props: &[(String, String)]) -> Res<Kafka> {
    let mut bootstrap = String::new();
    let mut client_id = "compare-krafka".to_owned();
    let mut tuned: Vec<ClientSetting> = Vec::new();
    for (k, v) in props {
        match setting(k, v)? {
            Setting::Client(ClientSetting::Bootstrap(b)) => bootstrap = b,
            Setting::Client(ClientSetting::ClientId(c)) => client_id = c,
            Setting::Client(c) => tuned.push(c),
            _ => {}
        }
    }
    let mut b = Kafka::builder(bootstrap).client_id(client_id);
    for c in tuned {
        b = match c {
            ClientSetting::RequestTimeout(t) => b.request_timeout(t),
            ClientSetting::ConnectTimeout(t) => b.connect_timeout(t),
            ClientSetting::MetadataMaxAge(t) => b.metadata_max_age(t),
            ClientSetting::AutoCreateTopics(a) => b.allow_auto_create_topics(a),
            // Security: gathered by `security` below.
            _ => b,
        };
    }
    if let Some(auth) = security(props)? {
        b = b.security(auth);
    }
    Ok(b.connect().await?)
}

async fn producer(args: &WorkerArgs) -> Res<Producer> {
    let props = all_props(args, workload::producer_props());
    let kafka = connect(&props).await?;
    let mut b: ProducerBuilder = kafka.producer();
    for (k, v) in &props {
        // A consumer's property is skipped, as librdkafka does.
        if let Setting::Producer(p) = setting(k, v)? {
            b = match p {
                ProducerSetting::Acks(a) => b.acks(a),
                ProducerSetting::Idempotent(i) => b.idempotent(i),
                ProducerSetting::Compression(c) => b.compression(c),
                ProducerSetting::Linger(l) => b.linger(l),
                ProducerSetting::BatchSize(s) => b.batch_size(s),
                ProducerSetting::BufferMemory(m) => b.buffer_memory(m),
                ProducerSetting::DeliveryTimeout(t) => b.delivery_timeout(t),
                ProducerSetting::RetryBackoff(t) => b.retry_backoff(t),
                ProducerSetting::MaxBlock(t) => b.max_block(t),
            };
        }
    }
    Ok(b.build().await?)
}

async fn produce(args: &WorkerArgs) -> Res<WorkerOut> {
    let pool = bytes::Bytes::from(workload::pool());
    let start = Instant::now();
    let producer = producer(args).await?;
    // Deliveries awaited in order by a second task, as in the Paperboy worker.
    let (tx, mut rx) = mpsc::unbounded_channel::<DeliveryHandle>();
    let collector = tokio::spawn(async move {
        let (mut ok, mut errors) = (0u64, 0u64);
        while let Some(d) = rx.recv().await {
            match d.await {
                Ok(_) => ok += 1,
                Err(e) => {
                    if errors == 0 {
                        eprintln!("krafka: delivery failed: {e}");
                    }
                    errors += 1
                }
            }
        }
        (ok, errors)
    });
    for i in 0..args.messages {
        let value = pool.slice(workload::value_range(i, args.size));
        tx.send(
            producer
                .enqueue(Record::new(args.topic.as_str(), value))
                .await?,
        )?;
    }
    drop(tx);
    let (ok, errors) = collector.await?;
    let elapsed = start.elapsed();
    producer.close().await?;
    Ok(WorkerOut {
        records: ok,
        bytes: ok * args.size as u64,
        elapsed_s: elapsed.as_secs_f64(),
        errors,
        ..WorkerOut::default()
    })
}

async fn latency(args: &WorkerArgs) -> Res<WorkerOut> {
    let pool = bytes::Bytes::from(workload::pool());
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
            let t = Instant::now();
            let d = producer
                .enqueue(Record::new(args.topic.as_str(), value))
                .await?;
            let _ = tx.send((sent, t, d));
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(tx);
    let (mut samples, ok, errors) = collector.await?;
    let elapsed = start.elapsed();
    producer.close().await?;
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
    if args.budget_kib.is_some() {
        // The parent never asks for this (the row is n/a): say so if run by hand.
        return Err(
            "krafka has no byte budget for its prefetch (queued.max.messages.kbytes)".into(),
        );
    }
    let props = all_props(
        args,
        workload::consumer_props()
            .into_iter()
            .map(|(k, v)| (k, v.to_owned()))
            .collect(),
    );
    let start = Instant::now();
    let kafka = connect(&props).await?;
    let mut group = args.group.clone();
    for (k, v) in &props {
        if let Setting::Consumer(ConsumerSetting::GroupId(g)) = setting(k, v)? {
            group = g;
        }
    }
    let mut b: ConsumerBuilder = kafka.consumer(group).max_poll_records(MAX_POLL_RECORDS);
    if let Some(n) = args.max_buffered_records {
        // krafka's only bound on its prefetch, in records (the sweep gives it a budget's
        // worth of records of the sweep's size).
        b = b.max_buffered_records(i32::try_from(n).unwrap_or(i32::MAX));
    }
    for (k, v) in &props {
        // A producer's property is skipped, as librdkafka does.
        if let Setting::Consumer(c) = setting(k, v)? {
            b = match c {
                ConsumerSetting::GroupId(_) => b,
                ConsumerSetting::Reset(r) => b.auto_offset_reset(r),
                ConsumerSetting::AutoCommit(a) => b.enable_auto_commit(a),
                ConsumerSetting::AutoCommitInterval(t) => b.auto_commit_interval(t),
                ConsumerSetting::FetchMinBytes(n) => b.fetch_min_bytes(n),
                ConsumerSetting::FetchMaxBytes(n) => b.fetch_max_bytes(n),
                ConsumerSetting::MaxPartitionFetchBytes(n) => b.max_partition_fetch_bytes(n),
                ConsumerSetting::FetchMaxWait(t) => b.fetch_max_wait(t),
                ConsumerSetting::SessionTimeout(t) => b.session_timeout(t),
                ConsumerSetting::HeartbeatInterval(t) => b.heartbeat_interval(t),
                ConsumerSetting::MaxPollInterval(t) => b.max_poll_interval(t),
                ConsumerSetting::GroupProtocol(p) => b.group_protocol(p),
                ConsumerSetting::GroupInstanceId(id) => b.group_instance_id(id),
                ConsumerSetting::Isolation(l) => b.isolation_level(l),
                ConsumerSetting::Assignors(list) => b.partition_assignment_strategies(list),
            };
        }
    }
    let consumer = b.build().await?;
    consumer.subscribe([args.topic.as_str()]).await?;
    let (mut records, mut bytes, mut check) = (0u64, 0u64, 0u64);
    let mut first: Option<Instant> = None;
    while records < args.messages {
        let batch = consumer.poll(Duration::from_millis(100)).await?;
        if batch.is_empty() {
            continue;
        }
        if first.is_none() {
            first = Some(Instant::now());
            if args.stall_ms > 0 {
                tokio::time::sleep(Duration::from_millis(args.stall_ms)).await;
            }
        }
        for r in &batch {
            let v = r.value.as_deref().unwrap_or_default();
            bytes += v.len() as u64;
            check = check.wrapping_add(v.first().copied().unwrap_or(0) as u64);
        }
        records += batch.len() as u64;
    }
    let end = Instant::now();
    consumer.close().await?;
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
