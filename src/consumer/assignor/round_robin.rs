//! The `roundrobin` assignor: Java's `RoundRobinAssignor`, exactly (without rack awareness).

use super::{java_str_order, Group, TopicPartition};

/// Java's `RoundRobinAssignor`: all partitions, topics in Java string order, dealt in turn
/// to the members in Java order, skipping members not subscribed to the partition's topic.
pub(super) fn round_robin(g: &Group) -> Vec<Vec<TopicPartition>> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{counts, expect, member, static_member, tp};
    use super::super::{assign, AssignmentStrategy};

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
}
