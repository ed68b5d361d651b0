//! InitProducerId and Produce: batch checks (v2, CRC-32C, records decodable in every
//! codec, size), offsets and log append time, acks, and idempotent producers' sequence
//! and epoch checks with duplicate detection over the last five batches; transactional
//! batches checked against the producer's transaction (`txn.rs`), InitProducerId with a
//! transactional id served there too.

use std::collections::VecDeque;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use paperboy_protocol::records::{batches, DecodeLimits, RecordBatch};

use super::{sb, Ctx};
use crate::state::{now_ms, State};

/// How many recent batches of a producer a partition remembers for duplicate detection.
const DEDUP_WINDOW: usize = 5;

/// An idempotent producer's state on one partition.
#[derive(Debug, Default)]
pub(crate) struct ProducerEntry {
    pub epoch: i16,
    /// (first sequence, last sequence, base offset) of its last batches, oldest first.
    pub recent: VecDeque<(i32, i32, i64)>,
}

impl ProducerEntry {
    fn last_sequence(&self) -> Option<i32> {
        self.recent.back().map(|b| b.1)
    }
}

pub(crate) async fn init_producer_id(
    ctx: &mut Ctx,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    if let Some(code) = ctx.faults.request_error() {
        return InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1);
    }
    if req.transactional_id.is_some() {
        let (resp, appended) = super::txn::init_producer_id(&mut ctx.shared.lock(), ctx.node, &req);
        if appended {
            ctx.shared.appended.send_modify(|g| *g += 1);
        }
        return resp;
    }
    let mut st = ctx.shared.lock();
    let (id, epoch) = match (req.producer_id.0, req.producer_epoch) {
        // KIP-360: an existing producer asks for its epoch to be bumped.
        (id, epoch) if id >= 0 => match st.producer_epochs.get(&id).copied() {
            Some(current) if current == epoch => (id, epoch.wrapping_add(1).max(0)),
            Some(_) => {
                return InitProducerIdResponse::default()
                    .with_error_code(ResponseError::ProducerFenced.code())
                    .with_producer_id((-1).into())
                    .with_producer_epoch(-1)
            }
            None => (new_producer_id(&mut st), 0),
        },
        _ => (new_producer_id(&mut st), 0),
    };
    st.producer_epochs.insert(id, epoch);
    InitProducerIdResponse::default()
        .with_producer_id(id.into())
        .with_producer_epoch(epoch)
}

pub(crate) fn new_producer_id(st: &mut State) -> i64 {
    st.next_producer_id += 1;
    st.next_producer_id
}

/// Serves a Produce request; `None` for acks=0 (no response is sent).
pub(crate) async fn produce(ctx: &mut Ctx, req: ProduceRequest) -> Option<ProduceResponse> {
    let v = ctx.version;
    let acks = req.acks;
    let transactional_id = req.transactional_id.map(|t| t.0.as_str().to_owned());
    let mut appended = false;
    let mut responses = Vec::new();
    let mut endpoints: Vec<NodeEndpoint> = Vec::new();
    {
        let mut st = ctx.shared.lock();
        for topic in req.topic_data {
            let name = if v >= 13 {
                st.topic_name_by_id(topic.topic_id)
            } else {
                Some(topic.name.as_str().to_owned())
            };
            let mut parts = Vec::new();
            for pd in topic.partition_data {
                let mut r = PartitionProduceResponse::default()
                    .with_index(pd.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                let result = match &name {
                    None => Err(ResponseError::UnknownTopicId.code()),
                    Some(name) => {
                        if !matches!(acks, -1..=1) {
                            Err(ResponseError::InvalidRequiredAcks.code())
                        } else if let Some(code) = ctx.faults.partition_error(name, Some(pd.index))
                        {
                            Err(code)
                        } else {
                            append(
                                &mut st,
                                (ctx.node, v),
                                transactional_id.as_deref(),
                                name,
                                pd.index,
                                pd.records.unwrap_or_default(),
                            )
                        }
                    }
                };
                match result {
                    Ok(a) => {
                        appended |= !a.duplicate;
                        r = r
                            .with_base_offset(a.base_offset)
                            .with_log_append_time_ms(a.log_append_time)
                            .with_log_start_offset(a.log_start);
                    }
                    Err(code) => {
                        r = r.with_error_code(code);
                        let p = name.as_ref().and_then(|n| st.partition(n, pd.index));
                        if let (true, Some(p)) = (v >= 8, p) {
                            r = r.with_log_start_offset(p.log.log_start());
                        }
                        // KIP-951: NOT_LEADER_OR_FOLLOWER names the new leader.
                        if let (true, true, Some(p)) = (
                            v >= 10,
                            code == ResponseError::NotLeaderOrFollower.code(),
                            p,
                        ) {
                            if let Some(n) = st.node(p.leader).filter(|n| n.up && n.id != ctx.node)
                            {
                                r = r.with_current_leader(
                                    LeaderIdAndEpoch::default()
                                        .with_leader_id(n.id.into())
                                        .with_leader_epoch(p.leader_epoch),
                                );
                                if !endpoints.iter().any(|e: &NodeEndpoint| e.node_id.0 == n.id) {
                                    endpoints.push(
                                        NodeEndpoint::default()
                                            .with_node_id(n.id.into())
                                            .with_host(sb(&n.host))
                                            .with_port(i32::from(n.port)),
                                    );
                                }
                            }
                        }
                    }
                }
                parts.push(r);
            }
            let mut tr = TopicProduceResponse::default().with_partition_responses(parts);
            if v >= 13 {
                tr = tr.with_topic_id(topic.topic_id);
            } else {
                tr = tr.with_name(topic.name);
            }
            responses.push(tr);
        }
    }
    if appended {
        ctx.shared.appended.send_modify(|g| *g += 1);
    }
    if acks == 0 {
        return None;
    }
    Some(
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(endpoints),
    )
}

struct Appended {
    base_offset: i64,
    log_append_time: i64,
    log_start: i64,
    duplicate: bool,
}

/// Checks and appends one partition's record set (`at`: the node the request came to,
/// and the request's version).
fn append(
    st: &mut State,
    (node, version): (i32, i16),
    transactional_id: Option<&str>,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> Result<Appended, i16> {
    let retention_default = st.retention_bytes;
    let Some(t) = st.topics.get(topic) else {
        return Err(ResponseError::UnknownTopicOrPartition.code());
    };
    let max_message_bytes = t.max_message_bytes();
    let log_append_time = t.log_append_time();
    let retention = t.retention_bytes(retention_default);
    match st.partition(topic, partition) {
        None => return Err(ResponseError::UnknownTopicOrPartition.code()),
        Some(p) if p.leader != node => return Err(ResponseError::NotLeaderOrFollower.code()),
        Some(_) => {}
    }
    let batch = validate(records, max_message_bytes)?;
    if batch.is_transactional() {
        super::txn::verify_produce(st, version, transactional_id, &batch, topic, partition)?;
    }
    let p = st.partition_mut(topic, partition).expect("checked above");
    // Idempotence.
    let pid = batch.producer_id();
    let mut duplicate_of = None;
    if pid >= 0 {
        let epoch = batch.producer_epoch();
        let first = batch.base_sequence();
        let last = first.wrapping_add(batch.last_offset_delta());
        match p.producers.get(&pid) {
            Some(e) if epoch < e.epoch => return Err(ResponseError::InvalidProducerEpoch.code()),
            Some(e) if epoch == e.epoch => {
                if let Some(&(_, _, base)) = e.recent.iter().find(|b| b.0 == first && b.1 == last) {
                    duplicate_of = Some(base);
                } else {
                    let expected = e.last_sequence().map_or(0, next_sequence);
                    if first != expected {
                        return Err(ResponseError::OutOfOrderSequenceNumber.code());
                    }
                }
            }
            // A new epoch starts at sequence 0; so does a producer new to the partition.
            _ => {
                if first != 0 {
                    return Err(ResponseError::OutOfOrderSequenceNumber.code());
                }
            }
        }
    }
    if let Some(base) = duplicate_of {
        return Ok(Appended {
            base_offset: base,
            log_append_time: -1,
            log_start: p.log.log_start(),
            duplicate: true,
        });
    }
    let now = now_ms();
    let base = p
        .log
        .append(&batch, p.leader_epoch, log_append_time.then_some(now));
    if batch.is_transactional() {
        // The first batch of the producer's transaction here holds the LSO back.
        p.txns.open.entry(pid).or_insert(base);
    }
    if pid >= 0 {
        let e = p.producers.entry(pid).or_default();
        if batch.producer_epoch() != e.epoch {
            e.recent.clear();
        }
        e.epoch = batch.producer_epoch();
        let first = batch.base_sequence();
        e.recent
            .push_back((first, first.wrapping_add(batch.last_offset_delta()), base));
        if e.recent.len() > DEDUP_WINDOW {
            e.recent.pop_front();
        }
    }
    if let Some(max) = retention {
        p.log.enforce_retention_bytes(max);
    }
    Ok(Appended {
        base_offset: base,
        log_append_time: if log_append_time { now } else { -1 },
        log_start: p.log.log_start(),
        duplicate: false,
    })
}

fn next_sequence(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

/// A Produce record set must be exactly one valid v2 batch (as Kafka checks from Produce
/// v3): its CRC right, its records decodable (decompressing any codec), its size within
/// the topic's `max.message.bytes`.
fn validate(records: Bytes, max_message_bytes: usize) -> Result<RecordBatch, i16> {
    if records.len() > max_message_bytes {
        return Err(ResponseError::MessageTooLarge.code());
    }
    let limits = DecodeLimits::default();
    let mut it = batches(records, limits);
    let batch = match it.next() {
        Some(Ok(b)) => b,
        Some(Err(_)) => return Err(ResponseError::CorruptMessage.code()),
        None => return Err(ResponseError::InvalidRecord.code()),
    };
    if it.next().is_some() || it.truncated_tail() {
        return Err(ResponseError::InvalidRecord.code());
    }
    batch
        .verify_crc()
        .map_err(|_| ResponseError::CorruptMessage.code())?;
    // Control batches come from coordinators only; a transactional batch needs a
    // producer id.
    if batch.is_control() || (batch.is_transactional() && batch.producer_id() < 0) {
        return Err(ResponseError::InvalidRecord.code());
    }
    let mut count = 0i32;
    for r in batch
        .records()
        .map_err(|_| ResponseError::CorruptMessage.code())?
    {
        r.map_err(|_| ResponseError::CorruptMessage.code())?;
        count += 1;
    }
    if count != batch.record_count() || count == 0 || batch.last_offset_delta() != count - 1 {
        return Err(ResponseError::InvalidRecord.code());
    }
    Ok(batch)
}
