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
//! Files: this one holds the types, the shared state and the calls (`subscribe`,
//! `assign`, `recv`, `seek`, `close`); `queue.rs` the prefetch queue and taking records;
//! `fetcher.rs` fetching; `rebalance.rs` the classic group's rebalances and heartbeats;
//! `membership.rs` and `group_848.rs` the consumer protocol; `group.rs` the coordinator's
//! requests; `commit.rs` starting positions and commits; `validate.rs` leader-epoch
//! validation (KIP-320); `assignor.rs` the classic assignors; `config.rs` the settings.
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
mod commit;
mod config;
mod fetcher;
mod group;
mod group_848;
mod membership;
mod queue;
use queue::{PartState, Queued};
mod rebalance;
mod stream;
mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use paperboy_protocol::records::{Headers, TimestampType};
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

    /// Whether the group protocol is KIP-848's (`group.protocol=consumer`).
    fn consumer_protocol(&self) -> bool {
        self.inner.config.group_protocol == GroupProtocol::Consumer
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
