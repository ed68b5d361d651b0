//! Planning, under the lock: closing lingered batches, failing queued ones past their
//! delivery timeout, holding and resuming partitions, the epoch bump's wait for quiet, and
//! picking per broker the batches of the next Produce requests within the in-flight
//! limits, each request with its write turn on its broker's connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::deadlines::delivery_timeout;
use super::{Shared, State};
use crate::producer::accumulator::{Batch, Tp};
use crate::producer::txn::{Phase, Txn};

/// A Produce request stops taking partitions past this many bytes.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// The resolution of Tokio's timer, less a nanosecond: a batch due within it is closed
/// now rather than a tick later.
const TIMER_TICK: Duration = Duration::from_nanos(999_999);

pub(super) enum Plan {
    Work(Vec<Work>, Option<Instant>),
    Stop,
}

/// One Produce request's worth of batches for one broker.
pub(super) struct Work {
    pub(super) broker: i32,
    pub(super) batches: Vec<(Tp, Batch)>,
    pub(super) producer_id: i64,
    pub(super) producer_epoch: i16,
    /// Its batches belong to a transaction.
    pub(super) transactional: bool,
    pub(super) turn: Turn,
}

/// A request's turn to be written to its broker's connection. Requests are planned in
/// sequence-number order but encoded (compressed) concurrently; a small batch could
/// otherwise overtake a big one planned before it, and the broker would reject the later
/// sequence with OUT_OF_ORDER_SEQUENCE_NUMBER. Each request waits for the one planned
/// before it to be written (or to give up) before writing its own.
pub(super) struct Turn {
    prev: Option<oneshot::Receiver<()>>,
    next: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// Waits until every request planned before this one (to the same broker) has been
    /// written or abandoned.
    pub(super) async fn wait(&mut self) {
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

impl Shared {
    pub(super) fn plan(self: &Arc<Self>, now: Instant) -> Plan {
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

    pub(super) fn refresh_soon(self: &Arc<Self>, st: &mut State) {
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
}
