//! The producer against faults on the in-process cluster (paperboy-mock): each retriable
//! Produce error code, injected N times, is retried and every record is delivered exactly
//! once at contiguous offsets; a non-retriable one fails its batch with the typed error
//! and the producer goes on; a leader that moves mid-stream is followed without loss,
//! duplicates or reordering. No broker needed; every wait is bounded.

use std::collections::BTreeMap;
use std::time::Duration;

use paperboy::consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::{Error, KafkaCode};
use paperboy_mock::{ApiKey, Cluster, Fault, ResponseError};

const DEADLINE: Duration = Duration::from_secs(30);

async fn producer(cluster: &Cluster) -> Producer {
    // Idempotent and acks=all by default.
    let mut cfg = ProducerConfig::new(&cluster.bootstrap()).with_linger(Duration::from_millis(2));
    cfg.set("retry.backoff.ms", "5").unwrap();
    Producer::new(cfg).await.unwrap()
}

/// Enqueues `k{i}` -> `v{i}` for `keys` (on `partition` if given) and returns where each
/// landed: `i -> (partition, offset)`.
async fn produce(
    p: &Producer,
    topic: &str,
    partition: Option<i32>,
    keys: std::ops::Range<usize>,
) -> BTreeMap<usize, (i32, i64)> {
    let mut pending = Vec::new();
    for i in keys {
        let mut r = ProducerRecord::new(topic)
            .with_key(format!("k{i}"))
            .with_value(format!("v{i}"));
        if let Some(p) = partition {
            r = r.with_partition(p);
        }
        pending.push((i, p.enqueue(r).await.unwrap()));
    }
    let mut out = BTreeMap::new();
    for (i, d) in pending {
        let d = tokio::time::timeout(DEADLINE, d)
            .await
            .expect("delivered in time")
            .unwrap_or_else(|e| panic!("record {i} failed: {e}"));
        out.insert(i, (d.partition, d.offset));
    }
    out
}

/// Reads every partition of `topic` from the beginning until `n` records came (bounded):
/// `(partition, offset) -> key`.
async fn read_all(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    n: usize,
) -> BTreeMap<(i32, i64), String> {
    let consumer = Consumer::new(
        ConsumerConfig::new(&cluster.bootstrap()).with_offset_reset(OffsetReset::Earliest),
    )
    .await
    .unwrap();
    let tps: Vec<_> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    consumer.assign(&tps).unwrap();
    let mut out = BTreeMap::new();
    while out.len() < n {
        let r = tokio::time::timeout(DEADLINE, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} records read", out.len()))
            .unwrap();
        let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
        assert_eq!(
            r.value.as_deref(),
            Some(format!("v{}", &key[1..]).as_bytes()),
            "{key}"
        );
        assert!(
            out.insert((r.partition, r.offset), key).is_none(),
            "read twice"
        );
    }
    consumer.close().await;
    out
}

/// Every record delivered once: the log holds exactly the delivered records, at the
/// offsets the producer reported, contiguous from 0 per partition.
async fn check_exactly_once(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    delivered: &BTreeMap<usize, (i32, i64)>,
) {
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for &(p, o) in delivered.values() {
        per_partition.entry(p).or_default().push(o);
    }
    for p in 0..partitions {
        let mut offsets = per_partition.remove(&p).unwrap_or_default();
        offsets.sort_unstable();
        let want: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, want, "{topic}/{p}: contiguous offsets from 0");
        assert_eq!(
            cluster.offsets(topic, p),
            Some((0, offsets.len() as i64)),
            "{topic}/{p}: nothing more in the log (no duplicates)"
        );
    }
    let read = read_all(cluster, topic, partitions, delivered.len()).await;
    for (i, at) in delivered {
        assert_eq!(read.get(at), Some(&format!("k{i}")), "record {i} at {at:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_retriable_produce_error_is_retried_and_delivered_exactly_once() {
    let codes = [
        ResponseError::NotLeaderOrFollower,
        ResponseError::LeaderNotAvailable,
        ResponseError::RequestTimedOut,
        ResponseError::NotEnoughReplicas,
        ResponseError::NotEnoughReplicasAfterAppend,
        ResponseError::UnknownTopicOrPartition,
        ResponseError::KafkaStorageError,
        ResponseError::NetworkException,
        ResponseError::CorruptMessage,
    ];
    for code in codes {
        assert!(code.is_retriable(), "{code:?} is retriable in Kafka");
        let cluster = Cluster::builder()
            .nodes(2)
            .topic("t", 2)
            .build()
            .await
            .unwrap();
        let fault = cluster.inject(
            Fault::error(ApiKey::Produce, code)
                .on_partition("t", 0)
                .times(3),
        );
        let p = producer(&cluster).await;
        let delivered = produce(&p, "t", None, 0..120).await;
        p.close().await;
        assert_eq!(
            cluster.fault_remaining(fault),
            None,
            "{code:?}: the 3 errors were all answered"
        );
        assert!(
            delivered.values().any(|&(p, _)| p == 0),
            "{code:?}: partition 0 got records"
        );
        check_exactly_once(&cluster, "t", 2, &delivered).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_retriable_produce_error_fails_the_batch_with_the_typed_error() {
    assert!(!ResponseError::InvalidRecord.is_retriable());
    let cluster = Cluster::builder().topic("t", 1).build().await.unwrap();
    let p = producer(&cluster).await;
    let fault =
        cluster.inject(Fault::error(ApiKey::Produce, ResponseError::InvalidRecord).times(1));
    let err = tokio::time::timeout(
        DEADLINE,
        p.send(
            ProducerRecord::new("t")
                .with_partition(0)
                .with_value("rejected"),
        ),
    )
    .await
    .expect("answered in time")
    .expect_err("INVALID_RECORD is not retried");
    assert!(
        matches!(
            &err,
            Error::Kafka {
                code: KafkaCode::InvalidRecord,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    assert_eq!(cluster.fault_remaining(fault), None);
    let produces = cluster
        .requests()
        .iter()
        .filter(|r| r.api == ApiKey::Produce)
        .count();
    assert_eq!(produces, 1, "sent once, not retried");
    assert_eq!(cluster.offsets("t", 0), Some((0, 0)), "nothing written");

    // The producer goes on: the next records are written from offset 0 (the idempotent
    // sequence was not advanced by the failed batch).
    let delivered = produce(&p, "t", Some(0), 0..30).await;
    p.close().await;
    check_exactly_once(&cluster, "t", 1, &delivered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_moved_mid_stream_is_followed_without_loss_or_reordering() {
    let cluster = Cluster::builder()
        .nodes(3)
        .topic("t", 1)
        .build()
        .await
        .unwrap();
    let p = producer(&cluster).await;
    let old = cluster.leader("t", 0).unwrap();
    let new = (old + 1) % 3;
    // Enqueue the first half without waiting for it, move the leader while those
    // batches are in flight or buffered, then enqueue the second half.
    let mut pending = Vec::new();
    for i in 0..400usize {
        if i == 200 {
            cluster.move_leader("t", 0, new).unwrap();
        }
        let r = ProducerRecord::new("t")
            .with_key(format!("k{i}"))
            .with_value(format!("v{i}"));
        pending.push((i, p.enqueue(r).await.unwrap()));
    }
    let mut delivered = BTreeMap::new();
    for (i, d) in pending {
        let d = tokio::time::timeout(DEADLINE, d)
            .await
            .expect("delivered in time")
            .unwrap_or_else(|e| panic!("record {i} failed: {e}"));
        delivered.insert(i, (d.partition, d.offset));
    }
    p.close().await;
    assert_eq!(cluster.leader("t", 0), Some(new));
    // In order: record i at offset i (idempotence keeps the order across retries).
    for (i, &(part, off)) in &delivered {
        assert_eq!((part, off), (0, *i as i64), "record {i}");
    }
    check_exactly_once(&cluster, "t", 1, &delivered).await;
    let to_new = cluster
        .requests()
        .iter()
        .filter(|r| r.api == ApiKey::Produce && r.node == new)
        .count();
    assert!(to_new > 0, "no Produce reached the new leader {new}");
    let to_old = cluster
        .requests()
        .iter()
        .filter(|r| r.api == ApiKey::Produce && r.node == old)
        .count();
    assert!(
        to_old > 0,
        "no Produce reached the old leader {old}: not mid-stream"
    );
}
