//! The delivery timeout (`delivery.timeout.ms`) of records in flight: failing a request's
//! records at their deadline while the request goes on, abandoning it once all have
//! failed, and the error those records get (also used by `plan.rs` for queued batches).

use std::future::Future;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::request::Outcome;
use super::{Shared, State};
use crate::error::Error;
use crate::producer::accumulator::{Batch, Tp};

/// The error of records whose delivery timeout passed.
pub(super) fn delivery_timeout(tp: &Tp, batch: &Batch, in_flight: bool, after: Duration) -> Error {
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

impl Shared {
    /// Waits for `request`, the request of `batches`, and meanwhile fails the records of
    /// each batch when its delivery timeout passes. The request itself goes on while it
    /// has a batch whose records have not failed: its answer settles every batch (an
    /// expired one that was written after all is then known to be, and its partition's
    /// sequence is known). Once all have failed it is abandoned (dropped, so its answer,
    /// should one come, is dropped too) and the request counts as lost.
    pub(super) async fn within_deadlines(
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
}
