//! The producer: batching with linger, bounded memory, Java-compatible partitioning,
//! idempotence, retries, and a delivery result per record.
//!
//! [`Producer::send`] waits for the record's acknowledgement; [`Producer::enqueue`]
//! waits only for buffer space and hands back a [`DeliveryFuture`], which may be awaited
//! later or dropped (fire and forget). Records are grouped per partition into batches
//! that close at `batch.size` bytes, `batch.num.messages` records, or after `linger.ms`;
//! a background task sends every ready batch of a broker in one Produce request, with at
//! most `max.in.flight.requests.per.connection` requests in flight per broker.
//!
//! With idempotence (the default) each batch carries the producer id, epoch and sequence
//! numbers, so a retried batch is never written twice and never overtakes a later one.
//!
//! ```no_run
//! use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
//!
//! # async fn run() -> paperboy::Result<()> {
//! let producer = Producer::new(ProducerConfig::from_properties([
//!     ("bootstrap.servers", "127.0.0.1:9092"),
//!     ("linger.ms", "10"),
//! ])?)
//! .await?;
//!
//! // One record, waiting for its acknowledgement:
//! let delivery = producer
//!     .send(ProducerRecord::new("events").with_key("user-1").with_value("signed up"))
//!     .await?;
//! println!("partition {} offset {}", delivery.partition, delivery.offset);
//!
//! // Many records, pipelined: enqueue all, then await the deliveries.
//! let mut pending = Vec::new();
//! for i in 0..1000 {
//!     let record = ProducerRecord::new("events").with_value(format!("event {i}"));
//!     pending.push(producer.enqueue(record).await?);
//! }
//! for delivery in pending {
//!     delivery.await?;
//! }
//! producer.close().await;
//! # Ok(()) }
//! ```

pub(crate) mod accumulator;
mod config;
mod partitioner;
mod sender;
mod txn;
mod txn_coordinator;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use paperboy_protocol::records::RecordHeader;
use tokio::sync::oneshot;

pub use config::ProducerConfig;
pub use partitioner::{murmur2, murmur2_partition, DefaultPartitioner, Partitioner};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::offsets::{ConsumerGroupMetadata, TopicPartition};

/// A record to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic.
    pub topic: String,
    /// The partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    /// The key, or `None`.
    pub key: Option<Bytes>,
    /// The value, or `None` (a tombstone).
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<RecordHeader>,
    /// Milliseconds since the epoch; `None` means the time of the send.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// An empty record for `topic`.
    pub fn new(topic: impl Into<String>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            ..ProducerRecord::default()
        }
    }

    /// Sets the key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    #[must_use]
    pub fn with_value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Sends to this partition instead of the partitioner's choice.
    #[must_use]
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<Bytes>, value: Option<Bytes>) -> Self {
        self.headers.push(RecordHeader {
            key: name.into(),
            value,
        });
        self
    }

    /// Sets the timestamp (milliseconds since the epoch).
    #[must_use]
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// Where an acknowledged record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The partition.
    pub partition: i32,
    /// The record's offset; -1 with acks=0, or for a retried batch the broker had
    /// already written (DUPLICATE_SEQUENCE_NUMBER) and no longer remembers the offset of.
    pub offset: i64,
    /// The record's timestamp: the producer's, or the broker's append time for topics
    /// with `message.timestamp.type=LogAppendTime`.
    pub timestamp_ms: i64,
}

/// The outcome of one enqueued record; resolves when the record is acknowledged or
/// has failed. Dropping it does not cancel the record.
///
/// It resolves within `delivery.timeout.ms` of the record's [`Producer::enqueue`]
/// (sooner by up to `linger.ms` for a record added to a batch opened before it): a record
/// not acknowledged by then fails with [`Error::Timeout`], whether it is still buffered,
/// waiting to be retried or in flight. A record failed in flight may still have been
/// written (its request had no answer yet), as with the Java client.
#[derive(Debug)]
#[must_use = "a delivery future does nothing unless awaited; drop it explicitly for fire-and-forget"]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<Delivery>>,
}

impl Future for DeliveryFuture {
    type Output = Result<Delivery>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

/// An asynchronous Kafka producer. Cheap to clone; clones share one buffer and one
/// background sender.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<sender::Shared>,
    _handle: Arc<DropGuard>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

/// Lets the background task finish what is buffered and stop once the last handle of
/// a producer that was never closed is dropped.
struct DropGuard(Arc<sender::Shared>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.begin_close();
    }
}

impl Producer {
    /// Connects to the cluster and, with idempotence, obtains a producer id.
    ///
    /// Waits at most `default.api.timeout.ms` in all (each connection attempt is bounded
    /// by `socket.connection.setup.timeout.ms` and each request by `request.timeout.ms`
    /// within it).
    ///
    /// # Errors
    /// [`Error::Config`] for conflicting settings; connection errors; the broker's
    /// error for InitProducerId; [`Error::Timeout`] when `default.api.timeout.ms` passes
    /// first.
    pub async fn new(config: ProducerConfig) -> Result<Producer> {
        Self::with_partitioner(config, DefaultPartitioner).await
    }

    /// As [`Producer::new`], with a partitioner of your own for records sent without a
    /// partition.
    ///
    /// # Errors
    /// As [`Producer::new`].
    pub async fn with_partitioner(
        mut config: ProducerConfig,
        partitioner: impl Partitioner,
    ) -> Result<Producer> {
        config.validate()?;
        let limit = config.client.default_api_timeout;
        let deadline = std::time::Instant::now() + limit;
        let start = async {
            let client = Client::connect(config.client.clone()).await?;
            sender::Shared::start(client, config, Arc::new(partitioner), deadline).await
        };
        let shared = match tokio::time::timeout(limit, start).await {
            Ok(started) => started?,
            Err(_) => {
                return Err(Error::Timeout {
                    what: "starting the producer (cluster metadata, producer id)".to_owned(),
                    after: limit,
                })
            }
        };
        Ok(Producer {
            _handle: Arc::new(DropGuard(shared.clone())),
            shared,
        })
    }

    /// `transactional.id`, for a transactional producer.
    pub fn transactional_id(&self) -> Option<&str> {
        self.shared.cfg.transactional_id.as_deref()
    }

    /// The client underneath (for metadata and administration).
    pub fn client(&self) -> &Client {
        self.shared.client()
    }

    /// Sends a record and waits until it is acknowledged (per `acks`) or has failed.
    ///
    /// Waits at most `max.block.ms` to buffer the record (as [`Producer::enqueue`]), then
    /// at most `delivery.timeout.ms` for its outcome (as [`DeliveryFuture`]).
    ///
    /// # Errors
    /// [`Error::RecordTooLarge`], [`Error::BufferFull`], [`Error::UnknownTopicOrPartition`]
    /// before anything is buffered, or [`Error::Timeout`] when its topic's metadata did
    /// not come within `max.block.ms`; after, the broker's error ([`Error::Kafka`]) or
    /// [`Error::Timeout`] once `delivery.timeout.ms` has passed.
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery> {
        self.enqueue(record).await?.await
    }

    /// Buffers a record, waiting for its topic's metadata (when not known yet) and while
    /// the buffer is full, and returns the future of its delivery, which resolves within
    /// `delivery.timeout.ms`.
    ///
    /// Waits at most `max.block.ms` in all, as the Java client's `send` does.
    ///
    /// # Errors
    /// As the first half of [`Producer::send`]: [`Error::BufferFull`] when the buffer
    /// stayed full, [`Error::Timeout`] when the metadata did not come, within
    /// `max.block.ms`; [`Error::Closed`] after [`Producer::close`].
    pub async fn enqueue(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let rx = self.shared.enqueue(record).await?;
        Ok(DeliveryFuture { rx })
    }

    /// Sends everything buffered now, without waiting for `linger.ms`, and waits until
    /// every record enqueued before the call is acknowledged or has failed.
    ///
    /// Waits at most `delivery.timeout.ms`: a record not delivered by its delivery
    /// timeout fails then (its [`DeliveryFuture`] resolves with [`Error::Timeout`]), so
    /// when `flush` returns, each record enqueued before it has its outcome. Records
    /// enqueued meanwhile are sent at once too, but not waited for.
    pub async fn flush(&self) {
        self.shared.flush().await;
    }

    /// Refuses new records, delivers everything buffered (or fails it at its delivery
    /// timeout), and closes the connections.
    ///
    /// Waits at most `delivery.timeout.ms` for the records (as [`Producer::flush`]): each
    /// record not delivered by its delivery timeout fails then, with [`Error::Timeout`],
    /// and none is left pending. Closing the connections then waits for a connection
    /// being opened, at most `socket.connection.setup.timeout.ms`.
    pub async fn close(&self) {
        self.shared.abort_open_transaction().await;
        self.shared.begin_close();
        self.shared.flush().await;
        self.shared.client().close().await;
    }

    /// Opens a transaction (a producer with `transactional.id`): records sent from now
    /// on, and offsets given to [`Producer::send_offsets_to_transaction`], are committed
    /// or aborted together. Local only: nothing goes to the broker until the first
    /// record or offsets.
    ///
    /// # Errors
    /// [`Error::Transaction`] without `transactional.id` or with a transaction already
    /// open; [`Error::Fenced`] once the producer was fenced.
    pub fn begin_transaction(&self) -> Result<()> {
        self.shared.begin_transaction()
    }

    /// Adds a consumer's offsets to the open transaction (KIP-447): they are committed
    /// to `group`'s coordinator when the transaction commits, and never if it aborts.
    /// `offsets` are the positions to commit: the offset of the next record to read,
    /// one past the last one handled. `group` comes from
    /// [`Consumer::group_metadata`](crate::Consumer::group_metadata); the coordinator
    /// refuses the offsets (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID)
    /// once that consumer has lost its partitions to a rebalance.
    ///
    /// Waits at most `max.block.ms` for each of its two requests (AddOffsetsToTxn to the
    /// transaction coordinator, TxnOffsetCommit to the group coordinator), retrying
    /// coordinator moves within it. Cancelling it leaves the transaction unable to say
    /// whether the offsets are in it: abort it then.
    ///
    /// # Errors
    /// [`Error::Transaction`] outside an open transaction; the coordinators' errors,
    /// after which the transaction can only be aborted; [`Error::Fenced`].
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, i64)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        self.shared
            .send_offsets_to_transaction(offsets, group)
            .await
    }

    /// Commits the open transaction: sends every buffered record, waits until all of
    /// the transaction's records are acknowledged, then has the coordinator commit the
    /// records and offsets together (EndTxn). Consumers with
    /// `isolation.level=read_committed` see the records only from then on.
    ///
    /// Waits at most `delivery.timeout.ms` for the records, then `max.block.ms` for the
    /// coordinator. A commit that timed out may be called again; one that failed
    /// otherwise leaves the transaction to be aborted.
    ///
    /// # Errors
    /// [`Error::Transaction`] when no transaction is open, or when a record or request
    /// of it failed (the cause inside): call [`Producer::abort_transaction`];
    /// [`Error::Timeout`]; [`Error::Fenced`].
    pub async fn commit_transaction(&self) -> Result<()> {
        self.shared.commit_transaction().await
    }

    /// Aborts the open transaction: records not sent yet fail (with
    /// [`Error::Transaction`]), those in flight are waited for, and the coordinator
    /// writes abort markers, so read_committed consumers never see any record of it.
    /// After an error that left the producer's sequence state unknown (a record timed
    /// out), the producer's epoch is then bumped (KIP-360), so that its sequences start
    /// again. The producer is then ready for the next transaction. (A transaction the
    /// coordinator aborted at `transaction.timeout.ms` fences the producer, as Kafka 4.x
    /// does: [`Error::Fenced`]; make a new one.)
    ///
    /// Waits at most `delivery.timeout.ms` for records in flight, then `max.block.ms`
    /// for the coordinator.
    ///
    /// # Errors
    /// [`Error::Transaction`] when no transaction is open; [`Error::Timeout`] (abort may
    /// be called again); [`Error::Fenced`].
    pub async fn abort_transaction(&self) -> Result<()> {
        self.shared.abort_transaction().await
    }

    /// Records buffered or in flight, not yet acknowledged or failed.
    pub fn pending(&self) -> usize {
        self.shared.pending()
    }

    /// Bytes of records buffered or in flight (the amount bounded by `buffer.memory`).
    pub fn buffered_bytes(&self) -> usize {
        self.shared.buffered_bytes()
    }
}
