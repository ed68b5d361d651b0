//! Criterion benchmark of the consumer's receive path: fetch responses decoded into
//! batches, the prefetch queue and its budget (decompressed batches counted), and
//! `recv_batch` taking records out round-robin, against a fake broker on loopback that
//! serves an endless log from memory (so the broker costs next to nothing).
//!
//! The fake answers ApiVersions, Metadata (topic `t`, `PARTITIONS` partitions, all led by
//! itself) and Fetch: for each partition asked, one record batch of `BATCH` records
//! starting at the offset asked for (one batch encoded up front per codec and value size,
//! its base offset patched per answer; the CRC does not cover it).
//!
//! One iteration is `recv_batch(1000)` until 100 000 records were handed out; throughput
//! is records per second.
//!
//! ```text
//! cargo bench --bench consumer -- --warm-up-time 1 --measurement-time 3
//! cargo bench --bench consumer --no-run        # CI: the benchmark still builds
//! ```

#[path = "../tests/fake_broker/wire.rs"]
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use paperboy::consumer::{Consumer, ConsumerConfig};
use paperboy::protocol::records::{encode_batch, BatchOptions};
use paperboy::{Compression, NewRecord, TopicPartition};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const PARTITIONS: i32 = 6;
/// Records per served batch.
const BATCH: i64 = 500;
/// Records handed out per iteration.
const PER_ITER: usize = 100_000;

/// One batch of `BATCH` records of `size`-byte values at base offset 0.
fn batch(size: usize, codec: Compression) -> Bytes {
    let recs: Vec<NewRecord> = (0..BATCH)
        .map(|i| {
            let mut v = format!("{i:08}").into_bytes();
            v.resize(size, b'.');
            NewRecord::new(None::<Bytes>, Some(Bytes::from(v)))
        })
        .collect();
    let mut out = BytesMut::new();
    let opts = BatchOptions {
        compression: codec,
        ..BatchOptions::default()
    };
    encode_batch(&recs, &opts, &mut out).unwrap();
    out.freeze()
}

fn metadata(port: u16) -> MetadataResponse {
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(0))
            .with_host(StrBytes::from_static_str("127.0.0.1"))
            .with_port(port as i32)])
        .with_cluster_id(Some(StrBytes::from_static_str("bench")))
        .with_controller_id(BrokerId(0))
        .with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
            .with_partitions(
                (0..PARTITIONS)
                    .map(|i| {
                        MetadataResponsePartition::default()
                            .with_partition_index(i)
                            .with_leader_id(BrokerId(0))
                            .with_leader_epoch(0)
                            .with_replica_nodes(vec![BrokerId(0)])
                            .with_isr_nodes(vec![BrokerId(0)])
                    })
                    .collect(),
            )])
}

async fn serve(mut sock: TcpStream, port: u16, batch: Bytes) {
    sock.set_nodelay(true).ok();
    while let Some((h, key, version, mut body)) = wire::read_request(&mut sock).await {
        let id = h.correlation_id;
        let out = match key {
            ApiKey::ApiVersions => wire::frame(
                id,
                key,
                version,
                &wire::api_versions(&[
                    (ApiKey::ApiVersions, 0, 3),
                    (ApiKey::Metadata, 0, 12),
                    (ApiKey::Fetch, 4, 12),
                ]),
            ),
            ApiKey::Metadata => wire::frame(id, key, version, &metadata(port)),
            ApiKey::Fetch => {
                let req = FetchRequest::decode(&mut body, version).unwrap();
                let topics = req
                    .topics
                    .iter()
                    .map(|t| {
                        let parts = t
                            .partitions
                            .iter()
                            .map(|p| {
                                let mut b = BytesMut::with_capacity(batch.len());
                                b.put_i64(p.fetch_offset);
                                b.extend_from_slice(&batch[8..]);
                                PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_high_watermark(i64::MAX / 2)
                                    .with_last_stable_offset(i64::MAX / 2)
                                    .with_records(Some(b.freeze()))
                            })
                            .collect();
                        FetchableTopicResponse::default()
                            .with_topic(t.topic.clone())
                            .with_topic_id(t.topic_id)
                            .with_partitions(parts)
                    })
                    .collect();
                // Sessionless: every fetch names its partitions.
                wire::frame(
                    id,
                    key,
                    version,
                    &FetchResponse::default().with_responses(topics),
                )
            }
            _ => return,
        };
        if sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn bench_recv(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("consumer");
    group.throughput(Throughput::Elements(PER_ITER as u64));
    group.sample_size(10);
    for (label, size) in [("100B", 100usize), ("1KB", 1000)] {
        for codec in [Compression::None, Compression::Snappy, Compression::Lz4] {
            let served = batch(size, codec);
            let consumer = rt.block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = listener.local_addr().unwrap().port();
                let served = served.clone();
                tokio::spawn(async move {
                    while let Ok((sock, _)) = listener.accept().await {
                        tokio::spawn(serve(sock, port, served.clone()));
                    }
                });
                let consumer = Consumer::new(
                    ConsumerConfig::from_properties([
                        ("bootstrap.servers", format!("127.0.0.1:{port}")),
                        ("queued.max.messages.kbytes", "16384".into()),
                    ])
                    .unwrap(),
                )
                .await
                .unwrap();
                let tps: Vec<TopicPartition> = (0..PARTITIONS)
                    .map(|p| TopicPartition::new("t", p))
                    .collect();
                consumer.assign(&tps).unwrap();
                for tp in &tps {
                    consumer.seek(tp, 0).unwrap();
                }
                Arc::new(consumer)
            });
            let id = BenchmarkId::new(format!("recv_batch/{label}"), format!("{codec:?}"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let consumer = consumer.clone();
                    rt.block_on(async move {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let mut n = 0;
                            while n < PER_ITER {
                                let got = consumer
                                    .recv_batch(1000, Duration::from_secs(5))
                                    .await
                                    .unwrap();
                                assert!(!got.is_empty(), "the fake broker stopped serving");
                                n += got.len();
                            }
                        }
                        start.elapsed()
                    })
                })
            });
            rt.block_on(consumer.close());
        }
    }
    group.finish();
}

criterion_group!(benches, bench_recv);
criterion_main!(benches);
