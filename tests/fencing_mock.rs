//! Fencing on the in-process cluster (paperboy-mock): a static consumer fenced by the
//! coordinator (FENCED_INSTANCE_ID) and an idempotent producer whose epoch or sequence
//! the broker refuses (INVALID_PRODUCER_EPOCH, OUT_OF_ORDER_SEQUENCE_NUMBER). Every wait
//! is bounded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use paperboy::consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::{Error, KafkaCode};
use paperboy_mock::{ApiKey, Cluster, Fault, ResponseError};

const DEADLINE: Duration = Duration::from_secs(20);

async fn producer(cluster: &Cluster) -> Producer {
    // Idempotent and acks=all by default.
    let mut cfg = ProducerConfig::new(&cluster.bootstrap()).with_linger(Duration::from_millis(1));
    cfg.set("retry.backoff.ms", "5").unwrap();
    Producer::new(cfg).await.unwrap()
}

/// Sends `v{i}` to partition 0, awaiting each delivery: `i -> offset or error`.
async fn send_each(p: &Producer, range: std::ops::Range<u32>) -> Vec<Result<i64, Error>> {
    let mut out = Vec::new();
    for i in range {
        let r = tokio::time::timeout(
            DEADLINE,
            p.send(
                ProducerRecord::new("t")
                    .with_partition(0)
                    .with_value(format!("v{i}")),
            ),
        )
        .await
        .expect("answered in time");
        out.push(r.map(|d| d.offset));
    }
    out
}

/// Partition 0 of `t` from the beginning: `offset -> value`, every record in the log.
async fn read_log(cluster: &Cluster) -> BTreeMap<i64, String> {
    let (_, end) = cluster.offsets("t", 0).unwrap();
    let mut cfg =
        ConsumerConfig::new(&cluster.bootstrap()).with_offset_reset(OffsetReset::Earliest);
    cfg.set("fetch.max.wait.ms", "50").unwrap();
    let consumer = Consumer::new(cfg).await.unwrap();
    consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
    let mut out = BTreeMap::new();
    while (out.len() as i64) < end {
        let r = tokio::time::timeout(DEADLINE, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {end} records read", out.len()))
            .unwrap();
        let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
        assert!(out.insert(r.offset, v).is_none(), "offset read twice");
    }
    consumer.close().await;
    out
}

fn init_producer_ids(cluster: &Cluster) -> usize {
    cluster
        .requests()
        .iter()
        .filter(|r| r.api == ApiKey::InitProducerId)
        .count()
}

/// INVALID_PRODUCER_EPOCH on a Produce is not retried: that record fails with the typed
/// error, the producer bumps its epoch (KIP-360: one more InitProducerId) and goes on;
/// the records after it are written from the next offset, none twice, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_producer_epoch_fails_the_batch_bumps_the_epoch_and_the_rest_is_written_once() {
    let cluster = Cluster::builder().topic("t", 1).build().await.unwrap();
    let p = producer(&cluster).await;
    let before = send_each(&p, 0..5).await;
    assert_eq!(
        before.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        (0..5).collect::<Vec<i64>>()
    );
    let inits = init_producer_ids(&cluster);
    assert_eq!(inits, 1, "one producer id so far");

    let fault =
        cluster.inject(Fault::error(ApiKey::Produce, ResponseError::InvalidProducerEpoch).times(1));
    let failed = send_each(&p, 5..6).await.remove(0);
    let err = failed.expect_err("INVALID_PRODUCER_EPOCH fails the record");
    assert!(
        matches!(
            &err,
            Error::Kafka {
                code: KafkaCode::InvalidProducerEpoch,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(cluster.fault_remaining(fault), None);

    let after = send_each(&p, 6..20).await;
    assert_eq!(
        after.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        (5..19).collect::<Vec<i64>>(),
        "the records after the failed one follow on at once"
    );
    assert_eq!(
        init_producer_ids(&cluster),
        2,
        "the epoch was bumped once (KIP-360)"
    );
    p.close().await;
    let log = read_log(&cluster).await;
    let expected: BTreeMap<i64, String> = (0..5)
        .chain(6..20)
        .enumerate()
        .map(|(o, i)| (o as i64, format!("v{i}")))
        .collect();
    assert_eq!(log, expected, "v5 is not in the log; nothing twice");
    cluster.shutdown();
}

/// OUT_OF_ORDER_SEQUENCE_NUMBER on an idempotent Produce (the broker lost track of the
/// sequence) is retried: every record is delivered once, at contiguous offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_sequence_is_retried_and_every_record_written_once() {
    let cluster = Cluster::builder().topic("t", 1).build().await.unwrap();
    let p = producer(&cluster).await;
    send_each(&p, 0..5).await;
    let fault = cluster
        .inject(Fault::error(ApiKey::Produce, ResponseError::OutOfOrderSequenceNumber).times(2));
    let all = send_each(&p, 5..20).await;
    assert_eq!(
        all.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        (5..20).collect::<Vec<i64>>()
    );
    assert_eq!(cluster.fault_remaining(fault), None, "both errors answered");
    p.close().await;
    let log = read_log(&cluster).await;
    let expected: BTreeMap<i64, String> = (0..20).map(|i| (i, format!("v{i}"))).collect();
    assert_eq!(log, expected);
    cluster.shutdown();
}

fn static_config(cluster: &Cluster, instance: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(&cluster.bootstrap())
        .with_group_id("g")
        .with_offset_reset(OffsetReset::Earliest)
        .with_auto_commit(false);
    c.set("group.instance.id", instance).unwrap();
    c.set("fetch.max.wait.ms", "50").unwrap();
    c.set("heartbeat.interval.ms", "50").unwrap();
    c.set("session.timeout.ms", "6000").unwrap();
    c.set("retry.backoff.ms", "10").unwrap();
    c
}

/// A static member (group.instance.id) the coordinator fences (FENCED_INSTANCE_ID on its
/// heartbeat, as a broker answers when another process took the instance id) stops: every
/// recv from then on fails with the typed error (it is fatal, the consumer does not
/// rejoin and take the instance id back), and it sends no more JoinGroup. Its commits
/// made before stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_static_member_fails_recv_with_fenced_instance_id_and_does_not_rejoin() {
    let cluster = Cluster::builder().topic("t", 2).build().await.unwrap();
    let p = producer(&cluster).await;
    send_each(&p, 0..10).await;
    let c = Consumer::new(static_config(&cluster, "inst-1"))
        .await
        .unwrap();
    c.subscribe(&["t"]).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.len() < 10 {
        assert!(Instant::now() < deadline, "only {} of 10", got.len());
        got.extend(c.recv_batch(10, Duration::from_millis(100)).await.unwrap());
    }
    c.commit_records(&got).await.unwrap();
    assert_eq!(cluster.committed("g", "t", 0), Some(10));
    let (generation, members) = cluster.group_members("g").unwrap();
    assert_eq!(members.len(), 1);

    let fault =
        cluster.inject(Fault::error(ApiKey::Heartbeat, ResponseError::FencedInstanceId).times(1));
    let err = tokio::time::timeout(DEADLINE, async {
        loop {
            match c.recv_batch(10, Duration::from_millis(100)).await {
                Ok(r) => assert!(r.is_empty(), "no records were produced"),
                Err(e) => break e,
            }
        }
    })
    .await
    .expect("the fencing surfaces in time");
    assert_eq!(cluster.fault_remaining(fault), None);
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::FencedInstanceId),
        "{err:?}"
    );
    cluster.clear_requests();
    for _ in 0..3 {
        let again = tokio::time::timeout(DEADLINE, c.recv())
            .await
            .expect("answered at once")
            .expect_err("still fenced");
        assert_eq!(again.kafka_code(), Some(KafkaCode::FencedInstanceId));
    }
    assert!(
        !cluster
            .requests()
            .iter()
            .any(|r| r.api == ApiKey::JoinGroup || r.api == ApiKey::SyncGroup),
        "a fenced member does not rejoin"
    );
    assert_eq!(
        cluster.group_members("g").map(|(g, _)| g),
        Some(generation),
        "no rebalance"
    );
    assert_eq!(cluster.committed("g", "t", 0), Some(10));
    drop(c);
    p.close().await;
    cluster.shutdown();
}

/// Two processes with the same `group.instance.id`: the newer one takes the instance
/// over and every partition; the older one is fenced (FENCED_INSTANCE_ID, as a broker
/// answers the old member id once the instance belongs to a new one) and stops, instead
/// of the two taking the instance from each other in turn. The newer one's commits land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_older_of_two_processes_with_one_instance_id_is_fenced() {
    let cluster = Cluster::builder().topic("t", 2).build().await.unwrap();
    let p = producer(&cluster).await;
    send_each(&p, 0..10).await;
    let old = Consumer::new(static_config(&cluster, "inst-1"))
        .await
        .unwrap();
    old.subscribe(&["t"]).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut got = 0;
    while got < 10 {
        assert!(Instant::now() < deadline, "only {got} of 10");
        got += old
            .recv_batch(10, Duration::from_millis(100))
            .await
            .unwrap()
            .len();
    }
    let (first_generation, _) = cluster.group_members("g").unwrap();

    let new = Consumer::new(static_config(&cluster, "inst-1"))
        .await
        .unwrap();
    new.subscribe(&["t"]).unwrap();
    // The newer process reads the partitions from the start (nothing was committed).
    let reader = tokio::spawn(async move {
        let deadline = Instant::now() + DEADLINE;
        let mut got = Vec::new();
        while got.len() < 10 {
            assert!(
                Instant::now() < deadline,
                "the new member read {} of 10",
                got.len()
            );
            got.extend(
                new.recv_batch(10, Duration::from_millis(100))
                    .await
                    .unwrap(),
            );
        }
        new.commit_records(&got).await.unwrap();
        (new, got.len())
    });
    let err = tokio::time::timeout(DEADLINE, async {
        loop {
            match old.recv_batch(10, Duration::from_millis(100)).await {
                Ok(r) => assert!(r.is_empty(), "nothing new was produced"),
                Err(e) => break e,
            }
        }
    })
    .await
    .expect("the older process is fenced in time");
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::FencedInstanceId),
        "{err:?}"
    );
    let (new, read) = reader.await.unwrap();
    assert_eq!(read, 10);
    for p in 0..2 {
        assert_eq!(
            cluster.committed("g", "t", p).unwrap_or(0),
            cluster.offsets("t", p).unwrap().1,
            "the newer process committed partition {p} to its end"
        );
    }
    let (generation, members) = cluster.group_members("g").unwrap();
    assert_eq!(members.len(), 1, "one member: the newer process");
    assert!(
        generation <= first_generation + 2,
        "no ping-pong between the two: generation {first_generation} -> {generation}"
    );
    // Still fenced, and the group stays put.
    let again = tokio::time::timeout(DEADLINE, old.recv())
        .await
        .expect("answered at once")
        .expect_err("still fenced");
    assert_eq!(again.kafka_code(), Some(KafkaCode::FencedInstanceId));
    assert_eq!(cluster.group_members("g").unwrap().0, generation);
    new.close().await;
    drop(old);
    p.close().await;
    cluster.shutdown();
}
