//! The idempotent producer's id and epoch: InitProducerId, bumping the epoch when the
//! sequence state is unknown (KIP-360), and restarting every partition's sequence under
//! the new epoch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use tracing::{info, warn};

use super::{Shared, State};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::producer::accumulator::{Batch, Tp};

impl Shared {
    pub(super) async fn bump(self: Arc<Self>, pid: i64, epoch: i16) {
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
}

/// Starts every partition's sequence again from 0, after the producer's epoch changed.
/// Batches never sent are renumbered; those sent without an answer (which may be in the
/// log under the old epoch) are returned, to be failed.
pub(in crate::producer) fn restart_sequences(st: &mut State) -> Vec<(Tp, Batch)> {
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

/// InitProducerId for an idempotent producer; with a current id and epoch, asks for
/// the epoch to be bumped (KIP-360). Retried until `deadline`.
pub(super) async fn init_producer_id(
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
