//! Applying a finished fetch: batches queued for partitions still assigned at the same
//! generation, fetch offsets advanced, watermarks and lag, and errors: retried with a
//! backoff, the metadata refreshed, a partition failed, or its position reset by
//! `auto.offset.reset` when it fell out of range.

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, warn};

use super::{add_topic, broker_name, note_failure, FetchDone};
use crate::client::OffsetSpec;
use crate::consumer::{Inner, OffsetReset, PartState, TopicPartition};
use crate::error::{Error, KafkaCode};
use crate::telemetry;

/// Applies a finished fetch: queues batches of partitions still assigned at the same
/// generation, advances fetch offsets, records errors and backoffs. Returns the topics
/// whose metadata should be refreshed (the leader moved or could not be reached).
pub(super) fn settle(inner: &Arc<Inner>, done: FetchDone) -> Vec<String> {
    let mut stale: Vec<String> = Vec::new();
    let mut st = inner.lock();
    let st = &mut *st;
    st.reserved = st.reserved.saturating_sub(done.reserved);
    for (tp, gen) in &done.wants {
        if let Some(p) = st.parts.get_mut(tp) {
            if p.gen == *gen {
                p.in_flight = false;
            }
        }
    }
    let mut arrived = false;
    // Looked up only for an error (not on every fetch).
    let broker = || broker_name(inner, done.node);
    let failed =
        |tp: &TopicPartition, p: &mut PartState, e: &Error| note_failure(inner, tp, p, e, &broker);
    let mut faulted = false;
    match done.result {
        Err(e) => {
            telemetry::error("receive", inner.config.client.client_id(), &e);
            // Said once per failing spell (a dead broker fails every retry until the
            // metadata names a new leader); the retries are debug.
            let first = done
                .wants
                .iter()
                .any(|(tp, _)| st.parts.get(tp).is_some_and(|p| p.failures == 0));
            if first {
                warn!(broker = %broker(), error = %e, "fetch failed; retrying on a fresh connection");
            } else {
                debug!(broker = %broker(), error = %e, "fetch failed again; retrying");
            }
            for (tp, gen) in &done.wants {
                if let Some(p) = st.parts.get_mut(tp).filter(|p| p.gen == *gen) {
                    faulted |= failed(tp, p, &e);
                    // The broker may be gone and its partitions led elsewhere now.
                    add_topic(&mut stale, &tp.topic);
                }
            }
        }
        Ok(results) => {
            for r in results {
                let Some(p) = st.parts.get_mut(&r.tp) else {
                    continue;
                };
                if p.gen != r.gen {
                    continue;
                }
                if r.high_watermark >= 0 {
                    p.high_watermark = r.high_watermark;
                    if let Some(pos) = p.position {
                        p.metrics.lag(
                            &st.metrics,
                            &p.topic,
                            r.tp.partition,
                            r.high_watermark - pos,
                        );
                    }
                }
                if r.last_stable_offset >= 0 {
                    p.last_stable_offset = r.last_stable_offset;
                }
                if let Some(e) = r.error {
                    telemetry::error("receive", inner.config.client.client_id(), &e);
                    match e.kafka_code() {
                        Some(KafkaCode::OffsetOutOfRange) => {
                            warn!(partition = %r.tp, offset = p.fetch_offset, "offset out of range");
                            p.retry_at = None;
                            p.out_of_range = true;
                        }
                        _ if e.is_retriable() || e.is_stale_metadata() => {
                            debug!(partition = %r.tp, error = %e, "fetch of partition will be retried");
                            faulted |= failed(&r.tp, p, &e);
                            if e.is_stale_metadata() {
                                add_topic(&mut stale, &r.tp.topic);
                            }
                        }
                        _ => p.error = Some(e),
                    }
                    continue;
                }
                p.failures = 0;
                p.failing_since = None;
                p.aborted.extend(r.aborted);
                if !r.queued.is_empty() {
                    arrived = true;
                }
                p.queue.extend(r.queued);
                p.bytes += r.bytes;
                st.buffered += r.bytes;
                if let Some(next) = r.next_offset {
                    p.fetch_offset = p.fetch_offset.max(next);
                }
            }
        }
    }
    st.metrics.prefetch(st.buffered);
    if arrived || faulted {
        inner.ready.notify_waiters();
    }
    stale
}

/// Resets partitions whose fetch offset fell out of range, by `auto.offset.reset`.
pub(super) async fn reset_out_of_range(inner: &Arc<Inner>) {
    let todo: Vec<(TopicPartition, u64)> = {
        let st = inner.lock();
        st.parts
            .iter()
            .filter(|(_, p)| p.out_of_range && !p.in_flight)
            .map(|(tp, p)| (tp.clone(), p.gen))
            .collect()
    };
    for (tp, gen) in todo {
        let spec = match inner.config.offset_reset {
            OffsetReset::Earliest => Some(OffsetSpec::Earliest),
            OffsetReset::Latest => Some(OffsetSpec::Latest),
            OffsetReset::Error => None,
        };
        let offset = match spec {
            Some(spec) => Some(
                inner
                    .client
                    .list_offset(&tp.topic, tp.partition, spec)
                    .await,
            ),
            None => None,
        };
        let mut st = inner.lock();
        let st = &mut *st;
        let Some(p) = st.parts.get_mut(&tp).filter(|p| p.gen == gen) else {
            continue;
        };
        p.out_of_range = false;
        match offset {
            Some(Ok(o)) => {
                warn!(partition = %tp, offset = o, "reset by auto.offset.reset");
                st.seek_part(&tp, o);
            }
            Some(Err(e)) => {
                p.out_of_range = true;
                p.retry_at = Some(Instant::now() + inner.client.config().retry_backoff);
                debug!(partition = %tp, error = %e, "offset reset failed");
            }
            None => p.error = Some(Error::NoOffset(format!("{tp} at {}", p.fetch_offset))),
        }
    }
}
