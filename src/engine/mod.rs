//! The Paperboy engine: per-topic [`Handler`]s over a consumer group, in single or bulk
//! mode by consumer lag, with commits that never get ahead of handling.
//!
//! An [`Engine`] subscribes to every topic of its handlers, routes each record to its
//! topic's handler, handles each partition's records in order (partitions concurrently,
//! at most `max_concurrency` at once), and commits.
//!
//! # Modes
//! With `with_bulk_mode`, each partition is in bulk mode while its backlog (high
//! watermark minus the next record to handle) is above `bulk_mode_threshold`, and in
//! single mode when it is at or below it; it goes back to bulk when a backlog builds
//! again. In bulk mode a partition's records are handed over in batches of up to
//! `bulk_mode_max_records`, or what arrived within `bulk_mode_timeout_ms`. A
//! `bulk_mode_threshold` of `None` keeps every partition in bulk mode; without
//! `with_bulk_mode` every record is handled alone. Every change is an [`Event::Mode`]
//! and an `info` log line.
//!
//! # Commits
//! - Only offsets of records whose handling completed are committed: per partition, the
//!   offset after the last record handled (records of a partition are handled in order,
//!   so everything before it is handled too).
//! - Bulk mode commits after each batch; single mode every `commit_interval_ms`; and
//!   both before a partition is revoked in a rebalance and when the engine stops.
//! - A batch or record that failed is not committed (unless `fail_on_exception` is off,
//!   which skips it, or it went to the dead-letter topic).
//! - `with_commit = false` commits nothing.
//! - Auto-commit must be off (`enable.auto.commit=false`): the engine refuses to start
//!   otherwise, since the consumer would commit records not yet handled.
//!
//! So after a crash, a restart or a rebalance, every record is handled at least once:
//! what was handled but not yet committed is handled again.
//!
//! # Failures
//! A failing record (or batch) is retried `max_retries` times with exponential backoff
//! from `retry_backoff_ms`, pausing only its partition. If it still fails:
//! - with a `dead_letter_topic`, the record is written there (key, value and headers as
//!   they were, plus `paperboy.dlq.topic`, `.partition`, `.offset`, `.timestamp` and
//!   `.error` headers) and the partition goes on; a bulk batch is first handled again
//!   record by record, so that only its failing records go there;
//! - otherwise, with `fail_on_exception` the engine stops: it finishes what other
//!   partitions are handling, commits what completed, leaves the group and returns the
//!   error; without it, the error is logged and the record is skipped (a bulk batch,
//!   again after being handled record by record, so only its failing records are).
//!
//! # Stopping
//! [`Engine::run`] stops on SIGTERM, SIGINT or SIGHUP; [`Engine::run_until`] when a
//! future of yours completes (a cancellation token's `cancelled()`); both on a
//! [`ShutdownHandle`]. Stopping stops fetching, lets handlers finish the records they
//! are on (for up to `shutdown_timeout_ms`), commits, and leaves the group.
//!
//! ```no_run
//! use paperboy::engine::{BoxError, Engine, EngineConfig, Handler, Json, Message};
//! use paperboy::ConsumerConfig;
//! use serde_json::Value;
//!
//! struct Audit;
//!
//! impl Handler for Audit {
//!     type Payload = Json<Value>;
//!     type Context = ();
//!
//!     fn topics(&self) -> Vec<String> {
//!         vec!["audit".into()]
//!     }
//!
//!     async fn on_message(&self, msg: &Message<Json<Value>>, _: &mut ()) -> Result<(), BoxError> {
//!         println!("{}@{}: {:?}", msg.record.topic, msg.record.offset, msg.value);
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let consumer = ConsumerConfig::from_properties([
//!     ("bootstrap.servers", "127.0.0.1:9092"),
//!     ("group.id", "auditor"),
//!     ("enable.auto.commit", "false"),
//!     ("auto.offset.reset", "earliest"),
//! ])?;
//! let engine = Engine::builder(consumer)
//!     .config(EngineConfig::default().with_bulk_mode(true))
//!     .handler(Audit)
//!     .build()
//!     .await?;
//! engine.run().await?; // until SIGTERM, SIGINT or SIGHUP
//! # Ok(())
//! # }
//! ```

mod builder;
mod commit;
mod config;
mod dispatch;
mod error;
mod exactly_once;
mod handler;
mod observe;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use builder::EngineBuilder;
pub use config::EngineConfig;
pub use error::EngineError;
pub use handler::{BoxError, Envelope, Handler, Json, Message, Payload};
pub use observe::{Event, Health, Mode, Observer, Stats};

use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, TopicPartition};
use crate::error::Error;
use crate::producer::Producer;
use crate::telemetry;
use commit::{committer, Listener};
use exactly_once::ExactlyOnce;
use handler::Dispatch;
use worker::Unit;

/// Stops a running [`Engine`] (the crate's one stop request, [`Shutdown`](crate::Shutdown)): fetching
/// stops, handlers finish what they are on, handled offsets are committed, the engine
/// leaves the group and `run` returns. Cheap to clone.
pub use crate::shutdown::Shutdown as ShutdownHandle;

/// The engine: see the [module documentation](self).
pub struct Engine {
    shared: Arc<Shared>,
    stop: ShutdownHandle,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.shared.config)
            .field("topics", &self.topics())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A builder over a consumer configuration, which needs a `group.id` and
    /// `enable.auto.commit=false`.
    pub fn builder(consumer: ConsumerConfig) -> EngineBuilder {
        EngineBuilder::new(consumer)
    }

    /// The topics of the handlers, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.shared.handlers.keys().cloned().collect();
        t.sort();
        t
    }

    /// The consumer underneath (assignment, lag, committed offsets). Committing through
    /// it can break the engine's promise: commit only through the engine.
    pub fn consumer(&self) -> &Consumer {
        &self.shared.consumer
    }

    /// Liveness and counters, for a health endpoint.
    pub fn health(&self) -> Health {
        self.shared.health.clone()
    }

    /// A handle that stops the engine.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.stop.clone()
    }

    /// Runs until SIGTERM, SIGINT or SIGHUP (Ctrl-C off Unix), a
    /// [`ShutdownHandle::shutdown`], or a failure with `fail_on_exception`.
    ///
    /// # Errors
    /// The failure that stopped it ([`EngineError::Handler`], [`EngineError::Payload`]); the
    /// consumer's errors; an I/O error installing the signal handlers.
    pub async fn run(self) -> Result<(), EngineError> {
        self.stop.on_signals().map_err(|e| Error::Io {
            broker: "signal handlers".into(),
            source: Arc::new(e),
        })?;
        self.run_until(std::future::pending()).await
    }

    /// Runs until `stop` completes (for example a cancellation token's `cancelled()`),
    /// a [`ShutdownHandle::shutdown`], or a failure with `fail_on_exception`.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn run_until(self, stop: impl Future<Output = ()> + Send) -> Result<(), EngineError> {
        let shared = self.shared.clone();
        let consumer = shared.consumer.clone();
        consumer.set_rebalance_listener(Listener(Arc::downgrade(&shared)));
        let topics = self.topics();
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs)?;
        if let Some(eos) = &shared.eos {
            eos.producer.begin_transaction()?;
        }
        info!(?topics, config = ?shared.config, exactly_once = shared.eos.is_some(), "engine started");

        let mut running = Running {
            shared: shared.clone(),
            committer: shared
                .config
                .commit
                .then(|| tokio::spawn(committer(Arc::downgrade(&shared)))),
        };
        let stopped = async {
            tokio::select! {
                _ = stop => {}
                _ = self.stop.wait() => {}
            }
        };
        let result = shared.poll_loop(stopped).await;

        // Stop: no more fetching; handlers finish what they are on; commit; leave.
        info!("engine stopping");
        if let Some(c) = running.committer.take() {
            c.abort();
            let _ = c.await;
        }
        let all: Vec<TopicPartition> = shared.lock().keys().cloned().collect();
        shared.finish_partitions(&all).await;
        if let Err(e) = shared.commit_done(None).await {
            warn!(error = %e, "final commit failed");
        }
        if let Some(eos) = &shared.eos {
            // What the last commit did not take (nothing, or what a failure left).
            if let Err(e) = eos.producer.abort_transaction().await {
                debug!(error = %e, "no transaction left to abort");
            }
        }
        shared.lock().clear();
        consumer.close().await;
        if let (Some(d), None) = (&shared.dlq, &shared.eos) {
            d.producer.close().await;
        }
        let fatal = shared
            .fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match (result.map_err(EngineError::from), fatal) {
            (Err(e), _) | (Ok(()), Some(e)) => {
                warn!(error = %e, "engine stopped on an error");
                Err(e)
            }
            (Ok(()), None) => {
                info!("engine stopped");
                Ok(())
            }
        }
    }
}

/// Stops the engine's tasks if `run_until` is dropped before it returns (it should be
/// driven to the end: that is what commits and leaves the group).
struct Running {
    shared: Arc<Shared>,
    committer: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.committer.take() {
            c.abort();
        }
        for p in self.shared.lock().values_mut() {
            p.cancel.store(true, Ordering::Release);
            p.tx = None;
            if let Some(t) = p.task.take() {
                t.abort();
            }
        }
    }
}

struct DeadLetter {
    topic: String,
    producer: Producer,
}

/// One partition the engine has records of.
struct Part {
    mode: Option<Mode>,
    /// The first offset the engine got of it (where a rewind goes back to when nothing
    /// was committed yet).
    start: Option<i64>,
    /// The offset after the last record handled: what may be committed.
    done: Option<i64>,
    /// What was last committed.
    committed: Option<i64>,
    /// Records received and not yet handled (in the worker's queue or `forming`).
    pending: usize,
    /// A bulk batch being gathered, and when its first record came.
    forming: Vec<ConsumerRecord>,
    forming_since: Option<Instant>,
    paused: bool,
    /// The worker's queue: units with the exactly-once generation they were sent in.
    tx: Option<mpsc::UnboundedSender<(u64, Unit)>>,
    cancel: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

/// What the engine's tasks share.
struct Shared {
    consumer: Consumer,
    config: EngineConfig,
    handlers: HashMap<String, Arc<dyn Dispatch>>,
    /// Guards the partitions the engine has records of. Never held across an await.
    parts: Mutex<BTreeMap<TopicPartition, Part>>,
    /// Serializes commits, so that a later commit never carries an older offset.
    commit_lock: tokio::sync::Mutex<()>,
    /// A bulk batch was handled: commit now.
    commit_wake: Notify,
    /// The failure that stops the engine.
    fatal: Mutex<Option<EngineError>>,
    fatal_wake: Notify,
    concurrency: Semaphore,
    dlq: Option<DeadLetter>,
    /// Exactly-once processing, when asked for.
    eos: Option<ExactlyOnce>,
    observer: Option<Arc<dyn Observer>>,
    health: Health,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<TopicPartition, Part>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, event: Event) {
        match &event {
            Event::Mode {
                partition,
                mode,
                lag,
            } => {
                info!(%partition, ?mode, lag, "partition mode");
                self.health
                    .inner
                    .partitions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(partition.clone(), (*mode, *lag));
            }
            Event::Committed { offsets } => debug!(?offsets, "committed"),
            Event::Revoked { partitions } => info!(?partitions, "partitions revoked"),
            Event::Retrying { partition, .. } => telemetry::handler_retry(&partition.topic),
            _ => {}
        }
        if let Some(o) = &self.observer {
            o.on_event(&event);
        }
    }

    /// A worker finished records up to `next` (exclusive). A partition paused because
    /// too many of its records waited resumes once half of them are handled (under the
    /// lock, so that pauses and resumes reach the consumer in the order decided).
    fn finished(&self, tp: &TopicPartition, next: i64, records: usize) {
        let mut parts = self.lock();
        if let Some(p) = parts.get_mut(tp) {
            p.done = Some(next);
            p.pending = p.pending.saturating_sub(records);
            if p.paused && p.pending <= self.config.max_pending() / 2 {
                p.paused = false;
                self.consumer.resume(std::slice::from_ref(tp));
            }
        }
    }

    /// Records the failure that stops the engine (the first one wins).
    fn fail(&self, e: EngineError) {
        let mut f = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
        drop(f);
        self.fatal_wake.notify_one();
    }

    fn failed(&self) -> bool {
        self.fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}
