//! A fake single-node "cluster" for the producer's deadline tests: it answers
//! ApiVersions, Metadata (every topic asked for has `partitions` partitions, all led by
//! itself) and InitProducerId properly, and Produce as the test says: not at all, at
//! once, or after a delay. It checks idempotent sequences as a broker does, so a
//! producer that resumed after a lost batch without bumping its epoch would be refused
//! with OUT_OF_ORDER_SEQUENCE_NUMBER.
//!
//! It listens on a loopback port of its own and stops with the test's runtime.
#![allow(dead_code)]

pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, InitProducerIdRequest, MetadataRequest, MetadataResponse, ProduceRequest,
    ProducerId,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use paperboy::protocol::records::{batches, DecodeLimits};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpListener;

/// How the fake answers Produce requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceMode {
    /// Reads them and never answers.
    Silent,
    /// Appends and answers at once.
    Answer,
    /// Appends at once but answers only after this long.
    AnswerAfter(Duration),
}

/// One record batch of a Produce request, as the fake saw it.
#[derive(Debug, Clone)]
pub struct SeenBatch {
    /// When the request arrived.
    pub at: Instant,
    /// The request's `timeout_ms`.
    pub timeout_ms: i32,
    pub topic: String,
    pub partition: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: i32,
    /// The mode the fake was in when the request arrived.
    pub mode: ProduceMode,
    /// The error code it answered with (or would have), 0 for none.
    pub error_code: i16,
    /// Whether the fake appended it to its log.
    pub appended: bool,
    /// The records' values.
    pub values: Vec<Bytes>,
}

struct State {
    mode: ProduceMode,
    partitions: i32,
    seen: Vec<SeenBatch>,
    /// Per partition: (producer epoch, next expected sequence), as a broker tracks it.
    sequences: HashMap<(String, i32), (i16, i32)>,
    next_offset: HashMap<(String, i32), i64>,
    epoch: i16,
    init_producer_id_calls: usize,
    /// Whether InitProducerId is answered.
    answer_init_producer_id: bool,
    /// Whether Metadata requests that name topics are answered.
    answer_topic_metadata: bool,
    /// Connections accepted so far.
    connections: usize,
}

/// A running fake broker.
#[derive(Clone)]
pub struct FakeBroker {
    pub addr: String,
    state: Arc<Mutex<State>>,
}

const PRODUCER_ID: i64 = 4242;

impl FakeBroker {
    /// Starts a fake whose topics have `partitions` partitions.
    pub async fn start(partitions: i32, mode: ProduceMode) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeBroker {
            addr: addr.to_string(),
            state: Arc::new(Mutex::new(State {
                mode,
                partitions,
                seen: Vec::new(),
                sequences: HashMap::new(),
                next_offset: HashMap::new(),
                epoch: -1,
                init_producer_id_calls: 0,
                answer_init_producer_id: true,
                answer_topic_metadata: true,
                connections: 0,
            })),
        };
        let f = fake.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                f.state.lock().unwrap().connections += 1;
                let f = f.clone();
                tokio::spawn(async move { f.serve(sock, addr.port()).await });
            }
        });
        fake
    }

    /// Leaves Metadata requests that name a topic unanswered from now on.
    pub fn ignore_topic_metadata(&self) {
        self.state.lock().unwrap().answer_topic_metadata = false;
    }

    /// Leaves InitProducerId requests unanswered from now on.
    pub fn ignore_init_producer_id(&self) {
        self.state.lock().unwrap().answer_init_producer_id = false;
    }

    pub fn set_mode(&self, mode: ProduceMode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Every batch of every Produce request so far.
    pub fn seen(&self) -> Vec<SeenBatch> {
        self.state.lock().unwrap().seen.clone()
    }

    /// How many times the fake appended a record with this value.
    pub fn appended(&self, value: &[u8]) -> usize {
        let st = self.state.lock().unwrap();
        st.seen
            .iter()
            .filter(|b| b.appended)
            .flat_map(|b| b.values.iter())
            .filter(|v| v.as_ref() == value)
            .count()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    pub fn init_producer_id_calls(&self) -> usize {
        self.state.lock().unwrap().init_producer_id_calls
    }

    async fn serve(&self, sock: tokio::net::TcpStream, port: u16) {
        sock.set_nodelay(true).ok();
        let (mut rd, wr) = sock.into_split();
        let wr = Arc::new(tokio::sync::Mutex::new(wr));
        while let Some((header, key, version, mut b)) = wire::read_request(&mut rd).await {
            let id = header.correlation_id;
            match key {
                ApiKey::ApiVersions => {
                    let resp = wire::api_versions(&[
                        (ApiKey::Produce, 3, 9),
                        (ApiKey::Metadata, 0, 12),
                        (ApiKey::ApiVersions, 0, 3),
                        (ApiKey::InitProducerId, 0, 4),
                    ]);
                    respond(&wr, id, key, &resp, version).await;
                }
                ApiKey::Metadata => {
                    let req = MetadataRequest::decode(&mut b, version).unwrap();
                    let (partitions, answer) = {
                        let st = self.state.lock().unwrap();
                        (st.partitions, st.answer_topic_metadata)
                    };
                    if !answer && req.topics.as_ref().is_some_and(|t| !t.is_empty()) {
                        continue;
                    }
                    let topics = req
                        .topics
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|t| t.name)
                        .map(|name| {
                            MetadataResponseTopic::default()
                                .with_name(Some(name))
                                .with_topic_id(uuid::Uuid::from_u128(0x5eed))
                                .with_partitions(
                                    (0..partitions)
                                        .map(|p| {
                                            MetadataResponsePartition::default()
                                                .with_partition_index(p)
                                                .with_leader_id(BrokerId(0))
                                                .with_leader_epoch(0)
                                                .with_replica_nodes(vec![BrokerId(0)])
                                                .with_isr_nodes(vec![BrokerId(0)])
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                    let resp = MetadataResponse::default()
                        .with_brokers(vec![MetadataResponseBroker::default()
                            .with_node_id(BrokerId(0))
                            .with_host(StrBytes::from_static_str("127.0.0.1"))
                            .with_port(i32::from(port))])
                        .with_cluster_id(Some(StrBytes::from_static_str("fake")))
                        .with_controller_id(BrokerId(0))
                        .with_topics(topics);
                    respond(&wr, id, key, &resp, version).await;
                }
                ApiKey::InitProducerId => {
                    let req = InitProducerIdRequest::decode(&mut b, version).unwrap();
                    let epoch = {
                        let mut st = self.state.lock().unwrap();
                        st.init_producer_id_calls += 1;
                        if !st.answer_init_producer_id {
                            continue;
                        }
                        // A fresh id starts at epoch 0; the current id asks for a bump.
                        let fresh = req.producer_id.0 < 0;
                        let bump =
                            req.producer_id.0 == PRODUCER_ID && req.producer_epoch == st.epoch;
                        if fresh || bump {
                            st.epoch += 1;
                        }
                        st.epoch
                    };
                    let resp = InitProducerIdResponse::default()
                        .with_producer_id(ProducerId(PRODUCER_ID))
                        .with_producer_epoch(epoch);
                    respond(&wr, id, key, &resp, version).await;
                }
                ApiKey::Produce => {
                    let req = ProduceRequest::decode(&mut b, version).unwrap();
                    let (mode, resp) = self.produce(&req);
                    match mode {
                        ProduceMode::Silent => {}
                        ProduceMode::Answer => respond(&wr, id, key, &resp, version).await,
                        ProduceMode::AnswerAfter(d) => {
                            let wr = wr.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(d).await;
                                respond(&wr, id, key, &resp, version).await;
                            });
                        }
                    }
                }
                other => panic!("the fake broker does not speak {other:?}"),
            }
        }
    }

    /// Appends (unless silent) and builds the answer, checking sequences as a broker does.
    fn produce(&self, req: &ProduceRequest) -> (ProduceMode, ProduceResponse) {
        let mut st = self.state.lock().unwrap();
        let mode = st.mode;
        let now = Instant::now();
        let mut responses = Vec::new();
        for t in &req.topic_data {
            let topic = t.name.0.to_string();
            let mut parts = Vec::new();
            for p in &t.partition_data {
                let key = (topic.clone(), p.index);
                let records = p.records.clone().unwrap_or_default();
                let batch = batches(records, DecodeLimits::default())
                    .next()
                    .expect("a record batch")
                    .expect("the batch decodes");
                let values = batch
                    .records()
                    .expect("records")
                    .map(|r| r.expect("a record decodes").value.unwrap_or_default())
                    .collect();
                let (pid, epoch, seq, n) = (
                    batch.producer_id(),
                    batch.producer_epoch(),
                    batch.base_sequence(),
                    batch.record_count(),
                );
                let code = if pid < 0 {
                    0
                } else {
                    match st.sequences.get(&key).copied() {
                        // No state for the producer: any sequence is accepted.
                        None => 0,
                        Some((e, _)) if epoch < e => 47, // INVALID_PRODUCER_EPOCH
                        Some((e, _)) if epoch > e => {
                            if seq == 0 {
                                0
                            } else {
                                45 // OUT_OF_ORDER_SEQUENCE_NUMBER
                            }
                        }
                        Some((_, next)) if seq == next => 0,
                        Some((_, next)) if seq < next => 46, // DUPLICATE_SEQUENCE_NUMBER
                        Some(_) => 45,
                    }
                };
                let mut base_offset = -1;
                let appended = code == 0 && mode != ProduceMode::Silent;
                if appended {
                    if pid >= 0 {
                        st.sequences.insert(key.clone(), (epoch, seq + n));
                    }
                    let next = st.next_offset.entry(key).or_insert(0);
                    base_offset = *next;
                    *next += i64::from(n);
                }
                st.seen.push(SeenBatch {
                    at: now,
                    timeout_ms: req.timeout_ms,
                    topic: topic.clone(),
                    partition: p.index,
                    producer_id: pid,
                    producer_epoch: epoch,
                    base_sequence: seq,
                    records: n,
                    mode,
                    error_code: code,
                    appended,
                    values,
                });
                parts.push(
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(code)
                        .with_base_offset(base_offset)
                        .with_log_append_time_ms(-1),
                );
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(parts),
            );
        }
        (mode, ProduceResponse::default().with_responses(responses))
    }
}

async fn respond<R: Encodable>(
    wr: &tokio::sync::Mutex<OwnedWriteHalf>,
    correlation_id: i32,
    key: ApiKey,
    body: &R,
    version: i16,
) {
    let out = wire::frame(correlation_id, key, version, body);
    // The client may have hung up meanwhile.
    let _ = wr.lock().await.write_all(&out).await;
}
