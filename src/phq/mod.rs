//! The PHQ API: the `Producer`, `Consumer` and `Message` of PredictHQ's Python Kafka
//! library, in Rust, reading and writing the same JSON envelope byte for byte, so Rust
//! services and Python services share topics.
//!
//! A service reads batches of messages, handles them, and produces what it made of them;
//! each batch is committed only after its handler succeeds, and each message produced
//! from a consumed one carries that one's history in its refs:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use paperboy::phq::{Consumer, Message, Producer};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let servers = ["127.0.0.1:9092"];
//! let producer = Producer::new("my-service-name", &servers).await?;
//! let batch = vec![Message::new("some_id", json!({"data": "my message"}))];
//! producer.produce_batch("events", &batch).await?;
//!
//! let consumer =
//!     Consumer::new(&servers, &["events"], "my-service-name", 100, Duration::from_secs(1))
//!         .await?;
//! consumer.shutdown_on_signals()?; // SIGINT/SIGTERM: finish the batch, commit, return
//! consumer
//!     .process(|messages: Vec<Message>| {
//!         let producer = producer.clone();
//!         async move {
//!             for m in &messages {
//!                 println!("{}: {} (from {})", m.id, m.payload, m.refs[0]["offset"]);
//!             }
//!             producer.produce_batch("events-seen", &messages).await
//!         }
//!     })
//!     .await?;
//! consumer.close().await;
//! producer.close().await;
//! # Ok(()) }
//! ```

mod consumer;
mod error;

/// The PHQ JSON envelope: [`crate::envelope`], re-exported here where it used to live.
pub use crate::envelope;

use serde::Serialize;
use serde_json::Value;
use tracing::warn;

use crate::error::{ConfigError, Error, KafkaCode, Result};
use crate::producer::{self, ProducerConfig, ProducerRecord};

pub use consumer::{Consumer, StopHandle, Undecodable, UndecodableCallback, CONSUMER_DEFAULTS};
pub use error::PhqError;

/// A message: an id (the Kafka key), a JSON payload, and the refs that trace where it
/// came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<T = Value> {
    /// The message id, written as the record key (a consumed record with a null key has
    /// an empty id).
    pub id: String,
    /// The payload: the envelope's `item`, written as it serializes. A [`Value`]'s
    /// objects hold their keys sorted (Paperboy does not turn on serde_json's
    /// `preserve_order`), so a consumed `Value` payload produced on has its keys sorted;
    /// an [`OrderedValue`](crate::envelope::OrderedValue) (see
    /// [`Consumer::with_payload`]) keeps the order read, as the Python library does.
    pub payload: T,
    /// The history refs, written as the envelope's `hist.refs`. A consumed message has
    /// one: where it was read, `{"topic", "partition", "offset", "key", "hist"}`, with
    /// the history it arrived with; producing it on nests that history. Written with
    /// each ref's keys `{"topic", "partition", "offset", "key", "hist"}` and each
    /// history's `{"svc", "dt", "refs"}` in that order, as the Python library writes
    /// them, though a `Value` holds them sorted (see
    /// [`envelope`](crate::envelope#key-order)).
    pub refs: Vec<Value>,
    /// The topic it was read from (set by consumers).
    pub topic: Option<String>,
}

impl<T> Message<T> {
    /// A message with no refs.
    pub fn new(id: impl Into<String>, payload: T) -> Self {
        Message {
            id: id.into(),
            payload,
            refs: Vec::new(),
            topic: None,
        }
    }

    /// Sets the refs. As in the Python library, one ref object becomes `[ref]`, an array
    /// passes through, and null becomes `[]`.
    #[must_use]
    pub fn with_refs(mut self, refs: Value) -> Self {
        self.refs = match refs {
            Value::Null => Vec::new(),
            Value::Array(a) => a,
            one => vec![one],
        };
        self
    }
}

/// The PHQ producer settings applied before the caller's overrides.
pub const PRODUCER_DEFAULTS: [(&str, &str); 3] = [
    ("compression.type", "snappy"),
    ("acks", "all"),
    ("retries", "3"),
];

/// The PHQ `Producer`: JSON messages in the envelope, keyed by id, partitioned by key.
#[derive(Debug, Clone)]
pub struct Producer {
    inner: producer::Producer,
    service: String,
    ignore_large: bool,
}

impl Producer {
    /// A producer for `service_name` with the PHQ defaults.
    ///
    /// # Errors
    /// As [`Producer::with_config`].
    pub async fn new<S: AsRef<str>>(
        service_name: &str,
        bootstrap_servers: &[S],
    ) -> Result<Producer> {
        Self::with_config(
            service_name,
            bootstrap_servers,
            std::iter::empty::<(&str, &str)>(),
        )
        .await
    }

    /// A producer with config overrides by librdkafka/Java property name (they win over
    /// the PHQ defaults; `bootstrap.servers` comes from the argument).
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown key or bad value; connection errors.
    pub async fn with_config<S, I, K, V>(
        service_name: &str,
        bootstrap_servers: &[S],
        overrides: I,
    ) -> Result<Producer>
    where
        S: AsRef<str>,
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let servers: Vec<&str> = bootstrap_servers.iter().map(AsRef::as_ref).collect();
        let mut cfg = ProducerConfig::new(&servers.join(","));
        cfg.set("client.id", service_name)?;
        for (k, v) in PRODUCER_DEFAULTS {
            cfg.set(k, v)?;
        }
        for (k, v) in overrides {
            cfg.set(k.as_ref(), v.as_ref())?;
        }
        cfg.set("bootstrap.servers", &servers.join(","))?;
        Ok(Producer {
            inner: producer::Producer::new(cfg).await?,
            service: service_name.to_owned(),
            ignore_large: false,
        })
    }

    /// Skip (and log) messages too large for the broker instead of failing the batch,
    /// as the Python library's `ignore_large_message_errors`.
    pub fn ignore_large_message_errors(mut self, ignore: bool) -> Self {
        self.ignore_large = ignore;
        self
    }

    /// The producer underneath.
    pub fn producer(&self) -> &producer::Producer {
        &self.inner
    }

    /// Sends every message to `topic` in the envelope and waits for all of them.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty topic; [`Error::Json`] for a payload that does not
    /// serialize (before anything is sent), both as [`PhqError::Client`];
    /// [`PhqError::Undelivered`] naming every message
    /// that failed, with its error.
    pub async fn produce_batch<T: Serialize>(
        &self,
        topic: &str,
        messages: &[Message<T>],
    ) -> Result<(), PhqError> {
        if topic.is_empty() {
            return Err(Error::Config(ConfigError::Invalid(
                "produce_batch needs an output topic".into(),
            ))
            .into());
        }
        let dt = envelope::now_dt();
        let mut values = Vec::with_capacity(messages.len());
        for m in messages {
            values.push(envelope::pack(&self.service, &dt, &m.payload, &m.refs)?);
        }
        let mut pending = Vec::with_capacity(messages.len());
        let mut failed = Vec::new();
        for (m, value) in messages.iter().zip(values) {
            let record = ProducerRecord::new(topic)
                .with_key(m.id.clone().into_bytes())
                .with_value(value);
            match self.inner.enqueue(record).await {
                Ok(d) => pending.push((m, d)),
                Err(e) => failed.push((m, e)),
            }
        }
        for (m, d) in pending {
            if let Err(e) = d.await {
                failed.push((m, e));
            }
        }
        let failed: Vec<(String, Error)> = failed
            .into_iter()
            .filter(|(m, e)| {
                let large = matches!(e, Error::RecordTooLarge { .. })
                    || matches!(
                        e.kafka_code(),
                        Some(KafkaCode::MessageTooLarge | KafkaCode::RecordListTooLarge)
                    );
                if large && self.ignore_large {
                    warn!(id = %m.id, %topic, error = %e, "Tried to send message that was too large. Skipped.");
                    return false;
                }
                true
            })
            .map(|(m, e)| (m.id.clone(), e))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(PhqError::Undelivered {
                failed,
                total: messages.len(),
            })
        }
    }

    /// Delivers what is buffered and closes the connections.
    pub async fn close(&self) {
        self.inner.close().await;
    }
}
