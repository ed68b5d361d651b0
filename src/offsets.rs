//! What names a partition, and the group member offsets are committed for: shared by the
//! consumer (which commits offsets itself) and a transactional producer (which commits
//! them within its transaction, [`Producer::send_offsets_to_transaction`]).
//!
//! [`Producer::send_offsets_to_transaction`]: crate::Producer::send_offsets_to_transaction

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`, partition `partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// A consumer's place in its group, as the group coordinator knows it: what a
/// transactional producer sends along with the offsets it commits for the consumer
/// (KIP-447), so that the coordinator refuses them once the consumer has lost its
/// partitions to a rebalance (a zombie cannot commit). From
/// [`Consumer::group_metadata`](crate::Consumer::group_metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    /// `group.id`.
    pub group_id: String,
    /// The member id the coordinator gave (empty: no member, offsets checked only by
    /// group).
    pub member_id: String,
    /// The generation (classic protocol) or member epoch (consumer protocol); -1: none.
    pub generation_id: i32,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
}

impl ConsumerGroupMetadata {
    /// Metadata naming only the group: the coordinator then does not check membership
    /// (as for a consumer with manually assigned partitions).
    pub fn new(group_id: impl Into<String>) -> Self {
        ConsumerGroupMetadata {
            group_id: group_id.into(),
            member_id: String::new(),
            generation_id: -1,
            group_instance_id: None,
        }
    }
}
