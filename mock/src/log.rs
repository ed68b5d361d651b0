//! A partition's log: record batches kept as they arrived, with their base offset and
//! partition leader epoch rewritten, and the offsets, epochs and retention around them.
//!
//! In record batch v2 the CRC-32C covers the bytes from `attributes` to the end, so the
//! base offset and the partition leader epoch (both before the CRC) are rewritten without
//! touching it. Log append time changes `attributes` and `maxTimestamp`, which the CRC
//! covers: then the CRC is recomputed, as the broker does.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use paperboy_protocol::records::RecordBatch;

/// Offset of `baseOffset` in a batch.
const BASE_OFFSET_AT: usize = 0;
/// Offset of `partitionLeaderEpoch` in a batch.
const LEADER_EPOCH_AT: usize = 12;
/// Offset of the CRC in a batch.
const CRC_AT: usize = 17;
/// Offset of `attributes`, where the CRC's coverage starts.
const ATTRIBUTES_AT: usize = 21;
/// Offset of `maxTimestamp`.
const MAX_TIMESTAMP_AT: usize = 35;
/// The timestamp-type bit of `attributes`: set for log append time.
const LOG_APPEND_TIME_BIT: i16 = 0x08;

/// One stored batch.
#[derive(Debug, Clone)]
pub(crate) struct StoredBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub bytes: Bytes,
}

/// A partition's log.
#[derive(Debug)]
pub(crate) struct PartitionLog {
    batches: VecDeque<StoredBatch>,
    log_start: i64,
    log_end: i64,
    size_bytes: usize,
    /// (leader epoch, first offset written in it), ascending.
    epochs: Vec<(i32, i64)>,
}

impl PartitionLog {
    pub fn new(leader_epoch: i32) -> Self {
        PartitionLog {
            batches: VecDeque::new(),
            log_start: 0,
            log_end: 0,
            size_bytes: 0,
            epochs: vec![(leader_epoch, 0)],
        }
    }

    pub fn log_start(&self) -> i64 {
        self.log_start
    }

    /// The offset the next batch gets. Appends are acknowledged only once stored, so the
    /// high watermark and the last stable offset equal it.
    pub fn log_end(&self) -> i64 {
        self.log_end
    }

    #[cfg(test)]
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// A new leader epoch starts at the current end of the log.
    pub fn new_epoch(&mut self, epoch: i32) {
        self.epochs.push((epoch, self.log_end));
    }

    /// Appends `batch` (already validated) at the end of the log; returns its base offset.
    /// With `log_append_time` set, the batch's timestamp type and max timestamp become
    /// log append time at `now_ms`.
    pub fn append(
        &mut self,
        batch: &RecordBatch,
        leader_epoch: i32,
        log_append_time: Option<i64>,
    ) -> i64 {
        let base = self.log_end;
        let mut bytes = BytesMut::from(&batch.as_bytes()[..]);
        bytes[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base.to_be_bytes());
        bytes[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
        let mut max_timestamp = batch.max_timestamp();
        if let Some(now) = log_append_time {
            let attrs = batch.attributes() | LOG_APPEND_TIME_BIT;
            bytes[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
            bytes[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now.to_be_bytes());
            let crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
            bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
            max_timestamp = now;
        }
        let last = base + i64::from(batch.last_offset_delta());
        self.size_bytes += bytes.len();
        self.batches.push_back(StoredBatch {
            base_offset: base,
            last_offset: last,
            max_timestamp,
            bytes: bytes.freeze(),
        });
        self.log_end = last + 1;
        base
    }

    /// Drops whole batches from the front while the log is larger than `max_bytes`,
    /// keeping at least the last batch.
    pub fn enforce_retention_bytes(&mut self, max_bytes: usize) {
        while self.size_bytes > max_bytes && self.batches.len() > 1 {
            let b = self.batches.pop_front().expect("len > 1");
            self.size_bytes -= b.bytes.len();
            self.log_start = b.last_offset + 1;
        }
    }

    /// Drops batches from the front while their largest timestamp is before
    /// `min_timestamp` (all of them, if all are that old).
    pub fn enforce_retention_time(&mut self, min_timestamp: i64) {
        while self
            .batches
            .front()
            .is_some_and(|b| b.max_timestamp < min_timestamp)
        {
            let b = self.batches.pop_front().expect("front exists");
            self.size_bytes -= b.bytes.len();
            self.log_start = b.last_offset + 1;
        }
    }

    /// Index of the batch holding `offset`, or of the first batch after it.
    fn index_of(&self, offset: i64) -> usize {
        self.batches.partition_point(|b| b.last_offset < offset)
    }

    /// Batches from the one holding `offset`, up to `max_bytes` in total, but always the
    /// first when `at_least_one` (KIP-74: a batch larger than the limit still goes out).
    #[cfg(test)]
    pub fn read(&self, offset: i64, max_bytes: usize, at_least_one: bool) -> Vec<Bytes> {
        self.read_below(offset, max_bytes, at_least_one, i64::MAX).0
    }

    /// As [`read`](Self::read), but only batches that start below `upper` (a read_committed
    /// fetch stops at the last stable offset). Also returns the offset after the last
    /// batch returned (`offset` when none).
    pub fn read_below(
        &self,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
        upper: i64,
    ) -> (Vec<Bytes>, i64) {
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut next = offset;
        for b in self.batches.range(self.index_of(offset)..) {
            if b.base_offset >= upper {
                break;
            }
            if total + b.bytes.len() > max_bytes && !(out.is_empty() && at_least_one) {
                break;
            }
            total += b.bytes.len();
            out.push(b.bytes.clone());
            next = b.last_offset + 1;
        }
        (out, next)
    }

    /// The first batch whose max timestamp is at or after `ts`.
    pub fn first_batch_at_or_after(&self, ts: i64) -> Option<&StoredBatch> {
        self.batches.iter().find(|b| b.max_timestamp >= ts)
    }

    /// The batch with the largest max timestamp (the first of equals), if any.
    pub fn max_timestamp_batch(&self) -> Option<&StoredBatch> {
        let mut best: Option<&StoredBatch> = None;
        for b in &self.batches {
            if best.is_none_or(|x| b.max_timestamp > x.max_timestamp) {
                best = Some(b);
            }
        }
        best
    }

    /// The leader epoch `offset` was written in (the current epoch for the log end).
    pub fn epoch_of(&self, offset: i64) -> i32 {
        let i = self.epochs.partition_point(|&(_, start)| start <= offset);
        self.epochs[i.saturating_sub(1)].0
    }

    /// For OffsetForLeaderEpoch: the largest epoch at or below `epoch` and the offset at
    /// which it ended (the start of the next epoch, or the log end for the current one).
    /// `None` when `epoch` is older than every epoch known.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let i = self.epochs.partition_point(|&(e, _)| e <= epoch);
        if i == 0 {
            return None;
        }
        let (found, _) = self.epochs[i - 1];
        let end = self.epochs.get(i).map_or(self.log_end, |&(_, start)| start);
        Some((found, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paperboy_protocol::records::{
        batches, encode_batch, BatchOptions, DecodeLimits, NewRecord, TimestampType,
    };

    fn batch(n: usize, ts: i64) -> RecordBatch {
        let records: Vec<NewRecord> = (0..n)
            .map(|i| NewRecord {
                value: Some(format!("v{i}").into()),
                timestamp_ms: ts + i as i64,
                ..Default::default()
            })
            .collect();
        let mut buf = BytesMut::new();
        encode_batch(&records, &BatchOptions::default(), &mut buf).unwrap();
        RecordBatch::parse(buf.freeze(), DecodeLimits::default()).unwrap()
    }

    fn parse(b: &Bytes) -> RecordBatch {
        RecordBatch::parse(b.clone(), DecodeLimits::default()).unwrap()
    }

    #[test]
    fn append_rewrites_offsets_and_keeps_the_crc_valid() {
        let mut log = PartitionLog::new(3);
        assert_eq!(log.append(&batch(2, 100), 3, None), 0);
        assert_eq!(log.append(&batch(3, 200), 3, None), 2);
        assert_eq!(log.log_end(), 5);
        let got = log.read(3, usize::MAX, true);
        assert_eq!(got.len(), 1);
        let b = parse(&got[0]);
        b.verify_crc().unwrap();
        assert_eq!(b.base_offset(), 2);
        assert_eq!(b.partition_leader_epoch(), 3);
        let offsets: Vec<i64> = b.records().unwrap().map(|r| r.unwrap().offset).collect();
        assert_eq!(offsets, vec![2, 3, 4]);
    }

    #[test]
    fn log_append_time_recomputes_the_crc() {
        let mut log = PartitionLog::new(0);
        log.append(&batch(2, 100), 0, Some(999_000));
        let b = parse(&log.read(0, usize::MAX, true)[0]);
        b.verify_crc().unwrap();
        assert_eq!(b.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(b.max_timestamp(), 999_000);
    }

    #[test]
    fn read_honours_limits_but_returns_one_batch() {
        let mut log = PartitionLog::new(0);
        for _ in 0..3 {
            log.append(&batch(10, 0), 0, None);
        }
        assert_eq!(log.read(0, 1, true).len(), 1);
        assert_eq!(log.read(0, 1, false).len(), 0);
        assert_eq!(log.read(0, usize::MAX, false).len(), 3);
        let all: usize = log.read(0, usize::MAX, false).iter().map(|b| b.len()).sum();
        assert_eq!(all, log.size_bytes());
        assert_eq!(
            batches(
                log.read(15, usize::MAX, true).concat().into(),
                DecodeLimits::default()
            )
            .count(),
            2
        );
    }

    #[test]
    fn retention_drops_whole_batches_from_the_front() {
        let mut log = PartitionLog::new(0);
        for _ in 0..4 {
            log.append(&batch(10, 0), 0, None);
        }
        let one = log.size_bytes() / 4;
        log.enforce_retention_bytes(one * 2);
        assert_eq!(log.log_start(), 20);
        assert_eq!(log.log_end(), 40);
        log.enforce_retention_bytes(0);
        assert_eq!(log.log_start(), 30);
    }

    #[test]
    fn retention_by_time_drops_old_batches() {
        let mut log = PartitionLog::new(0);
        log.append(&batch(2, 100), 0, None);
        log.append(&batch(2, 200), 0, None);
        log.enforce_retention_time(150);
        assert_eq!((log.log_start(), log.log_end()), (2, 4));
        log.enforce_retention_time(10_000);
        assert_eq!((log.log_start(), log.log_end()), (4, 4));
        assert!(log.read(4, usize::MAX, true).is_empty());
    }

    #[test]
    fn epochs_end_where_the_next_begins() {
        let mut log = PartitionLog::new(0);
        log.append(&batch(5, 0), 0, None);
        log.new_epoch(2);
        log.append(&batch(5, 0), 2, None);
        assert_eq!(log.end_offset_for_epoch(0), Some((0, 5)));
        assert_eq!(log.end_offset_for_epoch(1), Some((0, 5)));
        assert_eq!(log.end_offset_for_epoch(2), Some((2, 10)));
        assert_eq!(log.end_offset_for_epoch(-1), None);
        assert_eq!(
            (
                log.epoch_of(0),
                log.epoch_of(4),
                log.epoch_of(5),
                log.epoch_of(10)
            ),
            (0, 0, 2, 2)
        );
    }
}
