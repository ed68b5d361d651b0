//! Shared helpers for the integration tests. They run against a real Apache Kafka broker
//! (started by `scripts/kafka start`); a test whose broker is missing fails, loudly.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use paperboy::{Client, ClientConfig, ConfigEntry, ConfigResource, NewTopic};

pub mod cluster;

/// The broker to test against: `PAPERBOY_BOOTSTRAP`, or the single node `scripts/kafka`
/// starts.
pub fn bootstrap() -> String {
    std::env::var("PAPERBOY_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A connected client. Panics with a clear message when no broker answers.
pub async fn client() -> Client {
    init_tracing();
    let bootstrap = bootstrap();
    let cfg = ClientConfig::new(&bootstrap)
        .with_client_id("paperboy-tests")
        .with_connect_timeout(Duration::from_secs(5));
    match Client::connect(cfg).await {
        Ok(c) => c,
        Err(e) => panic!(
            "no Kafka broker at {bootstrap} ({e}); start one with `scripts/kafka start` \
             (integration tests never skip)"
        ),
    }
}

/// A topic name no other test (or earlier run) uses.
pub fn unique_topic(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a fresh topic and returns its name.
pub async fn new_topic(client: &Client, prefix: &str, partitions: i32) -> String {
    let name = unique_topic(prefix);
    client
        .create_topics(&[NewTopic::new(&name, partitions, 1)])
        .await
        .expect("create topic");
    name
}

/// The configuration of `topic` once `done` holds for it. A change (IncrementalAlterConfigs)
/// is acknowledged when the controller has committed it; each broker applies it as it
/// replays the metadata log, so a describe straight after can still show the old value.
/// Re-reads for up to 15 s, then panics naming `what` with the last entries read.
pub async fn topic_configs_until(
    client: &Client,
    topic: &str,
    what: &str,
    done: impl Fn(&[ConfigEntry]) -> bool,
) -> Vec<ConfigEntry> {
    let resource = ConfigResource::Topic(topic.to_owned());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let entries = client
            .describe_configs(&resource)
            .await
            .expect("describe configs");
        if done(&entries) {
            return entries;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{topic}: {what} not seen within 15 s: {entries:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAPERBOY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A record read back: `(offset, key, value, headers)`.
pub type ReadRecord = (
    i64,
    Option<bytes::Bytes>,
    Option<bytes::Bytes>,
    Vec<(bytes::Bytes, Option<bytes::Bytes>)>,
);

/// Reads `partition` of `topic` from `from` until `n` records have been read (or 30 s
/// pass, which fails the test), checking every batch's CRC.
pub async fn read_partition(
    client: &Client,
    topic: &str,
    partition: i32,
    from: i64,
    n: usize,
) -> Vec<ReadRecord> {
    use paperboy::protocol::records::{batches, DecodeLimits};
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    let mut next = from;
    while out.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {n} records from {topic}[{partition}] in 30 s",
            out.len()
        );
        let fetched = client
            .fetch(topic, partition, next, paperboy::FetchOptions::default())
            .await
            .expect("fetch");
        for batch in batches(fetched.records, DecodeLimits::default()) {
            let batch = batch.expect("batch decodes");
            batch.verify_crc().expect("crc");
            if batch.is_control() {
                next = batch.next_offset();
                continue;
            }
            for r in batch.records().expect("records") {
                let r = r.expect("record decodes");
                if r.offset < next {
                    continue;
                }
                next = r.offset + 1;
                let headers = r.headers().collect();
                out.push((r.offset, r.key, r.value, headers));
            }
        }
    }
    out
}

/// The high watermark of every partition of `topic`, summed.
pub async fn total_records(client: &Client, topic: &str, partitions: i32) -> i64 {
    let mut total = 0;
    for p in 0..partitions {
        total += client
            .list_offset(topic, p, paperboy::OffsetSpec::Latest)
            .await
            .expect("list offsets");
    }
    total
}

/// splitmix64: reproducible from the printed seed.
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// Every record of `topic` that a consumer with `isolation.level=isolation` reads, as
/// `(partition, value)`, once its position has reached the end of every partition.
pub async fn read_all(topic: &str, partitions: i32, isolation: &str) -> Vec<(i32, String)> {
    read_all_from(&bootstrap(), topic, partitions, isolation).await
}

/// [`read_all`] from the cluster at `servers`.
pub async fn read_all_from(
    servers: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
) -> Vec<(i32, String)> {
    let client = Client::connect(ClientConfig::new(servers)).await.unwrap();
    let mut ends = std::collections::BTreeMap::new();
    for p in 0..partitions {
        let end = client
            .list_offset(topic, p, paperboy::OffsetSpec::Latest)
            .await
            .unwrap();
        ends.insert(paperboy::TopicPartition::new(topic, p), end);
    }
    let consumer = paperboy::Consumer::new(
        paperboy::ConsumerConfig::from_properties([
            ("bootstrap.servers", servers),
            ("isolation.level", isolation),
            ("auto.offset.reset", "earliest"),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    let tps: Vec<paperboy::TopicPartition> = ends.keys().cloned().collect();
    consumer.assign(&tps).unwrap();
    for tp in &tps {
        consumer.seek(tp, 0).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    loop {
        let done = ends
            .iter()
            .all(|(tp, end)| consumer.position(tp).is_some_and(|p| p >= *end));
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{isolation} consumer did not reach the end of {topic} in 30 s: read {} records",
            out.len()
        );
        for r in consumer
            .recv_batch(1000, Duration::from_millis(200))
            .await
            .unwrap()
        {
            let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            out.push((r.partition, v));
        }
    }
    consumer.close().await;
    out
}

/// A fresh consumer group for `group.protocol=consumer` (KIP-848), with the group's own
/// `consumer.heartbeat.interval.ms` (250) and `consumer.session.timeout.ms` set
/// (IncrementalAlterConfigs on the GROUP resource) so tests do not wait the broker's 5 s
/// heartbeats and 45 s sessions. Needs the lower `group.consumer.min.*` floors
/// `scripts/kafka` configures.
pub async fn kip848_group(client: &Client, prefix: &str, session_ms: u32) -> String {
    let group = unique_topic(prefix);
    let session = session_ms.to_string();
    client
        .alter_group_config(
            &group,
            &[
                ("consumer.heartbeat.interval.ms", "250"),
                ("consumer.session.timeout.ms", session.as_str()),
            ],
        )
        .await
        .expect(
            "set the group's consumer.session.timeout.ms / consumer.heartbeat.interval.ms \
             (the broker needs group.consumer.min.session.timeout.ms <= the session and \
             group.consumer.min.heartbeat.interval.ms <= 250, as scripts/kafka sets them)",
        );
    group
}
