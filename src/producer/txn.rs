//! Transactions (KIP-98, with KIP-447's group metadata): the transaction coordinator's
//! requests, and the state of the producer's current transaction.
//!
//! A producer with `transactional.id` gets its producer id from the transaction
//! coordinator of that id (InitProducerId with the id), which fences any older producer
//! with the same id and aborts what it left open. Then, per transaction:
//! - [`Producer::begin_transaction`](super::Producer::begin_transaction) only changes
//!   the local state;
//! - before the first batch of a partition goes out, the sender adds the partition to
//!   the transaction (AddPartitionsToTxn; [`Txn::added`]); batches of partitions not yet
//!   added wait;
//! - [`send_offsets_to_transaction`](super::Producer::send_offsets_to_transaction) adds
//!   the group's offsets partition (AddOffsetsToTxn) and writes the offsets to the group
//!   coordinator (TxnOffsetCommit), where they take effect only at the commit;
//! - commit flushes every record, then ends the transaction (EndTxn); abort fails what
//!   is not sent yet, waits for what is in flight, and ends it too.
//!
//! The protocol spoken is the first transaction protocol (transaction version 1: Produce
//! up to v11, EndTxn up to v4, TxnOffsetCommit up to v4), which every broker from 2.5
//! to 4.x serves; version 2 (KIP-890 part 2) is not used.
//!
//! Errors sort three ways, as in the Java client: coordinator moves, loads and
//! CONCURRENT_TRANSACTIONS are retried (until the call's deadline); a failed record or
//! a refused request makes the transaction *abortable* (commit fails; abort works and
//! the producer goes on); fencing (PRODUCER_FENCED, an epoch the coordinator no longer
//! knows, an authorization failure for the id) is *fatal*: every later call fails with
//! [`Error::Fenced`].

use std::collections::HashSet;
use std::time::Instant;

use tracing::{info, warn};

use super::accumulator::Tp;
use super::sender::{restart_sequences, Shared};
use crate::error::{Error, KafkaCode, Result};
use crate::offsets::{ConsumerGroupMetadata, TopicPartition};

/// Where the producer's current transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No transaction open: `begin_transaction` may be called.
    Ready,
    /// Open: records may be sent, offsets added.
    Open,
    /// `commit_transaction` is under way (or timed out and may be called again).
    Committing,
    /// `abort_transaction` is under way (or failed and may be called again).
    Aborting,
}

/// The state of a transactional producer's transaction, kept under the sender's lock.
#[derive(Debug)]
pub(crate) struct Txn {
    pub(crate) id: String,
    pub(crate) phase: Phase,
    /// Partitions added to the current transaction.
    pub(crate) added: HashSet<Tp>,
    /// An AddPartitionsToTxn request is out.
    pub(crate) adding: bool,
    /// Offsets were added (AddOffsetsToTxn): the transaction must be ended even without
    /// records.
    pub(crate) offsets_added: bool,
    /// The first error that keeps the current transaction from committing.
    pub(crate) abortable: Option<Error>,
    /// Before the next transaction, the producer's epoch must be bumped: a record's
    /// sequence state is unknown, or the coordinator ended the epoch (the transaction
    /// passed `transaction.timeout.ms`).
    pub(crate) bump_needed: bool,
    /// The producer was fenced; every call fails with this.
    pub(crate) fatal: Option<Error>,
}

impl Txn {
    pub(crate) fn new(id: String) -> Self {
        Txn {
            id,
            phase: Phase::Ready,
            added: HashSet::new(),
            adding: false,
            offsets_added: false,
            abortable: None,
            bump_needed: false,
            fatal: None,
        }
    }

    /// Whether anything was written to the transaction, so that it must be ended.
    pub(crate) fn touched(&self) -> bool {
        !self.added.is_empty() || self.offsets_added
    }

    /// Notes an error of the current transaction: fatal ones end the producer, the
    /// others make the transaction abortable (the first one is kept).
    pub(crate) fn failed(&mut self, err: &Error) {
        if is_fatal(err) {
            if self.fatal.is_none() {
                self.fatal = Some(fenced(&self.id, err));
            }
        } else if self.abortable.is_none() && self.phase != Phase::Ready {
            self.abortable = Some(err.clone());
        }
        if needs_bump(err) {
            self.bump_needed = true;
        }
    }

    /// The producer's fatal error, if it was fenced.
    pub(crate) fn check_usable(&self) -> Result<()> {
        match &self.fatal {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Whether a record may be sent now: only in an open transaction that has not
    /// failed.
    pub(crate) fn check_send(&self) -> Result<()> {
        self.check_usable()?;
        match self.phase {
            Phase::Open => match &self.abortable {
                None => Ok(()),
                Some(e) => Err(Error::Transaction {
                    message: "the transaction failed and can only be aborted".into(),
                    cause: Some(Box::new(e.clone())),
                }),
            },
            Phase::Ready => Err(state_error(
                "a transactional producer sends only within a transaction: call begin_transaction first",
            )),
            Phase::Committing => Err(state_error("the transaction is being committed")),
            Phase::Aborting => Err(state_error("the transaction is being aborted")),
        }
    }

    /// The error that records not sent yet fail with, when they can no longer be sent
    /// in this transaction: the producer was fenced, the transaction failed, or it is
    /// being aborted.
    pub(crate) fn unsendable(&self) -> Option<Error> {
        if let Some(e) = &self.fatal {
            return Some(e.clone());
        }
        if let Some(e) = &self.abortable {
            return Some(Error::Transaction {
                message: "the transaction failed before the record was sent".into(),
                cause: Some(Box::new(e.clone())),
            });
        }
        (self.phase == Phase::Aborting)
            .then(|| state_error("the transaction was aborted before the record was sent"))
    }

    /// The transaction ended (committed or aborted): ready for the next.
    fn reset(&mut self) {
        self.phase = Phase::Ready;
        self.added.clear();
        self.offsets_added = false;
        self.abortable = None;
    }
}

/// Errors after which the producer cannot go on (another producer took its id).
pub(crate) fn is_fatal(err: &Error) -> bool {
    matches!(err, Error::Fenced { .. })
        || matches!(
            err.kafka_code(),
            Some(
                KafkaCode::ProducerFenced
                    | KafkaCode::TransactionalIdAuthorizationFailed
                    | KafkaCode::InvalidProducerIdMapping
                    | KafkaCode::TransactionalIdNotFound
                    | KafkaCode::ClusterAuthorizationFailed
            )
        )
}

/// Errors after which the producer's epoch must be bumped before it goes on.
fn needs_bump(err: &Error) -> bool {
    matches!(
        err.kafka_code(),
        Some(
            KafkaCode::InvalidProducerEpoch
                | KafkaCode::UnknownProducerId
                | KafkaCode::OutOfOrderSequenceNumber
        )
    ) || err.is_retriable()
}

/// The fatal error for `cause`.
pub(crate) fn fenced(id: &str, cause: &Error) -> Error {
    if let Error::Fenced { .. } = cause {
        return cause.clone();
    }
    let reason = match cause.kafka_code() {
        Some(KafkaCode::ProducerFenced | KafkaCode::InvalidProducerEpoch) => {
            format!("a newer producer with the same transactional.id took over ({cause})")
        }
        _ => cause.to_string(),
    };
    Error::Fenced {
        transactional_id: id.to_owned(),
        reason,
    }
}

/// A transaction-state error: the call does not fit where the transaction is.
pub(crate) fn state_error(message: impl Into<String>) -> Error {
    Error::Transaction {
        message: message.into(),
        cause: None,
    }
}

/// The transaction calls of [`Producer`](super::Producer), on the sender's state.
impl Shared {
    /// Runs `f` on the transaction state, under the lock; a state error for a producer
    /// without `transactional.id`.
    fn with_txn<T>(&self, f: impl FnOnce(&mut Txn, (i64, i16)) -> Result<T>) -> Result<T> {
        let mut st = self.lock();
        let ids = (st.producer_id, st.producer_epoch);
        match st.txn.as_mut() {
            Some(t) => f(t, ids),
            None => Err(state_error(
                "transactions need a transactional.id in the producer's configuration",
            )),
        }
    }

    /// Notes `err` against the transaction and returns it (the fatal error, when it
    /// fenced the producer).
    fn txn_failed(&self, err: Error) -> Error {
        let mut st = self.lock();
        match st.txn.as_mut() {
            Some(t) => {
                t.failed(&err);
                t.fatal.clone().unwrap_or(err)
            }
            None => err,
        }
    }

    fn coordinator_deadline(&self) -> Instant {
        Instant::now() + self.cfg.max_block
    }

    pub(crate) fn begin_transaction(&self) -> Result<()> {
        self.with_txn(|t, _| {
            t.check_usable()?;
            if t.phase != Phase::Ready {
                return Err(state_error(
                    "a transaction is already open: commit or abort it first",
                ));
            }
            t.reset();
            t.phase = Phase::Open;
            Ok(())
        })
    }

    /// Waits until no AddPartitionsToTxn request is out.
    async fn adding_done(&self) {
        loop {
            let changed = self.txn_change.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.lock().txn.as_ref().is_some_and(|t| t.adding) {
                return;
            }
            changed.await;
        }
    }

    pub(crate) async fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, i64)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let ids = self.with_txn(|t, ids| {
            t.check_send()?;
            Ok(ids)
        })?;
        let Some(c) = &self.coordinator else {
            return Ok(());
        };
        let deadline = self.coordinator_deadline();
        if let Err(e) = c.add_offsets(ids, &group.group_id, deadline).await {
            return Err(self.txn_failed(e));
        }
        self.with_txn(|t, _| {
            t.offsets_added = true;
            Ok(())
        })?;
        if offsets.is_empty() {
            return Ok(());
        }
        match c.commit_offsets(ids, group, offsets, deadline).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.txn_failed(e)),
        }
    }

    pub(crate) async fn commit_transaction(&self) -> Result<()> {
        self.with_txn(|t, _| {
            t.check_usable()?;
            match t.phase {
                Phase::Open | Phase::Committing => {}
                Phase::Ready => return Err(state_error("no transaction to commit")),
                Phase::Aborting => {
                    return Err(state_error(
                        "the transaction is being aborted: call abort_transaction",
                    ))
                }
            }
            if let Some(e) = &t.abortable {
                return Err(Error::Transaction {
                    message: "the transaction cannot commit; abort it".into(),
                    cause: Some(Box::new(e.clone())),
                });
            }
            t.phase = Phase::Committing;
            Ok(())
        })?;
        self.wake.notify_one();
        // Every record of the transaction acknowledged (or failed), every partition added.
        self.flush().await;
        self.adding_done().await;
        let (ids, touched) = self.with_txn(|t, ids| {
            t.check_usable()?;
            if let Some(e) = &t.abortable {
                return Err(Error::Transaction {
                    message: "a record of the transaction failed; abort it".into(),
                    cause: Some(Box::new(e.clone())),
                });
            }
            Ok((ids, t.touched()))
        })?;
        if touched {
            let Some(c) = &self.coordinator else {
                return Ok(());
            };
            if let Err(e) = c.end(ids, true, self.coordinator_deadline()).await {
                // Fenced: fatal. A timeout: commit may be called again. Refused (the
                // coordinator aborted it at transaction.timeout.ms): abort.
                let e = self.txn_failed(e);
                if !e.is_timeout() && !matches!(e, Error::Fenced { .. }) {
                    return Err(Error::Transaction {
                        message: "the coordinator did not commit the transaction; abort it".into(),
                        cause: Some(Box::new(e)),
                    });
                }
                return Err(e);
            }
        }
        self.with_txn(|t, _| {
            t.reset();
            Ok(())
        })
    }

    pub(crate) async fn abort_transaction(&self) -> Result<()> {
        self.with_txn(|t, _| {
            t.check_usable()?;
            if t.phase == Phase::Ready {
                return Err(state_error("no transaction to abort"));
            }
            t.phase = Phase::Aborting;
            Ok(())
        })?;
        // The sender fails what is not sent yet; what is in flight settles.
        self.wake.notify_one();
        self.flush().await;
        self.adding_done().await;
        let (ids, touched, bump) = self.with_txn(|t, ids| Ok((ids, t.touched(), t.bump_needed)))?;
        let Some(c) = &self.coordinator else {
            return Ok(());
        };
        let deadline = self.coordinator_deadline();
        let mut bump = bump;
        // EndTxn first, always, as the Java client does: InitProducerId while the
        // transaction is still open on the coordinator would have it bump the epoch and
        // answer CONCURRENT_TRANSACTIONS, and the retry with the old epoch would be fenced.
        if touched {
            if let Err(e) = c.end(ids, false, deadline).await {
                if is_fatal(&e) || e.is_timeout() {
                    return Err(self.txn_failed(e));
                }
                // The coordinator refused this epoch: a bump tells whether another
                // producer took the id (then PRODUCER_FENCED) or not.
                warn!(error = %e, "ending the aborted transaction failed; bumping the producer epoch");
                bump = true;
            }
        }
        if bump {
            // Then InitProducerId with the current id and epoch (KIP-360/588): a new
            // epoch, so that every partition's sequence starts again from 0.
            match c.init_producer_id(Some(ids), deadline).await {
                Ok((pid, epoch)) => {
                    info!(
                        producer_id = pid,
                        epoch, "producer epoch bumped at the abort"
                    );
                    let mut st = self.lock();
                    st.producer_id = pid;
                    st.producer_epoch = epoch;
                    for (_, b) in restart_sequences(&mut st) {
                        // (None: nothing is buffered during an abort.)
                        let err = state_error("the transaction was aborted");
                        self.fail(&mut st, b, err);
                    }
                    if let Some(t) = st.txn.as_mut() {
                        t.bump_needed = false;
                    }
                }
                Err(e) => {
                    let e = match e.kafka_code() {
                        Some(KafkaCode::InvalidProducerEpoch | KafkaCode::ProducerFenced) => {
                            fenced(&c.id, &e)
                        }
                        _ => e,
                    };
                    return Err(self.txn_failed(e));
                }
            }
        }
        self.with_txn(|t, _| {
            t.reset();
            Ok(())
        })
    }

    /// The transaction left open at close, if any, is aborted.
    pub(crate) async fn abort_open_transaction(&self) {
        let open = self
            .lock()
            .txn
            .as_ref()
            .is_some_and(|t| t.fatal.is_none() && t.phase != Phase::Ready);
        if open {
            if let Err(e) = self.abort_transaction().await {
                warn!(error = %e, "aborting the open transaction at close failed");
            }
        }
    }
}
