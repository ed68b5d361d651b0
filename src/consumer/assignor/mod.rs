//! Client-side partition assignment for Kafka's classic consumer group protocol, and the
//! standard `consumer` protocol-type encodings that go with it.
//!
//! In the classic protocol the broker only relays opaque bytes: every member puts a
//! *subscription* (`ConsumerProtocolSubscription`) in JoinGroup, the coordinator hands all
//! of them to the leader, the leader runs the assignor that every member offered and sends
//! one *assignment* (`ConsumerProtocolAssignment`) per member in SyncGroup. Java and
//! librdkafka consumers can only share a group with Paperboy if all three sides agree on
//! these bytes and on the assignors' semantics; this module provides both.
//!
//! # Assignors
//! - [`AssignmentStrategy::Range`] (`range`) and [`AssignmentStrategy::RoundRobin`]
//!   (`roundrobin`) reproduce Java's `RangeAssignor` and `RoundRobinAssignor` exactly (without
//!   rack awareness), including Java's member order: members with a `group.instance.id`
//!   first, ordered by it, then the others by member id.
//! - [`AssignmentStrategy::CooperativeSticky`] (`cooperative-sticky`) follows Java's
//!   `CooperativeStickyAssignor` in its guarantees rather than its exact choices: balanced,
//!   sticky, and cooperative (a partition never moves between two members within one
//!   rebalance; see [`assign`]).
//!
//! The encodings themselves are in `src/group_protocol.rs`.
//!
//! This file holds what the assignors share: the strategy names, the leader's entry point
//! [`assign`], the group as the assignors see it and Java's member order. Each algorithm
//! has a file of its own: `range.rs`, `round_robin.rs` and `sticky.rs`.
//!
//! # Driving a cooperative rebalance (member side)
//! After SyncGroup, with `owned` the partitions held before and `new` the decoded assignment:
//! revoke `owned - new` (commit their offsets, stop fetching), start `new - owned`, keep the
//! rest running. If anything was revoked, rejoin at once, sending `owned_partitions = new`
//! and `generation_id` = the generation just joined: the partitions withheld by the leader
//! this round are only handed out in that follow-up rebalance.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use super::TopicPartition;
pub(crate) use crate::group_protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, Subscription,
    SUBSCRIPTION_VERSION,
};

mod range;
mod round_robin;
mod sticky;

/// Which assignor(s) a consumer offers (`partition.assignment.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentStrategy {
    /// Per topic, contiguous ranges of partitions to the members subscribed to it
    /// (Java's `RangeAssignor`, librdkafka's `range`). Eager.
    Range,
    /// All partitions of all topics dealt out one at a time to the members, skipping
    /// members not subscribed to a partition's topic (Java's `RoundRobinAssignor`,
    /// librdkafka's `roundrobin`). Eager.
    RoundRobin,
    /// Balanced and sticky, with cooperative (incremental) rebalancing (Java's
    /// `CooperativeStickyAssignor`, librdkafka's `cooperative-sticky`).
    CooperativeSticky,
}

impl AssignmentStrategy {
    /// The protocol name put in JoinGroup, the same as Java and librdkafka use:
    /// `"range"`, `"roundrobin"` or `"cooperative-sticky"`.
    pub fn protocol_name(self) -> &'static str {
        match self {
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::RoundRobin => "roundrobin",
            AssignmentStrategy::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// Parses a protocol name (ASCII case-insensitively) or the fully qualified name of the
    /// Java class (`org.apache.kafka.clients.consumer.RangeAssignor`, `...RoundRobinAssignor`,
    /// `...CooperativeStickyAssignor`), ignoring surrounding whitespace. Returns `None` for
    /// anything else, including the eager `sticky` assignor, which is not implemented.
    pub fn parse(s: &str) -> Option<Self> {
        const JAVA_PACKAGE: &str = "org.apache.kafka.clients.consumer.";
        let s = s.trim();
        let all = [
            AssignmentStrategy::Range,
            AssignmentStrategy::RoundRobin,
            AssignmentStrategy::CooperativeSticky,
        ];
        if let Some(class) = s.strip_prefix(JAVA_PACKAGE) {
            return all.into_iter().find(|st| st.java_class() == class);
        }
        all.into_iter()
            .find(|st| st.protocol_name().eq_ignore_ascii_case(s))
    }

    /// Whether this assignor runs the cooperative rebalance protocol. A member uses the
    /// cooperative protocol only if every strategy it offers is cooperative (Java's rule),
    /// otherwise it revokes everything before each JoinGroup (eager).
    pub fn is_cooperative(self) -> bool {
        matches!(self, AssignmentStrategy::CooperativeSticky)
    }

    /// The simple name of the Java class implementing this strategy.
    fn java_class(self) -> &'static str {
        match self {
            AssignmentStrategy::Range => "RangeAssignor",
            AssignmentStrategy::RoundRobin => "RoundRobinAssignor",
            AssignmentStrategy::CooperativeSticky => "CooperativeStickyAssignor",
        }
    }
}

/// A group member as the leader sees it in the JoinGroup response.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its `group.instance.id`, for static members.
    pub group_instance_id: Option<String>,
    /// Its decoded subscription metadata.
    pub subscription: Subscription,
}

/// Computes the assignment on the group leader. `partitions` maps each subscribed topic that
/// exists to its partition count (topics with a count of 0 or less are skipped, as Java
/// does). Returns member_id -> sorted partitions, with an entry (possibly empty) for every
/// member. Member ids are expected to be unique; a repeated id is ignored after its first
/// occurrence. Rack ids are not used.
///
/// `Range` and `RoundRobin` give exactly Java's answers. `CooperativeSticky` guarantees:
/// - every partition of a subscribed topic is given to at most one member, and only to a
///   member subscribed to its topic;
/// - balance: in the target assignment (before the cooperative step below) every partition
///   is assigned, and no partition could move to another member subscribed to its topic
///   that holds at least two fewer partitions; in particular members with the same
///   subscription differ by at most one partition;
/// - stickiness: only owned partitions reported with the group's highest generation, of
///   topics the member still subscribes to, are trusted (a member that reports no
///   generation counts as -1), and a partition claimed by two trusted members is treated as
///   unowned. When all members have the same subscription
///   each member keeps at least min(trusted owned, floor(partitions / members)) of its own,
///   and the total kept is the most any balanced assignment allows;
/// - cooperation: a partition that some *other* member reports owning (with any
///   generation) is left out of its new owner's assignment this round, unless that new
///   owner is the partition's trusted owner. The member that holds it gets an assignment
///   without it, revokes it and rejoins, and the next rebalance assigns it.
///
/// For the generation of a member whose subscription carries none (version 0 or 1), the
/// user data is read as older Java `CooperativeStickyAssignor`s wrote it (exactly 4 bytes,
/// the generation) or as the `StickyAssignor` / librdkafka sticky layout
/// (`[topic [partition]] generation`, filling the bytes exactly); anything else means -1.
pub(crate) fn assign(
    strategy: AssignmentStrategy,
    members: &[Member],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let group = Group::new(members, partitions);
    let per_member = match strategy {
        AssignmentStrategy::Range => range::range(&group),
        AssignmentStrategy::RoundRobin => round_robin::round_robin(&group),
        AssignmentStrategy::CooperativeSticky => {
            let plan = sticky::sticky(&group);
            plan.to_partitions(&plan.cooperative())
        }
    };
    group.into_map(per_member)
}

/// The members (deduplicated, in Java's order) and what each can be assigned.
struct Group<'a> {
    /// Unique members, static ones first by instance id, then the rest by member id.
    members: Vec<&'a Member>,
    /// For each member, its subscribed topics that exist with at least one partition.
    subscribed: Vec<HashSet<&'a str>>,
    /// Existing topics with at least one partition, with their partition counts.
    partitions: BTreeMap<&'a str, i32>,
}

impl<'a> Group<'a> {
    fn new(members: &'a [Member], partitions: &'a BTreeMap<String, i32>) -> Self {
        let partitions: BTreeMap<&str, i32> = partitions
            .iter()
            .filter(|(_, &count)| count > 0)
            .map(|(topic, &count)| (topic.as_str(), count))
            .collect();
        let mut seen = HashSet::new();
        let mut unique: Vec<&Member> = members
            .iter()
            .filter(|m| seen.insert(m.member_id.as_str()))
            .collect();
        unique.sort_by(|a, b| java_member_order(a, b));
        let subscribed = unique
            .iter()
            .map(|m| {
                m.subscription
                    .topics
                    .iter()
                    .map(String::as_str)
                    .filter(|t| partitions.contains_key(t))
                    .collect()
            })
            .collect();
        Group {
            members: unique,
            subscribed,
            partitions,
        }
    }

    /// Pairs each member's partitions (indexed like `self.members`) with its id, sorted.
    fn into_map(
        self,
        per_member: Vec<Vec<TopicPartition>>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        self.members
            .iter()
            .zip(per_member)
            .map(|(m, mut partitions)| {
                partitions.sort_unstable();
                partitions.dedup();
                (m.member_id.clone(), partitions)
            })
            .collect()
    }
}

/// Java's `AbstractPartitionAssignor.MemberInfo` order: members with a group instance id
/// first, ordered by it; then the others by member id. Strings compare as Java's
/// `String.compareTo` (UTF-16 code units). Ties (never expected) fall back to member id.
fn java_member_order(a: &Member, b: &Member) -> Ordering {
    let by_instance = match (&a.group_instance_id, &b.group_instance_id) {
        (Some(x), Some(y)) => java_str_order(x, y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    by_instance.then_with(|| java_str_order(&a.member_id, &b.member_id))
}

/// Java's `String.compareTo`: lexicographic over UTF-16 code units.
fn java_str_order(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Helpers shared with the tests of each algorithm (`range.rs`, `round_robin.rs`,
    // `sticky.rs`).

    pub(super) fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    pub(super) fn subscription(topics: &[&str]) -> Subscription {
        Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..Subscription::default()
        }
    }

    pub(super) fn member(id: &str, topics: &[&str]) -> Member {
        Member {
            member_id: id.to_string(),
            group_instance_id: None,
            subscription: subscription(topics),
        }
    }

    pub(super) fn static_member(id: &str, instance: &str, topics: &[&str]) -> Member {
        Member {
            group_instance_id: Some(instance.to_string()),
            ..member(id, topics)
        }
    }

    pub(super) fn owning(mut m: Member, generation: i32, owned: &[TopicPartition]) -> Member {
        m.subscription.generation_id = generation;
        m.subscription.owned_partitions = owned.to_vec();
        m
    }

    pub(super) fn counts(topics: &[(&str, i32)]) -> BTreeMap<String, i32> {
        topics.iter().map(|&(t, c)| (t.to_string(), c)).collect()
    }

    pub(super) fn expect(
        pairs: &[(&str, &[(&str, i32)])],
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        pairs
            .iter()
            .map(|(m, ps)| (m.to_string(), ps.iter().map(|&(t, p)| tp(t, p)).collect()))
            .collect()
    }

    // ---- strategy names ----

    #[test]
    fn strategy_names_round_trip_and_java_class_names_parse() {
        for s in [
            AssignmentStrategy::Range,
            AssignmentStrategy::RoundRobin,
            AssignmentStrategy::CooperativeSticky,
        ] {
            assert_eq!(AssignmentStrategy::parse(s.protocol_name()), Some(s));
        }
        assert_eq!(AssignmentStrategy::Range.protocol_name(), "range");
        assert_eq!(AssignmentStrategy::RoundRobin.protocol_name(), "roundrobin");
        assert_eq!(
            AssignmentStrategy::CooperativeSticky.protocol_name(),
            "cooperative-sticky"
        );
        let p = AssignmentStrategy::parse;
        assert_eq!(
            p("org.apache.kafka.clients.consumer.RangeAssignor"),
            Some(AssignmentStrategy::Range)
        );
        assert_eq!(
            p("org.apache.kafka.clients.consumer.RoundRobinAssignor"),
            Some(AssignmentStrategy::RoundRobin)
        );
        assert_eq!(
            p(" org.apache.kafka.clients.consumer.CooperativeStickyAssignor "),
            Some(AssignmentStrategy::CooperativeSticky)
        );
        assert_eq!(
            p("Cooperative-Sticky"),
            Some(AssignmentStrategy::CooperativeSticky)
        );
        assert_eq!(p("sticky"), None);
        assert_eq!(p("org.apache.kafka.clients.consumer.StickyAssignor"), None);
        assert_eq!(p("org.apache.kafka.clients.consumer.range"), None);
        assert_eq!(p(""), None);
        assert!(AssignmentStrategy::CooperativeSticky.is_cooperative());
        assert!(!AssignmentStrategy::Range.is_cooperative());
        assert!(!AssignmentStrategy::RoundRobin.is_cooperative());
    }

    // ---- shared: member order and deduplication ----

    #[test]
    fn java_string_order_is_utf16() {
        // U+FF61 sorts before U+10000 in UTF-8 (Rust) but after it in UTF-16 (Java), where
        // U+10000 is the surrogate pair D800 DC00.
        assert_eq!(java_str_order("\u{ff61}", "\u{10000}"), Ordering::Greater);
        assert_eq!("\u{ff61}".cmp("\u{10000}"), Ordering::Less);
        let members = [member("\u{ff61}", &["t"]), member("\u{10000}", &["t"])];
        let got = assign(
            AssignmentStrategy::RoundRobin,
            &members,
            &counts(&[("t", 1)]),
        );
        assert_eq!(got["\u{10000}"], vec![tp("t", 0)]);
    }

    #[test]
    fn duplicate_member_ids_are_ignored_after_the_first() {
        let members = [
            member("a", &["t"]),
            member("a", &["u"]),
            member("b", &["t"]),
        ];
        let got = assign(
            AssignmentStrategy::Range,
            &members,
            &counts(&[("t", 2), ("u", 1)]),
        );
        assert_eq!(got, expect(&[("a", &[("t", 0)]), ("b", &[("t", 1)])]));
    }
}
