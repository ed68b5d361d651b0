//! The producer against a real broker: deliveries, partitioning, codecs, bounds.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use paperboy::producer::{murmur2_partition, Producer, ProducerConfig, ProducerRecord};
use paperboy::{Acks, Compression, Error, KafkaCode, NewTopic};

fn config() -> ProducerConfig {
    common::init_tracing();
    ProducerConfig::new(&common::bootstrap()).with_linger(Duration::from_millis(5))
}

#[tokio::test]
async fn deliveries_report_offsets_and_records_read_back_in_every_codec() {
    let client = common::client().await;
    for codec in Compression::ALL {
        let topic = common::new_topic(&client, &format!("produce-{codec}"), 1).await;
        let producer = Producer::new(config().with_compression(codec))
            .await
            .unwrap();
        let mut pending = Vec::new();
        for i in 0..500u32 {
            let mut r = ProducerRecord::new(&topic)
                .with_key(format!("key-{i}"))
                .with_value(format!("value {i} {}", "x".repeat((i % 50) as usize)))
                .with_timestamp(1_700_000_000_000 + i64::from(i));
            if i % 7 == 0 {
                r = r.with_header("trace", Some(Bytes::from(format!("t{i}"))));
            }
            if i % 11 == 0 {
                r.value = None;
            }
            pending.push(producer.enqueue(r).await.unwrap());
        }
        let mut offsets = Vec::new();
        for d in pending {
            let d = d.await.unwrap();
            assert_eq!(d.partition, 0);
            offsets.push(d.offset);
        }
        assert_eq!(
            offsets,
            (0..500).collect::<Vec<i64>>(),
            "{codec}: offsets in send order"
        );
        producer.close().await;

        let read = common::read_partition(&client, &topic, 0, 0, 500).await;
        for (i, (offset, key, value, headers)) in read.into_iter().enumerate() {
            assert_eq!(offset, i as i64);
            assert_eq!(key.unwrap(), format!("key-{i}"));
            if i % 11 == 0 {
                assert_eq!(value, None, "{codec}: tombstone {i}");
            } else {
                let want = format!("value {i} {}", "x".repeat(i % 50));
                assert_eq!(value.unwrap(), want.as_bytes(), "{codec}: value {i}");
            }
            if i % 7 == 0 {
                assert_eq!(
                    headers,
                    vec![(Bytes::from("trace"), Some(Bytes::from(format!("t{i}"))))]
                );
            } else {
                assert!(headers.is_empty());
            }
        }
    }
}

#[tokio::test]
async fn keyed_records_land_on_the_java_partition_and_unkeyed_ones_stick() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "partitioning", 6).await;
    let producer = Producer::new(config()).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..300 {
        let key = format!("customer-{i}");
        pending.push((
            key.clone(),
            producer
                .enqueue(ProducerRecord::new(&topic).with_key(key).with_value("v"))
                .await
                .unwrap(),
        ));
    }
    for (key, d) in pending {
        let d = d.await.unwrap();
        assert_eq!(d.partition, murmur2_partition(key.as_bytes(), 6), "{key}");
    }
    // Every partition got some keys, and the broker agrees on the count per partition.
    let mut per_partition: HashMap<i32, i64> = HashMap::new();
    for i in 0..300 {
        *per_partition
            .entry(murmur2_partition(format!("customer-{i}").as_bytes(), 6))
            .or_default() += 1;
    }
    assert_eq!(per_partition.len(), 6);
    for (p, n) in &per_partition {
        let hw = client
            .list_offset(&topic, *p, paperboy::OffsetSpec::Latest)
            .await
            .unwrap();
        assert_eq!(hw, *n, "partition {p}");
    }

    // Unkeyed records sent together stay together (one batch, one partition).
    let mut pending = Vec::new();
    for _ in 0..50 {
        pending.push(
            producer
                .enqueue(ProducerRecord::new(&topic).with_value("unkeyed"))
                .await
                .unwrap(),
        );
    }
    let mut parts = std::collections::HashSet::new();
    for d in pending {
        parts.insert(d.await.unwrap().partition);
    }
    assert_eq!(parts.len(), 1, "sticky: {parts:?}");

    // An explicit partition wins; an invalid one is refused before buffering.
    let d = producer
        .send(
            ProducerRecord::new(&topic)
                .with_key("customer-1")
                .with_partition(5),
        )
        .await
        .unwrap();
    assert_eq!(d.partition, 5);
    let err = producer
        .send(ProducerRecord::new(&topic).with_partition(6))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnknownTopicOrPartition {
                partition: Some(6),
                ..
            }
        ),
        "{err}"
    );
    producer.close().await;
}

#[tokio::test]
async fn a_full_buffer_applies_back_pressure_and_then_fails_in_time() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "backpressure", 1).await;
    // A long linger keeps records buffered; the buffer holds about ten 1 KB records.
    let cfg = config().with_linger(Duration::from_secs(30)).with_buffer(
        10 * 1100,
        1000,
        Duration::from_millis(300),
    );
    let producer = Producer::new(cfg).await.unwrap();
    let value = Bytes::from(vec![b'v'; 1000]);
    let mut pending = Vec::new();
    let err = loop {
        match producer
            .enqueue(ProducerRecord::new(&topic).with_value(value.clone()))
            .await
        {
            Ok(d) => pending.push(d),
            Err(e) => break e,
        }
        assert!(pending.len() <= 10, "the buffer grew past its bound");
        assert!(producer.buffered_bytes() <= 10 * 1100);
    };
    assert!(matches!(err, Error::BufferFull { .. }), "{err}");
    assert_eq!(pending.len(), 10);

    // A waiting send goes through once room is made.
    let p2 = producer.clone();
    let t2 = topic.clone();
    let v2 = value.clone();
    let waiting = tokio::spawn(async move {
        let cfg_wait = p2.enqueue(ProducerRecord::new(&t2).with_value(v2)).await;
        cfg_wait.map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    producer.flush().await;
    for d in pending {
        d.await.unwrap();
    }
    // The waiter had 300 ms; the flush made room well within it (or it fails clearly).
    match waiting.await.unwrap() {
        Ok(()) => {}
        Err(e) => assert!(matches!(e, Error::BufferFull { .. }), "{e}"),
    }
    producer.close().await;
}

#[tokio::test]
async fn a_record_too_large_for_the_broker_fails_alone() {
    let client = common::client().await;
    let topic = common::unique_topic("toolarge-record");
    client
        .create_topics(&[NewTopic::new(&topic, 1, 1).with_config("max.message.bytes", "3000")])
        .await
        .unwrap();
    let producer = Producer::new(
        config()
            .with_compression(Compression::None)
            .with_linger(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    for i in 0..9 {
        let size = if i == 4 { 5000 } else { 100 };
        let r = ProducerRecord::new(&topic).with_value(vec![b'0' + i as u8; size]);
        pending.push(producer.enqueue(r).await.unwrap());
    }
    let mut delivered = Vec::new();
    for (i, d) in pending.into_iter().enumerate() {
        match d.await {
            Ok(d) => delivered.push((i, d.offset)),
            Err(e) => {
                assert_eq!(i, 4, "only the big record fails: {e}");
                assert!(
                    matches!(
                        e.kafka_code(),
                        Some(KafkaCode::MessageTooLarge | KafkaCode::RecordListTooLarge)
                    ),
                    "{e}"
                );
            }
        }
    }
    assert_eq!(delivered.len(), 8);
    let read = common::read_partition(&client, &topic, 0, 0, 8).await;
    let firsts: Vec<u8> = read.iter().map(|r| r.2.as_ref().unwrap()[0]).collect();
    assert_eq!(firsts, b"01235678", "the rest arrive, in order");

    // Larger than message.max.bytes: refused before buffering.
    let small = Producer::new(config().with_max_record_bytes(1000))
        .await
        .unwrap();
    let err = small
        .send(ProducerRecord::new(&topic).with_value(vec![0u8; 2000]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RecordTooLarge { limit: 1000, .. }),
        "{err}"
    );
    producer.close().await;
    small.close().await;
}

#[tokio::test]
async fn acks_zero_and_one_deliver_without_idempotence() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "acks", 1).await;
    for acks in [Acks::None, Acks::Leader] {
        let producer = Producer::new(config().with_acks(acks)).await.unwrap();
        let d = producer
            .send(ProducerRecord::new(&topic).with_value("a"))
            .await
            .unwrap();
        if acks == Acks::None {
            assert_eq!(d.offset, -1);
        } else {
            assert!(d.offset >= 0);
        }
        producer.close().await;
    }
    let read = common::read_partition(&client, &topic, 0, 0, 2).await;
    assert_eq!(read.len(), 2);
    // Explicit idempotence with acks=1 is a configuration error.
    let err = Producer::new(config().with_acks(Acks::Leader).with_idempotence(true))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[tokio::test]
async fn an_unknown_topic_is_a_typed_error() {
    // (With allow.auto.create.topics on, the default, the broker would create it.)
    let mut cfg = config();
    cfg.set("allow.auto.create.topics", "false").unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let err = producer
        .send(ProducerRecord::new(common::unique_topic("nope")).with_value("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownTopicOrPartition { .. })
            || err.kafka_code() == Some(KafkaCode::UnknownTopicOrPartition),
        "{err}"
    );
}

/// Batches of one partition must reach the broker in sequence order even when a small
/// batch finishes compressing before a big one planned ahead of it (a multi-threaded
/// runtime encodes them in parallel). Before the write turns in the sender, the broker
/// could reject the overtaken batch with OUT_OF_ORDER_SEQUENCE_NUMBER until the delivery
/// timeout: a batch of 900 records closes at `batch.num.messages`, and the last 100
/// follow a millisecond later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_one_partition_are_written_in_sequence_order() {
    let client = common::client().await;
    for run in 0..20 {
        let topic = common::new_topic(&client, "in-order", 1).await;
        let producer = Producer::new(
            ProducerConfig::new(&common::bootstrap())
                .with_linger(Duration::from_millis(1))
                .with_batch_limits(1_000_000, 900)
                .with_compression(Compression::Gzip),
        )
        .await
        .unwrap();
        let mut pending = Vec::new();
        for i in 0..1000 {
            let r = ProducerRecord::new(&topic).with_value(format!("{i:01000}"));
            pending.push(producer.enqueue(r).await.unwrap());
        }
        let mut offsets = Vec::new();
        for d in pending {
            let d = tokio::time::timeout(Duration::from_secs(20), d)
                .await
                .unwrap_or_else(|_| panic!("run {run}: a delivery hung"))
                .unwrap_or_else(|e| panic!("run {run}: {e}"));
            offsets.push(d.offset);
        }
        assert_eq!(offsets, (0..1000).collect::<Vec<i64>>(), "run {run}");
        producer.close().await;
    }
}

/// Regression: on a topic just created, the first batch of a partition can be refused
/// with NOT_LEADER_OR_FOLLOWER while a second batch, sent right behind it, reaches the
/// broker once it leads. A broker with no state for the producer accepts any first
/// sequence, so the second batch was written first (at offset 0) and the first was then
/// refused as OUT_OF_ORDER_SEQUENCE_NUMBER until it expired (3 of 5 runs of
/// `examples/engine_throughput` hung). Until a partition has an acknowledged batch, only
/// one of its batches is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_batches_on_a_new_topic_are_written_in_order() {
    let client = common::client().await;
    for round in 0..4 {
        // Created and written at once, so that the first batches meet a partition whose
        // leader is not ready yet.
        let topic = common::unique_topic("produce-new-topic");
        client
            .create_topics(&[NewTopic::new(&topic, 6, 1)])
            .await
            .unwrap();
        let producer = Producer::new(
            config()
                .with_delivery_timeout(Duration::from_secs(20))
                .with_batch_limits(16 * 1024, 10_000),
        )
        .await
        .unwrap();
        let n = 12_000u32;
        let mut pending = Vec::new();
        for i in 0..n {
            let r = ProducerRecord::new(&topic)
                .with_key(format!("k{}", i % 600))
                .with_value(format!("{i}"));
            pending.push(producer.enqueue(r).await.unwrap());
        }
        let mut per_part: HashMap<i32, Vec<(i64, u32)>> = HashMap::new();
        for (i, d) in pending.into_iter().enumerate() {
            let d = d
                .await
                .unwrap_or_else(|e| panic!("round {round}: record {i} not delivered: {e}"));
            per_part
                .entry(d.partition)
                .or_default()
                .push((d.offset, i as u32));
        }
        producer.close().await;
        // Per partition, records sent in order were written in order, from offset 0.
        for (p, written) in per_part {
            let offsets: Vec<i64> = written.iter().map(|w| w.0).collect();
            let expected: Vec<i64> = (0..written.len() as i64).collect();
            assert_eq!(
                offsets, expected,
                "round {round}, partition {p}: offsets in send order"
            );
            let back = common::read_partition(&client, &topic, p, 0, written.len()).await;
            let values: Vec<u32> = back
                .iter()
                .map(|r| {
                    std::str::from_utf8(r.2.as_ref().unwrap())
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect();
            let sent: Vec<u32> = written.iter().map(|w| w.1).collect();
            assert_eq!(
                values, sent,
                "round {round}, partition {p}: read back in send order"
            );
        }
    }
}

/// On a real broker: records to a topic deleted under the producer are refused
/// (UNKNOWN_TOPIC_OR_PARTITION, retriable) and then have no leader; they are retried
/// until their delivery timeout and fail then, naming it and the last error, the first
/// sent and the one buffered behind it alike. The first batch's sequence numbers are in
/// doubt, so the producer bumps its epoch; records to a partition it had written before
/// are still delivered after that (from sequence 0 of the new epoch, which the broker
/// accepts), once each.
#[tokio::test]
async fn records_refused_until_their_delivery_timeout_fail_then_and_later_records_are_delivered() {
    let client = common::client().await;
    let good = common::new_topic(&client, "deadline-good", 1).await;
    let doomed = common::new_topic(&client, "deadline-deleted", 1).await;
    let delivery = Duration::from_millis(1500);
    let mut cfg = config()
        .with_delivery_timeout(delivery)
        .with("request.timeout.ms", "1000")
        .unwrap()
        .with("max.in.flight.requests.per.connection", "1")
        .unwrap()
        .with_batch_limits(1_000_000, 1);
    // The deleted topic must stay deleted: where the producer's metadata requests may ask
    // the broker to create a missing topic, they must not here (a client without the
    // setting never asks).
    let _ = cfg.set("allow.auto.create.topics", "false");
    let producer = Producer::new(cfg).await.unwrap();
    let d0 = producer
        .send(ProducerRecord::new(&good).with_value("before"))
        .await
        .unwrap();
    assert_eq!(d0.offset, 0);
    producer
        .send(ProducerRecord::new(&doomed).with_value("delivered"))
        .await
        .unwrap();
    // Returns once the broker's metadata no longer has the topic (before that, a produce
    // to it could still be written).
    client.delete_topics(&[&doomed]).await.unwrap();

    let start = std::time::Instant::now();
    let first = producer
        .enqueue(ProducerRecord::new(&doomed).with_value("refused 1"))
        .await
        .unwrap();
    // Right behind (once the first is refused, the topic is gone from the metadata and
    // enqueue refuses it), in a batch of its own.
    let behind_start = std::time::Instant::now();
    let behind = producer
        .enqueue(ProducerRecord::new(&doomed).with_value("refused 2"))
        .await
        .unwrap();
    // Each timed when it resolves, in a task of its own.
    let timed = |d: paperboy::producer::DeliveryFuture| {
        tokio::spawn(async move {
            let r = d.await;
            (r, std::time::Instant::now())
        })
    };
    let (first, behind) = (timed(first), timed(behind));
    for (d, since, what) in [
        (first, start, "the refused record"),
        (behind, behind_start, "the record behind it"),
    ] {
        let (result, at) = d.await.unwrap();
        let err = result.unwrap_err();
        let took = at - since;
        eprintln!("{what} failed after {took:?}: {err}");
        match &err {
            Error::Timeout { what: w, after } => {
                assert_eq!(*after, delivery, "{err}");
                assert!(w.starts_with("delivery to "), "{err}");
            }
            other => panic!("{what}: expected the delivery timeout, got {other}"),
        }
        assert!(
            took >= delivery - Duration::from_millis(50)
                && took <= delivery + Duration::from_millis(400),
            "{what} failed after {took:?}"
        );
    }

    let d1 = producer
        .send(ProducerRecord::new(&good).with_value("after"))
        .await
        .unwrap();
    assert_eq!(d1.offset, 1, "written once, right after the first");
    producer.close().await;
    let back = common::read_partition(&client, &good, 0, 0, 2).await;
    let values: Vec<&[u8]> = back.iter().map(|r| r.2.as_deref().unwrap()).collect();
    assert_eq!(values, [&b"before"[..], &b"after"[..]]);
    assert_eq!(common::total_records(&client, &good, 1).await, 2);
}
