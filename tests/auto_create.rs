//! `allow.auto.create.topics`: producers have the broker create a missing topic (on by
//! default, as in Java and librdkafka) where the broker allows it; off, producing to a
//! missing topic fails with a clear error. The test broker runs with
//! `auto.create.topics.enable=true`.

mod common;

use std::time::{Duration, Instant};

use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::Error;

#[tokio::test]
async fn producing_to_a_missing_topic_creates_it_by_default() {
    let client = common::client().await;
    let topic = common::unique_topic("auto-created");
    let producer = Producer::new(ProducerConfig::new(&common::bootstrap()))
        .await
        .unwrap();
    let d = producer
        .send(ProducerRecord::new(&topic).with_value("first"))
        .await
        .expect("the broker creates the topic");
    assert_eq!(d.offset, 0);
    producer.close().await;
    let records = common::read_partition(&client, &topic, d.partition, 0, 1).await;
    assert_eq!(records[0].2.as_deref(), Some(&b"first"[..]));
}

#[tokio::test]
async fn with_creation_off_a_missing_topic_is_a_clear_error() {
    let topic = common::unique_topic("not-created");
    let mut cfg = ProducerConfig::new(&common::bootstrap());
    cfg.set("allow.auto.create.topics", "false").unwrap();
    cfg.set("delivery.timeout.ms", "3000").unwrap();
    let producer = Producer::new(cfg).await.unwrap();
    let started = Instant::now();
    let e = producer
        .send(ProducerRecord::new(&topic).with_value("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::UnknownTopicOrPartition { topic: t, .. } if *t == topic)
            || e.to_string().contains(&topic),
        "{e:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let client = common::client().await;
    let cluster = client.refresh_all_metadata().await.unwrap();
    assert!(
        cluster.topic(&topic).is_none(),
        "the topic was created anyway"
    );
}
