//! The engine's exactly-once processing against a real broker: a handler's output and
//! the offsets of what it handled commit together, so read_committed consumers of the
//! output see each input's output exactly once through handler failures (the
//! transaction aborts and the records are handled again) and through SIGKILLs of the
//! engine's process at random points.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use paperboy::engine::{BoxError, Engine, EngineConfig, Handler, Message};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::{Acks, Client, Compression, ConsumerConfig, NewRecord, TopicPartition};

/// Classic groups with a short session; groups named `kip848-...` (from
/// `common::kip848_group`) on the consumer group protocol.
fn consumer_config(group: &str, instance: Option<&str>) -> ConsumerConfig {
    let mut c = ConsumerConfig::from_properties([
        ("bootstrap.servers", common::bootstrap().as_str()),
        ("group.id", group),
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
    ])
    .unwrap();
    if group.starts_with("kip848-") {
        c.set("group.protocol", "consumer").unwrap();
    } else {
        c.set("session.timeout.ms", "6000").unwrap();
        c.set("heartbeat.interval.ms", "500").unwrap();
    }
    if let Some(id) = instance {
        c.set("group.instance.id", id).unwrap();
    }
    c
}

async fn txn_producer(id: &str) -> Producer {
    Producer::new(
        ProducerConfig::from_properties([
            ("bootstrap.servers", common::bootstrap().as_str()),
            ("transactional.id", id),
            ("linger.ms", "2"),
        ])
        .unwrap(),
    )
    .await
    .unwrap()
}

/// Writes `in-{i}` for `i` in `range` to `partition`.
async fn produce_inputs(
    client: &Client,
    topic: &str,
    partition: i32,
    range: std::ops::Range<usize>,
) {
    let records: Vec<NewRecord> = range
        .map(|i| NewRecord {
            key: Some(format!("k{i}").into()),
            value: Some(format!("in-{i:05}").into()),
            ..NewRecord::default()
        })
        .collect();
    for chunk in records.chunks(500) {
        client
            .produce(topic, partition, chunk, Compression::Snappy, Acks::All)
            .await
            .unwrap();
    }
}

/// Committed offsets of `group` for `topic`'s partitions `0..n`.
async fn committed(group: &str, topic: &str, n: i32) -> Vec<Option<i64>> {
    let c = paperboy::Consumer::new(consumer_config(group, None))
        .await
        .unwrap();
    let tps: Vec<TopicPartition> = (0..n).map(|p| TopicPartition::new(topic, p)).collect();
    let got = c.committed(&tps).await.unwrap();
    c.close().await;
    tps.iter()
        .map(|tp| got.get(tp).copied().flatten())
        .collect()
}

async fn wait_committed(group: &str, topic: &str, want: &[Option<i64>], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = committed(group, topic, want.len() as i32).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed offsets {got:?}, not {want:?}, after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Output values, each with how many times a consumer read it.
fn counts(records: &[(i32, String)]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (_, v) in records {
        *m.entry(v.clone()).or_default() += 1;
    }
    m
}

/// Writes `out-{n}` for each input `in-{n}`, to the same partition of `output`; fails
/// (after writing its output) once on `flaky`, and always on `poison`.
struct Transform {
    input: String,
    output: String,
    producer: Producer,
    flaky: String,
    flaked: AtomicBool,
    poison: String,
    delay: Duration,
}

impl Handler for Transform {
    type Payload = String;
    type Context = ();

    fn topics(&self) -> Vec<String> {
        vec![self.input.clone()]
    }

    async fn on_message(&self, msg: &Message<String>, _: &mut ()) -> Result<(), BoxError> {
        let v = msg.value.as_deref().unwrap_or_default();
        let out = v.replacen("in-", "out-", 1);
        let delivery = self
            .producer
            .enqueue(
                ProducerRecord::new(&self.output)
                    .with_partition(msg.record.partition)
                    .with_value(out),
            )
            .await?;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if v == self.flaky && !self.flaked.swap(true, Ordering::SeqCst) {
            // Written to the log (acknowledged) before the failure: the abort must hide it.
            delivery.await?;
            return Err(format!("{v} fails once, after writing its output").into());
        }
        if v == self.poison {
            return Err(format!("{v} always fails").into());
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handler_aborts_its_output_and_everything_is_written_exactly_once() {
    failed_handler_run(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_bulk_mode_a_failed_batch_aborts_its_output_and_everything_is_written_exactly_once() {
    failed_handler_run(true, false).await;
}

/// The same on the consumer group protocol (KIP-848): the offsets go in the transaction
/// with the member's epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_consumer_group_protocol_every_output_is_written_exactly_once() {
    failed_handler_run(true, true).await;
}

async fn failed_handler_run(bulk: bool, kip848: bool) {
    let client = common::client().await;
    let input = common::new_topic(&client, "eos-in", 2).await;
    let output = common::new_topic(&client, "eos-out", 2).await;
    let dlq = format!("{input}.dlq");
    produce_inputs(&client, &input, 0, 0..100).await;
    produce_inputs(&client, &input, 1, 100..200).await;
    let group = if kip848 {
        common::kip848_group(&client, "kip848-eos", 10_000).await
    } else {
        common::unique_topic("eos-g")
    };
    let producer = txn_producer(&common::unique_topic("eos-txn")).await;
    let engine = Engine::builder(consumer_config(&group, None))
        .config(
            EngineConfig::default()
                .with_commit_interval(Duration::from_millis(100))
                .with_max_retries(1)
                .with_retry_backoff(Duration::from_millis(10), Duration::from_secs(10))
                .with_dead_letter_topic("{topic}.dlq")
                .with_bulk_mode(bulk)
                .with_bulk_mode_threshold(None)
                .with_bulk_mode_max_records(30)
                .with_bulk_mode_timeout(Duration::from_millis(50)),
        )
        .handler(Transform {
            input: input.clone(),
            output: output.clone(),
            producer: producer.clone(),
            flaky: "in-00057".into(),
            flaked: AtomicBool::new(false),
            poison: "in-00120".into(),
            delay: Duration::ZERO,
        })
        .exactly_once(producer.clone())
        .build()
        .await
        .unwrap();
    let stop = engine.shutdown_handle();
    let task = tokio::spawn(engine.run_until(std::future::pending()));
    wait_committed(&group, &input, &[Some(100), Some(100)], 60).await;
    stop.shutdown();
    task.await.unwrap().expect("stops cleanly");
    producer.close().await;

    let seen = counts(&common::read_all(&output, 2, "read_committed").await);
    let want: BTreeMap<String, usize> = (0..200)
        .filter(|&i| i != 120)
        .map(|i| (format!("out-{i:05}"), 1))
        .collect();
    assert_eq!(
        seen, want,
        "read_committed: every output once, none of the poison's"
    );
    // The aborted attempts are in the log, marked aborted: read_uncommitted sees them.
    let raw = counts(&common::read_all(&output, 2, "read_uncommitted").await);
    assert!(
        raw["out-00057"] >= 2,
        "the failed attempt's output was written, then aborted"
    );
    let dead = common::read_all(&dlq, 1, "read_committed").await;
    assert_eq!(
        dead.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
        ["in-00120"],
        "the poison record went to the dead-letter topic once"
    );
}

/// The child side of the kill test: an exactly-once engine run as a separate process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by an_engine_killed_at_random_points_writes_every_output_exactly_once"]
async fn eos_engine_child_process() {
    let var = |k: &str| std::env::var(k).expect("run by a parent test");
    let (input, output, group) = (var("EOS_INPUT"), var("EOS_OUTPUT"), var("EOS_GROUP"));
    let producer = txn_producer(&var("EOS_TXN_ID")).await;
    let engine = Engine::builder(consumer_config(&group, Some("eos-child")))
        .config(EngineConfig::default().with_commit_interval(Duration::from_millis(150)))
        .handler(Transform {
            input,
            output,
            producer: producer.clone(),
            flaky: String::new(),
            flaked: AtomicBool::new(true),
            poison: String::new(),
            delay: Duration::from_millis(2),
        })
        .exactly_once(producer.clone())
        .build()
        .await
        .unwrap();
    engine.run().await.expect("stops cleanly on a signal");
    producer.close().await;
}

fn spawn_child(input: &str, output: &str, group: &str, txn_id: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "eos_engine_child_process",
            "--ignored",
            "--nocapture",
        ])
        .env("EOS_INPUT", input)
        .env("EOS_OUTPUT", output)
        .env("EOS_GROUP", group)
        .env("EOS_TXN_ID", txn_id)
        .env("PAPERBOY_BOOTSTRAP", common::bootstrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child engine")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_killed_at_random_points_writes_every_output_exactly_once() {
    const PER_PARTITION: usize = 1500;
    let client = common::client().await;
    let input = common::new_topic(&client, "eos-kill-in", 2).await;
    let output = common::new_topic(&client, "eos-kill-out", 2).await;
    produce_inputs(&client, &input, 0, 0..PER_PARTITION).await;
    produce_inputs(&client, &input, 1, PER_PARTITION..2 * PER_PARTITION).await;
    let group = common::unique_topic("eos-kill-g");
    let txn_id = common::unique_topic("eos-kill-txn");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let mut rng = common::Rng(seed);

    // Progress is watched on the output's log end (committed offsets cannot be read
    // between a kill and the next start: the killed run's transaction holds them
    // unstable until the next run's producer aborts it).
    let output_end = || async {
        let mut end = 0;
        for p in 0..2 {
            end += client
                .list_offset(&output, p, paperboy::OffsetSpec::Latest)
                .await
                .unwrap();
        }
        end
    };
    let mut kills_mid_stream = 0;
    for round in 0..4 {
        let before = output_end().await;
        let mut child = spawn_child(&input, &output, &group, &txn_id);
        // Killed once it is writing, at a random point.
        let deadline = Instant::now() + Duration::from_secs(60);
        while output_end().await < before + 20 {
            assert!(
                Instant::now() < deadline,
                "round {round}: no output in 60 s"
            );
            assert!(child.try_wait().unwrap().is_none(), "the child exited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let end = output_end().await;
        println!("round {round}: killed with {end} records in the output's log");
        // Fewer than one per input (aborted ones and markers included): mid-stream.
        if end < 2 * PER_PARTITION as i64 {
            kills_mid_stream += 1;
        }
    }
    assert!(
        kills_mid_stream >= 2,
        "the kills came too late to test anything"
    );

    // A last run finishes, and stops cleanly.
    let mut child = spawn_child(&input, &output, &group, &txn_id);
    let end = Some(PER_PARTITION as i64);
    wait_committed(&group, &input, &[end, end], 120).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        child.wait().unwrap().success(),
        "the last run stops cleanly"
    );

    let seen = counts(&common::read_all(&output, 2, "read_committed").await);
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dupes.is_empty(), "outputs read more than once: {dupes:?}");
    let want: Vec<String> = (0..2 * PER_PARTITION)
        .map(|i| format!("out-{i:05}"))
        .collect();
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        want,
        "every input's output"
    );
    let raw = common::read_all(&output, 2, "read_uncommitted").await;
    println!(
        "{} outputs written in all, {} of them aborted",
        raw.len(),
        raw.len() - want.len()
    );
}
