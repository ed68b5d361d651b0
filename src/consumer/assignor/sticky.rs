//! The `cooperative-sticky` assignor: balanced, sticky and cooperative, with Java's
//! `CooperativeStickyAssignor`'s guarantees (see [`assign`](super::assign)), and how a
//! member's generation is read from old sticky-assignor user data.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Group, Subscription, TopicPartition};

/// The cooperative-sticky computation, over partition indices into `universe`.
pub(super) struct StickyPlan {
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
    pub(super) fn cooperative(&self) -> Vec<Vec<usize>> {
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

    pub(super) fn to_partitions(&self, per_member: &[Vec<usize>]) -> Vec<Vec<TopicPartition>> {
        per_member
            .iter()
            .map(|ps| ps.iter().map(|&p| self.universe[p].clone()).collect())
            .collect()
    }
}

/// Runs the cooperative-sticky assignor; see [`assign`](super::assign) for what it guarantees.
pub(super) fn sticky(g: &Group) -> StickyPlan {
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
/// field (version 2+), else what the user data says (see [`assign`](super::assign)).
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
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::super::tests::{counts, expect, member, owning, tp};
    use super::super::{assign, AssignmentStrategy, Member};
    use super::*;

    // ---- known answers ----

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

    // ---- properties over random groups ----

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
