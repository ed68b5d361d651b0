//! One Produce request: encoding its batches, building the request, writing it in its
//! turn, reading the broker's answer per partition, and handing each batch's outcome to
//! `settle.rs`.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use tracing::{error, Instrument};

use super::plan::{Turn, Work};
use super::Shared;
use crate::client::Acks;
use crate::error::{Error, Result};
use crate::producer::accumulator::Tp;
use crate::producer::txn_coordinator::MAX_PRODUCE_VERSION;

/// How a Produce request ended.
pub(super) enum Outcome {
    /// The broker answered: per batch, its result.
    Answered(Vec<Result<(i64, Option<i64>)>>),
    /// Nothing of it was written (no connection to the broker, no usable version).
    Unsent(Error),
    /// It may have been written, but no answer came: it timed out, the connection was
    /// lost, or it was abandoned once all its records had failed at their deadline.
    Lost(Error),
}

impl Shared {
    /// Encodes, sends and settles one request's batches.
    pub(super) async fn send(self: Arc<Self>, work: Work) {
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
}
