//! Transactions (KIP-98, transaction protocol version 1, with KIP-360/588's epoch bumps
//! and KIP-447's group metadata): the transaction coordinator's side of InitProducerId
//! with a transactional id, AddPartitionsToTxn (v0-3), AddOffsetsToTxn and EndTxn; the
//! group coordinator's TxnOffsetCommit; the transaction markers (control batches) written
//! to every partition of a transaction when it ends, and each partition's open and
//! aborted transactions, from which Fetch and ListOffsets work out the last stable
//! offset and read_committed answers.
//!
//! A transaction's state changes at once under the state's lock: there is no
//! PrepareCommit/PrepareAbort phase (markers are written before EndTxn answers), so
//! CONCURRENT_TRANSACTIONS never comes up, except from a fault.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use paperboy_protocol::records::{
    encode_batch, BatchOptions, DecodeLimits, NewRecord, RecordBatch,
};
use tokio::time::Instant;

use super::group::CommittedOffset;
use super::Ctx;
use crate::state::{now_ms, State};

/// `transaction.max.timeout.ms`: the largest `transaction_timeout_ms` accepted (Kafka's
/// default, 15 minutes).
pub(crate) const MAX_TRANSACTION_TIMEOUT_MS: i32 = 900_000;

/// The coordinator epoch written in the markers' values (the mock's coordinators never
/// fail over).
const COORDINATOR_EPOCH: i32 = 0;

/// Where a transactional id's transaction is (Kafka's states without the Prepare ones,
/// which the mock passes through at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnPhase {
    /// No transaction since InitProducerId.
    Empty,
    /// Partitions or offsets added, not ended yet.
    Ongoing,
    /// The last transaction committed.
    CompleteCommit,
    /// The last transaction aborted.
    CompleteAbort,
}

/// A transactional id's state at its coordinator.
#[derive(Debug)]
pub(crate) struct Transaction {
    pub producer_id: i64,
    pub epoch: i16,
    /// The epoch before the last bump asked for with the current epoch (KIP-360: a retry
    /// of that InitProducerId gets the current epoch again); -1 otherwise.
    pub last_epoch: i16,
    pub timeout_ms: i32,
    pub phase: TxnPhase,
    /// Partitions added to the ongoing transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets were added (AddOffsetsToTxn).
    pub groups: BTreeSet<String>,
    /// When the ongoing transaction started (its first AddPartitionsToTxn / AddOffsetsToTxn).
    pub started: Instant,
}

/// A partition's transactions: where the open ones start, and the aborted ones (Kafka's
/// aborted transaction index).
#[derive(Debug, Default)]
pub(crate) struct PartitionTxns {
    /// Producer id -> offset of its open transaction's first batch on this partition.
    pub open: BTreeMap<i64, i64>,
    /// Aborted transactions: (producer id, first offset, offset of the abort marker).
    pub aborted: Vec<(i64, i64, i64)>,
}

impl PartitionTxns {
    /// The last stable offset: the first offset of the earliest open transaction, else
    /// the high watermark.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.open
            .values()
            .copied()
            .min()
            .map_or(high_watermark, |o| o.min(high_watermark))
    }

    /// The aborted transactions a read of `[from, upper)` must report: those whose
    /// marker is at or after `from` and whose data starts before `upper`.
    pub fn aborted_in(&self, from: i64, upper: i64) -> Vec<(i64, i64)> {
        let mut found: Vec<(i64, i64)> = self
            .aborted
            .iter()
            .filter(|(_, first, last)| *last >= from && *first < upper)
            .map(|(pid, first, _)| (*pid, *first))
            .collect();
        // By first offset, as consumers walk them alongside the batches.
        found.sort_by_key(|(_, first)| *first);
        found
    }
}

/// Pending transactional offsets: (group, producer id) -> offsets, until the transaction
/// ends.
pub(crate) type PendingOffsets = HashMap<(String, i64), HashMap<(String, i32), CommittedOffset>>;

/// Whether `group` has a transactional offset pending for a partition (OffsetFetch with
/// `require_stable` answers UNSTABLE_OFFSET_COMMIT for it).
pub(crate) fn unstable(st: &State, group: &str, topic: &str, partition: i32) -> bool {
    st.txn_offsets
        .iter()
        .any(|((g, _), m)| g == group && m.contains_key(&(topic.to_owned(), partition)))
}

/// The control batch of a transaction marker: one control record whose key is
/// (version 0, type 0 abort / 1 commit) and value (version 0, coordinator epoch).
fn marker_batch(producer_id: i64, epoch: i16, commit: bool) -> RecordBatch {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(i16::from(commit));
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(COORDINATOR_EPOCH);
    let record = NewRecord {
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        timestamp_ms: now_ms(),
        ..NewRecord::default()
    };
    let opts = BatchOptions {
        producer_id,
        producer_epoch: epoch,
        transactional: true,
        control: true,
        ..BatchOptions::default()
    };
    let mut buf = BytesMut::new();
    encode_batch(&[record], &opts, &mut buf).expect("a marker encodes");
    RecordBatch::parse(buf.freeze(), DecodeLimits::default()).expect("a marker parses")
}

/// Writes a marker to a partition (where it still exists) and closes the producer's
/// transaction there; an abort of data written is recorded for read_committed fetches.
fn write_marker(st: &mut State, topic: &str, partition: i32, pid: i64, epoch: i16, commit: bool) {
    let Some(p) = st.partition_mut(topic, partition) else {
        return;
    };
    let batch = marker_batch(pid, epoch, commit);
    let offset = p.log.append(&batch, p.leader_epoch, None);
    if let Some(first) = p.txns.open.remove(&pid) {
        if !commit {
            p.txns.aborted.push((pid, first, offset));
        }
    }
    // A marker carries the producer's epoch: an older epoch is fenced on the partition.
    let e = p.producers.entry(pid).or_default();
    if e.epoch != epoch {
        e.recent.clear();
        e.epoch = epoch;
    }
}

/// Ends the ongoing transaction of `id` (commit or abort) with its current epoch: markers
/// to every partition added, its pending offsets applied or dropped. Returns whether
/// anything was appended.
pub(crate) fn complete(st: &mut State, id: &str, commit: bool) -> bool {
    let Some(t) = st.transactions.get_mut(id) else {
        return false;
    };
    let (pid, epoch) = (t.producer_id, t.epoch);
    let partitions = std::mem::take(&mut t.partitions);
    let groups = std::mem::take(&mut t.groups);
    t.phase = if commit {
        TxnPhase::CompleteCommit
    } else {
        TxnPhase::CompleteAbort
    };
    let appended = !partitions.is_empty();
    for (topic, partition) in &partitions {
        write_marker(st, topic, *partition, pid, epoch, commit);
    }
    for g in groups {
        let Some(offsets) = st.txn_offsets.remove(&(g.clone(), pid)) else {
            continue;
        };
        if commit {
            st.groups
                .entry(g.clone())
                .or_insert_with(|| super::group::Group::new(&g))
                .offsets
                .extend(offsets);
        }
    }
    tracing::debug!(txn = id, pid, epoch, commit, "transaction ended");
    appended
}

/// Aborts the transactions open longer than their timeout, bumping their epoch first so
/// the producer that left them is fenced (as Kafka's coordinator does). Returns whether
/// anything was appended.
pub(crate) fn expire(st: &mut State, now: Instant) -> bool {
    let expired: Vec<String> = st
        .transactions
        .iter()
        .filter(|(_, t)| {
            t.phase == TxnPhase::Ongoing
                && now.duration_since(t.started)
                    >= Duration::from_millis(t.timeout_ms.max(0) as u64)
        })
        .map(|(id, _)| id.clone())
        .collect();
    let mut appended = false;
    for id in expired {
        if let Some(t) = st.transactions.get_mut(&id) {
            t.epoch = t.epoch.saturating_add(1);
            t.last_epoch = -1;
            tracing::debug!(txn = %id, epoch = t.epoch, "transaction timed out: aborted");
        }
        appended |= complete(st, &id, false);
    }
    appended
}

fn init_error(code: i16) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(code)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1)
}

/// InitProducerId with a transactional id (the caller checked faults), as Kafka's
/// coordinator answers it. Returns the response and whether markers were appended.
///
/// - A transaction open: the epoch is bumped (fencing its producer), the transaction
///   aborted with the new epoch, and the answer is CONCURRENT_TRANSACTIONS; the retry
///   bumps the epoch once more (a new producer ends up two epochs further).
/// - Otherwise, without a producer id/epoch: a new epoch. With them (KIP-360/588): the
///   current epoch is bumped; the epoch it was bumped from (a retry) gets the current
///   one again; any other epoch, or another producer id, is PRODUCER_FENCED (after a
///   fencing bump, by a new producer or a timeout, no older epoch is accepted).
pub(crate) fn init_producer_id(
    st: &mut State,
    node: i32,
    req: &InitProducerIdRequest,
) -> (InitProducerIdResponse, bool) {
    let id = req
        .transactional_id
        .as_ref()
        .map(|t| t.0.as_str().to_owned())
        .unwrap_or_default();
    if id.is_empty() {
        return (init_error(ResponseError::InvalidRequest.code()), false);
    }
    if let Some(code) = super::group::coordinator_error(st, node, &id) {
        return (init_error(code), false);
    }
    if req.transaction_timeout_ms <= 0 || req.transaction_timeout_ms > MAX_TRANSACTION_TIMEOUT_MS {
        return (
            init_error(ResponseError::InvalidTransactionTimeout.code()),
            false,
        );
    }
    let expected = match (req.producer_id.0, req.producer_epoch) {
        (-1, -1) => None,
        (pid, epoch) if pid < 0 || epoch < 0 => {
            return (init_error(ResponseError::InvalidRequest.code()), false)
        }
        (pid, epoch) => Some((pid, epoch)),
    };
    let Some(t) = st.transactions.get_mut(&id) else {
        let pid = super::produce::new_producer_id(st);
        st.transactions.insert(
            id,
            Transaction {
                producer_id: pid,
                epoch: 0,
                last_epoch: -1,
                timeout_ms: req.transaction_timeout_ms,
                phase: TxnPhase::Empty,
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
                started: Instant::now(),
            },
        );
        st.producer_epochs.insert(pid, 0);
        return (
            InitProducerIdResponse::default()
                .with_producer_id(pid.into())
                .with_producer_epoch(0),
            false,
        );
    };
    if expected.is_some_and(|(pid, _)| pid != t.producer_id) {
        return (init_error(ResponseError::ProducerFenced.code()), false);
    }
    if t.phase == TxnPhase::Ongoing {
        // Fence the producer of the open transaction and abort it with the new epoch.
        t.epoch = t.epoch.saturating_add(1);
        t.last_epoch = -1;
        let appended = complete(st, &id, false);
        return (
            init_error(ResponseError::ConcurrentTransactions.code()),
            appended,
        );
    }
    let exhausted = t.epoch >= i16::MAX - 1;
    let (pid, epoch, last) = match expected {
        _ if exhausted && expected.is_none_or(|(_, e)| e == t.epoch) => {
            // Out of epochs: a new producer id, epoch 0.
            let last = if expected.is_some() { t.epoch } else { -1 };
            (super::produce::new_producer_id(st), 0, last)
        }
        _ if exhausted => return (init_error(ResponseError::ProducerFenced.code()), false),
        None => (t.producer_id, t.epoch + 1, -1),
        Some((_, e)) if e == t.epoch => (t.producer_id, t.epoch + 1, t.epoch),
        Some((_, e)) if e == t.last_epoch => (t.producer_id, t.epoch, t.last_epoch),
        Some(_) => return (init_error(ResponseError::ProducerFenced.code()), false),
    };
    let t = st.transactions.get_mut(&id).expect("looked up above");
    t.producer_id = pid;
    t.epoch = epoch;
    t.last_epoch = last;
    t.timeout_ms = req.transaction_timeout_ms;
    t.phase = TxnPhase::Empty;
    st.producer_epochs.insert(pid, epoch);
    (
        InitProducerIdResponse::default()
            .with_producer_id(pid.into())
            .with_producer_epoch(epoch),
        false,
    )
}

/// The coordinator-side checks of a transactional request: the node coordinates the id,
/// the id is known, the producer id maps to it and the epoch is current.
fn check_producer(st: &State, node: i32, id: &str, pid: i64, epoch: i16) -> Result<(), i16> {
    if let Some(code) = super::group::coordinator_error(st, node, id) {
        return Err(code);
    }
    let Some(t) = st.transactions.get(id) else {
        return Err(ResponseError::InvalidProducerIdMapping.code());
    };
    if t.producer_id != pid {
        return Err(ResponseError::InvalidProducerIdMapping.code());
    }
    if t.epoch != epoch {
        return Err(ResponseError::ProducerFenced.code());
    }
    Ok(())
}

/// Marks a transaction ongoing (starting its timeout when it was not).
fn begin(t: &mut Transaction) {
    if t.phase != TxnPhase::Ongoing {
        t.phase = TxnPhase::Ongoing;
        t.started = Instant::now();
    }
}

pub(crate) async fn add_partitions_to_txn(
    ctx: &mut Ctx,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let mut st = ctx.shared.lock();
    let id = req.v3_and_below_transactional_id.0.as_str().to_owned();
    let request_error = ctx.faults.request_error().or_else(|| {
        check_producer(
            &st,
            ctx.node,
            &id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
        )
        .err()
    });
    // Partition-level: unknown partitions and faults; then the others are not attempted.
    let mut per_partition: Vec<(String, i32, Option<i16>)> = Vec::new();
    for t in &req.v3_and_below_topics {
        let name = t.name.0.as_str().to_owned();
        for &p in &t.partitions {
            let code = request_error
                .or_else(|| ctx.faults.partition_error(&name, Some(p)))
                .or_else(|| {
                    st.partition(&name, p)
                        .is_none()
                        .then_some(ResponseError::UnknownTopicOrPartition.code())
                });
            per_partition.push((name.clone(), p, code));
        }
    }
    let failed = per_partition.iter().any(|(_, _, c)| c.is_some());
    if !failed {
        if let Some(t) = st.transactions.get_mut(&id) {
            begin(t);
            for (topic, p, _) in &per_partition {
                t.partitions.insert((topic.clone(), *p));
            }
        }
    }
    let mut topics: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for (topic, p, code) in per_partition {
        let code = match code {
            Some(c) => c,
            None if failed => ResponseError::OperationNotAttempted.code(),
            None => 0,
        };
        let r = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(p)
            .with_partition_error_code(code);
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.results_by_partition.push(r),
            None => topics.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(super::sb(&topic).into())
                    .with_results_by_partition(vec![r]),
            ),
        }
    }
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
}

pub(crate) async fn add_offsets_to_txn(
    ctx: &mut Ctx,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let mut st = ctx.shared.lock();
    let id = req.transactional_id.0.as_str().to_owned();
    let error = ctx.faults.request_error().or_else(|| {
        check_producer(&st, ctx.node, &id, req.producer_id.0, req.producer_epoch).err()
    });
    if let Some(code) = error {
        return AddOffsetsToTxnResponse::default().with_error_code(code);
    }
    if let Some(t) = st.transactions.get_mut(&id) {
        begin(t);
        t.groups.insert(req.group_id.0.as_str().to_owned());
    }
    AddOffsetsToTxnResponse::default()
}

pub(crate) async fn end_txn(ctx: &mut Ctx, req: EndTxnRequest) -> EndTxnResponse {
    let resp = |code: i16| {
        EndTxnResponse::default()
            .with_error_code(code)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1)
    };
    let appended = {
        let mut st = ctx.shared.lock();
        let id = req.transactional_id.0.as_str().to_owned();
        let error = ctx.faults.request_error().or_else(|| {
            check_producer(&st, ctx.node, &id, req.producer_id.0, req.producer_epoch).err()
        });
        if let Some(code) = error {
            return resp(code);
        }
        let phase = st.transactions.get(&id).map(|t| t.phase);
        match (phase, req.committed) {
            (Some(TxnPhase::Ongoing), commit) => complete(&mut st, &id, commit),
            // A retry of an end that went through.
            (Some(TxnPhase::CompleteCommit), true) | (Some(TxnPhase::CompleteAbort), false) => {
                false
            }
            _ => return resp(ResponseError::InvalidTxnState.code()),
        }
    };
    if appended {
        ctx.shared.appended.send_modify(|g| *g += 1);
    }
    resp(0)
}

pub(crate) async fn txn_offset_commit(
    ctx: &mut Ctx,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let v = ctx.version;
    let mut st = ctx.shared.lock();
    let group_id = req.group_id.0.as_str().to_owned();
    let id = req.transactional_id.0.as_str().to_owned();
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    let request_error = ctx
        .faults
        .request_error()
        .or_else(|| super::group::coordinator_error(&st, ctx.node, &group_id))
        // The transaction: the group must have been added to the producer's ongoing one
        // (Kafka verifies it with the transaction coordinator).
        .or_else(|| {
            let Some(t) = st.transactions.get(&id) else {
                return Some(ResponseError::InvalidProducerIdMapping.code());
            };
            if t.producer_id != pid {
                Some(ResponseError::InvalidProducerIdMapping.code())
            } else if t.epoch != epoch {
                // PRODUCER_FENCED from the verification, as producers expect it here.
                Some(ResponseError::InvalidProducerEpoch.code())
            } else if t.phase != TxnPhase::Ongoing || !t.groups.contains(&group_id) {
                Some(if v >= 4 {
                    ResponseError::TransactionAbortable.code()
                } else {
                    ResponseError::InvalidTxnState.code()
                })
            } else {
                None
            }
        })
        // The member, when one is named (KIP-447): a zombie's generation is refused.
        .or_else(|| {
            let no_member = req.generation_id < 0
                && req.member_id.is_empty()
                && req.group_instance_id.is_none();
            match st.groups.get(&group_id) {
                None if req.generation_id < 0 => None,
                None => Some(ResponseError::IllegalGeneration.code()),
                Some(_) if no_member => None,
                Some(g) => {
                    if g.fenced(req.group_instance_id.as_deref(), req.member_id.as_str()) {
                        Some(ResponseError::FencedInstanceId.code())
                    } else if !g.members.contains_key(req.member_id.as_str()) {
                        Some(ResponseError::UnknownMemberId.code())
                    } else if req.generation_id != g.generation {
                        Some(ResponseError::IllegalGeneration.code())
                    } else {
                        None
                    }
                }
            }
        });
    let mut pending = Vec::new();
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.0.as_str().to_owned();
        let mut parts = Vec::new();
        for p in t.partitions {
            let code = request_error
                .or_else(|| ctx.faults.partition_error(&name, Some(p.partition_index)))
                .or_else(|| {
                    st.partition(&name, p.partition_index)
                        .is_none()
                        .then_some(ResponseError::UnknownTopicOrPartition.code())
                });
            if code.is_none() {
                pending.push((
                    (name.clone(), p.partition_index),
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.map(|m| m.as_str().to_owned()),
                    },
                ));
            }
            parts.push(
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code.unwrap_or(0)),
            );
        }
        topics.push(
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    if !pending.is_empty() {
        st.txn_offsets
            .entry((group_id, pid))
            .or_default()
            .extend(pending);
    }
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// Produce's check of a transactional batch (Kafka's verification with the coordinator,
/// `transaction.partition.verification.enable`): the producer's transaction is ongoing
/// with this partition added and this epoch. Errors as Kafka 4.x maps them for the
/// Produce version: a partition not added is INVALID_TXN_STATE up to v10 and
/// TRANSACTION_ABORTABLE from v11; a fenced epoch is INVALID_PRODUCER_EPOCH.
pub(crate) fn verify_produce(
    st: &State,
    version: i16,
    transactional_id: Option<&str>,
    batch: &RecordBatch,
    topic: &str,
    partition: i32,
) -> Result<(), i16> {
    let Some(id) = transactional_id.filter(|s| !s.is_empty()) else {
        return Err(ResponseError::TransactionalIdAuthorizationFailed.code());
    };
    let Some(t) = st.transactions.get(id) else {
        return Err(ResponseError::InvalidProducerIdMapping.code());
    };
    if t.producer_id != batch.producer_id() {
        return Err(ResponseError::InvalidProducerIdMapping.code());
    }
    if t.epoch != batch.producer_epoch() {
        return Err(ResponseError::InvalidProducerEpoch.code());
    }
    if t.phase != TxnPhase::Ongoing || !t.partitions.contains(&(topic.to_owned(), partition)) {
        return Err(if version >= 11 {
            ResponseError::TransactionAbortable.code()
        } else {
            ResponseError::InvalidTxnState.code()
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lso_is_the_earliest_open_transaction_and_aborts_are_reported_where_read() {
        let mut t = PartitionTxns::default();
        assert_eq!(t.last_stable_offset(10), 10);
        t.open.insert(7, 4);
        t.open.insert(8, 2);
        assert_eq!(t.last_stable_offset(10), 2);
        t.open.remove(&8);
        assert_eq!(t.last_stable_offset(10), 4);
        // (pid, first offset, abort marker offset), in marker order.
        t.aborted = vec![(1, 5, 9), (2, 0, 12), (3, 20, 21)];
        assert_eq!(t.aborted_in(0, 15), vec![(2, 0), (1, 5)], "by first offset");
        assert_eq!(t.aborted_in(10, 15), vec![(2, 0)], "marker before the read");
        assert_eq!(t.aborted_in(0, 5), vec![(2, 0)], "data after the read");
        assert_eq!(t.aborted_in(13, 30), vec![(3, 20)]);
    }

    #[test]
    fn a_marker_is_a_transactional_control_batch() {
        let b = marker_batch(42, 3, true);
        b.verify_crc().unwrap();
        assert!(b.is_control() && b.is_transactional());
        assert_eq!(
            (b.producer_id(), b.producer_epoch(), b.base_sequence()),
            (42, 3, -1)
        );
        assert_eq!(
            b.control_marker().unwrap(),
            Some(paperboy_protocol::records::ControlMarker::Commit)
        );
        let r = b.records().unwrap().next().unwrap().unwrap();
        assert_eq!(r.value.as_deref(), Some(&[0u8, 0, 0, 0, 0, 0][..]));
        let abort = marker_batch(42, 3, false);
        assert_eq!(
            abort.control_marker().unwrap(),
            Some(paperboy_protocol::records::ControlMarker::Abort)
        );
    }
}
