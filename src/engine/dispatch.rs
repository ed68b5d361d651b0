//! The poll loop: records from the consumer to their partitions' workers, each
//! partition's mode decided from its backlog, bulk batches gathered and sent on time.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::exactly_once::ExactlyOnce;
use super::handler::Dispatch;
use super::worker::{self, Unit};
use super::{Event, Mode, Part, Shared};
use crate::consumer::{ConsumerRecord, TopicPartition};
use crate::error::Result;

impl Shared {
    /// Polls the consumer and hands records to the partitions' workers until `stop`
    /// completes, a failure is recorded, or the consumer fails.
    pub(super) async fn poll_loop(self: &Arc<Self>, stop: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(stop);
        let cfg = &self.config;
        let max = if cfg.bulk_mode {
            cfg.bulk_mode_max_records
        } else {
            500
        };
        let bulk_timeout = cfg.bulk_mode_timeout;
        loop {
            if self.failed() {
                return Ok(());
            }
            // Short polls, so that bulk batches leave on time (a bulk batch still gathers
            // for up to `bulk_mode_timeout_ms`) and a stop is seen at once.
            let now = Instant::now();
            let next_flush = self
                .lock()
                .values()
                .filter_map(|p| p.forming_since)
                .map(|t| (t + bulk_timeout).saturating_duration_since(now))
                .min();
            let timeout = next_flush
                .unwrap_or(Duration::MAX)
                .min(Duration::from_millis(100))
                .max(Duration::from_millis(1));
            // `recv_batch` is cancel-safe: a call dropped here by a stop or a failure
            // leaves the records it took for the next call (there is none: the engine
            // stops, and they were never handled, so never committed).
            let rewind = async {
                match &self.eos {
                    Some(eos) => eos.rewind_wake.notified().await,
                    None => std::future::pending().await,
                }
            };
            let records = tokio::select! {
                biased;
                _ = &mut stop => return Ok(()),
                _ = self.fatal_wake.notified() => return Ok(()),
                _ = rewind => {
                    self.rewind().await;
                    continue;
                }
                r = self.consumer.recv_batch(max, timeout) => r?,
            };
            self.health.polled();
            self.dispatch(records);
            self.flush_due();
        }
    }

    /// Hands received records to their partitions' workers, deciding each partition's
    /// mode from its backlog.
    pub(super) fn dispatch(self: &Arc<Self>, records: Vec<ConsumerRecord>) {
        if records.is_empty() {
            return;
        }
        let cfg = &self.config;
        let lag = self.consumer.lag();
        // The consumer hands records out in runs per partition, in order: each run goes
        // to its partition's worker as it is (a partition's name is built once per run,
        // and records are moved once, into the worker's queue).
        let mut runs: Vec<(TopicPartition, i64, usize)> = Vec::new();
        for r in &records {
            match runs.last_mut() {
                Some((tp, _, n)) if tp.partition == r.partition && *tp.topic == *r.topic => {
                    *n += 1;
                }
                _ => runs.push((r.topic_partition(), r.offset, 1)),
            }
        }
        let generation = self.generation();
        let mut records = records.into_iter();
        let mut events = Vec::new();
        let mut to_pause = Vec::new();
        let mut parts = self.lock();
        for (tp, first, len) in runs {
            let recs = records.by_ref().take(len);
            let Some(handler) = self.handlers.get(&tp.topic) else {
                warn!(%tp, "records of a topic without a handler: ignored");
                recs.for_each(drop);
                continue;
            };
            // The backlog: the high watermark (position + lag) minus the next record to
            // handle.
            let backlog = match (self.consumer.position(&tp), lag.get(&tp)) {
                (Some(pos), Some(l)) => (pos + l - first).max(len as i64),
                _ => len as i64,
            };
            let mode = match (cfg.bulk_mode, cfg.bulk_mode_threshold) {
                (false, _) => Mode::Single,
                (true, None) => Mode::Bulk,
                (true, Some(t)) if backlog > t => Mode::Bulk,
                (true, Some(_)) => Mode::Single,
            };
            let p = parts
                .entry(tp.clone())
                .or_insert_with(|| self.spawn_worker(&tp, handler.clone()));
            p.start.get_or_insert(first);
            if p.mode != Some(mode) {
                if p.mode == Some(Mode::Bulk) {
                    flush(p, generation);
                }
                p.mode = Some(mode);
                events.push(Event::Mode {
                    partition: tp.clone(),
                    mode,
                    lag: backlog,
                });
            }
            p.pending += len;
            match mode {
                Mode::Single => {
                    if let Some(tx) = &p.tx {
                        for r in recs {
                            let _ = tx.send((generation, Unit::Single(r)));
                        }
                    }
                }
                Mode::Bulk => {
                    for r in recs {
                        p.forming.push(r);
                        if p.forming.len() >= cfg.bulk_mode_max_records {
                            flush(p, generation); // and the next batch starts gathering
                        }
                    }
                    if !p.forming.is_empty() && p.forming_since.is_none() {
                        p.forming_since = Some(Instant::now());
                    }
                }
            }
            if !p.paused && p.pending >= cfg.max_pending() {
                p.paused = true;
                to_pause.push(tp);
            }
        }
        if !to_pause.is_empty() {
            debug!(partitions = ?to_pause, "pausing: enough records waiting to be handled");
            self.consumer.pause(&to_pause);
        }
        drop(parts);
        for e in events {
            self.emit(e);
        }
    }

    /// Sends the bulk batches whose time is up.
    pub(super) fn flush_due(&self) {
        let bulk_timeout = self.config.bulk_mode_timeout;
        let generation = self.generation();
        for p in self.lock().values_mut() {
            if p.forming_since.is_some_and(|t| t.elapsed() >= bulk_timeout) {
                flush(p, generation);
            }
        }
    }

    /// The exactly-once generation units are sent in now (0 without exactly-once).
    pub(super) fn generation(&self) -> u64 {
        self.eos.as_ref().map_or(0, ExactlyOnce::generation)
    }

    pub(super) fn spawn_worker(
        self: &Arc<Self>,
        tp: &TopicPartition,
        handler: Arc<dyn Dispatch>,
    ) -> Part {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(worker::run(
            self.clone(),
            tp.clone(),
            handler,
            rx,
            cancel.clone(),
        ));
        Part {
            mode: None,
            start: None,
            done: None,
            committed: None,
            pending: 0,
            forming: Vec::new(),
            forming_since: None,
            paused: false,
            tx: Some(tx),
            cancel,
            task: Some(task),
        }
    }
}

/// Moves a partition's gathered bulk batch to its worker.
fn flush(p: &mut Part, generation: u64) {
    p.forming_since = None;
    if p.forming.is_empty() {
        return;
    }
    let batch = std::mem::take(&mut p.forming);
    if let Some(tx) = &p.tx {
        let _ = tx.send((generation, Unit::Bulk(batch)));
    }
}
