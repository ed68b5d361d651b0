//! Consumers and the engine on a real three-node cluster, which this test starts (ports
//! 9292-9297, under `.kafka/consumer-failover`) and stops. A group of two Paperboy
//! consumers (committing what they handled, batch by batch) and an engine (its own group,
//! bulk mode, a batch always in progress) consume a replicated topic (replication factor
//! 3, min ISR 2) while a producer writes. The leader of some partitions is SIGKILLed, then
//! the broker of the consumers' group coordinator; each comes back before the next.
//!
//! Checked: every acknowledged record is handled by both groups, with the value it was
//! acknowledged with; a record handed out twice in the consumers' group had not been
//! committed; no committed offset of either group ever passes a record that group had not
//! handled (sampled every 100 ms); fetching resumed from the new leaders after
//! validating positions with OffsetForLeaderEpoch (KIP-320).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use paperboy::engine::{BoxError, Engine, EngineConfig, Handler, Message};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::{Client, ClientConfig, Consumer, ConsumerConfig, NewTopic, TopicPartition};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

const PARTITIONS: i32 = 6;

/// Counts the consumer's "validating the position" and "position validated" events.
struct Validations {
    started: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
}

impl<S: tracing::Subscriber> Layer<S> for Validations {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Msg(String);
        impl tracing::field::Visit for Msg {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut m = Msg(String::new());
        event.record(&mut m);
        if m.0.contains("validating the position") {
            self.started.fetch_add(1, Ordering::SeqCst);
        } else if m.0.contains("position validated") {
            self.done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// What one group handled: per partition, offset -> value, and the records handed out
/// again.
#[derive(Default)]
struct Handled {
    parts: BTreeMap<i32, BTreeMap<i64, String>>,
    again: usize,
    /// Re-deliveries at or below what the group had committed successfully.
    bad_again: Vec<String>,
}

impl Handled {
    fn note(&mut self, p: i32, offset: i64, value: String, committed: Option<i64>) {
        match self.parts.entry(p).or_default().insert(offset, value) {
            None => {}
            Some(_) => {
                self.again += 1;
                if committed.is_some_and(|c| offset < c) {
                    self.bad_again.push(format!(
                        "[{p}]@{offset} handed out again below the committed {committed:?}"
                    ));
                }
            }
        }
    }

    /// The first offset of `p` not handled.
    fn handled_up_to(&self, p: i32) -> i64 {
        let mut next = 0;
        if let Some(m) = self.parts.get(&p) {
            for &o in m.keys() {
                if o != next {
                    break;
                }
                next += 1;
            }
        }
        next
    }

    fn total(&self) -> usize {
        self.parts.values().map(BTreeMap::len).sum()
    }
}

type Shared = Arc<Mutex<Handled>>;

/// The engine's handler: bulk batches that take 20 ms each.
struct Recorder {
    topic: String,
    handled: Shared,
}

impl Handler for Recorder {
    type Payload = String;
    type Context = ();

    fn topics(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    async fn on_message(&self, msg: &Message<String>, _: &mut ()) -> Result<(), BoxError> {
        let v = msg.value.clone().unwrap_or_default();
        self.handled
            .lock()
            .unwrap()
            .note(msg.record.partition, msg.record.offset, v, None);
        Ok(())
    }

    async fn on_bulk(&self, msgs: &[Message<String>], _: &mut ()) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut h = self.handled.lock().unwrap();
        for m in msgs {
            let v = m.value.clone().unwrap_or_default();
            h.note(m.record.partition, m.record.offset, v, None);
        }
        Ok(())
    }
}

/// Java's `String.hashCode`, to find a group's coordinator: the leader of partition
/// `abs(hash) % offsets.topic.num.partitions` of `__consumer_offsets`.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

fn consumer_config(bootstrap: &str, group: &str) -> ConsumerConfig {
    ConsumerConfig::from_properties([
        ("bootstrap.servers", bootstrap),
        ("group.id", group),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "500"),
        ("request.timeout.ms", "10000"),
        ("metadata.max.age.ms", "5000"),
    ])
    .unwrap()
}

async fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every partition of `topics` has its three replicas in sync again.
async fn wait_for_full_isr(client: &Client, topics: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(c) = client.refresh_metadata(topics).await {
            let full = topics.iter().all(|t| {
                c.topic(t).is_some_and(|t| {
                    !t.partitions.is_empty() && t.partitions.iter().all(|p| p.isr.len() == 3)
                })
            });
            if full {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "replicas of {topics:?} not back in sync after 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_and_the_engine_ride_through_leader_and_coordinator_failures() {
    let started = Arc::new(AtomicUsize::new(0));
    let validated = Arc::new(AtomicUsize::new(0));
    let _ = tracing_subscriber::registry()
        .with(
            Validations {
                started: started.clone(),
                done: validated.clone(),
            }
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("paperboy::consumer", tracing::Level::DEBUG),
            ),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_env("PAPERBOY_LOG")
                        .unwrap_or_else(|_| "warn".into()),
                ),
        )
        .try_init();

    let cluster = Cluster::start("consumer-failover", 9292);
    let bootstrap = cluster.bootstrap();
    let client = Client::connect(ClientConfig::new(&bootstrap))
        .await
        .expect("three-node cluster answers");
    let topic = common::unique_topic("consumer-failover");
    client
        .create_topics(&[
            NewTopic::new(&topic, PARTITIONS, 3).with_config("min.insync.replicas", "2")
        ])
        .await
        .unwrap();

    // The producer: batches of 50 every 10 ms until told to stop; what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<HashMap<(i32, i64), String>>> = Arc::default();
    let producer = Producer::new(
        ProducerConfig::new(&bootstrap)
            .with_linger(Duration::from_millis(5))
            .with_delivery_timeout(Duration::from_secs(120))
            .with("request.timeout.ms", "10000")
            .unwrap(),
    )
    .await
    .unwrap();
    let writer = {
        let (stop, acked, topic) = (stop.clone(), acked.clone(), topic.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            let mut tasks = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                for _ in 0..50 {
                    let v = format!("record-{n}");
                    let d = producer
                        .enqueue(
                            ProducerRecord::new(&topic)
                                .with_key(format!("k{}", n % 101))
                                .with_value(v.clone()),
                        )
                        .await
                        .unwrap();
                    let acked = acked.clone();
                    tasks.push(tokio::spawn(async move {
                        let d = d.await.unwrap_or_else(|e| panic!("{v} not delivered: {e}"));
                        acked.lock().unwrap().insert((d.partition, d.offset), v);
                    }));
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for t in tasks {
                t.await.unwrap();
            }
            producer.close().await;
            n
        })
    };

    // Group A: two Paperboy consumers, committing each batch after handling it.
    let group_a = common::unique_topic("fo-consumers");
    let handled_a: Shared = Arc::default();
    let committed_a: Arc<Mutex<BTreeMap<i32, i64>>> = Arc::default();
    let mut members = Vec::new();
    for _ in 0..2 {
        let consumer = Consumer::new(consumer_config(&bootstrap, &group_a))
            .await
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let (stop, handled, committed) = (stop.clone(), handled_a.clone(), committed_a.clone());
        let drained = Arc::new(AtomicBool::new(false));
        members.push((
            drained.clone(),
            tokio::spawn(async move {
                let mut errors = 0usize;
                loop {
                    match consumer.recv_batch(500, Duration::from_millis(200)).await {
                        Ok(batch) if batch.is_empty() => {
                            if stop.load(Ordering::SeqCst) && drained.load(Ordering::SeqCst) {
                                break;
                            }
                        }
                        Ok(batch) => {
                            {
                                let mut h = handled.lock().unwrap();
                                let c = committed.lock().unwrap();
                                for r in &batch {
                                    let v = String::from_utf8(r.value.clone().unwrap().to_vec())
                                        .unwrap();
                                    h.note(r.partition, r.offset, v, c.get(&r.partition).copied());
                                }
                            }
                            match consumer.commit_records(&batch).await {
                                Ok(()) => {
                                    let mut c = committed.lock().unwrap();
                                    for r in &batch {
                                        let e = c.entry(r.partition).or_insert(0);
                                        *e = (*e).max(r.offset + 1);
                                    }
                                }
                                // Not committed: handed out again after a rebalance.
                                Err(_) => errors += 1,
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                consumer.close().await;
                errors
            }),
        ));
    }

    // Group B: the engine, in bulk mode with batches that take 20 ms.
    let group_b = common::unique_topic("fo-engine");
    let handled_b: Shared = Arc::default();
    let engine = Engine::builder(consumer_config(&bootstrap, &group_b))
        .config(
            EngineConfig::default()
                .with_bulk_mode(true)
                .with_bulk_mode_threshold(None)
                .with_bulk_mode_max_records(200)
                .with_bulk_mode_timeout(Duration::from_millis(100))
                .with_commit_interval(Duration::from_millis(200)),
        )
        .handler(Recorder {
            topic: topic.clone(),
            handled: handled_b.clone(),
        })
        .build()
        .await
        .expect("engine builds");
    let engine_stop = engine.shutdown_handle();
    let engine_task = tokio::spawn(engine.run_until(std::future::pending()));

    // The watcher: every 100 ms, each group's committed offsets against what it handled.
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (violations, watching) = (violations.clone(), watching.clone());
        let groups = [
            (group_a.clone(), handled_a.clone()),
            (group_b.clone(), handled_b.clone()),
        ];
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        tokio::spawn(async move {
            let tps: Vec<TopicPartition> = (0..PARTITIONS)
                .map(|p| TopicPartition::new(&topic, p))
                .collect();
            let mut checkers = Vec::new();
            for (g, h) in &groups {
                let c = Consumer::new(consumer_config(&bootstrap, g)).await.unwrap();
                checkers.push((c, h.clone()));
            }
            let mut samples = 0usize;
            while watching.load(Ordering::SeqCst) {
                for (c, h) in &checkers {
                    // Unanswered while the coordinator is down: the next sample asks again.
                    let Ok(Ok(committed)) =
                        tokio::time::timeout(Duration::from_secs(5), c.committed(&tps)).await
                    else {
                        continue;
                    };
                    samples += 1;
                    let h = h.lock().unwrap();
                    for (tp, off) in committed {
                        if let Some(off) = off {
                            let up_to = h.handled_up_to(tp.partition);
                            if off > up_to {
                                violations.lock().unwrap().push(format!(
                                    "{}: {tp} committed at {off}, handled up to {up_to}",
                                    c.config().group_id().unwrap_or_default()
                                ));
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for (c, _) in checkers {
                c.close().await;
            }
            samples
        })
    };

    let progress = |h: &Shared| h.lock().unwrap().total();
    let per_partition_max = |h: &Shared| -> Vec<i64> {
        let h = h.lock().unwrap();
        (0..PARTITIONS)
            .map(|p| {
                h.parts
                    .get(&p)
                    .and_then(|m| m.keys().next_back().copied())
                    .unwrap_or(-1)
            })
            .collect()
    };
    // Both groups under way, on every partition.
    wait_until("both groups to handle 2 000 records", 60, || {
        progress(&handled_a) >= 2_000 && progress(&handled_b) >= 2_000
    })
    .await;
    let t0 = Instant::now();

    // 1. SIGKILL the leader of partition 0 (and of whatever else it leads).
    let meta = client.refresh_metadata(&[&topic]).await.unwrap();
    let victim = meta.leader_for(&topic, 0).unwrap().node_id;
    let led: Vec<i32> = (0..PARTITIONS)
        .filter(|&p| {
            meta.leader_for(&topic, p)
                .is_ok_and(|b| b.node_id == victim)
        })
        .collect();
    let validations_before = validated.load(Ordering::SeqCst);
    let (before_a, before_b) = (per_partition_max(&handled_a), per_partition_max(&handled_b));
    cluster.kill(victim);
    eprintln!("killed node {victim}, leader of partitions {led:?}");
    // Every partition moves on in both groups, the ones it led from their new leaders.
    wait_until(
        "both groups to move on on every partition after the leader died",
        90,
        || {
            let (a, b) = (per_partition_max(&handled_a), per_partition_max(&handled_b));
            (0..PARTITIONS as usize).all(|p| a[p] > before_a[p] + 100 && b[p] > before_b[p] + 100)
        },
    )
    .await;
    eprintln!("moved on {:?} after the leader's death", t0.elapsed());
    cluster.start_node(victim);
    wait_for_full_isr(&client, &[&topic, "__consumer_offsets"]).await;
    assert!(
        validated.load(Ordering::SeqCst) > validations_before,
        "no position was validated against a new leader (KIP-320); {} validations started",
        started.load(Ordering::SeqCst)
    );

    // 2. SIGKILL the broker of the consumers' group coordinator.
    let offsets = client
        .refresh_metadata(&["__consumer_offsets"])
        .await
        .unwrap();
    let partitions = offsets
        .topic("__consumer_offsets")
        .unwrap()
        .partitions
        .len() as i32;
    let h = java_hash(&group_a);
    let coord_part = if h == i32::MIN { 0 } else { h.abs() } % partitions;
    let coordinator = offsets
        .leader_for("__consumer_offsets", coord_part)
        .unwrap()
        .node_id;
    let (before_a, before_b) = (per_partition_max(&handled_a), per_partition_max(&handled_b));
    let t1 = Instant::now();
    cluster.kill(coordinator);
    eprintln!("killed node {coordinator}, the coordinator of {group_a}");
    wait_until(
        "both groups to move on after the coordinator died",
        90,
        || {
            let (a, b) = (per_partition_max(&handled_a), per_partition_max(&handled_b));
            (0..PARTITIONS as usize).all(|p| a[p] > before_a[p] + 100 && b[p] > before_b[p] + 100)
        },
    )
    .await;
    eprintln!("moved on {:?} after the coordinator's death", t1.elapsed());
    cluster.start_node(coordinator);
    wait_for_full_isr(&client, &[&topic, "__consumer_offsets"]).await;

    // Stop producing; every acknowledged record must be handled by both groups.
    stop.store(true, Ordering::SeqCst);
    let produced = writer.await.unwrap();
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert_eq!(acked.len(), produced, "every record acknowledged");
    let mut end: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in acked.keys() {
        let e = end.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    let all_handled = |h: &Shared| {
        let h = h.lock().unwrap();
        end.iter().all(|(p, e)| h.handled_up_to(*p) >= *e)
    };
    wait_until(
        "both groups to handle every acknowledged record",
        90,
        || all_handled(&handled_a) && all_handled(&handled_b),
    )
    .await;
    for (drained, _) in &members {
        drained.store(true, Ordering::SeqCst);
    }
    let mut member_errors = Vec::new();
    for (_, task) in members {
        member_errors.push(
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("a consumer ends")
                .unwrap(),
        );
    }
    engine_stop.shutdown();
    tokio::time::timeout(Duration::from_secs(60), engine_task)
        .await
        .expect("the engine stops")
        .unwrap()
        .expect("the engine ran without error");
    watching.store(false, Ordering::SeqCst);
    let samples = watcher.await.unwrap();

    for (name, h) in [("consumers", &handled_a), ("engine", &handled_b)] {
        let h = h.lock().unwrap();
        for ((p, o), v) in &acked {
            assert_eq!(
                h.parts.get(p).and_then(|m| m.get(o)),
                Some(v),
                "{name}: [{p}]@{o} acknowledged as {v}"
            );
        }
        let beyond: BTreeSet<(i32, i64)> = h
            .parts
            .iter()
            .flat_map(|(p, m)| m.keys().map(move |o| (*p, *o)))
            .filter(|k| !acked.contains_key(k))
            .collect();
        assert!(
            beyond.is_empty(),
            "{name} handled records never acknowledged: {beyond:?}"
        );
        assert!(h.bad_again.is_empty(), "{name}: {:?}", h.bad_again);
    }
    let violations = violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "committed past unhandled records: {violations:?}"
    );
    assert!(
        samples > 20,
        "the committed offsets were sampled only {samples} times"
    );

    // What each group committed at the end: everything.
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(&topic, p))
        .collect();
    for g in [&group_a, &group_b] {
        let c = Consumer::new(consumer_config(&bootstrap, g)).await.unwrap();
        let committed = c.committed(&tps).await.unwrap();
        c.close().await;
        for tp in &tps {
            assert_eq!(
                committed.get(tp).copied().flatten(),
                Some(end.get(&tp.partition).copied().unwrap_or(0)),
                "{g}: committed offset of {tp}"
            );
        }
    }
    eprintln!(
        "{produced} records; consumers handed out {} again (uncommitted work), engine {}; \
         {} validations (KIP-320); {samples} commit samples; member errors {member_errors:?}",
        handled_a.lock().unwrap().again,
        handled_b.lock().unwrap().again,
        validated.load(Ordering::SeqCst)
    );
}
