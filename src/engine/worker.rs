//! One partition's worker: hands its records to the handler in order, retries with
//! backoff, writes what keeps failing to the dead-letter topic, and reports what is done.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{error, info_span, warn, Instrument};

use super::handler::{Dispatch, Outcome};
use super::observe::{Event, Mode};
use super::EngineError;
use super::Shared;
use crate::backoff::Backoff;
use crate::consumer::{BoxFuture, ConsumerRecord, TopicPartition};
use crate::producer::ProducerRecord;
use crate::telemetry;

/// A handling call's worth of records.
pub(crate) enum Unit {
    Single(ConsumerRecord),
    Bulk(Vec<ConsumerRecord>),
}

impl Unit {
    fn records(&self) -> &[ConsumerRecord] {
        match self {
            Unit::Single(r) => std::slice::from_ref(r),
            Unit::Bulk(rs) => rs,
        }
    }

    fn mode(&self) -> Mode {
        match self {
            Unit::Single(_) => Mode::Single,
            Unit::Bulk(_) => Mode::Bulk,
        }
    }
}

/// How a unit ended, after retries and the dead-letter topic.
enum Handled {
    /// Handled, swallowed, or dead-lettered: its offsets may be committed.
    Done,
    /// Failed for good: `fail_on_exception` decides.
    Failed(EngineError),
    /// The dead-letter topic could not be written: the engine must stop.
    Fatal(EngineError),
    /// The partition is being given up (or the engine stops) before the unit finished:
    /// it is not done, and not committed.
    Abandoned,
    /// Exactly-once: an attempt failed; the transaction is to be aborted and the
    /// partitions rewound (after the backoff), so that the unit is handled again.
    Rewind(EngineError, Duration),
}

/// The worker task of `tp`: takes units in order until its sender is dropped or it is
/// cancelled.
pub(crate) async fn run(
    shared: Arc<Shared>,
    tp: TopicPartition,
    handler: Arc<dyn Dispatch>,
    rx: mpsc::UnboundedReceiver<(u64, Unit)>,
    cancel: Arc<AtomicBool>,
) {
    let slot = shared.health.busy_slot(&tp);
    let mut done = Finished::default();
    let metrics = telemetry::Engine::new(&tp.topic);
    work(
        &shared, &tp, &*handler, rx, &cancel, &slot, &mut done, &metrics,
    )
    .await;
    // What was handled counts, however the worker ends.
    done.report(&shared, &tp);
    shared.health.forget_busy(&tp, &slot);
}

/// Single records handled between reports, at most (commits and resumes wait for them).
const REPORT_EVERY: usize = 256;

/// Records handled but not yet reported to [`Shared::finished`]: the worker reports
/// once the units at hand are done, not after each one (a lock per record otherwise).
#[derive(Default)]
struct Finished {
    next: Option<i64>,
    records: usize,
}

impl Finished {
    fn report(&mut self, shared: &Shared, tp: &TopicPartition) {
        if let Some(next) = self.next.take() {
            shared.finished(tp, next, std::mem::take(&mut self.records));
        }
    }
}

#[allow(clippy::too_many_arguments)] // the worker's state, passed down from `run`
async fn work(
    shared: &Shared,
    tp: &TopicPartition,
    handler: &dyn Dispatch,
    mut rx: mpsc::UnboundedReceiver<(u64, Unit)>,
    cancel: &AtomicBool,
    slot: &super::observe::BusySlot,
    done: &mut Finished,
    metrics: &telemetry::Engine,
) {
    let observed = shared.observer.is_some();
    loop {
        let (generation, unit) = match rx.try_recv() {
            Ok(u) => u,
            Err(_) => {
                // Nothing else at hand: say what is done before waiting.
                done.report(shared, tp);
                match rx.recv().await {
                    Some(u) => u,
                    None => return,
                }
            }
        };
        if cancel.load(Ordering::Acquire) {
            return;
        }
        // Exactly-once: handled and reported done within the gate, so that a commit
        // takes either both its output and its offsets or neither; a unit from before a
        // rewind is dropped (its records come again).
        let gate = match &shared.eos {
            Some(eos) => match eos.enter(generation).await {
                Some(gate) => Some(gate),
                None => continue,
            },
            None => None,
        };
        let records = unit.records();
        let (first, last, n) = (
            records[0].offset,
            records[records.len() - 1].offset,
            records.len(),
        );
        // The precise clock only for an observer; the busy slot takes the engine's
        // coarse one (the last poll), which is what a liveness probe needs.
        let started = observed.then(Instant::now);
        let start = telemetry::Start::now();
        shared.health.set_busy(slot, true);
        let call = handle(shared, tp, handler, &unit, cancel);
        tokio::pin!(call);
        let mut waiting = false;
        let result = std::future::poll_fn(|cx| {
            let polled = call.as_mut().poll(cx);
            if polled.is_pending() && !waiting {
                // The handler waits (I/O, or it hangs): what is done before it is
                // reported now, so commits do not wait for this record.
                waiting = true;
                done.report(shared, tp);
            }
            polled
        })
        .await;
        shared.health.set_busy(slot, false);
        let (error, fatal) = match result {
            Handled::Done => {
                metrics.handled(start, n);
                done.next = Some(last + 1);
                done.records += n;
                shared
                    .health
                    .inner
                    .processed
                    .fetch_add(n as u64, Ordering::Relaxed);
                if observed {
                    shared.emit(Event::Handled {
                        partition: tp.clone(),
                        offset: first,
                        records: n,
                        mode: unit.mode(),
                        elapsed: started.map_or(Duration::ZERO, |t| t.elapsed()),
                    });
                }
                if unit.mode() == Mode::Bulk {
                    done.report(shared, tp);
                    shared.commit_wake.notify_one();
                } else if done.records >= REPORT_EVERY || gate.is_some() {
                    done.report(shared, tp);
                }
                continue;
            }
            Handled::Abandoned => return,
            Handled::Rewind(error, backoff) => {
                shared.health.inner.retried.fetch_add(1, Ordering::Relaxed);
                warn!(%tp, offset = first, records = n, %error, ?backoff,
                    "handling failed: the transaction is aborted and the records handled again");
                // Asked for while the gate is still held: a commit that takes the gate
                // next must see it, or it would commit this unit's output without its
                // offsets.
                if let Some(eos) = &shared.eos {
                    eos.request_rewind(error, backoff);
                }
                drop(gate);
                continue;
            }
            Handled::Failed(e) => (e, false),
            Handled::Fatal(e) => (e, true),
        };
        done.report(shared, tp);
        metrics.failed(n);
        shared.health.inner.failed.fetch_add(1, Ordering::Relaxed);
        shared.emit(Event::Failed {
            partition: tp.clone(),
            offset: first,
            records: n,
            error: error.clone(),
        });
        if fatal {
            error!(%tp, offset = first, %error, "the dead-letter topic could not be written: stopping the engine");
            shared.fail(error);
            return;
        }
        if shared.config.fail_on_exception {
            error!(%tp, offset = first, records = n, %error,
                "handling failed and fail_on_exception is on: stopping the engine");
            shared.fail(error);
            return;
        }
        warn!(%tp, offset = first, records = n, %error,
            "handling failed; fail_on_exception is off, so its records are skipped");
        done.next = Some(last + 1);
        done.records += n;
    }
}

/// Handles `unit` with retries; then, if it still fails, writes its records to the
/// dead-letter topic (a bulk batch is first retried record by record, so that only the
/// failing records go there), or reports the failure.
/// [`handle`] boxed, for its call to itself.
fn handle_boxed<'a>(
    shared: &'a Shared,
    tp: &'a TopicPartition,
    handler: &'a dyn Dispatch,
    unit: &'a Unit,
    cancel: &'a AtomicBool,
) -> BoxFuture<'a, Handled> {
    Box::pin(handle(shared, tp, handler, unit, cancel))
}

async fn handle(
    shared: &Shared,
    tp: &TopicPartition,
    handler: &dyn Dispatch,
    unit: &Unit,
    cancel: &AtomicBool,
) -> Handled {
    {
        let cfg = &shared.config;
        let records = unit.records();
        let span = match unit {
            Unit::Single(r) => {
                info_span!("paperboy.record", topic = %r.topic, partition = r.partition, offset = r.offset)
            }
            Unit::Bulk(rs) => {
                info_span!("paperboy.batch", topic = %tp.topic, partition = tp.partition, offset = rs[0].offset, records = rs.len())
            }
        };
        if let Some(eos) = &shared.eos {
            let key = (tp.clone(), records[0].offset, matches!(unit, Unit::Bulk(_)));
            match eos.attempts(&key) {
                // Failed for good before (its output was aborted then): not tried again.
                Some((n, error)) if n > cfg.max_retries => {
                    return give_up(shared, tp, handler, unit, cancel, error).await;
                }
                _ => {}
            }
            let error = match attempt_once(shared, handler, unit, cancel, &span).await {
                Ok(()) => return Handled::Done,
                Err(None) => return Handled::Abandoned,
                Err(Some(e)) => e,
            };
            let attempt = eos.note_failure(key, &error);
            if attempt > cfg.max_retries {
                return Handled::Rewind(error, Duration::ZERO);
            }
            let backoff = backoff(cfg.retry_backoff, cfg.retry_backoff_max, attempt);
            shared.emit(Event::Retrying {
                partition: tp.clone(),
                offset: records[0].offset,
                attempt,
                backoff,
                error: error.clone(),
            });
            return Handled::Rewind(error, backoff);
        }
        let mut attempt: u32 = 0;
        let error = loop {
            attempt += 1;
            let error = match attempt_once(shared, handler, unit, cancel, &span).await {
                Ok(()) => return Handled::Done,
                Err(None) => return Handled::Abandoned,
                Err(Some(e)) => e,
            };
            if attempt > cfg.max_retries {
                break error;
            }
            let backoff = backoff(cfg.retry_backoff, cfg.retry_backoff_max, attempt);
            shared.health.inner.retried.fetch_add(1, Ordering::Relaxed);
            warn!(%tp, offset = records[0].offset, attempt, ?backoff, error = %error, "handling failed; trying again");
            shared.emit(Event::Retrying {
                partition: tp.clone(),
                offset: records[0].offset,
                attempt,
                backoff,
                error,
            });
            // Only this partition waits: its worker is the only one sleeping.
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                if cancel.load(Ordering::Acquire) {
                    return Handled::Abandoned;
                }
                let left = until.saturating_duration_since(Instant::now());
                tokio::time::sleep(left.min(Duration::from_millis(50))).await;
            }
        };
        give_up(shared, tp, handler, unit, cancel, error).await
    }
}

/// One call of the handler on `unit` within a concurrency permit: `Err(None)` when the
/// partition is given up before it starts; a panic becomes the handler's error.
async fn attempt_once(
    shared: &Shared,
    handler: &dyn Dispatch,
    unit: &Unit,
    cancel: &AtomicBool,
    span: &tracing::Span,
) -> Result<(), Option<EngineError>> {
    let Ok(_permit) = shared.concurrency.acquire().await else {
        return Err(None);
    };
    if cancel.load(Ordering::Acquire) {
        return Err(None);
    }
    let call = match unit {
        Unit::Single(r) => handler.single(r),
        Unit::Bulk(rs) => handler.bulk(rs),
    };
    match CatchUnwind(call).instrument(span.clone()).await {
        Ok(Outcome::Done) => Ok(()),
        Ok(Outcome::Failed(e)) => Err(Some(e)),
        Err(panic) => Err(Some(super::handler::handler_error(
            "a hook panicked in",
            unit.records(),
            format!("panic: {panic}").into(),
        ))),
    }
}

/// What happens to a unit that failed for good with `error`: a bulk batch is first
/// handled again record by record (so that only its failing records are treated so);
/// then the dead-letter topic, or [`Handled::Failed`] for the engine's
/// `fail_on_exception` to decide.
async fn give_up(
    shared: &Shared,
    tp: &TopicPartition,
    handler: &dyn Dispatch,
    unit: &Unit,
    cancel: &AtomicBool,
    error: EngineError,
) -> Handled {
    {
        let cfg = &shared.config;
        let records = unit.records();
        // A bulk batch that failed for good is handled again record by record, so that
        // only its failing records go to the dead-letter topic or are skipped.
        if let Unit::Bulk(rs) = unit {
            if rs.len() > 1 && (shared.dlq.is_some() || !cfg.fail_on_exception) {
                warn!(%tp, offset = rs[0].offset, records = rs.len(), %error,
                    "bulk batch failed; handling its records one by one");
                for r in rs {
                    let single = Unit::Single(r.clone());
                    match handle_boxed(shared, tp, handler, &single, cancel).await {
                        Handled::Done => {}
                        Handled::Failed(e) if !cfg.fail_on_exception => {
                            shared.health.inner.failed.fetch_add(1, Ordering::Relaxed);
                            warn!(%tp, offset = r.offset, error = %e,
                                "handling failed; fail_on_exception is off, so the record is skipped");
                            shared.emit(Event::Failed {
                                partition: tp.clone(),
                                offset: r.offset,
                                records: 1,
                                error: e,
                            });
                        }
                        other => return other,
                    }
                }
                return Handled::Done;
            }
        }
        let Some(dlq) = &shared.dlq else {
            return Handled::Failed(error);
        };
        let r = &records[0];
        let topic = dlq.topic.replace("{topic}", &r.topic);
        match dead_letter(&dlq.producer, &topic, r, &error).await {
            Ok(()) => {
                shared
                    .health
                    .inner
                    .dead_lettered
                    .fetch_add(1, Ordering::Relaxed);
                warn!(%tp, offset = r.offset, dead_letter_topic = %topic, error = %error,
                    "record written to the dead-letter topic");
                shared.emit(Event::DeadLettered {
                    partition: tp.clone(),
                    offset: r.offset,
                    topic,
                    error,
                });
                Handled::Done
            }
            Err(e) => Handled::Fatal(e.into()),
        }
    }
}

/// `base * 2^(attempt-1)`, at most `max`, exactly (the waits the user configured).
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    Backoff::exact(base, max).delay(attempt)
}

/// Writes `record` to `topic` as it was (key, value, headers), with headers saying
/// where it came from and why it failed, and waits for the acknowledgement.
async fn dead_letter(
    producer: &crate::producer::Producer,
    topic: &str,
    record: &ConsumerRecord,
    error: &EngineError,
) -> crate::Result<()> {
    let mut out = ProducerRecord::new(topic);
    if let Some(k) = &record.key {
        out = out.with_key(k.clone());
    }
    if let Some(v) = &record.value {
        out = out.with_value(v.clone());
    }
    for (name, value) in record.headers() {
        out = out.with_header(name, value);
    }
    for (name, value) in [
        ("paperboy.dlq.topic", record.topic.to_string()),
        ("paperboy.dlq.partition", record.partition.to_string()),
        ("paperboy.dlq.offset", record.offset.to_string()),
        ("paperboy.dlq.timestamp", record.timestamp_ms.to_string()),
        ("paperboy.dlq.error", error.to_string()),
    ] {
        out = out.with_header(name, Some(value.into()));
    }
    producer.send(out).await.map(|_| ())
}

/// Runs a future, turning a panic inside it into an error with the panic's message.
struct CatchUnwind<'a, T>(BoxFuture<'a, T>);

impl<T> Future for CatchUnwind<'_, T> {
    type Output = Result<T, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic with no message".to_owned());
                Poll::Ready(Err(msg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b: Vec<u64> = (1..=6)
            .map(|a| {
                backoff(Duration::from_millis(100), Duration::from_secs(1), a).as_millis() as u64
            })
            .collect();
        assert_eq!(b, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            backoff(Duration::from_millis(100), Duration::MAX, 64),
            Duration::from_millis(100 << 20)
        );
    }

    #[tokio::test]
    async fn a_panic_becomes_an_error() {
        let ok = CatchUnwind(Box::pin(async { 7 })).await;
        assert_eq!(ok, Ok(7));
        let panicked = CatchUnwind(Box::pin(async {
            if true {
                panic!("boom {}", 42);
            }
            7
        }))
        .await;
        assert_eq!(panicked, Err("boom 42".to_owned()));
    }
}
