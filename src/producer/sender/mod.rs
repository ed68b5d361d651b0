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
//!
//! # Files
//! - `mod.rs`: the shared state under the mutex, starting the sender, `enqueue`, `flush`,
//!   closing, and the sender loop;
//! - `plan.rs`: what to send next, under the lock (closing lingered batches, expiring
//!   queued ones, picking per broker, in-flight limits, the write turns);
//! - `request.rs`: encoding a request's batches, the Produce request and its answer;
//! - `deadlines.rs`: failing records in flight at their delivery timeout, and the error
//!   of expired records;
//! - `settle.rs`: a batch's outcome: delivered, retried, split or failed, and the
//!   sequence-number consequences;
//! - `epoch.rs`: the idempotent producer's id and epoch (InitProducerId, the bump,
//!   restarting sequences).
//!
//! [`Batch::in_doubt`]: super::accumulator::Batch::in_doubt

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};
use tracing::debug;

use super::accumulator::{admit, choose, now_ms, Accumulator};
use super::txn::{self, Txn};
use super::txn_coordinator::Coordinator;
use super::{Delivery, Partitioner, ProducerConfig, ProducerRecord};
use crate::backoff::Backoff;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::telemetry;

mod deadlines;
mod epoch;
mod plan;
mod request;
mod settle;

use epoch::init_producer_id;
pub(super) use epoch::restart_sequences;
use plan::Plan;

pub(super) struct State {
    pub(super) acc: Accumulator,
    /// Per broker, the write turn of the request planned last (see [`Turn`](plan::Turn)).
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

    /// The wait before a batch's retry after `attempts` tries (the first retry waits
    /// twice `retry.backoff.ms`).
    fn backoff(&self, attempts: u32) -> Duration {
        Backoff::of(&self.cfg.client).delay(attempts.saturating_add(1))
    }
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
