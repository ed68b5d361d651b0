//! The PHQ `Consumer`: batches of [`Message`]s read from the envelope, handed to a
//! handler, and committed only after the handler succeeds.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::{debug, error, info, warn};

use super::{Message, PhqError};
use crate::consumer::{self as kafka, ConsumerConfig, ConsumerRecord, TopicPartition};
use crate::envelope::{self, batch_ref, OrderedValue};
use crate::error::{ConfigError, Error, KafkaCode, Result};

/// The PHQ consumer settings applied before the caller's overrides (librdkafka names).
///
/// The Python library also sets `queued.min.messages`, a librdkafka queue threshold with
/// no counterpart here: the prefetch queue is bounded by `queued.max.messages.kbytes`
/// alone (see [`crate::consumer`]).
pub const CONSUMER_DEFAULTS: [(&str, &str); 8] = [
    ("auto.offset.reset", "latest"),
    ("fetch.max.bytes", "1048576"),
    ("request.timeout.ms", "305000"),
    ("heartbeat.interval.ms", "3000"),
    ("session.timeout.ms", "10000"),
    ("max.poll.interval.ms", "300000"),
    ("queued.max.messages.kbytes", "10000"),
    ("enable.auto.commit", "false"),
];

/// The PHQ `Consumer`: reads batches of messages in the PHQ envelope as a member of a
/// consumer group, hands each batch to a handler, and commits it once the handler
/// succeeds.
///
/// What [`process`](Self::process) promises:
///
/// - **Commit after processing.** A batch's offsets are committed only after its handler
///   returned `Ok`. When the handler fails, nothing of the batch is committed and
///   `process` returns [`PhqError::Handler`]: a consumer started again in the group reads
///   the same records again. Auto-commit cannot be turned on.
/// - **Tombstones and empty values are skipped, but committed** with their batch, so
///   they are not read again. A batch of nothing else does not call the handler.
/// - **Each message knows where it came from.** [`Message::refs`] holds one ref, as the
///   Python library builds it: `{"topic", "partition", "offset", "key", "hist"}` with
///   the message's own `hist`. Producing the message on with the PHQ
///   [`Producer`](super::Producer) nests the history.
/// - **A graceful stop.** After [`StopHandle::shutdown`] (or SIGINT/SIGTERM, with
///   [`shutdown_on_signals`](Self::shutdown_on_signals)), a batch being handled is
///   finished and committed, then `process` returns `Ok(())`. A stop while waiting for
///   records returns at once; records fetched for the next batch but not yet handed to
///   the handler are not committed (the next consumer of their partitions reads them).
///
/// A record whose key is null gets an empty id (the Python library fails on it). A key
/// that is not UTF-8 is read lossily (invalid sequences become U+FFFD).
///
/// **Key order.** The messages' payloads are `T`, by default a [`serde_json::Value`],
/// whose objects hold their keys sorted (Paperboy does not turn on serde_json's
/// `preserve_order`; see [`envelope`](crate::envelope#key-order)): a payload produced on
/// is written with its keys sorted, where the Python library keeps the order it read.
/// [`with_payload::<OrderedValue>()`](Self::with_payload) gives payloads that keep it
/// (and deref to the `Value`), so a message handed on is written byte for byte as the
/// Python library writes it. The refs are [`Value`]s too, but the PHQ
/// [`Producer`](super::Producer) writes refs and histories in the Python library's key
/// order whatever their maps' order.
///
/// ```no_run
/// use std::time::Duration;
///
/// use paperboy::phq::{Consumer, Message, Producer};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let servers = ["127.0.0.1:9092"];
/// let producer = Producer::new("enricher", &servers).await?;
/// let consumer =
///     Consumer::new(&servers, &["events"], "enricher", 100, Duration::from_secs(1)).await?;
/// consumer.shutdown_on_signals()?; // SIGINT/SIGTERM: finish the batch, commit, return
///
/// consumer
///     .process(|messages: Vec<Message>| {
///         let producer = producer.clone();
///         async move {
///             let enriched: Vec<Message> = messages
///                 .into_iter()
///                 .map(|mut m| {
///                     m.payload["enriched"] = true.into();
///                     m // keeps its ref: the produced message's history nests the consumed one
///                 })
///                 .collect();
///             producer.produce_batch("events-enriched", &enriched).await
///         }
///     })
///     .await?; // Ok after a stop; the handler's error otherwise, with nothing committed
/// consumer.close().await;
/// producer.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Consumer<T = Value> {
    inner: kafka::Consumer,
    batch_size: usize,
    timeout: Duration,
    undecodable: Undecodable,
    /// Exactly-once: the transactional producer whose transactions carry each batch's
    /// output and offsets.
    transactional: Option<crate::producer::Producer>,
    stop: StopHandle,
    /// What the messages' payloads are read into.
    payload: PhantomData<fn() -> T>,
}

/// What a PHQ [`Consumer`] does with a record whose value does not decode (not UTF-8,
/// not JSON, not an envelope): [`Consumer::on_undecodable`].
#[derive(Clone, Default)]
pub enum Undecodable {
    /// Fail the batch, commit nothing of it (the original's behaviour, the default): the
    /// same record fails again after a restart until it is dealt with.
    #[default]
    Fail,
    /// Log it (at warn, with its topic, partition and offset) and go on; the batch is
    /// committed past it.
    Skip,
    /// Hand it to this callback with the decode error, then go on as with `Skip`: for a
    /// dead-letter topic, a metric, an alert.
    Handle(UndecodableCallback),
}

/// The callback of [`Undecodable::Handle`]: the record and why it does not decode.
pub type UndecodableCallback = Arc<dyn Fn(&ConsumerRecord, &Error) + Send + Sync>;

impl std::fmt::Debug for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Undecodable::Fail => "Fail",
            Undecodable::Skip => "Skip",
            Undecodable::Handle(_) => "Handle(..)",
        })
    }
}

/// Stops a PHQ [`Consumer`]'s [`process`](Consumer::process) (the crate's one stop
/// request, [`Shutdown`](crate::Shutdown)): the batch being handled is finished and
/// committed, then `process` returns `Ok(())`. Cheap to clone; a stopped consumer stays
/// stopped.
pub use crate::shutdown::Shutdown as StopHandle;

impl Consumer {
    /// A consumer in group `group_id` for `topics`, with the PHQ defaults
    /// ([`CONSUMER_DEFAULTS`]): batches of up to `batch_size` messages, or what arrived
    /// within `timeout`.
    ///
    /// # Errors
    /// As [`Consumer::with_config`].
    pub async fn new<S, T>(
        bootstrap_servers: &[S],
        topics: &[T],
        group_id: &str,
        batch_size: usize,
        timeout: Duration,
    ) -> Result<Consumer>
    where
        S: AsRef<str>,
        T: AsRef<str>,
    {
        Self::with_config(
            bootstrap_servers,
            topics,
            group_id,
            batch_size,
            timeout,
            std::iter::empty::<(&str, &str)>(),
        )
        .await
    }

    /// A consumer with config overrides by librdkafka/Java property name (see
    /// [`ConsumerConfig`]). They win over the PHQ defaults, except that
    /// `bootstrap.servers` and `group.id` come from the arguments, and
    /// `enable.auto.commit=true` is refused: this consumer commits each batch after its
    /// handler succeeds, never on a timer.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown key or bad value, `enable.auto.commit=true`, no
    /// topic, an empty group id, a `batch_size` of 0 or a zero `timeout`; connection
    /// errors.
    pub async fn with_config<S, T, I, K, V>(
        bootstrap_servers: &[S],
        topics: &[T],
        group_id: &str,
        batch_size: usize,
        timeout: Duration,
        overrides: I,
    ) -> Result<Consumer>
    where
        S: AsRef<str>,
        T: AsRef<str>,
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let topics: Vec<&str> = topics.iter().map(AsRef::as_ref).collect();
        if topics.is_empty() || topics.iter().any(|t| t.is_empty()) {
            return Err(ConfigError::Invalid(format!(
                "the PHQ consumer needs one or more topics, not {topics:?}"
            ))
            .into());
        }
        if batch_size == 0 {
            return Err(crate::config::invalid("batch_size", "0", "at least 1").into());
        }
        if timeout.is_zero() {
            return Err(crate::config::invalid("timeout", "0", "at least 1 ms").into());
        }
        let config = config(bootstrap_servers, group_id, overrides)?;
        let inner = kafka::Consumer::new(config).await?;
        inner.subscribe(&topics)?;
        Ok(Consumer {
            inner,
            batch_size,
            timeout,
            undecodable: Undecodable::Fail,
            transactional: None,
            stop: StopHandle::new(),
            payload: PhantomData,
        })
    }
}

impl<T: From<OrderedValue>> Consumer<T> {
    /// The same consumer, its messages' payloads read into `U`: [`Value`] (the default),
    /// or [`OrderedValue`], which keeps the order of the objects' keys as read, so that a
    /// message produced on is written byte for byte as the Python library writes it.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use paperboy::envelope::OrderedValue;
    /// use paperboy::phq::{Consumer, Message};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let consumer = Consumer::new(&["127.0.0.1:9092"], &["events"], "relay", 100, Duration::from_secs(1))
    ///     .await?
    ///     .with_payload::<OrderedValue>();
    /// consumer
    ///     .process(|messages: Vec<Message<OrderedValue>>| async move {
    ///         for m in &messages {
    ///             println!("{}", m.payload["n"]); // derefs to the Value
    ///         }
    ///         Ok::<(), paperboy::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn with_payload<U: From<OrderedValue>>(self) -> Consumer<U> {
        Consumer {
            inner: self.inner,
            batch_size: self.batch_size,
            timeout: self.timeout,
            undecodable: self.undecodable,
            transactional: self.transactional,
            stop: self.stop,
            payload: PhantomData,
        }
    }

    /// What to do with records that do not decode; [`Undecodable::Fail`] by default.
    ///
    /// # Example
    /// ```no_run
    /// # async fn run(consumer: paperboy::phq::Consumer) {
    /// use paperboy::phq::Undecodable;
    /// let consumer = consumer.on_undecodable(Undecodable::Skip);
    /// # }
    /// ```
    #[must_use]
    pub fn on_undecodable(mut self, policy: Undecodable) -> Self {
        self.undecodable = policy;
        self
    }

    /// Exactly-once batches: each batch is one transaction of `producer` (a PHQ
    /// [`Producer`](super::Producer) made with a `transactional.id`), holding what the
    /// handler produced with it and the batch's offsets. A handler that fails aborts it:
    /// none of its output becomes visible to read_committed consumers, nothing is
    /// committed, and `process` returns the error as before. A batch whose partitions
    /// moved to another member while it was handled is aborted too (the new owner
    /// handles it again), so each input's output is committed once.
    ///
    /// The handler must produce only through `producer`, from within the handler
    /// (`produce_batch` waits for its messages). The consumer must read
    /// `isolation.level=read_committed` (an override to [`Consumer::with_config`]), so
    /// that it never handles records of aborted transactions upstream.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use paperboy::phq::{Consumer, Message, Producer};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let servers = ["127.0.0.1:9092"];
    /// let producer =
    ///     Producer::with_config("enricher", &servers, [("transactional.id", "enricher-0")]).await?;
    /// let consumer = Consumer::with_config(
    ///     &servers, &["events"], "enricher", 100, Duration::from_secs(1),
    ///     [("isolation.level", "read_committed")],
    /// )
    /// .await?
    /// .exactly_once(&producer)?;
    /// consumer
    ///     .process(|messages: Vec<Message>| {
    ///         let producer = producer.clone();
    ///         async move { producer.produce_batch("events-enriched", &messages).await }
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for a producer without `transactional.id` or a consumer that
    /// does not read committed records only.
    pub fn exactly_once(mut self, producer: &super::Producer) -> Result<Self> {
        if producer.producer().transactional_id().is_none() {
            return Err(ConfigError::Invalid(
                "exactly-once batches need a PHQ Producer with a transactional.id".into(),
            )
            .into());
        }
        if self.inner.config().isolation != crate::client::IsolationLevel::ReadCommitted {
            return Err(crate::config::invalid(
                "isolation.level",
                "read_uncommitted",
                "read_committed, for exactly-once batches (records of aborted transactions \
                 upstream must not be handled)",
            )
            .into());
        }
        self.transactional = Some(producer.producer().clone());
        Ok(self)
    }

    /// The consumer underneath (assignment, lag, committed offsets).
    ///
    /// Committing through it is not needed and can break the promise of
    /// [`process`](Self::process): after a stop, its positions may be past records that
    /// were fetched but never handled.
    pub fn consumer(&self) -> &kafka::Consumer {
        &self.inner
    }

    /// A handle that stops [`process`](Self::process) after the current batch.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Stops [`process`](Self::process) after the current batch on SIGINT or SIGTERM
    /// (Ctrl-C only, off Unix). A second signal while the batch finishes is logged, not
    /// obeyed ([`Shutdown::on_signals`](crate::Shutdown::on_signals)). The task listening ends when the last clone of its stop handle is dropped,
    /// but Tokio keeps its handlers installed for the life of the process: from then on
    /// those signals no longer terminate it by default.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed (the runtime has no I/O driver).
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn shutdown_on_signals(&self) -> std::io::Result<()> {
        self.stop.on_signals()
    }

    /// Consumes until stopped: takes up to `batch_size` records (or what arrived within
    /// `timeout`), reads their messages, awaits `handler` with them, and commits the
    /// batch once the handler returns `Ok`. See the [type's documentation](Self) for
    /// what is promised.
    ///
    /// The handler gets the batch's messages in order (per partition, the log's order)
    /// and is not called for a batch without any (all tombstones). Its error can be
    /// anything that converts into `Box<dyn Error + Send + Sync>`: a `String`, an
    /// `anyhow::Error`, [`Error`]... A panic in the handler is not caught.
    ///
    /// A commit refused because the group rebalanced while the batch was handled is
    /// logged, not returned: the records are then read again by whoever owns their
    /// partitions (at least once, as before).
    ///
    /// # Errors
    /// [`PhqError::Handler`] when the handler fails (logged as
    /// `[topic[p=first:last+1,...]] Encountered exception...`, nothing committed);
    /// [`PhqError::Client`] with [`Error::Json`] naming the record when a value is not a
    /// PHQ envelope (nothing of its batch committed, as the Python library raises), or
    /// with the consumer's errors ([`kafka::Consumer::recv_batch`], commit errors other
    /// than a rebalance).
    pub async fn process<F, Fut, E>(&self, handler: F) -> Result<(), PhqError>
    where
        F: FnMut(Vec<Message<T>>) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.run(handler, false).await
    }

    /// As [`process`](Self::process), but the handler gets only the last message of
    /// each id within a batch, in the order of those last messages: ids `abc, def, xyz,
    /// xyz, abc` give `def, xyz (the 2nd), abc (the 2nd)`. The whole batch is committed.
    /// Messages whose key was null share the empty id: only the last is kept.
    ///
    /// # Errors
    /// As [`process`](Self::process).
    pub async fn process_latest_only<F, Fut, E>(&self, handler: F) -> Result<(), PhqError>
    where
        F: FnMut(Vec<Message<T>>) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.run(handler, true).await
    }

    /// Leaves the group and disconnects. Nothing is committed (batches are committed as
    /// they are handled).
    pub async fn close(&self) {
        self.inner.close().await;
    }

    async fn run<F, Fut, E>(&self, mut handler: F, latest_only: bool) -> Result<(), PhqError>
    where
        F: FnMut(Vec<Message<T>>) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        loop {
            if self.stop.is_shutdown() {
                info!("PHQ consumer stopped");
                return Ok(());
            }
            let records = tokio::select! {
                biased;
                _ = self.stop.wait() => continue,
                r = self.inner.recv_batch(self.batch_size, self.timeout) => r?,
            };
            if records.is_empty() {
                continue;
            }
            self.handle(&records, &mut handler, latest_only).await?;
        }
    }

    /// One batch: decode, handle, commit.
    async fn handle<F, Fut, E>(
        &self,
        records: &[ConsumerRecord],
        handler: &mut F,
        latest_only: bool,
    ) -> Result<(), PhqError>
    where
        F: FnMut(Vec<Message<T>>) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut messages = Vec::with_capacity(records.len());
        for r in records {
            match decode(
                &r.topic,
                r.partition,
                r.offset,
                r.key.as_deref(),
                r.value.as_deref(),
            ) {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => {}
                Err(e) if matches!(self.undecodable, Undecodable::Skip) => {
                    warn!(
                        "[{}] skipped a record that does not decode: {e}",
                        batch_ref(records)
                    );
                }
                Err(e) if matches!(self.undecodable, Undecodable::Handle(_)) => {
                    if let Undecodable::Handle(f) = &self.undecodable {
                        f(r, &e);
                    }
                }
                Err(e) => {
                    error!(
                        "[{}] Encountered exception reading the batch; nothing of it is committed: {e}",
                        batch_ref(records)
                    );
                    return Err(e.into());
                }
            }
        }
        if latest_only {
            messages = keep_latest(messages);
        }
        if let Some(p) = &self.transactional {
            p.begin_transaction()?;
        }
        if !messages.is_empty() {
            let count = messages.len();
            if let Err(e) = handler(messages).await {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                let batch = batch_ref(records);
                error!("[{batch}] Encountered exception in the handler; nothing of the batch is committed: {e}");
                if let Some(p) = &self.transactional {
                    if let Err(abort) = p.abort_transaction().await {
                        warn!(%batch, error = %abort, "aborting the batch's transaction failed");
                    }
                }
                return Err(PhqError::Handler {
                    batch,
                    source: Arc::from(e),
                });
            }
            debug!(messages = count, records = records.len(), "batch handled");
        }
        match &self.transactional {
            Some(p) => Ok(self.commit_transaction(p, records).await?),
            None => Ok(self.commit(records).await?),
        }
    }

    /// Exactly-once: commits the batch's offsets with its output, in its transaction. A
    /// batch whose partitions moved meanwhile is aborted (their new owner handles it).
    async fn commit_transaction(
        &self,
        producer: &crate::producer::Producer,
        records: &[ConsumerRecord],
    ) -> Result<()> {
        let mut next: HashMap<TopicPartition, i64> = HashMap::new();
        for r in records {
            let e = next.entry(r.topic_partition()).or_insert(r.offset + 1);
            *e = (*e).max(r.offset + 1);
        }
        let offsets: Vec<(TopicPartition, i64)> = next.into_iter().collect();
        let result = async {
            let group = self.inner.group_metadata()?;
            producer
                .send_offsets_to_transaction(&offsets, &group)
                .await?;
            producer.commit_transaction().await
        }
        .await;
        let Err(e) = result else {
            return Ok(());
        };
        if let Err(abort) = producer.abort_transaction().await {
            warn!(batch = %batch_ref(records), error = %abort, "aborting the batch's transaction failed");
        }
        if lost_to_rebalance(&e) || matches!(e.kafka_code(), Some(KafkaCode::FencedInstanceId)) {
            warn!(
                batch = %batch_ref(records),
                error = %e,
                "the group rebalanced while the batch was handled: its transaction is \
                 aborted, and its records are handled again by their partitions' owners"
            );
            return Ok(());
        }
        Err(e)
    }

    /// Commits `records` of the partitions still assigned; a commit refused because the
    /// group rebalanced is logged, not returned.
    async fn commit(&self, records: &[ConsumerRecord]) -> Result<()> {
        let assigned: HashSet<TopicPartition> = self.inner.assignment().into_iter().collect();
        let result = if records
            .iter()
            .all(|r| assigned.contains(&r.topic_partition()))
        {
            self.inner.commit_records(records).await
        } else {
            let (kept, revoked): (Vec<ConsumerRecord>, Vec<ConsumerRecord>) = records
                .iter()
                .cloned()
                .partition(|r| assigned.contains(&r.topic_partition()));
            warn!(
                revoked = %batch_ref(&revoked),
                "partitions were revoked while their records were handled: those records are \
                 not committed, and their partitions' new owners read them again"
            );
            self.inner.commit_records(&kept).await
        };
        match result {
            Err(e) if lost_to_rebalance(&e) => {
                warn!(
                    batch = %batch_ref(records),
                    error = %e,
                    "commit refused: the group rebalanced while the batch was handled; its \
                     records are read again by their partitions' owners"
                );
                Ok(())
            }
            other => other,
        }
    }
}

/// The consumer's configuration: the PHQ defaults, then `overrides`, then the servers
/// and group from the constructor.
fn config<S, I, K, V>(
    bootstrap_servers: &[S],
    group_id: &str,
    overrides: I,
) -> Result<ConsumerConfig>
where
    S: AsRef<str>,
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    if group_id.trim().is_empty() {
        return Err(crate::config::invalid("group.id", group_id, "a consumer group id").into());
    }
    let servers: Vec<&str> = bootstrap_servers.iter().map(AsRef::as_ref).collect();
    let servers = servers.join(",");
    let mut cfg = ConsumerConfig::new(&servers);
    for (k, v) in CONSUMER_DEFAULTS {
        cfg.set(k, v)?;
    }
    // The defaults' classic-only keys (session, heartbeat) are not the caller's: with
    // group.protocol=consumer they are unused, not an error.
    cfg.forget_classic_keys();
    for (k, v) in overrides {
        let (k, v) = (k.as_ref(), v.as_ref());
        cfg.set(k, v)?;
        if k == "enable.auto.commit" && cfg.auto_commit() {
            return Err(crate::config::invalid(
                k,
                v,
                "false: the PHQ consumer commits each batch after its handler succeeds, \
                 never automatically",
            )
            .into());
        }
    }
    cfg.set("bootstrap.servers", &servers)?;
    cfg.set("group.id", group_id)?;
    Ok(cfg)
}

/// Whether a commit failed because this member's partitions or generation are gone.
fn lost_to_rebalance(e: &Error) -> bool {
    matches!(e, Error::NotAssigned(_))
        || matches!(
            e.kafka_code(),
            Some(
                KafkaCode::RebalanceInProgress
                    | KafkaCode::IllegalGeneration
                    | KafkaCode::UnknownMemberId
                    // group.protocol=consumer (KIP-848): fenced, or an epoch gone stale
                    // past the commit's retries.
                    | KafkaCode::FencedMemberEpoch
                    | KafkaCode::StaleMemberEpoch
            )
        )
}

/// The message of a record: `None` for a tombstone or an empty value.
fn decode<T: From<OrderedValue>>(
    topic: &str,
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Option<Message<T>>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Some(read) = envelope::unpack(value).map_err(|e| match e {
        Error::Json(m) => Error::Json(format!("{topic}[{partition}] at offset {offset}: {m}")),
        other => other,
    })?
    else {
        return Ok(None);
    };
    if read.hist_truncated {
        warn!(
            %topic,
            partition,
            offset,
            "Message has a very long history. Truncated."
        );
    }
    let id = key
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    let consumed = envelope::consumed_ref(topic, partition, offset, &id, read.hist);
    Ok(Some(Message {
        id,
        payload: T::from(read.item),
        refs: vec![consumed],
        topic: Some(topic.to_owned()),
    }))
}

/// The last message of each id, in the order of those last messages.
fn keep_latest<T>(messages: Vec<Message<T>>) -> Vec<Message<T>> {
    let last: HashMap<&str, usize> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.as_str(), i))
        .collect();
    let keep: Vec<bool> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| last[m.id.as_str()] == i)
        .collect();
    messages
        .into_iter()
        .zip(keep)
        .filter_map(|(m, k)| k.then_some(m))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::Value;

    #[test]
    fn a_record_becomes_a_message_with_its_ref() {
        let value = envelope::pack(
            "up",
            "2019-12-23T20:31:43+00:00",
            &json!({"n": 1}),
            &[json!({"topic": "raw", "partition": 1, "offset": 2, "key": "r", "hist": null})],
        )
        .unwrap();
        let m = decode::<Value>("events", 3, 41, Some(b"e-1"), Some(&value))
            .unwrap()
            .unwrap();
        assert_eq!(m.id, "e-1");
        assert_eq!(m.payload, json!({"n": 1}));
        assert_eq!(m.topic.as_deref(), Some("events"));
        let hist = json!({"svc": "up", "dt": "2019-12-23T20:31:43+00:00", "refs": [{"topic": "raw", "partition": 1, "offset": 2, "key": "r", "hist": null}]});
        assert_eq!(
            m.refs,
            vec![
                json!({"topic": "events", "partition": 3, "offset": 41, "key": "e-1", "hist": hist})
            ]
        );
        // The ref is laid out as the Python library writes it when produced on.
        let out = envelope::pack("next", "d", &m.payload, &m.refs).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(r#""refs": [{"topic": "events", "partition": 3, "offset": 41, "key": "e-1", "hist": {"svc": "up""#),
            "{text}"
        );
        assert_eq!(envelope::format_kafka_ref(&m.refs[0]), "events:3:41:e-1");
    }

    #[test]
    fn tombstones_empty_values_and_null_keys() {
        assert!(decode::<Value>("t", 0, 0, Some(b"k"), None)
            .unwrap()
            .is_none());
        assert!(decode::<Value>("t", 0, 0, Some(b"k"), Some(b""))
            .unwrap()
            .is_none());
        let m = decode::<Value>("t", 0, 7, None, Some(br#"{"item": 1, "hist": null}"#))
            .unwrap()
            .unwrap();
        assert_eq!(m.id, "");
        assert_eq!(m.refs[0]["key"], "");
        assert_eq!(m.refs[0]["hist"], Value::Null);
        let m = decode::<Value>("t", 0, 7, Some(b"a\xffb"), Some(br#"{"item": 1}"#))
            .unwrap()
            .unwrap();
        assert_eq!(m.id, "a\u{fffd}b");
        let e = decode::<Value>("t", 2, 9, Some(b"k"), Some(b"{oops")).unwrap_err();
        assert!(
            e.to_string().starts_with("JSON error: t[2] at offset 9: "),
            "{e}"
        );
    }

    #[test]
    fn latest_only_keeps_the_last_of_each_id_in_order() {
        let ids = ["abc", "def", "xyz", "xyz", "abc"];
        let messages: Vec<Message<usize>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Message::new(*id, i))
            .collect();
        let kept: Vec<(String, usize)> = keep_latest(messages)
            .into_iter()
            .map(|m| (m.id, m.payload))
            .collect();
        assert_eq!(
            kept,
            [("def".into(), 1), ("xyz".into(), 3), ("abc".into(), 4)]
        );
        assert!(keep_latest(Vec::<Message>::new()).is_empty());
    }

    #[test]
    fn config_has_the_phq_defaults_and_refuses_auto_commit() {
        let c = config(&["a:1", "b:2"], "g", [("auto.offset.reset", "earliest")]).unwrap();
        assert_eq!(c.group_id(), Some("g"));
        assert!(!c.auto_commit());
        assert_eq!(c.prefetch_budget(), 10_000 * 1024);
        assert_eq!(c.client().bootstrap_servers(), ["a:1", "b:2"]);
        // The constructor's servers and group win over overrides.
        let c = config(
            &["a:1"],
            "g",
            [("group.id", "other"), ("bootstrap.servers", "c:3")],
        )
        .unwrap();
        assert_eq!(c.group_id(), Some("g"));
        assert_eq!(c.client().bootstrap_servers(), ["a:1"]);
        assert!(config(&["a:1"], "g", [("enable.auto.commit", "false")]).is_ok());
        for on in ["true", "TRUE", " true"] {
            let e = config(&["a:1"], "g", [("enable.auto.commit", on)]).unwrap_err();
            assert!(
                matches!(&e, Error::Config(ConfigError::InvalidValue { key, .. }) if key == "enable.auto.commit"),
                "{e}"
            );
            assert!(e.to_string().contains("enable.auto.commit"), "{e}");
        }
        let e = config(&["a:1"], "g", [("queued.min.messages", "100")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown configuration key `queued.min.messages`"
        );
        assert!(config(&["a:1"], " ", std::iter::empty::<(&str, &str)>()).is_err());
    }

    #[test]
    fn the_consumer_group_protocol_takes_the_phq_defaults_but_not_a_callers_session() {
        // The PHQ defaults set session.timeout.ms and heartbeat.interval.ms, which the
        // consumer protocol leaves to the broker: not the caller's, so not an error.
        let c = config(&["a:1"], "g", [("group.protocol", "consumer")]).unwrap();
        assert_eq!(c.group_protocol(), kafka::GroupProtocol::Consumer);
        c.validate().unwrap();
        let c = config(
            &["a:1"],
            "g",
            [
                ("group.protocol", "consumer"),
                ("session.timeout.ms", "9000"),
            ],
        )
        .unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("`session.timeout.ms`"), "{e}");
    }
}
