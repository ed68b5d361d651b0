//! One Fetch request to a broker in its incremental fetch session (KIP-227): what the
//! session holds, the request (only what changed, and what to forget), the session's
//! bookkeeping from the answer, and decoding each partition's record sets into batches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{
    FetchPartition, FetchRequest, FetchTopic, ForgottenTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use paperboy_protocol::records::{batches, DecodeLimits};
use uuid::Uuid;

use super::{PartResult, Want};
use crate::client::IsolationLevel;
use crate::consumer::{Inner, Queued, TopicPartition};
use crate::error::{Error, Result};

/// What a broker's fetch session holds: per partition, the fetch offset, the partition
/// byte cap and the leader epoch last sent.
#[derive(Default)]
pub(super) struct Session {
    id: i32,
    epoch: i32,
    parts: HashMap<TopicPartition, (i64, i32, i32)>,
}

impl Session {
    fn reset(&mut self) {
        *self = Session::default();
    }
}

/// One Fetch request to `node`, in its session; decodes the record sets into batches.
pub(super) async fn fetch(
    inner: &Arc<Inner>,
    node: i32,
    session: &mut Session,
    wants: &[Want],
    max_bytes: i32,
    max_wait: Duration,
) -> Result<Vec<PartResult>> {
    let cfg = &inner.config;
    let conn = match inner.client.conn_to_node(node).await {
        Ok(c) => c,
        Err(e) => {
            session.reset();
            return Err(e);
        }
    };
    let full = session.epoch == 0;
    let wanted: HashMap<TopicPartition, (i64, i32, i32)> = wants
        .iter()
        .map(|w| (w.tp.clone(), (w.offset, w.max_bytes, w.leader_epoch)))
        .collect();
    let mut topics: BTreeMap<&str, (Uuid, Vec<FetchPartition>)> = BTreeMap::new();
    for w in wants {
        if !full && session.parts.get(&w.tp) == Some(&(w.offset, w.max_bytes, w.leader_epoch)) {
            continue;
        }
        topics
            .entry(&w.tp.topic)
            .or_insert((w.topic_id, Vec::new()))
            .1
            .push(
                FetchPartition::default()
                    .with_partition(w.tp.partition)
                    .with_current_leader_epoch(w.leader_epoch)
                    .with_fetch_offset(w.offset)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(w.max_bytes),
            );
    }
    let mut forgotten: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    if !full {
        for tp in session.parts.keys() {
            if !wanted.contains_key(tp) {
                forgotten.entry(&tp.topic).or_default().push(tp.partition);
            }
        }
    }
    let version = conn.version_for::<FetchRequest>()?;
    let name = |t: &str| TopicName(StrBytes::from_string(t.to_owned()));
    // Topic ids of forgotten partitions (Fetch v13+ names topics by id), looked up only
    // when something is forgotten.
    let cluster = (!forgotten.is_empty()).then(|| inner.client.cluster());
    let topic_id = |t: &str| {
        cluster
            .as_ref()
            .and_then(|c| c.topic(t))
            .map_or(Uuid::nil(), |t| t.id)
    };
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait.as_millis().min(i32::MAX as u128) as i32)
        .with_min_bytes(cfg.fetch_min_bytes)
        .with_max_bytes(max_bytes)
        .with_isolation_level(match cfg.isolation {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        })
        .with_session_id(session.id)
        .with_session_epoch(session.epoch)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, (id, ps))| {
                    FetchTopic::default()
                        .with_topic(name(t))
                        .with_topic_id(id)
                        .with_partitions(ps)
                })
                .collect(),
        )
        .with_forgotten_topics_data(
            forgotten
                .into_iter()
                .map(|(t, ps)| {
                    ForgottenTopic::default()
                        .with_topic(name(t))
                        .with_topic_id(topic_id(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let timeout = inner.client.config().request_timeout + max_wait;
    let resp = match conn.request_at(&req, version, timeout).await {
        Ok(r) => r,
        Err(e) => {
            session.reset();
            // A broker that does not answer a fetch in time, or answers what cannot be
            // read, may not answer the next one either: retry on a fresh connection.
            conn.close(&format!("fetch failed: {e}"));
            return Err(e);
        }
    };
    if let Some(e) = Error::from_code(resp.error_code, None, || {
        format!("fetch from broker {node}")
    }) {
        session.reset();
        return Err(e);
    }
    // Session bookkeeping (KIP-227).
    if full {
        session.id = resp.session_id;
        session.epoch = if resp.session_id == 0 { 0 } else { 1 };
    } else {
        session.epoch = if session.epoch == i32::MAX {
            1
        } else {
            session.epoch + 1
        };
    }
    session.parts = if session.epoch == 0 {
        HashMap::new()
    } else {
        wanted
    };

    let by_id: HashMap<Uuid, &str> = wants
        .iter()
        .map(|w| (w.topic_id, w.tp.topic.as_str()))
        .collect();
    let gens: HashMap<&TopicPartition, u64> = wants.iter().map(|w| (&w.tp, w.gen)).collect();
    let with_data = resp
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.records.as_ref().is_some_and(|r| !r.is_empty()))
        .count();
    let limits = DecodeLimits::default();
    let mut out = Vec::new();
    for t in &resp.responses {
        let topic = if version >= 13 {
            match by_id.get(&t.topic_id) {
                Some(n) => n.to_string(),
                None => continue,
            }
        } else {
            t.topic.to_string()
        };
        for p in &t.partitions {
            let tp = TopicPartition::new(topic.clone(), p.partition_index);
            let Some(&gen) = gens.get(&tp) else { continue };
            let error = Error::from_code(p.error_code, None, || format!("fetch {tp}"));
            let mut result = PartResult {
                tp,
                gen,
                queued: Vec::new(),
                bytes: 0,
                next_offset: None,
                high_watermark: p.high_watermark,
                last_stable_offset: p.last_stable_offset,
                aborted: p
                    .aborted_transactions
                    .iter()
                    .flatten()
                    .map(|a| (a.producer_id.0, a.first_offset))
                    .collect(),
                error,
            };
            if let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) {
                // With several partitions in one response, each gets its own copy, so
                // its buffered bytes are exactly what it holds.
                let records: Bytes = if with_data > 1 {
                    Bytes::copy_from_slice(records)
                } else {
                    records.clone()
                };
                let total = records.len();
                let mut counted = 0;
                let mut iter = batches(records, limits);
                for b in iter.by_ref() {
                    match b {
                        Ok(batch) => {
                            counted += batch.size();
                            result.next_offset = Some(batch.next_offset());
                            result.queued.push(Queued {
                                bytes: batch.size(),
                                batch: Ok(batch),
                            });
                        }
                        Err(e) => {
                            result.queued.push(Queued {
                                bytes: 0,
                                batch: Err(e),
                            });
                        }
                    }
                }
                if let Some(last) = result.queued.last_mut() {
                    last.bytes += total - counted;
                }
                result.bytes = total;
                if result.queued.is_empty() {
                    result.bytes = 0;
                }
            }
            out.push(result);
        }
    }
    Ok(out)
}
