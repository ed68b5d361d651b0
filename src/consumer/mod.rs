//! The consumer: group membership with rebalance hooks, offset commits, and a prefetch
//! queue bounded by one byte budget.
//!
//! A [`Consumer`] either [subscribes](Consumer::subscribe) to topics as a member of a
//! consumer group, or is [assigned](Consumer::assign) partitions by hand. A group member
//! speaks the classic protocol (the default: range, roundrobin and cooperative-sticky
//! assignors run by the group's leader, so it shares a group with Java and librdkafka
//! consumers), or with `group.protocol=consumer` the consumer group protocol of KIP-848
//! (Kafka 4.0+: the broker assigns, revocations are incremental, and
//! [`subscribe_pattern`](Consumer::subscribe_pattern) takes a regular expression the
//! broker evaluates); see `membership.rs`. The [`RebalanceListener`] and everything
//! else work the same on either.
//!
//! Records are fetched in the background, one fetch in flight per broker, in incremental
//! fetch sessions (KIP-227). Fetched record batches wait in a prefetch queue whose total
//! size never exceeds the budget (`queued.max.messages.kbytes`) by more than one record
//! batch: a fetch asks for no more than the budget has left, and each partition gets a
//! fair share. Batches are kept as fetched (compressed) and decompressed as
//! [`recv`](Consumer::recv) hands their records out; a decompressed batch counts against
//! the budget until it is done, and another is opened only while the budget has room
//! (or alone, when it is larger than the budget).
//!
//! Rebalances are started by `recv` and run in a task of their own (a dropped `recv`
//! does not cancel them): the [`RebalanceListener`] is awaited before partitions are
//! given up (and may commit), and no record of a revoked partition is handed out
//! afterwards.
//!
//! ```no_run
//! use paperboy::consumer::{Consumer, ConsumerConfig};
//!
//! # async fn run() -> paperboy::Result<()> {
//! let consumer = Consumer::new(ConsumerConfig::from_properties([
//!     ("bootstrap.servers", "127.0.0.1:9092"),
//!     ("group.id", "billing"),
//!     ("enable.auto.commit", "false"),
//!     ("auto.offset.reset", "earliest"),
//! ])?)
//! .await?;
//! consumer.subscribe(&["orders"])?;
//! loop {
//!     let batch = consumer.recv_batch(500, std::time::Duration::from_secs(1)).await?;
//!     for record in &batch {
//!         println!("{}[{}]@{}: {:?}", record.topic, record.partition, record.offset, record.value);
//!     }
//!     // Commit after processing: the next offset to read, per partition.
//!     consumer.commit_records(&batch).await?;
//! }
//! # }
//! ```

pub(crate) mod assignor;
mod config;
mod fetcher;
mod group;
mod group_848;
mod membership;
mod stream;
mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use paperboy_protocol::records::{ControlMarker, Headers, RecordBatch, Records, TimestampType};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use assignor::AssignmentStrategy;
pub use config::{ConsumerConfig, GroupProtocol, OffsetReset};
pub use stream::{BatchStream, RecordStream, Stream};

use crate::client::{Client, IsolationLevel, OffsetSpec};
use crate::error::{Error, KafkaCode, Result};
use crate::telemetry;
use group::{GroupClient, Membership};

pub use crate::offsets::{ConsumerGroupMetadata, TopicPartition};

/// One consumed record. Key, value and headers are slices of the fetched (or
/// decompressed) batch: no copy per record.
#[derive(Debug, Clone)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// Milliseconds since the epoch; see `timestamp_type`.
    pub timestamp_ms: i64,
    /// Whether the producer or the broker set the timestamp.
    pub timestamp_type: TimestampType,
    /// The leader epoch of the batch (committed along with the offset).
    pub leader_epoch: i32,
    /// The key, or `None`.
    pub key: Option<Bytes>,
    /// The value, or `None` (a tombstone).
    pub value: Option<Bytes>,
    headers: Headers,
}

impl ConsumerRecord {
    /// The record's headers in order: `(name, value)`.
    pub fn headers(&self) -> Headers {
        self.headers.clone()
    }

    /// The topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&*self.topic, self.partition)
    }
}

/// A boxed future, as [`RebalanceListener`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Hooks run around a rebalance, in the task that called [`Consumer::recv`].
///
/// Both are awaited: `on_revoked` runs before the partitions are given up, while this
/// member still owns them, so it may finish work and [commit](Consumer::commit). After
/// it returns, no record of those partitions is handed out. A `recv` from inside a hook
/// does not rebalance again; it hands out what is buffered.
///
/// ```
/// use paperboy::consumer::{BoxFuture, Consumer, RebalanceListener, TopicPartition};
///
/// struct CommitOnRevoke;
///
/// impl RebalanceListener for CommitOnRevoke {
///     fn on_revoked<'a>(
///         &'a self,
///         consumer: &'a Consumer,
///         partitions: &'a [TopicPartition],
///     ) -> BoxFuture<'a, ()> {
///         Box::pin(async move {
///             if let Err(e) = consumer.commit_consumed().await {
///                 eprintln!("commit before revoking {partitions:?} failed: {e}");
///             }
///         })
///     }
/// }
/// ```
pub trait RebalanceListener: Send + Sync {
    /// Partitions about to be taken away (eager protocol: all of them).
    fn on_revoked<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        let _ = (consumer, partitions);
        Box::pin(async {})
    }

    /// Partitions this member lost without giving them up: with `group.protocol=consumer`,
    /// when the coordinator fenced it (its heartbeats stopped past the session timeout) or
    /// it left after `max.poll.interval.ms`. They may be another member's already, so the
    /// coordinator refuses commits of them, and the consumer commits nothing for them. As
    /// the Java client's `onPartitionsLost`, this calls `on_revoked` unless overridden.
    fn on_lost<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        self.on_revoked(consumer, partitions)
    }

    /// Partitions newly given to this member.
    fn on_assigned<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        let _ = (consumer, partitions);
        Box::pin(async {})
    }
}

/// A batch waiting in the prefetch queue, and what it costs against the budget.
struct Queued {
    /// A batch, or the error that stopped decoding the record set at this point.
    batch: std::result::Result<RecordBatch, paperboy_protocol::records::DecodeError>,
    bytes: usize,
}

/// The batch records are being handed out from.
struct Current {
    records: Records,
    leader_epoch: i32,
    timestamp_type: TimestampType,
    /// What the batch is charged: its bytes as fetched plus `inflated`.
    bytes: usize,
    /// The decompressed records of a compressed batch (0 for an uncompressed one).
    inflated: usize,
    last_offset: i64,
}

struct PartState {
    /// The topic name, shared by every record handed out.
    topic: Arc<str>,
    /// The next offset to hand out; `None` until initialized from the committed offset
    /// or `auto.offset.reset`.
    position: Option<i64>,
    /// Leader epoch of the last record handed out (-1 before any).
    position_epoch: i32,
    /// The next offset to fetch (the position plus what is queued).
    fetch_offset: i64,
    /// Changed whenever the position jumps, so a fetch in flight from before is ignored.
    /// Unique in the process ([`next_gen`]), not per partition state: a partition removed
    /// and added again must not match the answer to a fetch sent for its old state.
    gen: u64,
    paused: bool,
    /// When the partition was last paused (see the fetcher's short waits after a pause).
    paused_at: Option<Instant>,
    in_flight: bool,
    queue: VecDeque<Queued>,
    current: Option<Current>,
    bytes: usize,
    high_watermark: i64,
    last_stable_offset: i64,
    /// Aborted transactions announced by fetches: (producer id, first offset).
    aborted: VecDeque<(i64, i64)>,
    aborting: HashSet<i64>,
    error: Option<Error>,
    error_reported: bool,
    /// A fault to surface once from `recv`/`recv_batch` while fetching goes on (the
    /// partition could not be fetched for `fetch.error.timeout.ms`).
    fault: Option<Error>,
    /// When fetching this partition started failing (transport, protocol or broker
    /// errors), cleared by a fetch that succeeds; and the failures since.
    failing_since: Option<Instant>,
    failures: u32,
    retry_at: Option<Instant>,
    /// OFFSET_OUT_OF_RANGE came back: the fetcher resets the position.
    out_of_range: bool,
    /// The leader epoch fetching last started with or validated against (-1: none yet).
    /// A higher epoch in the metadata means a new leader: the position is validated first.
    leader_epoch: i32,
    /// The position waits for validation against the leader's log (KIP-320), with the
    /// leader epoch of the record before it: after a leader change, or when it came
    /// from a committed offset that carries its epoch. Not fetched until then.
    validate: Option<i32>,
    /// Consumed counters and lag gauge, made on first use (feature `metrics`).
    metrics: telemetry::Part,
}

/// A fresh fetch generation for a partition's state, never handed out before in this
/// process. A counter per partition state started at 0 for a partition added again after
/// it was removed (revoked, unassigned), so after its first seek it could equal the
/// generation of a fetch still in flight for the old state; that fetch's records were
/// then queued for the new position, and those between the new position and the old
/// fetch offset were skipped: lost, and committed past.
fn next_gen() -> u64 {
    static GEN: AtomicU64 = AtomicU64::new(1);
    GEN.fetch_add(1, Ordering::Relaxed)
}

impl PartState {
    fn new(tp: &TopicPartition) -> Self {
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
    fn clear(&mut self) -> usize {
        self.queue.clear();
        self.current = None;
        self.aborted.clear();
        self.aborting.clear();
        self.gen = next_gen();
        self.in_flight = false;
        std::mem::take(&mut self.bytes)
    }

    fn seek(&mut self, offset: i64) -> usize {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    Assigned,
    Subscribed,
}

struct State {
    mode: Mode,
    topics: Vec<String>,
    parts: BTreeMap<TopicPartition, PartState>,
    buffered: usize,
    reserved: usize,
    member_id: String,
    membership: Option<Membership>,
    rejoin: bool,
    /// Partition counts the leader assigned from, to notice new partitions or topics.
    assigned_from: Option<BTreeMap<String, i32>>,
    leader: bool,
    fatal: Option<Error>,
    last_commit: Instant,
    heartbeat: bool,
    /// Records taken from the queue but not yet handed out: a `recv`/`recv_batch` future
    /// dropped before it returns leaves its records here for the next call (cancel
    /// safety). A partition's records leave it when the partition is sought or removed
    /// ([`State::seek_part`], [`State::remove_part`]), so all of it is handed out.
    stash: VecDeque<ConsumerRecord>,
    /// A rebalance task is running ([`Consumer::start_rebalance`]).
    rebalancing: bool,
    /// The consumer-protocol membership (`group.protocol=consumer`; unused by classic).
    kip848: membership::State848,
    /// How the last rebalance task failed, for the next `recv` to return.
    rebalance_error: Option<Error>,
    /// The prefetch gauge and the labels of partitions' handles (feature `metrics`).
    metrics: telemetry::Consumer,
}

impl State {
    /// Moves a partition's position: drops what it has buffered and stashed. `None` when
    /// the partition is not assigned.
    fn seek_part(&mut self, tp: &TopicPartition, offset: i64) -> Option<()> {
        let p = self.parts.get_mut(tp)?;
        self.buffered -= p.seek(offset);
        self.forget_stashed(tp);
        Some(())
    }

    /// Removes a partition (revoked, unassigned) with what it has buffered and stashed.
    fn remove_part(&mut self, tp: &TopicPartition) {
        if let Some(mut p) = self.parts.remove(tp) {
            self.buffered -= p.clear();
            self.forget_stashed(tp);
        }
    }

    fn forget_stashed(&mut self, tp: &TopicPartition) {
        self.stash
            .retain(|r| !(r.partition == tp.partition && *r.topic == *tp.topic));
    }

    /// The position as the application sees it, with the leader epoch of the record
    /// before it: the first stashed record of the partition (taken, not handed out), or
    /// the partition's position.
    fn handed_position(&self, tp: &TopicPartition, p: &PartState) -> Option<(i64, i32)> {
        self.stash
            .iter()
            .find(|r| r.partition == tp.partition && *r.topic == *tp.topic)
            .map(|r| (r.offset, r.leader_epoch))
            .or_else(|| Some((p.position?, p.position_epoch)))
    }

    /// Hands out up to `max` stashed records, oldest first.
    fn drain(&mut self, max: usize) -> Vec<ConsumerRecord> {
        let n = max.min(self.stash.len());
        self.stash.drain(..n).collect()
    }
}

struct Inner {
    client: Client,
    config: ConsumerConfig,
    group: Option<GroupClient>,
    state: Mutex<State>,
    /// Records arrived, or the group needs attention: wakes `recv`.
    ready: Notify,
    /// Budget freed or assignment changed: wakes the fetcher.
    fetch_wake: Notify,
    rebalance: tokio::sync::Mutex<()>,
    /// The rebalance running in a task of its own, so a dropped `recv` never cancels a
    /// JoinGroup or SyncGroup half way (which would leave a member behind that the
    /// group then waits for until the rebalance timeout).
    rebalance_task: Mutex<Option<JoinHandle<()>>>,
    listener: Mutex<Option<Arc<dyn RebalanceListener>>>,
    /// `group.protocol=consumer`: wakes the heartbeat loop to send at once (a new
    /// subscription, partitions reconciled, a rejoin, a stale epoch).
    hb_wake: Arc<Notify>,
    /// `group.protocol=consumer`: a heartbeat was answered (or the membership ended).
    hb_answered: Notify,
    closed: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    last_poll: Mutex<Instant>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A Kafka consumer; see the [module documentation](self).
///
/// Cheap to clone: clones share one consumer.
#[derive(Clone)]
pub struct Consumer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.inner.config.group_id)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Connects to the cluster. Nothing is consumed until [`subscribe`](Self::subscribe)
    /// or [`assign`](Self::assign).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration; [`Error::NoBrokerAvailable`] when no
    /// bootstrap server answers.
    pub async fn new(config: ConsumerConfig) -> Result<Consumer> {
        config.validate()?;
        let client = Client::connect(config.client.clone()).await?;
        let group = config
            .group_id
            .clone()
            .map(|g| GroupClient::new(client.clone(), g, config.group_instance_id.clone()));
        let metrics =
            telemetry::Consumer::new(config.client.client_id(), config.group_id.as_deref());
        let inner = Arc::new(Inner {
            client,
            config,
            group,
            state: Mutex::new(State {
                mode: Mode::None,
                topics: Vec::new(),
                parts: BTreeMap::new(),
                buffered: 0,
                reserved: 0,
                member_id: String::new(),
                membership: None,
                rejoin: false,
                assigned_from: None,
                leader: false,
                fatal: None,
                last_commit: Instant::now(),
                heartbeat: false,
                stash: VecDeque::new(),
                rebalancing: false,
                rebalance_error: None,
                kip848: membership::State848::default(),
                metrics,
            }),
            ready: Notify::new(),
            fetch_wake: Notify::new(),
            rebalance: tokio::sync::Mutex::new(()),
            rebalance_task: Mutex::new(None),
            listener: Mutex::new(None),
            hb_wake: Arc::new(Notify::new()),
            hb_answered: Notify::new(),
            closed: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            last_poll: Mutex::new(Instant::now()),
        });
        let fetcher = tokio::spawn(fetcher::run(Arc::downgrade(&inner)));
        inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fetcher);
        Ok(Consumer { inner })
    }

    /// The client underneath (metadata, topic administration).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.inner.config
    }

    /// Sets the hooks run around rebalances.
    pub fn set_rebalance_listener(&self, listener: impl RebalanceListener + 'static) {
        *self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(listener));
    }

    /// Joins the consumer group (`group.id`) for `topics`. Partitions are assigned by
    /// the group on the next [`recv`](Self::recv). Subscribing again replaces the topics
    /// and rebalances.
    ///
    /// # Errors
    /// [`Error::Config`] without a `group.id`, or when partitions were assigned by hand.
    pub fn subscribe(&self, topics: &[&str]) -> Result<()> {
        self.subscribe_to(topics, None)
    }

    /// `subscribe` by topic names, or (`group.protocol=consumer`) by a pattern.
    fn subscribe_to(&self, topics: &[&str], pattern: Option<String>) -> Result<()> {
        if self.inner.group.is_none() {
            return Err(crate::config::invalid("group.id", "", "a group id, to subscribe").into());
        }
        let mut st = self.inner.lock();
        if st.mode == Mode::Assigned {
            return Err(crate::config::invalid(
                "subscribe",
                "after assign",
                "either assign or subscribe, not both",
            )
            .into());
        }
        st.mode = Mode::Subscribed;
        st.topics = topics.iter().map(|t| t.to_string()).collect();
        st.topics.sort();
        st.topics.dedup();
        st.rejoin = true;
        if self.consumer_protocol() {
            self.subscribed_848(&mut st, pattern);
        }
        drop(st);
        self.inner.ready.notify_waiters();
        Ok(())
    }

    /// Consumes `partitions` directly, outside any group rebalancing. Each starts at its
    /// committed offset (with a `group.id`) or by `auto.offset.reset`, unless
    /// [seeked](Self::seek). Replaces any earlier assignment.
    ///
    /// # Errors
    /// [`Error::Config`] after [`subscribe`](Self::subscribe).
    pub fn assign(&self, partitions: &[TopicPartition]) -> Result<()> {
        let mut st = self.inner.lock();
        if st.mode == Mode::Subscribed {
            return Err(crate::config::invalid(
                "assign",
                "after subscribe",
                "either assign or subscribe, not both",
            )
            .into());
        }
        st.mode = Mode::Assigned;
        let wanted: BTreeSet<_> = partitions.iter().cloned().collect();
        let gone: Vec<_> = st
            .parts
            .keys()
            .filter(|tp| !wanted.contains(*tp))
            .cloned()
            .collect();
        for tp in gone {
            st.remove_part(&tp);
        }
        for tp in wanted {
            st.parts
                .entry(tp.clone())
                .or_insert_with(|| PartState::new(&tp));
        }
        drop(st);
        self.inner.fetch_wake.notify_one();
        Ok(())
    }

    /// The partitions currently assigned.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.inner.lock().parts.keys().cloned().collect()
    }

    /// Moves `partition`'s position: the next record handed out is at `offset`.
    /// Buffered records of the partition are dropped.
    ///
    /// # Errors
    /// [`Error::NotAssigned`] when the partition is not assigned.
    pub fn seek(&self, partition: &TopicPartition, offset: i64) -> Result<()> {
        self.inner
            .lock()
            .seek_part(partition, offset)
            .ok_or_else(|| Error::NotAssigned(partition.to_string()))?;
        self.inner.fetch_wake.notify_one();
        Ok(())
    }

    /// The position of `partition`: the offset of the next record to hand out (`None`
    /// until it is known).
    pub fn position(&self, partition: &TopicPartition) -> Option<i64> {
        let st = self.inner.lock();
        let p = st.parts.get(partition)?;
        st.handed_position(partition, p).map(|(o, _)| o)
    }

    /// Lag of every assigned partition whose position and high watermark are known:
    /// the high watermark (the last stable offset with read_committed) minus the
    /// position.
    pub fn lag(&self) -> BTreeMap<TopicPartition, i64> {
        let st = self.inner.lock();
        let committed = self.inner.config.isolation == IsolationLevel::ReadCommitted;
        st.parts
            .iter()
            .filter_map(|(tp, p)| {
                let end = if committed {
                    p.last_stable_offset
                } else {
                    p.high_watermark
                };
                let (pos, _) = st.handed_position(tp, p)?;
                (end >= 0).then(|| (tp.clone(), (end - pos).max(0)))
            })
            .collect()
    }

    /// Stops fetching `partitions` until [`resume`](Self::resume); buffered records are
    /// kept, but not handed out.
    pub fn pause(&self, partitions: &[TopicPartition]) {
        let mut st = self.inner.lock();
        for tp in partitions {
            if let Some(p) = st.parts.get_mut(tp) {
                if !p.paused {
                    p.paused_at = Some(Instant::now());
                }
                p.paused = true;
            }
        }
    }

    /// Resumes paused partitions.
    pub fn resume(&self, partitions: &[TopicPartition]) {
        let mut st = self.inner.lock();
        for tp in partitions {
            if let Some(p) = st.parts.get_mut(tp) {
                p.paused = false;
            }
        }
        drop(st);
        self.inner.fetch_wake.notify_one();
        self.inner.ready.notify_waiters();
    }

    /// Bytes of record batches in the prefetch queue now, decompressed batches being
    /// handed out included (at most the budget plus one batch).
    pub fn buffered_bytes(&self) -> usize {
        let st = self.inner.lock();
        st.buffered
    }

    /// The next record. Waits for one; runs rebalances and commits due meanwhile.
    ///
    /// Cancel-safe, as [`recv_batch`](Self::recv_batch).
    ///
    /// # Errors
    /// A partition's error (OFFSET_OUT_OF_RANGE with `auto.offset.reset=error`, a
    /// corrupt batch), a group error (e.g. FENCED_INSTANCE_ID), or [`Error::Closed`].
    pub async fn recv(&self) -> Result<ConsumerRecord> {
        loop {
            let mut batch = self.poll(1, None, false).await?;
            if let Some(r) = batch.pop() {
                return Ok(r);
            }
        }
    }

    /// Up to `max` records: returns once `max` are here or `timeout` has passed
    /// (possibly with none), like librdkafka's batch consume. When a rebalance is due,
    /// it returns the records gathered so far first; the next call rebalances.
    ///
    /// Cancel-safe: a call dropped before it returns (a `select!` branch that lost, a
    /// `timeout`) hands out nothing and loses nothing; the records it had gathered are
    /// handed out by the next call, and positions and commits of consumed positions
    /// (auto-commit included) never pass them until then. A rebalance or auto-commit the
    /// call started runs on in a task of its own; the next call waits for the rebalance.
    ///
    /// # Errors
    /// As [`recv`](Self::recv); records gathered before an error stay buffered.
    pub async fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        self.poll(max.max(1), Some(Instant::now() + timeout), true)
            .await
    }

    async fn poll(
        &self,
        max: usize,
        deadline: Option<Instant>,
        fill: bool,
    ) -> Result<Vec<ConsumerRecord>> {
        let inner = &self.inner;
        *inner.last_poll.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        // Every record this call returns passes through the stash, and is taken out of it
        // only right before returning, with no await in between: a call dropped at any
        // await leaves its records for the next one.
        let hand_out = |max: usize| inner.lock().drain(max);
        // Decompressed bytes this call opened: the records it hands out hold them after
        // their batch is done, so one call opens at most about a budget's worth (and a
        // batch larger than the budget alone).
        let mut inflated_taken = 0usize;
        loop {
            if inner.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let notified = inner.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if inner.lock().rebalancing {
                // A rebalance runs (in its own task): nothing is handed out until it is
                // done. The application is back here, so what it was handed before is
                // handled, and that is all a revocation's commit covers (as in the Java
                // client, where the listener runs inside `poll`).
                match deadline {
                    Some(d) => tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(d.into()) => return Ok(Vec::new()),
                    },
                    None => notified.await,
                }
                continue;
            }
            let stashed = inner.lock().stash.len();
            if stashed >= max || (stashed > 0 && (!fill || self.rebalance_pending())) {
                // Enough at hand, or a rebalance is due: hand out what was gathered first
                // (the next call rebalances). Records taken before a revocation are never
                // dropped behind the caller's back.
                return Ok(hand_out(max));
            }
            if let Err(e) = self.maintain().await {
                if inner.lock().stash.is_empty() {
                    return Err(e);
                }
                warn!(error = %e, "consumer maintenance failed; returning records gathered");
                return Ok(hand_out(max));
            }
            if inner.lock().rebalancing {
                continue; // wait for it, above
            }
            // (Not in one expression: the lock guard would live through `take`.)
            let room = max.saturating_sub(inner.lock().stash.len());
            let taken = self.take(room, &mut inflated_taken);
            if taken.freed {
                inner.fetch_wake.notify_one();
            }
            if let Some((tp, e)) = taken.error {
                let mut st = inner.lock();
                if !st.stash.is_empty() {
                    // Surfaced by the next call, after these records.
                    drop(st);
                    return Ok(hand_out(max));
                }
                if let Some(p) = st.parts.get_mut(&tp) {
                    if p.fault.take().is_none() {
                        p.error_reported = true;
                    }
                }
                return Err(e);
            }
            let stashed = inner.lock().stash.len();
            if stashed >= max || (!fill && stashed > 0) {
                return Ok(hand_out(max));
            }
            *inner.last_poll.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            let wake_for_commit = self.auto_commit_due();
            // Partitions still without a position (their lookup failed and is retried).
            let wake_for_positions = self
                .inner
                .lock()
                .parts
                .values()
                .any(|p| p.position.is_none() && p.error.is_none())
                .then(|| Instant::now() + self.inner.client.config().retry_backoff);
            let until = [deadline, wake_for_commit, wake_for_positions]
                .into_iter()
                .flatten()
                .min();
            match until {
                Some(t) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(t.into()) => {
                            if deadline.is_some_and(|d| Instant::now() >= d) {
                                return Ok(hand_out(max));
                            }
                        }
                    }
                }
                None => notified.await,
            }
        }
    }

    fn rebalance_pending(&self) -> bool {
        self.group_due(&self.inner.lock())
    }

    /// Whether the group protocol is KIP-848's (`group.protocol=consumer`).
    fn consumer_protocol(&self) -> bool {
        self.inner.config.group_protocol == GroupProtocol::Consumer
    }

    /// Whether the group needs this member's attention before records are handed out:
    /// classic, a (re)join; consumer protocol, a reconciliation (the heartbeat loop
    /// joins on its own).
    fn group_due(&self, st: &State) -> bool {
        st.mode == Mode::Subscribed
            && (st.rejoin || (!self.consumer_protocol() && st.membership.is_none()))
    }

    fn auto_commit_due(&self) -> Option<Instant> {
        let c = &self.inner.config;
        (c.auto_commit && self.inner.group.is_some())
            .then(|| self.inner.lock().last_commit + c.auto_commit_interval)
    }

    /// Takes up to `n` records from the queue into the stash, round-robin over
    /// partitions; a partition's error or fault comes back with it (not yet marked as
    /// reported: the caller does when it returns the error).
    fn take(&self, n: usize, inflated_taken: &mut usize) -> Taken {
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
                        }
                        Some(Err(e)) => {
                            p.error = Some(Error::Decode(e));
                            break;
                        }
                        None => {
                            let done = p.current.take().expect("current was some");
                            if done.inflated > 0 {
                                inflated_open -= 1;
                            }
                            p.position = Some(p.position.unwrap_or(0).max(done.last_offset + 1));
                            p.bytes -= done.bytes;
                            *buffered -= done.bytes;
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

    /// Runs what is due before records are handed out: a rebalance, position lookups,
    /// an auto-commit.
    async fn maintain(&self) -> Result<()> {
        let (rejoin, fatal, need_positions) = {
            let st = self.inner.lock();
            (
                self.group_due(&st),
                st.fatal.clone(),
                st.parts.values().any(|p| p.position.is_none()),
            )
        };
        if let Some(e) = fatal {
            return Err(e);
        }
        if rejoin {
            self.start_rebalance()?;
            if self.inner.lock().rebalancing {
                // The caller waits on `ready`, which the task notifies when done.
                return Ok(());
            }
        }
        if need_positions {
            self.init_positions().await?;
        }
        if self.auto_commit_due().is_some_and(|t| Instant::now() >= t) {
            // In a task of its own: a `recv` dropped while a commit is in flight neither
            // cancels it nor starts it again at once (which, with callers that cancel
            // often, could keep every call busy committing and none handing out).
            self.inner.lock().last_commit = Instant::now();
            let offsets = self.consumed_offsets(None);
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.commit_offsets(offsets).await {
                    warn!(error = %e, "auto-commit failed");
                }
            });
        }
        Ok(())
    }

    fn listener(&self) -> Option<Arc<dyn RebalanceListener>> {
        self.inner
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Gives up `partitions`: the listener first (it may commit), then auto-commit,
    /// then they are dropped with their buffered records.
    async fn revoke(&self, partitions: &[TopicPartition]) {
        if partitions.is_empty() {
            return;
        }
        info!(?partitions, "revoking partitions");
        if let Some(l) = self.listener() {
            l.on_revoked(self, partitions).await;
        }
        if self.inner.config.auto_commit {
            let offsets = self.consumed_offsets(Some(partitions));
            if let Err(e) = self.commit_offsets(offsets).await {
                warn!(error = %e, "auto-commit before revoking failed");
            }
        }
        let mut st = self.inner.lock();
        for tp in partitions {
            st.remove_part(tp);
        }
        drop(st);
        self.inner.fetch_wake.notify_one();
    }

    /// Starts a rebalance in a task of its own unless one is running; returns how the
    /// last one failed, once, instead of starting another at once.
    fn start_rebalance(&self) -> Result<()> {
        let mut slot = self
            .inner
            .rebalance_task
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        {
            let mut st = self.inner.lock();
            if st.rebalancing {
                return Ok(());
            }
            if let Some(e) = st.rebalance_error.take() {
                return Err(e);
            }
            st.rebalancing = true;
        }
        let me = self.clone();
        *slot = Some(tokio::spawn(async move {
            let result = me.rebalance().await;
            {
                let mut st = me.inner.lock();
                st.rebalancing = false;
                st.rebalance_error = result.err();
            }
            me.inner.ready.notify_waiters();
        }));
        Ok(())
    }

    async fn rebalance(&self) -> Result<()> {
        let Ok(_guard) = self.inner.rebalance.try_lock() else {
            // Another task (or a listener, from inside this rebalance) is already at it:
            // carry on with what is buffered; waiting here could wait on ourselves.
            return Ok(());
        };
        if self.consumer_protocol() {
            return self.reconcile_848().await;
        }
        let group = self
            .inner
            .group
            .as_ref()
            .expect("subscribe checked group.id");
        let cfg = &self.inner.config;
        let cooperative = cfg.cooperative();
        loop {
            let (topics, owned, mut member_id, generation) = {
                let mut st = self.inner.lock();
                if st.mode != Mode::Subscribed || !(st.rejoin || st.membership.is_none()) {
                    return Ok(());
                }
                st.rejoin = false;
                let owned: Vec<TopicPartition> = st.parts.keys().cloned().collect();
                (
                    st.topics.clone(),
                    owned,
                    st.member_id.clone(),
                    st.membership.as_ref().map_or(-1, |m| m.generation),
                )
            };
            let owned = if cooperative {
                owned
            } else {
                self.revoke(&owned).await;
                self.inner.lock().membership = None;
                Vec::new()
            };
            let subscription = assignor::Subscription {
                topics: topics.clone(),
                user_data: None,
                owned_partitions: owned.clone(),
                generation_id: generation,
                rack_id: None,
            };
            let protocols: Vec<(&'static str, Bytes)> = cfg
                .strategies
                .iter()
                .map(|s| {
                    (
                        s.protocol_name(),
                        assignor::encode_subscription(
                            &subscription,
                            assignor::SUBSCRIPTION_VERSION,
                        ),
                    )
                })
                .collect();
            let joined = group
                .join(
                    &mut member_id,
                    &protocols,
                    cfg.session_timeout,
                    cfg.max_poll_interval,
                )
                .await;
            let joined = match joined {
                Ok(j) => j,
                Err(e) => {
                    let mut st = self.inner.lock();
                    st.member_id = member_id;
                    st.rejoin = true;
                    if e.kafka_code() == Some(KafkaCode::FencedInstanceId) {
                        st.fatal = Some(e.clone());
                    }
                    return Err(e);
                }
            };
            let membership = Membership {
                member_id: joined.member_id.clone(),
                generation: joined.generation,
            };
            self.inner.lock().member_id = joined.member_id.clone();
            let leader = joined.leader == joined.member_id;
            let (assignments, assigned_from) = if leader {
                match self.assign_as_leader(&joined).await {
                    Ok((a, from)) => (a, Some(from)),
                    Err(e) => {
                        self.inner.lock().rejoin = true;
                        return Err(e);
                    }
                }
            } else {
                (Vec::new(), None)
            };
            let synced = group
                .sync(&membership, joined.protocol.as_deref(), assignments)
                .await;
            let bytes = match synced {
                Ok(b) => b,
                Err(e) => match e.kafka_code() {
                    Some(KafkaCode::RebalanceInProgress) => {
                        self.inner.lock().rejoin = true;
                        continue;
                    }
                    Some(KafkaCode::UnknownMemberId | KafkaCode::IllegalGeneration) => {
                        let mut st = self.inner.lock();
                        if e.kafka_code() == Some(KafkaCode::UnknownMemberId) {
                            st.member_id.clear();
                        }
                        st.membership = None;
                        st.rejoin = true;
                        continue;
                    }
                    _ => {
                        self.inner.lock().rejoin = true;
                        return Err(e);
                    }
                },
            };
            let assigned: BTreeSet<TopicPartition> = assignor::decode_assignment(&bytes)
                .map_err(|e| Error::IncompleteResponse(format!("group assignment: {e}")))?
                .into_iter()
                .collect();
            info!(
                group = group.group_id(),
                generation = joined.generation,
                member = %joined.member_id,
                leader,
                protocol = ?joined.protocol,
                partitions = assigned.len(),
                "joined group"
            );
            let owned: BTreeSet<TopicPartition> = owned.into_iter().collect();
            let revoked: Vec<_> = owned.difference(&assigned).cloned().collect();
            let added: Vec<_> = assigned.difference(&owned).cloned().collect();
            {
                let mut st = self.inner.lock();
                st.membership = Some(membership);
                st.leader = leader;
                st.assigned_from = assigned_from;
            }
            if !revoked.is_empty() {
                // Cooperative: give these up, then rejoin so they can move.
                self.revoke(&revoked).await;
                self.inner.lock().rejoin = true;
            }
            {
                let mut st = self.inner.lock();
                for tp in &added {
                    st.parts
                        .entry(tp.clone())
                        .or_insert_with(|| PartState::new(tp));
                }
            }
            self.ensure_heartbeat();
            if !added.is_empty() {
                if let Some(l) = self.listener() {
                    l.on_assigned(self, &added).await;
                }
            }
            self.inner.fetch_wake.notify_one();
            let again = self.inner.lock().rejoin;
            if !again {
                return Ok(());
            }
        }
    }

    async fn assign_as_leader(
        &self,
        joined: &group::Joined,
    ) -> Result<(Vec<(String, Bytes)>, BTreeMap<String, i32>)> {
        let strategy = joined
            .protocol
            .as_deref()
            .and_then(AssignmentStrategy::parse)
            .ok_or_else(|| {
                Error::IncompleteResponse(format!(
                    "the group chose assignor {:?}, which this consumer does not offer",
                    joined.protocol
                ))
            })?;
        let mut members = Vec::new();
        let mut topics = BTreeSet::new();
        for (member_id, instance, meta) in &joined.members {
            let subscription = assignor::decode_subscription(meta).map_err(|e| {
                Error::IncompleteResponse(format!("subscription of member {member_id}: {e}"))
            })?;
            topics.extend(subscription.topics.iter().cloned());
            members.push(assignor::Member {
                member_id: member_id.clone(),
                group_instance_id: instance.clone(),
                subscription,
            });
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let cluster = self.inner.client.refresh_metadata(&names).await?;
        let counts: BTreeMap<String, i32> = names
            .iter()
            .filter_map(|t| {
                cluster
                    .topic(t)
                    .filter(|t| !t.partitions.is_empty())
                    .map(|topic| (t.to_string(), topic.partitions.len() as i32))
            })
            .collect();
        let plan = assignor::assign(strategy, &members, &counts);
        debug!(?plan, "assignment computed as leader");
        Ok((
            plan.into_iter()
                .map(|(m, parts)| (m, assignor::encode_assignment(&parts, None)))
                .collect(),
            counts,
        ))
    }

    fn ensure_heartbeat(&self) {
        let mut st = self.inner.lock();
        if st.heartbeat {
            return;
        }
        st.heartbeat = true;
        drop(st);
        let task = if self.consumer_protocol() {
            membership::spawn_heartbeat(&self.inner)
        } else {
            tokio::spawn(heartbeat_loop(Arc::downgrade(&self.inner)))
        };
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Sets the position of every partition that has none: the committed offset, or
    /// `auto.offset.reset`.
    async fn init_positions(&self) -> Result<()> {
        let todo: Vec<TopicPartition> = {
            let st = self.inner.lock();
            st.parts
                .iter()
                .filter(|(_, p)| p.position.is_none() && p.error.is_none())
                .map(|(tp, _)| tp.clone())
                .collect()
        };
        if todo.is_empty() {
            return Ok(());
        }
        let committed = match &self.inner.group {
            Some(g) if self.consumer_protocol() && self.inner.lock().mode == Mode::Subscribed => {
                // With the member id and epoch; a stale epoch is retried next time.
                let todo = &todo;
                match self
                    .retry_stale_epoch(|m| async move { g.committed(todo, m.as_ref()).await })
                    .await
                {
                    Ok(c) => c,
                    Err(e) if e.kafka_code() == Some(KafkaCode::StaleMemberEpoch) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            Some(g) => g.committed(&todo, None).await?,
            None => HashMap::new(),
        };
        for tp in todo {
            let (offset, epoch) = match committed.get(&tp).copied().flatten() {
                Some((o, e)) => (Ok(o), e),
                None => (self.reset_offset(&tp).await, -1),
            };
            let mut st = self.inner.lock();
            if let Some(p) = st.parts.get_mut(&tp) {
                if p.position.is_none() {
                    match offset {
                        Ok(o) => {
                            debug!(partition = %tp, offset = o, epoch, "starting position");
                            st.seek_part(&tp, o);
                            if let Some(p) = st.parts.get_mut(&tp) {
                                // A committed offset with its epoch is checked against
                                // the leader's log before fetching (KIP-320).
                                p.position_epoch = epoch;
                                p.validate = (epoch >= 0).then_some(epoch);
                            }
                        }
                        Err(e) if e.is_retriable() || e.is_stale_metadata() => {
                            // E.g. a new topic whose leader is not elected yet: the
                            // next recv tries again.
                            debug!(partition = %tp, error = %e, "position lookup will be retried");
                        }
                        Err(e) => p.error = Some(e),
                    }
                }
            }
        }
        self.inner.fetch_wake.notify_one();
        Ok(())
    }

    async fn reset_offset(&self, tp: &TopicPartition) -> Result<i64> {
        let spec = match self.inner.config.offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::Error => {
                return Err(Error::NoOffset(tp.to_string()));
            }
        };
        self.inner
            .client
            .list_offset(&tp.topic, tp.partition, spec)
            .await
    }

    fn consumed_offsets(
        &self,
        only: Option<&[TopicPartition]>,
    ) -> BTreeMap<TopicPartition, (i64, i32)> {
        let st = self.inner.lock();
        st.parts
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .filter_map(|(tp, p)| Some((tp.clone(), st.handed_position(tp, p)?)))
            .collect()
    }

    /// Commits the position of every assigned partition (the offset after the last
    /// record handed out).
    ///
    /// # Errors
    /// As [`commit`](Self::commit).
    pub async fn commit_consumed(&self) -> Result<()> {
        let offsets = self.consumed_offsets(None);
        self.commit_offsets(offsets).await
    }

    /// Commits, per partition, the offset after the last of `records`: what a
    /// consumer restarting should read next.
    ///
    /// # Errors
    /// As [`commit`](Self::commit).
    pub async fn commit_records(&self, records: &[ConsumerRecord]) -> Result<()> {
        let mut offsets: BTreeMap<TopicPartition, (i64, i32)> = BTreeMap::new();
        for r in records {
            let e = offsets
                .entry(r.topic_partition())
                .or_insert((r.offset + 1, r.leader_epoch));
            if r.offset + 1 > e.0 {
                *e = (r.offset + 1, r.leader_epoch);
            }
        }
        self.commit_offsets(offsets).await
    }

    /// Commits `offsets`: for each partition, the next offset to read.
    ///
    /// # Errors
    /// [`Error::Config`] without a `group.id`; [`Error::NotAssigned`] when a partition is
    /// not assigned to this member (it was revoked); the coordinator's errors, e.g.
    /// REBALANCE_IN_PROGRESS or ILLEGAL_GENERATION as [`Error::Kafka`].
    pub async fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        let map = offsets
            .iter()
            .map(|(tp, o)| (tp.clone(), (*o, -1)))
            .collect();
        self.commit_offsets(map).await
    }

    async fn commit_offsets(&self, offsets: BTreeMap<TopicPartition, (i64, i32)>) -> Result<()> {
        let Some(group) = &self.inner.group else {
            return Err(crate::config::invalid("group.id", "", "a group id, to commit").into());
        };
        // Nothing to commit (an empty batch): no request, whatever the group is doing.
        if offsets.is_empty() {
            return Ok(());
        }
        let membership = {
            let st = self.inner.lock();
            let missing: Vec<String> = offsets
                .keys()
                .filter(|tp| !st.parts.contains_key(*tp))
                .map(|tp| tp.to_string())
                .collect();
            if !missing.is_empty() && st.mode == Mode::Subscribed {
                return Err(Error::NotAssigned(missing.join(", ")));
            }
            match st.mode {
                Mode::Subscribed => Some(st.membership.clone().ok_or_else(|| {
                    Error::from_code(27, None, || format!("commit to group {}", group.group_id()))
                        .expect("27 is an error")
                })?),
                _ => None,
            }
        };
        debug!(?offsets, "committing");
        if self.consumer_protocol() && membership.is_some() {
            // The coordinator checks the member epoch: a stale one (it moved on since
            // this commit was made) is retried after the next heartbeat.
            let offsets = &offsets;
            return self
                .retry_stale_epoch(|m| async move {
                    let m = m.ok_or_else(|| {
                        Error::from_code(27, None, || {
                            format!("commit to group {}", group.group_id())
                        })
                        .expect("27 is an error")
                    })?;
                    group.commit(Some(&m), offsets).await
                })
                .await;
        }
        group.commit(membership.as_ref(), &offsets).await
    }

    /// This consumer's place in its group, for a transactional producer's
    /// [`send_offsets_to_transaction`](crate::Producer::send_offsets_to_transaction):
    /// the coordinator refuses offsets sent with it once the consumer is no longer the
    /// member it names (it lost its partitions in a rebalance).
    ///
    /// # Errors
    /// [`Error::Config`] without a `group.id`.
    pub fn group_metadata(&self) -> Result<ConsumerGroupMetadata> {
        let Some(group) = &self.inner.group else {
            return Err(crate::config::invalid("group.id", "", "a group id").into());
        };
        let membership = self.inner.lock().membership.clone();
        Ok(ConsumerGroupMetadata {
            group_id: group.group_id().to_owned(),
            member_id: membership
                .as_ref()
                .map(|m| m.member_id.clone())
                .unwrap_or_default(),
            generation_id: membership.as_ref().map_or(-1, |m| m.generation),
            group_instance_id: self.inner.config.group_instance_id.clone(),
        })
    }

    /// The committed offsets of `partitions` in this consumer's group.
    ///
    /// # Errors
    /// [`Error::Config`] without a `group.id`; the coordinator's errors.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        let Some(group) = &self.inner.group else {
            return Err(crate::config::invalid("group.id", "", "a group id").into());
        };
        Ok(group
            .committed(partitions, None)
            .await?
            .into_iter()
            .map(|(tp, o)| (tp, o.map(|(o, _)| o)))
            .collect())
    }

    /// Leaves the group and stops. With auto-commit, positions are committed first
    /// (after the listener's `on_revoked`). Buffered records are dropped.
    pub async fn close(&self) {
        if self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        // A rebalance half way is given up: the group hears that the member leaves.
        // (Bound first: a guard in the `if let` would live through the await.)
        let running = self
            .inner
            .rebalance_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = running {
            t.abort();
            let _ = t.await;
            self.inner.lock().rebalancing = false;
        }
        let owned = self.assignment();
        let subscribed = self.inner.lock().mode == Mode::Subscribed;
        if subscribed && self.inner.lock().membership.is_some() {
            self.revoke(&owned).await;
        } else if self.inner.config.auto_commit && self.inner.group.is_some() && !owned.is_empty() {
            if let Err(e) = self.commit_consumed().await {
                warn!(error = %e, "commit on close failed");
            }
        }
        self.inner.closed.store(true, Ordering::Release);
        let member = self.inner.lock().member_id.clone();
        if subscribed && self.consumer_protocol() {
            self.leave_848().await;
        } else if let (true, Some(g)) = (subscribed, &self.inner.group) {
            if self.inner.config.group_instance_id.is_none() {
                g.leave(&member, "the consumer is closing").await;
            }
        }
        if let Some(g) = &self.inner.group {
            g.disconnect(); // closes the group's own connections
        }
        for t in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
        self.inner.ready.notify_waiters();
        self.inner.client.close().await;
    }
}

struct Taken {
    freed: bool,
    error: Option<(TopicPartition, Error)>,
}

/// Prepares a queued batch for handing out: skips control batches and aborted
/// transactions (read_committed), checks the CRC, decompresses. `Ok(None)` when the
/// batch yields nothing (the caller releases its bytes).
fn open_batch(
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

async fn heartbeat_loop(inner: std::sync::Weak<Inner>) {
    let mut last_ok = Instant::now();
    loop {
        let interval = match inner.upgrade() {
            Some(i) => i.config.heartbeat_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let Some(group) = &inner.group else { return };
        let membership = {
            let st = inner.lock();
            if st.rejoin {
                None
            } else {
                st.membership.clone()
            }
        };
        let Some(m) = membership else {
            last_ok = Instant::now();
            continue;
        };
        let since_poll = inner
            .last_poll
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        if since_poll > inner.config.max_poll_interval {
            warn!(
                group = group.group_id(),
                waited_ms = since_poll.as_millis() as u64,
                "max.poll.interval.ms exceeded: leaving the group; the next recv rejoins"
            );
            if inner.config.group_instance_id.is_none() {
                group
                    .leave(&m.member_id, "max.poll.interval.ms exceeded")
                    .await;
            }
            let mut st = inner.lock();
            st.membership = None;
            st.member_id.clear();
            st.rejoin = true;
            continue;
        }
        match group.heartbeat(&m).await {
            Ok(()) => last_ok = Instant::now(),
            Err(e) => {
                let mut st = inner.lock();
                let same = st.membership.as_ref() == Some(&m);
                // This member's own rebalance is under way (its listener, JoinGroup or
                // SyncGroup). A cooperative member keeps its generation while it rejoins
                // and heartbeats with it meanwhile (so does an eager one while its
                // listener runs); the coordinator answers REBALANCE_IN_PROGRESS, or
                // ILLEGAL_GENERATION once the new generation is formed. That rebalance is
                // the one being asked for: flagging another rejoin made every rebalance
                // start the next, every heartbeat interval, and a cooperative group never
                // settled. Should the group need yet another, the first heartbeat of the
                // new generation says so.
                let rejoining = st.rebalancing;
                match e.kafka_code() {
                    Some(KafkaCode::RebalanceInProgress) => {
                        last_ok = Instant::now();
                        if same && !rejoining {
                            debug!(group = group.group_id(), "rebalance in progress: rejoining");
                            st.rejoin = true;
                        }
                    }
                    Some(KafkaCode::IllegalGeneration) if rejoining || !same => {
                        debug!(
                            group = group.group_id(),
                            "heartbeat of the generation being left"
                        );
                        last_ok = Instant::now();
                    }
                    Some(KafkaCode::IllegalGeneration | KafkaCode::UnknownMemberId) if same => {
                        warn!(group = group.group_id(), error = %e, "membership lost: rejoining");
                        if e.kafka_code() == Some(KafkaCode::UnknownMemberId) {
                            st.member_id.clear();
                        }
                        st.membership = None;
                        st.rejoin = true;
                    }
                    Some(KafkaCode::FencedInstanceId) => {
                        st.fatal = Some(e);
                    }
                    _ => {
                        debug!(group = group.group_id(), error = %e, "heartbeat failed");
                        if last_ok.elapsed() > inner.config.session_timeout {
                            warn!(
                                group = group.group_id(),
                                "no heartbeat got through within the session timeout: rejoining"
                            );
                            st.membership = None;
                            st.rejoin = true;
                        }
                    }
                }
                drop(st);
                inner.ready.notify_waiters();
            }
        }
        // The leader watches for new topics or partitions to assign.
        let check = {
            let st = inner.lock();
            st.leader
                .then(|| (st.topics.clone(), st.assigned_from.clone()))
        };
        if let Some((topics, Some(from))) = check {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            if let Ok(cluster) = inner.client.refresh_metadata(&names).await {
                let now: BTreeMap<String, i32> = names
                    .iter()
                    .filter_map(|t| {
                        cluster
                            .topic(t)
                            .filter(|t| !t.partitions.is_empty())
                            .map(|topic| (t.to_string(), topic.partitions.len() as i32))
                    })
                    .collect();
                if now != from {
                    info!(
                        group = group.group_id(),
                        "subscribed topics changed: rebalancing"
                    );
                    inner.lock().rejoin = true;
                    inner.ready.notify_waiters();
                }
            }
        }
    }
}
