//! The administration calls against a real broker: topic configurations, partitions,
//! consumer groups (list, describe, committed offsets, reset), deleting records.

mod common;

use std::time::{Duration, Instant};

use paperboy::consumer::{Consumer, ConsumerConfig};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::{ConfigResource, KafkaCode, OffsetSpec, TopicPartition};

async fn produce(topic: &str, partitions: i32, per_partition: usize) {
    let p = Producer::new(ProducerConfig::new(&common::bootstrap()))
        .await
        .unwrap();
    for part in 0..partitions {
        for i in 0..per_partition {
            let r = ProducerRecord::new(topic)
                .with_partition(part)
                .with_value(format!("v{i}"));
            p.send(r).await.unwrap();
        }
    }
    p.close().await;
}

#[tokio::test]
async fn topic_configs_are_described_set_and_removed() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "admin-configs", 1).await;
    let resource = ConfigResource::Topic(topic.clone());
    let entries = client.describe_configs(&resource).await.unwrap();
    let retention = entries.iter().find(|e| e.name == "retention.ms").unwrap();
    assert!(retention.is_default, "{retention:?}");

    client
        .alter_configs(&resource, &[("retention.ms", Some("12345"))])
        .await
        .unwrap();
    let retention = |entries: &[paperboy::ConfigEntry]| {
        entries
            .iter()
            .find(|e| e.name == "retention.ms")
            .cloned()
            .unwrap()
    };
    let entries = common::topic_configs_until(&client, &topic, "retention.ms=12345", |e| {
        retention(e).value.as_deref() == Some("12345")
    })
    .await;
    assert!(!retention(&entries).is_default);

    client
        .alter_configs(&resource, &[("retention.ms", None)])
        .await
        .unwrap();
    let entries = common::topic_configs_until(&client, &topic, "retention.ms removed", |e| {
        retention(e).is_default
    })
    .await;
    assert_ne!(retention(&entries).value.as_deref(), Some("12345"));

    let err = client
        .alter_configs(&resource, &[("retention.msec", Some("1"))])
        .await
        .unwrap_err();
    assert_eq!(err.kafka_code(), Some(KafkaCode::InvalidConfig), "{err}");
    let err = client
        .describe_configs(&ConfigResource::Topic(common::unique_topic("admin-none")))
        .await
        .unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::UnknownTopicOrPartition),
        "{err}"
    );
}

#[tokio::test]
async fn partitions_are_added_never_removed() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "admin-partitions", 1).await;
    client.create_partitions(&topic, 3).await.unwrap();
    let meta = client.refresh_metadata(&[&topic]).await.unwrap();
    assert_eq!(meta.topic(&topic).unwrap().partitions.len(), 3);
    let err = client.create_partitions(&topic, 2).await.unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::InvalidPartitions),
        "{err}"
    );
}

#[tokio::test]
async fn groups_are_listed_described_and_their_offsets_reset() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "admin-groups", 2).await;
    produce(&topic, 2, 5).await;
    let group = common::unique_topic("admin-g");
    let consumer = Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", common::bootstrap().as_str()),
            ("group.id", group.as_str()),
            ("client.id", "admin-test-member"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while read < 10 {
        assert!(Instant::now() < deadline, "read {read} of 10");
        let batch = consumer
            .recv_batch(100, Duration::from_millis(200))
            .await
            .unwrap();
        read += batch.len();
        consumer.commit_records(&batch).await.unwrap();
    }

    let listed = client.list_groups().await.unwrap();
    let mine = listed.iter().find(|g| g.group_id == group).expect("listed");
    assert_eq!(mine.protocol_type, "consumer");
    assert_eq!(mine.state, "Stable");

    let d = client.describe_group(&group).await.unwrap();
    assert_eq!(d.state, "Stable");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].client_id, "admin-test-member");
    let mut assigned = d.members[0].assignment.clone();
    assigned.sort();
    assert_eq!(
        assigned,
        [
            TopicPartition::new(&topic, 0),
            TopicPartition::new(&topic, 1)
        ]
    );
    let offsets = client.group_offsets(&group).await.unwrap();
    assert_eq!(offsets.get(&TopicPartition::new(&topic, 0)), Some(&5));
    assert_eq!(offsets.get(&TopicPartition::new(&topic, 1)), Some(&5));

    // With a member, the coordinator refuses an administrator's offsets.
    let err = client
        .alter_group_offsets(&group, &[(TopicPartition::new(&topic, 0), 0)])
        .await
        .unwrap_err();
    assert!(err.kafka_code().is_some(), "{err}");

    consumer.close().await;
    let d = client.describe_group(&group).await.unwrap();
    assert_eq!(d.state, "Empty");
    assert!(d.members.is_empty());
    client
        .alter_group_offsets(
            &group,
            &[
                (TopicPartition::new(&topic, 0), 1),
                (TopicPartition::new(&topic, 1), 2),
            ],
        )
        .await
        .unwrap();
    let offsets = client.group_offsets(&group).await.unwrap();
    assert_eq!(offsets.get(&TopicPartition::new(&topic, 0)), Some(&1));
    assert_eq!(offsets.get(&TopicPartition::new(&topic, 1)), Some(&2));

    let d = client
        .describe_group(&common::unique_topic("admin-none"))
        .await
        .unwrap();
    assert_eq!(d.state, "Dead");
}

#[tokio::test]
async fn records_before_an_offset_are_deleted() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "admin-delete", 1).await;
    produce(&topic, 1, 10).await;
    assert_eq!(client.delete_records(&topic, 0, 4).await.unwrap(), 4);
    assert_eq!(
        client
            .list_offset(&topic, 0, OffsetSpec::Earliest)
            .await
            .unwrap(),
        4
    );
    let err = client.delete_records(&topic, 0, 99).await.unwrap_err();
    assert_eq!(err.kafka_code(), Some(KafkaCode::OffsetOutOfRange), "{err}");
    assert_eq!(client.delete_records(&topic, 0, -1).await.unwrap(), 10);
}
