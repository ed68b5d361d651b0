//! Building an [`Engine`]: its settings, handlers, observer, dead-letter producer and
//! exactly-once producer, checked together.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};

use super::exactly_once::ExactlyOnce;
use super::handler::Dispatch;
use super::{DeadLetter, Engine, EngineConfig, Handler, Health, Observer, Shared, ShutdownHandle};
use crate::config::invalid;
use crate::consumer::{Consumer, ConsumerConfig};
use crate::error::{ConfigError, Result};
use crate::producer::{Producer, ProducerConfig};

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
    pub(super) fn new(consumer: ConsumerConfig) -> Self {
        EngineBuilder {
            consumer,
            config: EngineConfig::default(),
            handlers: Vec::new(),
            observer: None,
            dead_letter_producer: None,
            exactly_once: None,
        }
    }

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

    /// Sets the hook that sees every [`Event`](super::Event).
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
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
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
    /// engine.run().await?;
    /// # Ok(()) }
    /// ```
    pub fn exactly_once(mut self, producer: Producer) -> Self {
        self.exactly_once = Some(producer);
        self
    }

    /// Checks the settings and connects.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) when auto-commit is on (`enable.auto.commit`), without a
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
            if !self.config.commit {
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
