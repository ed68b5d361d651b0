//! Paperboy: a pure-Rust Kafka client and consumer engine.
//!
//! No librdkafka and no C anywhere in the dependency graph: a service that uses Paperboy
//! builds into a static musl binary and cross-compiles with no C toolchain.
//!
//! # Layers
//! - [`paperboy_protocol`] (re-exported as [`protocol`]): the wire layer, pure and
//!   I/O-free: framing, version negotiation, and a bounded, zero-copy record batch codec.
//! - [`Client`]: connections to brokers (pipelined, with timeouts), API version
//!   negotiation, metadata, retries with backoff, topic administration, and the
//!   partition-level produce, fetch and list-offsets requests.
//! - [`producer`] and [`consumer`]: batching, partitioning and idempotence; group
//!   membership, commits and a prefetch queue bounded in bytes.
//! - [`engine`]: per-topic handlers with lifecycle hooks, single and bulk modes that
//!   switch on lag, retries, a dead-letter topic, and commits that never get ahead of
//!   handling.
//! - [`envelope`]: the PHQ JSON envelope, byte for byte as Python's `json` writes it,
//!   under both the engine (its `Envelope` payload) and the PHQ API.
//! - [`phq`]: the PHQ `Producer`, `Consumer` and `Message` with their JSON envelope.
//! - [`security`]: TLS and SASL (PLAIN, SCRAM, OAUTHBEARER) with no C.
//!
//! Layers only call downward: protocol ← client ← producer/consumer ← envelope ←
//! engine and phq.
//!
//! # Metrics
//! With the cargo feature `metrics` (off by default), requests, producers, consumers and
//! the engine record counters, gauges and histograms through the
//! [`metrics`](https://docs.rs/metrics) facade, named after OpenTelemetry's messaging
//! conventions (`messaging.client.sent.messages`, `messaging.client.consumed.messages`,
//! `messaging.client.operation.duration`...); install a recorder (e.g.
//! `metrics-exporter-prometheus`) before connecting a client. The README lists every
//! metric and its labels. Without the feature the instrumentation compiles to nothing.
//!
//! # Example
//! ```no_run
//! use paperboy::{Acks, Client, ClientConfig, Compression, FetchOptions, NewRecord, NewTopic};
//! use paperboy::protocol::records;
//!
//! # async fn run() -> paperboy::Result<()> {
//! let client = Client::connect(ClientConfig::new("127.0.0.1:9092")).await?;
//! client.create_topics(&[NewTopic::new("greetings", 1, 1)]).await?;
//! let record = NewRecord {
//!     key: Some("k".into()),
//!     value: Some("hello".into()),
//!     ..NewRecord::default()
//! };
//! let ack = client
//!     .produce("greetings", 0, &[record], Compression::Snappy, Acks::All)
//!     .await?;
//! let fetched = client
//!     .fetch("greetings", 0, ack.base_offset, FetchOptions::default())
//!     .await?;
//! for batch in records::batches(fetched.records, Default::default()) {
//!     for record in batch?.records()? {
//!         println!("{:?}", record?.value);
//!     }
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs, unnameable_types)]
#![forbid(unsafe_code)]

mod backoff;
mod client;
mod config;
mod conn;
pub mod consumer;
pub mod engine;
pub mod envelope;
mod error;
mod group_protocol;
mod kafka_code;
pub mod metadata;
mod offsets;
pub mod phq;
pub mod producer;
pub mod security;
mod shutdown;
mod telemetry;

pub use client::{
    Acks, Client, ConfigEntry, ConfigResource, FetchOptions, FetchedPartition, GroupDescription,
    GroupListing, IsolationLevel, MemberDescription, NewTopic, OffsetSpec, ProduceAck,
};
pub use config::ClientConfig;
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord};
pub use error::{ConfigError, Error, KafkaCode, Result};
pub use offsets::{ConsumerGroupMetadata, TopicPartition};
/// The wire layer Paperboy's public API shows: the record batch codec and compression of
/// the `paperboy-protocol` crate, and its framing error (the source of
/// [`Error::Protocol`]). Depend on `paperboy-protocol` for the rest (framing, version
/// negotiation), which speaks kafka-protocol's types.
pub mod protocol {
    pub use paperboy_protocol::{compression, records};

    /// Request and response framing: its error.
    pub mod frame {
        pub use paperboy_protocol::frame::{api_name, FrameError};
    }
}
pub use paperboy_protocol::compression::Compression;
pub use paperboy_protocol::records::{NewRecord, RecordHeader};
pub use producer::{Delivery, Producer, ProducerConfig, ProducerRecord};
pub use shutdown::Shutdown;

/// The producer's accumulator and batch building, for `benches/producer.rs`. Not part of
/// the API: it may change in any release.
#[doc(hidden)]
pub mod __bench {
    pub use crate::producer::accumulator::bench::{Accumulator, ReadyBatch};
}

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
