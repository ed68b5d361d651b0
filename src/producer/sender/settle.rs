//! Settling a batch: delivered (replies with offsets), already written (duplicate
//! sequence), split when too large, retried after a backoff in sequence order, or failed
//! for good, with what that means for its partition's sequence numbers (hold and resume,
//! or an epoch bump); and the buffer accounting as records leave.

use std::collections::VecDeque;
use std::time::Instant;

use tracing::{debug, warn};

use super::{Shared, State};
use crate::error::{Error, KafkaCode, Result};
use crate::producer::accumulator::{Batch, Tp};
use crate::producer::Delivery;
use crate::telemetry;

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
    /// Settles one batch's outcome: delivered, retried, split, or failed. `lost`: the
    /// request got no answer and may have been written. Returns whether metadata should
    /// be refreshed.
    ///
    /// A batch whose records already failed in flight at their delivery timeout
    /// ([`Batch::expired`]) is not retried: its outcome only tells the partition's
    /// sequence state (written, or not, or unknown, which calls for an epoch bump).
    pub(super) fn settle(
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

    pub(in crate::producer) fn fail(&self, st: &mut State, batch: Batch, err: Error) {
        if let Some(t) = st.txn.as_mut() {
            t.failed(&err);
        }
        self.release(st, &batch);
        for reply in batch.replies {
            let _ = reply.send(Err(err.clone()));
        }
    }

    /// Removes a settled batch's records from the accounting.
    pub(super) fn release(&self, st: &mut State, batch: &Batch) {
        st.acc.release(batch);
        self.metrics
            .buffer(st.acc.buffered_bytes, st.acc.buffered_records);
        self.space.notify_waiters();
        if st.flushing > 0 || st.acc.buffered_records == 0 {
            self.idle.notify_waiters();
        }
    }
}
