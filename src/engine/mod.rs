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
//! # async fn run() -> paperboy::Result<()> {
//! let consumer = ConsumerConfig::from_properties([
//!     ("bootstrap.servers", "127.0.0.1:9092"),
//!     ("group.id", "auditor"),
//!     ("enable.auto.commit", "false"),
//!     ("auto.offset.reset", "earliest"),
//! ])?;
//! let engine = Engine::builder(consumer)
//!     .config(EngineConfig { with_bulk_mode: true, ..EngineConfig::default() })
//!     .handler(Audit)
//!     .build()
//!     .await?;
//! engine.run().await // until SIGTERM, SIGINT or SIGHUP
//! # }
//! ```

mod exactly_once;
mod handler;
mod observe;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use handler::{BoxError, Envelope, Handler, Json, Message, Payload};
pub use observe::{Event, Health, Mode, Observer, Stats};

use crate::config::invalid;
use crate::consumer::{
    BoxFuture, Consumer, ConsumerConfig, ConsumerRecord, RebalanceListener, TopicPartition,
};
use crate::error::{ConfigError, Error, Result};
use crate::producer::{Producer, ProducerConfig};
use crate::telemetry;
use exactly_once::ExactlyOnce;
use handler::Dispatch;
use worker::Unit;

/// The engine's settings. The first seven have the names and defaults of the original
/// Paperboy's parameters.
///
/// ```
/// use paperboy::engine::EngineConfig;
///
/// let config = EngineConfig {
///     with_bulk_mode: true,
///     bulk_mode_threshold: Some(5_000),
///     max_retries: 3,
///     dead_letter_topic: Some("{topic}.dlq".into()),
///     ..EngineConfig::default()
/// };
/// assert!(config.with_commit);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Commit offsets of handled records. Default: `true`.
    pub with_commit: bool,
    /// Stop the engine when a record (or batch) fails for good; otherwise log it and
    /// skip it. Default: `true`. A `dead_letter_topic` takes precedence: failed records
    /// go there and the engine goes on.
    pub fail_on_exception: bool,
    /// Use bulk mode while a partition's backlog is above `bulk_mode_threshold`.
    /// Default: `false` (every record handled alone).
    pub with_bulk_mode: bool,
    /// In bulk mode, how long to wait for a batch to fill. Default: 10000.
    pub bulk_mode_timeout_ms: u64,
    /// In bulk mode, the most records in one batch. Default: 10000.
    pub bulk_mode_max_records: usize,
    /// Backlog (records) above which a partition is in bulk mode; `None` stays in bulk
    /// mode. Default: `Some(1000)`.
    pub bulk_mode_threshold: Option<i64>,
    /// In single mode, how often handled offsets are committed. Default: 10000.
    pub commit_interval_ms: u64,
    /// How many times a failing record (or batch) is tried again. Default: 0.
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each next one. Default: 100.
    pub retry_backoff_ms: u64,
    /// The longest wait between retries. Default: 10000.
    pub retry_backoff_max_ms: u64,
    /// Where records that failed their last attempt go, instead of stopping the engine
    /// or being skipped; `{topic}` is replaced by the record's topic. Default: `None`.
    pub dead_letter_topic: Option<String>,
    /// How many partitions are handled at once. Default: 16.
    pub max_concurrency: usize,
    /// Records of one partition received and not yet handled above which the partition
    /// is paused (fetching resumes below half of it). Default: `2 * bulk_mode_max_records`
    /// with bulk mode, else 1000.
    pub max_pending_records: Option<usize>,
    /// How long a stop (or a revocation) waits for handlers to finish the records they
    /// are on; records still unfinished then are not committed. Default: 30000.
    pub shutdown_timeout_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            with_commit: true,
            fail_on_exception: true,
            with_bulk_mode: false,
            bulk_mode_timeout_ms: 10_000,
            bulk_mode_max_records: 10_000,
            bulk_mode_threshold: Some(1000),
            commit_interval_ms: 10_000,
            max_retries: 0,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 10_000,
            dead_letter_topic: None,
            max_concurrency: 16,
            max_pending_records: None,
            shutdown_timeout_ms: 30_000,
        }
    }
}

impl EngineConfig {
    fn validate(&self) -> std::result::Result<(), ConfigError> {
        if self.bulk_mode_max_records == 0 {
            return Err(invalid("bulk_mode_max_records", "0", "at least 1"));
        }
        if self.bulk_mode_timeout_ms == 0 {
            return Err(invalid("bulk_mode_timeout_ms", "0", "at least 1"));
        }
        if self.commit_interval_ms == 0 {
            return Err(invalid("commit_interval_ms", "0", "at least 1"));
        }
        if self.max_concurrency == 0 {
            return Err(invalid("max_concurrency", "0", "at least 1"));
        }
        if self.max_pending_records == Some(0) {
            return Err(invalid("max_pending_records", "0", "at least 1"));
        }
        if let Some(t) = &self.dead_letter_topic {
            if t.is_empty() {
                return Err(invalid("dead_letter_topic", "", "a topic name"));
            }
        }
        Ok(())
    }

    fn max_pending(&self) -> usize {
        self.max_pending_records.unwrap_or(if self.with_bulk_mode {
            self.bulk_mode_max_records.saturating_mul(2)
        } else {
            1000
        })
    }
}

/// Builds an [`Engine`]: from [`Engine::builder`].
#[must_use]
pub struct EngineBuilder {
    consumer: ConsumerConfig,
    config: EngineConfig,
    handlers: Vec<(Vec<String>, Arc<dyn Dispatch>)>,
    observer: Option<Arc<dyn Observer>>,
    dead_letter_producer: Option<ProducerConfig>,
    exactly_once: Option<Producer>,
}

impl EngineBuilder {
    /// The engine's settings. Default: [`EngineConfig::default`].
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a handler for its [`topics`](Handler::topics).
    pub fn handler(mut self, handler: impl Handler) -> Self {
        let topics = handler.topics();
        self.handlers.push((topics, Arc::new(handler)));
        self
    }

    /// Sets the hook that sees every [`Event`].
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// The producer settings for the dead-letter topic. Default: the consumer's
    /// bootstrap servers and client settings, acks=all, idempotent.
    pub fn dead_letter_producer(mut self, config: ProducerConfig) -> Self {
        self.dead_letter_producer = Some(config);
        self
    }

    /// Exactly-once processing through `producer`, a transactional producer (with
    /// `transactional.id`) that the handlers write their output with: the records they
    /// produce and the offsets of the records they handled are committed in one
    /// transaction, per bulk batch in bulk mode and every `commit_interval_ms` in single
    /// mode (and before a revocation, and at the stop). Consumers of the output with
    /// `isolation.level=read_committed` then see each input's output exactly once,
    /// whatever crashes, restarts or rebalances happen.
    ///
    /// - A handler that fails aborts the transaction: every partition goes back to its
    ///   last commit and its records are handled again (after `retry_backoff_ms`, which
    ///   pauses every partition, not only the failing one). A unit that failed
    ///   `max_retries + 1` times gets the usual treatment: the dead-letter topic
    ///   (written in the same transaction), skipped, or the engine stops.
    /// - A commit waits for the units being handled; the handlers' records must be sent
    ///   from within the hooks (sent or enqueued there; the commit flushes them).
    /// - The consumer reads with `isolation.level=read_committed` (set here).
    /// - Give each running instance its own `transactional.id`, the same across its
    ///   restarts (a pod name, say): a restart then aborts what the crashed instance left
    ///   open at once, instead of after `transaction.timeout.ms`. Two live instances with
    ///   one id fence each other.
    ///
    /// ```no_run
    /// use paperboy::engine::{BoxError, Engine, EngineConfig, Handler, Message};
    /// use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
    /// use paperboy::ConsumerConfig;
    ///
    /// struct Upper(Producer);
    ///
    /// impl Handler for Upper {
    ///     type Payload = String;
    ///     type Context = ();
    ///
    ///     fn topics(&self) -> Vec<String> {
    ///         vec!["words".into()]
    ///     }
    ///
    ///     async fn on_message(&self, msg: &Message<String>, _: &mut ()) -> Result<(), BoxError> {
    ///         let upper = msg.value.as_deref().unwrap_or_default().to_uppercase();
    ///         // Enqueued in the engine's transaction: committed with this record's offset.
    ///         let _ = self.0.enqueue(ProducerRecord::new("shouted").with_value(upper)).await?;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # async fn run() -> paperboy::Result<()> {
    /// let producer = Producer::new(ProducerConfig::from_properties([
    ///     ("bootstrap.servers", "127.0.0.1:9092"),
    ///     ("transactional.id", "shouter-0"),
    /// ])?)
    /// .await?;
    /// let consumer = ConsumerConfig::from_properties([
    ///     ("bootstrap.servers", "127.0.0.1:9092"),
    ///     ("group.id", "shouter"),
    ///     ("enable.auto.commit", "false"),
    /// ])?;
    /// let engine = Engine::builder(consumer)
    ///     .handler(Upper(producer.clone()))
    ///     .exactly_once(producer)
    ///     .build()
    ///     .await?;
    /// engine.run().await
    /// # }
    /// ```
    pub fn exactly_once(mut self, producer: Producer) -> Self {
        self.exactly_once = Some(producer);
        self
    }

    /// Checks the settings and connects.
    ///
    /// # Errors
    /// [`Error::Config`] when auto-commit is on (`enable.auto.commit`), without a
    /// `group.id`, without handlers, with a topic claimed by two handlers or by none,
    /// with a bad [`EngineConfig`] value, or for [`exactly_once`](Self::exactly_once)
    /// with a producer without `transactional.id` or with `with_commit` off; connection
    /// errors.
    pub async fn build(mut self) -> Result<Engine> {
        if self.consumer.auto_commit() {
            return Err(invalid(
                "enable.auto.commit",
                "true",
                "false: the engine commits offsets itself, only once their records are \
                 handled; auto-commit would commit records not yet handled",
            )
            .into());
        }
        if self.consumer.group_id().is_none() {
            return Err(invalid("group.id", "", "a consumer group id, for the engine").into());
        }
        self.config.validate()?;
        if let Some(p) = &self.exactly_once {
            if p.transactional_id().is_none() {
                return Err(ConfigError::Invalid(
                    "exactly-once processing needs a producer with a transactional.id".into(),
                )
                .into());
            }
            if !self.config.with_commit {
                return Err(invalid(
                    "with_commit",
                    "false",
                    "true: exactly-once processing commits offsets in its transactions",
                )
                .into());
            }
            self.consumer.set("isolation.level", "read_committed")?;
        }
        if self.handlers.is_empty() {
            return Err(
                ConfigError::Invalid("the engine needs at least one handler".into()).into(),
            );
        }
        let mut handlers: HashMap<String, Arc<dyn Dispatch>> = HashMap::new();
        for (topics, h) in &self.handlers {
            if topics.is_empty() || topics.iter().any(|t| t.is_empty()) {
                return Err(ConfigError::Invalid(format!(
                    "a handler must name one or more topics, not {topics:?}"
                ))
                .into());
            }
            for t in topics {
                if handlers.insert(t.clone(), h.clone()).is_some() {
                    return Err(ConfigError::Invalid(format!(
                        "topic {t:?} has two handlers; each topic has one"
                    ))
                    .into());
                }
            }
        }
        let dlq = match &self.config.dead_letter_topic {
            None => None,
            // With exactly-once, dead letters go in the transaction too.
            Some(topic) if self.exactly_once.is_some() => Some(DeadLetter {
                topic: topic.clone(),
                producer: self.exactly_once.clone().expect("checked"),
            }),
            Some(topic) => {
                let cfg = self.dead_letter_producer.clone().unwrap_or_else(|| {
                    let mut cfg = ProducerConfig::default();
                    cfg.client = self.consumer.client().clone();
                    cfg
                });
                Some(DeadLetter {
                    topic: topic.clone(),
                    producer: Producer::new(cfg).await?,
                })
            }
        };
        let consumer = Consumer::new(self.consumer).await?;
        let concurrency = Semaphore::new(self.config.max_concurrency);
        Ok(Engine {
            shared: Arc::new(Shared {
                consumer,
                config: self.config,
                handlers,
                parts: Mutex::new(BTreeMap::new()),
                commit_lock: tokio::sync::Mutex::new(()),
                commit_wake: Notify::new(),
                fatal: Mutex::new(None),
                fatal_wake: Notify::new(),
                concurrency,
                dlq,
                eos: self.exactly_once.map(ExactlyOnce::new),
                observer: self.observer,
                health: Health::new(),
            }),
            stop: ShutdownHandle::new(),
        })
    }
}

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
        EngineBuilder {
            consumer,
            config: EngineConfig::default(),
            handlers: Vec::new(),
            observer: None,
            dead_letter_producer: None,
            exactly_once: None,
        }
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
    /// The failure that stopped it ([`Error::Handler`], [`Error::Payload`]); the
    /// consumer's errors; an I/O error installing the signal handlers.
    pub async fn run(self) -> Result<()> {
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
    pub async fn run_until(self, stop: impl Future<Output = ()> + Send) -> Result<()> {
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
                .with_commit
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
        match (result, fatal) {
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
    fatal: Mutex<Option<Error>>,
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
    fn fail(&self, e: Error) {
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

    /// Polls the consumer and hands records to the partitions' workers until `stop`
    /// completes, a failure is recorded, or the consumer fails.
    async fn poll_loop(self: &Arc<Self>, stop: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(stop);
        let cfg = &self.config;
        let max = if cfg.with_bulk_mode {
            cfg.bulk_mode_max_records
        } else {
            500
        };
        let bulk_timeout = Duration::from_millis(cfg.bulk_mode_timeout_ms);
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

    /// Exactly-once: aborts the transaction and moves every partition back to its last
    /// commit, so that its records are handled again (in the poll loop, so that no
    /// records taken before the move are handed out after it). A failed abort stops the
    /// engine.
    async fn rewind(&self) {
        let Some(eos) = &self.eos else { return };
        let Some(request) = eos.take_rewind() else {
            return;
        };
        let _turn = self.commit_lock.lock().await;
        let _gate = eos.exclusive().await;
        if let Err(e) = eos.abort(&request.error).await {
            warn!(error = %e, "aborting the transaction failed: stopping the engine");
            self.fail(e);
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
            self.fail(e);
        }
    }

    /// Hands received records to their partitions' workers, deciding each partition's
    /// mode from its backlog.
    fn dispatch(self: &Arc<Self>, records: Vec<ConsumerRecord>) {
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
            let mode = match (cfg.with_bulk_mode, cfg.bulk_mode_threshold) {
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
    fn flush_due(&self) {
        let bulk_timeout = Duration::from_millis(self.config.bulk_mode_timeout_ms);
        let generation = self.generation();
        for p in self.lock().values_mut() {
            if p.forming_since.is_some_and(|t| t.elapsed() >= bulk_timeout) {
                flush(p, generation);
            }
        }
    }

    /// The exactly-once generation units are sent in now (0 without exactly-once).
    fn generation(&self) -> u64 {
        self.eos.as_ref().map_or(0, ExactlyOnce::generation)
    }

    fn spawn_worker(self: &Arc<Self>, tp: &TopicPartition, handler: Arc<dyn Dispatch>) -> Part {
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

    /// Stops the workers of `partitions`: each finishes the records it is on (for up to
    /// `shutdown_timeout_ms`; then it is aborted and those records stay unfinished),
    /// and what it has not started is dropped.
    async fn finish_partitions(&self, partitions: &[TopicPartition]) {
        let mut tasks = Vec::new();
        {
            let mut parts = self.lock();
            for tp in partitions {
                if let Some(p) = parts.get_mut(tp) {
                    p.cancel.store(true, Ordering::Release);
                    p.tx = None;
                    p.forming.clear();
                    p.forming_since = None;
                    if let Some(t) = p.task.take() {
                        tasks.push((tp.clone(), t));
                    }
                }
            }
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.shutdown_timeout_ms);
        for (tp, mut task) in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                warn!(%tp, "a handler did not finish within shutdown_timeout_ms: its record is not committed");
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Commits the handled offsets of `only` (or of every partition) that moved since
    /// their last commit.
    async fn commit_done(&self, only: Option<&[TopicPartition]>) -> Result<()> {
        if !self.config.with_commit {
            return Ok(());
        }
        let _turn = self.commit_lock.lock().await;
        // Exactly-once: one transaction holds every partition's output, so it commits
        // every partition's offsets, with no unit being handled meanwhile.
        let gate = match &self.eos {
            Some(eos) => Some(eos.exclusive().await),
            None => None,
        };
        let only = if self.eos.is_some() { None } else { only };
        if self.eos.as_ref().is_some_and(|e| e.rewind_pending()) {
            return Ok(());
        }
        let offsets: Vec<(TopicPartition, i64)> = self
            .lock()
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .filter_map(|(tp, p)| {
                let done = p.done?;
                (p.committed != Some(done)).then(|| (tp.clone(), done))
            })
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        match &self.eos {
            Some(eos) => {
                let group = self.consumer.group_metadata()?;
                eos.commit(&offsets, &group).await?;
                for (tp, o) in &offsets {
                    eos.forget_before(tp, *o);
                }
            }
            None => self.consumer.commit(&offsets).await?,
        }
        drop(gate);
        {
            let mut parts = self.lock();
            for (tp, o) in &offsets {
                if let Some(p) = parts.get_mut(tp) {
                    p.committed = Some(*o);
                }
            }
        }
        self.health.committed();
        self.emit(Event::Committed { offsets });
        Ok(())
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

/// Commits after each bulk batch and every `commit_interval_ms`.
async fn committer(shared: Weak<Shared>) {
    let Some(s) = shared.upgrade() else { return };
    let interval = Duration::from_millis(s.config.commit_interval_ms);
    drop(s);
    loop {
        let Some(s) = shared.upgrade() else { return };
        tokio::select! {
            _ = s.commit_wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = s.commit_done(None).await {
            warn!(error = %e, "commit failed; handled offsets are committed again later");
        }
    }
}

/// Before partitions are revoked: their workers finish what they are on, and what was
/// handled is committed while this member still owns them.
struct Listener(Weak<Shared>);

impl RebalanceListener for Listener {
    fn on_revoked<'a>(
        &'a self,
        _consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(shared) = self.0.upgrade() else {
                return;
            };
            shared.finish_partitions(partitions).await;
            if let Err(e) = shared.commit_done(Some(partitions)).await {
                warn!(error = %e, ?partitions, "commit before revocation failed; their new owners handle those records again");
            }
            {
                let mut parts = shared.lock();
                for tp in partitions {
                    parts.remove(tp);
                }
            }
            shared.emit(Event::Revoked {
                partitions: partitions.to_vec(),
            });
        })
    }
}
