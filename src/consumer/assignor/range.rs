//! The `range` assignor: Java's `RangeAssignor`, exactly (without rack awareness).

use super::{Group, TopicPartition};

/// Java's `RangeAssignor`: per topic, the subscribed members in Java order each get a
/// contiguous range; the first `count % members` get one extra.
pub(super) fn range(g: &Group) -> Vec<Vec<TopicPartition>> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{counts, expect, member, static_member, tp};
    use super::super::{assign, AssignmentStrategy};

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
}
