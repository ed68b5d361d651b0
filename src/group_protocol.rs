//! The `consumer` protocol type's encodings that a classic group's members exchange
//! through the coordinator: a member's *subscription* (`ConsumerProtocolSubscription`, in
//! JoinGroup) and its *assignment* (`ConsumerProtocolAssignment`, in SyncGroup). Used by
//! the classic group's assignors (`consumer/assignor/`) and by group administration
//! (`client/admin.rs`: the members' assignments of `describe_group`).
//!
//! Subscriptions are written at [`SUBSCRIPTION_VERSION`] (3), as Java 3.5+ and 4.x send for
//! every assignor. Assignments are written at [`ASSIGNMENT_VERSION`] (3), again what Java
//! 3.5+ sends; assignment versions 0 to 3 have the same layout, so the number only labels
//! the bytes. Both decoders read any version from 0 up and, like Java, read a version above
//! 3 with the version-3 layout and ignore whatever follows it.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::offsets::TopicPartition;

/// The subscription version to send (and the highest one this module knows).
///
/// Java 3.5+ and 4.x write version 3 for every assignor, eager or cooperative (Java 2.4 to
/// 3.3 wrote 1, 3.4 wrote 2). Java reads a version above the highest it knows with its own
/// highest layout, and librdkafka reads the fields of the versions it knows, so 3 is safe
/// with older members too. Version 1 added `owned_partitions`, 2 `generation_id`, 3
/// `rack_id`.
pub(crate) const SUBSCRIPTION_VERSION: i16 = 3;

/// The assignment version [`encode_assignment`] writes (and the highest one known).
///
/// Versions 0 to 3 of `ConsumerProtocolAssignment` are byte-for-byte the same apart from
/// the version number (the schema only gained versions to stay in step with the
/// subscription). Java 3.5+/4.x write 3, Java 2.4 to 3.3 wrote 1, librdkafka writes 0.
/// Java accepts any version (reading one above its highest with its highest layout) and
/// librdkafka does not look at the number, so the choice is cosmetic; 3 matches current
/// Java, the most common peer.
pub(crate) const ASSIGNMENT_VERSION: i16 = 3;

/// One member's subscription, as carried in the JoinGroup metadata of the `consumer`
/// protocol type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    /// The topics the member wants to consume.
    pub topics: Vec<String>,
    /// Assignor-specific data; `None` for all three assignors here, as current Java sends.
    pub user_data: Option<Bytes>,
    /// The partitions the member holds now (cooperative protocol; empty under eager,
    /// which revokes everything before joining). Version 1+.
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation in which `owned_partitions` were assigned, -1 if none. Version 2+.
    pub generation_id: i32,
    /// The member's `client.rack`. Version 3+. Not used by the assignors here.
    pub rack_id: Option<String>,
}

impl Default for Subscription {
    fn default() -> Self {
        Subscription {
            topics: Vec::new(),
            user_data: None,
            owned_partitions: Vec::new(),
            generation_id: -1,
            rack_id: None,
        }
    }
}

/// Encodes `s` as a `ConsumerProtocolSubscription` preceded by its i16 version, as Java
/// 3.x+ does: topics sorted, owned partitions grouped by topic and sorted. Send it with
/// `version` = [`SUBSCRIPTION_VERSION`].
///
/// `version` is clamped to `0..=3`; fields the version lacks are left out. Names longer than
/// 32767 bytes cannot be written in a Kafka string and cannot name a topic (Kafka allows
/// 249 characters), so such topics are left out, and such a rack id is sent as null.
///
/// # Panics
/// If `user_data` is longer than `i32::MAX` bytes.
pub(crate) fn encode_subscription(s: &Subscription, version: i16) -> Bytes {
    let version = version.clamp(0, SUBSCRIPTION_VERSION);
    let topics: BTreeSet<&str> = s
        .topics
        .iter()
        .map(String::as_str)
        .filter(|t| fits_kafka_string(t))
        .collect();
    let owned = group_by_topic(&s.owned_partitions)
        .into_iter()
        .map(|(topic, partitions)| {
            OwnedTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(partitions)
        })
        .collect();
    let message = ConsumerProtocolSubscription::default()
        .with_topics(topics.into_iter().map(str_bytes).collect())
        .with_user_data(s.user_data.clone())
        .with_owned_partitions(owned)
        .with_generation_id(s.generation_id.max(-1))
        .with_rack_id(
            s.rack_id
                .as_deref()
                .filter(|r| fits_kafka_string(r))
                .map(str_bytes),
        );
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    message
        .encode(&mut buf, version)
        .expect("consumer protocol subscription user data over i32::MAX bytes");
    buf.freeze()
}

/// Decodes a version-prefixed `ConsumerProtocolSubscription` of any version. Versions above
/// 3 are read with the version-3 layout (as Java does); bytes after the known fields are
/// ignored. A rack id of `""` reads as `None`, as in Java. Fields the version lacks get
/// their defaults (no owned partitions, generation -1, no rack).
pub(crate) fn decode_subscription(b: &[u8]) -> Result<Subscription, String> {
    let (version, mut body) = split_version(b, "subscription")?;
    let message =
        ConsumerProtocolSubscription::decode(&mut body, version.min(SUBSCRIPTION_VERSION))
            .map_err(|e| {
                format!("invalid consumer protocol subscription (version {version}): {e}")
            })?;
    let owned_partitions = message
        .owned_partitions
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |&p| TopicPartition::new(t.topic.as_str(), p))
        })
        .collect();
    Ok(Subscription {
        topics: message
            .topics
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        user_data: message.user_data,
        owned_partitions,
        generation_id: message.generation_id,
        rack_id: message
            .rack_id
            .filter(|r| !r.is_empty())
            .map(|r| r.as_str().to_owned()),
    })
}

/// Encodes an assignment as a `ConsumerProtocolAssignment` at [`ASSIGNMENT_VERSION`],
/// preceded by its version: partitions grouped by topic, topics and partitions sorted,
/// duplicates dropped. `user_data` is `None` for all three assignors here.
///
/// # Panics
/// If `user_data` is longer than `i32::MAX` bytes, or a topic name longer than 32767 bytes
/// (neither can come out of [`assign`] or a decoded subscription).
pub(crate) fn encode_assignment(partitions: &[TopicPartition], user_data: Option<Bytes>) -> Bytes {
    let assigned = group_by_topic(partitions)
        .into_iter()
        .map(|(topic, partitions)| {
            AssignedTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(partitions)
        })
        .collect();
    let message = ConsumerProtocolAssignment::default()
        .with_assigned_partitions(assigned)
        .with_user_data(user_data);
    let mut buf = BytesMut::new();
    buf.put_i16(ASSIGNMENT_VERSION);
    message
        .encode(&mut buf, ASSIGNMENT_VERSION)
        .expect("consumer protocol assignment too large to encode");
    buf.freeze()
}

/// Decodes a version-prefixed `ConsumerProtocolAssignment` of any version (above 3 read as
/// 3) into its partitions, sorted and without duplicates; the user data is ignored. Empty
/// input is an empty assignment: the coordinator sends that to members the leader gave
/// nothing to.
pub(crate) fn decode_assignment(b: &[u8]) -> Result<Vec<TopicPartition>, String> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    let (version, mut body) = split_version(b, "assignment")?;
    let message = ConsumerProtocolAssignment::decode(&mut body, version.min(ASSIGNMENT_VERSION))
        .map_err(|e| format!("invalid consumer protocol assignment (version {version}): {e}"))?;
    let partitions: BTreeSet<TopicPartition> = message
        .assigned_partitions
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |&p| TopicPartition::new(t.topic.as_str(), p))
        })
        .collect();
    Ok(partitions.into_iter().collect())
}

/// Splits the i16 version prefix off a consumer protocol message.
fn split_version<'b>(b: &'b [u8], what: &str) -> Result<(i16, &'b [u8]), String> {
    let Some((version, body)) = b.split_first_chunk::<2>() else {
        return Err(format!(
            "consumer protocol {what} of {} bytes has no version",
            b.len()
        ));
    };
    let version = i16::from_be_bytes(*version);
    if version < 0 {
        return Err(format!(
            "unsupported consumer protocol {what} version {version}"
        ));
    }
    Ok((version, body))
}

/// Groups partitions by topic: topics sorted, each with its partitions sorted, deduplicated.
fn group_by_topic(partitions: &[TopicPartition]) -> BTreeMap<&str, Vec<i32>> {
    let mut by_topic: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
    for tp in partitions {
        if fits_kafka_string(&tp.topic) {
            by_topic
                .entry(tp.topic.as_str())
                .or_default()
                .insert(tp.partition);
        }
    }
    by_topic
        .into_iter()
        .map(|(t, ps)| (t, ps.into_iter().collect()))
        .collect()
}

/// Whether `s` can be written as a Kafka (non-compact) string.
fn fits_kafka_string(s: &str) -> bool {
    s.len() <= i16::MAX as usize
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Copies of two helpers of the assignor tests (`consumer/assignor/mod.rs`).

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    fn subscription(topics: &[&str]) -> Subscription {
        Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..Subscription::default()
        }
    }

    /// The subscription of Java's `ConsumerProtocolTest`: topics foo and bar, user data
    /// "hello", owning foo-0 and bar-0, generation 1, rack "rack-a".
    fn java_subscription() -> Subscription {
        Subscription {
            topics: vec!["foo".into(), "bar".into()],
            user_data: Some(Bytes::from_static(b"hello")),
            owned_partitions: vec![tp("foo", 0), tp("bar", 0)],
            generation_id: 1,
            rack_id: Some("rack-a".into()),
        }
    }

    /// Its bytes per version, built by hand from ConsumerProtocolSubscription.json
    /// (topics []string, user_data nullable bytes, v1+ owned [topic string, partitions
    /// []int32], v2+ generation int32, v3+ rack_id nullable string), with topics and owned
    /// partitions sorted as Java 3.x+ writes them.
    fn java_subscription_bytes(version: i16) -> Vec<u8> {
        let mut b = vec![0x00, version as u8];
        // topics: [bar, foo]
        b.extend_from_slice(&[0, 0, 0, 2, 0, 3, b'b', b'a', b'r', 0, 3, b'f', b'o', b'o']);
        // user data: "hello"
        b.extend_from_slice(&[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        if version >= 1 {
            // owned: [bar [0], foo [0]]
            b.extend_from_slice(&[0, 0, 0, 2]);
            b.extend_from_slice(&[0, 3, b'b', b'a', b'r', 0, 0, 0, 1, 0, 0, 0, 0]);
            b.extend_from_slice(&[0, 3, b'f', b'o', b'o', 0, 0, 0, 1, 0, 0, 0, 0]);
        }
        if version >= 2 {
            b.extend_from_slice(&[0, 0, 0, 1]);
        }
        if version >= 3 {
            b.extend_from_slice(&[0, 6, b'r', b'a', b'c', b'k', b'-', b'a']);
        }
        b
    }

    #[test]
    fn subscription_v3_bytes_match_java() {
        let expected: &[u8] = &[
            0x00, 0x03, // version 3
            0x00, 0x00, 0x00, 0x02, // 2 topics
            0x00, 0x03, b'b', b'a', b'r', //
            0x00, 0x03, b'f', b'o', b'o', //
            0x00, 0x00, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o', // user data
            0x00, 0x00, 0x00, 0x02, // 2 owned topics
            0x00, 0x03, b'b', b'a', b'r', 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x03, b'f', b'o', b'o', 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x01, // generation 1
            0x00, 0x06, b'r', b'a', b'c', b'k', b'-', b'a', // rack
        ];
        let encoded = encode_subscription(&java_subscription(), SUBSCRIPTION_VERSION);
        assert_eq!(&encoded[..], expected);
        assert_eq!(java_subscription_bytes(3), expected);
    }

    #[test]
    fn subscription_bytes_and_round_trip_every_version() {
        let s = java_subscription();
        for version in 0..=3i16 {
            let encoded = encode_subscription(&s, version);
            assert_eq!(
                &encoded[..],
                &java_subscription_bytes(version)[..],
                "v{version}"
            );
            let decoded = decode_subscription(&encoded).unwrap();
            assert_eq!(decoded.topics, vec!["bar".to_string(), "foo".to_string()]);
            assert_eq!(decoded.user_data, s.user_data);
            if version >= 1 {
                assert_eq!(decoded.owned_partitions, vec![tp("bar", 0), tp("foo", 0)]);
            } else {
                assert!(decoded.owned_partitions.is_empty());
            }
            assert_eq!(decoded.generation_id, if version >= 2 { 1 } else { -1 });
            let rack = (version >= 3).then(|| "rack-a".to_string());
            assert_eq!(decoded.rack_id, rack);
            // Re-encoding what was decoded gives the same bytes.
            assert_eq!(encode_subscription(&decoded, version), encoded);
        }
    }

    #[test]
    fn subscription_minimal_and_nulls() {
        // What a fresh Paperboy member sends: no user data, nothing owned, no rack.
        let s = subscription(&["t"]);
        let encoded = encode_subscription(&s, 3);
        let expected: &[u8] = &[
            0, 3, 0, 0, 0, 1, 0, 1, b't', // version, topics [t]
            0xff, 0xff, 0xff, 0xff, // null user data
            0, 0, 0, 0, // no owned partitions
            0xff, 0xff, 0xff, 0xff, // generation -1
            0xff, 0xff, // null rack
        ];
        assert_eq!(&encoded[..], expected);
        assert_eq!(decode_subscription(&encoded).unwrap(), s);
        // Empty (not null) user data, as librdkafka sends, survives.
        let mut s = subscription(&["t"]);
        s.user_data = Some(Bytes::new());
        assert_eq!(decode_subscription(&encode_subscription(&s, 1)).unwrap(), s);
        // An empty rack id reads as none, as in Java.
        let mut s = subscription(&["t"]);
        s.rack_id = Some(String::new());
        assert_eq!(
            decode_subscription(&encode_subscription(&s, 3))
                .unwrap()
                .rack_id,
            None
        );
        // Versions out of range are clamped; negative generations are written as -1.
        let mut s = subscription(&["t"]);
        s.generation_id = -7;
        assert_eq!(
            encode_subscription(&s, 42),
            encode_subscription(&subscription(&["t"]), 3)
        );
        assert_eq!(encode_subscription(&s, -1)[..2], [0, 0]);
    }

    #[test]
    fn subscription_from_a_future_version_reads_as_v3() {
        let mut b = java_subscription_bytes(3);
        b[1] = 9;
        b.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x00]); // fields of version 9
        let decoded = decode_subscription(&b).unwrap();
        assert_eq!(decoded.generation_id, 1);
        assert_eq!(decoded.rack_id.as_deref(), Some("rack-a"));
        assert_eq!(decoded.owned_partitions, vec![tp("bar", 0), tp("foo", 0)]);
    }

    #[test]
    fn subscription_decode_errors() {
        assert!(decode_subscription(&[]).is_err());
        assert!(decode_subscription(&[0]).is_err());
        assert!(decode_subscription(&[0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
        // Truncated at every length.
        let full = java_subscription_bytes(3);
        for len in 0..full.len() {
            assert!(decode_subscription(&full[..len]).is_err(), "len {len}");
        }
        // A topic count far beyond the bytes present fails cleanly.
        assert!(decode_subscription(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_err());
        // Not UTF-8.
        assert!(
            decode_subscription(&[0, 0, 0, 0, 0, 1, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err()
        );
    }

    #[test]
    fn assignment_bytes_match_java() {
        // Java's ConsumerProtocolTest assignment: foo-1 and bar-2, user data "hello".
        let expected: &[u8] = &[
            0x00, 0x03, // version 3
            0x00, 0x00, 0x00, 0x02, // 2 topics
            0x00, 0x03, b'b', b'a', b'r', 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00,
            0x03, b'f', b'o', b'o', 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x05, b'h', b'e', b'l', b'l', b'o', // user data
        ];
        let encoded = encode_assignment(
            &[tp("foo", 1), tp("bar", 2)],
            Some(Bytes::from_static(b"hello")),
        );
        assert_eq!(&encoded[..], expected);
        // No partitions, null user data.
        assert_eq!(
            &encode_assignment(&[], None)[..],
            &[0, 3, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
        // Several partitions of one topic, unsorted and repeated on input.
        assert_eq!(
            &encode_assignment(&[tp("t", 2), tp("t", 0), tp("t", 2)], None)[..],
            &[
                0, 3, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0xff, 0xff, 0xff,
                0xff
            ]
        );
    }

    #[test]
    fn assignment_round_trips_and_every_version_decodes() {
        let partitions = vec![tp("a", 0), tp("a", 5), tp("b", 1), tp("c", 0)];
        let encoded = encode_assignment(&partitions, None);
        assert_eq!(decode_assignment(&encoded).unwrap(), partitions);
        for version in [0i16, 1, 2, 3, 4, 100] {
            let mut b = encoded.to_vec();
            b[..2].copy_from_slice(&version.to_be_bytes());
            assert_eq!(decode_assignment(&b).unwrap(), partitions, "v{version}");
        }
        // librdkafka's v0 with empty user data, partitions out of order.
        let rdkafka: &[u8] = &[
            0, 0, 0, 0, 0, 1, 0, 1, b'x', 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0,
        ];
        assert_eq!(
            decode_assignment(rdkafka).unwrap(),
            vec![tp("x", 1), tp("x", 3)]
        );
        // Empty member state: empty assignment.
        assert_eq!(decode_assignment(&[]).unwrap(), vec![]);
        assert!(decode_assignment(&[0]).is_err());
        assert!(decode_assignment(&[0x80, 0, 0, 0, 0, 0]).is_err());
        for len in 1..encoded.len() {
            assert!(decode_assignment(&encoded[..len]).is_err(), "len {len}");
        }
    }
}
