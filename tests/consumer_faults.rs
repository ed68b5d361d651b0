//! A consumer fetching from brokers that misbehave: one that stops answering fetches (but
//! answers everything else), one that cuts a response short and hangs up, one that
//! declares a frame over the limit and stalls, one that answers with a correlation id it
//! was never sent. Each time the partition's fault surfaces from `recv_batch` as
//! `Error::FetchFailed` naming the broker and the cause, after `fetch.error.timeout.ms`,
//! retried with backoff on fresh connections meanwhile, while a partition on a healthy
//! broker goes on being consumed.
//!
//! The two "brokers" are small fakes started here (ApiVersions, Metadata and Fetch only):
//! they test our side of the socket, not Kafka.

mod fake_broker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fake_broker::wire::{api_versions, frame, read_request};
use paperboy::consumer::{Consumer, ConsumerConfig};
use paperboy::protocol::records::{encode_batch, BatchOptions};
use paperboy::{Error, NewRecord, TopicPartition};
use paperboy_protocol::kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, PartitionData,
};
use paperboy_protocol::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use paperboy_protocol::kafka_protocol::messages::{
    ApiKey, BrokerId, FetchResponse, MetadataResponse, TopicName,
};
use paperboy_protocol::kafka_protocol::protocol::{Decodable, StrBytes};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fetches {
    /// Answers with 10 records at the offset asked for.
    Healthy,
    /// Never answers a fetch (answers everything else).
    Silent,
    /// Sends half of a response frame, then hangs up.
    Truncated,
    /// Declares a frame of i32::MAX bytes and stalls.
    HugeFrame,
    /// Answers with a correlation id that was never sent.
    WrongCorrelationId,
}

struct Node {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

fn metadata(ports: [u16; 2]) -> MetadataResponse {
    MetadataResponse::default()
        .with_brokers(
            (0..2)
                .map(|i| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(i))
                        .with_host(StrBytes::from_static_str("127.0.0.1"))
                        .with_port(ports[i as usize] as i32)
                })
                .collect(),
        )
        .with_cluster_id(Some(StrBytes::from_static_str("fake")))
        .with_controller_id(BrokerId(0))
        .with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
            .with_partitions(
                (0..2)
                    .map(|i| {
                        MetadataResponsePartition::default()
                            .with_partition_index(i)
                            .with_leader_id(BrokerId(i))
                            .with_leader_epoch(0)
                            .with_replica_nodes(vec![BrokerId(i)])
                            .with_isr_nodes(vec![BrokerId(i)])
                    })
                    .collect(),
            )])
}

fn records_at(offset: i64) -> Bytes {
    records(offset, 10, 0, "v")
}

/// `count` records from `offset`, written in leader epoch `epoch`, valued `{tag}{offset}`.
fn records(offset: i64, count: i64, epoch: i32, tag: &str) -> Bytes {
    let recs: Vec<NewRecord> = (0..count)
        .map(|i| NewRecord::new(None::<Bytes>, Some(format!("{tag}{}", offset + i))))
        .collect();
    let mut out = BytesMut::new();
    let opts = BatchOptions {
        base_offset: offset,
        partition_leader_epoch: epoch,
        ..BatchOptions::default()
    };
    encode_batch(&recs, &opts, &mut out).unwrap();
    out.freeze()
}

async fn serve(mut sock: TcpStream, ports: Arc<std::sync::Mutex<[u16; 2]>>, fetches: Fetches) {
    while let Some((h, key, version, mut body)) = read_request(&mut sock).await {
        let id = h.correlation_id;
        let out = match key {
            ApiKey::ApiVersions => {
                let resp = api_versions(&[
                    (ApiKey::ApiVersions, 0, 3),
                    (ApiKey::Metadata, 0, 12),
                    (ApiKey::Fetch, 4, 12),
                ]);
                frame(id, key, version, &resp)
            }
            ApiKey::Metadata => {
                let p = *ports.lock().unwrap();
                frame(id, key, version, &metadata(p))
            }
            ApiKey::Fetch => {
                let req = paperboy_protocol::kafka_protocol::messages::FetchRequest::decode(
                    &mut body, version,
                )
                .unwrap();
                match fetches {
                    Fetches::Healthy => {
                        let topics = req
                            .topics
                            .iter()
                            .map(|t| {
                                FetchableTopicResponse::default()
                                    .with_topic(t.topic.clone())
                                    .with_partitions(
                                        t.partitions
                                            .iter()
                                            .map(|p| {
                                                PartitionData::default()
                                                    .with_partition_index(p.partition)
                                                    .with_high_watermark(1_000_000)
                                                    .with_last_stable_offset(1_000_000)
                                                    .with_records(Some(records_at(p.fetch_offset)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect();
                        // Sessionless: every fetch names its partitions.
                        let resp = FetchResponse::default().with_responses(topics);
                        frame(id, key, version, &resp)
                    }
                    Fetches::Silent => continue,
                    Fetches::Truncated => {
                        let resp = FetchResponse::default();
                        let f = frame(id, key, version, &resp);
                        let _ = sock.write_all(&f[..f.len() / 2]).await;
                        return;
                    }
                    Fetches::HugeFrame => {
                        let _ = sock.write_all(&i32::MAX.to_be_bytes()).await;
                        let _ = sock.write_all(&[0; 64]).await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    Fetches::WrongCorrelationId => frame(
                        id.wrapping_add(1000),
                        key,
                        version,
                        &FetchResponse::default(),
                    ),
                }
            }
            _ => return,
        };
        if sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn node(ports: Arc<std::sync::Mutex<[u16; 2]>>, fetches: Fetches) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(sock, ports.clone(), fetches));
        }
    });
    Node { port, accepted }
}

/// Partition 0 on a healthy node, partition 1 on one that misbehaves `bad`ly.
async fn consume_with(bad: Fetches) -> (Error, Node, Duration, usize) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAPERBOY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let ports = Arc::new(std::sync::Mutex::new([0u16; 2]));
    let good = node(ports.clone(), Fetches::Healthy).await;
    let bad_node = node(ports.clone(), bad).await;
    *ports.lock().unwrap() = [good.port, bad_node.port];
    let consumer = Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", format!("127.0.0.1:{}", good.port)),
            ("request.timeout.ms", "400".into()),
            ("socket.connection.setup.timeout.ms", "400".into()),
            ("fetch.max.wait.ms", "50".into()),
            ("retry.backoff.ms", "50".into()),
            ("retry.backoff.max.ms", "200".into()),
            ("fetch.error.timeout.ms", "1500".into()),
        ])
        .unwrap(),
    )
    .await
    .expect("consumer");
    let tps = [TopicPartition::new("t", 0), TopicPartition::new("t", 1)];
    consumer.assign(&tps).unwrap();
    for tp in &tps {
        consumer.seek(tp, 0).unwrap();
    }
    let started = Instant::now();
    let mut healthy = 0usize;
    let err = loop {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{bad:?}: no error surfaced"
        );
        match consumer.recv_batch(100, Duration::from_millis(200)).await {
            Ok(batch) => {
                assert!(batch.iter().all(|r| r.partition == 0), "{bad:?}");
                healthy += batch.len();
            }
            Err(e) => break e,
        }
    };
    let took = started.elapsed();
    // The other partition goes on after the error, and the error is not repeated at once.
    let more = consumer
        .recv_batch(100, Duration::from_millis(300))
        .await
        .expect("the healthy partition goes on");
    assert!(!more.is_empty(), "{bad:?}: the healthy partition stopped");
    consumer.close().await;
    (err, bad_node, took, healthy)
}

async fn check(bad: Fetches, cause: &str) {
    let (err, bad_node, took, healthy) = consume_with(bad).await;
    let Error::FetchFailed {
        partition,
        broker,
        cause: c,
        ..
    } = &err
    else {
        panic!("{bad:?}: expected FetchFailed, got {err:?}");
    };
    assert_eq!(partition, "t[1]");
    assert_eq!(broker, &format!("127.0.0.1:{}", bad_node.port));
    assert!(c.to_string().contains(cause), "{bad:?}: {err}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "{bad:?}: surfaced after {took:?}"
    );
    assert!(
        healthy > 0,
        "{bad:?}: nothing from the healthy partition meanwhile"
    );
    let conns = bad_node.accepted.load(Ordering::SeqCst);
    // Retried on fresh connections, with backoff (50 -> 200 ms), not in a storm.
    assert!(
        conns >= 2,
        "{bad:?}: retried on the same connection ({conns})"
    );
    assert!(conns <= 40, "{bad:?}: {conns} connections in {took:?}");
    eprintln!("{bad:?}: {err} ({conns} connections, {healthy} healthy records)");
}

#[tokio::test]
async fn a_broker_that_stops_answering_fetches() {
    check(Fetches::Silent, "timed out").await;
}

#[tokio::test]
async fn a_truncated_response_and_a_hang_up() {
    check(Fetches::Truncated, "closed by broker").await;
}

#[tokio::test]
async fn a_frame_over_the_limit() {
    check(Fetches::HugeFrame, "exceeds the limit").await;
}

#[tokio::test]
async fn a_correlation_id_never_sent() {
    check(Fetches::WrongCorrelationId, "correlation id").await;
}

// ---- Leader change and log truncation (KIP-320) ----------------------------------------
//
// One fake broker leads t[0]. It first serves offsets 0..30 written in leader epoch 0.
// Then it "fails over": the leader epoch becomes 1, fetches with the old epoch get
// FENCED_LEADER_EPOCH, and the new leader's log shares epoch 0 with the old one only up
// to `diverge_at` (an unclean election when that is below 30); after it come records of
// epoch 1, valued `new`. The consumer must refresh its metadata, validate its position
// with OffsetForLeaderEpoch, and resume at the first offset that diverged.

struct Log {
    /// 0 before the failover, 1 after.
    epoch: std::sync::atomic::AtomicI32,
    /// Where epoch 0 ends in the new leader's log.
    diverge_at: i64,
    /// OffsetForLeaderEpoch requests answered: (current leader epoch, epoch asked).
    validations: std::sync::Mutex<Vec<(i32, i32)>>,
}

impl Log {
    /// The log end and the records from `offset`, by the current epoch.
    fn read(&self, offset: i64) -> (i64, Option<Bytes>) {
        if self.epoch.load(Ordering::SeqCst) == 0 {
            let end = 30;
            let n = (end - offset).min(10);
            (end, (n > 0).then(|| records(offset, n, 0, "v")))
        } else {
            let end = 60;
            let n = if offset < self.diverge_at {
                (self.diverge_at - offset).min(10)
            } else {
                (end - offset).min(10)
            };
            let data = (n > 0).then(|| {
                if offset < self.diverge_at {
                    records(offset, n, 0, "v")
                } else {
                    records(offset, n, 1, "new")
                }
            });
            (end, data)
        }
    }
}

async fn serve_log(mut sock: TcpStream, port: u16, log: Arc<Log>) {
    use paperboy_protocol::kafka_protocol::messages::offset_for_leader_epoch_response::{
        EpochEndOffset, OffsetForLeaderTopicResult,
    };
    use paperboy_protocol::kafka_protocol::messages::{
        OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    };
    while let Some((h, key, version, mut body)) = read_request(&mut sock).await {
        let id = h.correlation_id;
        let epoch = log.epoch.load(Ordering::SeqCst);
        let out = match key {
            ApiKey::ApiVersions => {
                let resp = api_versions(&[
                    (ApiKey::ApiVersions, 0, 3),
                    (ApiKey::Metadata, 0, 12),
                    (ApiKey::Fetch, 4, 12),
                    (ApiKey::OffsetForLeaderEpoch, 3, 4),
                ]);
                frame(id, key, version, &resp)
            }
            ApiKey::Metadata => {
                let mut m = metadata([port, port]);
                let t = &mut m.topics[0];
                t.partitions.truncate(1);
                t.partitions[0].leader_epoch = epoch;
                frame(id, key, version, &m)
            }
            ApiKey::Fetch => {
                let req = paperboy_protocol::kafka_protocol::messages::FetchRequest::decode(
                    &mut body, version,
                )
                .unwrap();
                let Some(p) = req.topics.first().and_then(|t| t.partitions.first()) else {
                    // Nothing asked (an incremental fetch with no change): nothing new.
                    let resp = FetchResponse::default();
                    if sock
                        .write_all(&frame(id, key, version, &resp))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                };
                let data = if p.current_leader_epoch < epoch {
                    PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_error_code(74) // FENCED_LEADER_EPOCH
                } else {
                    let (end, records) = log.read(p.fetch_offset);
                    if records.is_none() {
                        // At the log end: a long poll that ends without data.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_high_watermark(end)
                        .with_last_stable_offset(end)
                        .with_records(records)
                };
                let resp =
                    FetchResponse::default().with_responses(vec![FetchableTopicResponse::default(
                    )
                    .with_topic(req.topics[0].topic.clone())
                    .with_topic_id(req.topics[0].topic_id)
                    .with_partitions(vec![data])]);
                frame(id, key, version, &resp)
            }
            ApiKey::OffsetForLeaderEpoch => {
                let req = OffsetForLeaderEpochRequest::decode(&mut body, version).unwrap();
                let topics = req
                    .topics
                    .iter()
                    .map(|t| {
                        OffsetForLeaderTopicResult::default()
                            .with_topic(t.topic.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        log.validations
                                            .lock()
                                            .unwrap()
                                            .push((p.current_leader_epoch, p.leader_epoch));
                                        let e =
                                            EpochEndOffset::default().with_partition(p.partition);
                                        if p.current_leader_epoch < epoch {
                                            e.with_error_code(74)
                                        } else if p.leader_epoch == 0 && epoch == 1 {
                                            // Epoch 0 ends where the logs diverge.
                                            e.with_leader_epoch(0).with_end_offset(log.diverge_at)
                                        } else {
                                            e.with_leader_epoch(epoch)
                                                .with_end_offset(log.read(0).0)
                                        }
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                let resp = OffsetForLeaderEpochResponse::default().with_topics(topics);
                frame(id, key, version, &resp)
            }
            _ => return,
        };
        if sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Reads t[0] to offset 30, fails the leader over to a log that diverges at `diverge_at`,
/// and reads on with `auto.offset.reset=reset` until `want` more records came or an error
/// did. Returns the (offset, value)s after the failover, the error, and the validations.
async fn fail_over(
    diverge_at: i64,
    reset: &str,
    want: usize,
) -> (Vec<(i64, String)>, Option<Error>, Vec<(i32, i32)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Log {
        epoch: 0.into(),
        diverge_at,
        validations: Default::default(),
    });
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve_log(sock, port, l.clone()));
        }
    });
    let consumer = Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", format!("127.0.0.1:{port}")),
            ("request.timeout.ms", "2000".into()),
            ("fetch.max.wait.ms", "20".into()),
            ("retry.backoff.ms", "20".into()),
            ("retry.backoff.max.ms", "100".into()),
            ("auto.offset.reset", reset.into()),
        ])
        .unwrap(),
    )
    .await
    .expect("consumer");
    let tp = TopicPartition::new("t", 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek(&tp, 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut before = Vec::new();
    while before.len() < 30 {
        assert!(
            Instant::now() < deadline,
            "read {} of 30 before the failover",
            before.len()
        );
        for r in consumer
            .recv_batch(30, Duration::from_millis(100))
            .await
            .unwrap()
        {
            before.push(r.offset);
        }
    }
    assert_eq!(before, (0..30).collect::<Vec<_>>());
    assert!(
        log.validations.lock().unwrap().is_empty(),
        "validated before any leader change"
    );
    log.epoch.store(1, Ordering::SeqCst);
    let mut after = Vec::new();
    let mut error = None;
    while after.len() < want {
        assert!(
            Instant::now() < deadline,
            "after the failover: {after:?}, validations {:?}",
            log.validations.lock().unwrap()
        );
        match consumer.recv_batch(want, Duration::from_millis(100)).await {
            Ok(batch) => {
                for r in batch {
                    let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                    after.push((r.offset, v));
                }
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    consumer.close().await;
    let validations = log.validations.lock().unwrap().clone();
    (after, error, validations)
}

#[tokio::test]
async fn a_clean_leader_change_is_validated_and_fetching_goes_on_where_it_was() {
    // The new leader has all of epoch 0 (it ends at 30): nothing is read twice.
    let (after, error, validations) = fail_over(30, "earliest", 30).await;
    assert!(error.is_none(), "{error:?}");
    let expected: Vec<(i64, String)> = (30..60).map(|o| (o, format!("new{o}"))).collect();
    assert_eq!(after, expected);
    assert_eq!(
        validations,
        vec![(1, 0)],
        "one OffsetForLeaderEpoch, epoch 0 at epoch 1"
    );
}

#[tokio::test]
async fn a_truncated_log_is_detected_and_reading_resumes_where_it_diverged() {
    // The new leader's epoch 0 ends at 20: offsets 20..30 the consumer read are gone and
    // were replaced. It goes back to 20 and reads the new leader's records from there.
    let (after, error, validations) = fail_over(20, "earliest", 40).await;
    assert!(error.is_none(), "{error:?}");
    let expected: Vec<(i64, String)> = (20..60).map(|o| (o, format!("new{o}"))).collect();
    assert_eq!(after, expected);
    assert_eq!(validations, vec![(1, 0)]);
}

#[tokio::test]
async fn a_truncated_log_with_auto_offset_reset_error_surfaces_log_truncation() {
    let (after, error, _) = fail_over(20, "error", 1).await;
    assert!(after.is_empty(), "{after:?}");
    match error {
        Some(Error::LogTruncation {
            partition,
            position,
            diverging_offset,
        }) => {
            assert_eq!(partition, "t[0]");
            assert_eq!(position, 30);
            assert_eq!(diverging_offset, Some(20));
        }
        other => panic!("expected LogTruncation, got {other:?}"),
    }
}
