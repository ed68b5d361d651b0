//! Transactions on a real three-node cluster, which this test starts (ports 9592-9597,
//! under `.kafka/txn-failover`) and stops: the transaction coordinator's broker is killed
//! with a transaction open, and the transaction still commits (on the new coordinator),
//! with every record of every transaction read back once by a read_committed consumer.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::{Client, ClientConfig, NewTopic};

/// The partition of `__transaction_state` that holds `id` (Kafka: the Java hash of the
/// id, made non-negative, modulo the partition count, 5 in `scripts/kafka`).
fn txn_state_partition(id: &str) -> i32 {
    let hash = id
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    (hash & 0x7fff_ffff) % 5
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_commits_across_the_loss_of_its_coordinator() {
    common::init_tracing();
    let cluster = Cluster::start("txn-failover", 9592);
    let servers = cluster.bootstrap();
    let client = Client::connect(ClientConfig::new(&servers))
        .await
        .expect("three-node cluster answers");
    let topic = common::unique_topic("txn-failover");
    client
        .create_topics(&[NewTopic::new(&topic, 3, 3)])
        .await
        .unwrap();
    let id = common::unique_topic("txn-failover-id");
    let producer = Producer::new(
        ProducerConfig::from_properties([
            ("bootstrap.servers", servers.as_str()),
            ("transactional.id", id.as_str()),
            ("request.timeout.ms", "10000"),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    // The coordinator: the leader of the id's partition of the transaction log (which
    // the producer's InitProducerId created).
    let meta = client
        .refresh_metadata(&["__transaction_state"])
        .await
        .unwrap();
    let coordinator = meta
        .leader_for("__transaction_state", txn_state_partition(&id))
        .unwrap()
        .node_id;

    const TRANSACTIONS: usize = 6;
    const PER: usize = 200;
    for t in 0..TRANSACTIONS {
        producer.begin_transaction().unwrap();
        let mut pending = Vec::new();
        for i in 0..PER {
            let r = ProducerRecord::new(&topic).with_value(format!("t{t}-{i:03}"));
            pending.push(producer.enqueue(r).await.unwrap());
        }
        for d in pending {
            d.await.unwrap();
        }
        if t == 2 {
            // Records acknowledged, the transaction open: its coordinator goes.
            cluster.kill(coordinator);
        }
        tokio::time::timeout(Duration::from_secs(90), producer.commit_transaction())
            .await
            .expect("the commit ends within max.block.ms")
            .unwrap_or_else(|e| panic!("transaction {t} did not commit: {e}"));
    }
    producer.close().await;

    let read = common::read_all_from(&servers, &topic, 3, "read_committed").await;
    let mut values: Vec<String> = read.into_iter().map(|(_, v)| v).collect();
    values.sort();
    let mut want: Vec<String> = (0..TRANSACTIONS)
        .flat_map(|t| (0..PER).map(move |i| format!("t{t}-{i:03}")))
        .collect();
    want.sort();
    assert_eq!(values.len(), want.len(), "every record once");
    assert_eq!(values, want);
    cluster.start_node(coordinator);
}
