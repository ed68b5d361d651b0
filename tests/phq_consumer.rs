//! The PHQ Consumer against a real broker: messages and their refs, tombstones, commit
//! after processing (and nothing on a handler error), latest-only batches, a graceful
//! stop, and auto-commit refused.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paperboy::envelope::OrderedValue;
use paperboy::phq::{Consumer, Message, PhqError, Producer};
use paperboy::producer::{self, ProducerConfig, ProducerRecord};
use paperboy::{ConfigError, Error, TopicPartition};
use serde_json::{json, Value};

/// Every test finishes well within this; a hang fails instead of blocking the suite.
const LIMIT: Duration = Duration::from_secs(25);

const OVERRIDES: [(&str, &str); 4] = [
    ("auto.offset.reset", "earliest"),
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "500"),
    ("fetch.max.wait.ms", "100"),
];

/// The overrides for `group`: with the consumer group protocol (KIP-848) for groups made
/// by `common::kip848_group` (named `kip848-...`), or for every group with
/// `PAPERBOY_GROUP_PROTOCOL=consumer` (the session and heartbeat are then the broker's).
fn overrides(group: &str) -> Vec<(&'static str, &'static str)> {
    if group.starts_with("kip848-")
        || std::env::var("PAPERBOY_GROUP_PROTOCOL").is_ok_and(|p| p == "consumer")
    {
        vec![
            ("auto.offset.reset", "earliest"),
            ("group.protocol", "consumer"),
            ("fetch.max.wait.ms", "100"),
        ]
    } else {
        OVERRIDES.to_vec()
    }
}

async fn consumer(topic: &str, group: &str, timeout: Duration) -> Consumer {
    Consumer::with_config(
        &[common::bootstrap()],
        &[topic],
        group,
        100,
        timeout,
        overrides(group),
    )
    .await
    .unwrap()
}

/// `n` messages `{prefix}{i}` with payload `{"n": i}` and one upstream ref.
fn messages(prefix: &str, range: std::ops::Range<usize>) -> Vec<Message> {
    range
        .map(|i| {
            Message::new(format!("{prefix}{i}"), json!({"n": i, "name": "é"})).with_refs(upstream())
        })
        .collect()
}

fn upstream() -> Value {
    json!({"topic": "raw", "partition": 2, "offset": 41, "key": "r-1", "hist": null})
}

/// Writes records with no PHQ envelope: `(key, value)`, `None` for a tombstone.
async fn produce_raw(topic: &str, records: &[(&str, Option<&str>)]) {
    let p = producer::Producer::new(ProducerConfig::new(&common::bootstrap()))
        .await
        .unwrap();
    for (key, value) in records {
        let mut r = ProducerRecord::new(topic).with_key(key.to_string());
        if let Some(v) = value {
            r = r.with_value(v.to_string());
        }
        p.send(r).await.unwrap();
    }
    p.close().await;
}

async fn committed(c: &Consumer, topic: &str) -> Option<i64> {
    let tp = TopicPartition::new(topic, 0);
    c.consumer()
        .committed(std::slice::from_ref(&tp))
        .await
        .unwrap()[&tp]
}

/// Runs `process` with a handler that collects every message, until the handler has
/// seen `n` messages (then it stops the consumer from inside the batch).
async fn collect<T>(c: &Consumer<T>, n: usize) -> Vec<Message<T>>
where
    T: From<OrderedValue> + Clone + Send + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = c.stop_handle();
    let s = seen.clone();
    let run = c.process(move |batch: Vec<Message<T>>| {
        let mut seen = s.lock().unwrap();
        seen.extend(batch);
        if seen.len() >= n {
            stop.shutdown();
        }
        std::future::ready(Ok::<(), Error>(()))
    });
    tokio::time::timeout(LIMIT, run)
        .await
        .expect("the consumer stops in time")
        .expect("process ends cleanly");
    let seen = seen.lock().unwrap().clone();
    seen
}

#[tokio::test]
async fn produced_messages_come_back_with_their_refs_and_tombstones_are_committed() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "phqc-refs", 1).await;
    let producer = Producer::new("phq-test-svc", &[common::bootstrap()])
        .await
        .unwrap();
    // offsets 0-4: e-0..e-4; 5: tombstone; 6: empty value; 7-11: e-5..e-9; 12: tombstone.
    producer
        .produce_batch(&topic, &messages("e-", 0..5))
        .await
        .unwrap();
    produce_raw(&topic, &[("gone", None), ("empty", Some(""))]).await;
    producer
        .produce_batch(&topic, &messages("e-", 5..10))
        .await
        .unwrap();
    produce_raw(&topic, &[("gone-too", None)]).await;

    let c = consumer(
        &topic,
        &common::unique_topic("g-refs"),
        Duration::from_millis(500),
    )
    .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let run = c.process(move |batch: Vec<Message>| {
        s.lock().unwrap().extend(batch);
        std::future::ready(Ok::<(), Error>(()))
    });
    // The last record is a tombstone: it is committed with its batch. Then a batch of
    // one tombstone alone: the handler is not called, but it is committed too.
    let watch = async {
        let deadline = Instant::now() + LIMIT;
        while committed(&c, &topic).await != Some(13) {
            assert!(Instant::now() < deadline, "offset 13 never committed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let handled = seen.lock().unwrap().len();
        produce_raw(&topic, &[("gone-again", None)]).await;
        while committed(&c, &topic).await != Some(14) {
            assert!(Instant::now() < deadline, "offset 14 never committed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen.lock().unwrap().len(), handled);
        c.stop_handle().shutdown();
    };
    let (done, ()) = tokio::time::timeout(LIMIT, async { tokio::join!(run, watch) })
        .await
        .expect("in time");
    done.unwrap();

    let seen = seen.lock().unwrap().clone();
    let ids: Vec<&str> = seen.iter().map(|m| m.id.as_str()).collect();
    let want: Vec<String> = (0..10).map(|i| format!("e-{i}")).collect();
    assert_eq!(ids, want, "tombstones and empty values skipped");
    for (i, m) in seen.iter().enumerate() {
        let offset = if i < 5 { i } else { i + 2 };
        assert_eq!(m.payload, json!({"n": i, "name": "é"}));
        assert_eq!(m.topic.as_deref(), Some(topic.as_str()));
        assert_eq!(m.refs.len(), 1);
        let r = &m.refs[0];
        // As the Python library builds it: written in its key order (a `Value` holds its
        // keys sorted; the envelope writes a ref's in this order).
        let written = paperboy::envelope::pack("s", "d", &Value::Null, &m.refs).unwrap();
        let written = std::str::from_utf8(&written).unwrap();
        let want = format!(
            r#""refs": [{{"topic": "{topic}", "partition": 0, "offset": {offset}, "key": "{}", "hist": {{"svc": "phq-test-svc", "dt": ""#,
            m.id
        );
        assert!(written.contains(&want), "{written}");
        assert_eq!(r["topic"], topic.as_str());
        assert_eq!(r["partition"], 0);
        assert_eq!(r["offset"], offset);
        assert_eq!(r["key"], m.id.as_str());
        assert_eq!(r["hist"]["svc"], "phq-test-svc");
        assert_eq!(r["hist"]["dt"].as_str().unwrap().len(), 25);
        assert_eq!(r["hist"]["refs"], json!([upstream()]));
    }
    c.close().await;

    // Produced on, a consumed message nests its history: the next consumer sees the
    // first topic's ref inside its own.
    let next = common::new_topic(&client, "phqc-refs-next", 1).await;
    let relay = Producer::new("relay-svc", &[common::bootstrap()])
        .await
        .unwrap();
    relay.produce_batch(&next, &seen[..3]).await.unwrap();
    let d = consumer(
        &next,
        &common::unique_topic("g-next"),
        Duration::from_millis(500),
    )
    .await;
    let relayed = collect(&d, 3).await;
    assert_eq!(relayed.len(), 3);
    for (m, original) in relayed.iter().zip(&seen) {
        assert_eq!(m.id, original.id);
        let hist = &m.refs[0]["hist"];
        assert_eq!(hist["svc"], "relay-svc");
        assert_eq!(hist["refs"], json!(original.refs));
        assert_eq!(hist["refs"][0]["hist"]["refs"], json!([upstream()]));
    }
    d.close().await;
    producer.close().await;
    relay.close().await;
}

#[tokio::test]
async fn a_handler_error_commits_nothing_and_success_commits_the_batch() {
    let client = common::client().await;
    handler_error_then_success(&client, common::unique_topic("g-commit")).await;
}

/// The same on the consumer group protocol (KIP-848): the PHQ Consumer, unchanged.
#[tokio::test]
async fn a_handler_error_commits_nothing_and_success_commits_the_batch_kip848() {
    let client = common::client().await;
    let group = common::kip848_group(&client, "kip848-commit", 10_000).await;
    handler_error_then_success(&client, group).await;
}

async fn handler_error_then_success(client: &paperboy::Client, group: String) {
    let topic = common::new_topic(client, "phqc-commit", 1).await;
    let producer = Producer::new("phq-test-svc", &[common::bootstrap()])
        .await
        .unwrap();
    producer
        .produce_batch(&topic, &messages("m-", 0..5))
        .await
        .unwrap();

    // The handler fails: process returns the error, nothing is committed.
    let a = consumer(&topic, &group, Duration::from_secs(2)).await;
    let failed_batch = Arc::new(Mutex::new(Vec::new()));
    let f = failed_batch.clone();
    let result = tokio::time::timeout(
        LIMIT,
        a.process(move |batch: Vec<Message>| {
            let n = batch.len();
            f.lock().unwrap().extend(batch.into_iter().map(|m| m.id));
            async move { Err::<(), _>(format!("boom on {n}")) }
        }),
    )
    .await
    .expect("in time");
    match result {
        Err(PhqError::Handler { batch, source }) => {
            assert_eq!(batch, format!("{topic}[0=0:5]"));
            assert_eq!(source.to_string(), "boom on 5");
        }
        other => panic!("expected the handler's error, got {other:?}"),
    }
    let failed_batch = failed_batch.lock().unwrap().clone();
    assert_eq!(failed_batch, ["m-0", "m-1", "m-2", "m-3", "m-4"]);
    assert_eq!(committed(&a, &topic).await, None, "nothing committed");
    a.close().await;

    // A new member of the group gets the same batch again; it succeeds and commits.
    let b = consumer(&topic, &group, Duration::from_secs(2)).await;
    let again: Vec<String> = collect(&b, 5).await.into_iter().map(|m| m.id).collect();
    assert_eq!(again, failed_batch);
    assert_eq!(committed(&b, &topic).await, Some(5));
    b.close().await;

    // The next member gets nothing old: only what was written since.
    producer
        .produce_batch(&topic, &messages("m-", 5..7))
        .await
        .unwrap();
    let c = consumer(&topic, &group, Duration::from_millis(500)).await;
    let fresh = collect(&c, 2).await;
    let ids: Vec<&str> = fresh.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m-5", "m-6"]);
    assert_eq!(fresh[0].refs[0]["offset"], 5);
    assert_eq!(committed(&c, &topic).await, Some(7));
    c.close().await;
    producer.close().await;
}

#[tokio::test]
async fn latest_only_keeps_the_last_message_of_each_id() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "phqc-latest", 1).await;
    let producer = Producer::new("phq-test-svc", &[common::bootstrap()])
        .await
        .unwrap();
    let batch: Vec<Message> = ["abc", "def", "xyz", "xyz", "abc"]
        .iter()
        .enumerate()
        .map(|(i, id)| Message::new(*id, json!({"n": i})))
        .collect();
    producer.produce_batch(&topic, &batch).await.unwrap();

    let c = consumer(
        &topic,
        &common::unique_topic("g-latest"),
        Duration::from_secs(2),
    )
    .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let stop = c.stop_handle();
    let run = c.process_latest_only(move |batch: Vec<Message>| {
        s.lock().unwrap().push(batch);
        stop.shutdown();
        std::future::ready(Ok::<(), Error>(()))
    });
    tokio::time::timeout(LIMIT, run)
        .await
        .expect("in time")
        .unwrap();
    let batches = seen.lock().unwrap().clone();
    assert_eq!(batches.len(), 1, "one batch");
    let got: Vec<(&str, &Value, &Value)> = batches[0]
        .iter()
        .map(|m| (m.id.as_str(), &m.payload["n"], &m.refs[0]["offset"]))
        .collect();
    assert_eq!(
        got,
        [
            ("def", &json!(1), &json!(1)),
            ("xyz", &json!(3), &json!(3)),
            ("abc", &json!(4), &json!(4)),
        ]
    );
    // The whole batch is committed, the dropped duplicates too.
    assert_eq!(committed(&c, &topic).await, Some(5));
    c.close().await;
    producer.close().await;
}

#[tokio::test]
async fn stop_finishes_and_commits_the_batch_then_returns() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "phqc-stop", 1).await;
    let producer = Producer::new("phq-test-svc", &[common::bootstrap()])
        .await
        .unwrap();
    producer
        .produce_batch(&topic, &messages("s-", 0..3))
        .await
        .unwrap();
    let group = common::unique_topic("g-stop");

    // Stopped while a batch is handled: the batch finishes, is committed, process ends.
    let c = consumer(&topic, &group, Duration::from_secs(2)).await;
    let stop = c.stop_handle();
    let calls = Arc::new(Mutex::new(0));
    let n = calls.clone();
    let run = c.process(move |batch: Vec<Message>| {
        *n.lock().unwrap() += 1;
        assert_eq!(batch.len(), 3);
        stop.shutdown();
        async {
            // Still working when the stop comes.
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<(), Error>(())
        }
    });
    tokio::time::timeout(LIMIT, run)
        .await
        .expect("in time")
        .unwrap();
    assert_eq!(*calls.lock().unwrap(), 1);
    assert!(c.stop_handle().is_shutdown());
    assert_eq!(committed(&c, &topic).await, Some(3));
    // A stopped consumer stays stopped: process returns at once.
    let t = Instant::now();
    c.process(|_: Vec<Message>| async { Err::<(), _>("never called") })
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    c.close().await;

    // Stopped while waiting for records (a long batch timeout): returns promptly.
    let idle = common::new_topic(&client, "phqc-idle", 1).await;
    let c = consumer(&idle, &group, Duration::from_secs(20)).await;
    let stop = c.stop_handle();
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.shutdown();
        Instant::now()
    };
    let run = c.process(|_: Vec<Message>| async { Err::<(), _>("nothing to handle") });
    let (result, stopped_at) = tokio::time::timeout(LIMIT, async { tokio::join!(run, stopper) })
        .await
        .expect("in time");
    result.unwrap();
    assert!(
        stopped_at.elapsed() < Duration::from_secs(2),
        "process took {:?} to return after the stop",
        stopped_at.elapsed()
    );
    c.close().await;
    producer.close().await;
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_stops_the_consumer() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "phqc-signal", 1).await;
    let c = consumer(
        &topic,
        &common::unique_topic("g-signal"),
        Duration::from_secs(20),
    )
    .await;
    c.shutdown_on_signals().unwrap();
    let kill = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    };
    let run = c.process(|_: Vec<Message>| async { Err::<(), _>("nothing to handle") });
    let (result, ()) = tokio::time::timeout(LIMIT, async { tokio::join!(run, kill) })
        .await
        .expect("in time");
    result.unwrap();
    assert!(c.stop_handle().is_shutdown());
    c.close().await;
}

#[tokio::test]
async fn auto_commit_is_refused() {
    let servers = [common::bootstrap()];
    for on in ["true", "True"] {
        let e = Consumer::with_config(
            &servers,
            &["t"],
            "g",
            10,
            Duration::from_secs(1),
            [("enable.auto.commit", on)],
        )
        .await
        .unwrap_err();
        match &e {
            Error::Config(ConfigError::InvalidValue { key, value, .. }) => {
                assert_eq!(key, "enable.auto.commit");
                assert_eq!(value, on);
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        assert!(e.to_string().contains("enable.auto.commit"), "{e}");
    }
    // Saying false is fine.
    let c = Consumer::with_config(
        &servers,
        &["t"],
        "g",
        10,
        Duration::from_secs(1),
        [("enable.auto.commit", "false")],
    )
    .await
    .unwrap();
    assert!(!c.consumer().config().auto_commit());
    c.close().await;
    // And so are the other arguments checked.
    for (topics, batch, timeout) in [
        (&[][..], 10, Duration::from_secs(1)),
        (&["t"][..], 0, Duration::from_secs(1)),
        (&["t"][..], 10, Duration::ZERO),
    ] {
        let e = Consumer::new(&servers, topics, "g", batch, timeout)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
    }
}

/// Issue 12: a Rust service between Python services changes no number. Envelopes as a
/// Python service writes them (floats in Python's repr, from random bit patterns) are
/// read by the PHQ Consumer with every float's bits, and produced on by the PHQ Producer
/// with the same item bytes.
#[tokio::test]
async fn floats_pass_through_a_service_bit_for_bit() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "phqc-floats", 1).await;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let floats: Vec<f64> = std::iter::from_fn(|| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some(f64::from_bits(x))
    })
    .filter(|v| v.is_finite())
    .take(200)
    .collect();
    let py = paperboy::phq::envelope::python_float;
    let items: Vec<String> = floats
        .iter()
        .map(|v| format!(r#"{{"v": {}, "l": [{}, 0.1]}}"#, py(*v), py(-v / 3.0)))
        .collect();
    let values: Vec<String> = items
        .iter()
        .map(|item| {
            format!(r#"{{"item": {item}, "hist": {{"svc": "py", "dt": "2019-12-23T20:31:43+00:00", "refs": []}}}}"#)
        })
        .collect();
    let keys: Vec<String> = (0..floats.len()).map(|i| format!("f-{i}")).collect();
    let records: Vec<(&str, Option<&str>)> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| (k.as_str(), Some(v.as_str())))
        .collect();
    produce_raw(&topic, &records).await;

    // Payloads that keep their key order, so that they are produced on byte for byte.
    let c = consumer(
        &topic,
        &common::unique_topic("g-floats"),
        Duration::from_millis(500),
    )
    .await
    .with_payload::<OrderedValue>();
    let seen = collect(&c, floats.len()).await;
    c.close().await;
    assert_eq!(seen.len(), floats.len());
    for (m, v) in seen.iter().zip(&floats) {
        assert_eq!(
            m.payload["v"].as_f64().unwrap().to_bits(),
            v.to_bits(),
            "{v:e}"
        );
        let third = m.payload["l"][0].as_f64().unwrap();
        assert_eq!(third.to_bits(), (-v / 3.0).to_bits(), "{v:e}");
    }

    let next = common::new_topic(&client, "phqc-floats-next", 1).await;
    let producer = Producer::new("rust-svc", &[common::bootstrap()])
        .await
        .unwrap();
    producer.produce_batch(&next, &seen).await.unwrap();
    producer.close().await;
    let read = common::read_partition(&client, &next, 0, 0, floats.len()).await;
    for ((_, _, value, _), item) in read.iter().zip(&items) {
        let value = std::str::from_utf8(value.as_ref().unwrap()).unwrap();
        let want = format!(r#"{{"item": {item}, "hist": {{"svc": "rust-svc", "dt": ""#);
        assert!(value.starts_with(&want), "{value}");
    }

    // As `Value`s (the default payload), the same numbers, the keys sorted.
    let as_values: Vec<Message> = seen
        .iter()
        .map(|m| Message {
            payload: m.payload.clone().into_value(),
            id: m.id.clone(),
            refs: m.refs.clone(),
            topic: m.topic.clone(),
        })
        .collect();
    let sorted = common::new_topic(&client, "phqc-floats-sorted", 1).await;
    let producer = Producer::new("rust-svc", &[common::bootstrap()])
        .await
        .unwrap();
    producer.produce_batch(&sorted, &as_values).await.unwrap();
    producer.close().await;
    let read = common::read_partition(&client, &sorted, 0, 0, floats.len()).await;
    assert_eq!(read.len(), floats.len());
    for ((_, _, value, _), v) in read.iter().zip(&floats) {
        let value = std::str::from_utf8(value.as_ref().unwrap()).unwrap();
        let want = format!(
            r#"{{"item": {{"l": [{}, 0.1], "v": {}}}, "hist": {{"svc": "rust-svc", "dt": ""#,
            py(-v / 3.0),
            py(*v)
        );
        assert!(value.starts_with(&want), "{value}");
    }
}

/// A value that is not JSON: by default the batch fails at the same offset on every try
/// (the original's behaviour); with `Undecodable::Skip` or a callback, the records behind
/// it are delivered and the batch is committed past it.
#[tokio::test]
async fn records_that_do_not_decode_fail_skip_or_go_to_a_callback() {
    use paperboy::phq::Undecodable;

    let client = common::client().await;
    let topic = common::new_topic(&client, "phqc-poison", 1).await;
    let good = |i: usize| format!(r#"{{"item": {{"n": {i}}}, "hist": null}}"#);
    let (g0, g1, g2) = (good(0), good(1), good(2));
    produce_raw(
        &topic,
        &[
            ("a", Some(g0.as_str())),
            ("poison", Some("{not json")),
            ("b", Some(g1.as_str())),
            ("c", Some(g2.as_str())),
        ],
    )
    .await;

    // Default: the batch fails, naming the record; nothing is committed.
    let group = common::unique_topic("g-poison");
    let c = consumer(&topic, &group, Duration::from_millis(500)).await;
    let e = tokio::time::timeout(
        LIMIT,
        c.process(|_: Vec<Message>| async { Ok::<(), Error>(()) }),
    )
    .await
    .expect("in time")
    .unwrap_err();
    assert!(e.to_string().contains("at offset 1"), "{e}");
    assert_eq!(committed(&c, &topic).await, None);
    c.close().await;

    // Skip: the three good records are handled, the batch committed past the poison.
    let c = consumer(&topic, &group, Duration::from_millis(500))
        .await
        .on_undecodable(Undecodable::Skip);
    let seen = collect(&c, 3).await;
    assert_eq!(seen.len(), 3);
    assert_eq!(committed(&c, &topic).await, Some(4));
    c.close().await;

    // A callback sees the record and the error.
    let poisoned = Arc::new(Mutex::new(Vec::new()));
    let p = poisoned.clone();
    let c = consumer(
        &topic,
        &common::unique_topic("g-poison-cb"),
        Duration::from_millis(500),
    )
    .await
    .on_undecodable(Undecodable::Handle(Arc::new(move |r, e| {
        p.lock().unwrap().push((r.offset, e.to_string()));
    })));
    let seen = collect(&c, 3).await;
    assert_eq!(seen.len(), 3);
    let poisoned = poisoned.lock().unwrap().clone();
    assert_eq!(poisoned.len(), 1);
    assert_eq!(poisoned[0].0, 1);
    assert!(poisoned[0].1.contains("offset 1"), "{poisoned:?}");
    assert_eq!(committed(&c, &topic).await, Some(4));
    c.close().await;
}

#[tokio::test]
async fn exactly_once_batches_abort_a_failed_handlers_output_and_commit_each_output_once() {
    let client = common::client().await;
    let input = common::new_topic(&client, "phqc-eos-in", 1).await;
    let output = common::new_topic(&client, "phqc-eos-out", 1).await;
    let group = common::unique_topic("g-eos");
    let upstream = Producer::new("phq-test-svc", &[common::bootstrap()])
        .await
        .unwrap();
    upstream
        .produce_batch(&input, &messages("m-", 0..6))
        .await
        .unwrap();
    let txn_id = common::unique_topic("phq-eos");
    let producer = Producer::with_config(
        "phq-eos-svc",
        &[common::bootstrap()],
        [("transactional.id", txn_id.as_str())],
    )
    .await
    .unwrap();
    let eos_consumer = || async {
        let mut overrides = OVERRIDES.to_vec();
        overrides.push(("isolation.level", "read_committed"));
        Consumer::with_config(
            &[common::bootstrap()],
            &[&input],
            &group,
            100,
            Duration::from_secs(2),
            overrides,
        )
        .await
        .unwrap()
        .exactly_once(&producer)
        .unwrap()
    };

    // The handler writes its output (acknowledged), then fails: aborted, nothing committed.
    let a = eos_consumer().await;
    let p = producer.clone();
    let out = output.clone();
    let result = tokio::time::timeout(
        LIMIT,
        a.process(move |batch: Vec<Message>| {
            let (p, out) = (p.clone(), out.clone());
            async move {
                p.produce_batch(&out, &batch).await?;
                Err::<(), PhqError>(Error::Json("fails after producing".into()).into())
            }
        }),
    )
    .await
    .expect("in time");
    assert!(
        matches!(result, Err(PhqError::Handler { .. })),
        "{result:?}"
    );
    assert_eq!(committed(&a, &input).await, None);
    a.close().await;

    // Handled again, successfully: the output and the offsets commit together.
    let b = eos_consumer().await;
    let stop = b.stop_handle();
    let p = producer.clone();
    let out = output.clone();
    tokio::time::timeout(
        LIMIT,
        b.process(move |batch: Vec<Message>| {
            let (p, out, stop) = (p.clone(), out.clone(), stop.clone());
            async move {
                p.produce_batch(&out, &batch).await?;
                stop.shutdown();
                Ok::<(), PhqError>(())
            }
        }),
    )
    .await
    .expect("in time")
    .expect("process ends cleanly");
    assert_eq!(committed(&b, &input).await, Some(6));
    b.close().await;

    let committed_output = common::read_all(&output, 1, "read_committed").await;
    assert_eq!(
        committed_output.len(),
        6,
        "each output once: {committed_output:?}"
    );
    let all = common::read_all(&output, 1, "read_uncommitted").await;
    assert_eq!(
        all.len(),
        12,
        "the failed batch's output was written, then aborted"
    );

    // Without read_committed, or without a transactional producer, it is refused.
    let plain = consumer(&input, &group, Duration::from_secs(1)).await;
    let err = plain.exactly_once(&producer).unwrap_err();
    assert!(err.to_string().contains("isolation.level"), "{err}");
    let err = eos_consumer().await.exactly_once(&upstream).unwrap_err();
    assert!(err.to_string().contains("transactional.id"), "{err}");
    producer.close().await;
    upstream.close().await;
}
