//! The PHQ API's errors: a handler that failed, messages that were not delivered, or
//! the client's error underneath.

use std::sync::Arc;

use crate::error::{Error, KafkaCode};

/// Why [`Consumer::process`](super::Consumer::process) or
/// [`Producer::produce_batch`](super::Producer::produce_batch) failed.
///
/// `From<paperboy::Error>` lets `?` turn a client error into one.
///
/// ```
/// use paperboy::phq::PhqError;
///
/// fn retry_worthwhile(e: &PhqError) -> bool {
///     match e {
///         PhqError::Undelivered { failed, .. } => failed.iter().all(|(_, e)| e.is_retriable()),
///         PhqError::Client(e) => e.is_retriable(),
///         _ => false,
///     }
/// }
/// assert!(!retry_worthwhile(&PhqError::from(paperboy::Error::Closed)));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PhqError {
    /// The handler of a [PHQ consumer](super::Consumer) failed on a batch; nothing of
    /// the batch was committed.
    #[error("handler failed on batch {batch}: {source}")]
    Handler {
        /// The batch, as [`format_batch_ref`](crate::envelope::format_batch_ref)
        /// writes it: `topic[partition=first:last+1,...]`.
        batch: String,
        /// The handler's error (shared, so that the error can be cloned). Downcast it
        /// (`source.downcast_ref::<MyError>()`) to get the handler's own type back.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },

    /// Some messages of a batch were not delivered: `(message id, why)` for each.
    #[error("{} of {total} messages were not delivered (first: {}: {})", failed.len(), failed.first().map(|f| f.0.as_str()).unwrap_or("?"), failed.first().map(|f| f.1.to_string()).unwrap_or_default())]
    Undelivered {
        /// The failed messages' ids, with their errors.
        failed: Vec<(String, Error)>,
        /// How many messages the batch had.
        total: usize,
    },

    /// The client's error: a bad setting, a record that does not decode
    /// ([`Error::Json`]), consuming, committing, the group.
    #[error(transparent)]
    Client(#[from] Error),
}

impl PhqError {
    /// The client's error, when it is one.
    pub fn client(&self) -> Option<&Error> {
        match self {
            PhqError::Client(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the handler failed ([`PhqError::Handler`]).
    pub fn is_handler(&self) -> bool {
        matches!(self, PhqError::Handler { .. })
    }

    /// Whether the client's error is retriable ([`Error::is_retriable`]); for
    /// [`PhqError::Undelivered`], whether every message's error is; false for the
    /// handler's.
    pub fn is_retriable(&self) -> bool {
        match self {
            PhqError::Client(e) => e.is_retriable(),
            PhqError::Undelivered { failed, .. } => failed.iter().all(|(_, e)| e.is_retriable()),
            PhqError::Handler { .. } => false,
        }
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
        let u = PhqError::Undelivered {
            failed: vec![("a".into(), Error::Closed)],
            total: 3,
        };
        assert_eq!(
            u.to_string(),
            "1 of 3 messages were not delivered (first: a: client is closed)"
        );
        assert!(!u.is_retriable() && !u.is_handler());
        let h = PhqError::Handler {
            batch: "t[0=1:2]".into(),
            source: Arc::from(Box::<dyn std::error::Error + Send + Sync>::from("boom")),
        };
        assert!(h.is_handler() && h.client().is_none());
        assert_eq!(h.to_string(), "handler failed on batch t[0=1:2]: boom");
        let c = PhqError::from(Error::from_code(7, None, || "produce".into()).unwrap());
        assert!(c.is_retriable());
        assert_eq!(c.kafka_code(), Some(KafkaCode::RequestTimedOut));
    }
}
