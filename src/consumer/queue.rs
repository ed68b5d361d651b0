//! The prefetch queue: each partition's fetched batches waiting to be handed out, the
//! batch being handed out, and what they cost against `queued.max.messages.kbytes`; opening
//! a batch (CRC, decompression, control batches and aborted transactions skipped); taking
//! records for `recv`.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use paperboy_protocol::records::{ControlMarker, RecordBatch, Records, TimestampType};

#[allow(clippy::wildcard_imports)]
use super::*;

/// A batch waiting in the prefetch queue, and what it costs against the budget.
pub(super) struct Queued {
    /// A batch, or the error that stopped decoding the record set at this point.
    pub(super) batch: std::result::Result<RecordBatch, paperboy_protocol::records::DecodeError>,
    pub(super) bytes: usize,
}

/// The batch records are being handed out from.
pub(super) struct Current {
    pub(super) records: Records,
    pub(super) leader_epoch: i32,
    pub(super) timestamp_type: TimestampType,
    /// What the batch is charged: its bytes as fetched plus `inflated`.
    pub(super) bytes: usize,
    /// The decompressed records of a compressed batch (0 for an uncompressed one).
    pub(super) inflated: usize,
    pub(super) last_offset: i64,
}

pub(super) struct PartState {
    /// The topic name, shared by every record handed out.
    pub(super) topic: Arc<str>,
    /// The next offset to hand out; `None` until initialized from the committed offset
    /// or `auto.offset.reset`.
    pub(super) position: Option<i64>,
    /// Leader epoch of the last record handed out (-1 before any).
    pub(super) position_epoch: i32,
    /// The next offset to fetch (the position plus what is queued).
    pub(super) fetch_offset: i64,
    /// Changed whenever the position jumps, so a fetch in flight from before is ignored.
    /// Unique in the process ([`next_gen`]), not per partition state: a partition removed
    /// and added again must not match the answer to a fetch sent for its old state.
    pub(super) gen: u64,
    pub(super) paused: bool,
    /// When the partition was last paused (see the fetcher's short waits after a pause).
    pub(super) paused_at: Option<Instant>,
    pub(super) in_flight: bool,
    pub(super) queue: VecDeque<Queued>,
    pub(super) current: Option<Current>,
    pub(super) bytes: usize,
    pub(super) high_watermark: i64,
    pub(super) last_stable_offset: i64,
    /// Aborted transactions announced by fetches: (producer id, first offset).
    pub(super) aborted: VecDeque<(i64, i64)>,
    pub(super) aborting: HashSet<i64>,
    pub(super) error: Option<Error>,
    pub(super) error_reported: bool,
    /// A fault to surface once from `recv`/`recv_batch` while fetching goes on (the
    /// partition could not be fetched for `fetch.error.timeout.ms`).
    pub(super) fault: Option<Error>,
    /// When fetching this partition started failing (transport, protocol or broker
    /// errors), cleared by a fetch that succeeds; and the failures since.
    pub(super) failing_since: Option<Instant>,
    pub(super) failures: u32,
    pub(super) retry_at: Option<Instant>,
    /// OFFSET_OUT_OF_RANGE came back: the fetcher resets the position.
    pub(super) out_of_range: bool,
    /// The leader epoch fetching last started with or validated against (-1: none yet).
    /// A higher epoch in the metadata means a new leader: the position is validated first.
    pub(super) leader_epoch: i32,
    /// The position waits for validation against the leader's log (KIP-320), with the
    /// leader epoch of the record before it: after a leader change, or when it came
    /// from a committed offset that carries its epoch. Not fetched until then.
    pub(super) validate: Option<i32>,
    /// Consumed counters and lag gauge, made on first use (feature `metrics`).
    pub(super) metrics: telemetry::Part,
}

/// A fresh fetch generation for a partition's state, never handed out before in this
/// process. A counter per partition state started at 0 for a partition added again after
/// it was removed (revoked, unassigned), so after its first seek it could equal the
/// generation of a fetch still in flight for the old state; that fetch's records were
/// then queued for the new position, and those between the new position and the old
/// fetch offset were skipped: lost, and committed past.
pub(super) fn next_gen() -> u64 {
    static GEN: AtomicU64 = AtomicU64::new(1);
    GEN.fetch_add(1, Ordering::Relaxed)
}

impl PartState {
    pub(super) fn new(tp: &TopicPartition) -> Self {
        PartState {
            topic: Arc::from(tp.topic.as_str()),
            position: None,
            position_epoch: -1,
            fetch_offset: 0,
            gen: next_gen(),
            paused: false,
            paused_at: None,
            in_flight: false,
            queue: VecDeque::new(),
            current: None,
            bytes: 0,
            high_watermark: -1,
            last_stable_offset: -1,
            aborted: VecDeque::new(),
            aborting: HashSet::new(),
            error: None,
            error_reported: false,
            fault: None,
            failing_since: None,
            failures: 0,
            retry_at: None,
            out_of_range: false,
            leader_epoch: -1,
            validate: None,
            metrics: telemetry::Part::new(),
        }
    }

    /// Drops everything buffered; returns the bytes released.
    pub(super) fn clear(&mut self) -> usize {
        self.queue.clear();
        self.current = None;
        self.aborted.clear();
        self.aborting.clear();
        self.gen = next_gen();
        self.in_flight = false;
        std::mem::take(&mut self.bytes)
    }

    pub(super) fn seek(&mut self, offset: i64) -> usize {
        let freed = self.clear();
        self.position = Some(offset);
        self.fetch_offset = offset;
        self.error = None;
        self.error_reported = false;
        self.out_of_range = false;
        self.retry_at = None;
        self.validate = None;
        freed
    }
}

pub(super) struct Taken {
    pub(super) freed: bool,
    pub(super) error: Option<(TopicPartition, Error)>,
}

/// Prepares a queued batch for handing out: skips control batches and aborted
/// transactions (read_committed), checks the CRC, decompresses. `Ok(None)` when the
/// batch yields nothing (the caller releases its bytes).
pub(super) fn open_batch(
    p: &mut PartState,
    q: Queued,
    read_committed: bool,
) -> std::result::Result<Option<Current>, paperboy_protocol::records::DecodeError> {
    let batch = q.batch?;
    let skip = |p: &mut PartState| {
        let next = batch.next_offset();
        if p.position.is_some_and(|pos| pos < next) {
            p.position = Some(next);
        }
    };
    // On an error the bytes stay charged: the partition stops until a seek, which
    // clears its queue and its charge together.
    batch.verify_crc()?;
    if read_committed {
        while let Some(&(pid, first)) = p.aborted.front() {
            if first > batch.last_offset() {
                break;
            }
            p.aborting.insert(pid);
            p.aborted.pop_front();
        }
    }
    if batch.is_control() {
        if read_committed && batch.is_transactional() {
            if let Ok(Some(ControlMarker::Abort | ControlMarker::Commit)) = batch.control_marker() {
                p.aborting.remove(&batch.producer_id());
            }
        }
        skip(p);
        return Ok(None);
    }
    if read_committed && batch.is_transactional() && p.aborting.contains(&batch.producer_id()) {
        skip(p);
        return Ok(None);
    }
    let records = batch.records()?;
    // A compressed batch's records live in a buffer of their own, charged to the budget
    // until the batch is done (its records handed out).
    let inflated = if batch.compression() == paperboy_protocol::compression::Compression::None {
        0
    } else {
        records.data_len()
    };
    Ok(Some(Current {
        records,
        leader_epoch: batch.partition_leader_epoch(),
        timestamp_type: batch.timestamp_type(),
        bytes: q.bytes + inflated,
        inflated,
        last_offset: batch.last_offset(),
    }))
}

/// Releases the partition's current batch, all of whose records were taken: its charge
/// leaves the budget and the position moves past it (past trailing offsets a compaction
/// removed).
fn finish_batch(p: &mut PartState, buffered: &mut usize, inflated_open: &mut usize) {
    let done = p.current.take().expect("a current batch");
    if done.inflated > 0 {
        *inflated_open -= 1;
    }
    p.position = Some(p.position.unwrap_or(0).max(done.last_offset + 1));
    p.bytes -= done.bytes;
    *buffered -= done.bytes;
}

impl Consumer {
    /// Takes up to `n` records from the queue into the stash, round-robin over
    /// partitions; a partition's error or fault comes back with it (not yet marked as
    /// reported: the caller does when it returns the error).
    pub(super) fn take(&self, n: usize, inflated_taken: &mut usize) -> Taken {
        let mut taken = Taken {
            freed: false,
            error: None,
        };
        if n == 0 {
            return taken;
        }
        let read_committed = self.inner.config.isolation == IsolationLevel::ReadCommitted;
        let mut st = self.inner.lock();
        let State {
            parts,
            buffered,
            stash,
            metrics,
            ..
        } = &mut *st;
        let budget = self.inner.config.prefetch_budget;
        // Decompressed batches open (of partitions not paused): another compressed batch
        // is opened only while the budget has room, or when none is open (so a batch
        // larger than the budget still goes through, one at a time).
        let mut inflated_open = parts
            .values()
            .filter(|p| !p.paused && p.current.as_ref().is_some_and(|c| c.inflated > 0))
            .count();

        let mut want = n;
        // Passes of a fair share per partition, so one busy partition does not starve
        // others; more passes while some partitions have more and the call wants more
        // (one pass of n / partitions each could leave the call short, and it would then
        // wait for its timeout with records at hand).
        loop {
            let before = want;
            let per_part = (want / parts.len().max(1)).max(1);
            for (tp, p) in parts.iter_mut() {
                if want == 0 {
                    break;
                }
                if let Some(e) = &p.error {
                    // Surfaced once; the partition stays stopped until a seek.
                    if !p.error_reported && taken.error.is_none() {
                        taken.error = Some((tp.clone(), e.clone()));
                    }
                    continue;
                }
                if let Some(e) = &p.fault {
                    // Surfaced once; fetching goes on.
                    if taken.error.is_none() {
                        taken.error = Some((tp.clone(), e.clone()));
                    }
                }
                if p.paused || p.position.is_none() {
                    continue;
                }
                let mut quota = per_part.min(want);
                // Records and bytes taken for the application (feature `metrics`).
                let (mut n_taken, mut bytes_taken) = (0usize, 0usize);
                while quota > 0 {
                    let Some(cur) = p.current.as_mut() else {
                        let compressed = p.queue.front().is_some_and(|q| {
                            q.batch.as_ref().is_ok_and(|b| {
                                b.compression() != paperboy_protocol::compression::Compression::None
                            })
                        });
                        if compressed
                            && ((inflated_open > 0 && *buffered >= budget)
                                || *inflated_taken >= budget)
                        {
                            break;
                        }
                        let Some(q) = p.queue.pop_front() else { break };
                        let bytes = q.bytes;
                        match open_batch(p, q, read_committed) {
                            Ok(Some(c)) => {
                                if c.inflated > 0 {
                                    inflated_open += 1;
                                    *inflated_taken += c.inflated;
                                    p.bytes += c.inflated;
                                    *buffered += c.inflated;
                                }
                                p.current = Some(c);
                            }
                            Ok(None) => {
                                p.bytes -= bytes;
                                *buffered -= bytes;
                                taken.freed = true;
                            }
                            Err(e) => {
                                p.error = Some(Error::Decode(e));
                                break;
                            }
                        }
                        continue;
                    };
                    match cur.records.next() {
                        Some(Ok(r)) => {
                            if r.offset < p.position.unwrap_or(0) {
                                continue;
                            }
                            p.position = Some(r.offset + 1);
                            p.position_epoch = cur.leader_epoch;
                            // The batch's last record: its bytes are released now, not
                            // at the next take (a compacted batch whose last record is
                            // gone is released when its records run out, below).
                            let last_of_batch = r.offset >= cur.last_offset;
                            let headers = r.headers();
                            n_taken += 1;
                            bytes_taken += r.key.as_ref().map_or(0, |k| k.len())
                                + r.value.as_ref().map_or(0, |v| v.len());
                            stash.push_back(ConsumerRecord {
                                topic: p.topic.clone(),
                                partition: tp.partition,
                                offset: r.offset,
                                timestamp_ms: r.timestamp_ms,
                                timestamp_type: cur.timestamp_type,
                                leader_epoch: cur.leader_epoch,
                                key: r.key,
                                value: r.value,
                                headers,
                            });
                            quota -= 1;
                            want -= 1;
                            if last_of_batch {
                                finish_batch(p, buffered, &mut inflated_open);
                                taken.freed = true;
                            }
                        }
                        Some(Err(e)) => {
                            p.error = Some(Error::Decode(e));
                            break;
                        }
                        None => {
                            finish_batch(p, buffered, &mut inflated_open);
                            taken.freed = true;
                        }
                    }
                }
                if n_taken > 0 {
                    let (topic, partition) = (&p.topic, tp.partition);
                    p.metrics
                        .consumed(metrics, topic, partition, n_taken, bytes_taken);
                    if let Some(pos) = p.position.filter(|_| p.high_watermark >= 0) {
                        p.metrics
                            .lag(metrics, topic, partition, p.high_watermark - pos);
                    }
                }
            }
            if want == 0 || want == before {
                break;
            }
        }
        metrics.prefetch(*buffered);
        taken
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes, BytesMut};
    use paperboy_protocol::compression::Compression;
    use paperboy_protocol::records::{
        batches, encode_batch, BatchOptions, DecodeLimits, NewRecord,
    };

    use super::*;

    fn batch(base: i64, n: usize, opts: BatchOptions) -> Queued {
        let records: Vec<NewRecord> = (0..n)
            .map(|i| NewRecord {
                key: None,
                value: Some(Bytes::from(format!("v{}", base + i as i64))),
                headers: vec![],
                timestamp_ms: 1,
            })
            .collect();
        let mut buf = BytesMut::new();
        encode_batch(
            &records,
            &BatchOptions {
                base_offset: base,
                ..opts
            },
            &mut buf,
        )
        .unwrap();
        let bytes = buf.len();
        let b = batches(buf.freeze(), DecodeLimits::default())
            .next()
            .unwrap();
        Queued { batch: b, bytes }
    }

    fn marker(offset: i64, pid: i64, commit: bool) -> Queued {
        let mut key = Vec::new();
        key.put_i16(0);
        key.put_i16(i16::from(commit));
        let r = NewRecord {
            key: Some(key.into()),
            value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
            headers: vec![],
            timestamp_ms: 1,
        };
        let mut buf = BytesMut::new();
        let opts = BatchOptions {
            base_offset: offset,
            control: true,
            transactional: true,
            producer_id: pid,
            ..BatchOptions::default()
        };
        encode_batch(&[r], &opts, &mut buf).unwrap();
        let bytes = buf.len();
        let b = batches(buf.freeze(), DecodeLimits::default())
            .next()
            .unwrap();
        Queued { batch: b, bytes }
    }

    fn txn(pid: i64) -> BatchOptions {
        BatchOptions {
            transactional: true,
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 0,
            ..BatchOptions::default()
        }
    }

    fn part(position: i64) -> PartState {
        let mut p = PartState::new(&TopicPartition::new("t", 0));
        p.seek(position);
        p
    }

    #[test]
    fn a_plain_batch_opens_with_its_records_and_its_charge() {
        let mut p = part(0);
        let q = batch(0, 3, BatchOptions::default());
        let bytes = q.bytes;
        let c = open_batch(&mut p, q, false).unwrap().expect("records");
        assert_eq!(c.last_offset, 2);
        assert_eq!(
            (c.bytes, c.inflated),
            (bytes, 0),
            "uncompressed: nothing inflated"
        );
        assert_eq!(c.records.count(), 3);
    }

    #[test]
    fn a_compressed_batch_is_charged_its_decompressed_records_too() {
        let mut p = part(0);
        let q = batch(
            0,
            50,
            BatchOptions {
                compression: Compression::Gzip,
                ..BatchOptions::default()
            },
        );
        let fetched = q.bytes;
        let c = open_batch(&mut p, q, false).unwrap().unwrap();
        assert!(c.inflated > 0);
        assert_eq!(c.bytes, fetched + c.inflated);
    }

    #[test]
    fn control_batches_are_skipped_and_move_the_position() {
        let mut p = part(5);
        assert!(open_batch(&mut p, marker(5, 7, true), true)
            .unwrap()
            .is_none());
        assert_eq!(p.position, Some(6));
        // read_uncommitted skips them too.
        assert!(open_batch(&mut p, marker(6, 7, false), false)
            .unwrap()
            .is_none());
        assert_eq!(p.position, Some(7));
    }

    #[test]
    fn read_committed_skips_aborted_transactions_until_their_marker() {
        let mut p = part(0);
        // Producer 9 aborted a transaction starting at offset 0; producer 4 committed.
        p.aborted.push_back((9, 0));
        assert!(open_batch(&mut p, batch(0, 2, txn(9)), true)
            .unwrap()
            .is_none());
        assert_eq!(p.position, Some(2), "the aborted batch is stepped over");
        let c = open_batch(&mut p, batch(2, 2, txn(4)), true).unwrap();
        assert!(c.is_some(), "another producer's batch is handed out");
        assert!(open_batch(&mut p, batch(4, 1, txn(9)), true)
            .unwrap()
            .is_none());
        assert!(open_batch(&mut p, marker(5, 9, false), true)
            .unwrap()
            .is_none());
        // After its abort marker, producer 9's next transaction is handed out.
        assert!(open_batch(&mut p, batch(6, 1, txn(9)), true)
            .unwrap()
            .is_some());
        assert!(p.aborting.is_empty() && p.aborted.is_empty());
    }

    #[test]
    fn read_uncommitted_hands_out_aborted_records() {
        let mut p = part(0);
        p.aborted.push_back((9, 0));
        assert!(open_batch(&mut p, batch(0, 2, txn(9)), false)
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_corrupt_batch_is_an_error() {
        let mut p = part(0);
        let q = batch(0, 2, BatchOptions::default());
        let Ok(b) = q.batch else { unreachable!() };
        let mut raw = BytesMut::from(&b.as_bytes()[..]);
        let last = raw.len() - 1;
        raw[last] ^= 0xff;
        let corrupt = batches(raw.freeze(), DecodeLimits::default())
            .next()
            .unwrap();
        let q = Queued {
            batch: corrupt,
            bytes: 10,
        };
        assert!(open_batch(&mut p, q, false).is_err());
    }

    #[test]
    fn seek_empties_the_queue_and_frees_its_charge() {
        let mut p = part(0);
        p.queue.push_back(batch(0, 2, BatchOptions::default()));
        p.bytes = 123;
        p.aborted.push_back((1, 0));
        let gen = p.gen;
        assert_eq!(p.seek(40), 123);
        assert!(p.queue.is_empty() && p.current.is_none() && p.aborted.is_empty());
        assert_eq!((p.position, p.fetch_offset, p.bytes), (Some(40), 40, 0));
        assert_ne!(p.gen, gen, "a fetch in flight from before is ignored");
    }
}
