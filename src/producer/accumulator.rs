//! The accumulator: records appended to per-partition batches that close at
//! `batch.size` bytes or `batch.num.messages` records, and the buffer accounting.
//!
//! Pure and I/O-free. The sender holds one [`Accumulator`] under its mutex; everything
//! here is what `Producer::enqueue` does to a record once the topic's partition count is
//! known, and what the sender does to turn a closed batch into record batch bytes
//! ([`Batch::encode`]). The benchmarks (`benches/producer.rs`) drive the same code
//! through [`bench`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use paperboy_protocol::compression::Compression;
use paperboy_protocol::records::{self, BatchOptions, EncodeError, NewRecord, RecordHeader};
use tokio::sync::oneshot;

use super::{Delivery, Partitioner, ProducerConfig, ProducerRecord};
use crate::error::{Error, Result};

/// Per-record overhead on top of key, value and headers: the record's varints and
/// attributes, generously.
const RECORD_OVERHEAD: usize = 24;

/// A topic and partition.
pub(crate) type Tp = (Arc<str>, i32);
/// Where a record's outcome goes.
pub(crate) type Reply = oneshot::Sender<Result<Delivery>>;

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The accounted size of a record with this key, value and headers.
fn accounted_size(key: Option<&Bytes>, value: Option<&Bytes>, headers: &[RecordHeader]) -> usize {
    RECORD_OVERHEAD
        + key.map_or(0, Bytes::len)
        + value.map_or(0, Bytes::len)
        + headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len) + 4)
            .sum::<usize>()
}

/// The accounted size of a record.
pub(crate) fn record_size(r: &ProducerRecord) -> usize {
    accounted_size(r.key.as_ref(), r.value.as_ref(), &r.headers)
}

fn new_record_size(r: &NewRecord) -> usize {
    accounted_size(r.key.as_ref(), r.value.as_ref(), &r.headers)
}

/// The checks `enqueue` makes before anything else: the record's accounted size, which
/// must fit both `message.max.bytes` and the buffer, and its topic.
pub(crate) fn admit(record: &ProducerRecord, cfg: &ProducerConfig) -> Result<usize> {
    let size = record_size(record);
    let limit = cfg.max_record_bytes.min(cfg.buffer_bytes);
    if size > limit {
        return Err(Error::RecordTooLarge { size, limit });
    }
    if record.topic.is_empty() {
        return Err(Error::Config(crate::ConfigError::Invalid(
            "a record needs a topic".into(),
        )));
    }
    Ok(size)
}

/// The partition of a record for a topic of `count` partitions: its own (checked), or
/// the partitioner's choice; `None` leaves it to the sticky partitioner.
pub(crate) fn choose(
    partitioner: &dyn Partitioner,
    record: &ProducerRecord,
    count: i32,
) -> Result<Option<i32>> {
    if let Some(p) = record.partition {
        if p < 0 || p >= count {
            return Err(Error::UnknownTopicOrPartition {
                topic: record.topic.clone(),
                partition: Some(p),
            });
        }
        return Ok(Some(p));
    }
    Ok(partitioner
        .partition(&record.topic, record.key.as_deref(), count)
        .map(|p| p.rem_euclid(count.max(1))))
}

pub(crate) struct Batch {
    pub(crate) records: Vec<NewRecord>,
    pub(crate) replies: Vec<Reply>,
    pub(crate) bytes: usize,
    /// When the batch was opened: its records fail at `created + delivery.timeout.ms`.
    pub(crate) created: Instant,
    /// The order in which batches were opened (both halves of a split batch keep it):
    /// `flush` waits for the batches opened before it was called.
    pub(crate) serial: u64,
    pub(crate) attempts: u32,
    /// The first record's sequence number once assigned; -1 before.
    pub(crate) base_seq: i32,
    /// Not to be sent again before this instant (retry backoff).
    pub(crate) not_before: Option<Instant>,
    /// The last error, for the record's failure if the batch expires.
    pub(crate) last_error: Option<Error>,
    /// An attempt ended without an answer (timed out, connection lost) after the request
    /// may have been written: the broker may hold the batch under its current producer
    /// epoch and sequence. Such a batch may be sent again under the same epoch and
    /// sequence (the broker recognises a duplicate), never renumbered.
    pub(crate) in_doubt: bool,
    /// Its delivery timeout passed while it was in flight: its records have failed and
    /// its bytes have left the accounting; the request is still being settled.
    pub(crate) expired: bool,
}

impl Batch {
    pub(crate) fn new(now: Instant) -> Batch {
        Batch {
            records: Vec::new(),
            replies: Vec::new(),
            bytes: 0,
            created: now,
            serial: 0,
            attempts: 0,
            base_seq: -1,
            not_before: None,
            last_error: None,
            in_doubt: false,
            expired: false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Splits into two halves of fresh batches (for MESSAGE_TOO_LARGE); use
    /// [`Accumulator::split`], which keeps the halves unsettled.
    fn split(mut self) -> (Batch, Batch) {
        let half = self.records.len() / 2;
        let tail_records = self.records.split_off(half);
        let tail_replies = self.replies.split_off(half);
        let mut a = Batch::new(self.created);
        let mut b = Batch::new(self.created);
        (a.serial, b.serial) = (self.serial, self.serial);
        (a.in_doubt, b.in_doubt) = (self.in_doubt, self.in_doubt);
        a.bytes = self.records.iter().map(new_record_size).sum();
        b.bytes = tail_records.iter().map(new_record_size).sum();
        a.records = self.records;
        a.replies = self.replies;
        b.records = tail_records;
        b.replies = tail_replies;
        (a, b)
    }

    /// The record batch (v2) bytes of this batch as a Produce request carries them.
    pub(crate) fn encode(
        &self,
        compression: Compression,
        producer_id: i64,
        producer_epoch: i16,
        transactional: bool,
    ) -> std::result::Result<Bytes, EncodeError> {
        let opts = BatchOptions {
            compression,
            producer_id,
            producer_epoch,
            base_sequence: self.base_seq,
            transactional,
            ..BatchOptions::default()
        };
        let mut buf = BytesMut::new();
        records::encode_batch(&self.records, &opts, &mut buf)?;
        Ok(buf.freeze())
    }
}

#[derive(Default)]
pub(crate) struct Part {
    pub(crate) open: Option<Batch>,
    pub(crate) ready: VecDeque<Batch>,
    pub(crate) in_flight: usize,
    pub(crate) next_seq: i32,
    /// Set when a batch failed or must be retried: the partition sends nothing more
    /// until its in-flight batches have settled, then renumbers and resumes in order.
    pub(crate) held: bool,
    /// The sequence the broker expects next after a batch failed for good.
    pub(crate) resume_seq: Option<i32>,
    /// Whether a batch of this partition was acknowledged in the current producer epoch.
    /// Until one is, at most one batch is in flight: a broker with no state for the
    /// producer accepts any first sequence, so a second batch overtaking a first one
    /// that failed (NOT_LEADER_OR_FOLLOWER on a new topic) would be written ahead of it,
    /// and the first would then be refused as out of order until it expired.
    pub(crate) confirmed: bool,
}

/// Per-partition batches and what they hold.
pub(crate) struct Accumulator {
    pub(crate) parts: HashMap<Tp, Part>,
    topics: HashMap<String, Arc<str>>,
    /// Per topic, the partition unkeyed records go to until its batch closes.
    pub(crate) sticky: HashMap<Arc<str>, i32>,
    pub(crate) buffered_bytes: usize,
    pub(crate) buffered_records: usize,
    /// The serial of the next batch opened.
    pub(crate) next_serial: u64,
    /// Batches not yet settled (acknowledged or failed), by serial: how many of each
    /// (two once a batch is split).
    unsettled: BTreeMap<u64, usize>,
    rng: u64,
}

impl Accumulator {
    /// An empty accumulator; `seed` (non-zero) spreads the sticky partitions.
    pub(crate) fn new(seed: u64) -> Accumulator {
        Accumulator {
            parts: HashMap::new(),
            topics: HashMap::new(),
            sticky: HashMap::new(),
            buffered_bytes: 0,
            buffered_records: 0,
            next_serial: 0,
            unsettled: BTreeMap::new(),
            rng: seed,
        }
    }

    fn random(&mut self, n: i32) -> i32 {
        // xorshift: spreading sticky partitions needs no more than this.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n.max(1) as u64) as i32
    }

    /// Records buffered or in flight.
    pub(crate) fn pending(&self) -> usize {
        self.buffered_records
    }

    /// Whether every batch opened before serial `serial` has been settled.
    pub(crate) fn settled_before(&self, serial: u64) -> bool {
        self.unsettled
            .first_key_value()
            .is_none_or(|(first, _)| *first >= serial)
    }

    /// Splits a batch in two halves (for MESSAGE_TOO_LARGE), both unsettled.
    pub(crate) fn split(&mut self, batch: Batch) -> (Batch, Batch) {
        *self.unsettled.entry(batch.serial).or_default() += 1;
        batch.split()
    }

    /// Whether a record of `size` accounted bytes fits in the buffer now.
    pub(crate) fn has_room(&self, size: usize, cfg: &ProducerConfig) -> bool {
        self.buffered_records < cfg.buffer_records && self.buffered_bytes + size <= cfg.buffer_bytes
    }

    /// Appends a record of `size` accounted bytes (room checked) to its partition's
    /// open batch: `chosen`, or the topic's sticky partition among `count`. Closes the
    /// open batch first if the record would take it past `batch.size`, and after if it
    /// reached `batch.size` or `batch.num.messages`. Returns whether the sender should
    /// be woken (a batch was opened or closed).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn append(
        &mut self,
        record: ProducerRecord,
        size: usize,
        chosen: Option<i32>,
        count: i32,
        reply: Reply,
        now: Instant,
        cfg: &ProducerConfig,
    ) -> bool {
        let topic = match self.topics.get(&record.topic) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = Arc::from(record.topic.as_str());
                self.topics.insert(record.topic.clone(), t.clone());
                t
            }
        };
        let sticky = chosen.is_none();
        let partition = match chosen {
            Some(p) => p,
            None => match self.sticky.get(&topic) {
                Some(&p) if p < count => p,
                _ => {
                    let p = self.random(count);
                    self.sticky.insert(topic.clone(), p);
                    p
                }
            },
        };
        self.buffered_bytes += size;
        self.buffered_records += 1;
        let new_record = NewRecord {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp_ms: record.timestamp_ms.unwrap_or_else(now_ms),
        };
        let (batch_size, batch_records) = (cfg.batch_size, cfg.batch_records);
        let part = self.parts.entry((topic.clone(), partition)).or_default();
        let mut wake = false;
        let mut closed_batch = false;
        if let Some(open) = &part.open {
            if open.bytes + size > batch_size && !open.records.is_empty() {
                part.ready.extend(part.open.take());
                closed_batch = true;
                wake = true;
            }
        }
        let (next_serial, unsettled) = (&mut self.next_serial, &mut self.unsettled);
        let open = part.open.get_or_insert_with(|| {
            wake = true;
            let mut b = Batch::new(now);
            b.serial = *next_serial;
            *next_serial += 1;
            unsettled.insert(b.serial, 1);
            b
        });
        open.records.push(new_record);
        open.replies.push(reply);
        open.bytes += size;
        if open.bytes >= batch_size || open.records.len() >= batch_records {
            part.ready.extend(part.open.take());
            closed_batch = true;
            wake = true;
        }
        if sticky && closed_batch {
            // The sticky partition's batch is done: the next unkeyed record picks anew.
            self.sticky.remove(&topic);
        }
        wake
    }

    /// Removes a settled batch's records from the accounting (once: a batch whose
    /// records failed in flight at their delivery timeout was released then).
    pub(crate) fn release(&mut self, batch: &Batch) {
        if batch.expired {
            return;
        }
        self.buffered_bytes = self.buffered_bytes.saturating_sub(batch.bytes);
        self.buffered_records = self.buffered_records.saturating_sub(batch.len());
        if let Some(n) = self.unsettled.get_mut(&batch.serial) {
            *n -= 1;
            if *n == 0 {
                self.unsettled.remove(&batch.serial);
            }
        }
    }
}

/// The accumulator and batch building for the benchmarks in `benches/producer.rs`,
/// reached through `paperboy::__bench`. Not part of the API.
pub mod bench {
    use std::sync::Arc;
    use std::time::Instant;

    use bytes::Bytes;
    use paperboy_protocol::compression::Compression;
    use tokio::sync::oneshot;

    use super::{admit, choose, Batch};
    use crate::error::{Error, Result};
    use crate::producer::{
        DefaultPartitioner, DeliveryFuture, Partitioner, ProducerConfig, ProducerRecord,
    };

    /// An accumulator for topics of one partition count, with the default partitioner.
    pub struct Accumulator {
        inner: super::Accumulator,
        cfg: ProducerConfig,
        partitioner: Arc<dyn Partitioner>,
        count: i32,
    }

    impl Accumulator {
        /// An empty accumulator with `cfg`'s batch and buffer limits, for topics of
        /// `partition_count` partitions.
        pub fn new(cfg: ProducerConfig, partition_count: i32) -> Accumulator {
            Accumulator {
                inner: super::Accumulator::new(0x9e37_79b9_7f4a_7c15),
                cfg,
                partitioner: Arc::new(DefaultPartitioner),
                count: partition_count,
            }
        }

        /// What `Producer::enqueue` does to a record, minus the metadata lookup, the
        /// wait for buffer space (a full buffer is an error here) and the sender's
        /// wake-up: the checks, the partition choice, the delivery channel, the append.
        ///
        /// # Errors
        /// As `Producer::enqueue`; [`Error::BufferFull`] when the buffer is full.
        pub fn enqueue(&mut self, record: ProducerRecord) -> Result<DeliveryFuture> {
            let size = admit(&record, &self.cfg)?;
            let chosen = choose(&*self.partitioner, &record, self.count)?;
            if !self.inner.has_room(size, &self.cfg) {
                return Err(Error::BufferFull {
                    waited: std::time::Duration::ZERO,
                });
            }
            let (tx, rx) = oneshot::channel();
            let now = Instant::now();
            self.inner
                .append(record, size, chosen, self.count, tx, now, &self.cfg);
            Ok(DeliveryFuture { rx })
        }

        /// Takes every closed batch out and releases its bytes, as the sender does
        /// once batches are acknowledged. Open batches stay.
        pub fn drain(&mut self) -> Vec<ReadyBatch> {
            let mut out = Vec::new();
            for part in self.inner.parts.values_mut() {
                out.extend(part.ready.drain(..).map(ReadyBatch));
            }
            for b in &out {
                self.inner.release(&b.0);
            }
            out
        }

        /// Records buffered (open or closed batches not drained).
        pub fn buffered_records(&self) -> usize {
            self.inner.buffered_records
        }

        /// Accounted bytes buffered.
        pub fn buffered_bytes(&self) -> usize {
            self.inner.buffered_bytes
        }
    }

    /// A closed batch.
    pub struct ReadyBatch(Batch);

    impl ReadyBatch {
        /// Its records.
        pub fn len(&self) -> usize {
            self.0.len()
        }

        /// Whether it has no records (never, for a closed batch).
        pub fn is_empty(&self) -> bool {
            self.0.records.is_empty()
        }

        /// Its accounted bytes.
        pub fn accounted_bytes(&self) -> usize {
            self.0.bytes
        }

        /// Gives it a sequence number, as an idempotent producer's sender does.
        pub fn set_base_sequence(&mut self, seq: i32) {
            self.0.base_seq = seq;
        }

        /// The record batch bytes the sender puts in a Produce request.
        ///
        /// # Errors
        /// The codec's error.
        pub fn encode(
            &self,
            compression: Compression,
            producer_id: i64,
            producer_epoch: i16,
        ) -> Result<Bytes> {
            Ok(self
                .0
                .encode(compression, producer_id, producer_epoch, false)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::DefaultPartitioner;

    fn record(key: Option<&'static str>, value_len: usize) -> ProducerRecord {
        ProducerRecord {
            topic: "t".into(),
            key: key.map(|k| Bytes::from_static(k.as_bytes())),
            value: Some(Bytes::from(vec![b'x'; value_len])),
            timestamp_ms: Some(1),
            ..ProducerRecord::default()
        }
    }

    fn push(acc: &mut Accumulator, r: ProducerRecord, cfg: &ProducerConfig) -> bool {
        let size = admit(&r, cfg).unwrap();
        let chosen = choose(&DefaultPartitioner, &r, 12).unwrap();
        assert!(acc.has_room(size, cfg));
        let (tx, _rx) = oneshot::channel();
        acc.append(r, size, chosen, 12, tx, Instant::now(), cfg)
    }

    #[test]
    fn batches_close_at_batch_size_and_bytes_are_accounted() {
        // 24 + 76 = 100 accounted bytes a record; batches of 250 bytes hold two.
        let cfg = ProducerConfig::new("x").with_batch_limits(250, 10_000);
        let mut acc = Accumulator::new(1);
        assert!(push(&mut acc, record(None, 76), &cfg)); // opens a batch
        assert!(!push(&mut acc, record(None, 76), &cfg));
        assert_eq!(acc.buffered_bytes, 200);
        assert_eq!(acc.sticky.len(), 1);
        let sticky = acc.sticky["t"];
        // The third does not fit: the batch closes, the record opens the next one on
        // the same partition, and unkeyed records pick a new partition afterwards.
        assert!(push(&mut acc, record(None, 76), &cfg));
        assert!(acc.sticky.is_empty());
        let part = &acc.parts[&(Arc::from("t"), sticky)];
        assert_eq!(part.ready.len(), 1);
        assert_eq!(part.ready[0].len(), 2);
        assert_eq!(part.ready[0].bytes, 200);
        assert_eq!(part.open.as_ref().map(Batch::len), Some(1));
        assert_eq!((acc.buffered_records, acc.buffered_bytes), (3, 300));
        let batch = acc.parts.get_mut(&(Arc::from("t"), sticky)).unwrap();
        let batch = batch.ready.pop_front().unwrap();
        acc.release(&batch);
        assert_eq!((acc.buffered_records, acc.buffered_bytes), (1, 100));
    }

    #[test]
    fn batches_stay_unsettled_until_released_once_and_splits_count_twice() {
        // One record a batch, on one partition.
        let cfg = ProducerConfig::new("x").with_batch_limits(100, 1);
        let mut acc = Accumulator::new(1);
        for _ in 0..3 {
            push(&mut acc, record(Some("k"), 10), &cfg);
        }
        let p = crate::producer::murmur2_partition(b"k", 12);
        let part = acc.parts.get_mut(&(Arc::from("t"), p)).unwrap();
        let mut batches: Vec<Batch> = part.ready.drain(..).collect();
        assert_eq!(
            batches.iter().map(|b| b.serial).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let flush_point = acc.next_serial;
        assert!(!acc.settled_before(flush_point));
        assert!(acc.settled_before(0));

        // The first batch fails in flight at its deadline: released then, not again.
        let mut first = batches.remove(0);
        acc.release(&first);
        first.expired = true;
        acc.release(&first);
        assert_eq!(acc.buffered_records, 2);
        assert!(acc.settled_before(1) && !acc.settled_before(2));

        // The second is split in two (it needs two records for that: add one).
        let mut second = batches.remove(0);
        second.records.push(second.records[0].clone());
        let (tx, _rx) = oneshot::channel();
        second.replies.push(tx);
        let (a, b) = acc.split(second);
        assert_eq!((a.serial, b.serial), (1, 1));
        acc.release(&a);
        assert!(!acc.settled_before(2), "half of batch 1 is still out");
        acc.release(&b);
        assert!(acc.settled_before(2) && !acc.settled_before(flush_point));
        acc.release(&batches.remove(0));
        assert!(acc.settled_before(flush_point));
        // A batch opened later does not hold up a flush that started before it.
        push(&mut acc, record(Some("k"), 10), &cfg);
        assert!(acc.settled_before(flush_point));
        assert!(!acc.settled_before(acc.next_serial));
    }

    #[test]
    fn keyed_records_go_to_the_murmur2_partition() {
        let cfg = ProducerConfig::new("x").with_batch_limits(100, 10_000);
        let mut acc = Accumulator::new(1);
        // A batch reaching batch.size closes at once.
        assert!(push(&mut acc, record(Some("foobar"), 76), &cfg));
        let p = crate::producer::murmur2_partition(b"foobar", 12);
        let part = &acc.parts[&(Arc::from("t"), p)];
        assert_eq!((part.ready.len(), part.open.is_none()), (1, true));
        assert!(acc.sticky.is_empty());
        let encoded = part.ready[0].encode(Compression::Lz4, 7, 0, false).unwrap();
        let batch = records::batches(encoded, Default::default())
            .next()
            .unwrap()
            .unwrap();
        batch.verify_crc().unwrap();
        assert_eq!(batch.records().unwrap().count(), 1);
    }

    #[test]
    fn admit_and_choose_check_the_record() {
        let cfg = ProducerConfig::new("x").with_max_record_bytes(100);
        assert!(matches!(
            admit(&record(None, 77), &cfg),
            Err(Error::RecordTooLarge {
                size: 101,
                limit: 100
            })
        ));
        assert!(matches!(
            admit(&ProducerRecord::default(), &cfg),
            Err(Error::Config(_))
        ));
        let r = record(Some("k"), 1).with_partition(12);
        assert!(matches!(
            choose(&DefaultPartitioner, &r, 12),
            Err(Error::UnknownTopicOrPartition { .. })
        ));
        let r = record(Some("k"), 1).with_partition(11);
        assert_eq!(choose(&DefaultPartitioner, &r, 12).unwrap(), Some(11));
        assert_eq!(
            choose(&DefaultPartitioner, &record(None, 1), 12).unwrap(),
            None
        );
    }
}
