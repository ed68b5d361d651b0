//! The producer's configuration.

use std::time::Duration;

use paperboy_protocol::compression::Compression;

use crate::client::Acks;
use crate::config::{
    from_properties, invalid, non_empty, parse_bool, parse_kib, parse_ms, parse_num, unknown_key,
    ClientConfig,
};
use crate::error::ConfigError;

/// Settings of a [`Producer`](super::Producer): the client's, plus batching, delivery
/// and memory bounds.
///
/// | property (aliases) | default | meaning |
/// |---|---|---|
/// | every [`ClientConfig`] property | | `bootstrap.servers`, `client.id`, `retries`, ... |
/// | `allow.auto.create.topics` | true | producing to a missing topic has the broker create it (where `auto.create.topics.enable` allows); false: fails with [`Error::UnknownTopicOrPartition`](crate::Error::UnknownTopicOrPartition) |
/// | `linger.ms` (`queue.buffering.max.ms`) | 5 | how long a batch waits for more records |
/// | `batch.size` | 1000000 | bytes (uncompressed) at which a batch is closed |
/// | `batch.num.messages` | 10000 | records at which a batch is closed |
/// | `acks` (`request.required.acks`) | all | 0, 1, or all (-1) |
/// | `enable.idempotence` | true | no duplicates, no reordering on retry (needs acks=all) |
/// | `compression.type` (`compression.codec`) | snappy | none, gzip, snappy, lz4, zstd |
/// | `delivery.timeout.ms` (`message.timeout.ms`) | 120000 | a record not acknowledged in this time after it was enqueued fails, buffered, retrying or in flight |
/// | `message.max.bytes` (`max.request.size`) | 1000000 | the largest record accepted by `send` |
/// | `buffer.memory` | 67108864 | bytes of records buffered before `send` waits |
/// | `queue.buffering.max.kbytes` | 65536 | the same bound in KiB (librdkafka's name) |
/// | `queue.buffering.max.messages` | 100000 | records buffered before `send` waits |
/// | `max.block.ms` | 60000 | how long `enqueue`/`send` wait for the topic's metadata and buffer space before failing |
/// | `max.in.flight.requests.per.connection` (`max.in.flight`) | 5 | requests in flight per broker (at most 5 with idempotence) |
/// | `transactional.id` | (none) | makes the producer transactional: records are sent only within transactions ([`Producer::begin_transaction`](super::Producer::begin_transaction)); needs idempotence (turned on) and acks=all |
/// | `transaction.timeout.ms` | 60000 | the coordinator aborts a transaction open longer than this (at most the broker's `transaction.max.timeout.ms`) |
///
/// A Produce request waits for its answer `request.timeout.ms` (a [`ClientConfig`]
/// property, which the broker is also given as its own `timeout_ms`), and is retried
/// while its records have time left. Which setting bounds each call of the producer is
/// said on the call: [`Producer::new`](super::Producer::new) (`default.api.timeout.ms`),
/// [`enqueue`](super::Producer::enqueue) (`max.block.ms`), a delivery
/// (`delivery.timeout.ms`), [`flush`](super::Producer::flush) and
/// [`close`](super::Producer::close) (`delivery.timeout.ms`).
///
/// # Example
/// ```
/// use paperboy::producer::ProducerConfig;
///
/// let config = ProducerConfig::from_properties([
///     ("bootstrap.servers", "127.0.0.1:9092"),
///     ("linger.ms", "20"),
///     ("compression.type", "lz4"),
/// ])?;
/// assert_eq!(config.linger(), std::time::Duration::from_millis(20));
///
/// let err = ProducerConfig::from_properties([("linger.msec", "20")]).unwrap_err();
/// assert_eq!(err.to_string(), "unknown configuration key `linger.msec`");
/// # Ok::<(), paperboy::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub(crate) client: ClientConfig,
    pub(crate) linger: Duration,
    pub(crate) batch_size: usize,
    pub(crate) batch_records: usize,
    pub(crate) acks: Acks,
    pub(crate) idempotence: bool,
    idempotence_set: bool,
    pub(crate) compression: Compression,
    pub(crate) delivery_timeout: Duration,
    pub(crate) max_record_bytes: usize,
    pub(crate) buffer_bytes: usize,
    pub(crate) buffer_records: usize,
    pub(crate) max_block: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) transactional_id: Option<String>,
    pub(crate) transaction_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            // Producing to a missing topic has the broker create it where it allows, as
            // the Java and librdkafka producers do.
            client: ClientConfig {
                allow_auto_create_topics: true,
                ..ClientConfig::default()
            },
            linger: Duration::from_millis(5),
            batch_size: 1_000_000,
            batch_records: 10_000,
            acks: Acks::All,
            idempotence: true,
            idempotence_set: false,
            compression: Compression::Snappy,
            delivery_timeout: Duration::from_secs(120),
            max_record_bytes: 1_000_000,
            buffer_bytes: 64 << 20,
            buffer_records: 100_000,
            max_block: Duration::from_secs(60),
            max_in_flight: 5,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }
}

impl ProducerConfig {
    /// The defaults, with these bootstrap servers.
    pub fn new(bootstrap_servers: &str) -> Self {
        ProducerConfig {
            client: ClientConfig {
                allow_auto_create_topics: true,
                ..ClientConfig::new(bootstrap_servers)
            },
            ..ProducerConfig::default()
        }
    }

    /// Builds a configuration from properties, starting from the defaults.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first unknown key or malformed value.
    pub fn from_properties<I, K, V>(props: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        from_properties(ProducerConfig::default(), ProducerConfig::set, props)
    }

    /// Sets one property by its librdkafka/Java name.
    ///
    /// # Errors
    /// [`ConfigError::UnknownKey`] for a key the producer does not know,
    /// [`ConfigError::InvalidValue`] for a value that does not parse.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self, ConfigError> {
        if !self.try_set(key, value)? {
            return Err(unknown_key(key));
        }
        Ok(self)
    }

    pub(crate) fn try_set(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        match key {
            "linger.ms" | "queue.buffering.max.ms" => self.linger = parse_ms(key, value, 0)?,
            "batch.size" => self.batch_size = parse_num(key, value, 1)?,
            "batch.num.messages" => self.batch_records = parse_num(key, value, 1)?,
            "acks" | "request.required.acks" => {
                self.acks = value.trim().parse()?;
            }
            "enable.idempotence" => {
                self.idempotence = parse_bool(key, value)?;
                self.idempotence_set = true;
            }
            "compression.type" | "compression.codec" => {
                self.compression = value
                    .parse()
                    .map_err(|_| invalid(key, value, "none, gzip, snappy, lz4 or zstd"))?;
            }
            "delivery.timeout.ms" | "message.timeout.ms" => {
                self.delivery_timeout = parse_ms(key, value, 1)?
            }
            "message.max.bytes" | "max.request.size" => {
                self.max_record_bytes = parse_num(key, value, 100)?
            }
            "buffer.memory" => self.buffer_bytes = parse_num(key, value, 1024)?,
            "queue.buffering.max.kbytes" => self.buffer_bytes = parse_kib(key, value)?,
            "queue.buffering.max.messages" => self.buffer_records = parse_num(key, value, 1)?,
            "max.block.ms" => self.max_block = parse_ms(key, value, 0)?,
            "max.in.flight.requests.per.connection" | "max.in.flight" => {
                self.max_in_flight = parse_num(key, value, 1)?
            }
            "transactional.id" => self.transactional_id = non_empty(value),
            "transaction.timeout.ms" => self.transaction_timeout = parse_ms(key, value, 1)?,
            _ => return self.client.try_set(key, value),
        }
        Ok(true)
    }

    /// The client settings inside.
    pub fn client(&self) -> &ClientConfig {
        &self.client
    }

    /// How long a batch waits for more records.
    pub fn linger(&self) -> Duration {
        self.linger
    }

    /// Sets `linger.ms`.
    #[must_use]
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets `acks`.
    #[must_use]
    pub fn with_acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// Sets `compression.type`.
    #[must_use]
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets `enable.idempotence`.
    #[must_use]
    pub fn with_idempotence(mut self, on: bool) -> Self {
        self.idempotence = on;
        self.idempotence_set = true;
        self
    }

    /// Sets `batch.size` (bytes) and `batch.num.messages`.
    #[must_use]
    pub fn with_batch_limits(mut self, bytes: usize, records: usize) -> Self {
        self.batch_size = bytes.max(1);
        self.batch_records = records.max(1);
        self
    }

    /// Sets the buffer bounds (`buffer.memory` in bytes, `queue.buffering.max.messages`)
    /// and how long `send` waits for room (`max.block.ms`).
    #[must_use]
    pub fn with_buffer(mut self, bytes: usize, records: usize, max_block: Duration) -> Self {
        self.buffer_bytes = bytes.max(1);
        self.buffer_records = records.max(1);
        self.max_block = max_block;
        self
    }

    /// Sets `delivery.timeout.ms`.
    #[must_use]
    pub fn with_delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// Sets `message.max.bytes`: the largest record `send` accepts.
    #[must_use]
    pub fn with_max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Sets `transactional.id`, which makes the producer transactional.
    #[must_use]
    pub fn with_transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transactional_id = Some(id.into());
        self
    }

    /// `transactional.id`, when set.
    pub fn transactional_id(&self) -> Option<&str> {
        self.transactional_id.as_deref()
    }

    /// Sets `transaction.timeout.ms`.
    #[must_use]
    pub fn with_transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = timeout;
        self
    }

    /// Sets a client property (see [`ClientConfig`]) through the typed builder.
    ///
    /// # Errors
    /// As [`ProducerConfig::set`].
    pub fn with(mut self, key: &str, value: &str) -> Result<Self, ConfigError> {
        self.set(key, value)?;
        Ok(self)
    }

    /// Checks the settings together. Idempotence is on by default and turned off
    /// quietly by acks=0/1 unless it was asked for explicitly, which is an error.
    pub(crate) fn validate(&mut self) -> Result<(), ConfigError> {
        self.client.validate()?;
        if self.transactional_id.is_some() {
            if self.idempotence_set && !self.idempotence {
                return Err(ConfigError::Invalid(
                    "transactional.id needs enable.idempotence=true".into(),
                ));
            }
            if self.acks != Acks::All {
                return Err(ConfigError::Invalid(
                    "transactional.id needs acks=all".into(),
                ));
            }
            self.idempotence = true;
        }
        if self.idempotence && self.acks != Acks::All {
            if self.idempotence_set {
                return Err(ConfigError::Invalid(
                    "enable.idempotence=true needs acks=all".into(),
                ));
            }
            self.idempotence = false;
        }
        if self.idempotence && self.max_in_flight > 5 {
            if self.idempotence_set {
                return Err(ConfigError::Invalid(
                    "enable.idempotence=true needs max.in.flight.requests.per.connection <= 5"
                        .into(),
                ));
            }
            self.max_in_flight = 5;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_layer_over_the_client() {
        let mut c = ProducerConfig::from_properties([
            ("bootstrap.servers", "a:1,b:2"),
            ("client.id", "svc"),
            ("linger.ms", "0"),
            ("compression.codec", "zstd"),
            ("acks", "1"),
            ("queue.buffering.max.kbytes", "2"),
        ])
        .unwrap();
        assert_eq!(c.client.client_id(), "svc");
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.buffer_bytes, 2048);
        c.validate().unwrap();
        assert!(!c.idempotence, "acks=1 turns default idempotence off");

        let err = ProducerConfig::from_properties([("acks", "2")]).unwrap_err();
        assert!(err.to_string().contains("`acks`"), "{err}");
        let err = ProducerConfig::from_properties([("compression.type", "brotli")]).unwrap_err();
        assert!(err.to_string().contains("brotli"), "{err}");

        let mut c = ProducerConfig::from_properties([
            ("bootstrap.servers", "a:1"),
            ("acks", "0"),
            ("enable.idempotence", "true"),
        ])
        .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("acks=all"));
    }
}
