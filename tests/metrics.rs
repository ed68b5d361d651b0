//! The `metrics` feature end to end: the Prometheus exporter (its HTTP listener) is the
//! global recorder; a producer, a consumer and an engine run on the in-process cluster
//! (paperboy-mock); /metrics is scraped over HTTP and its values checked against what was
//! produced, consumed and handled.
//!
//! `cargo test --features metrics --test metrics` (the file's `[[test]]` requires the
//! feature). One test function: the recorder is global to the process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusBuilder;
use paperboy::consumer::{Consumer, ConsumerConfig, OffsetReset};
use paperboy::engine::{BoxError, Engine, EngineConfig, Handler, Message};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy_mock::{ApiKey, Cluster, Fault, ResponseError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

const DEADLINE: Duration = Duration::from_secs(30);
const N: usize = 600;
const PARTITIONS: i32 = 3;
const TOPIC: &str = "metered";

/// One sample of the exposition: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// GET /metrics from the exporter (HTTP/1.0: the body is not chunked).
async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let mut sock = tokio::net::TcpStream::connect(addr)
        .await
        .expect("exporter");
    sock.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(DEADLINE, sock.read_to_string(&mut text))
        .await
        .expect("scraped in time")
        .unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(parse_sample)
        .collect()
}

/// `name{k="v",...} value` (label values here have no escaped quotes or commas).
fn parse_sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').expect("name and value");
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let inner = rest.strip_suffix('}').expect("closing brace");
            let labels = inner
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").expect("k=\"v\"");
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            (name, labels)
        }
        None => (series, BTreeMap::new()),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value: value.parse().unwrap_or_else(|_| panic!("a number: {line}")),
    }
}

/// The samples named `name` whose labels include every pair of `with`.
fn select<'a>(samples: &'a [Sample], name: &str, with: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The sum of the samples `select` finds.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    select(samples, name, with).iter().map(|s| s.value).sum()
}

/// Counts handled records; wakes the test at the last one.
struct Count {
    handled: Arc<AtomicU64>,
    all: Arc<Notify>,
}

impl Handler for Count {
    type Payload = Bytes;
    type Context = ();

    fn topics(&self) -> Vec<String> {
        vec![TOPIC.to_owned()]
    }

    async fn on_message(&self, _: &Message<Bytes>, _: &mut ()) -> Result<(), BoxError> {
        if self.handled.fetch_add(1, Ordering::Relaxed) + 1 == N as u64 {
            self.all.notify_one();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exported_to_prometheus() {
    // The recorder first: handles are bound to the recorder installed when they are made.
    // The listener's port: one the OS chose a moment ago.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .expect("exporter installed");

    let cluster = Cluster::builder()
        .nodes(1)
        .topic(TOPIC, PARTITIONS)
        .build()
        .await
        .unwrap();
    let bootstrap = cluster.bootstrap();
    // Two Produce requests answer NOT_LEADER_OR_FOLLOWER: two errors, two retries.
    let fault = cluster.inject(
        Fault::error(ApiKey::Produce, ResponseError::NotLeaderOrFollower)
            .on_partition(TOPIC, 0)
            .times(2),
    );

    // Produce N records (keys k0.., values v0..; no headers).
    let mut cfg = ProducerConfig::new(&bootstrap).with_linger(Duration::from_millis(2));
    cfg.set("client.id", "metered-producer").unwrap();
    cfg.set("retry.backoff.ms", "5").unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let mut pending = Vec::new();
    let mut payload = 0usize;
    for i in 0..N {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        payload += k.len() + v.len();
        let r = ProducerRecord::new(TOPIC).with_key(k).with_value(v);
        pending.push(producer.enqueue(r).await.unwrap());
    }
    let mut per_partition = BTreeMap::<i32, usize>::new();
    for d in pending {
        let d = tokio::time::timeout(DEADLINE, d)
            .await
            .expect("delivered in time")
            .expect("delivered");
        *per_partition.entry(d.partition).or_default() += 1;
    }
    assert_eq!(
        cluster.fault_remaining(fault),
        None,
        "both errors were answered"
    );

    let m = scrape(addr).await;
    let topic = [("messaging_destination_name", TOPIC)];
    assert_eq!(sum(&m, "messaging_client_sent_messages", &topic), N as f64);
    // The accounted size: keys, values, and 24 bytes of overhead per record.
    assert_eq!(
        sum(&m, "paperboy_producer_sent_bytes", &topic),
        (payload + 24 * N) as f64
    );
    let batches = sum(&m, "paperboy_producer_sent_batches", &topic);
    assert!(
        batches >= PARTITIONS as f64 && batches <= N as f64,
        "{batches} batches"
    );
    let client = [("messaging_client_id", "metered-producer")];
    assert_eq!(sum(&m, "paperboy_producer_buffer_records", &client), 0.0);
    assert_eq!(sum(&m, "paperboy_producer_buffer_bytes", &client), 0.0);
    let send_errors = [
        ("messaging_operation_name", "send"),
        ("error_type", "NOT_LEADER_OR_FOLLOWER"),
    ];
    assert_eq!(sum(&m, "paperboy_client_errors", &send_errors), 2.0);
    assert_eq!(
        sum(
            &m,
            "paperboy_client_retries",
            &[("messaging_operation_name", "send")]
        ),
        2.0
    );
    let produce = [
        ("messaging_operation_name", "Produce"),
        ("messaging_client_id", "metered-producer"),
    ];
    let produce_count = sum(&m, "messaging_client_operation_duration_count", &produce);
    // A request carries every partition of its broker: the first, and one for each
    // error answered.
    assert!(produce_count >= 3.0, "{produce_count} Produce requests");
    assert!(sum(&m, "messaging_client_operation_duration_sum", &produce) > 0.0);
    assert!(
        sum(
            &m,
            "paperboy_client_connects",
            &[("messaging_client_id", "metered-producer")]
        ) >= 1.0
    );
    producer.close().await;

    // Consume them with a consumer of group "metered".
    let consumer = Consumer::new(
        ConsumerConfig::new(&bootstrap)
            .with_group_id("metered")
            .with_offset_reset(OffsetReset::Earliest)
            .with_auto_commit(false),
    )
    .await
    .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut consumed = BTreeMap::<i32, usize>::new();
    let mut consumed_bytes = 0usize;
    let mut got = 0;
    tokio::time::timeout(DEADLINE, async {
        while got < N {
            for r in consumer
                .recv_batch(N, Duration::from_secs(1))
                .await
                .unwrap()
            {
                *consumed.entry(r.partition).or_default() += 1;
                consumed_bytes += r.key.map_or(0, |k| k.len()) + r.value.map_or(0, |v| v.len());
                got += 1;
            }
        }
    })
    .await
    .expect("consumed in time");
    assert_eq!(got, N);
    assert_eq!(consumed, per_partition);

    let m = scrape(addr).await;
    let group = [("messaging_consumer_group_name", "metered")];
    assert_eq!(
        sum(&m, "messaging_client_consumed_messages", &group),
        N as f64
    );
    for (partition, n) in &per_partition {
        let p = partition.to_string();
        let labels = [
            ("messaging_consumer_group_name", "metered"),
            ("messaging_destination_name", TOPIC),
            ("messaging_destination_partition_id", p.as_str()),
        ];
        assert_eq!(
            sum(&m, "messaging_client_consumed_messages", &labels),
            *n as f64,
            "partition {p}"
        );
        let lag = select(&m, "paperboy_consumer_lag", &labels);
        assert_eq!(lag.len(), 1, "one lag gauge for partition {p}");
        assert_eq!(lag[0].value, 0.0, "partition {p} is caught up");
    }
    assert_eq!(
        sum(&m, "paperboy_consumer_consumed_bytes", &group),
        consumed_bytes as f64
    );
    assert_eq!(consumed_bytes, payload);
    let prefetch = select(&m, "paperboy_consumer_prefetch_bytes", &group);
    assert_eq!(prefetch.len(), 1, "one prefetch gauge");
    let fetch = [("messaging_operation_name", "Fetch")];
    assert!(sum(&m, "messaging_client_operation_duration_count", &fetch) >= 1.0);
    // The group's requests went through the connection layer too.
    for api in [
        "FindCoordinator",
        "JoinGroup",
        "SyncGroup",
        "Metadata",
        "ApiVersions",
    ] {
        assert!(
            sum(
                &m,
                "messaging_client_operation_duration_count",
                &[("messaging_operation_name", api)]
            ) >= 1.0,
            "{api} durations"
        );
    }
    consumer.close().await;

    // An engine handles them (group "metered-engine").
    let (handled, all) = (Arc::new(AtomicU64::new(0)), Arc::new(Notify::new()));
    let engine = Engine::builder(
        ConsumerConfig::new(&bootstrap)
            .with_group_id("metered-engine")
            .with_offset_reset(OffsetReset::Earliest)
            .with_auto_commit(false),
    )
    .config(EngineConfig::default())
    .handler(Count {
        handled: handled.clone(),
        all: all.clone(),
    })
    .build()
    .await
    .unwrap();
    let stop = engine.shutdown_handle();
    let running = tokio::spawn(engine.run_until(std::future::pending()));
    tokio::time::timeout(DEADLINE, all.notified())
        .await
        .expect("handled in time");
    // Shut down (and the worker's last unit counted) before scraping.
    stop.shutdown();
    running.await.unwrap().unwrap();
    assert_eq!(handled.load(Ordering::Relaxed), N as u64);

    let m = scrape(addr).await;
    assert_eq!(
        sum(&m, "paperboy_engine_handled_messages", &topic),
        N as f64
    );
    assert_eq!(sum(&m, "paperboy_engine_failed_messages", &topic), 0.0);
    assert_eq!(
        sum(&m, "messaging_process_duration_count", &topic),
        N as f64
    );
    assert_eq!(
        sum(
            &m,
            "messaging_client_consumed_messages",
            &[("messaging_consumer_group_name", "metered-engine")]
        ),
        N as f64
    );
    cluster.shutdown();
}
