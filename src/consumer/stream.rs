//! The consumer as a [`Stream`] of records or of batches, for code built on stream
//! combinators. Both are cancel-safe as [`Consumer::recv`] is: dropping a stream (or a
//! `next()` on it) between items loses nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub use futures_core::Stream;

use super::{Consumer, ConsumerRecord};
use crate::error::{Error, Result};

type Pending<T> = Option<Pin<Box<dyn Future<Output = Result<T>> + Send>>>;

/// Records, one at a time: [`Consumer::stream`]. Ends after the consumer is closed.
pub struct RecordStream {
    consumer: Consumer,
    pending: Pending<ConsumerRecord>,
}

/// Batches of up to `max` records, each gathered for up to `timeout` (empty ones are
/// skipped): [`Consumer::batches`]. Ends after the consumer is closed.
pub struct BatchStream {
    consumer: Consumer,
    max: usize,
    timeout: Duration,
    pending: Pending<Vec<ConsumerRecord>>,
}

impl std::fmt::Debug for RecordStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStream").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for BatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchStream")
            .field("max", &self.max)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `Closed` ends a stream; everything else is an item.
fn item<T>(r: Result<T>) -> Option<Result<T>> {
    match r {
        Err(Error::Closed) => None,
        other => Some(other),
    }
}

impl Stream for RecordStream {
    type Item = Result<ConsumerRecord>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let consumer = this.consumer.clone();
        let fut = this
            .pending
            .get_or_insert_with(|| Box::pin(async move { consumer.recv().await }));
        let r = std::task::ready!(fut.as_mut().poll(cx));
        this.pending = None;
        Poll::Ready(item(r))
    }
}

impl Stream for BatchStream {
    type Item = Result<Vec<ConsumerRecord>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let (consumer, max, timeout) = (this.consumer.clone(), this.max, this.timeout);
            let fut = this.pending.get_or_insert_with(|| {
                Box::pin(async move { consumer.recv_batch(max, timeout).await })
            });
            let r = std::task::ready!(fut.as_mut().poll(cx));
            this.pending = None;
            match r {
                Ok(batch) if batch.is_empty() => continue,
                other => return Poll::Ready(item(other)),
            }
        }
    }
}

impl Consumer {
    /// The records as a [`Stream`] (cancel-safe, as [`recv`](Self::recv)).
    ///
    /// # Example
    /// ```no_run
    /// use paperboy::consumer::{Consumer, ConsumerConfig, Stream};
    ///
    /// # async fn run(consumer: Consumer) -> paperboy::Result<()> {
    /// let mut records = consumer.stream();
    /// // With futures' StreamExt this is `records.next().await`.
    /// while let Some(record) =
    ///     std::future::poll_fn(|cx| std::pin::Pin::new(&mut records).poll_next(cx)).await
    /// {
    ///     let record = record?;
    ///     println!("{}@{}", record.partition, record.offset);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream(&self) -> RecordStream {
        RecordStream {
            consumer: self.clone(),
            pending: None,
        }
    }

    /// Batches as a [`Stream`]: up to `max` records each, gathered for up to `timeout`
    /// (as [`recv_batch`](Self::recv_batch), cancel-safe); empty batches are skipped.
    pub fn batches(&self, max: usize, timeout: Duration) -> BatchStream {
        BatchStream {
            consumer: self.clone(),
            max,
            timeout,
            pending: None,
        }
    }
}
