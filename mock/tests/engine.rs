//! The quickstart's scenario on the mock: a PHQ producer writes orders and clicks, an
//! engine with a handler per topic (clicks in bulk while backed up) handles each message
//! once and commits what it handled; the commits are checked on the cluster.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paperboy::engine::{BoxError, Engine, EngineConfig, Envelope, Handler, Message};
use paperboy::{phq, ConsumerConfig};
use paperboy_mock::Cluster;
use serde_json::json;

struct Orders {
    seen: Arc<Mutex<Vec<u64>>>,
}

impl Handler for Orders {
    type Payload = Envelope<serde_json::Value>;
    type Context = ();

    fn topics(&self) -> Vec<String> {
        vec!["orders".to_owned()]
    }

    async fn on_message(&self, msg: &Message<Self::Payload>, _: &mut ()) -> Result<(), BoxError> {
        let id = msg.value.as_ref().expect("not a tombstone").item["id"]
            .as_u64()
            .expect("an id");
        self.seen.lock().unwrap().push(id);
        Ok(())
    }
}

struct Clicks {
    handled: Arc<AtomicU64>,
}

impl Handler for Clicks {
    type Payload = Envelope<serde_json::Value>;
    type Context = ();

    fn topics(&self) -> Vec<String> {
        vec!["clicks".to_owned()]
    }

    async fn on_message(&self, _: &Message<Self::Payload>, _: &mut ()) -> Result<(), BoxError> {
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn on_bulk(&self, msgs: &[Message<Self::Payload>], _: &mut ()) -> Result<(), BoxError> {
        self.handled.fetch_add(msgs.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_scenario_runs_on_the_mock() {
    let cluster = Cluster::builder()
        .nodes(3)
        .topic("orders", 3)
        .topic("clicks", 3)
        .build()
        .await
        .unwrap();
    let bootstrap = cluster.bootstrap();
    let (n_orders, n_clicks) = (500u64, 5_000u64);

    let producer = phq::Producer::new("shop", &[bootstrap.as_str()])
        .await
        .unwrap();
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
    producer.produce_batch("orders", &orders).await.unwrap();
    producer.produce_batch("clicks", &clicks).await.unwrap();
    producer.close().await;

    let consumer = ConsumerConfig::from_properties([
        ("bootstrap.servers", bootstrap.as_str()),
        ("group.id", "quickstart"),
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
    ])
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let clicks_done = Arc::new(AtomicU64::new(0));
    let engine = Engine::builder(consumer)
        .config(
            EngineConfig::default()
                .with_bulk_mode(true)
                .with_bulk_mode_threshold(Some(1_000))
                .with_bulk_mode_max_records(2_000)
                .with_bulk_mode_timeout(Duration::from_millis(500))
                .with_commit_interval(Duration::from_millis(200)),
        )
        .handler(Orders { seen: seen.clone() })
        .handler(Clicks {
            handled: clicks_done.clone(),
        })
        .build()
        .await
        .unwrap();
    let stop = engine.shutdown_handle();
    let health = engine.health();
    let running = tokio::spawn(engine.run());

    // Everything handled shows on the cluster as commits at the high watermarks.
    let all_committed = |c: &Cluster| {
        ["orders", "clicks"].iter().all(|t| {
            (0..3).all(|p| c.committed("quickstart", t, p) == Some(c.offsets(t, p).unwrap().1))
        })
    };
    assert!(
        cluster
            .wait_until(Duration::from_secs(60), all_committed)
            .await,
        "handled {} orders and {} clicks, engine finished: {}",
        seen.lock().unwrap().len(),
        clicks_done.load(Ordering::Relaxed),
        running.is_finished()
    );
    stop.shutdown(); // finish, commit, leave the group
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the engine stopped in time")
        .unwrap()
        .unwrap();

    let mut ids = seen.lock().unwrap().clone();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=n_orders).collect::<Vec<_>>(),
        "each order handled once"
    );
    assert_eq!(clicks_done.load(Ordering::Relaxed), n_clicks);
    assert!(health.stats().commits > 0);
    for topic in ["orders", "clicks"] {
        for p in 0..3 {
            let end = cluster.offsets(topic, p).unwrap().1;
            assert_eq!(
                cluster.committed("quickstart", topic, p),
                Some(end),
                "{topic}/{p}"
            );
        }
    }
    // The group is empty after the engine left it.
    let (_, members) = cluster.group_members("quickstart").unwrap();
    assert!(members.is_empty(), "{members:?}");
}
