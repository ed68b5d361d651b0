//! Transactions against a real broker: what read_committed consumers (Paperboy's and
//! Java's) see of committed and aborted transactions, producer fencing, offsets sent to a
//! transaction (KIP-447), and the calls refused outside a transaction.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paperboy::consumer::{Consumer, ConsumerConfig};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::{ConsumerGroupMetadata, Error, TopicPartition};

fn txn_producer_config(id: &str) -> ProducerConfig {
    ProducerConfig::from_properties([
        ("bootstrap.servers", common::bootstrap().as_str()),
        ("transactional.id", id),
        ("linger.ms", "5"),
    ])
    .unwrap()
}

async fn txn_producer(id: &str) -> Producer {
    Producer::new(txn_producer_config(id)).await.unwrap()
}

fn values(records: &[(i32, String)]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|(_, v)| v.clone()).collect();
    v.sort();
    v
}

fn expected(prefix: &str, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:04}")).collect();
    v.sort();
    v
}

async fn send_all(producer: &Producer, topic: &str, prefix: &str, n: usize) {
    let mut pending = Vec::new();
    for i in 0..n {
        let r = ProducerRecord::new(topic)
            .with_key(format!("k{i}"))
            .with_value(format!("{prefix}-{i:04}"));
        pending.push(producer.enqueue(r).await.unwrap());
    }
    for d in pending {
        d.await.unwrap();
    }
}

#[tokio::test]
async fn read_committed_sees_committed_transactions_and_never_aborted_ones() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "txn-commit-abort", 3).await;
    let producer = txn_producer(&common::unique_topic("txn-a")).await;

    producer.begin_transaction().unwrap();
    send_all(&producer, &topic, "committed1", 300).await;
    producer.commit_transaction().await.unwrap();

    producer.begin_transaction().unwrap();
    send_all(&producer, &topic, "aborted", 200).await;
    producer.abort_transaction().await.unwrap();

    // Records enqueued but never sent when the abort comes fail, and are not written.
    producer.begin_transaction().unwrap();
    let unsent = producer
        .enqueue(ProducerRecord::new(&topic).with_value("never"))
        .await
        .unwrap();
    producer.abort_transaction().await.unwrap();
    if let Err(e) = unsent.await {
        assert!(matches!(e, Error::Transaction { .. }), "{e}");
    }

    producer.begin_transaction().unwrap();
    send_all(&producer, &topic, "committed2", 100).await;
    producer.commit_transaction().await.unwrap();
    producer.close().await;

    let committed = common::read_all(&topic, 3, "read_committed").await;
    let mut want = expected("committed1", 300);
    want.extend(expected("committed2", 100));
    want.sort();
    assert_eq!(values(&committed), want);

    let all = common::read_all(&topic, 3, "read_uncommitted").await;
    let aborted: Vec<_> = all
        .iter()
        .filter(|(_, v)| v.starts_with("aborted"))
        .collect();
    assert_eq!(
        aborted.len(),
        200,
        "read_uncommitted sees the aborted records"
    );
    assert_eq!(
        all.len(),
        600 + all.iter().filter(|(_, v)| v == "never").count()
    );
}

#[tokio::test]
async fn the_java_read_committed_console_consumer_reads_only_committed_records() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "txn-java", 1).await;
    let producer = txn_producer(&common::unique_topic("txn-java")).await;
    producer.begin_transaction().unwrap();
    send_all(&producer, &topic, "aborted", 50).await;
    producer.abort_transaction().await.unwrap();
    producer.begin_transaction().unwrap();
    send_all(&producer, &topic, "committed", 40).await;
    producer.commit_transaction().await.unwrap();
    producer.close().await;

    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(repo.join("scripts/kafka"))
        .args([
            "console-consumer",
            "--bootstrap-server",
            &common::bootstrap(),
            "--topic",
            &topic,
            "--from-beginning",
            "--isolation-level",
            "read_committed",
            "--timeout-ms",
            "10000",
        ])
        .stderr(Stdio::piped())
        .output()
        .expect("the Java console consumer runs");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with("committed") || l.starts_with("aborted"))
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        expected("committed", 40),
        "Java read_committed output:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "txn-fence", 1).await;
    let id = common::unique_topic("txn-fence");
    let first = txn_producer(&id).await;
    first.begin_transaction().unwrap();
    send_all(&first, &topic, "zombie", 10).await;

    // The newcomer's InitProducerId fences the first and aborts its open transaction.
    let second = txn_producer(&id).await;
    second.begin_transaction().unwrap();
    send_all(&second, &topic, "live", 20).await;
    second.commit_transaction().await.unwrap();

    let err = first.commit_transaction().await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert!(err.to_string().contains(&id), "{err}");
    // Fenced is for good: every later call says so.
    let err = first.begin_transaction().unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    first.close().await;
    second.close().await;

    let committed = common::read_all(&topic, 1, "read_committed").await;
    assert_eq!(values(&committed), expected("live", 20));
}

#[tokio::test]
async fn offsets_sent_to_a_transaction_are_committed_with_it_and_only_then() {
    let client = common::client().await;
    let input = common::new_topic(&client, "txn-offsets-in", 2).await;
    let group = common::unique_topic("txn-offsets-group");
    let producer = txn_producer(&common::unique_topic("txn-offsets")).await;
    let consumer = Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", common::bootstrap().as_str()),
            ("group.id", group.as_str()),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    let tp0 = TopicPartition::new(&input, 0);
    let tp1 = TopicPartition::new(&input, 1);
    let meta = ConsumerGroupMetadata::new(&group);

    // Aborted: nothing committed.
    producer.begin_transaction().unwrap();
    producer
        .send_offsets_to_transaction(&[(tp0.clone(), 5), (tp1.clone(), 7)], &meta)
        .await
        .unwrap();
    producer.abort_transaction().await.unwrap();
    let committed = consumer
        .committed(&[tp0.clone(), tp1.clone()])
        .await
        .unwrap();
    assert_eq!(committed[&tp0], None, "offsets of an aborted transaction");
    assert_eq!(committed[&tp1], None);

    // Committed: visible once the transaction commits.
    producer.begin_transaction().unwrap();
    producer
        .send_offsets_to_transaction(&[(tp0.clone(), 11), (tp1.clone(), 13)], &meta)
        .await
        .unwrap();
    producer.commit_transaction().await.unwrap();
    let committed = consumer
        .committed(&[tp0.clone(), tp1.clone()])
        .await
        .unwrap();
    assert_eq!(committed[&tp0], Some(11));
    assert_eq!(committed[&tp1], Some(13));
    producer.close().await;
    consumer.close().await;
}

#[tokio::test]
async fn offsets_from_a_member_that_lost_its_generation_are_refused() {
    let client = common::client().await;
    let input = common::new_topic(&client, "txn-zombie-in", 1).await;
    let group = common::unique_topic("txn-zombie-group");
    let consumer = Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", common::bootstrap().as_str()),
            ("group.id", group.as_str()),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    consumer.subscribe(&[&input]).unwrap();
    // Joined once the assignment arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().is_empty() {
        assert!(Instant::now() < deadline, "no assignment in 30 s");
        let _ = consumer.recv_batch(10, Duration::from_millis(200)).await;
    }
    let mut meta = consumer.group_metadata().unwrap();
    assert_eq!(meta.group_id, group);
    assert!(
        !meta.member_id.is_empty() && meta.generation_id >= 1,
        "{meta:?}"
    );
    // A generation the coordinator no longer has: a zombie's.
    meta.generation_id += 5;
    let producer = txn_producer(&common::unique_topic("txn-zombie")).await;
    producer.begin_transaction().unwrap();
    let err = producer
        .send_offsets_to_transaction(&[(TopicPartition::new(&input, 0), 3)], &meta)
        .await
        .unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(paperboy::KafkaCode::IllegalGeneration),
        "{err}"
    );
    // The transaction can only be aborted; then the producer goes on.
    let err = producer.commit_transaction().await.unwrap_err();
    assert!(matches!(err, Error::Transaction { .. }), "{err}");
    producer.abort_transaction().await.unwrap();
    producer.begin_transaction().unwrap();
    producer.commit_transaction().await.unwrap();
    producer.close().await;
    consumer.close().await;
}

#[tokio::test]
async fn calls_outside_a_transaction_get_clear_errors() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "txn-state", 1).await;
    let producer = txn_producer(&common::unique_topic("txn-state")).await;
    let err = producer
        .send(ProducerRecord::new(&topic).with_value("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transaction { .. }), "{err}");
    assert!(err.to_string().contains("begin_transaction"), "{err}");
    assert!(matches!(
        producer.commit_transaction().await.unwrap_err(),
        Error::Transaction { .. }
    ));
    assert!(matches!(
        producer.abort_transaction().await.unwrap_err(),
        Error::Transaction { .. }
    ));
    producer.begin_transaction().unwrap();
    assert!(matches!(
        producer.begin_transaction().unwrap_err(),
        Error::Transaction { .. }
    ));
    // An empty transaction commits without asking the coordinator anything.
    producer.commit_transaction().await.unwrap();
    producer.close().await;

    // A plain producer has no transactions.
    let plain = Producer::new(ProducerConfig::new(&common::bootstrap()))
        .await
        .unwrap();
    let err = plain.begin_transaction().unwrap_err();
    assert!(err.to_string().contains("transactional.id"), "{err}");
    plain.close().await;

    // transactional.id with idempotence turned off is refused.
    let err = Producer::new(
        txn_producer_config("x")
            .with("enable.idempotence", "false")
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("enable.idempotence"), "{err}");
}

#[tokio::test]
async fn closing_with_an_open_transaction_aborts_it() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "txn-close", 1).await;
    let id = common::unique_topic("txn-close");
    let producer = txn_producer(&id).await;
    producer.begin_transaction().unwrap();
    send_all(&producer, &topic, "left-open", 10).await;
    producer.close().await;
    // The abort markers are written: a read_committed consumer reaches the end at once
    // (an open transaction would hold the last stable offset back for 60 s).
    let committed = common::read_all(&topic, 1, "read_committed").await;
    assert!(committed.is_empty(), "{committed:?}");
}

#[tokio::test]
async fn a_commit_right_after_enqueueing_sends_the_records_first() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "txn-enqueue-commit", 3).await;
    let producer = txn_producer(&common::unique_topic("txn-enqueue")).await;
    producer.begin_transaction().unwrap();
    let mut pending = Vec::new();
    for i in 0..50 {
        let r = ProducerRecord::new(&topic).with_value(format!("now-{i:04}"));
        pending.push(producer.enqueue(r).await.unwrap());
    }
    // Not awaited: the commit sends them (adding their partitions) and waits for them.
    tokio::time::timeout(Duration::from_secs(30), producer.commit_transaction())
        .await
        .expect("the commit does not wait for the delivery timeout")
        .unwrap();
    for d in pending {
        d.await.unwrap();
    }
    producer.close().await;
    let committed = common::read_all(&topic, 3, "read_committed").await;
    assert_eq!(values(&committed), expected("now", 50));
}

#[tokio::test]
async fn a_transaction_open_past_its_timeout_is_aborted_by_the_coordinator() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "txn-timeout", 1).await;
    let id = common::unique_topic("txn-timeout");
    let producer = Producer::new(
        txn_producer_config(&id)
            .with("transaction.timeout.ms", "1000")
            .unwrap(),
    )
    .await
    .unwrap();
    producer.begin_transaction().unwrap();
    send_all(&producer, &topic, "late", 5).await;
    // The coordinator aborts it: a read_committed consumer then reaches the end (the
    // abort marker) with nothing to read.
    let committed = common::read_all(&topic, 1, "read_committed").await;
    assert!(committed.is_empty(), "{committed:?}");
    // Too late to commit: the coordinator has moved the id to a new epoch.
    let err = producer.commit_transaction().await.unwrap_err();
    assert!(
        matches!(err, Error::Fenced { .. } | Error::Transaction { .. }),
        "{err}"
    );
    producer.close().await;
    // A new producer with the id goes on.
    let next = txn_producer(&id).await;
    next.begin_transaction().unwrap();
    send_all(&next, &topic, "on-time", 3).await;
    next.commit_transaction().await.unwrap();
    next.close().await;
    let committed = common::read_all(&topic, 1, "read_committed").await;
    assert_eq!(values(&committed), expected("on-time", 3));
}
