//! The quickstart: a PHQ producer writes orders and clicks; an engine with two handlers
//! consumes them, orders one at a time, clicks in bulk while they are backed up, and
//! commits what it handled.
//!
//! With no broker given it starts an in-process Kafka cluster (`paperboy-mock`, three
//! nodes on loopback ports), so it needs nothing but Rust; with one (an argument or
//! `KAFKA_BOOTSTRAP`) it runs against that broker:
//!
//! ```sh
//! cargo run --example quickstart                      # in-process cluster
//! cargo run --example quickstart -- 127.0.0.1:9092    # a real broker (scripts/kafka start)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use paperboy::engine::{
    BoxError, Engine, EngineConfig, Envelope, Event, Handler, Message, Mode, Observer,
};
use paperboy::{phq, Client, ClientConfig, ConsumerConfig, NewTopic};
use serde::Deserialize;
use serde_json::json;

/// The payload of an order, as the producing service wrote it.
#[derive(Debug, Deserialize)]
struct Order {
    id: u64,
    total: f64,
}

/// Handles orders one by one.
struct Orders {
    topic: String,
    handled: Arc<AtomicU64>,
    revenue_cents: Arc<AtomicU64>,
}

impl Handler for Orders {
    type Payload = Envelope<Order>;
    type Context = ();

    fn topics(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    async fn on_message(&self, msg: &Message<Envelope<Order>>, _: &mut ()) -> Result<(), BoxError> {
        let order = &msg.value.as_ref().expect("not a tombstone").item;
        if order.id.is_multiple_of(250) {
            println!(
                "  order {} of {:.2} from {} (partition {}, offset {})",
                order.id,
                order.total,
                msg.value.as_ref().unwrap().hist["svc"],
                msg.record.partition,
                msg.record.offset
            );
        }
        self.revenue_cents
            .fetch_add((order.total * 100.0).round() as u64, Ordering::Relaxed);
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Handles clicks a batch at a time while they are backed up.
struct Clicks {
    topic: String,
    handled: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
}

impl Handler for Clicks {
    type Payload = Envelope<serde_json::Value>;
    type Context = ();

    fn topics(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    async fn on_message(&self, _: &Message<Self::Payload>, _: &mut ()) -> Result<(), BoxError> {
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn on_bulk(&self, msgs: &[Message<Self::Payload>], _: &mut ()) -> Result<(), BoxError> {
        // One write for the whole batch, in a real service.
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.handled.fetch_add(msgs.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Prints mode changes as they happen.
struct PrintEvents;

impl Observer for PrintEvents {
    fn on_event(&self, event: &Event) {
        if let Event::Mode {
            partition,
            mode,
            lag,
        } = event
        {
            println!("  {partition}: {mode:?} mode (backlog {lag})");
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A broker given: use it. None: an in-process cluster, stopped at the end.
    let given = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("KAFKA_BOOTSTRAP").ok());
    let mock = match &given {
        Some(_) => None,
        None => Some(paperboy_mock::Cluster::builder().nodes(3).build().await?),
    };
    let bootstrap = match (&given, &mock) {
        (Some(b), _) => b.clone(),
        (None, Some(cluster)) => cluster.bootstrap(),
        (None, None) => unreachable!("a cluster is started when no broker is given"),
    };
    println!(
        "broker: {bootstrap} ({})",
        if mock.is_some() {
            "an in-process paperboy-mock cluster of 3 nodes"
        } else {
            "as given"
        }
    );
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let (orders_topic, clicks_topic) = (
        format!("quickstart-orders-{run}"),
        format!("quickstart-clicks-{run}"),
    );
    let client =
        Client::connect(ClientConfig::new(&bootstrap).with_connect_timeout(Duration::from_secs(5)))
            .await?;
    client
        .create_topics(&[
            NewTopic::new(&orders_topic, 3, 1),
            NewTopic::new(&clicks_topic, 3, 1),
        ])
        .await?;

    // 1. A service writes PHQ messages: 1 000 orders and 30 000 clicks.
    let (n_orders, n_clicks) = (1_000u64, 30_000u64);
    let producer = phq::Producer::new("shop", &[bootstrap.as_str()]).await?;
    let orders: Vec<phq::Message> = (1..=n_orders)
        .map(|i| {
            phq::Message::new(
                format!("order-{i}"),
                json!({"id": i, "total": i as f64 * 1.5}),
            )
        })
        .collect();
    let clicks: Vec<phq::Message> = (1..=n_clicks)
        .map(|i| phq::Message::new(format!("user-{}", i % 97), json!({"page": i % 13})))
        .collect();
    producer.produce_batch(&orders_topic, &orders).await?;
    producer.produce_batch(&clicks_topic, &clicks).await?;
    producer.close().await;
    println!(
        "produced {n_orders} orders to {orders_topic} and {n_clicks} clicks to {clicks_topic}"
    );

    // 2. An engine with a handler per topic consumes them.
    let consumer = ConsumerConfig::from_properties([
        ("bootstrap.servers", bootstrap.as_str()),
        ("group.id", &format!("quickstart-{run}")),
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
    ])?;
    let (orders_done, revenue, clicks_done, click_batches) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let engine = Engine::builder(consumer)
        .config(
            EngineConfig::default()
                .with_bulk_mode(true)
                .with_bulk_mode_threshold(Some(1_000)) // bulk while a partition is 1 000+ behind
                .with_bulk_mode_max_records(2_000)
                .with_bulk_mode_timeout(Duration::from_millis(500))
                .with_commit_interval(Duration::from_millis(1_000)),
        )
        .handler(Orders {
            topic: orders_topic.clone(),
            handled: orders_done.clone(),
            revenue_cents: revenue.clone(),
        })
        .handler(Clicks {
            topic: clicks_topic.clone(),
            handled: clicks_done.clone(),
            batches: click_batches.clone(),
        })
        .observer(PrintEvents)
        .build()
        .await?;
    let stop = engine.shutdown_handle();
    let health = engine.health();
    let started = Instant::now();
    let running = tokio::spawn(engine.run()); // also stops on SIGTERM, SIGINT, SIGHUP

    while orders_done.load(Ordering::Relaxed) < n_orders
        || clicks_done.load(Ordering::Relaxed) < n_clicks
    {
        if started.elapsed() > Duration::from_secs(60) || running.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    stop.shutdown(); // finish what is in hand, commit, leave the group
    running.await??;

    let stats = health.stats();
    println!(
        "handled {} orders (revenue {:.2}) and {} clicks ({} bulk batches) in {:.2} s; \
         {} commits",
        orders_done.load(Ordering::Relaxed),
        revenue.load(Ordering::Relaxed) as f64 / 100.0,
        clicks_done.load(Ordering::Relaxed),
        click_batches.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        stats.commits
    );
    let bulk_partitions = stats
        .partitions
        .values()
        .filter(|(m, _)| *m == Mode::Bulk)
        .count();
    println!("partitions still in bulk mode: {bulk_partitions} (caught up: all single)");
    client
        .delete_topics(&[orders_topic.as_str(), clicks_topic.as_str()])
        .await?;
    if let Some(cluster) = mock {
        cluster.shutdown();
    }
    let complete = orders_done.load(Ordering::Relaxed) == n_orders
        && clicks_done.load(Ordering::Relaxed) == n_clicks;
    if !complete {
        return Err("not every message was handled within 60 s".into());
    }
    Ok(())
}
