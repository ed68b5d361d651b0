//! The producer's background sender, and the mutex around its accumulator.
//!
//! One mutex guards the accumulator (`accumulator.rs`): per-partition open batches,
//! ready queues, sequence numbers and the buffer accounting. `enqueue` appends under it;
//! the sender task plans under it (close lingered batches, expire old ones, pick what to
//! send to which broker) and does everything slow outside it: encoding and compressing
//! batches, the requests, waiting for answers. A request's task locks again only to
//! settle its batches.
//!
//! # Deadlines
//!
//! Every record fails with [`Error::Timeout`] no later than `delivery.timeout.ms` after
//! its batch was opened (so after the record was enqueued), wherever it is then, as in
//! the Java client:
//! - open or ready (lingering, waiting for a turn, for a leader, for a retry's backoff,
//!   for an epoch bump): [`Shared::plan`] fails it, and wakes up for the next deadline;
//! - in flight: the request's task fails its records at the deadline while the request
//!   goes on (see [`Shared::within_deadlines`]); once every record of a request has
//!   failed, the request is abandoned (a late answer is dropped).
//!
//! A Produce request itself times out after `request.timeout.ms`, once (the broker is
//! given the same `timeout_ms`), and is retried while its batches have time left.
//!
//! With idempotence, a batch failed in flight (or failed after an attempt that got no
//! answer) may or may not have been written: the broker's sequence for its partition is
//! unknown, and sending later batches with the sequence numbers after it would have them
//! refused as OUT_OF_ORDER_SEQUENCE_NUMBER if it was not written. So the producer bumps
//! its epoch (InitProducerId with the current id and epoch, KIP-360; a new id from
//! brokers older than 2.5) once nothing is in flight, and starts every partition again
//! from sequence 0, which the broker accepts under a new epoch. Batches that were never
//! sent are renumbered and go out under the new epoch. A batch that had been sent and got
//! no answer ([`Batch::in_doubt`]) is failed at the bump instead: it may be in the log
//! under the old epoch, and the broker would not recognise a copy under the new one as a
//! duplicate. So a record is written twice only if it was reported as failed, and an
//! acknowledged record never is; acknowledged records of a partition stay in the order
//! they were enqueued (the sender keeps a partition's batches in sequence order, and
//! batches after a failed one are sent only after it has settled).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{oneshot, Notify};
use tracing::{debug, error, info, warn, Instrument};

use super::accumulator::{admit, choose, now_ms, Accumulator, Batch, Tp};
use super::txn::{self, Phase, Txn};
use super::txn_coordinator::{Coordinator, MAX_PRODUCE_VERSION};
use super::{Delivery, Partitioner, ProducerConfig, ProducerRecord};
use crate::backoff::Backoff;
use crate::client::{Acks, Client};
use crate::error::{Error, KafkaCode, Result};
use crate::telemetry;

/// A Produce request stops taking partitions past this many bytes.
const MAX_REQUEST_BYTES: usize = 16 << 20;

pub(super) struct State {
    pub(super) acc: Accumulator,
    /// Per broker, the write turn of the request planned last (see [`Turn`]).
    turns: HashMap<i32, oneshot::Receiver<()>>,
    in_flight: HashMap<i32, usize>,
    total_in_flight: usize,
    flushing: usize,
    closing: bool,
    pub(super) producer_id: i64,
    pub(super) producer_epoch: i16,
    /// A transactional producer's transaction (`transactional.id`).
    pub(super) txn: Option<Txn>,
    /// The producer's sequence state is broken (a batch with a sequence failed in an
    /// unknown state): bump the epoch once nothing is in flight.
    need_bump: bool,
    bumping: bool,
    refreshing: bool,
    stopped: bool,
}

impl State {
    fn pending(&self) -> usize {
        self.acc.pending()
    }
}

pub(crate) struct Shared {
    client: Client,
    pub(super) cfg: ProducerConfig,
    /// The transaction coordinator of a transactional producer.
    pub(super) coordinator: Option<Coordinator>,
    partitioner: Arc<dyn Partitioner>,
    state: Mutex<State>,
    /// Wakes the sender loop.
    pub(super) wake: Notify,
    /// Wakes a transaction's commit or abort waiting for AddPartitionsToTxn to end.
    pub(super) txn_change: Notify,
    /// Wakes `enqueue` callers waiting for buffer space.
    space: Notify,
    /// Wakes `flush` callers when nothing is pending.
    idle: Notify,
    closed: AtomicBool,
    /// Buffer gauges and sent counters (feature `metrics`).
    metrics: telemetry::Producer,
}

impl Shared {
    pub(crate) async fn start(
        client: Client,
        cfg: ProducerConfig,
        partitioner: Arc<dyn Partitioner>,
        deadline: Instant,
    ) -> Result<Arc<Shared>> {
        let coordinator = cfg
            .transactional_id
            .clone()
            .map(|id| Coordinator::new(client.clone(), id, cfg.transaction_timeout));
        let (producer_id, producer_epoch) = match &coordinator {
            Some(c) => {
                c.init_producer_id(None, deadline)
                    .await
                    .map_err(|e| match txn::is_fatal(&e) {
                        true => txn::fenced(&c.id, &e),
                        false => e,
                    })?
            }
            None if cfg.idempotence => init_producer_id(&client, -1, -1, deadline).await?,
            None => (-1, -1),
        };
        let txn = cfg.transactional_id.clone().map(Txn::new);
        let seed = (now_ms() as u64) ^ (std::process::id() as u64).rotate_left(32) | 1;
        let metrics = telemetry::Producer::new(cfg.client.client_id());
        let shared = Arc::new(Shared {
            client,
            cfg,
            coordinator,
            partitioner,
            state: Mutex::new(State {
                acc: Accumulator::new(seed),
                turns: HashMap::new(),
                in_flight: HashMap::new(),
                total_in_flight: 0,
                flushing: 0,
                closing: false,
                producer_id,
                producer_epoch,
                txn,
                need_bump: false,
                bumping: false,
                refreshing: false,
                stopped: false,
            }),
            wake: Notify::new(),
            txn_change: Notify::new(),
            space: Notify::new(),
            idle: Notify::new(),
            closed: AtomicBool::new(false),
            metrics,
        });
        tokio::spawn(run(shared.clone()));
        Ok(shared)
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn pending(&self) -> usize {
        self.lock().pending()
    }

    pub(crate) fn buffered_bytes(&self) -> usize {
        self.lock().acc.buffered_bytes
    }

    pub(crate) fn begin_close(&self) {
        self.closed.store(true, Ordering::Release);
        self.lock().closing = true;
        self.wake.notify_one();
    }

    /// Sends every batch without waiting for `linger.ms` while it waits, and returns once
    /// every record enqueued before the call has been acknowledged or has failed: at
    /// most `delivery.timeout.ms` after the call, since each of them fails by then.
    /// Records enqueued meanwhile are not waited for (a producer that is never idle would
    /// otherwise keep `flush` waiting for ever).
    pub(crate) async fn flush(&self) {
        /// Takes the flush off the count when it returns or its caller stops waiting.
        struct Flushing<'a>(&'a Shared);
        impl Drop for Flushing<'_> {
            fn drop(&mut self) {
                self.0.lock().flushing -= 1;
            }
        }
        let before = {
            let mut st = self.lock();
            st.flushing += 1;
            st.acc.next_serial
        };
        let _flushing = Flushing(self);
        self.wake.notify_one();
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.lock().acc.settled_before(before) {
                break;
            }
            idle.await;
        }
    }

    pub(crate) async fn enqueue(
        &self,
        record: ProducerRecord,
    ) -> Result<oneshot::Receiver<Result<Delivery>>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        // A transactional producer refuses a send outside a transaction at once (it is
        // checked again under the lock below); a plain one takes no lock here.
        if self.cfg.transactional_id.is_some() {
            if let Some(t) = &self.lock().txn {
                t.check_send()?;
            }
        }
        let size = admit(&record, &self.cfg)?;
        // max.block.ms bounds the whole wait: for the topic's metadata, then for room.
        let deadline = tokio::time::Instant::now() + self.cfg.max_block;
        let cluster = match tokio::time::timeout_at(
            deadline,
            self.client.topic_metadata(&record.topic),
        )
        .await
        {
            Ok(cluster) => cluster?,
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!("metadata of topic {}", record.topic),
                    after: self.cfg.max_block,
                })
            }
        };
        let count = cluster
            .topic(&record.topic)
            .map_or(0, |t| t.partitions.len() as i32);
        let chosen = choose(&*self.partitioner, &record, count)?;

        // Wait for room, registering for the wake-up before looking, so none is missed.
        let mut st = loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let st = self.lock();
                if st.closing {
                    return Err(Error::Closed);
                }
                if let Some(t) = &st.txn {
                    t.check_send()?;
                }
                if st.acc.has_room(size, &self.cfg) {
                    break st;
                }
            }
            if tokio::time::timeout_at(deadline, space).await.is_err() {
                return Err(Error::BufferFull {
                    waited: self.cfg.max_block,
                });
            }
        };

        let (tx, rx) = oneshot::channel();
        let wake = st
            .acc
            .append(record, size, chosen, count, tx, Instant::now(), &self.cfg);
        self.metrics
            .buffer(st.acc.buffered_bytes, st.acc.buffered_records);
        drop(st);
        if wake {
            self.wake.notify_one();
        }
        Ok(rx)
    }

    /// Removes a settled batch's records from the accounting.
    fn release(&self, st: &mut State, batch: &Batch) {
        st.acc.release(batch);
        self.metrics
            .buffer(st.acc.buffered_bytes, st.acc.buffered_records);
        self.space.notify_waiters();
        if st.flushing > 0 || st.acc.buffered_records == 0 {
            self.idle.notify_waiters();
        }
    }

    /// Fails the records of a batch in flight whose delivery timeout has passed. The
    /// batch stays in flight (its request's task settles it when the request ends) but
    /// its records have their answer and leave the buffer now.
    fn expire_in_flight(&self, st: &mut State, tp: &Tp, batch: &mut Batch) {
        let err = delivery_timeout(tp, batch, true, self.cfg.delivery_timeout);
        if let Some(t) = st.txn.as_mut() {
            t.failed(&err);
        }
        warn!(topic = %tp.0, partition = tp.1, records = batch.len(), "batch expired in flight: {err}");
        self.release(st, batch);
        batch.expired = true;
        for reply in batch.replies.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
    }

    pub(super) fn fail(&self, st: &mut State, batch: Batch, err: Error) {
        if let Some(t) = st.txn.as_mut() {
            t.failed(&err);
        }
        self.release(st, &batch);
        for reply in batch.replies {
            let _ = reply.send(Err(err.clone()));
        }
    }

    fn succeed(
        &self,
        st: &mut State,
        (topic, partition): &Tp,
        batch: Batch,
        base: i64,
        append: Option<i64>,
    ) {
        self.release(st, &batch);
        self.metrics.sent(topic, batch.len(), batch.bytes);
        let partition = *partition;
        for (i, (reply, record)) in batch.replies.into_iter().zip(&batch.records).enumerate() {
            let _ = reply.send(Ok(Delivery {
                partition,
                offset: if base >= 0 { base + i as i64 } else { -1 },
                timestamp_ms: append.unwrap_or(record.timestamp_ms),
            }));
        }
    }

    /// The wait before a batch's retry after `attempts` tries (the first retry waits
    /// twice `retry.backoff.ms`).
    fn backoff(&self, attempts: u32) -> Duration {
        Backoff::of(&self.cfg.client).delay(attempts.saturating_add(1))
    }
}

/// The error of records whose delivery timeout passed.
fn delivery_timeout(tp: &Tp, batch: &Batch, in_flight: bool, after: Duration) -> Error {
    let mut notes = Vec::new();
    if in_flight {
        notes.push("in flight, no answer yet".to_owned());
    }
    if let Some(e) = &batch.last_error {
        notes.push(format!("last error: {e}"));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    Error::Timeout {
        what: format!("delivery to {}[{}]{notes}", tp.0, tp.1),
        after,
    }
}

/// How a Produce request ended.
enum Outcome {
    /// The broker answered: per batch, its result.
    Answered(Vec<Result<(i64, Option<i64>)>>),
    /// Nothing of it was written (no connection to the broker, no usable version).
    Unsent(Error),
    /// It may have been written, but no answer came: it timed out, the connection was
    /// lost, or it was abandoned once all its records had failed at their deadline.
    Lost(Error),
}

/// The resolution of Tokio's timer, less a nanosecond: a batch due within it is closed
/// now rather than a tick later.
const TIMER_TICK: Duration = Duration::from_nanos(999_999);

/// One Produce request's worth of batches for one broker.
struct Work {
    broker: i32,
    batches: Vec<(Tp, Batch)>,
    producer_id: i64,
    producer_epoch: i16,
    /// Its batches belong to a transaction.
    transactional: bool,
    turn: Turn,
}

/// A request's turn to be written to its broker's connection. Requests are planned in
/// sequence-number order but encoded (compressed) concurrently; a small batch could
/// otherwise overtake a big one planned before it, and the broker would reject the later
/// sequence with OUT_OF_ORDER_SEQUENCE_NUMBER. Each request waits for the one planned
/// before it to be written (or to give up) before writing its own.
struct Turn {
    prev: Option<oneshot::Receiver<()>>,
    next: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// Waits until every request planned before this one (to the same broker) has been
    /// written or abandoned.
    async fn wait(&mut self) {
        if let Some(prev) = self.prev.take() {
            let _ = prev.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Abandoned before its turn: pass the turn on only after the predecessor's.
        if let (Some(prev), Some(next)) = (self.prev.take(), self.next.take()) {
            tokio::spawn(async move {
                let _ = prev.await;
                drop(next);
            });
        }
    }
}

enum Plan {
    Work(Vec<Work>, Option<Instant>),
    Stop,
}

/// Inserts `batch` into a ready queue, ordered by sequence (unnumbered ones last).
fn requeue(ready: &mut VecDeque<Batch>, batch: Batch) {
    let key = |b: &Batch| {
        if b.base_seq < 0 {
            i64::MAX
        } else {
            i64::from(b.base_seq)
        }
    };
    let k = key(&batch);
    let at = ready.iter().position(|b| key(b) > k).unwrap_or(ready.len());
    ready.insert(at, batch);
}

impl Shared {
    fn plan(self: &Arc<Self>, now: Instant) -> Plan {
        let mut st = self.lock();
        let st = &mut *st;
        if st.closing && st.pending() == 0 && st.total_in_flight == 0 {
            st.stopped = true;
            return Plan::Stop;
        }
        let cfg = &self.cfg;
        let rush = st.flushing > 0 || st.closing;
        let mut next: Option<Instant> = None;
        let mut soonest = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));

        // Close lingered batches; expire batches past their delivery timeout.
        let mut expired = Vec::new();
        let mut unsticky = Vec::new();
        for (tp, part) in st.acc.parts.iter_mut() {
            if let Some(open) = &part.open {
                let due = open.created + cfg.linger;
                let expires = open.created + cfg.delivery_timeout;
                // Tokio's timer fires on the first millisecond tick at or after a
                // deadline, which would linger up to a millisecond past linger.ms: wake on
                // the tick before it instead, and close what is due by then.
                if rush || due <= now + TIMER_TICK || expires <= now {
                    // (With linger.ms past delivery.timeout.ms, it expires just below.)
                    part.ready.extend(part.open.take());
                    unsticky.push(tp.0.clone());
                } else {
                    soonest((due - TIMER_TICK).min(expires));
                }
            }
            let mut i = 0;
            while i < part.ready.len() {
                let expires = part.ready[i].created + cfg.delivery_timeout;
                if expires <= now {
                    let b = part.ready.remove(i).unwrap_or_else(|| Batch::new(now));
                    if b.base_seq >= 0 {
                        // It may have been written; the sequence is no longer known.
                        st.need_bump = cfg.idempotence;
                    }
                    expired.push((tp.clone(), b));
                } else {
                    soonest(expires);
                    i += 1;
                }
            }
        }
        for t in unsticky {
            st.acc.sticky.remove(&t);
        }
        for (tp, b) in expired {
            let err = delivery_timeout(&tp, &b, false, cfg.delivery_timeout);
            warn!(topic = %tp.0, partition = tp.1, records = b.len(), "batch expired: {err}");
            self.fail(st, b, err);
        }

        // A transactional producer: an unknown sequence state waits for the abort to bump
        // the epoch, and nothing is sent in a transaction that cannot commit.
        if let Some(t) = st.txn.as_mut() {
            if std::mem::take(&mut st.need_bump) {
                t.bump_needed = true;
            }
        }
        if let Some(refused) = st.txn.as_ref().and_then(Txn::unsendable) {
            let mut dropped = Vec::new();
            for (tp, part) in st.acc.parts.iter_mut() {
                dropped.extend(part.open.take().map(|b| (tp.clone(), b)));
                dropped.extend(part.ready.drain(..).map(|b| (tp.clone(), b)));
            }
            for (tp, b) in dropped {
                if b.base_seq >= 0 {
                    if let Some(t) = st.txn.as_mut() {
                        t.bump_needed = true;
                    }
                }
                debug!(topic = %tp.0, partition = tp.1, records = b.len(), error = %refused, "batch not sent");
                self.fail(st, b, refused.clone());
            }
        }

        // Epoch bump: wait for quiet, then re-init the producer id.
        if st.txn.is_none() && (st.need_bump || st.bumping) {
            if st.total_in_flight == 0 && !st.bumping {
                st.bumping = true;
                let shared = self.clone();
                let (pid, epoch) = (st.producer_id, st.producer_epoch);
                tokio::spawn(async move { shared.bump(pid, epoch).await });
            }
            return Plan::Work(Vec::new(), next);
        }

        // Partitions that were held: once quiet, resume in order. Batches from a point
        // the broker surely did not write (a split, a batch refused for good) on are
        // renumbered from that point; earlier ones keep their sequence numbers, so a
        // batch that was written but whose answer was lost is recognised as a duplicate.
        for part in st.acc.parts.values_mut() {
            if part.held && part.in_flight == 0 {
                if let Some(s) = part.resume_seq.take() {
                    if cfg.idempotence {
                        part.next_seq = s;
                        for b in part.ready.iter_mut() {
                            if b.base_seq >= s {
                                b.base_seq = -1;
                            }
                        }
                    }
                }
                part.held = false;
            }
        }

        // Pick, per broker with room, the front batch of every sendable partition.
        let cluster = self.client.cluster();
        let mut by_broker: HashMap<i32, (Vec<(Tp, Batch)>, usize)> = HashMap::new();
        let mut missing_leader = false;
        let keys: Vec<Tp> = st
            .acc
            .parts
            .iter()
            .filter(|(_, p)| !p.held && !p.ready.is_empty())
            .map(|(tp, _)| tp.clone())
            .collect();
        let mut to_add = Vec::new();
        for tp in keys {
            if let Some(t) = &st.txn {
                if !t.added.contains(&tp) {
                    // Added to the transaction first (AddPartitionsToTxn).
                    to_add.push(tp);
                    continue;
                }
            }
            let leader = match cluster.leader_for(&tp.0, tp.1) {
                Ok(b) => b.node_id,
                Err(_) => {
                    missing_leader = true;
                    continue;
                }
            };
            let busy = st.in_flight.get(&leader).copied().unwrap_or(0);
            let entry = by_broker.entry(leader).or_default();
            if busy >= cfg.max_in_flight || entry.1 >= MAX_REQUEST_BYTES {
                continue;
            }
            let Some(part) = st.acc.parts.get_mut(&tp) else {
                continue;
            };
            if part.in_flight >= cfg.max_in_flight
                || (cfg.idempotence && !part.confirmed && part.in_flight > 0)
            {
                continue;
            }
            if let Some(t) = part.ready.front().and_then(|b| b.not_before) {
                if t > now {
                    soonest(t);
                    continue;
                }
            }
            let Some(mut batch) = part.ready.pop_front() else {
                continue;
            };
            if cfg.idempotence && batch.base_seq < 0 {
                batch.base_seq = part.next_seq;
                part.next_seq = part.next_seq.wrapping_add(batch.len() as i32) & i32::MAX;
            }
            part.in_flight += 1;
            entry.1 += batch.bytes;
            entry.0.push((tp, batch));
        }
        if !to_add.is_empty() {
            self.add_partitions_soon(st, to_add);
        }
        if missing_leader {
            self.refresh_soon(st);
            soonest(now + cfg.client.retry_backoff);
        }
        let mut work = Vec::new();
        for (broker, (batches, _)) in by_broker {
            if batches.is_empty() {
                continue;
            }
            *st.in_flight.entry(broker).or_default() += 1;
            st.total_in_flight += 1;
            let (next, mine) = oneshot::channel();
            let prev = st.turns.insert(broker, mine);
            work.push(Work {
                broker,
                batches,
                producer_id: st.producer_id,
                producer_epoch: st.producer_epoch,
                transactional: st.txn.is_some(),
                turn: Turn {
                    prev,
                    next: Some(next),
                },
            });
        }
        Plan::Work(work, next)
    }

    fn refresh_soon(self: &Arc<Self>, st: &mut State) {
        if st.refreshing {
            return;
        }
        st.refreshing = true;
        let topics: Vec<String> = st
            .acc
            .parts
            .iter()
            .filter(|(_, p)| !p.ready.is_empty() || p.in_flight > 0)
            .map(|(tp, _)| tp.0.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let shared = self.clone();
        tokio::spawn(async move {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            if let Err(e) = shared.client.refresh_metadata(&names).await {
                debug!(error = %e, "producer metadata refresh failed");
            }
            shared.lock().refreshing = false;
            shared.wake.notify_one();
        });
    }

    /// Adds `tps` to the transaction (unless a request for others is out: they are
    /// picked up after it), then wakes the sender.
    fn add_partitions_soon(self: &Arc<Self>, st: &mut State, tps: Vec<Tp>) {
        let Some(t) = st.txn.as_mut() else { return };
        // (Committing too: a commit flushes records whose partitions are not added yet.)
        if t.adding || !matches!(t.phase, Phase::Open | Phase::Committing) {
            return;
        }
        t.adding = true;
        let ids = (st.producer_id, st.producer_epoch);
        let shared = self.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + shared.cfg.max_block;
            let result = match &shared.coordinator {
                Some(c) => c.add_partitions(ids, &tps, deadline).await,
                None => Ok(()),
            };
            if let Some(t) = shared.lock().txn.as_mut() {
                t.adding = false;
                match result {
                    Ok(()) => t.added.extend(tps),
                    Err(e) => {
                        warn!(error = %e, "adding partitions to the transaction failed");
                        t.failed(&e);
                    }
                }
            }
            shared.txn_change.notify_waiters();
            shared.wake.notify_one();
        });
    }

    async fn bump(self: Arc<Self>, pid: i64, epoch: i16) {
        let deadline = Instant::now() + self.client.config().default_api_timeout;
        let result = init_producer_id(&self.client, pid, epoch, deadline).await;
        {
            let mut st = self.lock();
            match result {
                Ok((new_pid, new_epoch)) => {
                    info!(
                        producer_id = new_pid,
                        epoch = new_epoch,
                        "producer epoch bumped; sequences restart"
                    );
                    st.producer_id = new_pid;
                    st.producer_epoch = new_epoch;
                    st.need_bump = false;
                    // Batches never sent are renumbered under the new epoch. A batch sent
                    // without an answer may be in the log under the old epoch: sent again
                    // under the new one, the broker would write it a second time, and it
                    // would be acknowledged. It fails instead, with the error that left
                    // it in doubt.
                    for (tp, b) in restart_sequences(&mut st) {
                        let err = b.last_error.clone().unwrap_or_else(|| Error::Timeout {
                            what: format!("Produce request for {}[{}]", tp.0, tp.1),
                            after: self.cfg.client.request_timeout,
                        });
                        warn!(topic = %tp.0, partition = tp.1, records = b.len(), error = %err, "batch failed: it may have been written under the previous producer epoch, so it is not sent again under the new one");
                        self.fail(&mut st, b, err);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "InitProducerId failed; will retry");
                }
            }
            st.bumping = false;
        }
        if self.lock().need_bump {
            tokio::time::sleep(self.backoff(3)).await;
        }
        self.wake.notify_one();
    }

    /// Encodes, sends and settles one request's batches.
    async fn send(self: Arc<Self>, work: Work) {
        let Work {
            broker,
            batches,
            producer_id,
            producer_epoch,
            transactional,
            turn,
        } = work;
        let cfg = &self.cfg;
        let mut encoded = Vec::with_capacity(batches.len());
        let mut ok_batches = Vec::with_capacity(batches.len());
        let mut bad = Vec::new();
        for (tp, batch) in batches {
            match batch.encode(cfg.compression, producer_id, producer_epoch, transactional) {
                Ok(bytes) => {
                    encoded.push(bytes);
                    ok_batches.push((tp, batch));
                }
                Err(e) => bad.push((tp, batch, Error::from(e))),
            }
        }
        let outcome = if ok_batches.is_empty() {
            Outcome::Answered(Vec::new())
        } else {
            let span = tracing::debug_span!("produce_request", broker, batches = ok_batches.len());
            let tps: Vec<Tp> = ok_batches.iter().map(|(tp, _)| tp.clone()).collect();
            let request = self.request(broker, &tps, encoded, turn).instrument(span);
            self.within_deadlines(broker, request, &mut ok_batches)
                .await
        };

        let mut st = self.lock();
        let st = &mut *st;
        if let Some(n) = st.in_flight.get_mut(&broker) {
            *n = n.saturating_sub(1);
        }
        st.total_in_flight = st.total_in_flight.saturating_sub(1);
        let mut stale = false;
        for (tp, batch, err) in bad {
            if let Some(p) = st.acc.parts.get_mut(&tp) {
                p.in_flight -= 1;
                p.held = true;
                if batch.base_seq >= 0 {
                    p.resume_seq = Some(
                        p.resume_seq
                            .map_or(batch.base_seq, |s| s.min(batch.base_seq)),
                    );
                }
            }
            error!(topic = %tp.0, partition = tp.1, error = %err, "batch failed to encode");
            self.fail(st, batch, err);
        }
        match outcome {
            Outcome::Answered(results) => {
                for ((tp, batch), result) in ok_batches.into_iter().zip(results) {
                    stale |= self.settle(st, tp, batch, result, false);
                }
            }
            Outcome::Unsent(e) => {
                // The request as a whole failed: each batch is retried or failed alike.
                for (tp, batch) in ok_batches {
                    stale |= self.settle(st, tp, batch, Err(e.clone()), false);
                }
            }
            Outcome::Lost(e) => {
                // The same, and each batch may have been written.
                for (tp, batch) in ok_batches {
                    stale |= self.settle(st, tp, batch, Err(e.clone()), true);
                }
            }
        }
        if stale {
            self.refresh_soon(st);
        }
        self.wake.notify_one();
    }

    /// Waits for `request`, the request of `batches`, and meanwhile fails the records of
    /// each batch when its delivery timeout passes. The request itself goes on while it
    /// has a batch whose records have not failed: its answer settles every batch (an
    /// expired one that was written after all is then known to be, and its partition's
    /// sequence is known). Once all have failed it is abandoned (dropped, so its answer,
    /// should one come, is dropped too) and the request counts as lost.
    async fn within_deadlines(
        &self,
        broker: i32,
        request: impl Future<Output = Outcome>,
        batches: &mut [(Tp, Batch)],
    ) -> Outcome {
        let delivery = self.cfg.delivery_timeout;
        tokio::pin!(request);
        loop {
            let next = batches
                .iter()
                .filter(|(_, b)| !b.expired)
                .map(|(_, b)| b.created + delivery)
                .min();
            let Some(next) = next else {
                debug!(broker, "every record of a Produce request failed at its delivery timeout: request abandoned");
                return Outcome::Lost(Error::Timeout {
                    what: format!("Produce request to broker {broker} (abandoned at the delivery timeout of its records)"),
                    after: delivery,
                });
            };
            tokio::select! {
                biased;
                outcome = &mut request => return outcome,
                () = tokio::time::sleep_until(next.into()) => {
                    let now = Instant::now();
                    let mut st = self.lock();
                    for (tp, b) in batches.iter_mut() {
                        if !b.expired && b.created + delivery <= now {
                            self.expire_in_flight(&mut st, tp, b);
                        }
                    }
                }
            }
        }
    }

    /// Sends the request of the batches of `tps`, whose record batches are `encoded`;
    /// per batch, the broker's answer.
    async fn request(
        &self,
        broker: i32,
        tps: &[Tp],
        encoded: Vec<Bytes>,
        mut turn: Turn,
    ) -> Outcome {
        let cfg = &self.cfg;
        let cluster = self.client.cluster();
        let mut topics: Vec<TopicProduceData> = Vec::new();
        for (tp, bytes) in tps.iter().zip(encoded) {
            let data = PartitionProduceData::default()
                .with_index(tp.1)
                .with_records(Some(bytes));
            match topics.iter_mut().find(|t| t.name.0.as_str() == &*tp.0) {
                Some(t) => t.partition_data.push(data),
                None => topics.push(
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(tp.0.to_string())))
                        .with_topic_id(cluster.topic(&tp.0).map(|t| t.id).unwrap_or_default())
                        .with_partition_data(vec![data]),
                ),
            }
        }
        // As the Java client: the broker gets request.timeout.ms to gather its acks
        // (`timeout_ms`), and the client waits request.timeout.ms for the answer, once.
        let timeout = cfg.client.request_timeout;
        let req = ProduceRequest::default()
            .with_transactional_id(
                cfg.transactional_id
                    .as_deref()
                    .map(|id| TransactionalId(StrBytes::from_string(id.to_owned()))),
            )
            .with_acks(cfg.acks.wire())
            .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topic_data(topics);
        let conn = match self.client.conn_to_node(broker).await {
            Ok(conn) => conn,
            Err(e) => return Outcome::Unsent(e),
        };
        let version = match conn.version_for::<ProduceRequest>() {
            // A transactional producer speaks the first transaction protocol (txn.rs).
            Ok(v) if cfg.transactional_id.is_some() => v.min(MAX_PRODUCE_VERSION),
            Ok(v) => v,
            Err(e) => return Outcome::Unsent(e),
        };
        turn.wait().await;
        if cfg.acks == Acks::None {
            let sent = conn.send_no_response(&req, version).await;
            drop(turn);
            return match sent {
                Ok(()) => Outcome::Answered(tps.iter().map(|_| Ok((-1, None))).collect()),
                Err(e) => Outcome::Lost(e),
            };
        }
        let resp = match conn
            .request_with(&req, version, timeout, move || drop(turn))
            .await
        {
            Ok(resp) => resp,
            // Timed out, or the connection was lost (or found broken as the request was
            // queued, which is counted as lost too: the difference is not worth a guess).
            Err(e) => {
                if e.is_timeout() {
                    // A broker that did not answer one request may not answer the next
                    // on the same connection either (it answers a connection's requests
                    // in order): the retry goes out on a fresh one, as the Java client's.
                    conn.close(&format!("produce request timed out: {e}"));
                }
                return Outcome::Lost(e);
            }
        };
        let mut out = Vec::with_capacity(tps.len());
        for tp in tps {
            let topic_id = cluster.topic(&tp.0).map(|t| t.id);
            let found = resp
                .responses
                .iter()
                .filter(|t| {
                    t.name.0.as_str() == &*tp.0
                        || (t.name.0.is_empty() && Some(t.topic_id) == topic_id)
                })
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == tp.1);
            out.push(match found {
                None => Err(Error::IncompleteResponse(format!(
                    "produce response lacks {}[{}]",
                    tp.0, tp.1
                ))),
                Some(p) => match Error::from_code(p.error_code, p.error_message.as_deref(), || {
                    format!("produce to {}[{}]", tp.0, tp.1)
                }) {
                    Some(e) => Err(e),
                    None => Ok((
                        p.base_offset,
                        (p.log_append_time_ms >= 0).then_some(p.log_append_time_ms),
                    )),
                },
            });
        }
        Outcome::Answered(out)
    }

    /// Settles one batch's outcome: delivered, retried, split, or failed. `lost`: the
    /// request got no answer and may have been written. Returns whether metadata should
    /// be refreshed.
    ///
    /// A batch whose records already failed in flight at their delivery timeout
    /// ([`Batch::expired`]) is not retried: its outcome only tells the partition's
    /// sequence state (written, or not, or unknown, which calls for an epoch bump).
    fn settle(
        &self,
        st: &mut State,
        tp: Tp,
        mut batch: Batch,
        result: Result<(i64, Option<i64>)>,
        lost: bool,
    ) -> bool {
        let cfg = &self.cfg;
        let idempotent = cfg.idempotence;
        let Some(part) = st.acc.parts.get_mut(&tp) else {
            return false;
        };
        part.in_flight -= 1;
        let err = match result {
            Ok((base, append)) => {
                part.confirmed |= batch.base_seq >= 0;
                if batch.expired {
                    warn!(topic = %tp.0, partition = tp.1, records = batch.len(), offset = base, "a batch whose records failed at their delivery timeout was written after all");
                }
                self.succeed(st, &tp, batch, base, append);
                return false;
            }
            Err(e) => e,
        };
        batch.in_doubt |= lost;
        telemetry::error("send", cfg.client.client_id(), &err);
        let code = err.kafka_code();
        if code == Some(KafkaCode::DuplicateSequenceNumber) {
            debug!(topic = %tp.0, partition = tp.1, "batch was already written (duplicate sequence)");
            part.confirmed = true;
            self.succeed(st, &tp, batch, -1, None);
            return false;
        }
        let too_large = matches!(
            code,
            Some(KafkaCode::MessageTooLarge | KafkaCode::RecordListTooLarge)
        );
        if too_large && batch.len() > 1 && !batch.expired {
            debug!(topic = %tp.0, partition = tp.1, records = batch.len(), "batch too large for the broker; splitting");
            let seq = batch.base_seq;
            let (mut a, b) = st.acc.split(batch);
            let Some(part) = st.acc.parts.get_mut(&tp) else {
                return false;
            };
            a.base_seq = seq; // keeps its place in the sequence order
            part.held = true;
            if seq >= 0 {
                part.resume_seq = Some(part.resume_seq.map_or(seq, |s| s.min(seq)));
            }
            let mut b = b;
            b.base_seq = if seq >= 0 { seq.saturating_add(1) } else { -1 };
            requeue(&mut part.ready, b);
            requeue(&mut part.ready, a);
            return false;
        }
        let stale = err.is_stale_metadata();
        let retriable = (err.is_retriable()
            || (idempotent && code == Some(KafkaCode::OutOfOrderSequenceNumber)))
            && !too_large;
        let now = Instant::now();
        let in_time = batch.created + cfg.delivery_timeout > now;
        if retriable && in_time && !batch.expired && batch.attempts < cfg.client.retries {
            batch.attempts += 1;
            telemetry::retry("send", cfg.client.client_id());
            let wait = self.backoff(batch.attempts);
            debug!(topic = %tp.0, partition = tp.1, seq = batch.base_seq, records = batch.len(), attempt = batch.attempts, error = %err, "retrying batch");
            batch.not_before = Some(now + wait);
            batch.last_error = Some(err);
            part.held = true;
            requeue(&mut part.ready, batch);
            return stale;
        }
        // Failed for good.
        part.held = true;
        if batch.base_seq >= 0 {
            if retriable
                || matches!(
                    code,
                    Some(
                        KafkaCode::UnknownProducerId
                            | KafkaCode::InvalidProducerEpoch
                            | KafkaCode::OutOfOrderSequenceNumber
                    )
                )
            {
                // Unknown whether it was written, or the producer state is broken.
                st.need_bump = idempotent;
            } else {
                part.resume_seq = Some(
                    part.resume_seq
                        .map_or(batch.base_seq, |s| s.min(batch.base_seq)),
                );
            }
        }
        if batch.expired {
            debug!(topic = %tp.0, partition = tp.1, records = batch.len(), error = %err, "request of an expired batch ended");
        } else {
            warn!(topic = %tp.0, partition = tp.1, records = batch.len(), error = %err, "batch failed");
        }
        self.fail(st, batch, err);
        stale
    }
}

/// Starts every partition's sequence again from 0, after the producer's epoch changed.
/// Batches never sent are renumbered; those sent without an answer (which may be in the
/// log under the old epoch) are returned, to be failed.
pub(super) fn restart_sequences(st: &mut State) -> Vec<(Tp, Batch)> {
    let mut in_doubt = Vec::new();
    for (tp, part) in st.acc.parts.iter_mut() {
        part.next_seq = 0;
        part.confirmed = false;
        part.held = false;
        part.resume_seq = None;
        let mut renumbered = VecDeque::with_capacity(part.ready.len());
        for mut b in part.ready.drain(..) {
            if b.in_doubt {
                in_doubt.push((tp.clone(), b));
            } else {
                b.base_seq = -1;
                renumbered.push_back(b);
            }
        }
        part.ready = renumbered;
    }
    in_doubt
}

async fn run(shared: Arc<Shared>) {
    loop {
        let woken = shared.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (work, next) = match shared.plan(Instant::now()) {
            Plan::Stop => {
                shared.idle.notify_waiters();
                debug!("producer sender stopped");
                return;
            }
            Plan::Work(w, n) => (w, n),
        };
        for w in work {
            tokio::spawn(shared.clone().send(w));
        }
        match next {
            Some(t) => {
                let _ = tokio::time::timeout_at(t.into(), woken).await;
            }
            None => woken.await,
        }
    }
}

/// InitProducerId for an idempotent producer; with a current id and epoch, asks for
/// the epoch to be bumped (KIP-360). Retried until `deadline`.
async fn init_producer_id(
    client: &Client,
    pid: i64,
    epoch: i16,
    deadline: Instant,
) -> Result<(i64, i16)> {
    client
        .retry("init_producer_id", deadline, &[], || async {
            let conn = client.conn_to_any().await?;
            let version = conn.version_for::<InitProducerIdRequest>()?;
            let mut req = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(i32::MAX);
            if version >= 3 {
                req = req.with_producer_id(pid.into()).with_producer_epoch(epoch);
            }
            let resp = conn
                .request_at(&req, version, client.config().request_timeout)
                .await?;
            if let Some(e) = Error::from_code(resp.error_code, None, || "InitProducerId".into()) {
                return Err(e);
            }
            Ok((resp.producer_id.0, resp.producer_epoch))
        })
        .await
}
