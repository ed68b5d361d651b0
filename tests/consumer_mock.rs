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
