//! The client core against a real Apache Kafka broker: version negotiation, metadata,
//! topic administration, and a produce + fetch round trip in every codec.

mod common;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use paperboy::protocol::records::{self, DecodeLimits, NewRecord, RecordHeader};
use paperboy::{Acks, Compression, Error, FetchOptions, KafkaCode, NewTopic, OffsetSpec};

#[tokio::test]
async fn negotiates_versions_at_or_above_the_kafka_4_floor() {
    let client = common::client().await;
    let cluster = client.cluster();
    assert!(!cluster.brokers.is_empty(), "bootstrap found no brokers");
    let node = *cluster.brokers.keys().next().unwrap();
    for (api, floor) in [
        (ApiKey::Produce, 3),
        (ApiKey::Fetch, 4),
        (ApiKey::ListOffsets, 1),
        (ApiKey::Metadata, 0),
        (ApiKey::CreateTopics, 2),
        (ApiKey::OffsetCommit, 2),
        (ApiKey::OffsetFetch, 1),
    ] {
        let v = client
            .negotiated_version(node, api as i16)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no common version for {api:?}"));
        assert!(
            v >= floor,
            "{api:?} negotiated v{v}, below the floor v{floor}"
        );
        assert!(v <= api.valid_versions().max);
    }
}

#[tokio::test]
async fn creates_describes_and_deletes_topics() {
    let client = common::client().await;
    let name = common::unique_topic("admin");
    client
        .create_topics(&[NewTopic::new(&name, 3, 1).with_config("retention.ms", "3600000")])
        .await
        .unwrap();

    let cluster = client.refresh_metadata(&[&name]).await.unwrap();
    let topic = cluster.topic(&name).expect("new topic in metadata");
    assert_eq!(topic.partitions.len(), 3);
    assert!(!topic.id.is_nil(), "Kafka 3+ gives every topic an id");
    for (i, p) in topic.partitions.iter().enumerate() {
        assert_eq!(p.id, i as i32);
        assert!(
            cluster.brokers.contains_key(&p.leader),
            "partition {i} has a leader"
        );
    }

    let again = client
        .create_topics(&[NewTopic::new(&name, 3, 1)])
        .await
        .unwrap_err();
    assert_eq!(
        again.kafka_code(),
        Some(KafkaCode::TopicAlreadyExists),
        "{again}"
    );
    assert!(!again.is_retriable());

    client.delete_topics(&[&name]).await.unwrap();
    // delete_topics returns once the metadata no longer shows the topic.
    assert!(
        client.cluster().topic(&name).is_none(),
        "gone from the cache"
    );
    assert!(
        client
            .refresh_metadata(&[&name])
            .await
            .unwrap()
            .topic(&name)
            .is_none(),
        "deleted topic still in metadata"
    );
}

#[tokio::test]
async fn unknown_topic_is_a_typed_error() {
    let client = common::client().await;
    let err = client
        .fetch(
            &common::unique_topic("missing"),
            0,
            0,
            FetchOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownTopicOrPartition { .. }),
        "unexpected error: {err}"
    );
}

fn sample_records(n: usize, seed: u8) -> Vec<NewRecord> {
    let base_ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (0..n)
        .map(|i| {
            let value: Option<Bytes> = if i % 17 == 5 {
                None // a tombstone
            } else {
                // Mildly compressible, with every byte value appearing.
                Some(
                    (0..(i * 37 % 700 + 1))
                        .map(|j| ((j * 7 + i) as u8).wrapping_add(seed) ^ (j as u8 / 13))
                        .collect::<Vec<u8>>()
                        .into(),
                )
            };
            let headers = if i % 3 == 0 {
                vec![
                    RecordHeader {
                        key: format!("h{i}").into(),
                        value: Some(Bytes::from(vec![i as u8; i % 5])),
                    },
                    RecordHeader {
                        key: "null-header".into(),
                        value: None,
                    },
                ]
            } else {
                vec![]
            };
            NewRecord {
                key: (i % 4 != 3).then(|| Bytes::from(format!("key-{seed}-{i}"))),
                value,
                headers,
                timestamp_ms: base_ts - (n - i) as i64,
            }
        })
        .collect()
}

/// Fetches from `offset` until `n` records have been read, decoding every batch.
async fn read_back(
    client: &paperboy::Client,
    topic: &str,
    offset: i64,
    n: usize,
) -> Vec<(
    i64,
    i64,
    Option<Bytes>,
    Option<Bytes>,
    Vec<(Bytes, Option<Bytes>)>,
)> {
    let mut out = Vec::new();
    let mut next = offset;
    while out.len() < n {
        let fetched = client
            .fetch(topic, 0, next, FetchOptions::default())
            .await
            .unwrap();
        for batch in records::batches(fetched.records, DecodeLimits::default()) {
            let batch = batch.unwrap();
            batch.verify_crc().unwrap();
            for r in batch.records().unwrap() {
                let r = r.unwrap();
                if r.offset < next {
                    continue;
                }
                let headers = r.headers().collect();
                next = r.offset + 1;
                out.push((
                    r.offset,
                    r.timestamp_ms,
                    r.key.clone(),
                    r.value.clone(),
                    headers,
                ));
            }
        }
    }
    out
}

#[tokio::test]
async fn produce_and_fetch_round_trip_in_every_codec() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "roundtrip", 1).await;
    let mut expected_offset = 0;
    for (seed, codec) in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .into_iter()
    .enumerate()
    {
        let sent = sample_records(120, seed as u8);
        let ack = client
            .produce(&topic, 0, &sent, codec, Acks::All)
            .await
            .unwrap_or_else(|e| panic!("produce with {codec:?}: {e}"));
        assert_eq!(ack.base_offset, expected_offset, "{codec:?}");
        let got = read_back(&client, &topic, ack.base_offset, sent.len()).await;
        assert_eq!(got.len(), sent.len(), "{codec:?}");
        for (i, (s, g)) in sent.iter().zip(&got).enumerate() {
            assert_eq!(
                g.0,
                ack.base_offset + i as i64,
                "{codec:?} offset of record {i}"
            );
            assert_eq!(g.1, s.timestamp_ms, "{codec:?} timestamp of record {i}");
            assert_eq!(g.2, s.key, "{codec:?} key of record {i}");
            assert_eq!(g.3, s.value, "{codec:?} value of record {i}");
            let sent_headers: Vec<(Bytes, Option<Bytes>)> = s
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect();
            assert_eq!(g.4, sent_headers, "{codec:?} headers of record {i}");
        }
        expected_offset += sent.len() as i64;
    }
    assert_eq!(
        client
            .list_offset(&topic, 0, OffsetSpec::Latest)
            .await
            .unwrap(),
        expected_offset
    );
    assert_eq!(
        client
            .list_offset(&topic, 0, OffsetSpec::Earliest)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn fetch_that_cuts_a_batch_ends_with_a_truncated_tail() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "truncated", 1).await;
    // Five uncompressed batches of about 10 KiB each.
    for i in 0..5u8 {
        let recs: Vec<NewRecord> = (0..10)
            .map(|j| NewRecord {
                key: None,
                value: Some(Bytes::from(vec![i ^ j; 1000])),
                headers: vec![],
                timestamp_ms: 1_700_000_000_000,
            })
            .collect();
        client
            .produce(&topic, 0, &recs, Compression::None, Acks::All)
            .await
            .unwrap();
    }
    let fetched = client
        .fetch(
            &topic,
            0,
            0,
            FetchOptions {
                partition_max_bytes: 25_000,
                ..FetchOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(fetched.records.len() <= 25_000);
    let mut it = records::batches(fetched.records, DecodeLimits::default());
    let whole: Vec<_> = it.by_ref().map(|b| b.unwrap()).collect();
    assert_eq!(whole.len(), 2, "two whole batches fit in 25 000 bytes");
    assert!(it.truncated_tail(), "the third batch was cut by the broker");
    assert_eq!(whole[1].base_offset(), 10);
    let values: Vec<Bytes> = whole[1]
        .records()
        .unwrap()
        .map(|r| r.unwrap().value.unwrap())
        .collect();
    assert_eq!(values.len(), 10);
    assert_eq!(values[3], Bytes::from(vec![1 ^ 3; 1000]));
}

#[tokio::test]
async fn a_too_large_batch_is_rejected_with_a_typed_error() {
    let client = common::client().await;
    let name = common::unique_topic("toolarge");
    client
        .create_topics(&[NewTopic::new(&name, 1, 1).with_config("max.message.bytes", "10000")])
        .await
        .unwrap();
    let big = NewRecord {
        key: None,
        value: Some(Bytes::from(vec![7u8; 50_000])),
        headers: vec![],
        timestamp_ms: 1_700_000_000_000,
    };
    let err = client
        .produce(&name, 0, &[big], Compression::None, Acks::All)
        .await
        .unwrap_err();
    assert_eq!(err.kafka_code(), Some(KafkaCode::MessageTooLarge), "{err}");
    // Nothing was appended.
    assert_eq!(
        client
            .list_offset(&name, 0, OffsetSpec::Latest)
            .await
            .unwrap(),
        0
    );
}
