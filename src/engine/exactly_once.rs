//! Exactly-once processing: the records handlers produce and the offsets of the records
//! they handled are committed in one transaction, so that output is never duplicated
//! and never lost, whatever crashes (see [`EngineBuilder::exactly_once`]).
//!
//! - A gate (a read-write lock) orders handling and commits: a worker holds it shared
//!   while it handles a unit (a record or a bulk batch) and reports it done; a commit
//!   holds it alone, so the offsets it commits are exactly those of the records whose
//!   output is in the transaction.
//! - A commit: AddOffsetsToTxn and TxnOffsetCommit with the consumer's group metadata
//!   (refused once the member lost its partitions), then EndTxn; then the next
//!   transaction begins.
//! - A failure (a handler's, a commit's) *rewinds*: the transaction is aborted (its
//!   output never becomes visible to read_committed consumers), every partition goes
//!   back to its last committed offset, and its records are handled again. Units
//!   dispatched before the rewind carry an older generation and are dropped. A unit's
//!   failed attempts are counted across rewinds; past `max_retries` it gets the engine's
//!   usual treatment (dead-letter topic, through the same transaction; skip; or stop).
//!
//! [`EngineBuilder::exactly_once`]: super::EngineBuilder::exactly_once

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, RwLock, RwLockReadGuard};
use tracing::{debug, info, warn};

use super::Shared;

use super::EngineError;
use crate::consumer::TopicPartition;
use crate::error::Result;
use crate::producer::Producer;

/// A rewind asked for: why, and how long to wait before handling again.
pub(super) struct RewindRequest {
    pub(super) error: EngineError,
    pub(super) backoff: Duration,
}

/// A unit, across rewinds: its partition, first offset, and whether it is a bulk batch
/// (a bulk batch that failed for good is handled again record by record, and its first
/// record then counts on its own).
pub(super) type UnitKey = (TopicPartition, i64, bool);

/// The exactly-once state of an engine.
pub(super) struct ExactlyOnce {
    /// The transactional producer handlers write through.
    pub(super) producer: Producer,
    gate: RwLock<()>,
    /// Bumped at each rewind; units dispatched before it are dropped.
    generation: AtomicU64,
    rewind: Mutex<Option<RewindRequest>>,
    rewinding: AtomicBool,
    pub(super) rewind_wake: Notify,
    /// Failed attempts per unit (partition, first offset), across rewinds, with the
    /// last error.
    attempts: Mutex<HashMap<UnitKey, (u32, EngineError)>>,
}

impl ExactlyOnce {
    pub(super) fn new(producer: Producer) -> Self {
        ExactlyOnce {
            producer,
            gate: RwLock::new(()),
            generation: AtomicU64::new(0),
            rewind: Mutex::new(None),
            rewinding: AtomicBool::new(false),
            rewind_wake: Notify::new(),
            attempts: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The gate, shared: held while a unit is handled and reported done. `None` when the
    /// unit (of generation `generation`) is stale or a rewind is pending: drop it.
    pub(super) async fn enter(&self, generation: u64) -> Option<RwLockReadGuard<'_, ()>> {
        let guard = self.gate.read().await;
        (generation == self.generation() && !self.rewinding.load(Ordering::Acquire))
            .then_some(guard)
    }

    /// Whether handling should stop (a rewind is pending).
    pub(super) fn rewind_pending(&self) -> bool {
        self.rewinding.load(Ordering::Acquire)
    }

    /// Asks the poll loop to rewind (the first request's error and the longest backoff
    /// win).
    pub(super) fn request_rewind(&self, error: EngineError, backoff: Duration) {
        let mut r = self.rewind.lock().unwrap_or_else(|e| e.into_inner());
        match r.as_mut() {
            Some(req) => req.backoff = req.backoff.max(backoff),
            None => *r = Some(RewindRequest { error, backoff }),
        }
        self.rewinding.store(true, Ordering::Release);
        drop(r);
        self.rewind_wake.notify_one();
    }

    pub(super) fn take_rewind(&self) -> Option<RewindRequest> {
        self.rewind.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The failed attempts of a unit so far, with the last error.
    pub(super) fn attempts(&self, key: &UnitKey) -> Option<(u32, EngineError)> {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Counts a failed attempt of a unit; returns how many it has had.
    pub(super) fn note_failure(&self, key: UnitKey, error: &EngineError) -> u32 {
        let mut a = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let entry = a.entry(key).or_insert_with(|| (0, error.clone()));
        entry.0 += 1;
        entry.1 = error.clone();
        entry.0
    }

    /// Forgets the attempts of units of `tp` before `offset` (committed past them).
    pub(super) fn forget_before(&self, tp: &TopicPartition, offset: i64) {
        let mut a = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        if !a.is_empty() {
            a.retain(|(t, first, _), _| t != tp || *first >= offset);
        }
    }

    /// Commits the transaction with `offsets` (of `group`), then begins the next one.
    /// Holds the gate alone: no unit is being handled meanwhile. A failure asks for a
    /// rewind (the transaction is aborted there).
    pub(super) async fn commit(
        &self,
        offsets: &[(TopicPartition, i64)],
        group: &crate::offsets::ConsumerGroupMetadata,
    ) -> Result<()> {
        let result = async {
            self.producer
                .send_offsets_to_transaction(offsets, group)
                .await?;
            self.producer.commit_transaction().await?;
            self.producer.begin_transaction()
        }
        .await;
        if let Err(e) = &result {
            warn!(error = %e, "committing the transaction failed: aborting it and handling its records again");
            self.request_rewind(e.clone().into(), Duration::ZERO);
        }
        result
    }

    /// The gate, alone: waits until no unit is being handled.
    pub(super) async fn exclusive(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }

    /// The first half of a rewind, under the exclusive gate: aborts the transaction and
    /// makes every unit dispatched so far stale. The caller then moves the partitions
    /// back, waits the backoff and calls [`ExactlyOnce::resume`].
    pub(super) async fn abort(&self, why: &EngineError) -> Result<()> {
        info!(error = %why, "rewinding: the transaction is aborted and its records handled again");
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.producer.abort_transaction().await
    }

    /// Ends a rewind: the next transaction begins and handling goes on. A rewind asked
    /// for meanwhile came from a unit the rewind made stale: dropped.
    pub(super) fn resume(&self) -> Result<()> {
        self.producer.begin_transaction()?;
        let mut r = self.rewind.lock().unwrap_or_else(|e| e.into_inner());
        *r = None;
        self.rewinding.store(false, Ordering::Release);
        Ok(())
    }
}

impl Shared {
    /// Exactly-once: aborts the transaction and moves every partition back to its last
    /// commit, so that its records are handled again (in the poll loop, so that no
    /// records taken before the move are handed out after it). A failed abort stops the
    /// engine.
    pub(super) async fn rewind(&self) {
        let Some(eos) = &self.eos else { return };
        let Some(request) = eos.take_rewind() else {
            return;
        };
        let _turn = self.commit_lock.lock().await;
        let _gate = eos.exclusive().await;
        if let Err(e) = eos.abort(&request.error).await {
            warn!(error = %e, "aborting the transaction failed: stopping the engine");
            self.fail(e.into());
            return;
        }
        {
            let mut parts = self.lock();
            let mut resume = Vec::new();
            for (tp, p) in parts.iter_mut() {
                if let Some(back) = p.committed.or(p.start) {
                    if let Err(e) = self.consumer.seek(tp, back) {
                        debug!(%tp, error = %e, "rewind: partition no longer assigned");
                    }
                }
                p.done = p.committed;
                p.pending = 0;
                p.forming.clear();
                p.forming_since = None;
                if p.paused {
                    p.paused = false;
                    resume.push(tp.clone());
                }
            }
            if !resume.is_empty() {
                self.consumer.resume(&resume);
            }
        }
        tokio::time::sleep(request.backoff).await;
        if let Err(e) = eos.resume() {
            self.fail(e.into());
        }
    }
}
