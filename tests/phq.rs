//! The PHQ Producer against a real broker: the envelope on the wire, keys, errors.

mod common;

use paperboy::phq::{Message, PhqError, Producer};
use paperboy::{Error, NewTopic};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Serialize)]
struct Event {
    name: String,
    rank: f64,
    tags: Vec<&'static str>,
}

#[tokio::test]
async fn produce_batch_writes_the_envelope_keyed_by_id() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "phq", 3).await;
    let producer = Producer::new("event-svc", &[common::bootstrap()])
        .await
        .unwrap();
    let upstream =
        json!({"topic": "raw", "partition": 2, "offset": 41, "key": "e-0", "hist": null});
    let messages: Vec<Message<Event>> = (0..30)
        .map(|i| {
            Message::new(
                format!("e-{i}"),
                Event {
                    name: format!("Événement {i}"),
                    rank: f64::from(i) / 4.0,
                    tags: vec!["a", "b"],
                },
            )
            .with_refs(upstream.clone())
        })
        .collect();
    producer.produce_batch(&topic, &messages).await.unwrap();

    let mut read = Vec::new();
    for p in 0..3 {
        let n = client
            .list_offset(&topic, p, paperboy::OffsetSpec::Latest)
            .await
            .unwrap() as usize;
        read.extend(common::read_partition(&client, &topic, p, 0, n).await);
    }
    assert_eq!(read.len(), 30);
    for (_, key, value, _) in read {
        let id = String::from_utf8(key.unwrap().to_vec()).unwrap();
        let i: u32 = id.strip_prefix("e-").unwrap().parse().unwrap();
        let text = std::str::from_utf8(value.as_ref().unwrap()).unwrap();
        // The exact bytes the Python library writes: ", " and ": " separators, ASCII
        // escapes, Python float repr, item before hist.
        let rank = paperboy::phq::envelope::python_float(f64::from(i) / 4.0);
        let prefix = format!(
            r#"{{"item": {{"name": "\u00c9v\u00e9nement {i}", "rank": {rank}, "tags": ["a", "b"]}}, "hist": {{"svc": "event-svc", "dt": ""#
        );
        assert!(text.starts_with(&prefix), "{text}");
        assert!(
            text.ends_with(
                r#"+00:00", "refs": [{"topic": "raw", "partition": 2, "offset": 41, "key": "e-0", "hist": null}]}}"#
            ),
            "{text}"
        );
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["hist"]["dt"].as_str().unwrap().len(), 25);
    }
    producer.close().await;
}

/// Text that snappy cannot shrink much (the producer compresses by default).
fn incompressible(n: usize) -> String {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect()
}

#[tokio::test]
async fn empty_topic_and_too_large_messages() {
    let client = common::client().await;
    let producer = Producer::with_config("svc", &[common::bootstrap()], [("linger.ms", "50")])
        .await
        .unwrap();
    let err = producer
        .produce_batch("", &[Message::new("a", json!({}))])
        .await
        .unwrap_err();
    assert!(matches!(err, PhqError::Client(Error::Config(_))), "{err}");

    let topic = common::unique_topic("phq-large");
    client
        .create_topics(&[NewTopic::new(&topic, 1, 1).with_config("max.message.bytes", "2000")])
        .await
        .unwrap();
    let batch = vec![
        Message::new("small-1", json!({"v": 1})),
        Message::new("big", json!({"v": incompressible(5000)})),
        Message::new("small-2", json!({"v": 2})),
    ];
    match producer.produce_batch(&topic, &batch).await.unwrap_err() {
        PhqError::Undelivered { failed, total } => {
            assert_eq!(total, 3);
            assert_eq!(failed.len(), 1);
            assert_eq!(failed[0].0, "big");
        }
        other => panic!("expected Undelivered, got {other}"),
    }
    let lenient = producer.clone().ignore_large_message_errors(true);
    lenient.produce_batch(&topic, &batch).await.unwrap();
    let read = common::read_partition(&client, &topic, 0, 0, 4).await;
    let keys: Vec<_> = read.iter().map(|r| r.1.clone().unwrap()).collect();
    assert_eq!(keys, ["small-1", "small-2", "small-1", "small-2"]);

    let err = Producer::with_config("svc", &[common::bootstrap()], [("no.such.key", "1")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no.such.key"), "{err}");
}
