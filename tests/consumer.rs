//! The consumer against a real broker: reading back every codec, group membership
//! shared with kcat, a member dying mid-batch, commits, seeks, pause and lag.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

use paperboy::consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::Compression;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn consumer_config(group: Option<&str>) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(&common::bootstrap())
        .with_offset_reset(OffsetReset::Earliest)
        .with_auto_commit(false);
    c.set("session.timeout.ms", "6000").unwrap();
    c.set("heartbeat.interval.ms", "500").unwrap();
    c.set("fetch.max.wait.ms", "200").unwrap();
    if let Some(g) = group {
        c = c.with_group_id(g);
    }
    c
}

/// Writes `n` records `k{i}` -> `v{i}` spread over the topic's partitions by key.
async fn produce(topic: &str, n: usize, codec: Compression) {
    let producer = Producer::new(
        ProducerConfig::new(&common::bootstrap())
            .with_compression(codec)
            .with_linger(Duration::from_millis(5)),
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    for i in 0..n {
        let r = ProducerRecord::new(topic)
            .with_key(format!("k{i}"))
            .with_value(format!("v{i} {}", "x".repeat(i % 50)));
        pending.push(producer.enqueue(r).await.unwrap());
    }
    for d in pending {
        d.await.unwrap();
    }
    producer.close().await;
}

fn key_index(key: &[u8]) -> usize {
    std::str::from_utf8(key).unwrap()[1..].parse().unwrap()
}

#[tokio::test]
async fn assigned_partitions_read_back_every_record_in_every_codec() {
    let client = common::client().await;
    for codec in Compression::ALL {
        let topic = common::new_topic(&client, &format!("consume-{codec}"), 3).await;
        produce(&topic, 900, codec).await;
        let consumer = Consumer::new(consumer_config(None)).await.unwrap();
        let parts: Vec<_> = (0..3).map(|p| TopicPartition::new(&topic, p)).collect();
        consumer.assign(&parts).unwrap();
        let mut seen = vec![false; 900];
        let mut next_offset: HashMap<i32, i64> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut count = 0;
        while count < 900 {
            assert!(
                Instant::now() < deadline,
                "{codec}: only {count} of 900 read"
            );
            for r in consumer
                .recv_batch(300, Duration::from_millis(500))
                .await
                .unwrap()
            {
                let i = key_index(r.key.as_deref().unwrap());
                assert!(!seen[i], "{codec}: k{i} read twice");
                seen[i] = true;
                assert_eq!(
                    r.value.as_deref().unwrap(),
                    format!("v{i} {}", "x".repeat(i % 50)).as_bytes()
                );
                let expect = next_offset.entry(r.partition).or_insert(0);
                assert_eq!(r.offset, *expect, "{codec}: offsets in order without gaps");
                *expect += 1;
                count += 1;
            }
        }
        // Positions and lag agree with the end of each partition.
        for p in &parts {
            let end = client
                .list_offset(&topic, p.partition, paperboy::OffsetSpec::Latest)
                .await
                .unwrap();
            assert_eq!(consumer.position(p), Some(end));
        }
        let lag = consumer.lag();
        assert!(lag.values().all(|&l| l == 0), "{codec}: lag {lag:?}");
        consumer.close().await;
    }
}

#[tokio::test]
async fn seek_pause_and_resume() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "seek", 1).await;
    produce(&topic, 100, Compression::Lz4).await;
    let consumer = Consumer::new(consumer_config(None)).await.unwrap();
    let tp = TopicPartition::new(&topic, 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let first = consumer.recv().await.unwrap();
    assert_eq!(first.offset, 0);
    consumer.seek(&tp, 90).unwrap();
    let r = consumer.recv().await.unwrap();
    assert_eq!(r.offset, 90);
    assert_eq!(r.key.as_deref(), Some(&b"k90"[..]));
    consumer.pause(std::slice::from_ref(&tp));
    let none = consumer
        .recv_batch(10, Duration::from_millis(700))
        .await
        .unwrap();
    assert!(none.is_empty(), "a paused partition hands out nothing");
    consumer.resume(std::slice::from_ref(&tp));
    let rest = consumer
        .recv_batch(9, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (91..100).collect::<Vec<_>>()
    );
    assert_eq!(consumer.lag().get(&tp), Some(&0));
    consumer.close().await;
}

#[tokio::test]
async fn offset_reset_error_and_latest() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "reset", 1).await;
    produce(&topic, 10, Compression::None).await;
    let tp = TopicPartition::new(&topic, 0);

    let strict = Consumer::new(consumer_config(None).with_offset_reset(OffsetReset::Error))
        .await
        .unwrap();
    strict.assign(std::slice::from_ref(&tp)).unwrap();
    let err = strict.recv().await.unwrap_err();
    assert!(matches!(err, paperboy::Error::NoOffset(_)), "{err}");
    strict.close().await;

    let latest = Consumer::new(consumer_config(None).with_offset_reset(OffsetReset::Latest))
        .await
        .unwrap();
    latest.assign(std::slice::from_ref(&tp)).unwrap();
    assert!(latest
        .recv_batch(10, Duration::from_millis(800))
        .await
        .unwrap()
        .is_empty());
    produce(&topic, 1, Compression::None).await;
    let r = latest.recv().await.unwrap();
    assert_eq!(r.offset, 10, "latest starts at the end");
    latest.close().await;
}

#[tokio::test]
async fn commits_survive_a_restart_of_the_group() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "commit", 2).await;
    produce(&topic, 200, Compression::Snappy).await;
    let group = common::unique_topic("g-commit");

    let c = Consumer::new(consumer_config(Some(&group))).await.unwrap();
    c.subscribe(&[&topic]).unwrap();
    let mut got = Vec::new();
    while got.len() < 120 {
        got.extend(
            c.recv_batch(120 - got.len(), Duration::from_secs(1))
                .await
                .unwrap(),
        );
    }
    c.commit_records(&got).await.unwrap();
    let committed = c
        .committed(&[
            TopicPartition::new(&topic, 0),
            TopicPartition::new(&topic, 1),
        ])
        .await
        .unwrap();
    let mut expected = BTreeMap::new();
    for r in &got {
        let e = expected.entry(r.topic_partition()).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    for (tp, off) in &expected {
        assert_eq!(committed[tp], Some(*off), "{tp}");
    }
    c.close().await;

    // A new member of the group continues where the commit left off: the other 80.
    let d = Consumer::new(consumer_config(Some(&group))).await.unwrap();
    d.subscribe(&[&topic]).unwrap();
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rest.len() < 80 && Instant::now() < deadline {
        rest.extend(d.recv_batch(80, Duration::from_secs(1)).await.unwrap());
    }
    let mut keys: BTreeSet<usize> = got
        .iter()
        .map(|r| key_index(r.key.as_deref().unwrap()))
        .collect();
    for r in &rest {
        assert!(
            keys.insert(key_index(r.key.as_deref().unwrap())),
            "{} consumed again after its commit",
            r.offset
        );
    }
    assert_eq!(keys.len(), 200);
    assert!(d
        .recv_batch(10, Duration::from_millis(500))
        .await
        .unwrap()
        .is_empty());
    d.close().await;
}

/// A member's own polling loop, as an application runs it: records (key index,
/// partition, offset) it was handed, committing after each batch, until `stop`.
struct Poller {
    seen: Arc<Mutex<Vec<(usize, i32, i64)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_poller(consumer: &Consumer, commit: bool) -> Poller {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (c, seen2, stop2) = (consumer.clone(), seen.clone(), stop.clone());
    let task = tokio::spawn(async move {
        while !stop2.load(Ordering::SeqCst) {
            let batch = c.recv_batch(100, Duration::from_millis(200)).await.unwrap();
            if commit {
                c.commit_records(&batch).await.ok();
            }
            seen2.lock().unwrap().extend(
                batch
                    .iter()
                    .map(|r| (key_index(r.key.as_deref().unwrap()), r.partition, r.offset)),
            );
        }
    });
    Poller { seen, stop, task }
}

impl Poller {
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    async fn finish(self) -> Vec<(usize, i32, i64)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

#[tokio::test]
async fn two_paperboy_members_and_kcat_split_a_topic_without_overlap() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "group3", 6).await;
    let group = common::unique_topic("g-three");

    // kcat joins the group as a balanced consumer (librdkafka offers range, roundrobin).
    let mut kcat = tokio::process::Command::new("kcat")
        .args([
            "-b",
            &common::bootstrap(),
            "-G",
            &group,
            "-X",
            "auto.offset.reset=earliest",
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "heartbeat.interval.ms=500",
            "-f",
            "%p %k\\n",
            "-u",
            "-q",
            &topic,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kcat runs (it is needed for the group tests)");
    let mut kcat_out = tokio::io::BufReader::new(kcat.stdout.take().unwrap()).lines();
    let a = Consumer::new(consumer_config(Some(&group))).await.unwrap();
    let b = Consumer::new(consumer_config(Some(&group))).await.unwrap();
    a.subscribe(&[&topic]).unwrap();
    b.subscribe(&[&topic]).unwrap();
    // Each member polls in its own task, as an application does: a rebalance completes
    // only when every member rejoins. Let the group settle with three members.
    let pa = spawn_poller(&a, true);
    let pb = spawn_poller(&b, true);
    let settle = Instant::now() + Duration::from_secs(60);
    loop {
        let (na, nb) = (a.assignment().len(), b.assignment().len());
        if na == 2 && nb == 2 {
            break;
        }
        assert!(
            Instant::now() < settle,
            "group did not settle: a {na}, b {nb}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mine: BTreeSet<TopicPartition> = a.assignment().into_iter().chain(b.assignment()).collect();
    assert_eq!(
        mine.len(),
        4,
        "the two Paperboy members own four distinct partitions"
    );

    produce(&topic, 3000, Compression::Snappy).await;
    // kcat's share: the records of the two partitions Paperboy does not own.
    let kcat_parts: Vec<i32> = (0..6)
        .filter(|p| !mine.contains(&TopicPartition::new(&topic, *p)))
        .collect();
    let mut per_partition = [0usize; 6];
    for p in 0..6 {
        per_partition[p as usize] = client
            .list_offset(&topic, p, paperboy::OffsetSpec::Latest)
            .await
            .unwrap() as usize;
    }
    let kcat_expected: usize = kcat_parts.iter().map(|p| per_partition[*p as usize]).sum();
    let want = 3000 - kcat_expected;
    let deadline = Instant::now() + Duration::from_secs(90);
    while pa.count() + pb.count() < want {
        assert!(
            Instant::now() < deadline,
            "Paperboy members read {} of {want}",
            pa.count() + pb.count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ra, rb) = (pa.finish().await, pb.finish().await);
    assert_eq!(
        a.assignment().len() + b.assignment().len(),
        4,
        "no rebalance happened meanwhile"
    );

    // kcat: read its lines until it has printed its share, then stop it.
    let mut kcat_lines = Vec::new();
    let kcat_deadline = Instant::now() + Duration::from_secs(60);
    while kcat_lines.len() < kcat_expected {
        let left = kcat_deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, kcat_out.next_line()).await {
            Ok(Ok(Some(line))) => kcat_lines.push(line),
            other => panic!(
                "kcat printed {} of its {kcat_expected} records ({other:?})",
                kcat_lines.len()
            ),
        }
    }
    kcat.kill().await.ok();

    let mut seen = vec![0u32; 3000];
    for (i, p, _) in ra.iter().chain(rb.iter()) {
        assert!(mine.contains(&TopicPartition::new(&topic, *p)));
        seen[*i] += 1;
    }
    for line in &kcat_lines {
        let (p, k) = line.split_once(' ').unwrap();
        let p: i32 = p.parse().unwrap();
        assert!(
            kcat_parts.contains(&p),
            "kcat read partition {p}, owned by Paperboy"
        );
        seen[key_index(k.as_bytes())] += 1;
    }
    let dupes: Vec<_> = (0..3000).filter(|i| seen[*i] > 1).collect();
    let missing: Vec<_> = (0..3000).filter(|i| seen[*i] == 0).collect();
    assert!(dupes.is_empty(), "consumed more than once: {dupes:?}");
    assert!(missing.is_empty(), "never consumed: {missing:?}");
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_member_that_dies_mid_batch_has_its_batch_consumed_again() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "die", 2).await;
    produce(&topic, 400, Compression::Zstd).await;
    let group = common::unique_topic("g-die");

    let survivor = Consumer::new(consumer_config(Some(&group))).await.unwrap();
    survivor.subscribe(&[&topic]).unwrap();
    let polling = spawn_poller(&survivor, false);
    let victim = Consumer::new(consumer_config(Some(&group))).await.unwrap();
    victim.subscribe(&[&topic]).unwrap();
    // The victim polls here; the survivor in its own task. Neither commits while settling.
    let deadline = Instant::now() + Duration::from_secs(60);
    while survivor.assignment().len() != 1 || victim.assignment().len() != 1 {
        assert!(Instant::now() < deadline, "group did not settle");
        victim.recv_batch(1, Duration::from_millis(100)).await.ok();
    }
    let victim_part = victim.assignment()[0].clone();
    // The victim takes a batch, commits half of it, and dies (no LeaveGroup, no commit).
    let batch = victim.recv_batch(50, Duration::from_secs(5)).await.unwrap();
    assert!(!batch.is_empty());
    let half = &batch[..batch.len() / 2];
    victim.commit_records(half).await.unwrap();
    let resume_at = half.last().map_or(batch[0].offset, |r| r.offset + 1);
    drop(victim);
    polling.seen.lock().unwrap().clear();

    // The survivor gets the partition once the session times out, and starts right
    // after the victim's commit: the uncommitted half is consumed again.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        assert!(
            Instant::now() < deadline,
            "the victim's partition never moved"
        );
        let found = polling
            .seen
            .lock()
            .unwrap()
            .iter()
            .find(|(_, p, _)| *p == victim_part.partition)
            .map(|(_, _, o)| *o);
        if let Some(o) = found {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        first, resume_at,
        "consumption resumes at the victim's last commit"
    );
    polling.finish().await;
    survivor.close().await;
}

#[tokio::test]
async fn records_written_by_kcat_and_the_java_producer_read_back() {
    let client = common::client().await;
    let mut topics = Vec::new();
    // kcat (librdkafka) compresses snappy raw, without xerial framing.
    let topic = common::new_topic(&client, "from-kcat", 1).await;
    let input: String = (0..50)
        .map(|i| format!("k{i}:kcat value {i} {}\n", "s".repeat(i)))
        .collect();
    let mut child = Command::new("kcat")
        .args([
            "-P",
            "-b",
            &common::bootstrap(),
            "-t",
            &topic,
            "-K",
            ":",
            "-z",
            "snappy",
            "-X",
            "linger.ms=50",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    topics.push((topic, "kcat".to_string()));
    // The Java producer: snappy (xerial framing), gzip, lz4, zstd.
    for codec in ["snappy", "gzip", "lz4", "zstd"] {
        let topic = common::new_topic(&client, &format!("from-java-{codec}"), 1).await;
        let input: String = (0..50)
            .map(|i| format!("k{i}:java-{codec} value {i} {}\n", "s".repeat(i)))
            .collect();
        let mut child = Command::new(repo().join("scripts/kafka"))
            .args([
                "console-producer",
                "--bootstrap-server",
                &common::bootstrap(),
                "--topic",
                &topic,
                "--reader-property",
                "parse.key=true",
                "--reader-property",
                "key.separator=:",
                "--producer-property",
                &format!("compression.type={codec}"),
                "--producer-property",
                "linger.ms=100",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("the Java console producer runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        topics.push((topic, format!("java-{codec}")));
    }
    for (topic, label) in topics {
        let consumer = Consumer::new(consumer_config(None)).await.unwrap();
        consumer.assign(&[TopicPartition::new(&topic, 0)]).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < 50 && Instant::now() < deadline {
            got.extend(
                consumer
                    .recv_batch(50 - got.len(), Duration::from_secs(1))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(got.len(), 50, "{label}");
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
            assert_eq!(
                r.key.as_deref(),
                Some(format!("k{i}").as_bytes()),
                "{label}"
            );
            let prefix = if label == "kcat" {
                "kcat".to_string()
            } else {
                label.clone()
            };
            assert_eq!(
                r.value.as_deref(),
                Some(format!("{prefix} value {i} {}", "s".repeat(i)).as_bytes()),
                "{label}"
            );
        }
        consumer.close().await;
    }
}

/// Regression: `recv_batch(max)` handed out a fair share of `max / partitions` per
/// partition in one pass; with 6 partitions and max 500 that is 498, so every call then
/// waited for its whole timeout with records at hand (an engine reading 6 partitions ran
/// at 4.9k records/s). It fills up from every partition before waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_batch_fills_up_from_every_partition_without_waiting_for_its_timeout() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "recv-batch-fill", 6).await;
    produce(&topic, 3000, Compression::None).await;
    let consumer = Consumer::new(consumer_config(Some(&common::unique_topic("g-fill"))))
        .await
        .unwrap();
    consumer.subscribe(&[topic.as_str()]).unwrap();
    let mut seen = BTreeSet::new();
    // Long timeouts: each call must return as soon as it has 500 records.
    let started = Instant::now();
    while seen.len() < 3000 {
        let batch = tokio::time::timeout(
            Duration::from_secs(30),
            consumer.recv_batch(500, Duration::from_secs(60)),
        )
        .await
        .expect("recv_batch returns once it has its records")
        .unwrap();
        assert!(batch.len() <= 500);
        if seen.len() + batch.len() < 3000 && !batch.is_empty() {
            assert_eq!(batch.len(), 500, "a full batch while records remain");
        }
        for r in batch {
            assert!(seen.insert((r.partition, r.offset)), "no record twice");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "no call waited out its timeout"
    );
    assert_eq!(seen.iter().map(|s| s.0).collect::<BTreeSet<_>>().len(), 6);
    consumer.close().await;
}

/// A partition given up and taken back while a fetch of it is in flight: the answer to
/// that fetch belongs to the partition as it was, and must not be handed out from the
/// new position. (A generation counter that restarted at zero for the new partition
/// state matched the old fetch's, so its records were queued and the ones between the
/// new position and the old fetch offset skipped: records lost to a group whose member
/// got its partitions back in an eager rebalance.)
#[tokio::test(flavor = "current_thread")]
async fn a_fetch_in_flight_when_a_partition_is_given_up_is_not_handed_out_after_it_is_taken_back() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "stale-fetch", 1).await;
    let producer = Producer::new(ProducerConfig::new(&common::bootstrap()))
        .await
        .unwrap();
    let send = |i: usize| {
        producer.send(
            ProducerRecord::new(&topic)
                .with_partition(0)
                .with_value(format!("v{i}")),
        )
    };
    for i in 0..10 {
        send(i).await.unwrap();
    }
    let mut config = consumer_config(None);
    // The fetch after the last record waits this long for more.
    config.set("fetch.max.wait.ms", "5000").unwrap();
    let consumer = Consumer::new(config).await.unwrap();
    let tp = TopicPartition::new(&topic, 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 10 {
        assert!(Instant::now() < deadline, "read {} of 10", got.len());
        for r in consumer
            .recv_batch(10, Duration::from_millis(200))
            .await
            .unwrap()
        {
            got.push(r.offset);
        }
    }
    assert_eq!(got, (0..10).collect::<Vec<i64>>());
    // The fetcher has asked for offset 10 and waits. Give the partition up and take it
    // back from offset 5 (what a group member does when an eager rebalance returns the
    // partition it had, positioned at the committed offset).
    consumer.assign(&[]).unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek(&tp, 5).unwrap();
    // The fetch in flight now gets record 10.
    send(10).await.unwrap();
    let mut again = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while again.len() < 6 {
        assert!(
            Instant::now() < deadline,
            "read {again:?} after the seek to 5"
        );
        for r in consumer
            .recv_batch(6, Duration::from_millis(200))
            .await
            .unwrap()
        {
            again.push(r.offset);
        }
    }
    assert_eq!(
        again,
        (5..=10).collect::<Vec<i64>>(),
        "from the new position on"
    );
    consumer.close().await;
    producer.close().await;
}

/// A cooperative-sticky group whose membership does not change settles: once both
/// members hold their partitions, no further rebalance starts, so every commit of the
/// next seconds is accepted. (Cooperative members keep their generation while they
/// rejoin and went on heartbeating with it; the coordinator's REBALANCE_IN_PROGRESS or
/// ILLEGAL_GENERATION to those heartbeats flagged yet another rejoin, so each rebalance
/// started the next, every heartbeat interval, for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooperative_group_settles_once_its_members_stop_changing() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "coop-settles", 4).await;
    produce(&topic, 40, Compression::None).await;
    let group = common::unique_topic("g-coop-settles");
    let config = || {
        let mut c = consumer_config(Some(&group));
        c.set("partition.assignment.strategy", "cooperative-sticky")
            .unwrap();
        c
    };
    let a = Consumer::new(config()).await.unwrap();
    let b = Consumer::new(config()).await.unwrap();
    a.subscribe(&[&topic]).unwrap();
    b.subscribe(&[&topic]).unwrap();
    let members = [a.clone(), b.clone()];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for c in &members {
            c.recv_batch(100, Duration::from_millis(100)).await.unwrap();
        }
        if members.iter().all(|c| c.assignment().len() == 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the two members never split the 4 partitions"
        );
    }
    // Both poll and commit for 5 s.
    let refused = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + Duration::from_secs(5);
    let tasks: Vec<_> = members
        .iter()
        .map(|c| {
            let (c, refused) = (c.clone(), refused.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    c.recv_batch(100, Duration::from_millis(100)).await.unwrap();
                    if let Err(e) = c.commit_consumed().await {
                        refused.lock().unwrap().push(e.to_string());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let refused = refused.lock().unwrap().clone();
    assert!(
        refused.is_empty(),
        "{} commits refused in a settled group, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    assert!(members.iter().all(|c| c.assignment().len() == 2));
    a.close().await;
    b.close().await;
}

/// Records a listener's revocations: whether one is running, and the offsets handed out
/// while it was.
#[derive(Default)]
struct Revoking {
    revoking: AtomicBool,
    revocations: std::sync::atomic::AtomicUsize,
}

/// A listener whose `on_revoked` takes a second.
struct SlowRevoke(Arc<Revoking>);

impl paperboy::consumer::RebalanceListener for SlowRevoke {
    fn on_revoked<'a>(
        &'a self,
        _consumer: &'a Consumer,
        _partitions: &'a [TopicPartition],
    ) -> paperboy::consumer::BoxFuture<'a, ()> {
        Box::pin(async move {
            self.0.revoking.store(true, Ordering::SeqCst);
            // Work before giving the partitions up (flushing, say).
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.0.revoking.store(false, Ordering::SeqCst);
            self.0.revocations.fetch_add(1, Ordering::SeqCst);
        })
    }
}

/// While partitions are being revoked (the listener runs, then auto-commit commits what
/// was handed out), `recv_batch` should hand out nothing: a record handed out then is
/// committed by that auto-commit before the application could handle it, or, handed
/// out after the listener's own commit, handled by a member that no longer owns its
/// partition.
///
/// (Found by tests/rebalance_storm.rs when the rebalance had moved into a task of its
/// own: calls made meanwhile handed out records of the partitions being revoked, 46 of
/// them during this listener's second. Now a call waits while a rebalance runs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_handed_out_while_partitions_are_being_revoked() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "revoking", 1).await;
    produce(&topic, 100, Compression::None).await;
    let group = common::unique_topic("g-revoking");
    let config = || {
        let mut c = consumer_config(Some(&group)).with_auto_commit(true);
        // Only the commit on revocation, none by the interval.
        c.set("auto.commit.interval.ms", "600000").unwrap();
        c.set("partition.assignment.strategy", "range").unwrap();
        c
    };
    let a = Consumer::new(config()).await.unwrap();
    let listener = Arc::new(Revoking::default());
    a.set_rebalance_listener(SlowRevoke(listener.clone()));
    a.subscribe(&[&topic]).unwrap();
    let mut handed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while handed.len() < 10 {
        assert!(Instant::now() < deadline, "the first member read nothing");
        handed.extend(
            a.recv_batch(10 - handed.len(), Duration::from_millis(100))
                .await
                .unwrap()
                .iter()
                .map(|r| r.offset),
        );
    }
    // A second member joins: the first gives its partition up (range: eager).
    let b = Consumer::new(config()).await.unwrap();
    b.subscribe(&[&topic]).unwrap();
    let bt = {
        let b = b.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                b.recv_batch(1, Duration::from_millis(100)).await.ok();
            }
        })
    };
    let mut during = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while listener.revocations.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the first member never revoked");
        let before = listener.revoking.load(Ordering::SeqCst);
        let batch = a.recv_batch(1, Duration::from_millis(50)).await.unwrap();
        let after = listener.revoking.load(Ordering::SeqCst);
        if before || after {
            during.extend(batch.iter().map(|r| r.offset));
        }
        handed.extend(batch.iter().map(|r| r.offset));
        // Handling a record takes a moment (the records last until the revocation).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bt.await.unwrap();
    assert!(
        during.is_empty(),
        "handed out while the partition was being revoked: {during:?}"
    );
    // What the revocation's auto-commit committed is exactly what was handed out before.
    let committed = a
        .committed(&[TopicPartition::new(&topic, 0)])
        .await
        .unwrap();
    assert_eq!(
        committed[&TopicPartition::new(&topic, 0)],
        Some(handed.len() as i64),
        "handed out {handed:?}"
    );
    a.close().await;
    b.close().await;
}
