//! The consumer against the in-process cluster (`paperboy-mock`): behaviours that need a
//! cluster of several nodes or exact control of it. Every wait is bounded.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use paperboy::consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy_mock::{ApiKey, Cluster};

const DEADLINE: Duration = Duration::from_secs(15);

/// With the default budget (64 MiB) and `fetch.max.bytes` (50 MiB), a consumer of
/// partitions led by four brokers fetches from all four. A fetch used to reserve
/// `fetch.max.bytes` of the budget whatever its partitions could return, so two brokers'
/// fetches took all the room, and the partitions of the other brokers were never fetched
/// while the first two long-polled at the end of their logs (`paperboy consume -e` on a
/// three-node cluster never ended).
#[tokio::test]
async fn partitions_of_every_broker_are_fetched_with_the_default_budget() {
    let cluster = Cluster::builder()
        .nodes(4)
        .topic("spread", 4)
        .build()
        .await
        .unwrap();
    let leaders: BTreeSet<i32> = (0..4)
        .map(|p| cluster.leader("spread", p).unwrap())
        .collect();
    assert_eq!(leaders.len(), 4, "one partition per broker");

    let producer = Producer::new(ProducerConfig::new(&cluster.bootstrap()))
        .await
        .unwrap();
    for p in 0..4 {
        let d = producer
            .enqueue(
                ProducerRecord::new("spread")
                    .with_partition(p)
                    .with_value(format!("v{p}")),
            )
            .await
            .unwrap();
        tokio::time::timeout(DEADLINE, d).await.unwrap().unwrap();
    }
    producer.close().await;

    // Default settings but the reset: the budget and fetch.max.bytes are what matter.
    let consumer = Consumer::new(
        ConsumerConfig::new(&cluster.bootstrap()).with_offset_reset(OffsetReset::Earliest),
    )
    .await
    .unwrap();
    let parts: Vec<_> = (0..4).map(|p| TopicPartition::new("spread", p)).collect();
    consumer.assign(&parts).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut got = BTreeSet::new();
    while got.len() < 4 && Instant::now() < deadline {
        for r in consumer
            .recv_batch(10, Duration::from_millis(200))
            .await
            .unwrap()
        {
            assert_eq!(
                r.value.as_deref(),
                Some(format!("v{}", r.partition).as_bytes())
            );
            got.insert(r.partition);
        }
    }
    let fetched_from: BTreeSet<i32> = cluster
        .requests()
        .iter()
        .filter(|r| r.api == ApiKey::Fetch)
        .map(|r| r.node)
        .collect();
    assert_eq!(
        got,
        (0..4).collect(),
        "partitions read (fetches went to nodes {fetched_from:?})"
    );
    assert_eq!(fetched_from, leaders);
    consumer.close().await;
    cluster.shutdown();
}

async fn producer(cluster: &Cluster) -> Producer {
    let mut cfg = ProducerConfig::new(&cluster.bootstrap()).with_linger(Duration::from_millis(1));
    cfg.set("retry.backoff.ms", "10").unwrap();
    Producer::new(cfg).await.unwrap()
}

/// Sends values `v{i}` for `range` to partition 0, each delivery awaited before the next
/// (one batch each), and returns their offsets.
async fn produce_one_by_one(p: &Producer, topic: &str, range: std::ops::Range<u32>) -> Vec<i64> {
    let mut offsets = Vec::new();
    for i in range {
        let d = p
            .enqueue(
                ProducerRecord::new(topic)
                    .with_partition(0)
                    .with_value(format!("v{i}")),
            )
            .await
            .unwrap();
        offsets.push(
            tokio::time::timeout(DEADLINE, d)
                .await
                .unwrap()
                .unwrap()
                .offset,
        );
    }
    offsets
}

fn consumer_config(cluster: &Cluster, reset: OffsetReset) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(&cluster.bootstrap()).with_offset_reset(reset);
    c.set("fetch.max.wait.ms", "50").unwrap();
    c.set("retry.backoff.ms", "10").unwrap();
    c
}

/// Reads partition 0 of `topic` until `n` records arrived; their values, in order.
async fn read_values(consumer: &Consumer, n: usize) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records",
            got.len()
        );
        for r in consumer
            .recv_batch(n - got.len(), Duration::from_millis(100))
            .await
            .unwrap()
        {
            got.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    got
}

fn values(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("v{i}")).collect()
}

/// Each error a partition's fetch can answer with and that a consumer retries (with a
/// metadata refresh where the error says the leader may have moved), injected twice:
/// every record is still read exactly once, in order.
#[tokio::test]
async fn retriable_fetch_errors_lose_and_repeat_nothing() {
    use paperboy_mock::{Fault, ResponseError};
    for error in [
        ResponseError::NotLeaderOrFollower,
        ResponseError::ReplicaNotAvailable,
        ResponseError::KafkaStorageError,
        ResponseError::FencedLeaderEpoch,
        ResponseError::UnknownLeaderEpoch,
        ResponseError::UnknownTopicOrPartition,
        ResponseError::OffsetNotAvailable,
    ] {
        let cluster = Cluster::builder()
            .nodes(1)
            .topic("t", 1)
            .build()
            .await
            .unwrap();
        let p = producer(&cluster).await;
        produce_one_by_one(&p, "t", 0..20).await;
        let consumer = Consumer::new(consumer_config(&cluster, OffsetReset::Earliest))
            .await
            .unwrap();
        consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
        let first = read_values(&consumer, 10).await;
        let fault = cluster.inject(
            Fault::error(ApiKey::Fetch, error)
                .on_partition("t", 0)
                .times(2),
        );
        produce_one_by_one(&p, "t", 20..30).await;
        let rest = read_values(&consumer, 20).await;
        assert_eq!(
            cluster.fault_remaining(fault),
            None,
            "{error:?}: both injected errors were answered"
        );
        let all: Vec<String> = first.into_iter().chain(rest).collect();
        assert_eq!(all, values(0..30), "{error:?}");
        let more = consumer
            .recv_batch(10, Duration::from_millis(200))
            .await
            .unwrap();
        assert!(more.is_empty(), "{error:?}: {} more records", more.len());
        consumer.close().await;
        p.close().await;
        cluster.shutdown();
    }
}

/// The leader goes down mid-stream and another node takes over (a new leader epoch):
/// the consumer follows it, validates its position against the new leader's log
/// (OffsetForLeaderEpoch, KIP-320), and reads on without loss or repetition.
#[tokio::test]
async fn a_leader_that_goes_down_mid_stream_is_followed_without_loss() {
    let cluster = Cluster::builder()
        .nodes(3)
        .topic("t", 1)
        .build()
        .await
        .unwrap();
    let p = producer(&cluster).await;
    produce_one_by_one(&p, "t", 0..50).await;
    let consumer = Consumer::new(consumer_config(&cluster, OffsetReset::Earliest))
        .await
        .unwrap();
    consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
    let first = read_values(&consumer, 30).await;

    let old = cluster.leader("t", 0).unwrap();
    let new = (old + 1) % 3;
    cluster.clear_requests();
    cluster.node_down(old);
    cluster.move_leader("t", 0, new).unwrap();
    produce_one_by_one(&p, "t", 50..80).await;
    let rest = read_values(&consumer, 50).await;
    let all: Vec<String> = first.into_iter().chain(rest).collect();
    assert_eq!(all, values(0..80));
    let validations: Vec<i32> = cluster
        .requests()
        .iter()
        .filter(|r| r.api == ApiKey::OffsetForLeaderEpoch)
        .map(|r| r.node)
        .collect();
    assert!(
        !validations.is_empty() && validations.iter().all(|n| *n == new),
        "the position validated against the new leader: {validations:?}"
    );
    consumer.close().await;
    p.close().await;
    cluster.shutdown();
}

/// Retention removes the start of the log under a consumer positioned there: with
/// `auto.offset.reset=earliest` it goes on from the new log start, exactly the records
/// still in the log; with `error` it gets a typed error instead of a silent jump.
#[tokio::test]
async fn offsets_removed_by_retention_reset_or_fail_as_configured() {
    let cluster = Cluster::builder().nodes(1).build().await.unwrap();
    cluster
        .create_topic_with_configs("t", 1, &[("retention.bytes", "1000")])
        .unwrap();
    let p = producer(&cluster).await;
    produce_one_by_one(&p, "t", 0..40).await;
    let (start, end) = cluster.offsets("t", 0).unwrap();
    assert!(
        start > 0 && end == 40,
        "retention removed the start: {start}..{end}"
    );

    let consumer = Consumer::new(consumer_config(&cluster, OffsetReset::Earliest))
        .await
        .unwrap();
    let tp = TopicPartition::new("t", 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek(&tp, 0).unwrap();
    let got = read_values(&consumer, (end - start) as usize).await;
    assert_eq!(got, values(start as u32..40));
    consumer.close().await;

    let consumer = Consumer::new(consumer_config(&cluster, OffsetReset::Error))
        .await
        .unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek(&tp, 0).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let err = loop {
        assert!(
            Instant::now() < deadline,
            "no error for offset 0 below log start {start}"
        );
        match consumer.recv_batch(10, Duration::from_millis(100)).await {
            Ok(records) => assert!(records.is_empty(), "records handed out from offset 0"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&err, paperboy::Error::NoOffset(at) if at == "t[0] at 0"),
        "{err:?}"
    );
    consumer.close().await;
    p.close().await;
    cluster.shutdown();
}

/// After NOT_COORDINATOR, a group member looks its coordinator up over the group's own
/// connection, not over the pooled one, where FindCoordinator waited behind a long-poll
/// fetch for up to `fetch.max.wait.ms` (here 3 s; the commit took that long).
#[tokio::test]
async fn a_lost_coordinator_is_found_again_without_waiting_behind_a_fetch() {
    use paperboy_mock::{Fault, ResponseError};
    let cluster = Cluster::builder()
        .nodes(1)
        .topic("t", 1)
        .build()
        .await
        .unwrap();
    let p = producer(&cluster).await;
    produce_one_by_one(&p, "t", 0..10).await;
    let mut cfg = consumer_config(&cluster, OffsetReset::Earliest)
        .with_group_id("g")
        .with_auto_commit(false);
    cfg.set("fetch.max.wait.ms", "3000").unwrap();
    let consumer = Consumer::new(cfg).await.unwrap();
    consumer.subscribe(&["t"]).unwrap();
    assert_eq!(read_values(&consumer, 10).await, values(0..10));
    // Reading on: the fetcher long-polls the empty end of the log.
    assert!(consumer
        .recv_batch(1, Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());

    let fault =
        cluster.inject(Fault::error(ApiKey::OffsetCommit, ResponseError::NotCoordinator).times(1));
    let started = Instant::now();
    consumer.commit_consumed().await.unwrap();
    let took = started.elapsed();
    assert_eq!(
        cluster.fault_remaining(fault),
        None,
        "the commit met NOT_COORDINATOR"
    );
    assert_eq!(cluster.committed("g", "t", 0), Some(10));
    assert!(
        took < Duration::from_millis(1500),
        "the commit took {took:?}: the lookup waited behind a 3 s fetch"
    );
    consumer.close().await;
    p.close().await;
    cluster.shutdown();
}

/// A partition paused briefly (as the engine's flow control does) and resumed gets its
/// records at once: the fetch sent meanwhile for the broker's other partitions, all at
/// their end, waits only a short while instead of long-polling `fetch.max.wait.ms`
/// (here 3 s) and holding the broker's one fetch slot (the engine's bulk mode lost about
/// 0.5 s in 2 of 5 runs to it).
#[tokio::test]
async fn a_resumed_partition_does_not_wait_behind_a_long_poll() {
    let cluster = Cluster::builder()
        .nodes(1)
        .topic("t", 2)
        .build()
        .await
        .unwrap();
    let p = producer(&cluster).await;
    produce_one_by_one(&p, "t", 0..50).await;
    let mut cfg = consumer_config(&cluster, OffsetReset::Earliest);
    cfg.set("fetch.max.wait.ms", "3000").unwrap();
    cfg.set("max.partition.fetch.bytes", "200").unwrap();
    let consumer = Consumer::new(cfg).await.unwrap();
    let (p0, p1) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    consumer.assign(&[p0.clone(), p1.clone()]).unwrap();
    let mut got = read_values(&consumer, 5).await;

    consumer.pause(std::slice::from_ref(&p0));
    // A fetch goes out for partition 1 alone (at its end) while partition 0 is paused.
    let before = fetches(&cluster);
    assert!(
        cluster
            .wait_until(DEADLINE, |c| fetches(c) > before + 1)
            .await,
        "a fetch while paused"
    );
    consumer.resume(std::slice::from_ref(&p0));
    let resumed = Instant::now();
    got.extend(read_values(&consumer, 45).await);
    let took = resumed.elapsed();
    assert_eq!(got, values(0..50));
    assert!(
        took < Duration::from_millis(1500),
        "the rest took {took:?} after the resume: a 3 s long-poll held the broker"
    );
    consumer.close().await;
    p.close().await;
    cluster.shutdown();
}

fn fetches(c: &Cluster) -> usize {
    c.requests()
        .iter()
        .filter(|r| r.api == ApiKey::Fetch)
        .count()
}

/// `group.protocol=consumer` against a cluster without ConsumerGroupHeartbeat (the mock,
/// like Kafka before 4.0): `recv` fails with a configuration error naming the setting,
/// within the API timeout, instead of retrying forever.
#[tokio::test]
async fn the_consumer_protocol_on_a_broker_without_it_is_a_clear_error() {
    let cluster = Cluster::builder().topic("t", 1).build().await.unwrap();
    let consumer = Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", cluster.bootstrap().as_str()),
            ("group.id", "g"),
            ("group.protocol", "consumer"),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    consumer.subscribe(&["t"]).unwrap();
    let err = tokio::time::timeout(DEADLINE, consumer.recv())
        .await
        .expect("recv returns")
        .unwrap_err();
    assert!(matches!(err, paperboy::Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("group.protocol"), "{err}");
    assert!(err.to_string().contains("ConsumerGroupHeartbeat"), "{err}");
    consumer.close().await;
}
