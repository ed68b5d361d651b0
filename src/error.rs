//! The error type of the client, producer and consumer (the engine and the PHQ API wrap
//! it in their own: [`EngineError`](crate::engine::EngineError),
//! [`PhqError`](crate::phq::PhqError)).
//!
//! [`Error`] is one enum callers can match on, with predicates for the questions callers
//! actually ask: is it worth retrying ([`Error::is_retriable`]), did the broker say so
//! ([`Error::kafka_code`]), was it a timeout ([`Error::is_timeout`]).

use std::time::Duration;

pub use crate::kafka_code::KafkaCode;
use paperboy_protocol::frame::FrameError;

/// A `Result` whose error is Paperboy's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Paperboy.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration key is unknown, or its value is malformed or out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A socket operation with a broker failed.
    #[error("I/O error talking to {broker}: {source}")]
    Io {
        /// `host:port` of the broker.
        broker: String,
        /// The underlying error (shared, so that the error can be cloned to every record
        /// of a failed batch).
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },

    /// The connection to a broker is gone (closed by the peer, or broken by an earlier
    /// error); requests in flight on it failed with this error.
    #[error("connection to {broker} closed: {reason}")]
    Disconnected {
        /// `host:port` of the broker.
        broker: String,
        /// Why the connection ended.
        reason: String,
    },

    /// An operation did not complete in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long it was waited for.
        after: Duration,
    },

    /// Bytes from a broker did not decode, or a request did not encode.
    #[error("protocol error with {broker}: {source}")]
    Protocol {
        /// `host:port` of the broker.
        broker: String,
        /// The framing or decoding error.
        #[source]
        source: FrameError,
    },

    /// A record batch did not decode.
    #[error(transparent)]
    Decode(#[from] paperboy_protocol::records::DecodeError),

    /// Records did not encode.
    #[error(transparent)]
    Encode(#[from] paperboy_protocol::records::EncodeError),

    /// A record is larger than the producer accepts (`message.max.bytes`) or than its
    /// whole buffer; or the broker refused it as too large (MESSAGE_TOO_LARGE comes as
    /// [`Error::Kafka`]).
    #[error("record of {size} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge {
        /// The record's encoded size (estimated).
        size: usize,
        /// The limit it exceeds.
        limit: usize,
    },

    /// The producer's buffer stayed full for `max.block.ms`.
    #[error("producer buffer full: no room for the record within {waited:?}")]
    BufferFull {
        /// How long `send` waited.
        waited: Duration,
    },

    /// A message could not be serialized or deserialized as JSON.
    #[error("JSON error: {0}")]
    Json(String),

    /// A broker's response lacks what the request asked about.
    #[error("{0}")]
    IncompleteResponse(String),

    /// The broker answered with a Kafka error code.
    #[error("{context}: {code} (Kafka error {num}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(), num = code.code())]
    Kafka {
        /// The error code.
        code: KafkaCode,
        /// What the request was about (API, topic, partition).
        context: String,
        /// The broker's own message, when it sent one.
        message: Option<String>,
    },

    /// The broker does not support any version of an API this client speaks.
    #[error("broker {broker} supports no version of {api} that Paperboy speaks")]
    UnsupportedVersion {
        /// `host:port` of the broker.
        broker: String,
        /// The API, by Kafka's name for it (`Produce`, `ConsumerGroupHeartbeat`, ...).
        api: String,
    },

    /// No broker could be reached (every bootstrap address and known broker failed).
    #[error("no broker reachable: {0}")]
    NoBrokerAvailable(String),

    /// The topic or partition is not in the cluster's metadata.
    #[error("unknown topic or partition {topic}{}", partition.map(|p| format!("[{p}]")).unwrap_or_default())]
    UnknownTopicOrPartition {
        /// The topic.
        topic: String,
        /// The partition, when one was asked for.
        partition: Option<i32>,
    },

    /// The partition is not assigned to this consumer (never was, or was revoked in a
    /// rebalance).
    #[error("not assigned to this consumer: {0}")]
    NotAssigned(String),

    /// The partition has no committed offset and `auto.offset.reset` is `error`, or its
    /// position is out of range with that setting.
    #[error("no valid offset for {0} and auto.offset.reset=error")]
    NoOffset(String),

    /// Fetching a partition has failed for `fetch.error.timeout.ms` (the broker is gone,
    /// does not answer, or answers what cannot be read). Surfaced once per period by
    /// `recv`/`recv_batch`; fetching goes on with backoff on fresh connections, and the
    /// other partitions are not held up.
    #[error("fetching {partition} from {broker} has failed for {failing_for:?}: {cause}")]
    FetchFailed {
        /// The partition: `topic[partition]`.
        partition: String,
        /// `host:port` of the broker it is fetched from.
        broker: String,
        /// How long it has been failing.
        failing_for: Duration,
        /// The latest failure.
        cause: Box<Error>,
    },

    /// The partition's leader no longer has the records before the position: its log was
    /// truncated after a leader change (an unclean election), found by validating the
    /// position against the new leader (KIP-320). Surfaced when `auto.offset.reset` is
    /// `error`; with `earliest` or `latest` the consumer resumes at the first offset that
    /// diverged (or resets by the setting when the leader cannot say where) and logs it.
    #[error("log truncation detected on {partition}: position {position}, the leader's log diverges at {}", diverging_offset.map_or_else(|| "an unknown offset".to_owned(), |o| o.to_string()))]
    LogTruncation {
        /// The partition: `topic[partition]`.
        partition: String,
        /// The consumer's position when the truncation was detected.
        position: i64,
        /// The first offset the leader's log does not share with what was consumed, when
        /// the leader knows it.
        diverging_offset: Option<i64>,
    },

    /// The TLS connection to a broker could not be set up: its certificate is not
    /// trusted or not valid for its name, the broker refused ours, the listener does not
    /// speak TLS (or speaks it where plaintext was configured), or this CPU lacks what the
    /// crypto provider needs. Not retriable: the same settings fail the same way.
    #[error("TLS{} failed: {message}", if broker.is_empty() { String::new() } else { format!(" with {broker}") })]
    Tls {
        /// `host:port` of the broker (empty when no broker was involved yet).
        broker: String,
        /// What happened and what to check.
        message: String,
    },

    /// SASL authentication with a broker failed: wrong credentials, a mechanism the
    /// listener does not enable, or a listener that does not use SASL. Not retriable.
    #[error("SASL {mechanism} authentication with {broker} failed: {message}")]
    Authentication {
        /// `host:port` of the broker.
        broker: String,
        /// The SASL mechanism (`PLAIN`, `SCRAM-SHA-256`, ...).
        mechanism: String,
        /// What happened and what to check (never a password, key or token).
        message: String,
    },

    /// A transactional producer was fenced: a newer producer with the same
    /// `transactional.id` started (or the coordinator no longer accepts this one's id or
    /// epoch, or it is not authorized for the id). The producer cannot be used any
    /// more: every call fails with this error; close it. Not retriable.
    #[error("producer with transactional.id {transactional_id} was fenced: {reason}")]
    Fenced {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// Why.
        reason: String,
    },

    /// A transaction cannot go on as asked: the call does not fit the transaction's
    /// state (a send outside a transaction, a commit with none begun), or the
    /// transaction failed (one of its records failed, or the coordinator refused a
    /// request) and can only be aborted. Records not yet sent when a transaction is
    /// aborted fail with it too. The producer goes on after
    /// [`abort_transaction`](crate::Producer::abort_transaction).
    #[error("transaction: {message}{}", cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
    Transaction {
        /// What happened.
        message: String,
        /// The error that failed the transaction, when one did.
        cause: Option<Box<Error>>,
    },

    /// The client was closed.
    #[error("client is closed")]
    Closed,
}

impl Error {
    /// Whether trying the same operation again may succeed.
    ///
    /// True for broker errors Kafka marks retriable (leader moves, timeouts, coordinator
    /// loads), for lost connections and for timeouts; false for everything that would
    /// fail the same way again (bad configuration, authorization, records too large,
    /// corrupt data).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka { code, .. } => code.is_retriable(),
            Error::Io { .. }
            | Error::Disconnected { .. }
            | Error::Timeout { .. }
            | Error::FetchFailed { .. }
            | Error::NoBrokerAvailable(_) => true,
            _ => false,
        }
    }

    /// Whether the error means the client's metadata is out of date: the leader moved,
    /// or the topic is not (yet) known where the request went.
    pub fn is_stale_metadata(&self) -> bool {
        matches!(
            self.kafka_code(),
            Some(
                KafkaCode::NotLeaderOrFollower
                    | KafkaCode::LeaderNotAvailable
                    | KafkaCode::UnknownTopicOrPartition
                    | KafkaCode::FencedLeaderEpoch
                    | KafkaCode::UnknownLeaderEpoch
                    | KafkaCode::UnknownTopicId
                    | KafkaCode::InconsistentTopicId
                    | KafkaCode::NotController
                    | KafkaCode::ReplicaNotAvailable
            )
        ) || matches!(
            self,
            Error::Disconnected { .. } | Error::Io { .. } | Error::UnknownTopicOrPartition { .. }
        )
    }

    /// The Kafka error code, when the broker answered with one.
    pub fn kafka_code(&self) -> Option<KafkaCode> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the error is about security: a failed TLS handshake or SASL
    /// authentication, or a broker's authorization refusal.
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::Tls { .. } | Error::Authentication { .. })
            || matches!(
                self.kafka_code(),
                Some(
                    KafkaCode::SaslAuthenticationFailed
                        | KafkaCode::UnsupportedSaslMechanism
                        | KafkaCode::IllegalSaslState
                        | KafkaCode::TopicAuthorizationFailed
                        | KafkaCode::GroupAuthorizationFailed
                        | KafkaCode::ClusterAuthorizationFailed
                        | KafkaCode::TransactionalIdAuthorizationFailed
                )
            )
    }

    /// Whether the error is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
            || self.kafka_code() == Some(KafkaCode::RequestTimedOut)
    }

    /// Whether this client was fenced: a transactional producer replaced by a newer one
    /// with its `transactional.id` ([`Error::Fenced`]), or a static member replaced by a
    /// newer one with its `group.instance.id` (FENCED_INSTANCE_ID). Final: make a new
    /// client.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Fenced { .. })
            || matches!(
                self.kafka_code(),
                Some(KafkaCode::ProducerFenced | KafkaCode::FencedInstanceId)
            )
    }

    /// Whether a setting is wrong ([`Error::Config`]): fix the configuration.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config(_))
    }

    /// Whether the connection to a broker failed or was lost (I/O, closed, TLS).
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            Error::Io { .. }
                | Error::Disconnected { .. }
                | Error::Tls { .. }
                | Error::NoBrokerAvailable(_)
        )
    }

    /// Builds an [`Error::Kafka`] from a response's error code, or `None` for code 0.
    pub(crate) fn from_code(
        code: i16,
        message: Option<&str>,
        context: impl FnOnce() -> String,
    ) -> Option<Error> {
        if code == 0 {
            return None;
        }
        let code = KafkaCode::try_from_code(code).unwrap_or(KafkaCode::Unknown(code));
        Some(Error::Kafka {
            code,
            context: context(),
            message: message.filter(|m| !m.is_empty()).map(str::to_owned),
        })
    }
}

/// A configuration key that is unknown, or whose value is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The key is not one this component accepts.
    #[error("unknown configuration key `{key}`")]
    UnknownKey {
        /// The key as given.
        key: String,
    },
    /// The value does not parse, or is out of range.
    #[error("invalid value `{value}` for `{key}`: {expected}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// What a valid value looks like.
        expected: String,
    },
    /// A required key is missing, or two settings conflict.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_and_small_enough() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
    }

    #[test]
    fn predicates_sort_errors() {
        let fenced = Error::Fenced {
            transactional_id: "t".into(),
            reason: "newer".into(),
        };
        assert!(fenced.is_fenced() && !fenced.is_retriable());
        assert!(Error::from_code(82, None, String::new).unwrap().is_fenced());
        let cfg: Error = ConfigError::UnknownKey { key: "x".into() }.into();
        assert!(cfg.is_config() && !cfg.is_connection());
        let gone = Error::Disconnected {
            broker: "b:1".into(),
            reason: "closed".into(),
        };
        assert!(gone.is_connection() && gone.is_retriable() && !gone.is_fenced());
    }

    #[test]
    fn kafka_codes_classify() {
        let e = Error::from_code(6, None, || "produce t[0]".into()).unwrap();
        assert!(e.is_retriable());
        assert!(e.is_stale_metadata());
        assert_eq!(e.kafka_code(), Some(KafkaCode::NotLeaderOrFollower));
        assert!(e.to_string().starts_with("produce t[0]: "), "{e}");
        let e = Error::from_code(10, Some("too big"), || "produce".into()).unwrap();
        assert!(!e.is_retriable());
        assert!(e.to_string().ends_with(": too big"), "{e}");
        assert!(Error::from_code(0, None, String::new).is_none());
        let unknown = Error::from_code(9999, None, || "x".into()).unwrap();
        assert_eq!(unknown.kafka_code(), Some(KafkaCode::Unknown(9999)));
        assert!(!unknown.is_retriable());
    }
}
