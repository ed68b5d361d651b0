//! ListOffsets (earliest, latest, max timestamp, by timestamp), OffsetForLeaderEpoch,
//! OffsetCommit and OffsetFetch.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use paperboy_protocol::records::{DecodeLimits, RecordBatch, TimestampType};

use super::group::{CommittedOffset, Group};
use super::txn::unstable;
use super::{sb, Ctx};
use crate::log::StoredBatch;
use crate::state::{Partition, State};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

/// The common checks of a partition-level request served by the leader.
fn leader_partition<'a>(
    st: &'a State,
    node: i32,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
) -> Result<&'a Partition, i16> {
    let p = st
        .partition(topic, partition)
        .ok_or(ResponseError::UnknownTopicOrPartition.code())?;
    if p.leader != node {
        return Err(ResponseError::NotLeaderOrFollower.code());
    }
    if current_leader_epoch > p.leader_epoch {
        return Err(ResponseError::UnknownLeaderEpoch.code());
    }
    if current_leader_epoch >= 0 && current_leader_epoch < p.leader_epoch {
        return Err(ResponseError::FencedLeaderEpoch.code());
    }
    Ok(p)
}

pub(crate) async fn list_offsets(ctx: &mut Ctx, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let v = ctx.version;
    let st = ctx.shared.lock();
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.as_str().to_owned();
        let mut parts = Vec::new();
        for lp in t.partitions {
            let mut r = ListOffsetsPartitionResponse::default()
                .with_partition_index(lp.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            let found = match ctx.faults.partition_error(&name, Some(lp.partition_index)) {
                Some(code) => Err(code),
                None => leader_partition(
                    &st,
                    ctx.node,
                    &name,
                    lp.partition_index,
                    lp.current_leader_epoch,
                )
                .map(|p| {
                    let (offset, ts) = lookup(p, lp.timestamp, req.isolation_level == 1);
                    // The epoch the offset was written in (the current one at the end).
                    let epoch = if offset >= 0 && offset < p.log.log_end() {
                        p.log.epoch_of(offset)
                    } else {
                        p.leader_epoch
                    };
                    ((offset, ts), epoch)
                }),
            };
            match found {
                Ok(((offset, ts), epoch)) => {
                    r = r.with_offset(offset).with_timestamp(ts);
                    if v >= 4 {
                        r = r.with_leader_epoch(epoch);
                    }
                }
                Err(code) => r = r.with_error_code(code),
            }
            parts.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp) for a ListOffsets query. read_committed sees only what is below
/// the last stable offset: latest is the LSO, and a lookup by timestamp finding an offset
/// at or past it finds nothing (as Kafka's `lastFetchableOffset`).
fn lookup(p: &Partition, timestamp: i64, read_committed: bool) -> (i64, i64) {
    let lso = p.txns.last_stable_offset(p.log.log_end());
    let found = lookup_uncommitted(p, timestamp);
    match timestamp {
        LATEST if read_committed => (lso, -1),
        MAX_TIMESTAMP if read_committed && found.0 >= lso => (-1, -1),
        ts if ts >= 0 && read_committed && found.0 >= lso => (-1, -1),
        _ => found,
    }
}

fn lookup_uncommitted(p: &Partition, timestamp: i64) -> (i64, i64) {
    match timestamp {
        LATEST => (p.log.log_end(), -1),
        EARLIEST | EARLIEST_LOCAL => (p.log.log_start(), -1),
        MAX_TIMESTAMP => match p.log.max_timestamp_batch() {
            Some(b) => first_at_or_after(b, b.max_timestamp).unwrap_or((-1, -1)),
            None => (-1, -1),
        },
        ts if ts >= 0 => p
            .log
            .first_batch_at_or_after(ts)
            .and_then(|b| first_at_or_after(b, ts))
            .unwrap_or((-1, -1)),
        _ => (-1, -1),
    }
}

/// The first record of a stored batch with a timestamp at or after `ts`.
fn first_at_or_after(b: &StoredBatch, ts: i64) -> Option<(i64, i64)> {
    let batch = RecordBatch::parse(b.bytes.clone(), DecodeLimits::default()).ok()?;
    if batch.timestamp_type() == TimestampType::LogAppendTime {
        return (batch.max_timestamp() >= ts).then_some((b.base_offset, batch.max_timestamp()));
    }
    batch
        .records()
        .ok()?
        .filter_map(Result::ok)
        .find(|r| r.timestamp_ms >= ts)
        .map(|r| (r.offset, r.timestamp_ms))
}

pub(crate) async fn offset_for_leader_epoch(
    ctx: &mut Ctx,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let st = ctx.shared.lock();
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.topic.as_str().to_owned();
        let mut parts = Vec::new();
        for op in t.partitions {
            let mut r = EpochEndOffset::default()
                .with_partition(op.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let found = match ctx.faults.partition_error(&name, Some(op.partition)) {
                Some(code) => Err(code),
                None => {
                    leader_partition(&st, ctx.node, &name, op.partition, op.current_leader_epoch)
                        .map(|p| p.log.end_offset_for_epoch(op.leader_epoch))
                }
            };
            match found {
                Ok(Some((epoch, end))) => r = r.with_leader_epoch(epoch).with_end_offset(end),
                Ok(None) => {}
                Err(code) => r = r.with_error_code(code),
            }
            parts.push(r);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(parts),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

pub(crate) async fn offset_commit(ctx: &mut Ctx, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = req.group_id.as_str().to_owned();
    let mut st = ctx.shared.lock();
    // The same answer for every partition when the group or the request is wrong.
    let group_error = ctx
        .faults
        .request_error()
        .or_else(|| super::group::coordinator_error(&st, ctx.node, &group_id))
        .or_else(|| {
            st.groups.get(&group_id).and_then(|g| {
                if g.fenced(req.group_instance_id.as_deref(), req.member_id.as_str()) {
                    return Some(ResponseError::FencedInstanceId.code());
                }
                g.check_commit(req.member_id.as_str(), req.generation_id_or_member_epoch)
                    .err()
            })
        });
    let mut commits = Vec::new();
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.as_str().to_owned();
        let mut parts = Vec::new();
        for p in t.partitions {
            let code = group_error
                .or_else(|| ctx.faults.partition_error(&name, Some(p.partition_index)))
                .or_else(|| {
                    st.partition(&name, p.partition_index)
                        .is_none()
                        .then_some(ResponseError::UnknownTopicOrPartition.code())
                });
            if code.is_none() {
                commits.push((
                    (name.clone(), p.partition_index),
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.map(|m| m.as_str().to_owned()),
                    },
                ));
            }
            parts.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code.unwrap_or(0)),
            );
        }
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    if !commits.is_empty() {
        let g = st
            .groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(&group_id));
        g.offsets.extend(commits);
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// A topic's partitions and their committed offsets (`None`: nothing committed).
type PartitionOffsets = Vec<(i32, Option<CommittedOffset>)>;

/// The committed offsets of one group: (topic, [(partition, offset or None)]), for the
/// topics asked (`None`: every topic with a commit).
fn committed_of(
    st: &State,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, PartitionOffsets)> {
    let g = st.groups.get(group);
    match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(t, parts)| {
                let found = parts
                    .into_iter()
                    .map(|p| (p, g.and_then(|g| g.offsets.get(&(t.clone(), p)).cloned())))
                    .collect();
                (t, found)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, PartitionOffsets> =
                Default::default();
            if let Some(g) = g {
                for ((t, p), c) in &g.offsets {
                    by_topic
                        .entry(t.clone())
                        .or_default()
                        .push((*p, Some(c.clone())));
                }
            }
            for parts in by_topic.values_mut() {
                parts.sort_by_key(|(p, _)| *p);
            }
            by_topic.into_iter().collect()
        }
    }
}

pub(crate) async fn offset_fetch(ctx: &mut Ctx, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let v = ctx.version;
    let st = ctx.shared.lock();
    let request_error = ctx.faults.request_error();
    // KIP-447: a partition with offsets pending in a transaction answers
    // UNSTABLE_OFFSET_COMMIT (retriable) until the transaction ends.
    let require_stable = v >= 7 && req.require_stable;
    if v >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let id = g.group_id.as_str().to_owned();
                let error =
                    request_error.or_else(|| super::group::coordinator_error(&st, ctx.node, &id));
                let mut out = OffsetFetchResponseGroup::default().with_group_id(g.group_id);
                if let Some(code) = error {
                    return out.with_error_code(code);
                }
                let asked = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.as_str().to_owned(), t.partition_indexes))
                        .collect()
                });
                out.topics = committed_of(&st, &id, asked)
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(sb(&t).into())
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(p, c)| {
                                        if require_stable && unstable(&st, &id, &t, p) {
                                            return OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(-1)
                                                .with_committed_leader_epoch(-1)
                                                .with_error_code(
                                                    ResponseError::UnstableOffsetCommit.code(),
                                                );
                                        }
                                        let c = c.unwrap_or_default();
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(c.offset)
                                            .with_committed_leader_epoch(c.leader_epoch)
                                            .with_metadata(Some(sb(c
                                                .metadata
                                                .as_deref()
                                                .unwrap_or(""))))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                out
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let id = req.group_id.as_str().to_owned();
    let error = request_error.or_else(|| super::group::coordinator_error(&st, ctx.node, &id));
    let asked = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.as_str().to_owned(), t.partition_indexes))
            .collect::<Vec<_>>()
    });
    let mut resp = OffsetFetchResponse::default();
    if let Some(code) = error {
        if v >= 2 {
            resp.error_code = code;
        }
        // Before v2 the error goes on every partition asked.
        if v < 2 {
            resp.topics = asked
                .unwrap_or_default()
                .into_iter()
                .map(|(t, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(sb(&t).into())
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
        }
        return resp;
    }
    resp.topics = committed_of(&st, &id, asked)
        .into_iter()
        .map(|(t, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(sb(&t).into())
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, c)| {
                            if require_stable && unstable(&st, &id, &t, p) {
                                return OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(-1)
                                    .with_error_code(ResponseError::UnstableOffsetCommit.code());
                            }
                            let c = c.unwrap_or_default();
                            let mut r = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(c.offset)
                                .with_metadata(Some(sb(c.metadata.as_deref().unwrap_or(""))));
                            if v >= 5 {
                                r = r.with_committed_leader_epoch(c.leader_epoch);
                            }
                            r
                        })
                        .collect(),
                )
        })
        .collect();
    resp
}
