//! Position validation after a leader change (KIP-320): before fetching from a new
//! leader, the consumer asks it (OffsetForLeaderEpoch) where the epoch of the last record
//! consumed ends in its log. An end before the position means the log was truncated under
//! the consumer (an unclean leader election): the records after the end are gone or were
//! replaced, and the position moves back to the first offset that diverged, or the
//! partition fails with [`Error::LogTruncation`] when `auto.offset.reset` is `error`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, warn};

use super::fetcher::{add_topic, broker_name, note_failure};
use super::{Inner, OffsetReset, TopicPartition};
use crate::error::{Error, Result};

/// The first version with the replica id a consumer sends as -1.
const MIN_VERSION: i16 = 3;

/// One partition to validate: its generation when asked, the position and the leader
/// epoch of the record before it.
struct Ask {
    tp: TopicPartition,
    gen: u64,
    position: i64,
    epoch: i32,
}

/// Whether some partition waits for validation and is due.
pub(super) fn pending(inner: &Inner) -> bool {
    let now = Instant::now();
    inner
        .lock()
        .parts
        .values()
        .any(|p| p.validate.is_some() && p.error.is_none() && p.retry_at.is_none_or(|t| t <= now))
}

/// Validates every partition that waits for it and is due, one request per leader.
/// Returns the topics whose metadata should be refreshed.
pub(super) async fn run(inner: Arc<Inner>) -> Vec<String> {
    let now = Instant::now();
    let asks: Vec<Ask> = {
        let st = inner.lock();
        st.parts
            .iter()
            .filter(|(_, p)| p.error.is_none() && p.retry_at.is_none_or(|t| t <= now))
            .filter_map(|(tp, p)| {
                Some(Ask {
                    tp: tp.clone(),
                    gen: p.gen,
                    position: p.position?,
                    epoch: p.validate?,
                })
            })
            .collect()
    };
    let cluster = inner.client.cluster();
    let mut stale: Vec<String> = Vec::new();
    let mut by_leader: BTreeMap<i32, Vec<(Ask, i32)>> = BTreeMap::new();
    for ask in asks {
        match cluster
            .topic(&ask.tp.topic)
            .and_then(|t| t.partition(ask.tp.partition))
            .filter(|p| p.leader >= 0)
        {
            Some(part) => by_leader
                .entry(part.leader)
                .or_default()
                .push((ask, part.leader_epoch)),
            None => {
                add_topic(&mut stale, &ask.tp.topic);
            }
        }
    }
    for (node, asks) in by_leader {
        let result = ask_leader(&inner, node, &asks).await;
        settle(&inner, node, asks, result, &mut stale);
    }
    inner.fetch_wake.notify_one();
    stale
}

/// Per partition asked: the broker's error, or (end offset, its epoch). `None` when the
/// broker is too old to validate against.
type Answers = Option<BTreeMap<TopicPartition, Result<(i64, i32)>>>;

async fn ask_leader(inner: &Inner, node: i32, asks: &[(Ask, i32)]) -> Result<Answers> {
    let conn = inner.client.conn_to_node(node).await?;
    let version = match conn.version_for::<OffsetForLeaderEpochRequest>() {
        Ok(v) if v >= MIN_VERSION => v,
        _ => return Ok(None),
    };
    let mut topics: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    for (ask, current) in asks {
        topics.entry(&ask.tp.topic).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(ask.tp.partition)
                .with_current_leader_epoch(*current)
                .with_leader_epoch(ask.epoch),
        );
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_owned())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let timeout = inner.client.config().request_timeout;
    let resp = conn.request_at(&req, version, timeout).await?;
    let mut out = BTreeMap::new();
    for t in &resp.topics {
        for p in &t.partitions {
            let tp = TopicPartition::new(t.topic.to_string(), p.partition);
            let answer = match Error::from_code(p.error_code, None, || {
                format!("offset for leader epoch {tp}")
            }) {
                Some(e) => Err(e),
                None => Ok((p.end_offset, p.leader_epoch)),
            };
            out.insert(tp, answer);
        }
    }
    Ok(Some(out))
}

fn settle(
    inner: &Inner,
    node: i32,
    asks: Vec<(Ask, i32)>,
    result: Result<Answers>,
    stale: &mut Vec<String>,
) {
    let broker = || broker_name(inner, node);
    let mut st = inner.lock();
    let mut woke = false;
    for (ask, current) in asks {
        let Some(p) = st.parts.get_mut(&ask.tp).filter(|p| p.gen == ask.gen) else {
            continue;
        };
        let answer = match &result {
            Err(e) => Err(e.clone()),
            // Too old a broker to ask: fetch as before KIP-320.
            Ok(None) => Ok(None),
            Ok(Some(answers)) => match answers.get(&ask.tp) {
                Some(Ok(a)) => Ok(Some(*a)),
                Some(Err(e)) => Err(e.clone()),
                None => Err(Error::IncompleteResponse(format!(
                    "offset_for_leader_epoch response lacks {}",
                    ask.tp
                ))),
            },
        };
        match answer {
            Err(e) if e.is_retriable() || e.is_stale_metadata() => {
                debug!(partition = %ask.tp, error = %e, "position validation will be retried");
                woke |= note_failure(inner, &ask.tp, p, &e, &broker);
                add_topic(stale, &ask.tp.topic);
            }
            Err(e) => {
                p.error = Some(e);
                woke = true;
            }
            Ok(None) => {
                p.validate = None;
                p.leader_epoch = current;
            }
            Ok(Some((end, end_epoch))) => {
                p.validate = None;
                p.leader_epoch = current;
                p.failures = 0;
                p.failing_since = None;
                let diverging = (end >= 0 && end_epoch >= 0).then_some(end);
                if diverging.is_some_and(|end| end >= ask.position) {
                    debug!(partition = %ask.tp, position = ask.position, epoch = ask.epoch, leader_epoch = current, "position validated");
                    continue;
                }
                let truncation = Error::LogTruncation {
                    partition: ask.tp.to_string(),
                    position: ask.position,
                    diverging_offset: diverging,
                };
                match (inner.config.offset_reset, diverging) {
                    (OffsetReset::Error, _) => {
                        warn!(error = %truncation, "log truncation detected; auto.offset.reset=error");
                        p.error = Some(truncation);
                        woke = true;
                    }
                    (_, Some(end)) => {
                        warn!(error = %truncation, resume_at = end, "log truncation detected; resuming at the first offset that diverged");
                        st.seek_part(&ask.tp, end);
                        if let Some(p) = st.parts.get_mut(&ask.tp) {
                            p.position_epoch = end_epoch;
                            p.leader_epoch = current;
                        }
                    }
                    (_, None) => {
                        warn!(error = %truncation, "log truncation detected at an offset the leader cannot name; resetting by auto.offset.reset");
                        p.out_of_range = true;
                    }
                }
            }
        }
    }
    drop(st);
    if woke {
        inner.ready.notify_waiters();
    }
}
