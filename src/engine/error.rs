//! The engine's errors: a handler that failed, a value that did not decode, or the
//! client's error underneath.

use std::sync::Arc;

use crate::error::{Error, KafkaCode};

/// Why handling failed, or why the [`Engine`](super::Engine) stopped.
///
/// Handlers' [`on_error`](super::Handler::on_error) hooks get a
/// [`Handler`](EngineError::Handler) or a [`Payload`](EngineError::Payload) error;
/// [`Engine::run`](super::Engine::run) returns either, or the
/// [`Client`](EngineError::Client) error that stopped it (a commit, the group, the
/// dead-letter topic). `From<paperboy::Error>` lets `?` turn a client error into one.
///
/// ```
/// use paperboy::engine::EngineError;
///
/// fn describe(e: &EngineError) -> String {
///     match e {
///         EngineError::Handler { batch, source } => format!("{batch} failed: {source}"),
///         EngineError::Payload { record, reason } => format!("{record}: {reason}"),
///         EngineError::Client(e) if e.is_retriable() => format!("transient: {e}"),
///         other => other.to_string(),
///     }
/// }
/// let e = EngineError::from(paperboy::Error::Closed);
/// assert_eq!(describe(&e), "client is closed");
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A handler's hook failed (returned an error or panicked) on a record or batch.
    #[error("handler failed: {batch}: {source}")]
    Handler {
        /// The hook and the records: `on_message t[0=5:6]`, `on_bulk t[0=5:105]`
        /// (`topic[partition=first:last+1,...]`).
        batch: String,
        /// The hook's error (shared, so that the error can be cloned). Downcast it
        /// (`source.downcast_ref::<MyError>()`) to get the handler's own type back.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },

    /// A record's value did not decode into what its [handler](super::Handler)
    /// expects (not UTF-8, not JSON, not the expected type, not a PHQ envelope).
    #[error("record {record} does not decode: {reason}")]
    Payload {
        /// The record: `topic[partition]@offset`.
        record: String,
        /// What is wrong with its value.
        reason: String,
    },

    /// The client's error: consuming, committing, the group, the dead-letter topic's
    /// producer, or installing the signal handlers.
    #[error(transparent)]
    Client(#[from] Error),
}

impl EngineError {
    /// The client's error, when it is one.
    pub fn client(&self) -> Option<&Error> {
        match self {
            EngineError::Client(e) => Some(e),
            _ => None,
        }
    }

    /// Whether a handler's hook failed ([`EngineError::Handler`]).
    pub fn is_handler(&self) -> bool {
        matches!(self, EngineError::Handler { .. })
    }

    /// Whether a value did not decode ([`EngineError::Payload`]).
    pub fn is_payload(&self) -> bool {
        matches!(self, EngineError::Payload { .. })
    }

    /// Whether the client's error is retriable ([`Error::is_retriable`]); false for a
    /// handler's or a payload's error.
    pub fn is_retriable(&self) -> bool {
        self.client().is_some_and(Error::is_retriable)
    }

    /// The Kafka error code of the client's error, when the broker answered with one.
    pub fn kafka_code(&self) -> Option<KafkaCode> {
        self.client().and_then(Error::kafka_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_and_displays() {
        let h = EngineError::Handler {
            batch: "on_message t[0=5:6]".into(),
            source: Arc::from(Box::<dyn std::error::Error + Send + Sync>::from("boom")),
        };
        assert!(h.is_handler() && !h.is_payload() && !h.is_retriable());
        assert_eq!(h.to_string(), "handler failed: on_message t[0=5:6]: boom");
        let p = EngineError::Payload {
            record: "t[0]@5".into(),
            reason: "not JSON".into(),
        };
        assert!(p.is_payload() && p.client().is_none());
        assert_eq!(p.to_string(), "record t[0]@5 does not decode: not JSON");
        let c: EngineError = Error::from_code(6, None, || "fetch".into()).unwrap().into();
        assert!(c.is_retriable());
        assert_eq!(c.kafka_code(), Some(KafkaCode::NotLeaderOrFollower));
    }
}
