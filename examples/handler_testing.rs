//! Testing a service built on the Paperboy engine, in `cargo test`, with the in-process
//! Kafka cluster of `paperboy-mock` (a dev-dependency: nothing to install, no broker).
//!
//! The service: an [`OrderBook`] handler that parses orders (JSON) and records them in a
//! ledger, and refuses an order whose total is not positive. The tests below check what
//! a service author cares about:
//!
//! - every order produced is handled exactly once, and the group's committed offsets
//!   reach the high watermarks (read on the cluster, with `Cluster::committed`);
//! - a poison order: with `fail_on_exception` (the default) the engine retries it
//!   `max_retries` times, stops, returns the handler's error, and its commit stops at the
//!   poison record (the next run handles it again); with a `dead_letter_topic` the order
//!   goes there and the partition goes on;
//! - faults: the coordinator refusing commits (NOT_COORDINATOR) and then moving to
//!   another node while the engine runs; the commits still land.
//!
//! Waits are on the cluster's state (`Cluster::wait_until`) or on the engine's own
//! completion, each bounded by a timeout: no sleeps.
//!
//! ```sh
//! cargo test --example handler_testing    # the tests (also part of `cargo test`)
//! cargo run --example handler_testing     # the first scenario, narrated
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paperboy::engine::{
    BoxError, Engine, EngineConfig, EngineError, Handler, Json, Message, ShutdownHandle,
};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::ConsumerConfig;
use paperboy_mock::Cluster;
use serde::Deserialize;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------
// The service under test (in a real project: your crate's code).
// ---------------------------------------------------------------------------------------

/// An order as the shop writes it to the `orders` topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Order {
    pub id: u64,
    pub customer: String,
    pub total_cents: i64,
}

/// Why an order was refused.
#[derive(Debug)]
pub struct Refused {
    pub id: u64,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "order {} has no positive total", self.id)
    }
}

impl std::error::Error for Refused {}

/// Where handled orders go: a database in the service, a vector here.
pub type Ledger = Arc<Mutex<Vec<Order>>>;

/// The handler: records each order in the ledger.
pub struct OrderBook {
    pub topic: String,
    pub ledger: Ledger,
    /// Every refusal (one per attempt), so a test can count retries.
    pub refusals: Arc<Mutex<Vec<u64>>>,
}

impl Handler for OrderBook {
    type Payload = Json<Order>;
    type Context = ();

    fn topics(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    async fn on_message(&self, msg: &Message<Json<Order>>, _: &mut ()) -> Result<(), BoxError> {
        let Json(order) = msg.value.as_ref().expect("tombstones go to on_tombstone");
        if order.total_cents <= 0 {
            self.refusals.lock().unwrap().push(order.id);
            return Err(Box::new(Refused { id: order.id }));
        }
        self.ledger.lock().unwrap().push(order.clone());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Test helpers.
// ---------------------------------------------------------------------------------------

/// The longest any step of a test waits.
const TIMEOUT: Duration = Duration::from_secs(30);

fn order_json(id: u64, total_cents: i64) -> String {
    format!(
        r#"{{"id":{id},"customer":"c{}","total_cents":{total_cents}}}"#,
        id % 7
    )
}

/// Writes orders (keyed by id) with Paperboy's producer; returns each order's
/// (partition, offset).
async fn produce(bootstrap: &str, topic: &str, orders: &[(u64, i64)]) -> Vec<(i32, i64)> {
    let producer = Producer::new(ProducerConfig::new(bootstrap)).await.unwrap();
    let mut pending = Vec::new();
    for &(id, total) in orders {
        let record = ProducerRecord::new(topic)
            .with_key(format!("order-{id}"))
            .with_value(order_json(id, total));
        pending.push(producer.enqueue(record).await.unwrap());
    }
    let mut placed = Vec::new();
    for d in pending {
        let d = d.await.unwrap();
        placed.push((d.partition, d.offset));
    }
    producer.close().await;
    placed
}

/// The engine's consumer: a group member reading from the beginning, auto-commit off.
fn consumer(bootstrap: &str, group: &str) -> ConsumerConfig {
    ConsumerConfig::from_properties([
        ("bootstrap.servers", bootstrap),
        ("group.id", group),
        ("enable.auto.commit", "false"), // required: the engine commits
        ("auto.offset.reset", "earliest"),
    ])
    .unwrap()
}

/// A running engine: stop it with `stop.shutdown()`, then await `running`.
struct Running {
    stop: ShutdownHandle,
    running: JoinHandle<Result<(), EngineError>>,
}

async fn start(bootstrap: &str, group: &str, config: EngineConfig, book: OrderBook) -> Running {
    let engine = Engine::builder(consumer(bootstrap, group))
        .config(config)
        .handler(book)
        .build()
        .await
        .unwrap();
    Running {
        stop: engine.shutdown_handle(),
        // run_until with a future that never completes: only the handle (or a failure)
        // stops it; `run()` would also stop on SIGTERM/SIGINT.
        running: tokio::spawn(engine.run_until(std::future::pending())),
    }
}

impl Running {
    /// Stops the engine (finish, commit, leave the group) and returns how `run` ended.
    async fn stop(self) -> Result<(), EngineError> {
        self.stop.shutdown();
        self.finished().await
    }

    /// How `run` ended, without asking it to stop (it stops by itself on a failure with
    /// `fail_on_exception`).
    async fn finished(self) -> Result<(), EngineError> {
        tokio::time::timeout(TIMEOUT, self.running)
            .await
            .expect("the engine stopped in time")
            .expect("the engine's task did not panic")
    }
}

/// Whether `group`'s commits on every partition of `topic` equal the high watermarks.
fn all_committed(c: &Cluster, group: &str, topic: &str, partitions: i32) -> bool {
    (0..partitions).all(|p| c.committed(group, topic, p) == Some(c.offsets(topic, p).unwrap().1))
}

fn book(topic: &str) -> (OrderBook, Ledger, Arc<Mutex<Vec<u64>>>) {
    let ledger = Ledger::default();
    let refusals = Arc::new(Mutex::new(Vec::new()));
    let book = OrderBook {
        topic: topic.to_owned(),
        ledger: ledger.clone(),
        refusals: refusals.clone(),
    };
    (book, ledger, refusals)
}

/// The ids in the ledger, sorted, and how many times each was recorded.
fn ids(ledger: &Ledger) -> BTreeMap<u64, usize> {
    let mut n = BTreeMap::new();
    for o in ledger.lock().unwrap().iter() {
        *n.entry(o.id).or_default() += 1;
    }
    n
}

// ---------------------------------------------------------------------------------------
// (a) Every order handled exactly once; the commits reach the high watermarks.
// ---------------------------------------------------------------------------------------

async fn every_order_once_and_committed(narrate: bool) {
    let cluster = Cluster::builder()
        .nodes(3)
        .topic("orders", 3)
        .build()
        .await
        .unwrap();
    let bootstrap = cluster.bootstrap();
    let orders: Vec<(u64, i64)> = (1..=300).map(|id| (id, 100 * id as i64)).collect();
    produce(&bootstrap, "orders", &orders).await;
    if narrate {
        println!("cluster at {bootstrap}: 300 orders written to 3 partitions");
    }

    let (book, ledger, refusals) = book("orders");
    let config = EngineConfig::default().with_commit_interval(Duration::from_millis(100)); // commit soon, so the test does not wait 10 s
    let engine = start(&bootstrap, "billing", config, book).await;

    // Commits never pass handling: once they reach the high watermarks, every order
    // has been handled.
    assert!(
        cluster
            .wait_until(TIMEOUT, |c| all_committed(c, "billing", "orders", 3))
            .await,
        "commits did not reach the high watermarks; {} orders handled",
        ledger.lock().unwrap().len()
    );
    engine.stop().await.unwrap();

    let seen = ids(&ledger);
    assert_eq!(seen.len(), 300, "every order handled");
    assert!(seen.values().all(|&n| n == 1), "each once: {seen:?}");
    assert!(refusals.lock().unwrap().is_empty());
    for p in 0..3 {
        let (_, high_watermark) = cluster.offsets("orders", p).unwrap();
        assert_eq!(
            cluster.committed("billing", "orders", p),
            Some(high_watermark)
        );
        if narrate {
            println!("partition {p}: committed {high_watermark} = the high watermark");
        }
    }
    // The engine left the group when it stopped.
    let (_, members) = cluster.group_members("billing").unwrap();
    assert!(members.is_empty(), "{members:?}");
    if narrate {
        println!("300 orders handled once each; the engine left its group");
    }
}

#[tokio::test]
async fn every_order_is_handled_once_and_committed() {
    every_order_once_and_committed(false).await;
}

// ---------------------------------------------------------------------------------------
// (b) A poison order.
// ---------------------------------------------------------------------------------------

/// With `fail_on_exception` (the default) and no dead-letter topic: the poison order is
/// tried 1 + `max_retries` times, the engine stops and returns the handler's error, the
/// orders before it are handled and committed, the commit stops at the poison record
/// (so the next run starts there), and nothing after it is handled.
#[tokio::test]
async fn a_poison_order_stops_the_engine_and_the_commit_stops_before_it() {
    let cluster = Cluster::builder()
        .topic("orders", 1) // one partition: its records are handled in order
        .build()
        .await
        .unwrap();
    let bootstrap = cluster.bootstrap();
    let orders: Vec<(u64, i64)> = (1..=20)
        .map(|id| (id, if id == 8 { -5 } else { 100 }))
        .collect();
    let placed = produce(&bootstrap, "orders", &orders).await;
    let poison_offset = placed[7].1;
    assert_eq!(poison_offset, 7);

    let (book, ledger, refusals) = book("orders");
    let config = EngineConfig::default()
        .with_max_retries(2)
        .with_retry_backoff(Duration::from_millis(10), Duration::from_secs(10))
        .with_commit_interval(Duration::from_millis(100)); // fail_on_exception: true (the default)
    let engine = start(&bootstrap, "billing", config, book).await;

    // No shutdown: the failure stops the engine by itself.
    let err = engine
        .finished()
        .await
        .expect_err("the poison order stops the engine");
    let EngineError::Handler { batch, source } = &err else {
        panic!("not the handler's error: {err:?}");
    };
    assert!(batch.contains("orders"), "names the record: {batch}");
    let refused = source
        .downcast_ref::<Refused>()
        .expect("the handler's own error type");
    assert_eq!(refused.id, 8);

    assert_eq!(
        *refusals.lock().unwrap(),
        vec![8, 8, 8],
        "1 try + 2 retries"
    );
    let seen: Vec<u64> = ids(&ledger).into_keys().collect();
    assert_eq!(
        seen,
        (1..=7).collect::<Vec<_>>(),
        "the orders before it, nothing after"
    );
    assert_eq!(
        cluster.committed("billing", "orders", 0),
        Some(poison_offset),
        "committed up to the poison record, not past it"
    );
    let (_, members) = cluster.group_members("billing").unwrap();
    assert!(members.is_empty(), "the engine left the group: {members:?}");
}

/// With a `dead_letter_topic`: after its retries the poison order is written there (as
/// it was, plus `paperboy.dlq.*` headers) and the partition goes on; every offset is
/// committed.
#[tokio::test]
async fn a_poison_order_goes_to_the_dead_letter_topic_and_the_rest_goes_on() {
    let cluster = Cluster::builder()
        .topic("orders", 1)
        .topic("orders.dlq", 1)
        .build()
        .await
        .unwrap();
    let bootstrap = cluster.bootstrap();
    let orders: Vec<(u64, i64)> = (1..=20)
        .map(|id| (id, if id == 8 { 0 } else { 100 }))
        .collect();
    produce(&bootstrap, "orders", &orders).await;

    let (book, ledger, refusals) = book("orders");
    let config = EngineConfig::default()
        .with_max_retries(1)
        .with_retry_backoff(Duration::from_millis(10), Duration::from_secs(10))
        .with_commit_interval(Duration::from_millis(100))
        .with_dead_letter_topic("{topic}.dlq");
    let engine = start(&bootstrap, "billing", config, book).await;
    assert!(
        cluster
            .wait_until(TIMEOUT, |c| all_committed(c, "billing", "orders", 1)
                && c.offsets("orders.dlq", 0) == Some((0, 1)))
            .await,
        "not all committed, or nothing dead-lettered"
    );
    engine.stop().await.unwrap();

    assert_eq!(*refusals.lock().unwrap(), vec![8, 8], "1 try + 1 retry");
    let seen: Vec<u64> = ids(&ledger).into_keys().collect();
    let want: Vec<u64> = (1..=20).filter(|&id| id != 8).collect();
    assert_eq!(seen, want, "every other order, once each");
    assert_eq!(cluster.committed("billing", "orders", 0), Some(20));

    // The dead letter, read back with Paperboy's consumer.
    let reader = paperboy::Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", bootstrap.as_str()),
            ("auto.offset.reset", "earliest"),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    reader
        .assign(&[paperboy::consumer::TopicPartition::new("orders.dlq", 0)])
        .unwrap();
    let dead = tokio::time::timeout(TIMEOUT, reader.recv())
        .await
        .expect("the dead letter arrives")
        .unwrap();
    reader.close().await;
    assert_eq!(dead.key.as_deref(), Some(&b"order-8"[..]));
    assert_eq!(dead.value.as_deref(), Some(order_json(8, 0).as_bytes()));
    let headers: BTreeMap<String, String> = dead
        .headers()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert_eq!(headers["paperboy.dlq.topic"], "orders");
    assert_eq!(headers["paperboy.dlq.partition"], "0");
    assert_eq!(headers["paperboy.dlq.offset"], "7");
    assert!(
        headers["paperboy.dlq.error"].contains("order 8 has no positive total"),
        "{headers:?}"
    );
}

// ---------------------------------------------------------------------------------------
// (c) Faults: the coordinator refuses commits, then moves; the commits still land.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn commits_land_through_not_coordinator_and_a_coordinator_move() {
    use paperboy_mock::{ApiKey, Fault, ResponseError};

    let cluster = Cluster::builder()
        .nodes(3)
        .topic("orders", 3)
        .build()
        .await
        .unwrap();
    let bootstrap = cluster.bootstrap();
    // The first two commits are refused as if the coordinator had moved away.
    let refused =
        cluster.inject(Fault::error(ApiKey::OffsetCommit, ResponseError::NotCoordinator).times(2));
    let first: Vec<(u64, i64)> = (1..=150).map(|id| (id, 100)).collect();
    produce(&bootstrap, "orders", &first).await;

    let (book, ledger, _) = book("orders");
    let config = EngineConfig::default().with_commit_interval(Duration::from_millis(50));
    let engine = start(&bootstrap, "billing", config, book).await;
    assert!(
        cluster
            .wait_until(TIMEOUT, |c| all_committed(c, "billing", "orders", 3))
            .await,
        "the first half's commits did not land"
    );
    assert_eq!(
        cluster.fault_remaining(refused),
        None,
        "both refusals used up"
    );

    // The coordinator moves to another node mid-run; more orders arrive.
    let old = cluster.coordinator("billing");
    let new = (old + 1) % 3;
    cluster.move_coordinator("billing", new);
    let second: Vec<(u64, i64)> = (151..=300).map(|id| (id, 100)).collect();
    produce(&bootstrap, "orders", &second).await;
    assert!(
        cluster
            .wait_until(TIMEOUT, |c| all_committed(c, "billing", "orders", 3))
            .await,
        "the second half's commits did not land on the new coordinator"
    );
    engine.stop().await.unwrap();

    // The commits after the move went to the new coordinator.
    let to_new = cluster
        .requests()
        .iter()
        .filter(|r| r.api == ApiKey::OffsetCommit && r.node == new)
        .count();
    assert!(to_new > 0, "no OffsetCommit reached node {new}");
    let seen = ids(&ledger);
    assert_eq!(seen.len(), 300, "every order handled");
    assert!(seen.values().all(|&n| n == 1), "each once: {seen:?}");
}

/// `cargo run --example handler_testing`: the first scenario, narrated.
#[tokio::main]
async fn main() {
    every_order_once_and_committed(true).await;
}
