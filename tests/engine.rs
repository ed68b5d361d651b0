//! The engine against a real Kafka broker: hook order in single and bulk mode, modes
//! switching both ways on lag, commits of handled records only (through failures, a
//! kill, a SIGTERM and a rebalance), retries and the dead-letter topic.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use paperboy::engine::{
    BoxError, Engine, EngineConfig, EngineError, Event, Handler, Json, Message, Mode, Observer,
};
use paperboy::{
    Acks, Client, Compression, Consumer, ConsumerConfig, ConsumerRecord, Error, NewRecord,
    TopicPartition,
};
use serde_json::{json, Value};

/// The engine's consumer settings for `group`: the consumer group protocol (KIP-848,
/// `group.protocol=consumer`) for groups made by `common::kip848_group` (named
/// `kip848-...`), or for every group with `PAPERBOY_GROUP_PROTOCOL=consumer`; else the
/// classic protocol with a short session.
fn consumer_config(group: &str) -> ConsumerConfig {
    let kip848 = group.starts_with("kip848-")
        || std::env::var("PAPERBOY_GROUP_PROTOCOL").is_ok_and(|p| p == "consumer");
    let mut props = vec![
        ("bootstrap.servers", common::bootstrap()),
        ("group.id", group.to_owned()),
        ("enable.auto.commit", "false".to_owned()),
        ("auto.offset.reset", "earliest".to_owned()),
    ];
    if kip848 {
        props.push(("group.protocol", "consumer".to_owned()));
    } else {
        props.push(("session.timeout.ms", "6000".to_owned()));
        props.push(("heartbeat.interval.ms", "500".to_owned()));
    }
    ConsumerConfig::from_properties(props).unwrap()
}

/// Writes `values` to one partition in one batch (`None`: a tombstone); keys are `k{i}`.
async fn produce(client: &Client, topic: &str, partition: i32, values: &[Option<Value>]) {
    let records: Vec<NewRecord> = values
        .iter()
        .enumerate()
        .map(|(i, v)| NewRecord {
            key: Some(format!("k{i}").into()),
            value: v.as_ref().map(|v| v.to_string().into()),
            ..NewRecord::default()
        })
        .collect();
    client
        .produce(topic, partition, &records, Compression::Snappy, Acks::All)
        .await
        .expect("produce");
}

fn numbered(n: usize) -> Vec<Option<Value>> {
    (0..n).map(|i| Some(json!({ "n": i }))).collect()
}

/// The committed offsets of `group` for partitions `0..partitions` of `topic`.
async fn committed(group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let c = Consumer::new(consumer_config(group))
        .await
        .expect("consumer");
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let got = c.committed(&tps).await.expect("committed");
    c.close().await;
    tps.iter()
        .map(|tp| got.get(tp).copied().flatten())
        .collect()
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

type Log = Arc<Mutex<Vec<String>>>;

fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// Collects every event.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);

impl Observer for Events {
    fn on_event(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Events {
    fn modes(&self) -> Vec<Mode> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Mode { mode, .. } => Some(*mode),
                _ => None,
            })
            .collect()
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|e| f(e)).count()
    }
}

/// A handler that logs every hook call as `hook:partition:offset` (bulk hooks:
/// `hook:partition:first+count`), and acts on the JSON value: `"fail": true` makes
/// `on_message` fail, `"panic": true` panics, `"sleep_ms": n` sleeps first.
#[derive(Clone)]
struct Recorder {
    topics: Vec<String>,
    log: Log,
    /// `on_error` / `on_bulk_error` swallow the error.
    swallow: bool,
    /// Each record takes this long.
    delay: Duration,
}

impl Recorder {
    fn new(topic: &str) -> Self {
        Recorder {
            topics: vec![topic.to_owned()],
            log: Log::default(),
            swallow: false,
            delay: Duration::ZERO,
        }
    }

    fn note(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

fn at(r: &ConsumerRecord) -> String {
    format!("{}:{}", r.partition, r.offset)
}

fn span<P>(msgs: &[Message<P>]) -> String {
    match msgs.first() {
        Some(m) => format!("{}:{}+{}", m.record.partition, m.record.offset, msgs.len()),
        None => "empty".into(),
    }
}

impl Handler for Recorder {
    type Payload = Json<Value>;
    type Context = Vec<&'static str>;

    fn topics(&self) -> Vec<String> {
        self.topics.clone()
    }

    async fn define_context(&self) -> Vec<&'static str> {
        self.note("define_context".into());
        vec!["ctx"]
    }

    async fn did_receive_message(
        &self,
        msg: Message<Json<Value>>,
        ctx: &mut Vec<&'static str>,
    ) -> Result<Message<Json<Value>>, BoxError> {
        assert_eq!(ctx, &["ctx"], "the context of this call");
        self.note(format!("did_receive_message:{}", at(&msg.record)));
        Ok(msg)
    }

    async fn on_message(
        &self,
        msg: &Message<Json<Value>>,
        _: &mut Vec<&'static str>,
    ) -> Result<(), BoxError> {
        let v = &msg.value.as_ref().unwrap().0;
        self.note(format!("on_message:{}", at(&msg.record)));
        if let Some(ms) = v["sleep_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if v["panic"] == true {
            panic!("handler panics on {}", at(&msg.record));
        }
        if v["fail"] == true {
            return Err(format!("cannot handle {}", at(&msg.record)).into());
        }
        self.note(format!("handled:{}", at(&msg.record)));
        Ok(())
    }

    async fn on_tombstone(
        &self,
        msg: &Message<Json<Value>>,
        _: &mut Vec<&'static str>,
    ) -> Result<(), BoxError> {
        self.note(format!("on_tombstone:{}", at(&msg.record)));
        Ok(())
    }

    async fn on_error(
        &self,
        error: EngineError,
        record: &ConsumerRecord,
        _: &mut Vec<&'static str>,
    ) -> Option<EngineError> {
        let kind = match &error {
            EngineError::Payload { .. } => "payload",
            EngineError::Handler { .. } => "handler",
            _ => "other",
        };
        self.note(format!("on_error:{}:{kind}", at(record)));
        (!self.swallow).then_some(error)
    }

    async fn on_finish_handling(
        &self,
        msgs: &[Message<Json<Value>>],
        _: &mut Vec<&'static str>,
    ) -> Result<(), BoxError> {
        self.note(format!("on_finish_handling:{}", span(msgs)));
        Ok(())
    }

    async fn did_receive_bulk_messages(
        &self,
        msgs: Vec<Message<Json<Value>>>,
        _: &mut Vec<&'static str>,
    ) -> Result<Vec<Message<Json<Value>>>, BoxError> {
        self.note(format!("did_receive_bulk_messages:{}", span(&msgs)));
        Ok(msgs)
    }

    async fn on_bulk(
        &self,
        msgs: &[Message<Json<Value>>],
        ctx: &mut Vec<&'static str>,
    ) -> Result<(), BoxError> {
        self.note(format!("on_bulk:{}", span(msgs)));
        for m in msgs {
            if m.is_tombstone() {
                self.on_tombstone(m, ctx).await?;
            } else {
                self.on_message(m, ctx).await?;
            }
        }
        Ok(())
    }

    async fn on_bulk_error(
        &self,
        _error: EngineError,
        records: &[ConsumerRecord],
        _: &mut Vec<&'static str>,
    ) -> Option<EngineError> {
        self.note(format!(
            "on_bulk_error:{}+{}",
            at(&records[0]),
            records.len()
        ));
        (!self.swallow).then_some(_error)
    }
}

/// Builds and starts an engine in a task; returns its shutdown handle, health and task.
async fn start(
    group: &str,
    config: EngineConfig,
    handler: Recorder,
    events: &Events,
) -> (
    paperboy::engine::ShutdownHandle,
    paperboy::engine::Health,
    tokio::task::JoinHandle<Result<(), EngineError>>,
) {
    let engine = Engine::builder(consumer_config(group))
        .config(config)
        .handler(handler)
        .observer(events.clone())
        .build()
        .await
        .expect("engine builds");
    let stop = engine.shutdown_handle();
    let health = engine.health();
    let task = tokio::spawn(engine.run_until(std::future::pending()));
    (stop, health, task)
}

fn single_mode() -> EngineConfig {
    EngineConfig::default().with_commit_interval(Duration::from_millis(200))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_mode_hook_order_for_messages_tombstones_and_errors() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "engine-hooks", 1).await;
    produce(
        &client,
        &topic,
        0,
        &[
            Some(json!({"n": 0})),
            None,
            Some(json!({"n": 2, "fail": true})),
            Some(json!({"n": 3})),
        ],
    )
    .await;
    // A value that is not JSON at all, at offset 4.
    client
        .produce(
            &topic,
            0,
            &[NewRecord {
                value: Some(Bytes::from_static(b"not json {")),
                ..NewRecord::default()
            }],
            Compression::None,
            Acks::All,
        )
        .await
        .unwrap();
    let group = common::unique_topic("g-hooks");
    let mut handler = Recorder::new(&topic);
    handler.swallow = true;
    let log = handler.log.clone();
    let events = Events::default();
    let (stop, health, task) = start(&group, single_mode(), handler, &events).await;
    wait_for("5 records handled", 30, || health.stats().processed == 5).await;
    stop.shutdown();
    task.await.unwrap().expect("engine stops cleanly");

    let expected: Vec<String> = [
        "define_context",
        "did_receive_message:0:0",
        "on_message:0:0",
        "handled:0:0",
        "on_finish_handling:0:0+1",
        "define_context",
        "did_receive_message:0:1",
        "on_tombstone:0:1",
        "on_finish_handling:0:1+1",
        "define_context",
        "did_receive_message:0:2",
        "on_message:0:2",
        "on_error:0:2:handler",
        "define_context",
        "did_receive_message:0:3",
        "on_message:0:3",
        "handled:0:3",
        "on_finish_handling:0:3+1",
        "define_context",
        "on_error:0:4:payload",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(lines(&log), expected);
    assert_eq!(committed(&group, &topic, 1).await, [Some(5)]);
    assert_eq!(events.modes(), [Mode::Single]);
    assert_eq!(
        health.stats().failed,
        0,
        "swallowed errors are not failures"
    );
    assert!(health.is_live(Duration::from_secs(5)));
    assert!(health.last_commit().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_mode_hook_order_and_a_failed_batch_is_not_committed() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "engine-bulk", 1).await;
    let mut values = numbered(5);
    values[3] = None;
    produce(&client, &topic, 0, &values).await;
    let bulk = EngineConfig::default()
        .with_bulk_mode(true)
        .with_bulk_mode_threshold(None)
        .with_bulk_mode_timeout(Duration::from_millis(500));

    // A good batch: every bulk hook in order, then committed.
    let group = common::unique_topic("g-bulk");
    let handler = Recorder::new(&topic);
    let log = handler.log.clone();
    let events = Events::default();
    let (stop, health, task) = start(&group, bulk.clone(), handler, &events).await;
    wait_for("5 records handled", 30, || health.stats().processed == 5).await;
    wait_for("a commit", 10, || health.stats().commits >= 1).await;
    assert_eq!(
        committed(&group, &topic, 1).await,
        [Some(5)],
        "committed after the batch, before stopping"
    );
    stop.shutdown();
    task.await.unwrap().expect("engine stops cleanly");
    let expected: Vec<String> = [
        "define_context",
        "did_receive_bulk_messages:0:0+5",
        "on_bulk:0:0+5",
        "on_message:0:0",
        "handled:0:0",
        "on_message:0:1",
        "handled:0:1",
        "on_message:0:2",
        "handled:0:2",
        "on_tombstone:0:3",
        "on_message:0:4",
        "handled:0:4",
        "on_finish_handling:0:0+5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(lines(&log), expected);
    assert_eq!(events.modes(), [Mode::Bulk]);

    // A batch that fails, with fail_on_exception: on_bulk_error, no on_finish_handling,
    // the engine stops with the error and nothing of the batch is committed.
    produce(
        &client,
        &topic,
        0,
        &[Some(json!({"n": 5})), Some(json!({"n": 6, "fail": true}))],
    )
    .await;
    let group2 = common::unique_topic("g-bulk-fail");
    let handler = Recorder::new(&topic);
    let log = handler.log.clone();
    let (_stop, _health, task) = start(&group2, bulk, handler, &Events::default()).await;
    let err = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the engine stops on the failure")
        .unwrap()
        .expect_err("fail_on_exception returns the error");
    assert!(matches!(err, EngineError::Handler { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot handle 0:6"), "{err}");
    let log = lines(&log);
    assert!(log.contains(&"on_bulk_error:0:0+7".to_string()), "{log:?}");
    assert!(
        !log.iter().any(|l| l.starts_with("on_finish_handling")),
        "{log:?}"
    );
    assert_eq!(committed(&group2, &topic, 1).await, [None]);

    // The same batch without fail_on_exception: handled again record by record, only
    // the failing record is skipped, and the engine goes on.
    let group3 = common::unique_topic("g-bulk-skip");
    let handler = Recorder::new(&topic);
    let log = handler.log.clone();
    let skip = EngineConfig::default()
        .with_bulk_mode(true)
        .with_bulk_mode_threshold(None)
        .with_bulk_mode_timeout(Duration::from_millis(500))
        .with_fail_on_exception(false);
    let (stop, health, task) = start(&group3, skip, handler, &Events::default()).await;
    wait_for("the batch through", 30, || health.stats().processed == 7).await;
    stop.shutdown();
    task.await.unwrap().expect("stops cleanly");
    let log = lines(&log);
    assert!(log.contains(&"on_bulk_error:0:0+7".to_string()), "{log:?}");
    // After the batch failed: each record alone, in single-mode order.
    let alone: Vec<&String> = log
        .iter()
        .skip_while(|l| !l.starts_with("on_bulk_error"))
        .filter(|l| l.starts_with("handled") || l.starts_with("on_error"))
        .collect();
    assert_eq!(
        alone,
        [
            "handled:0:0",
            "handled:0:1",
            "handled:0:2",
            "handled:0:4",
            "handled:0:5",
            "on_error:0:6:handler"
        ],
        "{log:?}"
    );
    assert_eq!(health.stats().failed, 1);
    assert_eq!(committed(&group3, &topic, 1).await, [Some(7)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_on_exception_commits_what_completed_and_returns_the_error() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "engine-fail", 1).await;
    let mut values = numbered(10);
    values[5] = Some(json!({"n": 5, "fail": true}));
    produce(&client, &topic, 0, &values).await;

    // On: stops at offset 5; 0..5 handled and committed, nothing after.
    let group = common::unique_topic("g-fail-on");
    let handler = Recorder::new(&topic);
    let log = handler.log.clone();
    let events = Events::default();
    let (_stop, _health, task) = start(&group, single_mode(), handler, &events).await;
    let err = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops")
        .unwrap()
        .expect_err("the handler's error");
    assert!(err.to_string().contains("cannot handle 0:5"), "{err}");
    let handled: Vec<String> = lines(&log)
        .into_iter()
        .filter(|l| l.starts_with("handled"))
        .collect();
    assert_eq!(
        handled,
        (0..5).map(|i| format!("handled:0:{i}")).collect::<Vec<_>>()
    );
    assert_eq!(committed(&group, &topic, 1).await, [Some(5)]);
    assert_eq!(
        events.count(|e| matches!(e, Event::Failed { offset: 5, .. })),
        1
    );

    // Off: the failure is logged and skipped; everything else handled and committed.
    let group = common::unique_topic("g-fail-off");
    let handler = Recorder::new(&topic);
    let log = handler.log.clone();
    let config = single_mode().with_fail_on_exception(false);
    let (stop, health, task) = start(&group, config, handler, &Events::default()).await;
    wait_for("9 records handled", 30, || health.stats().processed == 9).await;
    stop.shutdown();
    task.await.unwrap().expect("stops cleanly");
    let handled = lines(&log)
        .iter()
        .filter(|l| l.starts_with("handled"))
        .count();
    assert_eq!(handled, 9);
    assert_eq!(health.stats().failed, 1);
    assert_eq!(committed(&group, &topic, 1).await, [Some(10)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_typed_error_and_commits_stop_before_it() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "engine-panic", 1).await;
    let mut values = numbered(4);
    values[2] = Some(json!({"n": 2, "panic": true}));
    produce(&client, &topic, 0, &values).await;
    let group = common::unique_topic("g-panic");
    let (_stop, _health, task) = start(
        &group,
        single_mode(),
        Recorder::new(&topic),
        &Events::default(),
    )
    .await;
    let err = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops")
        .unwrap()
        .expect_err("the panic, as an error");
    assert!(matches!(err, EngineError::Handler { .. }), "{err:?}");
    assert!(err.to_string().contains("handler panics on 0:2"), "{err}");
    assert_eq!(committed(&group, &topic, 1).await, [Some(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_commit_false_commits_nothing() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "engine-nocommit", 1).await;
    produce(&client, &topic, 0, &numbered(5)).await;
    let group = common::unique_topic("g-nocommit");
    let config = single_mode().with_commit(false);
    let (stop, health, task) =
        start(&group, config, Recorder::new(&topic), &Events::default()).await;
    wait_for("5 records handled", 30, || health.stats().processed == 5).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // past two commit intervals
    stop.shutdown();
    task.await.unwrap().expect("stops cleanly");
    assert_eq!(health.stats().commits, 0);
    assert_eq!(committed(&group, &topic, 1).await, [None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_record_in_hand_then_commits_and_leaves() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "engine-stop", 1).await;
    let mut values = numbered(6);
    values[2] = Some(json!({"n": 2, "sleep_ms": 1500}));
    produce(&client, &topic, 0, &values).await;
    let group = common::unique_topic("g-stop");
    let handler = Recorder::new(&topic);
    let log = handler.log.clone();
    let config = EngineConfig::default().with_commit_interval(Duration::from_millis(60_000));
    let (stop, health, task) = start(&group, config, handler, &Events::default()).await;
    wait_for("record 2 in hand", 30, || {
        lines(&log).contains(&"on_message:0:2".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let running = health.longest_running().expect("a handler is running");
    assert!(running >= Duration::from_millis(300), "{running:?}");
    stop.shutdown();
    task.await.unwrap().expect("stops cleanly");
    let log = lines(&log);
    assert!(
        log.contains(&"handled:0:2".to_string()),
        "the record in hand finished: {log:?}"
    );
    assert!(
        !log.contains(&"on_message:0:3".to_string()),
        "nothing started after the stop: {log:?}"
    );
    assert_eq!(
        committed(&group, &topic, 1).await,
        [Some(3)],
        "the final commit"
    );
    // It left the group: a new member gets the partition at once (no session timeout).
    let started = Instant::now();
    let handler = Recorder::new(&topic);
    let log2 = handler.log.clone();
    let (stop, health, task) = start(&group, single_mode(), handler, &Events::default()).await;
    wait_for("the rest handled", 30, || health.stats().processed == 3).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    stop.shutdown();
    task.await.unwrap().unwrap();
    assert_eq!(lines(&log2)[1], "did_receive_message:0:3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_switch_to_single_when_caught_up_and_back_to_bulk_on_a_new_backlog() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "engine-modes", 1).await;
    produce(&client, &topic, 0, &numbered(1000)).await;
    let group = common::unique_topic("g-modes");
    let config = EngineConfig::default()
        .with_bulk_mode(true)
        .with_bulk_mode_threshold(Some(100))
        .with_bulk_mode_max_records(50)
        .with_bulk_mode_timeout(Duration::from_millis(200))
        .with_commit_interval(Duration::from_millis(200));
    let handler = Recorder::new(&topic);
    let events = Events::default();
    let (stop, health, task) = start(&group, config, handler, &events).await;
    wait_for("the backlog handled", 60, || {
        health.stats().processed == 1000
    })
    .await;
    assert_eq!(
        events.modes(),
        [Mode::Bulk, Mode::Single],
        "bulk on the backlog, single once caught up"
    );

    // A new backlog, written while the engine is caught up: back to bulk.
    produce(&client, &topic, 0, &numbered(1000)).await;
    wait_for("the new backlog handled", 60, || {
        health.stats().processed == 2000
    })
    .await;
    stop.shutdown();
    task.await.unwrap().expect("stops cleanly");
    assert_eq!(
        events.modes(),
        [Mode::Bulk, Mode::Single, Mode::Bulk, Mode::Single],
        "back to bulk on the new backlog, and single again once caught up"
    );
    // Batches in bulk mode, single records in single mode, every record once.
    let handled: Vec<(Mode, i64, usize)> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Handled {
                mode,
                offset,
                records,
                ..
            } => Some((*mode, *offset, *records)),
            _ => None,
        })
        .collect();
    let mut next = 0;
    for (mode, offset, records) in &handled {
        assert_eq!(*offset, next, "in order, none skipped or repeated");
        match mode {
            Mode::Bulk => assert!(*records <= 50),
            Mode::Single => assert_eq!(*records, 1),
        }
        next += *records as i64;
    }
    assert_eq!(next, 2000);
    assert!(handled.iter().filter(|h| h.0 == Mode::Bulk).count() >= 2 * 900 / 50 / 2);
    assert_eq!(committed(&group, &topic, 1).await, [Some(2000)]);
    let stats = health.stats();
    assert_eq!(
        stats.partitions[&TopicPartition::new(&topic, 0)].0,
        Mode::Single
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_goes_to_the_dead_letter_topic_after_its_retries() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "engine-poison", 1).await;
    let dlq = format!("{topic}.dlq");
    client
        .create_topics(&[paperboy::NewTopic::new(&dlq, 1, 1)])
        .await
        .unwrap();
    let mut values = numbered(10);
    values[3] = Some(json!({"n": 3, "fail": true}));
    produce(&client, &topic, 0, &values).await;
    let group = common::unique_topic("g-poison");
    let handler = Recorder::new(&topic);
    let log = handler.log.clone();
    let events = Events::default();
    let config = single_mode()
        .with_max_retries(2)
        .with_retry_backoff(Duration::from_millis(50), Duration::from_secs(10))
        .with_dead_letter_topic("{topic}.dlq");
    let (stop, health, task) = start(&group, config, handler, &events).await;
    wait_for("10 records through", 30, || health.stats().processed == 10).await;
    stop.shutdown();
    task.await
        .unwrap()
        .expect("the engine went on and stops cleanly");

    let log = lines(&log);
    assert_eq!(
        log.iter().filter(|l| *l == "on_message:0:3").count(),
        3,
        "1 try + 2 retries"
    );
    assert_eq!(
        log.iter().filter(|l| l.starts_with("handled")).count(),
        9,
        "the others"
    );
    let stats = health.stats();
    assert_eq!(
        (stats.retried, stats.dead_lettered, stats.failed),
        (2, 1, 0)
    );
    assert_eq!(
        events.count(|e| matches!(e, Event::Retrying { offset: 3, .. })),
        2
    );
    assert_eq!(committed(&group, &topic, 1).await, [Some(10)]);

    let dead = common::read_partition(&client, &dlq, 0, 0, 1).await;
    assert_eq!(dead.len(), 1);
    let (_, key, value, headers) = &dead[0];
    assert_eq!(key.as_deref(), Some(&b"k3"[..]));
    assert_eq!(
        serde_json::from_slice::<Value>(value.as_ref().unwrap()).unwrap(),
        json!({"n": 3, "fail": true})
    );
    let h: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert_eq!(h["paperboy.dlq.topic"], topic);
    assert_eq!(h["paperboy.dlq.partition"], "0");
    assert_eq!(h["paperboy.dlq.offset"], "3");
    assert!(
        h["paperboy.dlq.error"].contains("cannot handle 0:3"),
        "{h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_bulk_mode_only_the_poison_record_goes_to_the_dead_letter_topic() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "engine-poison-bulk", 1).await;
    let dlq = format!("{topic}-dead");
    client
        .create_topics(&[paperboy::NewTopic::new(&dlq, 1, 1)])
        .await
        .unwrap();
    let mut values = numbered(20);
    values[7] = Some(json!({"n": 7, "fail": true}));
    produce(&client, &topic, 0, &values).await;
    let group = common::unique_topic("g-poison-bulk");
    let handler = Recorder::new(&topic);
    let log = handler.log.clone();
    let config = EngineConfig::default()
        .with_bulk_mode(true)
        .with_bulk_mode_threshold(None)
        .with_bulk_mode_timeout(Duration::from_millis(300))
        .with_max_retries(1)
        .with_retry_backoff(Duration::from_millis(10), Duration::from_secs(10))
        .with_dead_letter_topic(dlq.clone());
    let (stop, health, task) = start(&group, config, handler, &Events::default()).await;
    wait_for("20 records through", 30, || health.stats().processed == 20).await;
    stop.shutdown();
    task.await.unwrap().expect("stops cleanly");
    assert_eq!(health.stats().dead_lettered, 1);
    let dead = common::read_partition(&client, &dlq, 0, 0, 1).await;
    assert_eq!(dead[0].1.as_deref(), Some(&b"k7"[..]));
    assert_eq!(
        common::total_records(&client, &dlq, 1).await,
        1,
        "only the poison record"
    );
    // Every good record was handled (some twice: the batch, then one by one).
    let handled: BTreeSet<String> = lines(&log)
        .into_iter()
        .filter(|l| l.starts_with("handled"))
        .collect();
    assert_eq!(handled.len(), 19);
    assert_eq!(committed(&group, &topic, 1).await, [Some(20)]);
}

#[tokio::test]
async fn the_engine_refuses_auto_commit_and_bad_settings() {
    let bootstrap = common::bootstrap();
    let auto = ConsumerConfig::from_properties([
        ("bootstrap.servers", bootstrap.as_str()),
        ("group.id", "g"),
    ])
    .unwrap();
    let err = Engine::builder(auto)
        .handler(Recorder::new("t"))
        .build()
        .await
        .expect_err("auto-commit is on by default");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("enable.auto.commit"), "{err}");

    let err = Engine::builder(consumer_config("g"))
        .handler(Recorder::new("t"))
        .handler(Recorder::new("t"))
        .build()
        .await
        .expect_err("two handlers for one topic");
    assert!(err.to_string().contains("two handlers"), "{err}");

    let err = Engine::builder(consumer_config("g"))
        .build()
        .await
        .expect_err("no handler");
    assert!(err.to_string().contains("at least one handler"), "{err}");

    let err = Engine::builder(consumer_config("g"))
        .handler(Recorder::new("t"))
        .config(EngineConfig::default().with_bulk_mode_max_records(0))
        .build()
        .await
        .expect_err("a zero batch");
    assert!(err.to_string().contains("bulk_mode_max_records"), "{err}");

    let no_group = ConsumerConfig::from_properties([
        ("bootstrap.servers", bootstrap.as_str()),
        ("enable.auto.commit", "false"),
    ])
    .unwrap();
    let err = Engine::builder(no_group)
        .handler(Recorder::new("t"))
        .build()
        .await
        .expect_err("no group");
    assert!(err.to_string().contains("group.id"), "{err}");
}

/// Two engines in one group: the first handles slowly; the second joins mid-way. The
/// first commits what it finished on the partitions it gives up; their new owner starts
/// right there; every record is handled, and the group ends committed at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_while_handling_commits_finished_work_and_loses_nothing() {
    let client = common::client().await;
    let group = if std::env::var("PAPERBOY_GROUP_PROTOCOL").is_ok_and(|p| p == "consumer") {
        // The whole suite on the consumer protocol: the group's heartbeats at 250 ms,
        // not the broker's 5 s (A would finish before B got a partition).
        common::kip848_group(&client, "g-rebalance", 10_000).await
    } else {
        common::unique_topic("g-rebalance")
    };
    rebalance_while_handling(&client, group).await;
}

/// The same with the consumer group protocol (KIP-848): the engine, unchanged, on a
/// group whose assignments the broker makes and revokes incrementally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_while_handling_commits_finished_work_and_loses_nothing_kip848() {
    let client = common::client().await;
    let group = common::kip848_group(&client, "kip848-rebalance", 10_000).await;
    rebalance_while_handling(&client, group).await;
}

async fn rebalance_while_handling(client: &Client, group: String) {
    let topic = common::new_topic(client, "engine-rebalance", 2).await;
    for p in 0..2 {
        produce(client, &topic, p, &numbered(40)).await;
    }
    let config = EngineConfig::default().with_commit_interval(Duration::from_millis(60_000)); // commits only on revocation and stop
    let mut a = Recorder::new(&topic);
    a.delay = Duration::from_millis(50);
    let a_log = a.log.clone();
    let a_events = Events::default();
    let (a_stop, _a_health, a_task) = start(&group, config.clone(), a, &a_events).await;
    wait_for("A under way", 30, || {
        lines(&a_log)
            .iter()
            .filter(|l| l.starts_with("handled"))
            .count()
            >= 10
    })
    .await;

    let mut b = Recorder::new(&topic);
    b.delay = Duration::from_millis(20);
    let b_log = b.log.clone();
    let b_events = Events::default();
    let (b_stop, _b_health, b_task) = start(&group, config, b, &b_events).await;

    let handled = |log: &Log| -> BTreeSet<(i32, i64)> {
        lines(log)
            .iter()
            .filter_map(|l| l.strip_prefix("handled:"))
            .map(|l| {
                let (p, o) = l.split_once(':').unwrap();
                (p.parse().unwrap(), o.parse().unwrap())
            })
            .collect()
    };
    wait_for("all 80 records handled", 60, || {
        handled(&a_log).union(&handled(&b_log)).count() == 80
    })
    .await;
    assert!(!handled(&b_log).is_empty(), "B got a partition");
    a_stop.shutdown();
    b_stop.shutdown();
    a_task.await.unwrap().expect("A stops cleanly");
    b_task.await.unwrap().expect("B stops cleanly");

    // A's revocation committed exactly what A had finished on each partition then.
    let revoked_commits: Vec<(TopicPartition, i64)> = {
        let ev = a_events.0.lock().unwrap();
        let revoked_at = ev
            .iter()
            .position(|e| matches!(e, Event::Revoked { .. }))
            .expect("A had partitions revoked");
        ev[..revoked_at]
            .iter()
            .filter_map(|e| match e {
                Event::Committed { offsets } => Some(offsets.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    assert!(
        !revoked_commits.is_empty(),
        "A committed before giving its partitions up"
    );
    // Whoever read a partition after the rebalance started at that commit: the first
    // record B handled of a partition is the one after A's last finished record.
    for (tp, offset) in &revoked_commits {
        let a_done = handled(&a_log)
            .iter()
            .filter(|(p, o)| *p == tp.partition && *o < *offset)
            .count() as i64;
        assert_eq!(
            a_done, *offset,
            "A finished every record below its commit of {tp}"
        );
        let b_first = lines(&b_log)
            .iter()
            .filter_map(|l| l.strip_prefix("did_receive_message:"))
            .map(|l| l.split_once(':').unwrap())
            .filter(|(p, _)| p.parse::<i32>().unwrap() == tp.partition)
            .map(|(_, o)| o.parse::<i64>().unwrap())
            .next();
        if let Some(first) = b_first {
            assert_eq!(first, *offset, "B started {tp} at A's commit");
        }
    }
    assert_eq!(committed(&group, &topic, 2).await, [Some(40), Some(40)]);
}

/// The child side of the kill and SIGTERM tests: run by them as a separate process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by engine_killed_mid_record / engine_stops_on_sigterm"]
async fn engine_child_process() {
    let topic = std::env::var("ENGINE_CHILD_TOPIC").expect("run by a parent test");
    let group = std::env::var("ENGINE_CHILD_GROUP").unwrap();
    let log_path = std::env::var("ENGINE_CHILD_LOG").unwrap();

    struct Child {
        topic: String,
        log: Mutex<std::fs::File>,
    }
    impl Child {
        fn write(&self, line: String) {
            use std::io::Write;
            let mut f = self.log.lock().unwrap();
            writeln!(f, "{line}").unwrap();
            f.flush().unwrap();
        }
    }
    impl Handler for Child {
        type Payload = Json<Value>;
        type Context = ();
        fn topics(&self) -> Vec<String> {
            vec![self.topic.clone()]
        }
        async fn on_message(&self, msg: &Message<Json<Value>>, _: &mut ()) -> Result<(), BoxError> {
            self.write(format!("start {}", msg.record.offset));
            if let Some(ms) = msg.value.as_ref().unwrap().0["child_sleep_ms"].as_u64() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            self.write(format!("done {}", msg.record.offset));
            Ok(())
        }
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap();
    let engine = Engine::builder(consumer_config(&group))
        .config(EngineConfig::default().with_commit_interval(Duration::from_millis(100)))
        .handler(Child {
            topic,
            log: Mutex::new(log),
        })
        .build()
        .await
        .unwrap();
    engine.run().await.expect("stops cleanly on a signal");
}

fn spawn_child(topic: &str, group: &str, log: &std::path::Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "engine_child_process",
            "--ignored",
            "--nocapture",
        ])
        .env("ENGINE_CHILD_TOPIC", topic)
        .env("ENGINE_CHILD_GROUP", group)
        .env("ENGINE_CHILD_LOG", log)
        .env("PAPERBOY_BOOTSTRAP", common::bootstrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child engine")
}

fn child_log(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn temp_log(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(common::unique_topic(name));
    let _ = std::fs::remove_file(&p);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_killed_mid_record_commits_nothing_past_it_and_a_restart_handles_everything() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "engine-kill", 1).await;
    let mut values = numbered(20);
    // Only the child sleeps on it (the restart's handler does not).
    values[12] = Some(json!({"n": 12, "child_sleep_ms": 600_000}));
    produce(&client, &topic, 0, &values).await;
    let group = common::unique_topic("g-kill");
    let log = temp_log("engine-kill-log");
    let mut child = spawn_child(&topic, &group, &log);
    wait_for("the child mid-record 12", 60, || {
        child_log(&log).contains(&"start 12".to_string())
    })
    .await;
    // Several commit intervals pass while record 12 is in hand.
    tokio::time::sleep(Duration::from_millis(800)).await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let lines = child_log(&log);
    assert!(!lines.contains(&"done 12".to_string()));
    assert_eq!(
        committed(&group, &topic, 1).await,
        [Some(12)],
        "everything before the unfinished record, and nothing beyond it"
    );

    // A restart (after the dead member's session times out) handles the rest.
    let handler = Recorder::new(&topic);
    let restart_log = handler.log.clone();
    let (stop, health, task) = start(&group, single_mode(), handler, &Events::default()).await;
    wait_for("records 12..20 handled", 60, || {
        health.stats().processed == 8
    })
    .await;
    stop.shutdown();
    task.await.unwrap().expect("stops cleanly");
    let mut all: BTreeSet<i64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("done "))
        .map(|o| o.parse().unwrap())
        .collect();
    let again: Vec<i64> = self::lines(&restart_log)
        .iter()
        .filter_map(|l| l.strip_prefix("handled:0:"))
        .map(|o| o.parse().unwrap())
        .collect();
    assert_eq!(
        again,
        (12..20).collect::<Vec<_>>(),
        "the restart began at the unfinished record"
    );
    all.extend(again);
    assert_eq!(all, (0..20).collect(), "every record handled at least once");
    assert_eq!(committed(&group, &topic, 1).await, [Some(20)]);
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_stops_on_sigterm_after_finishing_the_record_in_hand() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "engine-term", 1).await;
    let mut values = numbered(10);
    values[4] = Some(json!({"n": 4, "child_sleep_ms": 1500}));
    produce(&client, &topic, 0, &values).await;
    let group = common::unique_topic("g-term");
    let log = temp_log("engine-term-log");
    let mut child = spawn_child(&topic, &group, &log);
    wait_for("the child mid-record 4", 60, || {
        child_log(&log).contains(&"start 4".to_string())
    })
    .await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "the child exits cleanly: {exit:?}");
    let lines = child_log(&log);
    assert!(
        lines.contains(&"done 4".to_string()),
        "the record in hand finished: {lines:?}"
    );
    assert!(
        !lines.contains(&"start 5".to_string()),
        "nothing started after the signal: {lines:?}"
    );
    assert_eq!(committed(&group, &topic, 1).await, [Some(5)]);
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_record_goes_to_the_handler_of_its_topic() {
    let client = common::client().await;
    let orders = common::new_topic(&client, "engine-route-a", 2).await;
    let clicks = common::new_topic(&client, "engine-route-b", 3).await;
    for p in 0..2 {
        produce(&client, &orders, p, &numbered(5)).await;
    }
    for p in 0..3 {
        produce(&client, &clicks, p, &numbered(7)).await;
    }
    let group = common::unique_topic("g-route");
    let (a, b) = (Recorder::new(&orders), Recorder::new(&clicks));
    let (a_log, b_log) = (a.log.clone(), b.log.clone());
    let engine = Engine::builder(consumer_config(&group))
        .config(single_mode())
        .handler(a)
        .handler(b)
        .build()
        .await
        .unwrap();
    assert_eq!(engine.topics(), {
        let mut t = vec![orders.clone(), clicks.clone()];
        t.sort();
        t
    });
    let stop = engine.shutdown_handle();
    let health = engine.health();
    let task = tokio::spawn(engine.run_until(std::future::pending()));
    wait_for("31 records handled", 30, || health.stats().processed == 31).await;
    stop.shutdown();
    task.await.unwrap().unwrap();
    let handled = |log: &Log| {
        lines(log)
            .iter()
            .filter(|l| l.starts_with("handled"))
            .cloned()
            .collect::<BTreeSet<String>>()
    };
    let expect = |parts: i32, n: i64| {
        (0..parts)
            .flat_map(|p| (0..n).map(move |o| format!("handled:{p}:{o}")))
            .collect::<BTreeSet<String>>()
    };
    assert_eq!(handled(&a_log), expect(2, 5));
    assert_eq!(handled(&b_log), expect(3, 7));
    assert_eq!(committed(&group, &orders, 2).await, [Some(5), Some(5)]);
    assert_eq!(
        committed(&group, &clicks, 3).await,
        [Some(7), Some(7), Some(7)]
    );
}

/// A value that does not decode into the handler's payload type (`Json<Value>`: not JSON)
/// takes the same path as a failing handler: retries, then the dead-letter topic, and the
/// partition goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_value_goes_to_the_dead_letter_topic() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "engine-undecodable", 1).await;
    let dlq = format!("{topic}.dlq");
    client
        .create_topics(&[paperboy::NewTopic::new(&dlq, 1, 1)])
        .await
        .unwrap();
    let records: Vec<NewRecord> = (0..6)
        .map(|i| NewRecord {
            key: Some(format!("k{i}").into()),
            value: Some(if i == 2 {
                Bytes::from_static(b"{not json")
            } else {
                json!({ "n": i }).to_string().into()
            }),
            ..NewRecord::default()
        })
        .collect();
    client
        .produce(&topic, 0, &records, Compression::Snappy, Acks::All)
        .await
        .unwrap();
    let group = common::unique_topic("g-undecodable");
    let events = Events::default();
    let config = single_mode()
        .with_max_retries(1)
        .with_retry_backoff(Duration::from_millis(20), Duration::from_secs(10))
        .with_dead_letter_topic("{topic}.dlq");
    let (stop, health, task) = start(&group, config, Recorder::new(&topic), &events).await;
    wait_for("6 records through", 30, || health.stats().processed == 6).await;
    stop.shutdown();
    task.await.unwrap().expect("the engine went on");
    assert_eq!(health.stats().dead_lettered, 1);
    assert_eq!(committed(&group, &topic, 1).await, [Some(6)]);
    let dead = common::read_partition(&client, &dlq, 0, 0, 1).await;
    let (_, key, value, headers) = &dead[0];
    assert_eq!(key.as_deref(), Some(&b"k2"[..]));
    assert_eq!(
        value.as_deref(),
        Some(&b"{not json"[..]),
        "the value as it was"
    );
    let error = headers
        .iter()
        .find(|(k, _)| &k[..] == b"paperboy.dlq.error")
        .and_then(|(_, v)| v.clone())
        .unwrap();
    assert!(
        String::from_utf8_lossy(&error).contains("does not decode"),
        "{error:?}"
    );
}
