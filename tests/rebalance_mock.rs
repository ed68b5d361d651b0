//! Rebalances of a classic group on the in-process cluster (paperboy-mock), eager (range)
//! and cooperative-sticky: a second member joining splits the partitions, a member dropped
//! without LeaveGroup is expired after the session timeout and its uncommitted records
//! are read again, exactly those, a member closing cleanly makes the group rebalance at
//! once. Every wait is bounded.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use paperboy::consumer::{
    AssignmentStrategy, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, TopicPartition,
};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy_mock::{ApiKey, Cluster};

const DEADLINE: Duration = Duration::from_secs(20);
const GROUP: &str = "g";

fn config(cluster: &Cluster, strategy: AssignmentStrategy, session_ms: u64) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(&cluster.bootstrap())
        .with_group_id(GROUP)
        .with_offset_reset(OffsetReset::Earliest)
        .with_auto_commit(false)
        .with_assignment_strategy(&[strategy]);
    c.set("fetch.max.wait.ms", "50").unwrap();
    c.set("heartbeat.interval.ms", "100").unwrap();
    c.set("session.timeout.ms", &session_ms.to_string())
        .unwrap();
    c.set("retry.backoff.ms", "10").unwrap();
    c
}

/// Writes `per_partition` records to each of the 4 partitions of `t`: `p{p}-{i}`.
async fn produce(cluster: &Cluster, per_partition: usize) {
    let mut cfg = ProducerConfig::new(&cluster.bootstrap()).with_linger(Duration::from_millis(1));
    cfg.set("retry.backoff.ms", "5").unwrap();
    let p = Producer::new(cfg).await.unwrap();
    let mut pending = Vec::new();
    for part in 0..4 {
        for i in 0..per_partition {
            let r = ProducerRecord::new("t")
                .with_partition(part)
                .with_value(format!("p{part}-{i}"));
            pending.push(p.enqueue(r).await.unwrap());
        }
    }
    for d in pending {
        tokio::time::timeout(DEADLINE, d).await.unwrap().unwrap();
    }
    p.close().await;
}

fn parts(c: &Consumer) -> BTreeSet<i32> {
    c.assignment().iter().map(|tp| tp.partition).collect()
}

/// Polls every consumer concurrently (their rebalances run inside recv) until `done`
/// holds of the records gathered per consumer, or fails at the deadline.
async fn drive(
    consumers: &[&Consumer],
    mut done: impl FnMut(&[Vec<ConsumerRecord>]) -> bool,
) -> Vec<Vec<ConsumerRecord>> {
    let deadline = Instant::now() + DEADLINE;
    let mut got: Vec<Vec<ConsumerRecord>> = consumers.iter().map(|_| Vec::new()).collect();
    while !done(&got) {
        assert!(Instant::now() < deadline, "not done in time");
        let wait = Duration::from_millis(50);
        match consumers {
            [a] => got[0].extend(a.recv_batch(100, wait).await.unwrap()),
            [a, b] => {
                let (ra, rb) = tokio::join!(a.recv_batch(100, wait), b.recv_batch(100, wait));
                got[0].extend(ra.unwrap());
                got[1].extend(rb.unwrap());
            }
            _ => unreachable!("one or two consumers"),
        }
    }
    got
}

/// A `done` for `drive` that polls `n` times.
fn rounds(n: usize) -> impl FnMut(&[Vec<ConsumerRecord>]) -> bool {
    let mut calls = 0;
    move |_| {
        calls += 1;
        calls > n
    }
}

fn key(r: &ConsumerRecord) -> (i32, i64) {
    assert_eq!(
        r.value.as_deref(),
        Some(format!("p{}-{}", r.partition, r.offset).as_bytes())
    );
    (r.partition, r.offset)
}

fn all_keys(per_partition: i64) -> BTreeSet<(i32, i64)> {
    (0..4)
        .flat_map(|p| (0..per_partition).map(move |o| (p, o)))
        .collect()
}

/// A owns the 4 partitions; B joins; they settle on disjoint sets covering all 4 in a
/// later generation with both members; 40 records produced afterwards are read once
/// across A and B (each by the owner of its partition) and the commits of both land.
async fn second_member_splits_the_partitions(strategy: AssignmentStrategy) {
    let cluster = Cluster::builder().topic("t", 4).build().await.unwrap();
    let a = Consumer::new(config(&cluster, strategy, 10_000))
        .await
        .unwrap();
    a.subscribe(&["t"]).unwrap();
    drive(&[&a], |_| parts(&a).len() == 4).await;
    let (gen1, members) = cluster.group_members(GROUP).unwrap();
    assert_eq!(members.len(), 1);

    let b = Consumer::new(config(&cluster, strategy, 10_000))
        .await
        .unwrap();
    b.subscribe(&["t"]).unwrap();
    drive(&[&a, &b], |_| {
        let (pa, pb) = (parts(&a), parts(&b));
        !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 4
    })
    .await;
    let (pa, pb) = (parts(&a), parts(&b));
    assert!(pa.is_disjoint(&pb), "{strategy:?}: {pa:?} {pb:?}");
    assert_eq!(pa.union(&pb).count(), 4, "{strategy:?}");
    assert_eq!((pa.len(), pb.len()), (2, 2), "{strategy:?}: balanced");
    let (gen2, members) = cluster.group_members(GROUP).unwrap();
    assert_eq!(members.len(), 2, "{strategy:?}");
    assert!(
        gen2 > gen1,
        "{strategy:?}: a new generation ({gen1} -> {gen2})"
    );

    produce(&cluster, 10).await;
    let got = drive(&[&a, &b], |g| g[0].len() + g[1].len() >= 40).await;
    let ka: Vec<_> = got[0].iter().map(key).collect();
    let kb: Vec<_> = got[1].iter().map(key).collect();
    assert!(ka.iter().all(|(p, _)| pa.contains(p)), "{strategy:?}");
    assert!(kb.iter().all(|(p, _)| pb.contains(p)), "{strategy:?}");
    let union: BTreeSet<_> = ka.iter().chain(&kb).copied().collect();
    assert_eq!(union.len(), ka.len() + kb.len(), "{strategy:?}: read twice");
    assert_eq!(union, all_keys(10), "{strategy:?}");
    a.commit_records(&got[0]).await.unwrap();
    b.commit_records(&got[1]).await.unwrap();
    for p in 0..4 {
        assert_eq!(
            cluster.committed(GROUP, "t", p),
            Some(10),
            "{strategy:?} p{p}"
        );
    }
    let more = drive(&[&a, &b], rounds(5)).await;
    assert!(more.iter().all(Vec::is_empty));
    assert_eq!(
        cluster.group_members(GROUP).unwrap().0,
        gen2,
        "{strategy:?}: no further rebalance"
    );
    a.close().await;
    b.close().await;
    cluster.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_member_splits_the_partitions_eager() {
    second_member_splits_the_partitions(AssignmentStrategy::Range).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_member_splits_the_partitions_cooperative() {
    second_member_splits_the_partitions(AssignmentStrategy::CooperativeSticky).await;
}

/// A and B share the partitions and read 10 records of each; B commits offset 4 on its
/// partitions (not all it read), A commits everything. B is dropped without close: no
/// LeaveGroup; the mock expires it after session.timeout.ms; A gets all 4 partitions and
/// reads again exactly offsets 4..10 of B's partitions, nothing of its own.
async fn dropped_member_expires(strategy: AssignmentStrategy) {
    const SESSION_MS: u64 = 1500;
    let cluster = Cluster::builder().topic("t", 4).build().await.unwrap();
    let a = Consumer::new(config(&cluster, strategy, SESSION_MS))
        .await
        .unwrap();
    a.subscribe(&["t"]).unwrap();
    drive(&[&a], |_| parts(&a).len() == 4).await;
    let b = Consumer::new(config(&cluster, strategy, SESSION_MS))
        .await
        .unwrap();
    b.subscribe(&["t"]).unwrap();
    drive(&[&a, &b], |_| {
        let (pa, pb) = (parts(&a), parts(&b));
        !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 4
    })
    .await;
    let (pa, pb) = (parts(&a), parts(&b));
    produce(&cluster, 10).await;
    let got = drive(&[&a, &b], |g| g[0].len() + g[1].len() >= 40).await;
    assert_eq!(got[1].len(), 10 * pb.len(), "{strategy:?}");
    a.commit_records(&got[0]).await.unwrap();
    let b_commits: Vec<(TopicPartition, i64)> = pb
        .iter()
        .map(|&p| (TopicPartition::new("t", p), 4))
        .collect();
    b.commit(&b_commits).await.unwrap();
    for p in 0..4 {
        let want = if pb.contains(&p) { 4 } else { 10 };
        assert_eq!(
            cluster.committed(GROUP, "t", p),
            Some(want),
            "{strategy:?} p{p}"
        );
    }
    let (gen_before, _) = cluster.group_members(GROUP).unwrap();
    cluster.clear_requests();
    let dropped = Instant::now();
    drop(b);
    let again = drive(&[&a], |g| {
        parts(&a).len() == 4 && g[0].len() >= 6 * pb.len()
    })
    .await;
    let waited = dropped.elapsed();
    assert!(
        !cluster
            .requests()
            .iter()
            .any(|r| r.api == ApiKey::LeaveGroup),
        "{strategy:?}: a dropped consumer sends no LeaveGroup"
    );
    assert!(
        waited >= Duration::from_millis(SESSION_MS - 200),
        "{strategy:?}: the group rebalanced after {waited:?}, before the session expired"
    );
    let (gen_after, members) = cluster.group_members(GROUP).unwrap();
    assert_eq!(members.len(), 1, "{strategy:?}");
    assert!(gen_after > gen_before, "{strategy:?}");
    // A little more polling: nothing else comes.
    let more = drive(&[&a], rounds(5)).await;
    let reread: BTreeSet<(i32, i64)> = again[0].iter().chain(&more[0]).map(key).collect();
    assert_eq!(
        reread.len(),
        again[0].len() + more[0].len(),
        "{strategy:?}: no record twice"
    );
    let expected: BTreeSet<(i32, i64)> = pb
        .iter()
        .flat_map(|&p| (4..10).map(move |o| (p, o)))
        .collect();
    assert_eq!(
        reread, expected,
        "{strategy:?}: exactly B's uncommitted records, pa={pa:?}"
    );
    a.close().await;
    cluster.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_member_expires_and_its_uncommitted_records_are_read_again_eager() {
    dropped_member_expires(AssignmentStrategy::Range).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_member_expires_and_its_uncommitted_records_are_read_again_cooperative() {
    dropped_member_expires(AssignmentStrategy::CooperativeSticky).await;
}

/// B closes cleanly: it sends LeaveGroup, and A owns all 4 partitions in a new
/// generation long before the (30 s) session timeout could have expired B.
async fn clean_close_rebalances_at_once(strategy: AssignmentStrategy) {
    let cluster = Cluster::builder().topic("t", 4).build().await.unwrap();
    let a = Consumer::new(config(&cluster, strategy, 30_000))
        .await
        .unwrap();
    a.subscribe(&["t"]).unwrap();
    drive(&[&a], |_| parts(&a).len() == 4).await;
    let b = Consumer::new(config(&cluster, strategy, 30_000))
        .await
        .unwrap();
    b.subscribe(&["t"]).unwrap();
    drive(&[&a, &b], |_| {
        let (pa, pb) = (parts(&a), parts(&b));
        !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 4
    })
    .await;
    let (gen_before, _) = cluster.group_members(GROUP).unwrap();
    cluster.clear_requests();
    let started = Instant::now();
    tokio::time::timeout(DEADLINE, b.close()).await.unwrap();
    drive(&[&a], |_| parts(&a).len() == 4).await;
    let took = started.elapsed();
    let leaves = cluster
        .requests()
        .iter()
        .filter(|r| r.api == ApiKey::LeaveGroup)
        .count();
    assert_eq!(leaves, 1, "{strategy:?}: one LeaveGroup");
    let (gen_after, members) = cluster.group_members(GROUP).unwrap();
    assert_eq!(members.len(), 1, "{strategy:?}");
    assert!(gen_after > gen_before, "{strategy:?}");
    assert!(took < Duration::from_secs(5), "{strategy:?}: took {took:?}");
    produce(&cluster, 5).await;
    let got = drive(&[&a], |g| g[0].len() >= 20).await;
    let keys: BTreeSet<_> = got[0].iter().map(key).collect();
    assert_eq!(keys, all_keys(5), "{strategy:?}");
    assert_eq!(keys.len(), got[0].len());
    a.close().await;
    cluster.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_close_rebalances_at_once_eager() {
    clean_close_rebalances_at_once(AssignmentStrategy::Range).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_close_rebalances_at_once_cooperative() {
    clean_close_rebalances_at_once(AssignmentStrategy::CooperativeSticky).await;
}
