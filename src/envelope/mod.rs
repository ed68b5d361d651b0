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

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::ser::Formatter;
use serde_json::{Number, Value};

use crate::error::{Error, Result};

/// A `serde_json` formatter that writes what Python's `json.dumps` writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if (' '..='~').contains(&c) {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(w, "\\u{u:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(python_float(value).as_bytes())
    }

    fn write_f32<W: ?Sized + Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(w, f64::from(value))
    }

    /// A number kept as its text, as serde_json keeps every number when any crate of the
    /// program turns on its `arbitrary_precision` feature: written as Python writes the
    /// number it reads from that text.
    fn write_number_str<W: ?Sized + Write>(&mut self, w: &mut W, value: &str) -> io::Result<()> {
        w.write_all(python_number(value).as_bytes())
    }

    /// A `serde_json::value::RawValue` in a payload: its JSON read as Python's
    /// `json.loads` reads it and written as `json.dumps` writes it, numbers from their
    /// text (so an integer of any size is kept).
    fn write_raw_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let node = Parser::<Nodes>::new(fragment, "not JSON")
            .document()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let mut out = Vec::with_capacity(fragment.len());
        write_node(&mut out, &node, Style::Python);
        w.write_all(&out)
    }
}

/// A float as Python's `repr` writes it: the shortest digits that round-trip (of those,
/// the nearest to the float, ties to even), in positional notation for exponents
/// -4..16, else `d.ddde±XX`.
pub fn python_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.2345e-5", "1e16", "-0e0".
    // When two strings of that many digits round-trip and are equally near the float,
    // it can pick the upper one where Python (David Gay's dtoa) picks the even one:
    // 1658206780088562.25 is "1658206780088562.3" in Rust, "1658206780088562.2" in
    // Python. The float correctly rounded to that many digits (`{:.N$e}`, ties to even)
    // is Python's choice whenever it round-trips.
    let mut sci = format!("{v:e}");
    let digits = sci
        .split('e')
        .next()
        .unwrap_or_default()
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    if digits > 1 {
        let nearest = format!("{:.*e}", digits - 1, v);
        if nearest != sci && nearest.parse::<f64>() == Ok(v) {
            sci = nearest;
        }
    }
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!(
                "{sign}{digits}{}.0",
                "0".repeat(point as usize - digits.len())
            )
        } else {
            let (a, b) = digits.split_at(point as usize);
            format!("{sign}{a}.{b}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let mant = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mant}e{esign}{:02}", exp.abs())
    }
}

/// Whether a JSON number's text is an integer (Python reads it as an `int`).
fn is_integer(text: &str) -> bool {
    !text.contains(['.', 'e', 'E'])
}

/// A JSON number's text as Python's `json.dumps` writes the number `json.loads` reads
/// from it: an integer as written (of any size; `-0` is the integer 0), a float by its
/// `repr` (correctly rounded: `1E400` is `Infinity`, `1.00000000000000001` is `1.0`).
fn python_number(text: &str) -> Cow<'_, str> {
    if is_integer(text) {
        if text == "-0" {
            "0".into()
        } else {
            text.into()
        }
    } else {
        python_float(text.parse().unwrap_or(f64::NAN)).into()
    }
}

/// Serializes `value` as Python's `json.dumps` would.
///
/// # Errors
/// [`Error::Json`] when the value cannot be serialized (a map with non-string keys...).
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value
        .serialize(&mut ser)
        .map_err(|e| Error::Json(e.to_string()))?;
    Ok(out)
}

/// `dt` as the PHQ library writes it: RFC 3339, UTC, whole seconds, `+00:00`.
pub fn format_dt(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The current time as [`format_dt`] writes it.
pub fn now_dt() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format_dt(secs)
}

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

/// An envelope as read: its item and hist as [`Value`]s or [`Node`]s.
struct Read<T> {
    item: T,
    hist: T,
    hist_truncated: bool,
}

/// Reads the envelope: `None` for an empty value.
fn read<'a, B: Build<'a>>(value: &'a [u8]) -> Result<Option<Read<B::Out>>> {
    if value.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(value)
        .map_err(|e| Error::Json(format!("not a PHQ envelope: not UTF-8: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Parser::<B>::new(text, "not a PHQ envelope")
        .envelope()
        .map(Some)
}

/// What [`Parser`] makes of what it reads: [`Value`]s ([`Values`], for [`unpack`]: no
/// tree in between), or [`Node`]s, which keep numbers as their text ([`Nodes`]).
trait Build<'a> {
    type Out;
    type Key;
    type Object;
    /// A scalar (null, a boolean, `NaN`..., a number, a string) as a [`Node`] reads it.
    fn scalar(node: Node<'a>) -> Result<Self::Out>;
    fn key(text: Text<'a>) -> Result<Self::Key>;
    fn null() -> Self::Out;
    fn array(items: Vec<Self::Out>) -> Self::Out;
    fn object() -> Self::Object;
    /// Adds a member; a repeated key keeps its first position and takes the last value,
    /// as Python's dict.
    fn insert(object: &mut Self::Object, key: Self::Key, value: Self::Out);
    fn end(object: Self::Object) -> Self::Out;
    /// Whether the envelope's `hist` must be dropped (see [`hist_too_long`]).
    fn hist_too_long(hist: &Self::Out) -> bool;
}

/// Builds [`OrderedValue`]s: numbers as [`number_value`] makes them; a lone surrogate
/// is an error.
struct Values;

impl<'a> Build<'a> for Values {
    type Out = OrderedValue;
    type Key = String;
    /// The map, and its keys in the order read (each at its first position).
    type Object = (serde_json::Map<String, Value>, Vec<(String, Order)>);

    fn scalar(node: Node<'a>) -> Result<OrderedValue> {
        scalar_value(node).map(OrderedValue::from)
    }

    fn key(text: Text<'a>) -> Result<String> {
        string_value(text)
    }

    fn null() -> OrderedValue {
        OrderedValue::from(Value::Null)
    }

    fn array(items: Vec<OrderedValue>) -> OrderedValue {
        let (values, orders): (Vec<Value>, Vec<Order>) =
            items.into_iter().map(|v| (v.value, v.order)).unzip();
        let order = if orders.iter().all(|o| matches!(o, Order::Map)) {
            Order::Map
        } else {
            Order::Array(orders)
        };
        OrderedValue {
            value: Value::Array(values),
            order,
        }
    }

    fn object() -> Self::Object {
        (serde_json::Map::new(), Vec::new())
    }

    fn insert(object: &mut Self::Object, key: String, value: OrderedValue) {
        let (map, keys) = object;
        // As Python's dict: a repeated key keeps its first position, takes the last value.
        if map.contains_key(&key) {
            if let Some(slot) = keys.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value.order;
            }
        } else {
            keys.push((key.clone(), value.order));
        }
        map.insert(key, value.value);
    }

    fn end((map, keys): Self::Object) -> OrderedValue {
        let in_map_order = keys.iter().all(|(_, o)| matches!(o, Order::Map))
            && map.keys().eq(keys.iter().map(|(k, _)| k));
        OrderedValue {
            value: Value::Object(map),
            order: if in_map_order {
                Order::Map
            } else {
                Order::Object(keys)
            },
        }
    }

    fn hist_too_long(hist: &OrderedValue) -> bool {
        hist_too_long(&hist.value, 1)
    }
}

/// A [`Value`] that keeps the order of its objects' keys as read, as Python's dict
/// does: what [`unpack`] reads an envelope's item into. A [`Value`]'s objects hold their
/// keys sorted (Paperboy does not turn on serde_json's `preserve_order`, see
/// [the module](self#key-order)); this one serializes them in the order they were read
/// (a repeated key at its first position, with its last value), so [`pack`] writes it
/// as Python's `json.dumps` writes what `json.loads` read.
///
/// It derefs to the [`Value`] (read-only: the order is kept with it), compares equal to
/// a [`Value`] holding the same JSON whatever the order, and
/// [`into_value`](Self::into_value) gives the [`Value`]. Its `Display` writes compact
/// JSON in its order (`{:#}`: pretty).
///
/// ```
/// use paperboy::envelope::unpack;
/// use serde_json::json;
///
/// let read = unpack(br#"{"item": {"b": [1, {"y": 2, "x": 3}], "a": true}}"#).unwrap().unwrap();
/// assert_eq!(read.item.to_string(), r#"{"b":[1,{"y":2,"x":3}],"a":true}"#);
/// assert_eq!(read.item["b"][1]["x"], 3); // as a Value
/// assert_eq!(read.item, json!({"a": true, "b": [1, {"x": 3, "y": 2}]}));
/// let value: serde_json::Value = read.item.into_value(); // keys sorted
/// assert_eq!(value.to_string(), r#"{"a":true,"b":[1,{"x":3,"y":2}]}"#);
/// ```
#[derive(Clone)]
pub struct OrderedValue {
    value: Value,
    order: Order,
}

/// Where an [`OrderedValue`]'s order differs from its [`Value`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Order {
    /// As the value's maps iterate (scalars, and containers already in that order).
    Map,
    /// An array's elements' orders.
    Array(Vec<Order>),
    /// An object's keys in order, with their values' orders.
    Object(Vec<(String, Order)>),
}

impl OrderedValue {
    /// The [`Value`] (its objects' keys in its map's order: sorted, unless serde_json's
    /// `preserve_order` is on in the program).
    pub fn into_value(self) -> Value {
        self.value
    }

    /// The [`Value`], as [`Deref`](std::ops::Deref) gives it.
    pub fn value(&self) -> &Value {
        &self.value
    }
}

/// A [`Value`] in its map's order.
impl From<Value> for OrderedValue {
    fn from(value: Value) -> Self {
        OrderedValue {
            value,
            order: Order::Map,
        }
    }
}

impl From<OrderedValue> for Value {
    fn from(v: OrderedValue) -> Value {
        v.value
    }
}

impl std::ops::Deref for OrderedValue {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

/// Equal when they hold the same JSON in the same order.
impl PartialEq for OrderedValue {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value && InOrder::from(self) == InOrder::from(other)
    }
}

/// Equal when it holds the same JSON, whatever the order of its keys.
impl PartialEq<Value> for OrderedValue {
    fn eq(&self, other: &Value) -> bool {
        self.value == *other
    }
}

/// Equal when it holds the same JSON, whatever the order of its keys.
impl PartialEq<OrderedValue> for Value {
    fn eq(&self, other: &OrderedValue) -> bool {
        *self == other.value
    }
}

impl std::fmt::Display for OrderedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = if f.alternate() {
            serde_json::to_string_pretty(self)
        } else {
            serde_json::to_string(self)
        };
        f.write_str(&text.map_err(|_| std::fmt::Error)?)
    }
}

impl std::fmt::Debug for OrderedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OrderedValue({self})")
    }
}

impl Serialize for OrderedValue {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        InOrder::from(self).serialize(s)
    }
}

/// A value with its order, serialized in that order.
#[derive(Clone, Copy)]
struct InOrder<'a>(&'a Value, &'a Order);

impl<'a> From<&'a OrderedValue> for InOrder<'a> {
    fn from(v: &'a OrderedValue) -> Self {
        InOrder(&v.value, &v.order)
    }
}

/// Equal when the keys come in the same order at every level (the values being equal).
impl PartialEq for InOrder<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self.0, other.0) {
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len()
                    && (0..a.len()).all(|i| {
                        InOrder(&a[i], self.element(i)) == InOrder(&b[i], other.element(i))
                    })
            }
            (Value::Object(_), Value::Object(_)) => {
                let (a, b) = (self.members(), other.members());
                a.len() == b.len()
                    && a.iter()
                        .zip(&b)
                        .all(|((ka, va), (kb, vb))| ka == kb && va == vb)
            }
            _ => true,
        }
    }
}

impl<'a> InOrder<'a> {
    /// The order of an array's element `i`.
    fn element(&self, i: usize) -> &'a Order {
        match self.1 {
            Order::Array(orders) => orders.get(i).unwrap_or(&Order::Map),
            _ => &Order::Map,
        }
    }

    /// An object's members in order.
    fn members(&self) -> Vec<(&'a str, InOrder<'a>)> {
        let Value::Object(map) = self.0 else {
            return Vec::new();
        };
        match self.1 {
            Order::Object(keys) if keys.len() == map.len() => keys
                .iter()
                .filter_map(|(k, o)| map.get(k).map(|v| (k.as_str(), InOrder(v, o))))
                .collect(),
            _ => map
                .iter()
                .map(|(k, v)| (k.as_str(), InOrder(v, &Order::Map)))
                .collect(),
        }
    }
}

impl Serialize for InOrder<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match (self.0, self.1) {
            (_, Order::Map) => self.0.serialize(s),
            (Value::Array(items), _) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for (i, v) in items.iter().enumerate() {
                    seq.serialize_element(&InOrder(v, self.element(i)))?;
                }
                seq.end()
            }
            (Value::Object(map), _) => {
                let mut out = s.serialize_map(Some(map.len()))?;
                for (k, v) in self.members() {
                    out.serialize_entry(k, &v)?;
                }
                out.end()
            }
            (v, _) => v.serialize(s),
        }
    }
}

/// Builds [`Node`]s: numbers as their text, every member of an object as read.
struct Nodes;

impl<'a> Build<'a> for Nodes {
    type Out = Node<'a>;
    type Key = Text<'a>;
    type Object = Vec<(Text<'a>, Node<'a>)>;

    fn scalar(node: Node<'a>) -> Result<Node<'a>> {
        Ok(node)
    }

    fn key(text: Text<'a>) -> Result<Text<'a>> {
        Ok(text)
    }

    fn null() -> Node<'a> {
        Node::Null
    }

    fn array(items: Vec<Node<'a>>) -> Node<'a> {
        Node::Array(items)
    }

    fn object() -> Self::Object {
        Vec::new()
    }

    fn insert(object: &mut Self::Object, key: Text<'a>, value: Node<'a>) {
        object.push((key, value)); // resolved when written (see `dedup`) or looked up
    }

    fn end(object: Self::Object) -> Node<'a> {
        Node::Object(object)
    }

    fn hist_too_long(hist: &Node<'a>) -> bool {
        node_hist_too_long(hist, 1)
    }
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

/// A JSON value as read, before it becomes a [`Value`] or is written again: numbers as
/// their text, strings decoded (lone surrogates included), objects with every member as
/// read (a repeated key too).
#[derive(Debug)]
enum Node<'a> {
    Null,
    Bool(bool),
    /// `NaN`, `Infinity` or `-Infinity`: Python's words for non-finite floats.
    NonFinite(&'static str),
    /// A number as written: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`.
    Number(&'a str),
    String(Text<'a>),
    Array(Vec<Node<'a>>),
    Object(Vec<(Text<'a>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// The value of `key` in an object: its last, as Python keeps a repeated key's last.
    fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Object(members) => members
                .iter()
                .rev()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A JSON string's text, its escapes decoded.
#[derive(Debug)]
enum Text<'a> {
    /// Without escapes: the text as it is in the input.
    Plain(&'a str),
    Decoded(String),
    /// With a surrogate that is not half of a pair (Python writes `"\ud800"` for a
    /// string holding one): UTF-16, as a Rust string cannot hold it.
    Utf16(Vec<u16>),
}

impl Text<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Text::Plain(s) => Some(s),
            Text::Decoded(s) => Some(s),
            Text::Utf16(_) => None,
        }
    }

    /// The string, or the first lone surrogate in it.
    fn into_string(self) -> std::result::Result<String, u16> {
        match self {
            Text::Plain(s) => Ok(s.to_owned()),
            Text::Decoded(s) => Ok(s),
            Text::Utf16(units) => Err(char::decode_utf16(units)
                .find_map(|c| c.err())
                .map_or(0, |e| e.unpaired_surrogate())),
        }
    }

    /// Calls `f` with each code point; a lone surrogate is one too (0xd800..=0xdfff).
    fn for_each_code_point(&self, mut f: impl FnMut(u32)) {
        match self {
            Text::Plain(s) => s.chars().for_each(|c| f(u32::from(c))),
            Text::Decoded(s) => s.chars().for_each(|c| f(u32::from(c))),
            Text::Utf16(units) => char::decode_utf16(units.iter().copied())
                .for_each(|c| f(c.map_or_else(|e| u32::from(e.unpaired_surrogate()), u32::from))),
        }
    }
}

/// Equal when the decoded strings are (`"a"` and `"\u0061"` are one key).
impl PartialEq for Text<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Text::Utf16(a), Text::Utf16(b)) => a == b,
            _ => self.as_str().is_some() && self.as_str() == other.as_str(),
        }
    }
}

impl Eq for Text<'_> {}

impl Hash for Text<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Text::Utf16(units) => units.hash(state),
            _ => self.as_str().hash(state),
        }
    }
}

/// Decodes the escapes of a JSON string's text (between the quotes), as Python does: an
/// escaped surrogate pair is one character, a surrogate that is not half of a pair is
/// kept.
fn decode_string(raw: &str) -> std::result::Result<Text<'_>, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let (e, after) = escape(&rest[i..])?;
        rest = after;
        let c = match e {
            Escape::Char(c) => c,
            Escape::Unit(hi @ 0xd800..=0xdbff) => match escape(rest) {
                Ok((Escape::Unit(lo @ 0xdc00..=0xdfff), after)) => {
                    rest = after;
                    let c = 0x10000 + ((u32::from(hi) - 0xd800) << 10) + (u32::from(lo) - 0xdc00);
                    char::from_u32(c).expect("a surrogate pair is a character")
                }
                _ => return decode_utf16(raw).map(Text::Utf16),
            },
            Escape::Unit(0xdc00..=0xdfff) => return decode_utf16(raw).map(Text::Utf16),
            Escape::Unit(u) => char::from_u32(u32::from(u)).expect("not a surrogate"),
        };
        out.push(c);
    }
    out.push_str(rest);
    Ok(Text::Decoded(out))
}

/// As [`decode_string`], into UTF-16 (for a string with a lone surrogate).
fn decode_utf16(raw: &str) -> std::result::Result<Vec<u16>, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('\\') {
        out.extend(rest[..i].encode_utf16());
        let (e, after) = escape(&rest[i..])?;
        rest = after;
        match e {
            Escape::Char(c) => out.extend(c.encode_utf16(&mut [0; 2]).iter()),
            Escape::Unit(u) => out.push(u),
        }
    }
    out.extend(rest.encode_utf16());
    Ok(out)
}

enum Escape {
    Char(char),
    /// `\uXXXX`: a UTF-16 code unit.
    Unit(u16),
}

/// The escape at the start of `s` (which starts with a backslash), and what follows it.
fn escape(s: &str) -> std::result::Result<(Escape, &str), String> {
    let bad = || format!("bad escape `{}`", s.chars().take(6).collect::<String>());
    let c = match s.as_bytes().get(1) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => {
            let hex = s
                .get(2..6)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
            let unit = hex
                .and_then(|h| u16::from_str_radix(h, 16).ok())
                .ok_or_else(bad)?;
            return Ok((Escape::Unit(unit), &s[6..]));
        }
        _ => return Err(bad()),
    };
    Ok((Escape::Char(c), &s[2..]))
}

/// A scalar read as a [`Node`] as a [`Value`]. Numbers: see [`number_value`].
#[inline(never)]
fn scalar_value(node: Node<'_>) -> Result<Value> {
    Ok(match node {
        Node::Bool(b) => Value::Bool(b),
        Node::Number(text) => number_value(text),
        Node::String(t) => Value::String(string_value(t)?),
        _ => Value::Null, // null, NaN, Infinity, -Infinity
    })
}

#[inline(never)]
fn string_value(t: Text<'_>) -> Result<String> {
    t.into_string().map_err(|u| {
        Error::Json(format!(
            "not a PHQ envelope: a string holds a lone surrogate (\\u{u:04x}), which a Rust \
             string cannot"
        ))
    })
}

/// A number for a [`Value`]: a 64-bit integer exactly; a float as the nearest `f64`
/// (Rust's `str::parse` rounds correctly, as Python's `float()`), null when too large
/// for one (Python reads it as infinity); a larger integer exactly when serde_json keeps
/// numbers as their text (`arbitrary_precision`), else as the nearest `f64`.
fn number_value(text: &str) -> Value {
    if is_integer(text) {
        if let Ok(n) = text.parse::<u64>() {
            return n.into();
        }
        if let Ok(n) = text.parse::<i64>() {
            return n.into(); // "-0" too: the integer 0, as in Python
        }
        if let Ok(n) = serde_json::from_str::<Number>(text) {
            if n.to_string() == text {
                return Value::Number(n);
            }
        }
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// How [`write_node`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// As Python's `json.dumps`: `", "` and `": "`, ASCII only, numbers as Python writes
    /// them, `NaN`/`Infinity` kept.
    Python,
    /// As serde_json's compact output: UTF-8, numbers as written, `NaN`/`Infinity` as
    /// null.
    Compact,
}

/// Writes what was read. A repeated key is written once, at its first position with its
/// last value, as Python's dict holds it.
fn write_node(out: &mut Vec<u8>, node: &Node<'_>, style: Style) {
    let python = style == Style::Python;
    match node {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Bool(true) => out.extend_from_slice(b"true"),
        Node::Bool(false) => out.extend_from_slice(b"false"),
        Node::NonFinite(word) if python => out.extend_from_slice(word.as_bytes()),
        Node::NonFinite(_) => out.extend_from_slice(b"null"),
        Node::Number(text) if python => out.extend_from_slice(python_number(text).as_bytes()),
        Node::Number(text) => {
            let text = if *text == "-0" { "0" } else { text };
            out.extend_from_slice(text.as_bytes());
        }
        Node::String(t) => write_string(out, t, style),
        Node::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(if python { b", " } else { b"," });
                }
                write_node(out, v, style);
            }
            out.push(b']');
        }
        Node::Object(members) => {
            out.push(b'{');
            for (i, (k, v)) in dedup(members).into_iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(if python { b", " } else { b"," });
                }
                write_string(out, k, style);
                out.extend_from_slice(if python { b": " } else { b":" });
                write_node(out, v, style);
            }
            out.push(b'}');
        }
    }
}

/// An object's members as Python's dict holds them: a repeated key once, at its first
/// position, with its last value.
fn dedup<'n, 'a>(members: &'n [(Text<'a>, Node<'a>)]) -> Vec<(&'n Text<'a>, &'n Node<'a>)> {
    let all = || members.iter().map(|(k, v)| (k, v)).collect();
    if members.len() < 2 {
        return all();
    }
    let mut last: HashMap<&Text<'a>, usize> = HashMap::with_capacity(members.len());
    for (i, (k, _)) in members.iter().enumerate() {
        last.insert(k, i);
    }
    if last.len() == members.len() {
        return all();
    }
    members
        .iter()
        .filter_map(|(k, _)| last.remove(k).map(|j| (k, &members[j].1)))
        .collect()
}

/// A string: `"` `\` and control characters escaped as both Python and serde_json do
/// (`\n`, `\u0001`...); the rest as is (printable ASCII, and in the compact style any
/// character) or as `\uXXXX` (a surrogate pair for a character beyond U+FFFF; a lone
/// surrogate as itself).
fn write_string(out: &mut Vec<u8>, t: &Text<'_>, style: Style) {
    out.push(b'"');
    t.for_each_code_point(|c| {
        let short: &[u8] = match c {
            0x22 => b"\\\"",
            0x5c => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x0a => b"\\n",
            0x0d => b"\\r",
            0x09 => b"\\t",
            0x20..=0x7e => {
                out.push(c as u8);
                return;
            }
            _ => b"",
        };
        if !short.is_empty() {
            out.extend_from_slice(short);
            return;
        }
        match char::from_u32(c) {
            Some(ch) if c >= 0x20 && style == Style::Compact => {
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
            }
            Some(ch) if c > 0xffff => {
                for u in ch.encode_utf16(&mut [0; 2]) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            _ => {
                let _ = write!(out, "\\u{c:04x}");
            }
        }
    });
    out.push(b'"');
}

/// Whether `text` is a JSON number.
fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// A JSON reader with a nesting cap, for envelopes whose history is deeper than
/// serde_json's recursion limit (128) allows. What it makes of the JSON is `B`'s.
struct Parser<'a, B> {
    s: &'a str,
    pos: usize,
    /// What the input is not, when it is wrong: "not a PHQ envelope", "not JSON".
    not: &'static str,
    /// Set when a value nested deeper than [`MAX_NESTING`] was skipped.
    overflowed: bool,
    build: std::marker::PhantomData<B>,
}

impl<'a, B: Build<'a>> Parser<'a, B> {
    fn new(s: &'a str, not: &'static str) -> Self {
        Parser {
            s,
            pos: 0,
            not,
            overflowed: false,
            build: std::marker::PhantomData,
        }
    }

    #[inline(never)]
    fn err(&self, what: &str) -> Error {
        Error::Json(format!("{}: {what} at byte {}", self.not, self.pos))
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// One JSON value and nothing else (whitespace aside).
    fn document(&mut self) -> Result<B::Out> {
        let v = self.value(1)?;
        if self.overflowed {
            return Err(self.err(&format!("nested more than {MAX_NESTING} levels deep")));
        }
        self.skip_ws();
        if self.pos != self.s.len() {
            return Err(self.err("extra data after the JSON value"));
        }
        Ok(v)
    }

    fn envelope(&mut self) -> Result<Read<B::Out>> {
        self.skip_ws();
        if self.peek() != Some(b'{') {
            return Err(self.err("expected a JSON object"));
        }
        let mut item = None;
        let mut hist = B::null();
        let mut truncated = false;
        self.members(|p, key| {
            p.overflowed = false;
            let v = p.value(2)?;
            match key.as_str() {
                Some("hist") => {
                    truncated = p.overflowed;
                    hist = v;
                }
                _ if p.overflowed => {
                    return Err(p.err(&format!(
                        "`{}` is nested more than {MAX_NESTING} levels deep",
                        key.as_str().unwrap_or("?")
                    )))
                }
                Some("item") => item = Some(v),
                _ => {}
            }
            Ok(())
        })?;
        self.skip_ws();
        if self.pos != self.s.len() {
            return Err(self.err("extra data after the JSON object"));
        }
        let item = item.ok_or_else(|| Error::Json(format!("{}: no `item`", self.not)))?;
        if truncated || B::hist_too_long(&hist) {
            return Ok(Read {
                item,
                hist: B::null(),
                hist_truncated: true,
            });
        }
        Ok(Read {
            item,
            hist,
            hist_truncated: false,
        })
    }

    /// A value whose containers are `depth` levels deep.
    ///
    /// Recursive, up to [`MAX_NESTING`] deep: the frames on that path are kept small
    /// (scalars and errors are out of line).
    fn value(&mut self, depth: usize) -> Result<B::Out> {
        self.skip_ws();
        match self.peek() {
            Some(b'{' | b'[') if depth > MAX_NESTING => self.skip_too_deep(),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            _ => self.scalar(),
        }
    }

    fn object(&mut self, depth: usize) -> Result<B::Out> {
        let mut object = B::object();
        self.members(|p, key| {
            let key = B::key(key)?;
            let v = p.value(depth + 1)?;
            B::insert(&mut object, key, v);
            Ok(())
        })?;
        Ok(B::end(object))
    }

    #[inline(never)]
    fn skip_too_deep(&mut self) -> Result<B::Out> {
        self.skip_nested()?;
        self.overflowed = true;
        Ok(B::null())
    }

    #[inline(never)]
    fn scalar(&mut self) -> Result<B::Out> {
        let node = self.scalar_node()?;
        B::scalar(node)
    }

    fn scalar_node(&mut self) -> Result<Node<'a>> {
        match self.peek() {
            Some(b'"') => self.string().map(Node::String),
            Some(b't') => self.literal("true", Node::Bool(true)),
            Some(b'f') => self.literal("false", Node::Bool(false)),
            Some(b'n') => self.literal("null", Node::Null),
            Some(b'N') => self.literal("NaN", Node::NonFinite("NaN")),
            Some(b'I') => self.literal("Infinity", Node::NonFinite("Infinity")),
            Some(b'-') if self.s[self.pos..].starts_with("-Infinity") => {
                self.literal("-Infinity", Node::NonFinite("-Infinity"))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected a JSON value")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    /// The members of the object at `pos`, each handed to `f` with its key; `f` reads
    /// the value.
    fn members(&mut self, mut f: impl FnMut(&mut Self, Text<'a>) -> Result<()>) -> Result<()> {
        self.pos += 1; // '{'
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':'"));
            }
            self.pos += 1;
            f(self, key)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<B::Out> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(B::array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(B::array(items));
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    /// Moves past the string at `pos`; returns whether it has escapes.
    fn scan_string(&mut self) -> Result<bool> {
        self.pos += 1; // '"'
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.pos += 2;
                }
                Some(c) if c < 0x20 => return Err(self.err("control character in a string")),
                Some(_) => self.pos += 1,
            }
        }
    }

    fn string(&mut self) -> Result<Text<'a>> {
        let start = self.pos;
        let escaped = self.scan_string()?;
        let raw = &self.s[start + 1..self.pos - 1];
        if !escaped {
            return Ok(Text::Plain(raw));
        }
        decode_string(raw).map_err(|e| self.err(&format!("bad string ({e})")))
    }

    fn number(&mut self) -> Result<Node<'a>> {
        let start = self.pos;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.pos += 1;
        }
        let raw = &self.s[start..self.pos];
        if is_json_number(raw) {
            Ok(Node::Number(raw))
        } else {
            Err(self.err(&format!("bad number `{raw}`")))
        }
    }

    fn literal(&mut self, word: &str, v: Node<'a>) -> Result<Node<'a>> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.err("expected a JSON value"))
        }
    }

    /// Moves past the object or array at `pos` without reading it into memory (and
    /// without recursion).
    fn skip_nested(&mut self) -> Result<()> {
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None => return Err(self.err("unexpected end of input")),
                Some(b'{' | b'[') => {
                    depth += 1;
                    self.pos += 1;
                }
                Some(b'}' | b']') => {
                    depth -= 1;
                    self.pos += 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Some(b'"') => {
                    self.scan_string()?;
                }
                Some(_) => self.pos += 1,
            }
        }
    }
}

/// A ref as the Python library's log lines write it: `"{topic}:{partition}:{offset}:{key}"`
/// (a missing or null field as `None`).
///
/// ```
/// use paperboy::envelope::format_kafka_ref;
/// use serde_json::json;
///
/// let r = json!({"topic": "events", "partition": 2, "offset": 41, "key": "e-7", "hist": null});
/// assert_eq!(format_kafka_ref(&r), "events:2:41:e-7");
/// ```
pub fn format_kafka_ref(r: &Value) -> String {
    let field = |k: &str| match r.get(k) {
        None | Some(Value::Null) => "None".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(true)) => "True".to_owned(),
        Some(Value::Bool(false)) => "False".to_owned(),
        Some(v) => v.to_string(),
    };
    format!(
        "{}:{}:{}:{}",
        field("topic"),
        field("partition"),
        field("offset"),
        field("key")
    )
}

/// A batch as the Python library's log lines write it:
/// `topic[p=first:last+1,p2=first:last+1],topic2[...]`, from the `(topic, partition,
/// offset)` of each record of the batch. Topics and partitions come in the order they
/// first appear.
///
/// ```
/// use paperboy::envelope::format_batch_ref;
///
/// let positions = [("a", 0, 5), ("a", 1, 9), ("a", 0, 7), ("b", 3, 0)];
/// assert_eq!(format_batch_ref(positions), "a[0=5:8,1=9:10],b[3=0:1]");
/// ```
pub fn format_batch_ref<S: AsRef<str>>(
    positions: impl IntoIterator<Item = (S, i32, i64)>,
) -> String {
    // (topic, [(partition, first, last)]); consecutive records mostly share a partition,
    // so the last one touched is tried first.
    type Partitions = Vec<(i32, i64, i64)>;
    let mut topics: Vec<(String, Partitions)> = Vec::new();
    let mut last: Option<(usize, usize)> = None;
    for (topic, partition, offset) in positions {
        let topic = topic.as_ref();
        let hit = last.filter(|&(t, p)| topics[t].0 == topic && topics[t].1[p].0 == partition);
        let (t, p) = match hit {
            Some(tp) => tp,
            None => {
                let t = match topics.iter().position(|(name, _)| name == topic) {
                    Some(t) => t,
                    None => {
                        topics.push((topic.to_owned(), Vec::new()));
                        topics.len() - 1
                    }
                };
                let parts = &mut topics[t].1;
                let p = match parts.iter().position(|&(q, ..)| q == partition) {
                    Some(p) => p,
                    None => {
                        parts.push((partition, offset, offset));
                        parts.len() - 1
                    }
                };
                (t, p)
            }
        };
        let range = &mut topics[t].1[p];
        range.1 = range.1.min(offset);
        range.2 = range.2.max(offset);
        last = Some((t, p));
    }
    let mut out = String::new();
    for (i, (topic, parts)) in topics.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(topic);
        out.push('[');
        for (j, (partition, first, last)) in parts.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&format!("{partition}={first}:{}", last + 1));
        }
        out.push(']');
    }
    out
}

/// `topic[partition=first:last+1,...]` of a batch of consumed records, for log lines and
/// errors (the PHQ consumer's and the engine's): [`format_batch_ref`] of their positions.
pub(crate) fn batch_ref(records: &[crate::consumer::ConsumerRecord]) -> String {
    format_batch_ref(records.iter().map(|r| (&*r.topic, r.partition, r.offset)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_match_python_repr() {
        // Each pair: Python's repr(float(x)).
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (100.0, "100.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.2345e-7, "1.2345e-07"),
            (123456.789, "123456.789"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1e300, "1e+300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            // Two shortest strings equally near the float (it is ...62.25): Python takes
            // the even one, where Rust's `{:e}` takes the upper.
            (1658206780088562.0 + 0.25, "1658206780088562.2"),
            (0.1 + 0.2, "0.30000000000000004"),
        ];
        for (v, want) in cases {
            assert_eq!(python_float(v), want, "{v:?}");
        }
    }

    #[test]
    fn strings_are_escaped_like_ensure_ascii() {
        let v = json!({"s": "a\"b\\c\n\t\u{1}\u{7f}é😀/"});
        let out = to_python_json(&v).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"s": "a\"b\\c\n\t\u0001\u007f\u00e9\ud83d\ude00/"}"#
        );
    }

    #[test]
    fn envelope_layout_matches_the_python_library() {
        let refs =
            vec![json!({"topic": "in", "partition": 0, "offset": 5, "key": "k", "hist": null})];
        let out = pack(
            "svc",
            "2019-12-23T20:31:43+00:00",
            &json!({"a": [1, 2], "b": {"c": true, "d": null}}),
            &refs,
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"item": {"a": [1, 2], "b": {"c": true, "d": null}}, "hist": {"svc": "svc", "dt": "2019-12-23T20:31:43+00:00", "refs": [{"topic": "in", "partition": 0, "offset": 5, "key": "k", "hist": null}]}}"#
        );
    }

    #[test]
    fn dt_is_rfc3339_utc_whole_seconds() {
        assert_eq!(format_dt(1_577_133_103), "2019-12-23T20:31:43+00:00");
        assert_eq!(format_dt(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(format_dt(951_782_400), "2000-02-29T00:00:00+00:00");
    }

    /// A history `levels` deep, as `levels` services passing a message on would build it.
    fn nested_hist(levels: usize) -> Value {
        let mut hist = Value::Null;
        for i in 0..levels {
            let refs = vec![
                json!({"topic": format!("t{i}"), "partition": 0, "offset": i, "key": "k", "hist": hist}),
            ];
            hist = json!({"svc": format!("s{i}"), "dt": "2019-12-23T20:31:43+00:00", "refs": refs});
        }
        hist
    }

    fn envelope_with_hist(hist: &Value) -> Vec<u8> {
        to_python_json(&json!({"item": {"n": 1}, "hist": hist})).unwrap()
    }

    #[test]
    fn unpack_reads_what_pack_writes() {
        let refs =
            vec![json!({"topic": "in", "partition": 0, "offset": 5, "key": "k", "hist": null})];
        let payload = json!({"a": [1, 2.5, -3e-7, "é😀\n\"", true, null], "b": {}, "c": []});
        let bytes = pack("svc", "2019-12-23T20:31:43+00:00", &payload, &refs).unwrap();
        let read = unpack(&bytes).unwrap().unwrap();
        assert_eq!(read.item, payload);
        assert_eq!(
            read.hist,
            json!({"svc": "svc", "dt": "2019-12-23T20:31:43+00:00", "refs": refs})
        );
        assert!(!read.hist_truncated);
        // The item (an OrderedValue) re-packs to the same bytes.
        let again = pack("svc", "2019-12-23T20:31:43+00:00", &read.item, &refs).unwrap();
        assert_eq!(again, bytes);
    }

    #[test]
    fn key_order_is_kept_without_preserve_order() {
        // An item in no sorted order, with a repeated key (first place, last value),
        // nested in arrays and objects; refs and histories whose keys a Value holds
        // sorted, with an extra key.
        let text = r#"{"item": {"z": 1, "b": [{"y": 1, "x": {"q": 2, "p": 3}}, 4], "a": null, "z": 2}, "hist": {"svc": "up", "dt": "d0", "refs": [{"topic": "t", "partition": 1, "offset": 2, "key": "k", "hist": {"svc": "s0", "dt": "d", "refs": [], "extra": 1}, "more": true}]}}"#;
        let read = unpack(text.as_bytes()).unwrap().unwrap();
        assert_eq!(
            read.item.to_string(),
            r#"{"z":2,"b":[{"y":1,"x":{"q":2,"p":3}},4],"a":null}"#
        );
        assert_eq!(
            read.item,
            json!({"a": null, "b": [{"x": {"p": 3, "q": 2}, "y": 1}, 4], "z": 2})
        );
        assert_eq!(read.item["b"][0]["x"]["p"], 3);
        let refs = read.hist["refs"].as_array().unwrap();
        let out = pack("up", "d0", &read.item, refs).unwrap();
        let out = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            out,
            r#"{"item": {"z": 2, "b": [{"y": 1, "x": {"q": 2, "p": 3}}, 4], "a": null}, "hist": {"svc": "up", "dt": "d0", "refs": [{"topic": "t", "partition": 1, "offset": 2, "key": "k", "hist": {"svc": "s0", "dt": "d", "refs": [], "extra": 1}, "more": true}]}}"#
        );
        // The same through the text path.
        assert_eq!(
            pack_json(
                "up",
                "d0",
                &unpack_json(text.as_bytes()).unwrap().unwrap().item,
                refs
            )
            .unwrap(),
            out.as_bytes()
        );
        // A consumed ref, nesting the history it arrived with, as the Python library
        // writes it.
        let r = consumed_ref("in", 0, 7, "id", read.hist.clone());
        let out = pack("next", "d1", &json!(1), &[r]).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"item": 1, "hist": {"svc": "next", "dt": "d1", "refs": [{"topic": "in", "partition": 0, "offset": 7, "key": "id", "hist": {"svc": "up", "dt": "d0", "refs": [{"topic": "t", "partition": 1, "offset": 2, "key": "k", "hist": {"svc": "s0", "dt": "d", "refs": [], "extra": 1}, "more": true}]}}]}}"#
        );
        // Refs that are not objects, and a refs that is not a list, pass through.
        let out = pack(
            "s",
            "d",
            &json!(null),
            &[json!(1), json!({"hist": {"refs": {"b": 1, "a": 2}}})],
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"item": null, "hist": {"svc": "s", "dt": "d", "refs": [1, {"hist": {"refs": {"a": 2, "b": 1}}}]}}"#
        );
        // OrderedValue: equal with the same order, unequal with another; a Value as is.
        let other =
            unpack(br#"{"item": {"a": null, "b": [{"x": {"p": 3, "q": 2}, "y": 1}, 4], "z": 2}}"#)
                .unwrap()
                .unwrap()
                .item;
        assert_ne!(read.item, other);
        assert_eq!(other, OrderedValue::from(other.clone().into_value()));
        assert_eq!(read.item.clone(), read.item);
        assert_eq!(format!("{other:?}"), format!("OrderedValue({other})"));
        assert_eq!(read.item.into_value().to_string(), other.to_string());
    }

    #[test]
    fn unpack_empty_value_is_no_message() {
        assert!(unpack(b"").unwrap().is_none());
    }

    #[test]
    fn unpack_reads_json_as_python_does() {
        // Compact separators, whitespace, a BOM, NaN/Infinity, a repeated key (last wins,
        // first position), extra keys ignored, a missing hist.
        let read = unpack(
            b"\xef\xbb\xbf {\"x\":1,\"item\":{\"a\":1,\"b\":NaN,\"a\":2,\"c\":[Infinity,-Infinity,-1]}} \n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(read.item, json!({"a": 2, "b": null, "c": [null, null, -1]}));
        assert_eq!(
            read.item.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(read.hist, Value::Null);
        assert!(!read.hist_truncated);
        let read = unpack(br#"{"item": "\u00e9\ud83d\ude00\\", "hist": null}"#)
            .unwrap()
            .unwrap();
        assert_eq!(read.item, json!("é😀\\"));
        let read = unpack(br#"{"item": [0, -0.5, 1E3, 12345678901234567890]}"#)
            .unwrap()
            .unwrap();
        assert_eq!(read.item, json!([0, -0.5, 1000.0, 12345678901234567890u64]));
    }

    /// Whether serde_json keeps numbers as their text (`arbitrary_precision`).
    fn exact_big_integers() -> bool {
        let big = "18446744073709551616";
        // (Not `Value == &str`, which compares with a JSON string.)
        format!("{}", serde_json::from_str::<Value>(big).unwrap()) == big
    }

    #[test]
    fn numbers_read_as_python_reads_them() {
        let read = unpack(
            br#"{"item": [-0, 1e400, -1e400, 1E3, 0.1234567890123456789, 5e-324, 18446744073709551615, -9223372036854775808]}"#,
        )
        .unwrap()
        .unwrap();
        // -0 is the integer 0; a float too large for f64 is Python's infinity: null.
        assert_eq!(
            read.item,
            json!([
                0,
                null,
                null,
                1000.0,
                0.12345678901234568,
                5e-324,
                u64::MAX,
                i64::MIN
            ])
        );
        assert!(read.item[0].is_u64());
        let bytes = pack("s", "d", &read.item, &[]).unwrap();
        assert!(std::str::from_utf8(&bytes).unwrap().starts_with(
            r#"{"item": [0, null, null, 1000.0, 0.12345678901234568, 5e-324, 18446744073709551615, -9223372036854775808]"#
        ));
        // Beyond 64 bits: exact when serde_json keeps numbers as text, else the nearest
        // float.
        let text = "-123456789012345678901234567890";
        let read = unpack(format!(r#"{{"item": {text}}}"#).as_bytes())
            .unwrap()
            .unwrap();
        let bytes = pack("s", "d", &read.item, &[]).unwrap();
        let written = std::str::from_utf8(&bytes).unwrap();
        if exact_big_integers() {
            assert_eq!(read.item.to_string(), text);
            assert!(
                written.starts_with(&format!(r#"{{"item": {text}, "#)),
                "{written}"
            );
        } else {
            assert_eq!(read.item.as_f64(), Some(-1.2345678901234568e29));
            assert!(written.starts_with(r#"{"item": -1.2345678901234568e+29, "#));
        }
    }

    #[test]
    fn json_text_keeps_every_number_and_string() {
        // Python's json.dumps(json.loads(text)): a repeated key ("\u0061" is "a") at its
        // first place with its last value, NaN and friends kept, 1e400 as Infinity, -0
        // as 0, integers of any size, lone surrogates as their escape.
        let text = r#"{"a": 1, "b": [NaN, Infinity, -Infinity, 1e400, -0, -0.0, 1E-7, 123456789012345678901234567890], "\u0061": "\ud800x\uDBFF\uDFFF\/\u007f\t", "c": {}}"#;
        let python = r#"{"a": "\ud800x\udbff\udfff/\u007f\t", "b": [NaN, Infinity, -Infinity, Infinity, 0, -0.0, 1e-07, 123456789012345678901234567890], "c": {}}"#;
        let bytes = pack_json("s", "d", text, &[]).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            format!(r#"{{"item": {python}, "hist": {{"svc": "s", "dt": "d", "refs": []}}}}"#)
        );
        // Read back: compact JSON, numbers as written (non-finite as null), the lone
        // surrogate kept, the astral character as UTF-8.
        let read = unpack_json(&bytes).unwrap().unwrap();
        assert_eq!(
            read.item,
            "{\"a\":\"\\ud800x\u{10ffff}/\u{7f}\\t\",\"b\":[null,null,null,null,0,-0.0,1e-07,123456789012345678901234567890],\"c\":{}}"
        );
        assert_eq!(read.hist, r#"{"svc":"s","dt":"d","refs":[]}"#);
        assert!(!read.hist_truncated);
        // A Value cannot hold a lone surrogate: unpack says so.
        let e = unpack(&bytes).unwrap_err();
        assert!(e.to_string().contains("lone surrogate (\\ud800)"), "{e}");
        // Errors name what is wrong.
        for bad in [
            "",
            "{",
            "[1,]",
            "01",
            "1.",
            "-",
            "\"\\x\"",
            "\"\\u12\"",
            "1 2",
            "nul",
        ] {
            let e = pack_json("s", "d", bad, &[]).unwrap_err();
            assert!(e.to_string().contains("not JSON: "), "{bad}: {e}");
        }
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_NESTING + 1),
            "]".repeat(MAX_NESTING + 1)
        );
        let e = pack_json("s", "d", &deep, &[]).unwrap_err();
        assert!(e.to_string().contains("nested more than"), "{e}");
        assert!(unpack_json(b"").unwrap().is_none());
    }

    #[test]
    fn raw_json_in_a_payload_is_written_as_python_writes_it() {
        use serde_json::value::RawValue;
        #[derive(Serialize)]
        struct Payload<'a> {
            raw: &'a RawValue,
            f: f64,
        }
        let raw =
            RawValue::from_string(r#"{"n":123456789012345678901234567890,"x":1E3,"s":"é"}"#.into())
                .unwrap();
        let bytes = pack("s", "d", &Payload { raw: &raw, f: 0.5 }, &[]).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"item": {"raw": {"n": 123456789012345678901234567890, "x": 1000.0, "s": "\u00e9"}, "f": 0.5}, "hist": {"svc": "s", "dt": "d", "refs": []}}"#
        );
    }

    #[test]
    fn numbers_kept_as_text_are_written_as_python_writes_them() {
        // What serde_json hands the formatter for a Number under `arbitrary_precision`.
        let mut f = PythonFormatter;
        for (text, python) in [
            ("1e16", "1e+16"),
            ("100.0", "100.0"),
            ("1E3", "1000.0"),
            ("-0", "0"),
            ("-0.0", "-0.0"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            ("1e400", "Infinity"),
            ("0.1234567890123456789", "0.12345678901234568"),
        ] {
            let mut out = Vec::new();
            f.write_number_str(&mut out, text).unwrap();
            assert_eq!(std::str::from_utf8(&out).unwrap(), python, "{text}");
        }
    }

    #[test]
    fn unpack_refuses_what_is_not_an_envelope() {
        for bad in [
            &b"not json"[..],
            b"[1, 2]",
            b"\"item\"",
            b"{\"hist\": null}",
            b"{\"item\": 1",
            b"{\"item\": 1} x",
            b"{\"item\": 01}",
            b"{\"item\": \"a\x01\"}",
            b"{\"item\": \"\\q\"}",
            b"{\"item\": tru}",
            b"{\"item\" 1}",
            b"{\"item\": [1 2]}",
            b"{item: 1}",
            b"{\"item\": \"\xff\"}",
            b"{\"item\": 1,}",
            b"{\"item\": \"unterminated",
        ] {
            let e = unpack(bad).unwrap_err();
            assert!(
                matches!(&e, Error::Json(m) if m.starts_with("not a PHQ envelope")),
                "{:?}: {e}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_history_100_levels_deep_is_dropped() {
        let read = unpack(&envelope_with_hist(&nested_hist(99)))
            .unwrap()
            .unwrap();
        assert!(!read.hist_truncated);
        assert_eq!(read.hist, nested_hist(99));
        let read = unpack(&envelope_with_hist(&nested_hist(100)))
            .unwrap()
            .unwrap();
        assert!(read.hist_truncated);
        assert_eq!(read.hist, Value::Null);
        assert_eq!(read.item, json!({"n": 1}));
        // The same as JSON text.
        let read = unpack_json(&envelope_with_hist(&nested_hist(99)))
            .unwrap()
            .unwrap();
        assert!(!read.hist_truncated);
        assert_eq!(read.hist, nested_hist(99).to_string());
        let read = unpack_json(&envelope_with_hist(&nested_hist(100)))
            .unwrap()
            .unwrap();
        assert!(read.hist_truncated);
        assert_eq!(
            (read.item.as_str(), read.hist.as_str()),
            (r#"{"n":1}"#, "null")
        );
    }

    #[test]
    fn a_refs_object_drops_the_history() {
        let hist = json!({"svc": "s", "dt": "d", "refs": {"topic": "t", "partition": 0, "offset": 1, "key": "k", "hist": null}});
        let read = unpack(&envelope_with_hist(&hist)).unwrap().unwrap();
        assert!(read.hist_truncated);
        assert_eq!(read.hist, Value::Null);
        let read = unpack_json(&envelope_with_hist(&hist)).unwrap().unwrap();
        assert!(read.hist_truncated);
        assert_eq!(read.hist, "null");
        // Also further down the chain.
        let inner = json!({"svc": "s", "dt": "d", "refs": {}});
        let hist = json!({"svc": "s", "dt": "d", "refs": [{"topic": "t", "hist": inner}]});
        assert!(
            unpack(&envelope_with_hist(&hist))
                .unwrap()
                .unwrap()
                .hist_truncated
        );
        assert!(
            unpack_json(&envelope_with_hist(&hist))
                .unwrap()
                .unwrap()
                .hist_truncated
        );
        // A list of refs, and refs that are not objects, are fine.
        let hist = json!({"svc": "s", "dt": "d", "refs": [1, "x", {"hist": null}]});
        let read = unpack(&envelope_with_hist(&hist)).unwrap().unwrap();
        assert!(!read.hist_truncated);
        assert_eq!(read.hist, hist);
    }

    #[test]
    fn json_too_deep_is_skipped_without_recursion() {
        // A hist nested far deeper than anything is read into memory: skipped, dropped.
        let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
        let text = format!(r#"{{"item": {{"n": 1}}, "hist": {{"refs": [{{"hist": {deep}}}]}}}}"#);
        let read = unpack(text.as_bytes()).unwrap().unwrap();
        assert!(read.hist_truncated);
        assert_eq!(read.hist, Value::Null);
        assert_eq!(read.item, json!({"n": 1}));
        // Strings with brackets inside the skipped part do not confuse it.
        let text = r#"{"item": 1, "hist": [[["]]]\"", "x"]]]}"#;
        let nested = format!(
            r#"{{"item": 1, "hist": {}{}{}}}"#,
            "[".repeat(MAX_NESTING),
            r#"["]]]\"", "x"]"#,
            "]".repeat(MAX_NESTING)
        );
        assert!(!unpack(text.as_bytes()).unwrap().unwrap().hist_truncated);
        let read = unpack(nested.as_bytes()).unwrap().unwrap();
        assert!(read.hist_truncated);
        // Just under the cap is read.
        let ok = format!(
            r#"{{"item": {}1{}}}"#,
            "[".repeat(MAX_NESTING - 1),
            "]".repeat(MAX_NESTING - 1)
        );
        assert!(unpack(ok.as_bytes()).is_ok());
        assert!(unpack_json(ok.as_bytes()).is_ok());
        assert!(pack_json("s", "d", &ok[9..ok.len() - 1], &[]).is_ok());
        // An item too deep is an error, not a stack overflow.
        let deep_item = format!(r#"{{"item": {deep}}}"#);
        let e = unpack(deep_item.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("nested more than"), "{e}");
        // Unterminated deep input is an error.
        let cut = format!(r#"{{"item": 1, "hist": {}"#, "[".repeat(MAX_NESTING + 5));
        assert!(unpack(cut.as_bytes()).is_err());
    }

    #[test]
    fn refs_format_as_the_python_log_lines() {
        let r = json!({"topic": "events", "partition": 2, "offset": 41, "key": "e-7", "hist": {"svc": "x"}});
        assert_eq!(format_kafka_ref(&r), "events:2:41:e-7");
        assert_eq!(format_kafka_ref(&json!({"topic": "t"})), "t:None:None:None");
        assert_eq!(format_batch_ref(Vec::<(&str, i32, i64)>::new()), "");
        let positions = [
            ("t", 0, 10),
            ("t", 0, 11),
            ("u", 2, 7),
            ("t", 1, 3),
            ("t", 0, 12),
            ("u", 2, 5),
            ("t", 1, 4),
        ];
        assert_eq!(format_batch_ref(positions), "t[0=10:13,1=3:5],u[2=5:8]");
    }
}
