//! The `consumer` protocol type's encodings that a classic group's members exchange
//! through the coordinator: a member's *subscription* (`ConsumerProtocolSubscription`, in
//! JoinGroup) and its *assignment* (`ConsumerProtocolAssignment`, in SyncGroup). Used by
//! the classic group's assignors (`consumer/assignor.rs`) and by group administration
//! (`admin.rs`: the members' assignments of `describe_group`).
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
