//! Paperboy's metrics (feature `metrics`) exported to Prometheus: installs
//! `metrics-exporter-prometheus` with its HTTP listener, then runs a producer and a
//! consumer, and serves `/metrics` until stopped (Ctrl-C).
//!
//! With no broker given it starts an in-process Kafka cluster (`paperboy-mock`); with one
//! (the first argument or `KAFKA_BOOTSTRAP`) it runs against that broker. The second
//! argument is the exporter's port (9000 by default):
//!
//! ```sh
//! cargo run --features metrics --example prometheus                       # in-process cluster, :9000
//! cargo run --features metrics --example prometheus -- 127.0.0.1:9092 9100
//! curl -s localhost:9000/metrics | grep messaging_client
//! ```
//!
//! It produces a record every 10 ms and consumes them, so the counters move while you look.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::PrometheusBuilder;
use paperboy::consumer::{Consumer, ConsumerConfig, OffsetReset};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::{Client, ClientConfig, NewTopic};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let given = args
        .next()
        .filter(|a| !a.is_empty() && a != "-")
        .or_else(|| std::env::var("KAFKA_BOOTSTRAP").ok());
    let port: u16 = match args.next() {
        Some(p) => p.parse()?,
        None => 9000,
    };

    // The recorder before any client: Paperboy's handles are bound to the recorder
    // installed when they are made.
    let listen = SocketAddr::from(([0, 0, 0, 0], port));
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()?;
    println!("metrics: http://127.0.0.1:{port}/metrics");

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
    let topic = format!("prometheus-example-{run}");
    let client = Client::connect(
        ClientConfig::new(&bootstrap)
            .with_client_id("prometheus-example-admin")
            .with_connect_timeout(Duration::from_secs(5)),
    )
    .await?;
    client.create_topics(&[NewTopic::new(&topic, 3, 1)]).await?;

    let mut producer_cfg = ProducerConfig::new(&bootstrap);
    producer_cfg.set("client.id", "prometheus-example-producer")?;
    let producer = Producer::new(producer_cfg).await?;
    let mut consumer_cfg = ConsumerConfig::new(&bootstrap)
        .with_group_id(format!("prometheus-example-{run}"))
        .with_offset_reset(OffsetReset::Earliest);
    consumer_cfg.set("client.id", "prometheus-example-consumer")?;
    let consumer = Consumer::new(consumer_cfg).await?;
    consumer.subscribe(&[topic.as_str()])?;

    let produce = {
        let (producer, topic) = (producer.clone(), topic.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for i in 0u64.. {
                tick.tick().await;
                let record = ProducerRecord::new(&topic)
                    .with_key(format!("key-{}", i % 100))
                    .with_value(format!("event {i}"));
                if let Err(e) = producer.enqueue(record).await {
                    eprintln!("produce: {e}");
                }
            }
        })
    };
    let consume = {
        let consumer = consumer.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                match consumer.recv_batch(500, Duration::from_millis(500)).await {
                    Ok(records) => {
                        n += records.len() as u64;
                        if !records.is_empty() && n % 1000 < records.len() as u64 {
                            println!("consumed {n} records");
                        }
                    }
                    Err(e) => eprintln!("consume: {e}"),
                }
            }
        })
    };

    println!("producing and consuming {topic}; Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    produce.abort();
    consume.abort();
    producer.close().await;
    consumer.close().await;
    client.delete_topics(&[topic.as_str()]).await?;
    if let Some(cluster) = mock {
        cluster.shutdown();
    }
    Ok(())
}
