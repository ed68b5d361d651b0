//! Paperboy's own producer and consumer against the mock: idempotent produce and read
//! back, a group of two that splits the partitions and commits, a retried
//! NOT_LEADER_OR_FOLLOWER delivered once, and a node that goes down while its partition's
//! leadership moves. Every wait is bounded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use paperboy::consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, TopicPartition};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy_mock::{ApiKey, Cluster, Fault, ResponseError};

const DEADLINE: Duration = Duration::from_secs(30);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAPERBOY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

async fn producer(cluster: &Cluster) -> Producer {
    let mut cfg = ProducerConfig::new(&cluster.bootstrap()).with_linger(Duration::from_millis(2));
    cfg.set("retry.backoff.ms", "10").unwrap();
    Producer::new(cfg).await.unwrap()
}

/// Sends `keys` as `k{i}` -> `v{i}` and returns where each landed: (partition, offset).
async fn produce(
    p: &Producer,
    topic: &str,
    keys: std::ops::Range<usize>,
) -> BTreeMap<usize, (i32, i64)> {
    let mut pending = Vec::new();
    for i in keys {
        let r = ProducerRecord::new(topic)
            .with_key(format!("k{i}"))
            .with_value(format!("v{i}"));
        pending.push((i, p.enqueue(r).await.unwrap()));
    }
    let mut out = BTreeMap::new();
    for (i, d) in pending {
        let d = tokio::time::timeout(DEADLINE, d)
            .await
            .expect("delivery in time")
            .unwrap();
        out.insert(i, (d.partition, d.offset));
    }
    out
}

fn consumer_config(cluster: &Cluster, group: Option<&str>) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(&cluster.bootstrap())
        .with_offset_reset(OffsetReset::Earliest)
        .with_auto_commit(false);
    c.set("session.timeout.ms", "6000").unwrap();
    c.set("heartbeat.interval.ms", "100").unwrap();
    c.set("fetch.max.wait.ms", "100").unwrap();
    if let Some(g) = group {
        c = c.with_group_id(g);
    }
    c
}

fn key_index(r: &ConsumerRecord) -> usize {
    std::str::from_utf8(r.key.as_deref().unwrap()).unwrap()[1..]
        .parse()
        .unwrap()
}

/// Reads every partition of `topic` from the start until `n` records have arrived.
async fn read_all(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    n: usize,
) -> Vec<ConsumerRecord> {
    let consumer = Consumer::new(consumer_config(cluster, None)).await.unwrap();
    let parts: Vec<_> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    consumer.assign(&parts).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records read",
            got.len()
        );
        got.extend(
            consumer
                .recv_batch(n - got.len(), Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    // Nothing more arrives.
    let more = consumer
        .recv_batch(10, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        more.is_empty(),
        "{} records beyond the {n} produced",
        more.len()
    );
    consumer.close().await;
    got
}

/// Each record `i` was read once, with its value, at the partition and offset its
/// delivery reported.
fn check_read_back(delivered: &BTreeMap<usize, (i32, i64)>, read: &[ConsumerRecord]) {
    assert_eq!(read.len(), delivered.len());
    let mut seen = BTreeSet::new();
    for r in read {
        let i = key_index(r);
        assert!(seen.insert(i), "k{i} read twice");
        assert_eq!(r.value.as_deref(), Some(format!("v{i}").as_bytes()));
        assert_eq!(delivered[&i], (r.partition, r.offset), "k{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_records_read_back_with_their_offsets() {
    init_tracing();
    let cluster = Cluster::builder()
        .nodes(3)
        .topic("orders", 3)
        .build()
        .await
        .unwrap();
    let p = producer(&cluster).await;
    let delivered = produce(&p, "orders", 0..600).await;
    p.close().await;
    // Offsets are dense per partition, from 0.
    let mut per_partition: HashMap<i32, Vec<i64>> = HashMap::new();
    for &(part, off) in delivered.values() {
        per_partition.entry(part).or_default().push(off);
    }
    for (part, mut offs) in per_partition {
        offs.sort();
        assert_eq!(
            offs,
            (0..offs.len() as i64).collect::<Vec<_>>(),
            "partition {part}"
        );
        assert_eq!(
            cluster.offsets("orders", part),
            Some((0, offs.len() as i64))
        );
    }
    let read = read_all(&cluster, "orders", 3, 600).await;
    check_read_back(&delivered, &read);
    let seen: Vec<ApiKey> = cluster.requests().iter().map(|r| r.api).collect();
    for api in [
        ApiKey::ApiVersions,
        ApiKey::Metadata,
        ApiKey::InitProducerId,
        ApiKey::Produce,
        ApiKey::Fetch,
    ] {
        assert!(seen.contains(&api), "no {api:?} request seen");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_two_splits_the_partitions_and_commits() {
    init_tracing();
    let cluster = Cluster::builder()
        .nodes(2)
        .topic("clicks", 4)
        .build()
        .await
        .unwrap();
    let p = producer(&cluster).await;
    let delivered = produce(&p, "clicks", 0..400).await;
    p.close().await;

    let a = Consumer::new(consumer_config(&cluster, Some("g")))
        .await
        .unwrap();
    let b = Consumer::new(consumer_config(&cluster, Some("g")))
        .await
        .unwrap();
    a.subscribe(&["clicks"]).unwrap();
    b.subscribe(&["clicks"]).unwrap();

    // Poll both until the group settles: two members, disjoint halves of the topic.
    let deadline = Instant::now() + DEADLINE;
    let mut read: Vec<(char, ConsumerRecord)> = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "the group did not settle: {:?} / {:?}",
            a.assignment(),
            b.assignment()
        );
        let (ra, rb) = tokio::join!(
            a.recv_batch(100, Duration::from_millis(100)),
            b.recv_batch(100, Duration::from_millis(100))
        );
        read.extend(ra.unwrap().into_iter().map(|r| ('a', r)));
        read.extend(rb.unwrap().into_iter().map(|r| ('b', r)));
        let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (
            a.assignment().into_iter().map(|t| t.partition).collect(),
            b.assignment().into_iter().map(|t| t.partition).collect(),
        );
        let stable = cluster
            .group_members("g")
            .is_some_and(|(_, m)| m.len() == 2);
        if stable && sa.len() == 2 && sb.len() == 2 && sa.is_disjoint(&sb) {
            break;
        }
    }
    let (generation, members) = cluster.group_members("g").unwrap();
    assert_eq!(members.len(), 2);
    assert!(generation >= 2, "generation {generation}");
    let mine: HashMap<char, BTreeSet<i32>> = [
        (
            'a',
            a.assignment().into_iter().map(|t| t.partition).collect(),
        ),
        (
            'b',
            b.assignment().into_iter().map(|t| t.partition).collect(),
        ),
    ]
    .into();

    // From now on each member reads only its own partitions, to the end.
    read.clear();
    let mut positions_done = false;
    while !positions_done {
        assert!(Instant::now() < deadline, "not every record was read");
        let (ra, rb) = tokio::join!(
            a.recv_batch(200, Duration::from_millis(100)),
            b.recv_batch(200, Duration::from_millis(100))
        );
        read.extend(ra.unwrap().into_iter().map(|r| ('a', r)));
        read.extend(rb.unwrap().into_iter().map(|r| ('b', r)));
        positions_done = (0..4).all(|p| {
            let tp = TopicPartition::new("clicks", p);
            let hw = cluster.offsets("clicks", p).unwrap().1;
            a.position(&tp).or(b.position(&tp)) == Some(hw)
        });
    }
    for (who, r) in &read {
        assert!(
            mine[who].contains(&r.partition),
            "{who} read partition {} it does not own",
            r.partition
        );
        assert_eq!(delivered[&key_index(r)], (r.partition, r.offset));
    }
    a.commit_consumed().await.unwrap();
    b.commit_consumed().await.unwrap();
    for p in 0..4 {
        let hw = cluster.offsets("clicks", p).unwrap().1;
        assert_eq!(
            cluster.committed("g", "clicks", p),
            Some(hw),
            "partition {p}"
        );
    }
    let committed = a
        .committed(&[
            TopicPartition::new("clicks", 0),
            TopicPartition::new("clicks", 1),
        ])
        .await
        .unwrap();
    for (tp, off) in committed {
        assert_eq!(
            off,
            Some(cluster.offsets("clicks", tp.partition).unwrap().1)
        );
    }
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_leader_on_produce_is_retried_and_delivered_once() {
    init_tracing();
    let cluster = Cluster::builder()
        .nodes(1)
        .topic("t", 1)
        .build()
        .await
        .unwrap();
    let p = producer(&cluster).await;
    cluster.inject(
        Fault::error(ApiKey::Produce, ResponseError::NotLeaderOrFollower)
            .on_partition("t", 0)
            .times(2),
    );
    let delivered = produce(&p, "t", 0..50).await;
    p.close().await;
    let produces = cluster
        .requests()
        .iter()
        .filter(|r| r.api == ApiKey::Produce)
        .count();
    assert!(
        produces >= 3,
        "{produces} Produce requests: the errors were not retried"
    );
    assert_eq!(cluster.offsets("t", 0), Some((0, 50)));
    let read = read_all(&cluster, "t", 1, 50).await;
    check_read_back(&delivered, &read);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_goes_down_and_its_leadership_moves() {
    init_tracing();
    let cluster = Cluster::builder()
        .nodes(3)
        .topic("t", 1)
        .build()
        .await
        .unwrap();
    let p = producer(&cluster).await;
    let mut delivered = produce(&p, "t", 0..20).await;
    let old = cluster.leader("t", 0).unwrap();
    let new = (old + 1) % 3;
    cluster.node_down(old);
    cluster.move_leader("t", 0, new).unwrap();
    delivered.extend(produce(&p, "t", 20..40).await);
    p.close().await;
    assert_eq!(cluster.offsets("t", 0), Some((0, 40)));
    let after: Vec<_> = cluster
        .requests()
        .into_iter()
        .filter(|r| r.api == ApiKey::Produce)
        .collect();
    assert!(
        after.iter().any(|r| r.node == new),
        "nothing produced to the new leader"
    );
    let read = read_all(&cluster, "t", 1, 40).await;
    check_read_back(&delivered, &read);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_the_topic_fails_alone() {
    init_tracing();
    let cluster = Cluster::builder().build().await.unwrap();
    cluster
        .create_topic_with_configs("small", 1, &[("max.message.bytes", "3000")])
        .unwrap();
    let mut cfg = ProducerConfig::new(&cluster.bootstrap())
        .with_compression(paperboy::Compression::None)
        .with_linger(Duration::from_millis(200));
    cfg.set("retry.backoff.ms", "10").unwrap();
    let p = Producer::new(cfg).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..9u8 {
        let size = if i == 4 { 5000 } else { 100 };
        let r = ProducerRecord::new("small").with_value(vec![b'0' + i; size]);
        pending.push(p.enqueue(r).await.unwrap());
    }
    let mut delivered = Vec::new();
    for (i, d) in pending.into_iter().enumerate() {
        match tokio::time::timeout(DEADLINE, d)
            .await
            .expect("delivery in time")
        {
            Ok(d) => delivered.push((i, d.offset)),
            Err(e) => {
                assert_eq!(i, 4, "only the big record fails: {e}");
                assert!(
                    matches!(e.kafka_code(), Some(paperboy::KafkaCode::MessageTooLarge)),
                    "{e}"
                );
            }
        }
    }
    p.close().await;
    assert_eq!(delivered.len(), 8);
    let read = read_all_values(&cluster, "small", 8).await;
    let firsts: Vec<u8> = read.iter().map(|v| v[0]).collect();
    assert_eq!(firsts, b"01235678", "the rest arrive, in order");
}

async fn read_all_values(cluster: &Cluster, topic: &str, n: usize) -> Vec<bytes::Bytes> {
    read_all(cluster, topic, 1, n)
        .await
        .into_iter()
        .map(|r| r.value.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_negotiates_versions_the_cluster_narrows() {
    init_tracing();
    let cluster = Cluster::builder().topic("t", 1).build().await.unwrap();
    cluster.set_api_versions(ApiKey::Produce, Some((3, 9)));
    cluster.set_api_versions(ApiKey::Fetch, Some((4, 12)));
    cluster.set_api_versions(ApiKey::Metadata, Some((0, 9)));
    let p = producer(&cluster).await;
    let delivered = produce(&p, "t", 0..20).await;
    p.close().await;
    let read = read_all(&cluster, "t", 1, 20).await;
    check_read_back(&delivered, &read);
    let versions = |api: ApiKey| -> BTreeSet<i16> {
        cluster
            .requests()
            .iter()
            .filter(|r| r.api == api)
            .map(|r| r.version)
            .collect()
    };
    assert_eq!(versions(ApiKey::Produce), [9].into());
    assert_eq!(versions(ApiKey::Fetch), [12].into());
    assert_eq!(versions(ApiKey::Metadata), [9].into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_follows_its_coordinator_when_it_moves() {
    init_tracing();
    let cluster = Cluster::builder()
        .nodes(2)
        .topic("t", 2)
        .build()
        .await
        .unwrap();
    let p = producer(&cluster).await;
    produce(&p, "t", 0..100).await;

    let c = Consumer::new(consumer_config(&cluster, Some("moving")))
        .await
        .unwrap();
    c.subscribe(&["t"]).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut n = 0;
    while n < 100 {
        assert!(Instant::now() < deadline, "read {n} of 100");
        n += c
            .recv_batch(100, Duration::from_millis(100))
            .await
            .unwrap()
            .len();
    }
    c.commit_consumed().await.unwrap();
    let old = cluster.coordinator("moving");
    let new = 1 - old;
    cluster.clear_requests();
    cluster.move_coordinator("moving", new);

    produce(&p, "t", 100..200).await;
    p.close().await;
    while n < 200 {
        assert!(Instant::now() < deadline, "read {n} of 200");
        n += c
            .recv_batch(100, Duration::from_millis(100))
            .await
            .unwrap()
            .len();
    }
    assert_eq!(n, 200, "records read twice");
    // The commit goes to the new coordinator (after NOT_COORDINATOR from the old one).
    let commit = tokio::time::timeout(DEADLINE, async {
        loop {
            match c.commit_consumed().await {
                Ok(()) => break,
                Err(e) if e.is_retriable() => continue,
                Err(e) => panic!("commit failed: {e}"),
            }
        }
    });
    commit.await.expect("committed in time");
    for part in 0..2 {
        let hw = cluster.offsets("t", part).unwrap().1;
        assert_eq!(
            cluster.committed("moving", "t", part),
            Some(hw),
            "partition {part}"
        );
    }
    let seen = cluster.requests();
    assert!(
        seen.iter()
            .any(|r| r.api == ApiKey::OffsetCommit && r.node == new),
        "no commit reached the new coordinator"
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_added_and_removed_at_run_time() {
    init_tracing();
    let cluster = Cluster::builder()
        .nodes(2)
        .topic("t", 2)
        .build()
        .await
        .unwrap();
    let p = producer(&cluster).await;
    let mut delivered = produce(&p, "t", 0..20).await;

    let added = cluster.add_node().await.unwrap();
    assert_eq!(added, 2);
    cluster.move_leader("t", 0, added).unwrap();
    delivered.extend(produce(&p, "t", 20..40).await);
    assert!(cluster
        .requests()
        .iter()
        .any(|r| r.api == ApiKey::Produce && r.node == added));

    cluster.remove_node(0).unwrap();
    assert_ne!(cluster.leader("t", 1), Some(0));
    delivered.extend(produce(&p, "t", 40..60).await);
    p.close().await;
    assert!(cluster.bootstrap().split(',').count() == 2);
    let read = read_all(&cluster, "t", 2, 60).await;
    check_read_back(&delivered, &read);
}
