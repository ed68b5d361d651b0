//! The consumer group protocol of KIP-848 (`group.protocol=consumer`) against a real
//! Kafka 4.x broker: members splitting a topic, sharing a group with Java consumers,
//! joining and leaving mid-stream, one SIGKILLed mid-batch, a regular-expression
//! subscription picking up a new topic, and a member fenced after its heartbeats stopped.
//!
//! Each group gets its own `consumer.heartbeat.interval.ms` (250 ms) and
//! `consumer.session.timeout.ms` (see `common::kip848_group`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paperboy::consumer::{
    BoxFuture, Consumer, ConsumerConfig, GroupProtocol, RebalanceListener, TopicPartition,
};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::{Client, Error};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A consumer-protocol member of `group`; `auto_commit` commits consumed positions on
/// revocation and close (and every 5 s).
fn config(group: &str, auto_commit: bool) -> ConsumerConfig {
    let auto_commit = auto_commit.to_string();
    ConsumerConfig::from_properties([
        ("bootstrap.servers", common::bootstrap().as_str()),
        ("group.id", group),
        ("group.protocol", "consumer"),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", auto_commit.as_str()),
        ("fetch.max.wait.ms", "200"),
    ])
    .unwrap()
}

/// Writes records `from..to`: key `k{i}`, value `v{i}`, spread over the partitions by key.
async fn produce(topic: &str, from: usize, to: usize) {
    let producer = Producer::new(
        ProducerConfig::new(&common::bootstrap()).with_linger(Duration::from_millis(5)),
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    for i in from..to {
        let r = ProducerRecord::new(topic)
            .with_key(format!("k{i}"))
            .with_value(format!("v{i}"));
        pending.push(producer.enqueue(r).await.unwrap());
    }
    for d in pending {
        d.await.unwrap();
    }
    producer.close().await;
}

/// The record index of key `k{i}`, checking the value is `v{i}`.
fn index(key: Option<&[u8]>, value: Option<&[u8]>) -> usize {
    let key = std::str::from_utf8(key.expect("a key")).unwrap();
    let i: usize = key[1..].parse().unwrap();
    let value = std::str::from_utf8(value.expect("a value")).unwrap();
    assert_eq!(value, format!("v{i}"), "the value of {key}");
    i
}

async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a member was handed: (record index, partition, offset).
type Seen = Arc<Mutex<Vec<(usize, i32, i64)>>>;

/// A member's own polling loop, as an application runs it.
struct Member {
    consumer: Consumer,
    seen: Seen,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Member {
    /// Subscribes a new member of `group` to `topic` and polls; `commit`: commit each
    /// batch after recording it (else auto-commit).
    async fn start(group: &str, topic: &str, commit: bool) -> Member {
        Member::start_with(config(group, !commit), topic, commit).await
    }

    async fn start_with(config: ConsumerConfig, topic: &str, commit: bool) -> Member {
        let consumer = Consumer::new(config).await.unwrap();
        consumer.subscribe(&[topic]).unwrap();
        Member::poll(consumer, commit)
    }

    fn poll(consumer: Consumer, commit: bool) -> Member {
        let seen: Seen = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, seen2, stop2) = (consumer.clone(), seen.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !stop2.load(Ordering::SeqCst) {
                let batch = c
                    .recv_batch(50, Duration::from_millis(100))
                    .await
                    .expect("recv_batch");
                seen2.lock().unwrap().extend(batch.iter().map(|r| {
                    (
                        index(r.key.as_deref(), r.value.as_deref()),
                        r.partition,
                        r.offset,
                    )
                }));
                if commit && !batch.is_empty() {
                    // Refused when a partition was revoked meanwhile: then its new owner
                    // reads from the last commit (at least once).
                    c.commit_records(&batch).await.ok();
                }
            }
        });
        Member {
            consumer,
            seen,
            stop,
            task,
        }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn seen(&self) -> Vec<(usize, i32, i64)> {
        self.seen.lock().unwrap().clone()
    }

    fn partitions(&self) -> BTreeSet<i32> {
        self.consumer
            .assignment()
            .iter()
            .map(|tp| tp.partition)
            .collect()
    }

    /// Stops polling and closes (commits, leaves); returns what it was handed.
    async fn finish(self) -> Vec<(usize, i32, i64)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        self.consumer.close().await;
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

/// Every index in `0..n` exactly once in `seen`.
fn assert_once(seen: &[(usize, i32, i64)], n: usize) {
    let mut count = vec![0u32; n];
    for (i, _, _) in seen {
        count[*i] += 1;
    }
    let missing: Vec<usize> = (0..n).filter(|i| count[*i] == 0).collect();
    let twice: Vec<usize> = (0..n).filter(|i| count[*i] > 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{} records missing (first {:?}), {} read more than once (first {:?})",
        missing.len(),
        missing.first(),
        twice.len(),
        twice.first()
    );
}

/// The group's committed offset of each partition, and the partition's end.
async fn committed_and_ends(
    client: &Client,
    group: &str,
    topic: &str,
    partitions: i32,
) -> (Vec<Option<i64>>, Vec<Option<i64>>) {
    let c = Consumer::new(config(group, false)).await.unwrap();
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let got = c.committed(&tps).await.expect("committed");
    c.close().await;
    let mut ends = Vec::new();
    for p in 0..partitions {
        ends.push(Some(
            client
                .list_offset(topic, p, paperboy::OffsetSpec::Latest)
                .await
                .unwrap(),
        ));
    }
    (
        tps.iter()
            .map(|tp| got.get(tp).copied().flatten())
            .collect(),
        ends,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_the_partitions_and_read_every_record_once() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "kip848-split", 6).await;
    let group = common::kip848_group(&client, "kip848-split", 10_000).await;
    let members = vec![
        Member::start(&group, &topic, false).await,
        Member::start(&group, &topic, false).await,
        Member::start(&group, &topic, false).await,
    ];
    wait_for("the 3 members to split the 6 partitions 2/2/2", 30, || {
        let parts: Vec<BTreeSet<i32>> = members.iter().map(Member::partitions).collect();
        let all: BTreeSet<i32> = parts.iter().flatten().copied().collect();
        parts.iter().all(|p| p.len() == 2) && all.len() == 6
    })
    .await;
    let owned: Vec<BTreeSet<i32>> = members.iter().map(Member::partitions).collect();
    produce(&topic, 0, 600).await;
    wait_for("600 records read", 30, || {
        members.iter().map(Member::count).sum::<usize>() >= 600
    })
    .await;
    let mut all = Vec::new();
    for (m, owned) in members.into_iter().zip(owned) {
        let seen = m.finish().await;
        assert!(!seen.is_empty(), "every member read some");
        for (i, p, _) in &seen {
            assert!(
                owned.contains(p),
                "record {i} of partition {p} read by its owner"
            );
        }
        all.extend(seen);
    }
    assert_once(&all, 600);
    let (committed, ends) = committed_and_ends(&client, &group, &topic, 6).await;
    assert_eq!(committed, ends, "the members committed everything on close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_mid_stream_and_nothing_is_lost() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "kip848-churn", 4).await;
    let group = common::kip848_group(&client, "kip848-churn", 10_000).await;
    produce(&topic, 0, 400).await;
    // The broker's range assignor this time (the others use its default, uniform).
    let ranged = || {
        let mut c = config(&group, true);
        c.set("group.remote.assignor", "range").unwrap();
        c
    };
    let a = Member::start_with(ranged(), &topic, false).await;
    wait_for("A reading", 30, || a.count() >= 1).await;
    let b = Member::start_with(ranged(), &topic, false).await;
    produce(&topic, 400, 800).await;
    wait_for("B given partitions", 30, || !b.partitions().is_empty()).await;
    let c = Member::start_with(ranged(), &topic, false).await;
    wait_for("C given partitions", 30, || !c.partitions().is_empty()).await;
    // A leaves: its partitions move on, from what it committed on the way out.
    let a_seen = a.finish().await;
    wait_for("B and C own all 4 partitions", 30, || {
        b.partitions().len() + c.partitions().len() == 4
    })
    .await;
    produce(&topic, 800, 1000).await;
    let b_seen = b.finish().await;
    wait_for("C owns all 4 partitions", 30, || c.partitions().len() == 4).await;
    produce(&topic, 1000, 1200).await;
    wait_for("every record read", 30, || {
        a_seen.len() + b_seen.len() + c.count() >= 1200
    })
    .await;
    let c_seen = c.finish().await;
    assert!(!a_seen.is_empty() && !b_seen.is_empty() && !c_seen.is_empty());
    let all: Vec<_> = a_seen.into_iter().chain(b_seen).chain(c_seen).collect();
    // Auto-commit on each revocation: the next owner starts where the last one stopped.
    assert_once(&all, 1200);
    let (committed, ends) = committed_and_ends(&client, &group, &topic, 4).await;
    assert_eq!(committed, ends);
}

/// Runs a Java console consumer in `group` (group.protocol=consumer); its records come
/// in as (index, partition, offset). Killed when dropped.
struct JavaConsumer {
    child: std::process::Child,
    seen: Seen,
}

impl JavaConsumer {
    fn start(group: &str, topic: &str) -> JavaConsumer {
        let mut child = Command::new(repo().join("scripts/kafka"))
            .args([
                "console-consumer",
                "--bootstrap-server",
                &common::bootstrap(),
                "--topic",
                topic,
                "--group",
                group,
                "--consumer-property",
                "group.protocol=consumer",
                "--consumer-property",
                "auto.offset.reset=earliest",
                "--formatter-property",
                "print.partition=true",
                "--formatter-property",
                "print.offset=true",
                "--formatter-property",
                "print.key=true",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the Java console consumer runs (scripts/kafka console-consumer)");
        let out = child.stdout.take().unwrap();
        let seen: Seen = Arc::default();
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                // Partition:P\tOffset:O\tkI\tvI
                let fields: Vec<&str> = line.split('\t').collect();
                let field = |prefix: &str| {
                    fields
                        .iter()
                        .find_map(|f| f.strip_prefix(prefix))
                        .and_then(|v| v.parse::<i64>().ok())
                };
                let (Some(p), Some(o)) = (field("Partition:"), field("Offset:")) else {
                    continue;
                };
                let n = fields.len();
                let i = index(
                    Some(fields[n - 2].as_bytes()),
                    Some(fields[n - 1].as_bytes()),
                );
                seen2.lock().unwrap().push((i, p as i32, o));
            }
        });
        JavaConsumer { child, seen }
    }
}

impl Drop for JavaConsumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paperboy_and_java_members_share_a_group_and_read_every_record_once() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "kip848-java", 4).await;
    let group = common::kip848_group(&client, "kip848-java", 10_000).await;
    let paperboy = Member::start(&group, &topic, true).await;
    let java = JavaConsumer::start(&group, &topic);
    // Paperboy first owns all 4; with Java in the group the broker's uniform assignor
    // gives each 2.
    wait_for("Java to take 2 of the 4 partitions", 60, || {
        paperboy.partitions().len() == 2
    })
    .await;
    let mine = paperboy.partitions();
    produce(&topic, 0, 400).await;
    wait_for("400 records read by Paperboy and Java together", 30, || {
        paperboy.count() + java.seen.lock().unwrap().len() >= 400
    })
    .await;
    let java_seen = java.seen.lock().unwrap().clone();
    drop(java);
    let ours = paperboy.finish().await;
    assert!(!ours.is_empty() && !java_seen.is_empty(), "both read some");
    for (i, p, _) in &ours {
        assert!(
            mine.contains(p),
            "Paperboy read {i} of its own partition {p}"
        );
    }
    for (i, p, _) in &java_seen {
        assert!(!mine.contains(p), "Java read {i} of its own partition {p}");
    }
    let all: Vec<_> = ours.into_iter().chain(java_seen).collect();
    assert_once(&all, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_subscription_picks_up_a_topic_created_after_subscribing() {
    let client = common::client().await;
    let prefix = common::unique_topic("kip848-re");
    let first = format!("{prefix}-a");
    client
        .create_topics(&[paperboy::NewTopic::new(&first, 2, 1)])
        .await
        .unwrap();
    let group = common::kip848_group(&client, "kip848-re", 10_000).await;
    let consumer = Consumer::new(config(&group, true)).await.unwrap();
    // RE2/J, evaluated by the broker. (Dots in the prefix match themselves too.)
    consumer
        .subscribe_pattern(&format!("{prefix}-[a-z]"))
        .unwrap();
    let member = Member::poll(consumer, false);
    produce(&first, 0, 50).await;
    wait_for("the first topic's 50 records", 30, || member.count() >= 50).await;
    let second = format!("{prefix}-b");
    client
        .create_topics(&[paperboy::NewTopic::new(&second, 2, 1)])
        .await
        .unwrap();
    produce(&second, 50, 100).await;
    // The broker resolves a group's patterns again at most every 10 s.
    wait_for("the new topic's 50 records", 45, || member.count() >= 100).await;
    let topics: BTreeSet<String> = member
        .consumer
        .assignment()
        .into_iter()
        .map(|tp| tp.topic)
        .collect();
    assert_eq!(topics, BTreeSet::from([first.clone(), second.clone()]));
    let seen = member.finish().await;
    assert_once(&seen, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_leaves_for_a_while_and_gets_its_partitions_back() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "kip848-static", 4).await;
    let group = common::kip848_group(&client, "kip848-static", 10_000).await;
    let instance = common::unique_topic("instance");
    let start_static = || async {
        let mut cfg = config(&group, true);
        cfg.set("group.instance.id", &instance).unwrap();
        let consumer = Consumer::new(cfg).await.unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        Member::poll(consumer, false)
    };
    let a = start_static().await;
    let b = Member::start(&group, &topic, false).await;
    wait_for("A and B to own 2 partitions each", 30, || {
        a.partitions().len() == 2 && b.partitions().len() == 2
    })
    .await;
    let (a_parts, b_parts) = (a.partitions(), b.partitions());
    produce(&topic, 0, 200).await;
    wait_for("the first 200 records read", 30, || {
        a.count() + b.count() >= 200
    })
    .await;
    // A closes: it commits and leaves with epoch -2, so the coordinator keeps A in the
    // group (for the session timeout, 10 s) with its partitions: they do not move to B.
    // (Had A left for good, epoch -1, B would own all 4 within a heartbeat, 250 ms.)
    // Something not happening is watched for a while: 1.5 s, while B reads on.
    let a_seen = a.finish().await;
    produce(&topic, 200, 400).await;
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(1500) {
        assert_eq!(b.partitions(), b_parts, "A's partitions wait for A");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let partition_of =
        |i: usize| paperboy::producer::murmur2_partition(format!("k{i}").as_bytes(), 4);
    let b_new = (200..400)
        .filter(|i| b_parts.contains(&partition_of(*i)))
        .count();
    wait_for("B to read the new records of its partitions", 30, || {
        b.seen().iter().filter(|(i, _, _)| *i >= 200).count() >= b_new
    })
    .await;
    // A comes back (a new member id, the same instance): its partitions, read from its
    // commits.
    let a2 = start_static().await;
    wait_for("every record read", 30, || {
        a_seen.len() + a2.count() + b.count() >= 400
    })
    .await;
    assert_eq!(a2.partitions(), a_parts, "A got its partitions back");
    let a2_seen = a2.finish().await;
    let b_seen = b.finish().await;
    for (i, p, _) in &b_seen {
        assert!(
            b_parts.contains(p),
            "record {i} of A's partition {p} read by B"
        );
    }
    let all: Vec<_> = a_seen.into_iter().chain(a2_seen).chain(b_seen).collect();
    assert_once(&all, 400);
}

/// Records the listener's calls: `revoked`, `lost` or `assigned`, with the partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_again_moves_the_member_to_the_new_topics() {
    let client = common::client().await;
    let first = common::new_topic(&client, "kip848-resub-a", 2).await;
    let second = common::new_topic(&client, "kip848-resub-b", 2).await;
    let group = common::kip848_group(&client, "kip848-resub", 10_000).await;
    produce(&first, 0, 50).await;
    produce(&second, 50, 100).await;
    let m = Member::start(&group, &first, false).await;
    wait_for("the first topic's 50 records", 30, || m.count() >= 50).await;
    m.consumer.subscribe(&[&second]).unwrap();
    wait_for("the second topic's 50 records", 30, || m.count() >= 100).await;
    let topics: BTreeSet<String> = m
        .consumer
        .assignment()
        .into_iter()
        .map(|tp| tp.topic)
        .collect();
    assert_eq!(topics, BTreeSet::from([second.clone()]));
    let seen = m.finish().await;
    assert_once(&seen, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_created_with_allow_auto_create_topics() {
    let client = common::client().await;
    let topic = common::unique_topic("kip848-autocreate");
    let group = common::kip848_group(&client, "kip848-autocreate", 10_000).await;
    let mut cfg = config(&group, true);
    cfg.set("allow.auto.create.topics", "true").unwrap();
    let m = Member::start_with(cfg, &topic, false).await;
    // The broker creates it (auto.create.topics.enable=true on the test broker), and
    // the coordinator assigns its partition.
    wait_for("the new topic's partition", 30, || {
        m.consumer.assignment() == [TopicPartition::new(&topic, 0)]
    })
    .await;
    produce(&topic, 0, 10).await;
    wait_for("its records", 30, || m.count() >= 10).await;
    assert_once(&m.finish().await, 10);
}

/// A listener call: `revoked`, `lost` or `assigned`, and the partitions.
type Call = (&'static str, Vec<i32>);

#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    fn note(&self, what: &'static str, ps: &[TopicPartition]) {
        let ps = ps.iter().map(|p| p.partition).collect();
        self.0.lock().unwrap().push((what, ps));
    }
    fn count(&self, what: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, _)| *w == what)
            .count()
    }
}

impl RebalanceListener for Calls {
    fn on_revoked<'a>(&'a self, _: &'a Consumer, ps: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        self.note("revoked", ps);
        Box::pin(async {})
    }
    fn on_lost<'a>(&'a self, _: &'a Consumer, ps: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        self.note("lost", ps);
        Box::pin(async {})
    }
    fn on_assigned<'a>(&'a self, _: &'a Consumer, ps: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        self.note("assigned", ps);
        Box::pin(async {})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_polling_leaves_and_rejoins_on_its_next_recv() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "kip848-poll", 4).await;
    let group = common::kip848_group(&client, "kip848-poll", 10_000).await;
    let mut cfg = config(&group, true);
    cfg.set("max.poll.interval.ms", "2000").unwrap();
    let consumer = Consumer::new(cfg).await.unwrap();
    let calls = Calls::default();
    consumer.set_rebalance_listener(calls.clone());
    consumer.subscribe(&[&topic]).unwrap();
    let a = Member::poll(consumer.clone(), false);
    let b = Member::start(&group, &topic, false).await;
    wait_for("A and B to own 2 partitions each", 30, || {
        a.partitions().len() == 2 && b.partitions().len() == 2
    })
    .await;
    produce(&topic, 0, 200).await;
    wait_for("200 records read", 30, || a.count() + b.count() >= 200).await;
    // A's application stops calling recv: past max.poll.interval.ms (2 s) A leaves the
    // group (epoch -1, as the Java client), and B gets all 4 partitions.
    a.stop.store(true, Ordering::SeqCst);
    a.task.await.unwrap();
    let a_seen = Arc::try_unwrap(a.seen).unwrap().into_inner().unwrap();
    wait_for("B to own all 4 partitions", 30, || {
        b.partitions().len() == 4
    })
    .await;
    assert_eq!(
        calls.count("lost"),
        0,
        "nothing happens to A before it polls"
    );
    // A's next recv drops the partitions it lost (on_lost, no commit) and rejoins.
    let a = Member::poll(consumer, false);
    wait_for("A back with 2 partitions", 30, || {
        a.partitions().len() == 2 && b.partitions().len() == 2
    })
    .await;
    assert_eq!(calls.count("lost"), 1, "{:?}", calls.0.lock().unwrap());
    produce(&topic, 200, 400).await;
    wait_for("every record read", 30, || {
        let got: BTreeSet<usize> = a_seen
            .iter()
            .chain(&a.seen())
            .chain(&b.seen())
            .map(|(i, _, _)| *i)
            .collect();
        got.len() == 400
    })
    .await;
    let all: Vec<_> = a_seen
        .into_iter()
        .chain(a.finish().await)
        .chain(b.finish().await)
        .collect();
    assert_at_least_once(&all, 400);
    let (committed, ends) = committed_and_ends(&client, &group, &topic, 4).await;
    assert_eq!(committed, ends);
}

// ---------------------------------------------------------------------------------------
// Child processes: a member SIGKILLed mid-batch, and one whose heartbeats stop.

/// The child side of the kill and fencing tests, run by them as a separate process: a
/// member that reads slowly (`KIP848_CHILD_WORK_MS` a record), commits after each batch
/// of up to 10, and logs `read P O I`, `committed P NEXT`, `revoked P,..`, `lost P,..`,
/// `assigned P,..`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by the kill and fencing tests"]
async fn kip848_child_member() {
    let topic = std::env::var("KIP848_CHILD_TOPIC").expect("run by a parent test");
    let group = std::env::var("KIP848_CHILD_GROUP").unwrap();
    let log = std::env::var("KIP848_CHILD_LOG").unwrap();
    let work: u64 = std::env::var("KIP848_CHILD_WORK_MS")
        .unwrap()
        .parse()
        .unwrap();

    #[derive(Clone)]
    struct Log(Arc<Mutex<std::fs::File>>);
    impl Log {
        fn write(&self, line: String) {
            let mut f = self.0.lock().unwrap();
            writeln!(f, "{line}").unwrap();
            f.flush().unwrap();
        }
    }
    fn list(ps: &[TopicPartition]) -> String {
        ps.iter()
            .map(|p| p.partition.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
    impl RebalanceListener for Log {
        fn on_revoked<'a>(
            &'a self,
            _: &'a Consumer,
            ps: &'a [TopicPartition],
        ) -> BoxFuture<'a, ()> {
            self.write(format!("revoked {}", list(ps)));
            Box::pin(async {})
        }
        fn on_lost<'a>(&'a self, _: &'a Consumer, ps: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
            self.write(format!("lost {}", list(ps)));
            Box::pin(async {})
        }
        fn on_assigned<'a>(
            &'a self,
            _: &'a Consumer,
            ps: &'a [TopicPartition],
        ) -> BoxFuture<'a, ()> {
            self.write(format!("assigned {}", list(ps)));
            Box::pin(async {})
        }
    }
    let log = Log(Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap(),
    )));
    let consumer = Consumer::new(config(&group, false)).await.unwrap();
    consumer.set_rebalance_listener(log.clone());
    consumer.subscribe(&[&topic]).unwrap();
    loop {
        let batch = match consumer.recv_batch(10, Duration::from_millis(100)).await {
            Ok(b) => b,
            Err(e) => {
                log.write(format!("error {e}"));
                continue;
            }
        };
        for r in &batch {
            let i = index(r.key.as_deref(), r.value.as_deref());
            log.write(format!("read {} {} {i}", r.partition, r.offset));
            // The application's work on the record.
            tokio::time::sleep(Duration::from_millis(work)).await;
        }
        if batch.is_empty() {
            continue;
        }
        match consumer.commit_records(&batch).await {
            Ok(()) => {
                let mut next = BTreeMap::new();
                for r in &batch {
                    next.insert(r.partition, r.offset + 1);
                }
                for (p, o) in next {
                    log.write(format!("committed {p} {o}"));
                }
            }
            Err(e) => log.write(format!("commit failed {e}")),
        }
    }
}

fn spawn_child(topic: &str, group: &str, log: &Path, work_ms: u64) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kip848_child_member", "--ignored", "--nocapture"])
        .env("KIP848_CHILD_TOPIC", topic)
        .env("KIP848_CHILD_GROUP", group)
        .env("KIP848_CHILD_LOG", log)
        .env("KIP848_CHILD_WORK_MS", work_ms.to_string())
        .env("PAPERBOY_BOOTSTRAP", common::bootstrap())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the child member")
}

/// Kills the child when dropped (a failing test leaves no member behind).
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp_log(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(common::unique_topic(name));
    let _ = std::fs::remove_file(&p);
    p
}

/// The child's log: what it read (index, partition, offset), the last offset it
/// committed per partition, and the other lines.
struct ChildLog {
    read: Vec<(usize, i32, i64)>,
    committed: BTreeMap<i32, i64>,
    lines: Vec<String>,
}

fn child_log(path: &Path) -> ChildLog {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut log = ChildLog {
        read: Vec::new(),
        committed: BTreeMap::new(),
        lines: Vec::new(),
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[..] {
            ["read", p, o, i] => {
                log.read
                    .push((i.parse().unwrap(), p.parse().unwrap(), o.parse().unwrap()))
            }
            ["committed", p, o] => {
                log.committed.insert(p.parse().unwrap(), o.parse().unwrap());
            }
            _ => log.lines.push(line.to_owned()),
        }
    }
    log
}

/// No record below a partition's last commit by the child is read again by `other`
/// (it started each partition at the child's commit, or later).
fn assert_not_read_again(child: &ChildLog, other: &[(usize, i32, i64)]) {
    for (i, p, o) in other {
        if let Some(c) = child.committed.get(p) {
            assert!(
                o >= c,
                "record {i} ({p}@{o}) was read again below the child's commit {c}"
            );
        }
    }
}

fn assert_at_least_once(all: &[(usize, i32, i64)], n: usize) {
    let got: BTreeSet<usize> = all.iter().map(|(i, _, _)| *i).collect();
    let missing: Vec<usize> = (0..n).filter(|i| !got.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} records never read (first {:?})",
        missing.len(),
        missing.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_mid_batch_has_its_partitions_moved_and_its_commits_kept() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "kip848-kill", 4).await;
    let group = common::kip848_group(&client, "kip848-kill", 3_000).await;
    produce(&topic, 0, 400).await;
    let log = temp_log("kip848-kill-log");
    let mut child = ChildGuard(spawn_child(&topic, &group, &log, 10));
    wait_for("the child to commit", 60, || {
        child_log(&log).committed.len() >= 2
    })
    .await;
    let b = Member::start(&group, &topic, true).await;
    wait_for("B to read", 30, || b.count() >= 1).await;
    wait_for("the child to read on after B joined", 30, || {
        let l = child_log(&log);
        l.lines.iter().any(|l| l.starts_with("revoked")) && l.read.len() < 400
    })
    .await;
    child.0.kill().expect("SIGKILL");
    child.0.wait().unwrap();
    let killed = child_log(&log);
    assert!(killed.read.len() < 400, "killed before it read everything");
    // After the session timeout (3 s) the coordinator fences the dead member and B gets
    // its partitions, from the child's last commits.
    wait_for("B to own all 4 partitions", 30, || {
        b.partitions().len() == 4
    })
    .await;
    wait_for("every record read", 30, || {
        let seen = b.seen();
        let got: BTreeSet<usize> = seen
            .iter()
            .chain(&killed.read)
            .map(|(i, _, _)| *i)
            .collect();
        got.len() == 400
    })
    .await;
    let b_seen = b.finish().await;
    assert_not_read_again(&killed, &b_seen);
    let all: Vec<_> = killed.read.iter().copied().chain(b_seen).collect();
    assert_at_least_once(&all, 400);
    let (committed, ends) = committed_and_ends(&client, &group, &topic, 4).await;
    assert_eq!(committed, ends);
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_fenced_after_its_heartbeats_stopped_rejoins_and_keeps_its_commits() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "kip848-fence", 2).await;
    let group = common::kip848_group(&client, "kip848-fence", 2_000).await;
    produce(&topic, 0, 100).await;
    let log = temp_log("kip848-fence-log");
    let child = ChildGuard(spawn_child(&topic, &group, &log, 1));
    wait_for("the child to read and commit all 100", 60, || {
        let l = child_log(&log);
        l.committed.values().sum::<i64>() == 100
    })
    .await;
    let pid = child.0.id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig}");
    };
    // Its heartbeats stop: past the session timeout (2 s) the coordinator fences it.
    // Another member, B, then gets both partitions, from the child's commits.
    signal("-STOP");
    let b = Member::start(&group, &topic, true).await;
    wait_for("B to own both partitions", 30, || b.partitions().len() == 2).await;
    signal("-CONT");
    // The child's next heartbeat is refused (UNKNOWN_MEMBER_ID or FENCED_MEMBER_EPOCH):
    // it drops its partitions without committing, rejoins with epoch 0 and is given one
    // back.
    wait_for(
        "the child to lose its partitions and get one back",
        30,
        || {
            let l = child_log(&log);
            let after_loss = l
                .lines
                .iter()
                .skip_while(|l| !l.starts_with("lost"))
                .any(|l| l.starts_with("assigned"));
            after_loss && b.partitions().len() == 1
        },
    )
    .await;
    assert!(
        !child_log(&log)
            .lines
            .iter()
            .any(|l| l.starts_with("revoked")),
        "fenced partitions are lost (on_lost), not revoked"
    );
    produce(&topic, 100, 200).await;
    wait_for("the child to read new records", 30, || {
        child_log(&log).read.iter().any(|(i, _, _)| *i >= 100)
    })
    .await;
    wait_for("all 200 records read", 30, || {
        let l = child_log(&log);
        let got: BTreeSet<usize> = l.read.iter().chain(&b.seen()).map(|(i, _, _)| *i).collect();
        got.len() == 200
    })
    .await;
    let fenced = child_log(&log);
    let b_seen = b.finish().await;
    drop(child);
    // The commits made before the fencing stand: B never read the first 100 again.
    assert!(
        b_seen.iter().all(|(i, _, _)| *i >= 100),
        "B read again what the child had committed: {:?}",
        b_seen
            .iter()
            .filter(|(i, _, _)| *i < 100)
            .take(3)
            .collect::<Vec<_>>()
    );
    let all: Vec<_> = fenced.read.iter().copied().chain(b_seen).collect();
    assert_at_least_once(&all, 200);
    let _ = std::fs::remove_file(&log);
}

#[tokio::test]
async fn classic_only_keys_are_refused_with_the_consumer_protocol() {
    for key in [
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "partition.assignment.strategy",
    ] {
        let value = if key.ends_with(".ms") {
            "3000"
        } else {
            "range"
        };
        let err = Consumer::new(
            ConsumerConfig::from_properties([
                ("bootstrap.servers", common::bootstrap().as_str()),
                ("group.id", "g"),
                ("group.protocol", "consumer"),
                (key, value),
            ])
            .unwrap(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(err.to_string().contains(key), "{err}");
    }
    // And a pattern subscription needs the consumer protocol.
    let c = Consumer::new(ConsumerConfig::new(&common::bootstrap()).with_group_id("g"))
        .await
        .unwrap();
    assert_eq!(c.config().group_protocol(), GroupProtocol::Classic);
    let err = c.subscribe_pattern("t-.*").unwrap_err();
    assert!(err.to_string().contains("group.protocol"), "{err}");
    c.close().await;
}

#[tokio::test]
async fn an_assignor_the_broker_lacks_is_an_error_from_recv() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "kip848-assignor", 1).await;
    let group = common::kip848_group(&client, "kip848-assignor", 10_000).await;
    let mut cfg = config(&group, false);
    cfg.set("group.remote.assignor", "no-such-assignor")
        .unwrap();
    let consumer = Consumer::new(cfg).await.unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("recv returns")
        .unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(paperboy::KafkaCode::UnsupportedAssignor),
        "{err}"
    );
    consumer.close().await;
}

#[tokio::test]
async fn a_group_config_the_broker_refuses_is_its_error() {
    let client = common::client().await;
    let group = common::unique_topic("kip848-config");
    // Below the broker's group.consumer.min.session.timeout.ms (2000 with scripts/kafka).
    let err = client
        .alter_group_config(&group, &[("consumer.session.timeout.ms", "500")])
        .await
        .unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(paperboy::KafkaCode::InvalidConfig),
        "{err}"
    );
    assert!(err.to_string().contains(&group), "{err}");
}
