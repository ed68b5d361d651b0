//! What a service author writes: a [`Handler`] per topic (or list of topics), its hooks,
//! and the payload types records are decoded into.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::EngineError;
use crate::consumer::{BoxFuture, ConsumerRecord};
use crate::envelope;

/// The error a hook returns: anything that converts into a boxed error (a `String`, an
/// `std::io::Error`, an `anyhow::Error`, a [`crate::Error`]...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A record with its value decoded into the handler's [`Payload`].
#[derive(Debug, Clone)]
pub struct Message<P> {
    /// The record as consumed: topic, partition, offset, timestamp, key, headers.
    pub record: ConsumerRecord,
    /// The decoded value; `None` for a tombstone (a record whose value is null).
    pub value: Option<P>,
}

impl<P> Message<P> {
    /// Whether the record is a tombstone (its value is null).
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The key as UTF-8 text (lossy), or `""` when the record has none.
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        self.record
            .key
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default()
    }
}

/// How a record's value becomes a handler's payload. Implemented for the raw bytes
/// ([`Bytes`]), UTF-8 text ([`String`]), any JSON ([`Value`]), JSON into a type of yours
/// ([`Json`]) and the PHQ envelope ([`Envelope`]).
///
/// A value that does not decode is not handed to `on_message`: the handler's
/// [`on_error`](Handler::on_error) gets an [`EngineError::Payload`] naming the record.
pub trait Payload: Sized + Send + Sync + 'static {
    /// Decodes a (non-null) record value.
    ///
    /// # Errors
    /// A description of what is wrong with the value.
    fn decode(value: &Bytes) -> Result<Self, String>;
}

impl Payload for Bytes {
    fn decode(value: &Bytes) -> Result<Self, String> {
        Ok(value.clone())
    }
}

impl Payload for String {
    fn decode(value: &Bytes) -> Result<Self, String> {
        String::from_utf8(value.to_vec()).map_err(|e| format!("not UTF-8: {e}"))
    }
}

/// Key order: a [`Value`]'s objects hold their keys sorted (Paperboy does not turn on
/// serde_json's `preserve_order`), not in the order of the record's JSON.
impl Payload for Value {
    fn decode(value: &Bytes) -> Result<Self, String> {
        serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))
    }
}

/// A JSON value deserialized into `T` (serde).
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + Send + Sync + 'static> Payload for Json<T> {
    fn decode(value: &Bytes) -> Result<Self, String> {
        serde_json::from_slice(value)
            .map(Json)
            .map_err(|e| format!("JSON does not match the expected type: {e}"))
    }
}

/// A value in the PHQ envelope (`{"item": ..., "hist": {...}}`), its item deserialized
/// into `T`. Read as the PHQ consumer reads it ([`envelope::unpack`]): a history nested
/// too deep is dropped (`hist` is null and `hist_truncated` is set).
///
/// Key order: `T` is deserialized from a [`Value`], so a `T` that keeps the order of its
/// keys sees them sorted, and an `Envelope<Value>`'s item and every `hist` hold their
/// keys sorted (Paperboy does not turn on serde_json's `preserve_order`; see
/// [`envelope`](crate::envelope#key-order)). The PHQ producer writes histories in the
/// Python library's key order whatever the `Value`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<T> {
    /// The payload: the envelope's `item`.
    pub item: T,
    /// The envelope's `hist` (`{"svc", "dt", "refs"}`), or null.
    pub hist: Value,
    /// Whether the history was too long and dropped.
    pub hist_truncated: bool,
}

impl<T: DeserializeOwned + Send + Sync + 'static> Payload for Envelope<T> {
    fn decode(value: &Bytes) -> Result<Self, String> {
        let read = envelope::unpack(value)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "an empty value is not a PHQ envelope".to_owned())?;
        let item = serde_json::from_value(read.item.into_value())
            .map_err(|e| format!("the envelope's item does not match the expected type: {e}"))?;
        Ok(Envelope {
            item,
            hist: read.hist,
            hist_truncated: read.hist_truncated,
        })
    }
}

impl<T> Envelope<T> {
    /// The ref of a consumed envelope, as the PHQ library builds it: pass it to
    /// [`phq::Message::with_refs`](crate::phq::Message::with_refs) when producing a
    /// message derived from this one, so its history nests this one's.
    pub fn consumed_ref(&self, record: &ConsumerRecord) -> Value {
        let key = record
            .key
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        envelope::consumed_ref(
            &record.topic,
            record.partition,
            record.offset,
            &key,
            self.hist.clone(),
        )
    }
}

/// A handler of one or more topics: the hooks the engine calls for their records.
///
/// Every hook has a default, so a handler implements only what it needs (usually
/// [`on_message`](Self::on_message), or [`on_bulk`](Self::on_bulk)). Implement hooks
/// with `async fn`; the futures must be `Send`.
///
/// # Single mode, one record
/// 1. [`define_context`](Self::define_context)
/// 2. the value is decoded into [`Payload`](Self::Payload) (a failure goes to step 5)
/// 3. [`did_receive_message`](Self::did_receive_message), which may transform it
/// 4. [`on_tombstone`](Self::on_tombstone) when the value is null, else
///    [`on_message`](Self::on_message)
/// 5. on an error in steps 2-4: [`on_error`](Self::on_error), which returns the error
///    to fail the record, or `None` to swallow it; nothing else runs for the record
/// 6. after success: [`on_finish_handling`](Self::on_finish_handling) with the message
///
/// # Bulk mode, a partition's batch
/// 1. [`define_context`](Self::define_context)
/// 2. every value is decoded (a failure goes to step 5 for the whole batch)
/// 3. [`did_receive_bulk_messages`](Self::did_receive_bulk_messages)
/// 4. [`on_bulk`](Self::on_bulk) (by default: step 4 of single mode for each message, in
///    order)
/// 5. on an error: [`on_bulk_error`](Self::on_bulk_error), which fails or swallows it
/// 6. after success: [`on_finish_handling`](Self::on_finish_handling) with the messages
///
/// A panic in a hook is caught and fails the record (or batch) like an error; the error
/// hook is not called for it, since the context went down with the panic.
///
/// ```
/// use paperboy::engine::{BoxError, Envelope, Handler, Message};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Order {
///     id: u64,
///     total: f64,
/// }
///
/// struct Orders;
///
/// impl Handler for Orders {
///     type Payload = Envelope<Order>;
///     type Context = ();
///
///     fn topics(&self) -> Vec<String> {
///         vec!["orders".into()]
///     }
///
///     async fn on_message(&self, msg: &Message<Envelope<Order>>, _: &mut ()) -> Result<(), BoxError> {
///         let order = &msg.value.as_ref().expect("not a tombstone").item;
///         println!("order {} of {}", order.id, order.total);
///         Ok(())
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// What record values are decoded into: [`Bytes`], [`String`], [`Value`],
    /// [`Json<T>`] or [`Envelope<T>`].
    type Payload: Payload;
    /// State shared by the hooks of one handling call (one record in single mode, one
    /// batch in bulk mode), made by [`define_context`](Self::define_context).
    type Context: Default + Send + 'static;

    /// The topics this handler serves. Each topic has one handler.
    fn topics(&self) -> Vec<String>;

    /// Makes the context of one handling call. Default: `Context::default()`.
    fn define_context(&self) -> impl Future<Output = Self::Context> + Send {
        async { Self::Context::default() }
    }

    /// Receives a message before it is handled, and may transform it. Default: returns
    /// it unchanged.
    fn did_receive_message(
        &self,
        msg: Message<Self::Payload>,
        ctx: &mut Self::Context,
    ) -> impl Future<Output = Result<Message<Self::Payload>, BoxError>> + Send {
        let _ = ctx;
        async { Ok(msg) }
    }

    /// Handles a message whose value is not null. Default: does nothing.
    fn on_message(
        &self,
        msg: &Message<Self::Payload>,
        ctx: &mut Self::Context,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (msg, ctx);
        async { Ok(()) }
    }

    /// Handles a tombstone (a record whose value is null). Default: does nothing.
    fn on_tombstone(
        &self,
        msg: &Message<Self::Payload>,
        ctx: &mut Self::Context,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (msg, ctx);
        async { Ok(()) }
    }

    /// Decides what a failure of one record means: return the error (the default) to fail
    /// the record, or `None` to swallow it (the record counts as handled). `error` is an
    /// [`EngineError::Handler`] for a hook's error or an [`EngineError::Payload`] for a value that did
    /// not decode; `record` is the record as consumed.
    fn on_error(
        &self,
        error: EngineError,
        record: &ConsumerRecord,
        ctx: &mut Self::Context,
    ) -> impl Future<Output = Option<EngineError>> + Send {
        let _ = (record, ctx);
        async { Some(error) }
    }

    /// Runs after a successful handling call, with its messages (one in single mode).
    /// Not called after an error, swallowed or not. Default: does nothing.
    fn on_finish_handling(
        &self,
        msgs: &[Message<Self::Payload>],
        ctx: &mut Self::Context,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (msgs, ctx);
        async { Ok(()) }
    }

    /// Receives a partition's batch in bulk mode before it is handled, and may transform
    /// it. Default: returns it unchanged.
    fn did_receive_bulk_messages(
        &self,
        msgs: Vec<Message<Self::Payload>>,
        ctx: &mut Self::Context,
    ) -> impl Future<Output = Result<Vec<Message<Self::Payload>>, BoxError>> + Send {
        let _ = ctx;
        async { Ok(msgs) }
    }

    /// Handles a partition's batch in bulk mode. Default: each message in order, as in
    /// single mode ([`on_tombstone`](Self::on_tombstone) or
    /// [`on_message`](Self::on_message)), stopping at the first error.
    fn on_bulk(
        &self,
        msgs: &[Message<Self::Payload>],
        ctx: &mut Self::Context,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        async move {
            for m in msgs {
                if m.is_tombstone() {
                    self.on_tombstone(m, ctx).await?;
                } else {
                    self.on_message(m, ctx).await?;
                }
            }
            Ok(())
        }
    }

    /// Decides what a failure of a bulk batch means, as [`on_error`](Self::on_error)
    /// does for one record: return the error (the default) to fail the batch, or `None`
    /// to swallow it. `records` is the batch as consumed.
    fn on_bulk_error(
        &self,
        error: EngineError,
        records: &[ConsumerRecord],
        ctx: &mut Self::Context,
    ) -> impl Future<Output = Option<EngineError>> + Send {
        let _ = (records, ctx);
        async { Some(error) }
    }
}

/// How one handling call ended.
pub(crate) enum Outcome {
    /// Handled, or its error was swallowed.
    Done,
    /// Failed: the error the error hook kept (or a panic).
    Failed(EngineError),
}

/// A [`Handler`] with its types erased, so that the engine can hold handlers of every
/// payload and context type.
pub(crate) trait Dispatch: Send + Sync {
    fn single<'a>(&'a self, record: &'a ConsumerRecord) -> BoxFuture<'a, Outcome>;
    fn bulk<'a>(&'a self, records: &'a [ConsumerRecord]) -> BoxFuture<'a, Outcome>;
}

pub(crate) fn handler_error(what: &str, records: &[ConsumerRecord], e: BoxError) -> EngineError {
    EngineError::Handler {
        batch: format!("{what} {}", envelope::batch_ref(records)),
        source: Arc::from(e),
    }
}

fn decode<P: Payload>(record: &ConsumerRecord) -> Result<Message<P>, EngineError> {
    let value = match &record.value {
        None => None,
        Some(v) => Some(P::decode(v).map_err(|reason| EngineError::Payload {
            record: format!("{}[{}]@{}", record.topic, record.partition, record.offset),
            reason,
        })?),
    };
    Ok(Message {
        record: record.clone(),
        value,
    })
}

impl<H: Handler> Dispatch for H {
    fn single<'a>(&'a self, record: &'a ConsumerRecord) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let mut ctx = self.define_context().await;
            let records = std::slice::from_ref(record);
            let result: Result<Message<H::Payload>, EngineError> = async {
                let msg = decode::<H::Payload>(record)?;
                let msg = self
                    .did_receive_message(msg, &mut ctx)
                    .await
                    .map_err(|e| handler_error("did_receive_message", records, e))?;
                let r = if msg.is_tombstone() {
                    self.on_tombstone(&msg, &mut ctx).await
                } else {
                    self.on_message(&msg, &mut ctx).await
                };
                r.map_err(|e| handler_error("on_message", records, e))?;
                Ok(msg)
            }
            .await;
            match result {
                Ok(msg) => match self
                    .on_finish_handling(std::slice::from_ref(&msg), &mut ctx)
                    .await
                {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Failed(handler_error("on_finish_handling", records, e)),
                },
                Err(e) => match self.on_error(e, record, &mut ctx).await {
                    None => Outcome::Done,
                    Some(e) => Outcome::Failed(e),
                },
            }
        })
    }

    fn bulk<'a>(&'a self, records: &'a [ConsumerRecord]) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let mut ctx = self.define_context().await;
            let result: Result<Vec<Message<H::Payload>>, EngineError> = async {
                let msgs = records
                    .iter()
                    .map(decode::<H::Payload>)
                    .collect::<Result<Vec<_>, _>>()?;
                let msgs = self
                    .did_receive_bulk_messages(msgs, &mut ctx)
                    .await
                    .map_err(|e| handler_error("did_receive_bulk_messages", records, e))?;
                self.on_bulk(&msgs, &mut ctx)
                    .await
                    .map_err(|e| handler_error("on_bulk", records, e))?;
                Ok(msgs)
            }
            .await;
            match result {
                Ok(msgs) => match self.on_finish_handling(&msgs, &mut ctx).await {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Failed(handler_error("on_finish_handling", records, e)),
                },
                Err(e) => match self.on_bulk_error(e, records, &mut ctx).await {
                    None => Outcome::Done,
                    Some(e) => Outcome::Failed(e),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Order {
        id: u64,
    }

    #[test]
    fn payloads_decode_or_say_why_not() {
        let v = Bytes::from_static(b"{\"id\": 7}");
        assert_eq!(<Bytes as Payload>::decode(&v).unwrap(), v);
        assert_eq!(String::decode(&v).unwrap(), "{\"id\": 7}");
        assert_eq!(Value::decode(&v).unwrap()["id"], 7);
        assert_eq!(Json::<Order>::decode(&v).unwrap(), Json(Order { id: 7 }));

        let bad = Bytes::from_static(b"\xff\xfe");
        assert!(String::decode(&bad).unwrap_err().contains("not UTF-8"));
        assert!(Value::decode(&bad).unwrap_err().contains("not JSON"));
        let wrong = Bytes::from_static(b"{\"id\": \"seven\"}");
        assert!(Json::<Order>::decode(&wrong)
            .unwrap_err()
            .contains("expected type"));
        // Not an envelope: no "item".
        assert!(Envelope::<Order>::decode(&v).is_err());
        assert!(Envelope::<Order>::decode(&Bytes::new())
            .unwrap_err()
            .contains("empty"));
    }

    #[test]
    fn an_envelope_gives_its_item_history_and_ref() {
        let packed = envelope::pack(
            "shop",
            "2019-12-23T20:31:43+00:00",
            &serde_json::json!({"id": 3}),
            &[],
        )
        .unwrap();
        let e = Envelope::<Order>::decode(&Bytes::from(packed)).unwrap();
        assert_eq!(e.item, Order { id: 3 });
        assert_eq!(e.hist["svc"], "shop");
        assert!(!e.hist_truncated);
    }
}
