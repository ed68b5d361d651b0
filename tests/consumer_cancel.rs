//! `recv` and `recv_batch` are cancel-safe: futures dropped at random points (a `select!`
//! branch that loses to a timer, a `timeout`) hand out nothing and lose nothing, with
//! auto-commit on, while records trickle in. Every record is handed out exactly once, and
//! no commit ever passes a record that was not handed out.

mod common;

use common::Rng;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use paperboy::consumer::{Consumer, ConsumerConfig};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::TopicPartition;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_receive_futures_lose_nothing_with_auto_commit_on() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cancel-safe", 3).await;
    let total = 30_000usize;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);

    // Records trickle in while the consumer runs: 1 500 batches of 20, 2 ms apart.
    let producer = Producer::new(ProducerConfig::new(&common::bootstrap()))
        .await
        .unwrap();
    let t = topic.clone();
    let writer = tokio::spawn(async move {
        for round in 0..total / 20 {
            let mut pending = Vec::new();
            for i in 0..20 {
                let n = round * 20 + i;
                let r = ProducerRecord::new(&t)
                    .with_key(format!("k{n}"))
                    .with_value(format!("{n}"));
                pending.push(producer.enqueue(r).await.unwrap());
            }
            for d in pending {
                d.await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        producer.close().await;
    });

    let group = common::unique_topic("cancel-safe-group");
    let consumer = Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", common::bootstrap()),
            ("group.id", group.clone()),
            ("auto.offset.reset", "earliest".into()),
            ("enable.auto.commit", "true".into()),
            ("auto.commit.interval.ms", "20".into()),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    consumer.subscribe(&[&topic]).unwrap();

    let mut seen: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let mut dropped = 0u32;
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < total {
        if Instant::now() >= deadline {
            let per: Vec<usize> = (0..3)
                .map(|p| seen.range((p, 0)..(p, i64::MAX)).count())
                .collect();
            let pos: Vec<_> = (0..3)
                .map(|p| consumer.position(&TopicPartition::new(&topic, p)))
                .collect();
            panic!(
                "handed out {} of {total}: per partition {per:?}, positions {pos:?}, lag {:?}, buffered {} B, writer done {}",
                seen.len(),
                consumer.lag(),
                consumer.buffered_bytes(),
                writer.is_finished()
            );
        }
        let records = match rng.below(3) {
            // A batch call racing a timer, as a loop with a tick or shutdown branch (the
            // issue's case: a 1 s batch against a 1-300 ms timer).
            0 => {
                let timer = Duration::from_millis(1 + rng.below(300));
                tokio::select! {
                    b = consumer.recv_batch(1000, Duration::from_secs(1)) => b.unwrap(),
                    _ = tokio::time::sleep(timer) => { dropped += 1; Vec::new() }
                }
            }
            // A short batch call against a timer of the same order (either may win).
            1 => {
                let max = 1 + rng.below(500) as usize;
                let wait = Duration::from_micros(rng.below(20_000));
                let timer = Duration::from_micros(rng.below(20_000));
                tokio::select! {
                    b = consumer.recv_batch(max, wait) => b.unwrap(),
                    _ = tokio::time::sleep(timer) => { dropped += 1; Vec::new() }
                }
            }
            // One record under a timeout.
            _ => {
                match tokio::time::timeout(Duration::from_micros(rng.below(5_000)), consumer.recv())
                    .await
                {
                    Ok(r) => vec![r.unwrap()],
                    Err(_) => {
                        dropped += 1;
                        Vec::new()
                    }
                }
            }
        };
        for r in records {
            let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            let prev = seen.insert((r.partition, r.offset), v);
            assert!(
                prev.is_none(),
                "{}[{}]@{} handed out twice",
                topic,
                r.partition,
                r.offset
            );
        }
        // No commit passes a record not yet handed out.
        for p in 0..3 {
            let tp = TopicPartition::new(&topic, p);
            if let Some(pos) = consumer.position(&tp) {
                let handed = seen.range((p, 0)..(p, i64::MAX)).count() as i64;
                assert_eq!(pos, handed, "position of {tp} vs records handed out");
            }
        }
    }
    writer.await.unwrap();
    // Every record exactly once, in order per partition, nothing missing.
    let mut values: Vec<usize> = seen.values().map(|v| v.parse().unwrap()).collect();
    values.sort_unstable();
    assert_eq!(values, (0..total).collect::<Vec<_>>());
    for p in 0..3 {
        let offsets: Vec<i64> = seen
            .range((p, 0)..(p, i64::MAX))
            .map(|(k, _)| k.1)
            .collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "partition {p}"
        );
    }
    // What the group committed never passed what was handed out; on close, all of it.
    consumer.close().await;
    let check = Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", common::bootstrap()),
            ("group.id", group),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new(&topic, p)).collect();
    let committed = check.committed(&tps).await.unwrap();
    let sum: i64 = committed.values().map(|o| o.unwrap_or(0)).sum();
    assert_eq!(sum, total as i64, "{committed:?}");
    eprintln!("{dropped} receive futures dropped; {total} records handed out exactly once");
    assert!(dropped >= 20, "the test dropped only {dropped} futures");
}

#[tokio::test]
async fn the_record_and_batch_streams_hand_out_every_record_once_across_drops() {
    use paperboy::consumer::Stream;
    use std::pin::Pin;

    let client = common::client().await;
    let topic = common::new_topic(&client, "stream", 2).await;
    let producer = Producer::new(ProducerConfig::new(&common::bootstrap()))
        .await
        .unwrap();
    for i in 0..2_000 {
        // Fire and forget; `close` delivers them all.
        drop(
            producer
                .enqueue(ProducerRecord::new(&topic).with_value(format!("{i}")))
                .await
                .unwrap(),
        );
    }
    producer.close().await;
    let consumer = Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", common::bootstrap()),
            ("group.id", common::unique_topic("stream-group")),
            ("auto.offset.reset", "earliest".into()),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    // The group join first, undisturbed (a call dropped mid-rebalance leaves the
    // rebalance to the next call, which starts it again).
    let first = consumer.recv().await.unwrap();
    seen.insert((first.partition, first.offset));
    let mut rng = Rng(7);
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 2_000 {
        assert!(Instant::now() < deadline, "{} of 2000", seen.len());
        // A new stream each round, dropped with a `next()` pending about half the time.
        let wait = Duration::from_micros(rng.below(3_000));
        if rng.below(2) == 0 {
            let mut s = consumer.stream();
            let next = std::future::poll_fn(|cx| Pin::new(&mut s).poll_next(cx));
            if let Ok(Some(r)) = tokio::time::timeout(wait, next).await {
                let r = r.unwrap();
                assert!(seen.insert((r.partition, r.offset)), "twice: {r:?}");
            }
        } else {
            let mut s = consumer.batches(1 + rng.below(300) as usize, Duration::from_millis(5));
            let next = std::future::poll_fn(|cx| Pin::new(&mut s).poll_next(cx));
            if let Ok(Some(b)) = tokio::time::timeout(wait, next).await {
                for r in b.unwrap() {
                    assert!(seen.insert((r.partition, r.offset)), "twice: {r:?}");
                }
            }
        }
    }
    consumer.close().await;
    // Closed: the stream ends.
    let mut s = consumer.stream();
    let end = std::future::poll_fn(|cx| Pin::new(&mut s).poll_next(cx)).await;
    assert!(end.is_none());
}

/// A `recv` dropped while the group is joining does not cancel the join: callers that
/// poll with a timeout shorter than a JoinGroup round trip still get their partitions.
/// (Cancelled joins used to leave members behind that the group waited for until the
/// rebalance timeout.)
#[tokio::test]
async fn receive_timeouts_shorter_than_a_join_still_join_the_group() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cancel-join", 2).await;
    let producer = Producer::new(ProducerConfig::new(&common::bootstrap()))
        .await
        .unwrap();
    for i in 0..10 {
        producer
            .send(ProducerRecord::new(&topic).with_value(format!("{i}")))
            .await
            .unwrap();
    }
    producer.close().await;
    let consumer = Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", common::bootstrap()),
            ("group.id", common::unique_topic("cancel-join-group")),
            ("auto.offset.reset", "earliest".into()),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    let mut cancelled = 0u32;
    while got.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "{} of 10 records after {cancelled} cancelled receives; assignment {:?}",
            got.len(),
            consumer.assignment()
        );
        match tokio::time::timeout(Duration::from_millis(1), consumer.recv()).await {
            Ok(r) => got.push(r.unwrap().offset),
            Err(_) => cancelled += 1,
        }
    }
    assert_eq!(consumer.assignment().len(), 2);
    assert!(cancelled > 0, "no receive was cancelled");
    consumer.close().await;
}
