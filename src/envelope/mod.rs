//! The PHQ JSON envelope, written byte for byte as Python's `json.dumps` writes it, and
//! read as the Python library reads it.
//!
//! A layer below both the [`engine`](crate::engine) (its [`Envelope`] payload) and the
//! [PHQ API](crate::phq) (whose `phq::envelope` re-exports this module): it depends on
//! neither.
//!
//! [`Envelope`]: crate::engine::Envelope
//!
//! Writing ([`pack`]): Python's defaults differ from serde_json's compact output in three
//! ways, all kept here: separators are `", "` and `": "`; every character outside
//! printable ASCII is escaped as `\uXXXX` (`ensure_ascii`); floats are written as
//! Python's `repr` writes them (`1e-05`, `1e+16`, `100.0`).
//!
//! Reading ([`unpack`]): an empty value is no message; otherwise the envelope's `item`
//! and `hist`, with a history nested [`MAX_HIST_DEPTH`] or more levels deep dropped, as
//! the Python library drops it. [`format_kafka_ref`] and [`format_batch_ref`] write
//! positions the way its log lines do.
//!
//! # Numbers
//!
//! A float read and written again keeps its bits: reading rounds correctly (to the
//! nearest `f64`, as Python's `float()`; serde_json's default parser can be one unit in
//! the last place off), and writing gives Python's `repr` digits. An integer is kept as
//! written by [`pack_json`] and [`unpack_json`], which work on JSON text; a [`Value`]
//! holds 64-bit integers only, so [`unpack`] reads a larger one as the nearest float,
//! unless serde_json keeps numbers as their text: its `arbitrary_precision` feature,
//! which Paperboy's feature of that name turns on (for the whole program: it changes
//! [`serde_json::Number`] for every crate in it, so Paperboy does not do it by default).
//!
//! # Key order
//!
//! Python's `json.dumps` writes a dict's keys in the order they were inserted, and
//! `json.loads` inserts them in the order they are written, so a message handed on by a
//! Python service keeps its key order. Paperboy does not turn on serde_json's
//! `preserve_order` feature (which would change [`serde_json::Map`] for every crate of
//! the program), so a [`Value`]'s objects hold their keys sorted (by byte, as a
//! `BTreeMap`), unless another crate of the program turns that feature on. What
//! [`pack`] writes:
//!
//! - The envelope's own objects in the order the Python library writes them: the
//!   envelope `{"item", "hist"}`; a history `{"svc", "dt", "refs"}`; each ref
//!   `{"topic", "partition", "offset", "key", "hist"}`, and the history in a ref's
//!   `hist` the same way, at every depth. Other keys of a ref or a history follow those,
//!   in their map's order. So the refs and histories of every envelope the PHQ
//!   libraries write are written again byte for byte, whatever the order of the
//!   [`Value`]s that hold them; a ref or history that something else wrote with its
//!   keys in another order is written in this one.
//! - The payload as it serializes: a struct in the order of its fields, a [`Value`] in
//!   its map's order (sorted), an [`OrderedValue`] (what [`unpack`] reads an item into)
//!   in the order it was read, a `serde_json::value::RawValue` (serde_json's `raw_value`
//!   feature) in the order of its text. [`pack_json`] and [`unpack_json`] keep the
//!   order of the text.
//!
//! So an item read by [`unpack`] and given to [`pack`] is written byte for byte as
//! Python's `json.dumps(json.loads(...))` writes it (numbers as [above](#numbers));
//! once it is a [`Value`] (the payload of a [`phq::Message`](crate::phq::Message) the
//! PHQ consumer reads by default, the `hist` of an [`Unpacked`], an
//! `engine::Envelope<Value>`'s item), its objects' keys are sorted.

mod ordered;
mod python;
mod read;
mod refs;
#[cfg(test)]
mod tests;
mod write;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::error::Result;
use read::{read, Node, Nodes, Parser, Values};
use write::{write_node, Style};

pub use ordered::OrderedValue;
pub use python::{format_dt, now_dt, python_float, to_python_json, PythonFormatter};
pub(crate) use refs::batch_ref;
pub use refs::{format_batch_ref, format_kafka_ref};

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    item: &'a T,
    hist: Hist<'a>,
}

#[derive(Serialize)]
struct Hist<'a> {
    svc: &'a str,
    dt: &'a str,
    refs: Refs<'a>,
}

/// The keys of a history, in the order the Python library writes them.
const HIST_KEYS: [&str; 3] = ["svc", "dt", "refs"];
/// The keys of a ref, in the order the Python library writes them.
const REF_KEYS: [&str; 5] = ["topic", "partition", "offset", "key", "hist"];

/// Refs, each written as [`Phq::Ref`].
struct Refs<'a>(&'a [Value]);

impl Serialize for Refs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for r in self.0 {
            seq.serialize_element(&Phq::Ref(r))?;
        }
        seq.end()
    }
}

/// A ref or a history, written with its keys in the Python library's order (see
/// [the module](self#key-order)), whatever the order of its map.
enum Phq<'a> {
    Ref(&'a Value),
    Hist(&'a Value),
}

impl Serialize for Phq<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let (value, first): (_, &[&str]) = match self {
            Phq::Ref(v) => (*v, &REF_KEYS),
            Phq::Hist(v) => (*v, &HIST_KEYS),
        };
        let Value::Object(map) = value else {
            return value.serialize(s);
        };
        let mut out = s.serialize_map(Some(map.len()))?;
        for key in first {
            let Some(v) = map.get(*key) else { continue };
            match (self, *key) {
                (Phq::Ref(_), "hist") => out.serialize_entry(key, &Phq::Hist(v))?,
                (Phq::Hist(_), "refs") => match v {
                    Value::Array(refs) => out.serialize_entry(key, &Refs(refs))?,
                    _ => out.serialize_entry(key, v)?,
                },
                _ => out.serialize_entry(key, v)?,
            }
        }
        for (k, v) in map {
            if !first.contains(&k.as_str()) {
                out.serialize_entry(k, v)?;
            }
        }
        out.end()
    }
}

/// Packs a payload in the PHQ envelope:
/// `{"item": payload, "hist": {"svc": svc, "dt": dt, "refs": refs}}`.
///
/// Key order (see [the module](self#key-order)): each ref is written
/// `{"topic", "partition", "offset", "key", "hist"}` and the histories in it
/// `{"svc", "dt", "refs"}`, as the Python library writes them, other keys after those in
/// their map's order; the payload's objects in the order it serializes them (a
/// [`Value`]'s sorted, an [`OrderedValue`]'s as read).
///
/// ```
/// use paperboy::envelope::pack;
/// use serde_json::json;
///
/// let refs = [json!({"hist": null, "key": "k", "offset": 5, "partition": 0, "topic": "in"})];
/// let bytes = pack("billing", "2019-12-23T20:31:43+00:00", &json!({"name": "café", "total": 1.5}), &refs).unwrap();
/// assert_eq!(
///     std::str::from_utf8(&bytes).unwrap(),
///     r#"{"item": {"name": "caf\u00e9", "total": 1.5}, "hist": {"svc": "billing", "dt": "2019-12-23T20:31:43+00:00", "refs": [{"topic": "in", "partition": 0, "offset": 5, "key": "k", "hist": null}]}}"#
/// );
/// ```
///
/// # Errors
/// [`Error::Json`] when the payload does not serialize.
///
/// [`Error::Json`]: crate::error::Error::Json
pub fn pack<T: Serialize + ?Sized>(
    svc: &str,
    dt: &str,
    payload: &T,
    refs: &[Value],
) -> Result<Vec<u8>> {
    to_python_json(&Envelope {
        item: &payload,
        hist: Hist {
            svc,
            dt,
            refs: Refs(refs),
        },
    })
}

/// The ref of a consumed message, as the Python library builds it:
/// `{"topic", "partition", "offset", "key", "hist"}` with the message's own history
/// ([`pack`] writes its keys in that order).
pub(crate) fn consumed_ref(
    topic: &str,
    partition: i32,
    offset: i64,
    key: &str,
    hist: Value,
) -> Value {
    serde_json::json!({
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key,
        "hist": hist,
    })
}

/// A history nested this many levels deep or more is dropped on reading, as the Python
/// library drops it. The message's own `hist` is level 1; the `hist` of each of its refs
/// is level 2, and so on: each service that consumes a message and produces another from
/// it adds a level.
pub const MAX_HIST_DEPTH: usize = 100;

/// The deepest JSON nesting [`unpack`] reads into memory. A history of
/// [`MAX_HIST_DEPTH`] levels is about 300 deep; deeper input is skipped without
/// recursion: inside `hist` it drops the history, elsewhere it is an error.
pub const MAX_NESTING: usize = 512;

/// A message read from the envelope by [`unpack`].
#[derive(Debug, Clone, PartialEq)]
pub struct Unpacked {
    /// The payload: the envelope's `item`, its objects' keys in the order read (so
    /// [`pack`] writes it as Python would); [`OrderedValue::into_value`] gives the
    /// [`Value`], whose keys are sorted (see [the module](self#key-order)).
    pub item: OrderedValue,
    /// The envelope's `hist`; null when it is missing, null, or was dropped. A
    /// [`Value`]: its keys are sorted, and [`pack`] writes a history in the Python
    /// library's order whatever the order of its map.
    pub hist: Value,
    /// Whether the history was dropped: nested [`MAX_HIST_DEPTH`] or more levels deep
    /// (or more than [`MAX_NESTING`] levels of JSON), or holding a `refs` that is an
    /// object rather than a list (old data). The PHQ consumer logs "Message has a very
    /// long history. Truncated." for it.
    pub hist_truncated: bool,
}

/// Reads a record value written in the PHQ envelope: `Ok(None)` for an empty value (the
/// Python library yields nothing for it), else the `item` and the `hist`.
///
/// The JSON is read as Python's `json.loads` reads it: a UTF-8 byte order mark is
/// skipped, a repeated key keeps its last value, and `NaN`, `Infinity` and `-Infinity`
/// (which Python writes for non-finite floats) are accepted; they read as null, which is
/// all a [`Value`] can hold for them (so does a float too large for an `f64`, `1e400`,
/// which Python reads as infinity). Keys other than `item` and `hist` are ignored; a
/// missing `hist` reads as null.
///
/// Numbers: a float is the nearest `f64` to its digits (as Python's `float()`), so
/// [`pack`] writes it again as it was; an integer of 64 bits is exact (`-0` is the
/// integer 0, as in Python). A larger integer is exact only when serde_json keeps numbers
/// as their text (its `arbitrary_precision` feature, see [the module](self)); otherwise
/// it reads as the nearest float. [`unpack_json`] keeps every number as written.
///
/// Key order: the item is an [`OrderedValue`], which keeps the order of its objects'
/// keys as read (a repeated key at its first position), so [`pack`] writes it again as
/// Python would; the hist is a [`Value`] (sorted keys; [`pack`] writes histories in the
/// Python library's order).
///
/// ```
/// use paperboy::envelope::{pack, unpack};
/// use serde_json::json;
///
/// let bytes = br#"{"item": {"n": 1, "a": 2}, "hist": {"svc": "a", "dt": "2019-12-23T20:31:43+00:00", "refs": []}}"#;
/// let read = unpack(bytes).unwrap().unwrap();
/// assert_eq!(read.item, json!({"n": 1, "a": 2}));
/// assert_eq!(read.hist["svc"], "a");
/// // The item keeps its key order; as a `Value`, its keys are sorted.
/// assert_eq!(pack("a", "2019-12-23T20:31:43+00:00", &read.item, &[]).unwrap(), bytes);
/// assert_eq!(read.item.into_value().to_string(), r#"{"a":2,"n":1}"#);
/// assert!(unpack(b"").unwrap().is_none());
/// ```
///
/// # Errors
/// [`Error::Json`] when the value is not UTF-8, not JSON, not a JSON object, has no
/// `item`, nests its `item` more than [`MAX_NESTING`] levels deep, or holds a string with
/// a lone surrogate (`"\ud800"`, which Python can write but a Rust `String` cannot hold).
///
/// [`Error::Json`]: crate::error::Error::Json
pub fn unpack(value: &[u8]) -> Result<Option<Unpacked>> {
    let Some(read) = read::<Values>(value)? else {
        return Ok(None);
    };
    Ok(Some(Unpacked {
        item: read.item,
        hist: read.hist.into_value(),
        hist_truncated: read.hist_truncated,
    }))
}

/// A message read from the envelope by [`unpack_json`]: its item and hist as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedJson {
    /// The envelope's `item`, as compact JSON (serde_json's layout), every number
    /// exactly as written in the envelope.
    pub item: String,
    /// The envelope's `hist` as [`item`](Self::item); `null` when it is missing, null, or
    /// was dropped.
    pub hist: String,
    /// As [`Unpacked::hist_truncated`].
    pub hist_truncated: bool,
}

/// Reads a record value written in the PHQ envelope, as [`unpack`], but gives the item
/// and the hist as JSON text in which every number is exactly as written: an integer of
/// any size, a float with all its digits. What is not plain JSON is made so: `NaN`,
/// `Infinity` and `-Infinity` are written `null`, a repeated key once (at its first
/// position, with its last value), `-0` as `0`. A lone surrogate in a string (which
/// Python writes as `"\ud800"`) is kept as that escape. Give the item to
/// [`pack_json`] to write it on as Python would.
///
/// ```
/// use paperboy::envelope::unpack_json;
///
/// let read = unpack_json(br#"{"item": {"id": 123456789012345678901234567890, "x": 0.1}, "hist": null}"#)
///     .unwrap()
///     .unwrap();
/// assert_eq!(read.item, r#"{"id":123456789012345678901234567890,"x":0.1}"#);
/// assert_eq!(read.hist, "null");
/// ```
///
/// # Errors
/// As [`unpack`], except that lone surrogates are kept.
pub fn unpack_json(value: &[u8]) -> Result<Option<UnpackedJson>> {
    let Some(read) = read::<Nodes>(value)? else {
        return Ok(None);
    };
    let mut item = Vec::with_capacity(value.len());
    write_node(&mut item, &read.item, Style::Compact);
    let mut hist = Vec::new();
    write_node(&mut hist, &read.hist, Style::Compact);
    let text = |b: Vec<u8>| String::from_utf8(b).expect("the JSON writer writes UTF-8");
    Ok(Some(UnpackedJson {
        item: text(item),
        hist: text(hist),
        hist_truncated: read.hist_truncated,
    }))
}

/// Packs a payload given as JSON text in the PHQ envelope, as [`pack`], with the bytes
/// Python's `json.dumps` writes for what `json.loads` reads from `item`: every number
/// from its text, so an integer of any size is kept and a float is correctly rounded
/// (`1E3` is `1000.0`, as in Python). `NaN`, `Infinity` and `-Infinity` are read, and
/// written, as Python does; a repeated key is written once (at its first position, with
/// its last value).
///
/// ```
/// use paperboy::envelope::pack_json;
///
/// let bytes = pack_json("svc", "2019-12-23T20:31:43+00:00", r#"{"id":123456789012345678901234567890,"x":1E3,"s":"é"}"#, &[]).unwrap();
/// assert_eq!(
///     std::str::from_utf8(&bytes).unwrap(),
///     r#"{"item": {"id": 123456789012345678901234567890, "x": 1000.0, "s": "\u00e9"}, "hist": {"svc": "svc", "dt": "2019-12-23T20:31:43+00:00", "refs": []}}"#
/// );
/// ```
///
/// # Errors
/// [`Error::Json`] when `item` is not JSON (or nests more than [`MAX_NESTING`] levels
/// deep).
///
/// [`Error::Json`]: crate::error::Error::Json
pub fn pack_json(svc: &str, dt: &str, item: &str, refs: &[Value]) -> Result<Vec<u8>> {
    let node = Parser::<Nodes>::new(item, "not JSON").document()?;
    let hist = to_python_json(&Hist {
        svc,
        dt,
        refs: Refs(refs),
    })?;
    let mut out = Vec::with_capacity(item.len() + hist.len() + 24);
    out.extend_from_slice(b"{\"item\": ");
    write_node(&mut out, &node, Style::Python);
    out.extend_from_slice(b", \"hist\": ");
    out.extend_from_slice(&hist);
    out.push(b'}');
    Ok(out)
}

/// Whether a history must be dropped: `hist` at `level`, or one of its refs' histories,
/// is at [`MAX_HIST_DEPTH`] or deeper, or a `refs` is an object.
fn hist_too_long(hist: &Value, level: usize) -> bool {
    if hist.is_null() {
        return false;
    }
    if level >= MAX_HIST_DEPTH {
        return true;
    }
    match hist.get("refs") {
        Some(Value::Object(_)) => true,
        Some(Value::Array(refs)) => refs
            .iter()
            .filter_map(|r| r.get("hist"))
            .any(|h| hist_too_long(h, level + 1)),
        _ => false,
    }
}

/// [`hist_too_long`] of what was read as [`Node`]s.
fn node_hist_too_long(hist: &Node<'_>, level: usize) -> bool {
    if matches!(hist, Node::Null | Node::NonFinite(_)) {
        return false;
    }
    if level >= MAX_HIST_DEPTH {
        return true;
    }
    match hist.get("refs") {
        Some(Node::Object(_)) => true,
        Some(Node::Array(refs)) => refs
            .iter()
            .filter_map(|r| r.get("hist"))
            .any(|h| node_hist_too_long(h, level + 1)),
        _ => false,
    }
}
