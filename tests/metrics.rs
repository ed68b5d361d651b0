//! The `metrics` feature end to end: the Prometheus exporter (its HTTP listener) is the
//! global recorder; a producer, a consumer and an engine run on the in-process cluster
//! (paperboy-mock, with injected errors) and on the real broker (`PAPERBOY_BOOTSTRAP`,
//! see tests/common); /metrics is scraped over HTTP and its values checked against what
//! was produced, consumed and handled.
//!
//! `cargo test --features metrics --test metrics` (the file's `[[test]]` requires the
//! feature). The recorder is global to the process: each test's clients, topic and groups
//! have names of their own, and every check selects by them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusBuilder;
use paperboy::consumer::{Consumer, ConsumerConfig, OffsetReset};
use paperboy::engine::{BoxError, Engine, EngineConfig, Handler, Message};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::{Client, ClientConfig, NewTopic};
use paperboy_mock::{ApiKey, Cluster, Fault, ResponseError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

mod common;

const DEADLINE: Duration = Duration::from_secs(30);
const N: usize = 600;
const PARTITIONS: i32 = 3;

/// The exporter's address: installed once, on a runtime of its own (a test's runtime
/// ends with the test), on a port the OS chose a moment before.
fn exporter() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let addr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        // Called off any runtime: `install` then runs the listener on a thread of its own.
        std::thread::spawn(move || {
            PrometheusBuilder::new()
                .with_http_listener(addr)
                .install()
                .expect("exporter installed")
        })
        .join()
        .unwrap();
        addr
    })
}

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
    topic: String,
    handled: Arc<AtomicU64>,
    all: Arc<Notify>,
}

impl Handler for Count {
    type Payload = Bytes;
    type Context = ();

    fn topics(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    async fn on_message(&self, _: &Message<Bytes>, _: &mut ()) -> Result<(), BoxError> {
        if self.handled.fetch_add(1, Ordering::Relaxed) + 1 == N as u64 {
            self.all.notify_one();
        }
        Ok(())
    }
}

/// Produces N records to a new topic of `bootstrap`, consumes them with a consumer and
/// with an engine, and checks what /metrics says after each step. `name` makes the
/// topic, client ids and groups its own. With `cluster` (the mock), two Produce
/// requests are answered NOT_LEADER_OR_FOLLOWER, and their errors and retries checked.
async fn produce_consume_handle(bootstrap: &str, name: &str, cluster: Option<&Cluster>) {
    let addr = exporter(); // before any client: handles bind to the recorder of their time
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic_name = format!("{name}-{}-{run}", std::process::id());
    let (producer_id, consumer_id, engine_id) = (
        format!("{name}-producer"),
        format!("{name}-consumer"),
        format!("{name}-engine"),
    );
    let (group_name, engine_group) = (format!("{name}-{run}"), format!("{name}-engine-{run}"));
    let admin = Client::connect(
        ClientConfig::new(bootstrap)
            .with_client_id(format!("{name}-admin"))
            .with_connect_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap_or_else(|e| panic!("no broker at {bootstrap}: {e}"));
    admin
        .create_topics(&[NewTopic::new(&topic_name, PARTITIONS, 1)])
        .await
        .unwrap();
    let fault = cluster.map(|c| {
        c.inject(
            Fault::error(ApiKey::Produce, ResponseError::NotLeaderOrFollower)
                .on_partition(&topic_name, 0)
                .times(2),
        )
    });

    // Produce N records (keys k0.., values v0..; no headers).
    let mut cfg = ProducerConfig::new(bootstrap).with_linger(Duration::from_millis(2));
    cfg.set("client.id", &producer_id).unwrap();
    cfg.set("retry.backoff.ms", "5").unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let mut pending = Vec::new();
    let mut payload = 0usize;
    for i in 0..N {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        payload += k.len() + v.len();
        let r = ProducerRecord::new(&topic_name).with_key(k).with_value(v);
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
    if let (Some(c), Some(f)) = (cluster, fault) {
        assert_eq!(c.fault_remaining(f), None, "both errors were answered");
    }

    let m = scrape(addr).await;
    let topic = [("messaging_destination_name", topic_name.as_str())];
    assert_eq!(sum(&m, "messaging_client_sent_messages", &topic), N as f64);
    // The accounted size: keys, values, and 24 bytes of overhead per record.
    assert_eq!(
        sum(&m, "paperboy_producer_sent_bytes", &topic),
        (payload + 24 * N) as f64
    );
    let batches = sum(&m, "paperboy_producer_sent_batches", &topic);
    assert!(
        batches >= per_partition.len() as f64 && batches <= N as f64,
        "{batches} batches"
    );
    let client = [("messaging_client_id", producer_id.as_str())];
    assert_eq!(sum(&m, "paperboy_producer_buffer_records", &client), 0.0);
    assert_eq!(sum(&m, "paperboy_producer_buffer_bytes", &client), 0.0);
    let produce = [
        ("messaging_operation_name", "Produce"),
        ("messaging_client_id", producer_id.as_str()),
    ];
    let produce_count = sum(&m, "messaging_client_operation_duration_count", &produce);
    assert!(produce_count >= 1.0, "{produce_count} Produce requests");
    assert!(sum(&m, "messaging_client_operation_duration_sum", &produce) > 0.0);
    assert!(sum(&m, "paperboy_client_connects", &client) >= 1.0);
    if cluster.is_some() {
        let send_errors = [
            ("messaging_operation_name", "send"),
            ("messaging_client_id", producer_id.as_str()),
            ("error_type", "NOT_LEADER_OR_FOLLOWER"),
        ];
        assert_eq!(sum(&m, "paperboy_client_errors", &send_errors), 2.0);
        let send = [
            ("messaging_operation_name", "send"),
            ("messaging_client_id", producer_id.as_str()),
        ];
        assert_eq!(sum(&m, "paperboy_client_retries", &send), 2.0);
        // A request carries every partition of its broker (one broker here): the first,
        // and one for each error answered.
        assert!(produce_count >= 3.0, "{produce_count} Produce requests");
    }
    producer.close().await;

    // Consume them.
    let mut consumer_cfg = ConsumerConfig::new(bootstrap)
        .with_group_id(&group_name)
        .with_offset_reset(OffsetReset::Earliest)
        .with_auto_commit(false);
    consumer_cfg.set("client.id", &consumer_id).unwrap();
    let consumer = Consumer::new(consumer_cfg).await.unwrap();
    consumer.subscribe(&[topic_name.as_str()]).unwrap();
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
    assert_eq!(consumed_bytes, payload);

    let m = scrape(addr).await;
    let group = [
        ("messaging_consumer_group_name", group_name.as_str()),
        ("messaging_client_id", consumer_id.as_str()),
    ];
    assert_eq!(
        sum(&m, "messaging_client_consumed_messages", &group),
        N as f64
    );
    for partition in 0..PARTITIONS {
        let p = partition.to_string();
        let labels = [
            ("messaging_consumer_group_name", group_name.as_str()),
            ("messaging_destination_name", topic_name.as_str()),
            ("messaging_destination_partition_id", p.as_str()),
        ];
        let n = per_partition.get(&partition).copied().unwrap_or(0);
        assert_eq!(
            sum(&m, "messaging_client_consumed_messages", &labels),
            n as f64,
            "partition {p}"
        );
        if n > 0 {
            let lag = select(&m, "paperboy_consumer_lag", &labels);
            assert_eq!(lag.len(), 1, "one lag gauge for partition {p}");
            assert_eq!(lag[0].value, 0.0, "partition {p} is caught up");
        }
    }
    assert_eq!(
        sum(&m, "paperboy_consumer_consumed_bytes", &group),
        payload as f64
    );
    let prefetch = select(&m, "paperboy_consumer_prefetch_bytes", &group);
    assert_eq!(prefetch.len(), 1, "one prefetch gauge");
    assert_eq!(prefetch[0].value, consumer.buffered_bytes() as f64);
    // Everything was taken and nothing more was produced: each batch was released with
    // its last record, so nothing stays charged to the budget.
    assert_eq!(
        consumer.buffered_bytes(),
        0,
        "all consumed: nothing buffered"
    );
    assert_eq!(prefetch[0].value, 0.0);
    // The group's requests went through the connection layer too.
    for api in [
        "Fetch",
        "ListOffsets",
        "FindCoordinator",
        "JoinGroup",
        "SyncGroup",
        "OffsetFetch",
        "Metadata",
        "ApiVersions",
    ] {
        let labels = [
            ("messaging_operation_name", api),
            ("messaging_client_id", consumer_id.as_str()),
        ];
        assert!(
            sum(&m, "messaging_client_operation_duration_count", &labels) >= 1.0,
            "{api} durations"
        );
    }
    consumer.close().await;

    // An engine handles them.
    let (handled, all) = (Arc::new(AtomicU64::new(0)), Arc::new(Notify::new()));
    let mut engine_cfg = ConsumerConfig::new(bootstrap)
        .with_group_id(&engine_group)
        .with_offset_reset(OffsetReset::Earliest)
        .with_auto_commit(false);
    engine_cfg.set("client.id", &engine_id).unwrap();
    let engine = Engine::builder(engine_cfg)
        .config(EngineConfig::default())
        .handler(Count {
            topic: topic_name.clone(),
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
    // Shut down (the worker's last unit counted) before scraping.
    stop.shutdown();
    running.await.unwrap().unwrap();
    assert_eq!(handled.load(Ordering::Relaxed), N as u64);

    let m = scrape(addr).await;
    assert_eq!(
        sum(&m, "paperboy_engine_handled_messages", &topic),
        N as f64
    );
    assert_eq!(sum(&m, "paperboy_engine_failed_messages", &topic), 0.0);
    assert_eq!(sum(&m, "paperboy_engine_retries", &topic), 0.0);
    // Single mode (the default): one handler call per record.
    assert_eq!(
        sum(&m, "messaging_process_duration_count", &topic),
        N as f64
    );
    assert!(sum(&m, "messaging_process_duration_sum", &topic) > 0.0);
    let engine_group = [
        ("messaging_consumer_group_name", engine_group.as_str()),
        ("messaging_client_id", engine_id.as_str()),
    ];
    assert_eq!(
        sum(&m, "messaging_client_consumed_messages", &engine_group),
        N as f64
    );
    admin.delete_topics(&[topic_name.as_str()]).await.unwrap();
}

/// On the in-process cluster, with two errors injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_the_in_process_cluster() {
    let cluster = Cluster::builder().nodes(1).build().await.unwrap();
    produce_consume_handle(&cluster.bootstrap(), "metered-mock", Some(&cluster)).await;
    cluster.shutdown();
}

/// A connection refused: counted as an error of `connect`, by broker and client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_counted() {
    let addr = exporter();
    // A port nothing listens on: one the OS gave and took back.
    let closed = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let (closed, port) = (closed.to_string(), closed.port().to_string());
    let err = Client::connect(
        ClientConfig::new(&closed)
            .with_client_id("metered-refused")
            // Bootstrap is retried within the request timeout: a short one.
            .with_request_timeout(Duration::from_millis(300)),
    )
    .await
    .expect_err("nothing listens there");
    let m = scrape(addr).await;
    let labels = [
        ("messaging_operation_name", "connect"),
        ("messaging_client_id", "metered-refused"),
        ("server_address", "127.0.0.1"),
        ("server_port", port.as_str()),
        ("error_type", "io"),
    ];
    assert!(sum(&m, "paperboy_client_errors", &labels) >= 1.0, "{err}");
    let connects = [("messaging_client_id", "metered-refused")];
    assert_eq!(sum(&m, "paperboy_client_connects", &connects), 0.0);
}

/// On the real broker (PAPERBOY_BOOTSTRAP; a missing broker fails the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_the_broker() {
    produce_consume_handle(&common::bootstrap(), "metered-broker", None).await;
}
