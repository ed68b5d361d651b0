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
//! # Driving a cooperative rebalance (member side)
//! After SyncGroup, with `owned` the partitions held before and `new` the decoded assignment:
//! revoke `owned - new` (commit their offsets, stop fetching), start `new - owned`, keep the
//! rest running. If anything was revoked, rejoin at once, sending `owned_partitions = new`
//! and `generation_id` = the generation just joined: the partitions withheld by the leader
//! this round are only handed out in that follow-up rebalance.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::TopicPartition;
pub(crate) use crate::group_protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, Subscription,
    SUBSCRIPTION_VERSION,
};

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
        AssignmentStrategy::Range => range(&group),
        AssignmentStrategy::RoundRobin => round_robin(&group),
        AssignmentStrategy::CooperativeSticky => {
            let plan = sticky(&group);
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

/// Java's `RangeAssignor`: per topic, the subscribed members in Java order each get a
/// contiguous range; the first `count % members` get one extra.
fn range(g: &Group) -> Vec<Vec<TopicPartition>> {
    let mut out = vec![Vec::new(); g.members.len()];
    for (&topic, &count) in &g.partitions {
        let consumers: Vec<usize> = (0..g.members.len())
            .filter(|&i| g.subscribed[i].contains(topic))
            .collect();
        if consumers.is_empty() {
            continue;
        }
        let count = count as usize;
        let per_member = count / consumers.len();
        let with_extra = count % consumers.len();
        for (k, &i) in consumers.iter().enumerate() {
            let start = per_member * k + k.min(with_extra);
            let len = per_member + usize::from(k < with_extra);
            out[i].extend((start..start + len).map(|p| TopicPartition::new(topic, p as i32)));
        }
    }
    out
}

/// Java's `RoundRobinAssignor`: all partitions, topics in Java string order, dealt in turn
/// to the members in Java order, skipping members not subscribed to the partition's topic.
fn round_robin(g: &Group) -> Vec<Vec<TopicPartition>> {
    let n = g.members.len();
    let mut out = vec![Vec::new(); n];
    let mut topics: Vec<(&str, i32)> = g
        .partitions
        .iter()
        .filter(|(t, _)| g.subscribed.iter().any(|s| s.contains(*t)))
        .map(|(&t, &c)| (t, c))
        .collect();
    topics.sort_by(|a, b| java_str_order(a.0, b.0));
    let mut next = 0;
    for (topic, count) in topics {
        for partition in 0..count {
            // Terminates: some member subscribes to `topic`.
            while !g.subscribed[next].contains(topic) {
                next = (next + 1) % n;
            }
            out[next].push(TopicPartition::new(topic, partition));
            next = (next + 1) % n;
        }
    }
    out
}

/// The cooperative-sticky computation, over partition indices into `universe`.
struct StickyPlan {
    /// Every partition of every existing subscribed topic, sorted.
    universe: Vec<TopicPartition>,
    /// The balanced, sticky target per member (indexed like `Group::members`).
    target: Vec<Vec<usize>>,
    /// Per partition, the members reporting it as owned (any generation).
    claimants: Vec<Vec<usize>>,
    /// Per partition, its trusted owner, if any.
    trusted_owner: Vec<Option<usize>>,
}

impl StickyPlan {
    /// The cooperative step: `target` minus the partitions another member must revoke
    /// first, i.e. those someone else reports owning, unless the new owner is the trusted
    /// one.
    fn cooperative(&self) -> Vec<Vec<usize>> {
        self.target
            .iter()
            .enumerate()
            .map(|(x, ps)| {
                ps.iter()
                    .copied()
                    .filter(|&p| {
                        self.trusted_owner[p] == Some(x)
                            || self.claimants[p].iter().all(|&y| y == x)
                    })
                    .collect()
            })
            .collect()
    }

    fn to_partitions(&self, per_member: &[Vec<usize>]) -> Vec<Vec<TopicPartition>> {
        per_member
            .iter()
            .map(|ps| ps.iter().map(|&p| self.universe[p].clone()).collect())
            .collect()
    }
}

/// Runs the cooperative-sticky assignor; see [`assign`] for what it guarantees.
fn sticky(g: &Group) -> StickyPlan {
    let m = g.members.len();

    // The universe: partitions of existing topics someone subscribes to, sorted.
    let topics: Vec<(&str, i32)> = g
        .partitions
        .iter()
        .filter(|(t, _)| g.subscribed.iter().any(|s| s.contains(*t)))
        .map(|(&t, &c)| (t, c))
        .collect();
    let mut topic_start = HashMap::with_capacity(topics.len());
    let mut universe = Vec::new();
    let mut topic_of = Vec::new();
    for (ti, &(topic, count)) in topics.iter().enumerate() {
        topic_start.insert(topic, (universe.len(), count));
        for p in 0..count {
            universe.push(TopicPartition::new(topic, p));
            topic_of.push(ti);
        }
    }
    let index_of = |tp: &TopicPartition| -> Option<usize> {
        let &(start, count) = topic_start.get(tp.topic.as_str())?;
        (0..count)
            .contains(&tp.partition)
            .then(|| start + tp.partition as usize)
    };
    // For each topic, the members that may be given its partitions (in member order).
    let mut topic_members: Vec<Vec<usize>> = vec![Vec::new(); topics.len()];
    let mut eligible: Vec<Vec<usize>> = vec![Vec::new(); m];
    for (ti, &(topic, _)) in topics.iter().enumerate() {
        for (i, subscribed) in g.subscribed.iter().enumerate() {
            if subscribed.contains(topic) {
                topic_members[ti].push(i);
                eligible[i].push(ti);
            }
        }
    }

    // Claims as reported, and which of them are trusted.
    let generations: Vec<i32> = g
        .members
        .iter()
        .map(|mb| member_generation(&mb.subscription))
        .collect();
    let max_generation = generations.iter().copied().max().unwrap_or(-1);
    let mut claimants: Vec<Vec<usize>> = vec![Vec::new(); universe.len()];
    let mut trusted_claims: Vec<Vec<usize>> = vec![Vec::new(); universe.len()];
    for (i, member) in g.members.iter().enumerate() {
        let claimed: BTreeSet<usize> = member
            .subscription
            .owned_partitions
            .iter()
            .filter_map(index_of)
            .collect();
        for p in claimed {
            claimants[p].push(i);
            if generations[i] == max_generation && g.subscribed[i].contains(topics[topic_of[p]].0) {
                trusted_claims[p].push(i);
            }
        }
    }
    let trusted_owner: Vec<Option<usize>> = trusted_claims
        .iter()
        .map(|c| if c.len() == 1 { Some(c[0]) } else { None })
        .collect();
    let mut owned: Vec<Vec<usize>> = vec![Vec::new(); m];
    for (p, owner) in trusted_owner.iter().enumerate() {
        if let Some(i) = *owner {
            owned[i].push(p);
        }
    }

    let target = if m == 0 {
        Vec::new()
    } else if eligible.iter().all(|e| *e == eligible[0]) {
        constrained_assign(universe.len(), &owned)
    } else {
        general_assign(
            universe.len(),
            &topic_of,
            &topic_members,
            &trusted_owner,
            &owned,
        )
    };

    StickyPlan {
        universe,
        target,
        claimants,
        trusted_owner,
    }
}

/// Sticky assignment when every member can take every partition (`n` partitions, `owned`
/// the trusted owned partitions per member, sorted). Each member's quota is
/// `n / members`, and `n % members` of them get one more; members owning more than the
/// quota get the extra slots first. Members keep their owned partitions up to their quota;
/// the rest is dealt round-robin to members under quota.
fn constrained_assign(n: usize, owned: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let m = owned.len();
    let min_quota = n / m;
    let mut extra_slots = n % m;
    let mut quota = vec![min_quota; m];
    let mut assigned: Vec<Vec<usize>> = vec![Vec::new(); m];
    let mut taken = vec![false; n];

    let mut by_owned: Vec<usize> = (0..m).collect();
    by_owned.sort_by_key(|&i| Reverse(owned[i].len()));
    for i in by_owned {
        if owned[i].len() > min_quota && extra_slots > 0 {
            extra_slots -= 1;
            quota[i] = min_quota + 1;
        }
        let keep = owned[i].len().min(quota[i]);
        for &p in &owned[i][..keep] {
            assigned[i].push(p);
            taken[p] = true;
        }
    }
    for q in quota.iter_mut() {
        if extra_slots == 0 {
            break;
        }
        if *q == min_quota {
            *q += 1;
            extra_slots -= 1;
        }
    }

    // Quotas add up to `n`, so while a partition is left some member is under quota.
    let mut next = 0;
    for p in (0..n).filter(|&p| !taken[p]) {
        while assigned[next].len() >= quota[next] {
            next = (next + 1) % m;
        }
        assigned[next].push(p);
        next = (next + 1) % m;
    }
    assigned
}

/// Sticky assignment for differing subscriptions. Members keep all their trusted owned
/// partitions; the unowned ones go, those with the fewest candidate members first, to the
/// candidate holding the fewest; then partitions move from members holding more to
/// subscribed members holding at least two fewer (largest holders first, partitions a
/// member did not own before first) until no such move exists. Each move lowers the sum of
/// squared counts, so this ends.
fn general_assign(
    n: usize,
    topic_of: &[usize],
    topic_members: &[Vec<usize>],
    trusted_owner: &[Option<usize>],
    owned: &[Vec<usize>],
) -> Vec<Vec<usize>> {
    let m = owned.len();
    let mut held: Vec<BTreeSet<usize>> =
        owned.iter().map(|o| o.iter().copied().collect()).collect();

    let mut unowned: Vec<usize> = (0..n).filter(|&p| trusted_owner[p].is_none()).collect();
    unowned.sort_by_key(|&p| (topic_members[topic_of[p]].len(), p));
    for p in unowned {
        let to = *topic_members[topic_of[p]]
            .iter()
            .min_by_key(|&&i| (held[i].len(), i))
            .expect("every topic in the universe has a subscriber");
        held[to].insert(p);
    }

    loop {
        let mut donors: Vec<usize> = (0..m).collect();
        donors.sort_by_key(|&i| (Reverse(held[i].len()), i));
        let mut chosen = None;
        for &from in &donors {
            let from_count = held[from].len();
            if from_count < 2 {
                break;
            }
            // Per topic, the partition this donor would rather give up (one it did not own
            // before, if any), and the emptiest other member that can take it.
            let mut best: Option<((bool, usize), usize, usize)> = None;
            let mut seen_topics = HashSet::new();
            let not_own_first = held[from]
                .iter()
                .filter(|&&p| trusted_owner[p] != Some(from))
                .chain(
                    held[from]
                        .iter()
                        .filter(|&&p| trusted_owner[p] == Some(from)),
                );
            for &p in not_own_first {
                if !seen_topics.insert(topic_of[p]) {
                    continue;
                }
                let to = topic_members[topic_of[p]]
                    .iter()
                    .copied()
                    .filter(|&i| i != from)
                    .min_by_key(|&i| (held[i].len(), i));
                if let Some(to) = to {
                    let key = (trusted_owner[p] == Some(from), held[to].len());
                    if held[to].len() + 2 <= from_count && best.is_none_or(|(k, _, _)| key < k) {
                        best = Some((key, to, p));
                    }
                }
            }
            if let Some((_, to, p)) = best {
                chosen = Some((from, to, p));
                break;
            }
        }
        let Some((from, to, p)) = chosen else { break };
        held[from].remove(&p);
        held[to].insert(p);
    }
    held.into_iter().map(|h| h.into_iter().collect()).collect()
}

/// The generation a member's owned partitions belong to, -1 if unknown: the subscription's
/// field (version 2+), else what the user data says (see [`assign`]).
fn member_generation(s: &Subscription) -> i32 {
    if s.generation_id >= 0 {
        return s.generation_id;
    }
    s.user_data
        .as_deref()
        .and_then(generation_in_user_data)
        .unwrap_or(-1)
        .max(-1)
}

/// Reads a generation from sticky-assignor user data: exactly 4 bytes (older Java
/// `CooperativeStickyAssignor`s), or `[topic [partition]] generation` filling the bytes
/// exactly (Java's `StickyAssignor`, librdkafka's sticky assignors).
fn generation_in_user_data(data: &[u8]) -> Option<i32> {
    fn take<'b>(r: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
        let (head, rest) = (r.len() >= n).then(|| r.split_at(n))?;
        *r = rest;
        Some(head)
    }
    fn i32_at(r: &mut &[u8]) -> Option<i32> {
        Some(i32::from_be_bytes(take(r, 4)?.try_into().ok()?))
    }
    if let Ok(generation) = <[u8; 4]>::try_from(data) {
        return Some(i32::from_be_bytes(generation));
    }
    let mut r = data;
    let topics = i32_at(&mut r)?;
    for _ in 0..topics.max(0) {
        let len = i16::from_be_bytes(take(&mut r, 2)?.try_into().ok()?);
        take(&mut r, usize::try_from(len).ok()?)?;
        let partitions = usize::try_from(i32_at(&mut r)?).ok()?;
        take(&mut r, partitions.checked_mul(4)?)?;
    }
    let generation = i32_at(&mut r)?;
    (topics >= 0 && r.is_empty()).then_some(generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    fn subscription(topics: &[&str]) -> Subscription {
        Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..Subscription::default()
        }
    }

    fn member(id: &str, topics: &[&str]) -> Member {
        Member {
            member_id: id.to_string(),
            group_instance_id: None,
            subscription: subscription(topics),
        }
    }

    fn static_member(id: &str, instance: &str, topics: &[&str]) -> Member {
        Member {
            group_instance_id: Some(instance.to_string()),
            ..member(id, topics)
        }
    }

    fn owning(mut m: Member, generation: i32, owned: &[TopicPartition]) -> Member {
        m.subscription.generation_id = generation;
        m.subscription.owned_partitions = owned.to_vec();
        m
    }

    fn counts(topics: &[(&str, i32)]) -> BTreeMap<String, i32> {
        topics.iter().map(|&(t, c)| (t.to_string(), c)).collect()
    }

    fn expect(pairs: &[(&str, &[(&str, i32)])]) -> BTreeMap<String, Vec<TopicPartition>> {
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

    // ---- encodings ----

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

    // ---- range ----

    #[test]
    fn range_javadoc_example() {
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let got = assign(
            AssignmentStrategy::Range,
            &members,
            &counts(&[("t0", 3), ("t1", 3)]),
        );
        assert_eq!(
            got,
            expect(&[
                ("C0", &[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]),
                ("C1", &[("t0", 2), ("t1", 2)]),
            ])
        );
    }

    #[test]
    fn range_static_members_sort_by_instance_id() {
        // Javadoc: after a bounce C0 -> C3 and C1 -> C2; with instance ids I0 (was C0) and
        // I1 (was C1) the assignment does not change.
        let members = [
            static_member("C3", "I0", &["t0", "t1"]),
            static_member("C2", "I1", &["t0", "t1"]),
        ];
        let got = assign(
            AssignmentStrategy::Range,
            &members,
            &counts(&[("t0", 3), ("t1", 3)]),
        );
        assert_eq!(
            got,
            expect(&[
                ("C2", &[("t0", 2), ("t1", 2)]),
                ("C3", &[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]),
            ])
        );
        // Without instance ids the member ids decide.
        let members = [member("C3", &["t0", "t1"]), member("C2", &["t0", "t1"])];
        let got = assign(
            AssignmentStrategy::Range,
            &members,
            &counts(&[("t0", 3), ("t1", 3)]),
        );
        assert_eq!(
            got["C2"],
            vec![tp("t0", 0), tp("t0", 1), tp("t1", 0), tp("t1", 1)]
        );
        // Mixed: static members come first.
        let members = [member("A", &["t"]), static_member("Z", "I", &["t"])];
        let got = assign(AssignmentStrategy::Range, &members, &counts(&[("t", 3)]));
        assert_eq!(
            got,
            expect(&[("A", &[("t", 2)]), ("Z", &[("t", 0), ("t", 1)])])
        );
    }

    #[test]
    fn range_uneven_and_partial_subscriptions() {
        let members = [
            member("c", &["t0", "t1"]),
            member("a", &["t0"]),
            member("b", &["t0", "t1", "missing"]),
            member("d", &[]),
        ];
        let got = assign(
            AssignmentStrategy::Range,
            &members,
            &counts(&[("t0", 7), ("t1", 1), ("unsubscribed", 4), ("empty", 0)]),
        );
        assert_eq!(
            got,
            expect(&[
                ("a", &[("t0", 0), ("t0", 1), ("t0", 2)]),
                ("b", &[("t0", 3), ("t0", 4), ("t1", 0)]),
                ("c", &[("t0", 5), ("t0", 6)]),
                ("d", &[]),
            ])
        );
        // More members than partitions.
        let members = [
            member("a", &["t"]),
            member("b", &["t"]),
            member("c", &["t"]),
        ];
        let got = assign(AssignmentStrategy::Range, &members, &counts(&[("t", 2)]));
        assert_eq!(
            got,
            expect(&[("a", &[("t", 0)]), ("b", &[("t", 1)]), ("c", &[])])
        );
        assert!(assign(AssignmentStrategy::Range, &[], &counts(&[("t", 2)])).is_empty());
    }

    // ---- round robin ----

    #[test]
    fn round_robin_javadoc_examples() {
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let got = assign(
            AssignmentStrategy::RoundRobin,
            &members,
            &counts(&[("t0", 3), ("t1", 3)]),
        );
        assert_eq!(
            got,
            expect(&[
                ("C0", &[("t0", 0), ("t0", 2), ("t1", 1)]),
                ("C1", &[("t0", 1), ("t1", 0), ("t1", 2)]),
            ])
        );

        let members = [
            member("C0", &["t0"]),
            member("C1", &["t0", "t1"]),
            member("C2", &["t0", "t1", "t2"]),
        ];
        let got = assign(
            AssignmentStrategy::RoundRobin,
            &members,
            &counts(&[("t0", 1), ("t1", 2), ("t2", 3)]),
        );
        assert_eq!(
            got,
            expect(&[
                ("C0", &[("t0", 0)]),
                ("C1", &[("t1", 0)]),
                ("C2", &[("t1", 1), ("t2", 0), ("t2", 1), ("t2", 2)]),
            ])
        );
    }

    #[test]
    fn round_robin_static_members_keep_their_partitions_across_new_member_ids() {
        // Javadoc: members C0, C1, C2 become C5, C3, C4 after a bounce; with instance ids
        // I0, I1, I2 the assignment stays I0: [t0p0, t1p0], I1: [t0p1, t1p1], I2: [t0p2, t1p2].
        let members = [
            static_member("C3", "I1", &["t0", "t1"]),
            static_member("C4", "I2", &["t0", "t1"]),
            static_member("C5", "I0", &["t0", "t1"]),
        ];
        let got = assign(
            AssignmentStrategy::RoundRobin,
            &members,
            &counts(&[("t0", 3), ("t1", 3)]),
        );
        assert_eq!(
            got,
            expect(&[
                ("C3", &[("t0", 1), ("t1", 1)]),
                ("C4", &[("t0", 2), ("t1", 2)]),
                ("C5", &[("t0", 0), ("t1", 0)]),
            ])
        );
        // Dynamic members: C3 comes first.
        let members = [
            member("C3", &["t0", "t1"]),
            member("C4", &["t0", "t1"]),
            member("C5", &["t0", "t1"]),
        ];
        let got = assign(
            AssignmentStrategy::RoundRobin,
            &members,
            &counts(&[("t0", 3), ("t1", 3)]),
        );
        assert_eq!(got["C3"], vec![tp("t0", 0), tp("t1", 0)]);
    }

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

    // ---- cooperative sticky: known answers ----

    fn sticky_run(
        members: &[Member],
        partitions: &BTreeMap<String, i32>,
    ) -> (
        BTreeMap<String, Vec<TopicPartition>>,
        BTreeMap<String, Vec<TopicPartition>>,
    ) {
        let group = Group::new(members, partitions);
        let plan = sticky(&group);
        let target = plan.to_partitions(&plan.target);
        let target = Group::new(members, partitions).into_map(target);
        let assigned = assign(AssignmentStrategy::CooperativeSticky, members, partitions);
        (target, assigned)
    }

    #[test]
    fn sticky_first_rebalance_is_balanced_and_spread() {
        let members = [
            member("a", &["t0", "t1"]),
            member("b", &["t0", "t1"]),
            member("c", &["t0", "t1"]),
        ];
        let got = assign(
            AssignmentStrategy::CooperativeSticky,
            &members,
            &counts(&[("t0", 3), ("t1", 4)]),
        );
        // Nothing owned: dealt like round robin.
        assert_eq!(
            got,
            expect(&[
                ("a", &[("t0", 0), ("t1", 0), ("t1", 3)]),
                ("b", &[("t0", 1), ("t1", 1)]),
                ("c", &[("t0", 2), ("t1", 2)]),
            ])
        );
    }

    #[test]
    fn sticky_new_member_waits_for_revocation() {
        let all: Vec<_> = (0..6).map(|p| tp("t", p)).collect();
        let members = [owning(member("a", &["t"]), 5, &all), member("b", &["t"])];
        let parts = counts(&[("t", 6)]);
        let (target, got) = sticky_run(&members, &parts);
        assert_eq!(
            target,
            expect(&[
                ("a", &[("t", 0), ("t", 1), ("t", 2)]),
                ("b", &[("t", 3), ("t", 4), ("t", 5)])
            ])
        );
        // b must wait until a has revoked t-3..5.
        assert_eq!(
            got,
            expect(&[("a", &[("t", 0), ("t", 1), ("t", 2)]), ("b", &[])])
        );
        // a revoked, both rejoin with generation 6.
        let members = [
            owning(member("a", &["t"]), 6, &got["a"]),
            owning(member("b", &["t"]), 6, &got["b"]),
        ];
        let got = assign(AssignmentStrategy::CooperativeSticky, &members, &parts);
        assert_eq!(got, target);
    }

    #[test]
    fn sticky_departed_members_partitions_move_at_once() {
        let parts = counts(&[("t", 6)]);
        let members = [
            owning(member("a", &["t"]), 3, &[tp("t", 0), tp("t", 3)]),
            owning(member("b", &["t"]), 3, &[tp("t", 1), tp("t", 4)]),
            // c (t-2, t-5) left the group.
        ];
        let got = assign(AssignmentStrategy::CooperativeSticky, &members, &parts);
        assert_eq!(
            got,
            expect(&[
                ("a", &[("t", 0), ("t", 2), ("t", 3)]),
                ("b", &[("t", 1), ("t", 4), ("t", 5)]),
            ])
        );
    }

    #[test]
    fn sticky_same_generation_double_claims_are_unowned_and_withheld() {
        let parts = counts(&[("t", 4)]);
        let members = [
            owning(member("a", &["t"]), 2, &[tp("t", 0), tp("t", 1)]),
            owning(member("b", &["t"]), 2, &[tp("t", 1), tp("t", 2)]),
        ];
        let (target, got) = sticky_run(&members, &parts);
        // t-1 is claimed twice: trusted for neither. a keeps t-0, b keeps t-2.
        assert!(target["a"].contains(&tp("t", 0)) && target["b"].contains(&tp("t", 2)));
        // Whoever t-1 went to, the other claimant must drop it first.
        assert!(!got.values().any(|ps| ps.contains(&tp("t", 1))));
        assert!(target.values().any(|ps| ps.contains(&tp("t", 1))));
    }

    #[test]
    fn sticky_only_the_highest_generation_is_trusted() {
        let parts = counts(&[("t", 4)]);
        let members = [
            // a was kicked out at generation 3 and still thinks it owns everything.
            owning(
                member("a", &["t"]),
                3,
                &[tp("t", 0), tp("t", 1), tp("t", 2), tp("t", 3)],
            ),
            owning(member("b", &["t"]), 4, &[tp("t", 0), tp("t", 1)]),
            owning(member("c", &["t"]), 4, &[tp("t", 2), tp("t", 3)]),
        ];
        let (target, got) = sticky_run(&members, &parts);
        // b and c are trusted and keep what balance allows (quota 1, one member may keep 2).
        let kept_b = target["b"].iter().filter(|p| p.partition <= 1).count();
        let kept_c = target["c"].iter().filter(|p| p.partition >= 2).count();
        assert_eq!(kept_b + kept_c, 3);
        // What a gets in the target is claimed by b or c, so it is withheld from a.
        assert_eq!(target["a"].len(), 1);
        assert_eq!(got["a"], vec![]);
        // b and c keep what they keep: they are the trusted owners, a's stale claim does
        // not hold them back.
        assert_eq!(got["b"], target["b"]);
        assert_eq!(got["c"], target["c"]);
    }

    #[test]
    fn sticky_generation_from_old_user_data() {
        assert_eq!(generation_in_user_data(&[0, 0, 0, 7]), Some(7));
        // StickyAssignor layout: [t [0, 4]] generation 9.
        let sticky = [
            0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 9,
        ];
        assert_eq!(generation_in_user_data(&sticky), Some(9));
        assert_eq!(generation_in_user_data(&sticky[..sticky.len() - 1]), None);
        assert_eq!(generation_in_user_data(&[]), None);
        assert_eq!(
            generation_in_user_data(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1]),
            None
        );
        assert_eq!(generation_in_user_data(&[0, 0, 0, 0, 0, 0, 0, 3]), Some(3));

        // A v1 member (generation in user data) and a v3 member, same generation: both
        // trusted.
        let parts = counts(&[("t", 2)]);
        let mut old = owning(member("old", &["t"]), -1, &[tp("t", 0)]);
        old.subscription.user_data = Some(Bytes::from_static(&[0, 0, 0, 4]));
        let new = owning(member("new", &["t"]), 4, &[tp("t", 1)]);
        let got = assign(
            AssignmentStrategy::CooperativeSticky,
            &[old.clone(), new.clone()],
            &parts,
        );
        assert_eq!(got, expect(&[("new", &[("t", 1)]), ("old", &[("t", 0)])]));
        // Without it, the v1 member is not trusted: t-0 is unowned and balance keeps it
        // with old anyway (no other claimant), while new keeps t-1.
        old.subscription.user_data = None;
        let got = assign(AssignmentStrategy::CooperativeSticky, &[old, new], &parts);
        assert_eq!(got, expect(&[("new", &[("t", 1)]), ("old", &[("t", 0)])]));
    }

    #[test]
    fn sticky_unsubscribed_topic_is_revoked_before_reassignment() {
        let parts = counts(&[("t", 2), ("u", 2)]);
        let members = [
            // a dropped u from its subscription but still holds u-0 and u-1.
            owning(
                member("a", &["t"]),
                1,
                &[tp("t", 0), tp("t", 1), tp("u", 0), tp("u", 1)],
            ),
            owning(member("b", &["t", "u"]), 1, &[]),
        ];
        let (target, got) = sticky_run(&members, &parts);
        assert_eq!(target["a"], vec![tp("t", 0), tp("t", 1)]);
        assert_eq!(target["b"], vec![tp("u", 0), tp("u", 1)]);
        assert_eq!(got, expect(&[("a", &[("t", 0), ("t", 1)]), ("b", &[])]));
    }

    // ---- cooperative sticky: properties over random groups ----

    /// SplitMix64: small, deterministic, good enough to explore configurations.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }
    }

    struct Scenario {
        members: Vec<Member>,
        partitions: BTreeMap<String, i32>,
        same_subscriptions: bool,
    }

    fn random_scenario(rng: &mut Rng) -> Scenario {
        let topic_count = 1 + rng.below(4);
        let topics: Vec<String> = (0..topic_count).map(|t| format!("t{t}")).collect();
        let mut partitions = BTreeMap::new();
        for t in &topics {
            // Now and then a topic is missing from metadata, or has no partitions.
            match rng.below(12) {
                0 => {}
                1 => {
                    partitions.insert(t.clone(), 0);
                }
                _ => {
                    partitions.insert(t.clone(), 1 + rng.below(12) as i32);
                }
            }
        }
        let same_subscriptions = rng.chance(50);
        let member_count = 1 + rng.below(7);
        let generation = 10;
        let mut members: Vec<Member> = (0..member_count)
            .map(|i| {
                let subscribed: Vec<&str> = if same_subscriptions {
                    topics.iter().map(String::as_str).collect()
                } else {
                    let picked: Vec<&str> = topics
                        .iter()
                        .map(String::as_str)
                        .filter(|_| rng.chance(60))
                        .collect();
                    if picked.is_empty() {
                        vec![topics[rng.below(topics.len())].as_str()]
                    } else {
                        picked
                    }
                };
                let mut m = member(&format!("m{i:02}"), &subscribed);
                if rng.chance(20) {
                    m.group_instance_id = Some(format!("i{}", rng.below(100)));
                }
                m.subscription.generation_id = match rng.below(10) {
                    0 => -1,                                   // new member
                    1 => generation - 1 - rng.below(3) as i32, // stale
                    _ => generation,
                };
                m
            })
            .collect();
        // A previous assignment: each partition (of the topics, plus a few that no longer
        // exist) owned by some member, by nobody, or (rarely) by two.
        for t in &topics {
            let count = 2 + partitions.get(t).copied().unwrap_or(3).max(0) as usize;
            for p in 0..count as i32 {
                if rng.chance(25) {
                    continue;
                }
                let owner = rng.below(member_count);
                if members[owner].subscription.generation_id >= 0 {
                    members[owner].subscription.owned_partitions.push(tp(t, p));
                }
                if rng.chance(5) {
                    let other = rng.below(member_count);
                    if members[other].subscription.generation_id >= 0 {
                        members[other].subscription.owned_partitions.push(tp(t, p));
                    }
                }
            }
        }
        // Lose the ordering the leader gets members in.
        for i in (1..members.len()).rev() {
            let j = rng.below(i + 1);
            members.swap(i, j);
        }
        Scenario {
            members,
            partitions,
            same_subscriptions,
        }
    }

    /// What a member may be given: partitions of its subscribed, existing topics.
    fn potential(m: &Member, partitions: &BTreeMap<String, i32>) -> BTreeSet<TopicPartition> {
        m.subscription
            .topics
            .iter()
            .filter_map(|t| partitions.get(t).map(|&c| (t, c)))
            .flat_map(|(t, c)| (0..c.max(0)).map(move |p| tp(t, p)))
            .collect()
    }

    /// Trusted owned partitions per member, worked out independently of the assignor.
    fn trusted_owned(
        members: &[Member],
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        let max_gen = members
            .iter()
            .map(|m| m.subscription.generation_id.max(-1))
            .max()
            .unwrap_or(-1);
        let mut claims: BTreeMap<TopicPartition, Vec<&str>> = BTreeMap::new();
        for m in members {
            if m.subscription.generation_id.max(-1) != max_gen {
                continue;
            }
            let potential = potential(m, partitions);
            let mine: BTreeSet<&TopicPartition> = m
                .subscription
                .owned_partitions
                .iter()
                .filter(|p| potential.contains(p))
                .collect();
            for p in mine {
                claims.entry(p.clone()).or_default().push(&m.member_id);
            }
        }
        let mut out: BTreeMap<String, BTreeSet<TopicPartition>> = members
            .iter()
            .map(|m| (m.member_id.clone(), BTreeSet::new()))
            .collect();
        for (p, who) in claims {
            if who.len() == 1 {
                out.get_mut(who[0]).unwrap().insert(p);
            }
        }
        out
    }

    /// Checks every invariant of one cooperative-sticky run, returning the number of
    /// partitions withheld.
    fn check_run(s: &Scenario, seed: u64) -> usize {
        let (target, got) = sticky_run(&s.members, &s.partitions);
        let by_id: BTreeMap<&str, &Member> = s
            .members
            .iter()
            .map(|m| (m.member_id.as_str(), m))
            .collect();
        let ctx = |what: &str| format!("seed {seed}: {what}");

        // An entry for every member, sorted partitions.
        assert_eq!(
            got.keys().map(String::as_str).collect::<Vec<_>>(),
            by_id.keys().copied().collect::<Vec<_>>(),
            "{}",
            ctx("members")
        );
        for ps in got.values() {
            assert!(ps.windows(2).all(|w| w[0] < w[1]), "{}", ctx("sorted"));
        }

        // Target: every potential partition exactly once, each to a subscriber.
        let universe: BTreeSet<TopicPartition> = s
            .members
            .iter()
            .flat_map(|m| potential(m, &s.partitions))
            .collect();
        let mut seen = BTreeSet::new();
        for (id, ps) in &target {
            let potential = potential(by_id[id.as_str()], &s.partitions);
            for p in ps {
                assert!(
                    potential.contains(p),
                    "{}",
                    ctx("assigned to a non-subscriber")
                );
                assert!(seen.insert(p.clone()), "{}", ctx("assigned twice"));
            }
        }
        assert_eq!(seen, universe, "{}", ctx("target incomplete"));

        // Final = target minus withheld partitions.
        for (id, ps) in &got {
            assert!(
                ps.iter().all(|p| target[id].contains(p)),
                "{}",
                ctx("final not in target")
            );
        }

        // Balance: no partition could go to a subscriber holding two fewer.
        for (id, ps) in &target {
            for p in ps {
                for (other, ops) in &target {
                    if other != id && potential(by_id[other.as_str()], &s.partitions).contains(p) {
                        assert!(
                            ops.len() + 2 > ps.len(),
                            "{}",
                            ctx(&format!(
                                "unbalanced: {id} {} vs {other} {}",
                                ps.len(),
                                ops.len()
                            ))
                        );
                    }
                }
            }
        }
        let trusted = trusted_owned(&s.members, &s.partitions);
        if s.same_subscriptions || universe.is_empty() {
            let sizes: Vec<usize> = target.values().map(Vec::len).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "{}", ctx("same subscriptions, unbalanced"));
            // Stickiness: each keeps min(owned, floor quota); the total kept is optimal.
            let quota = universe.len() / s.members.len();
            let extra = universe.len() % s.members.len();
            let mut kept_total = 0;
            for (id, ps) in &target {
                let owned = &trusted[id];
                let kept = ps.iter().filter(|p| owned.contains(*p)).count();
                assert!(
                    kept >= owned.len().min(quota),
                    "{}",
                    ctx(&format!("{id} not sticky"))
                );
                kept_total += kept;
            }
            let over_quota = trusted.values().filter(|o| o.len() > quota).count();
            let best =
                trusted.values().map(|o| o.len().min(quota)).sum::<usize>() + over_quota.min(extra);
            assert_eq!(kept_total, best, "{}", ctx("not maximally sticky"));
        } else {
            // Members with the same subscription differ by at most one.
            for (a, pa) in &target {
                for (b, pb) in &target {
                    let (ma, mb) = (by_id[a.as_str()], by_id[b.as_str()]);
                    let sa: BTreeSet<_> = ma.subscription.topics.iter().collect();
                    let sb: BTreeSet<_> = mb.subscription.topics.iter().collect();
                    if sa == sb {
                        assert!(
                            pa.len() <= pb.len() + 1,
                            "{}",
                            ctx("same subscription, unbalanced")
                        );
                    }
                }
            }
        }
        // Cooperation: nothing moves directly between two members.
        for (x, ps) in &got {
            let mx = by_id[x.as_str()];
            for p in ps {
                for my in s.members.iter().filter(|m| &m.member_id != x) {
                    if my.subscription.owned_partitions.contains(p) {
                        assert!(
                            mx.subscription.owned_partitions.contains(p)
                                && mx.subscription.generation_id >= my.subscription.generation_id,
                            "{}",
                            ctx(&format!("{p:?} moves from {} to {x}", my.member_id))
                        );
                    }
                }
            }
        }
        // Every withheld partition is held by someone who must revoke it (and so rejoins).
        let mut withheld = 0;
        for (x, ps) in &target {
            for p in ps.iter().filter(|p| !got[x].contains(p)) {
                withheld += 1;
                assert!(
                    s.members.iter().any(|m| &m.member_id != x
                        && m.subscription.owned_partitions.contains(p)
                        && !got[&m.member_id].contains(p)),
                    "{}",
                    ctx("withheld without a revoker")
                );
            }
        }
        withheld
    }

    #[test]
    fn sticky_properties_hold_for_random_groups() {
        let mut withheld_runs = 0;
        for seed in 0..3000u64 {
            let mut rng = Rng(seed);
            let scenario = random_scenario(&mut rng);
            if check_run(&scenario, seed) > 0 {
                withheld_runs += 1;
            }
        }
        // The generator does produce revocations.
        assert!(
            withheld_runs > 300,
            "only {withheld_runs} runs withheld anything"
        );
    }

    #[test]
    fn sticky_converges_once_revocations_are_done() {
        for seed in 0..2000u64 {
            let mut rng = Rng(seed ^ 0x5eed);
            let mut scenario = random_scenario(&mut rng);
            // Rebalance until nothing is withheld; every member rejoins with what it got,
            // at the next generation, as the cooperative protocol has it.
            let mut generation = 11;
            let mut rounds = 0;
            loop {
                rounds += 1;
                let withheld = check_run(&scenario, seed);
                let got = assign(
                    AssignmentStrategy::CooperativeSticky,
                    &scenario.members,
                    &scenario.partitions,
                );
                if withheld == 0 {
                    break;
                }
                assert!(rounds < 4, "seed {seed}: not settled after {rounds} rounds");
                for m in &mut scenario.members {
                    m.subscription.owned_partitions = got[&m.member_id].clone();
                    m.subscription.generation_id = generation;
                }
                generation += 1;
            }
            if scenario.same_subscriptions {
                assert!(rounds <= 2, "seed {seed}: {rounds} rounds");
            }
            // Settled: another rebalance changes nothing.
            let got = assign(
                AssignmentStrategy::CooperativeSticky,
                &scenario.members,
                &scenario.partitions,
            );
            for m in &mut scenario.members {
                m.subscription.owned_partitions = got[&m.member_id].clone();
                m.subscription.generation_id = generation;
            }
            let again = assign(
                AssignmentStrategy::CooperativeSticky,
                &scenario.members,
                &scenario.partitions,
            );
            assert_eq!(again, got, "seed {seed}: not stable");
        }
    }

    #[test]
    fn sticky_handles_a_large_group_quickly() {
        let topics: Vec<String> = (0..20).map(|t| format!("topic-{t}")).collect();
        let parts: BTreeMap<String, i32> = topics.iter().map(|t| (t.clone(), 50)).collect();
        // Differing subscriptions, one member owning everything: the general path with
        // many moves.
        let mut members: Vec<Member> = (0..60)
            .map(|i| {
                let subscribed: Vec<&str> = topics
                    .iter()
                    .enumerate()
                    .filter(|(t, _)| (t + i) % 3 != 0)
                    .map(|(_, t)| t.as_str())
                    .collect();
                owning(member(&format!("m{i:02}"), &subscribed), 1, &[])
            })
            .collect();
        members[0].subscription.topics = topics.clone();
        members[0].subscription.owned_partitions = parts
            .iter()
            .flat_map(|(t, &c)| (0..c).map(move |p| tp(t, p)))
            .collect();
        let start = std::time::Instant::now();
        let got = assign(AssignmentStrategy::CooperativeSticky, &members, &parts);
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
        let total: usize = got.values().map(Vec::len).sum();
        // Only m00's partitions it keeps are assigned now; the rest are withheld.
        assert_eq!(total, got["m00"].len());
        assert!(
            (15..=18).contains(&got["m00"].len()),
            "{}",
            got["m00"].len()
        );
    }
}
