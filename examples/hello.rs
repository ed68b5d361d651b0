//! Hello, Kafka: connect, create a topic, write a batch in each codec, read it back.
//!
//! ```sh
//! scripts/kafka start
//! cargo run --example hello               # or: cargo run --example hello -- HOST:PORT
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use paperboy::protocol::records::{self, DecodeLimits};
use paperboy::{
    Acks, Client, ClientConfig, Compression, FetchOptions, KafkaCode, NewRecord, NewTopic,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9092".to_owned());
    let client =
        Client::connect(ClientConfig::new(&bootstrap).with_connect_timeout(Duration::from_secs(5)))
            .await?;
    let cluster = client.cluster();
    println!(
        "connected to cluster {} with {} broker(s)",
        cluster.cluster_id.as_deref().unwrap_or("?"),
        cluster.brokers.len()
    );

    let topic = "paperboy-hello";
    match client.create_topics(&[NewTopic::new(topic, 1, 1)]).await {
        Ok(()) => println!("created topic {topic}"),
        Err(e) if e.kafka_code() == Some(KafkaCode::TopicAlreadyExists) => {}
        Err(e) => return Err(e.into()),
    }

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let batch: Vec<NewRecord> = (0..3)
            .map(|i| NewRecord {
                key: Some(format!("{}-{i}", codec.name()).into()),
                value: Some(format!("hello #{i}, compressed with {}", codec.name()).into()),
                headers: vec![],
                timestamp_ms: now,
            })
            .collect();
        let ack = client.produce(topic, 0, &batch, codec, Acks::All).await?;
        let fetched = client
            .fetch(topic, 0, ack.base_offset, FetchOptions::default())
            .await?;
        let mut read = 0;
        for b in records::batches(fetched.records, DecodeLimits::default()) {
            for r in b?.records()? {
                let r = r?;
                if r.offset >= ack.base_offset && read < batch.len() {
                    read += 1;
                    println!(
                        "  {:>6} offset {:>4}: {}",
                        codec.name(),
                        r.offset,
                        String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
                    );
                }
            }
        }
        assert_eq!(read, batch.len(), "read back what was written");
    }
    client.close().await;
    Ok(())
}
