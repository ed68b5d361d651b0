//! The PHQ JSON envelope, written byte for byte as Python's `json.dumps` writes it, and
//! read as the Python library reads it.
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

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::Formatter;
use serde_json::Value;

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
}

/// A float as Python's `repr` writes it: the shortest digits that round-trip, in
/// positional notation for exponents -4..16, else `d.ddde±XX`.
pub fn python_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.2345e-5", "1e16", "-0e0".
    let sci = format!("{v:e}");
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
    refs: &'a [Value],
}

/// Packs a payload in the PHQ envelope:
/// `{"item": payload, "hist": {"svc": svc, "dt": dt, "refs": refs}}`.
///
/// ```
/// use paperboy::phq::envelope::pack;
/// use serde_json::json;
///
/// let bytes = pack("billing", "2019-12-23T20:31:43+00:00", &json!({"total": 1.5, "name": "café"}), &[]).unwrap();
/// assert_eq!(
///     std::str::from_utf8(&bytes).unwrap(),
///     r#"{"item": {"total": 1.5, "name": "caf\u00e9"}, "hist": {"svc": "billing", "dt": "2019-12-23T20:31:43+00:00", "refs": []}}"#
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
        hist: Hist { svc, dt, refs },
    })
}

/// The ref of a consumed message, as the Python library builds it:
/// `{"topic", "partition", "offset", "key", "hist"}` with the message's own history.
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
    /// The payload: the envelope's `item`.
    pub item: Value,
    /// The envelope's `hist`; null when it is missing, null, or was dropped.
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
/// all a [`Value`] can hold for them. Keys other than `item` and `hist` are ignored; a
/// missing `hist` reads as null.
///
/// ```
/// use paperboy::phq::envelope::unpack;
/// use serde_json::json;
///
/// let read = unpack(br#"{"item": {"n": 1}, "hist": {"svc": "a", "dt": "2019-12-23T20:31:43+00:00", "refs": []}}"#)
///     .unwrap()
///     .unwrap();
/// assert_eq!(read.item, json!({"n": 1}));
/// assert_eq!(read.hist["svc"], "a");
/// assert!(unpack(b"").unwrap().is_none());
/// ```
///
/// # Errors
/// [`Error::Json`] when the value is not UTF-8, not JSON, not a JSON object, has no
/// `item`, or nests its `item` more than [`MAX_NESTING`] levels deep.
pub fn unpack(value: &[u8]) -> Result<Option<Unpacked>> {
    if value.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(value)
        .map_err(|e| Error::Json(format!("not a PHQ envelope: not UTF-8: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser {
        s: text,
        pos: 0,
        overflowed: false,
    };
    parser.envelope().map(Some)
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

/// A JSON reader with a nesting cap, for envelopes whose history is deeper than
/// serde_json's recursion limit (128) allows. Strings and numbers are handed to
/// serde_json once their extent is found.
struct Parser<'a> {
    s: &'a str,
    pos: usize,
    /// Set when a value nested deeper than [`MAX_NESTING`] was skipped.
    overflowed: bool,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> Error {
        Error::Json(format!("not a PHQ envelope: {what} at byte {}", self.pos))
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn envelope(&mut self) -> Result<Unpacked> {
        self.skip_ws();
        if self.peek() != Some(b'{') {
            return Err(self.err("expected a JSON object"));
        }
        let mut item = None;
        let mut hist = Value::Null;
        let mut truncated = false;
        self.members(|p, key| {
            p.overflowed = false;
            let v = p.value(2)?;
            match key.as_str() {
                "hist" => {
                    truncated = p.overflowed;
                    hist = v;
                }
                _ if p.overflowed => {
                    return Err(p.err(&format!(
                        "`{key}` is nested more than {MAX_NESTING} levels deep"
                    )))
                }
                "item" => item = Some(v),
                _ => {}
            }
            Ok(())
        })?;
        self.skip_ws();
        if self.pos != self.s.len() {
            return Err(self.err("extra data after the JSON object"));
        }
        let item = item.ok_or_else(|| Error::Json("not a PHQ envelope: no `item`".into()))?;
        if truncated || hist_too_long(&hist, 1) {
            return Ok(Unpacked {
                item,
                hist: Value::Null,
                hist_truncated: true,
            });
        }
        Ok(Unpacked {
            item,
            hist,
            hist_truncated: false,
        })
    }

    /// A value whose containers are `depth` levels deep.
    fn value(&mut self, depth: usize) -> Result<Value> {
        self.skip_ws();
        match self.peek() {
            Some(b'{' | b'[') if depth > MAX_NESTING => {
                self.skip_nested()?;
                self.overflowed = true;
                Ok(Value::Null)
            }
            Some(b'{') => {
                let mut map = serde_json::Map::new();
                self.members(|p, key| {
                    let v = p.value(depth + 1)?;
                    map.insert(key, v);
                    Ok(())
                })?;
                Ok(Value::Object(map))
            }
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'N') => self.literal("NaN", Value::Null),
            Some(b'I') => self.literal("Infinity", Value::Null),
            Some(b'-') if self.s[self.pos..].starts_with("-Infinity") => {
                self.literal("-Infinity", Value::Null)
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected a JSON value")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    /// The members of the object at `pos`, each handed to `f` with its key; `f` reads
    /// the value.
    fn members(&mut self, mut f: impl FnMut(&mut Self, String) -> Result<()>) -> Result<()> {
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

    fn array(&mut self, depth: usize) -> Result<Value> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
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

    fn string(&mut self) -> Result<String> {
        let start = self.pos;
        let escaped = self.scan_string()?;
        let raw = &self.s[start..self.pos];
        if !escaped {
            return Ok(raw[1..raw.len() - 1].to_owned());
        }
        serde_json::from_str(raw).map_err(|e| self.err(&format!("bad string ({e})")))
    }

    fn number(&mut self) -> Result<Value> {
        let start = self.pos;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.pos += 1;
        }
        let raw = &self.s[start..self.pos];
        serde_json::from_str::<serde_json::Number>(raw)
            .map(Value::Number)
            .map_err(|_| self.err(&format!("bad number `{raw}`")))
    }

    fn literal(&mut self, word: &str, v: Value) -> Result<Value> {
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
/// use paperboy::phq::envelope::format_kafka_ref;
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
/// use paperboy::phq::envelope::format_batch_ref;
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
        // Key order is kept (preserve_order), so the item re-packs to the same bytes.
        let again = pack("svc", "2019-12-23T20:31:43+00:00", &read.item, &refs).unwrap();
        assert_eq!(again, bytes);
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
    }

    #[test]
    fn a_refs_object_drops_the_history() {
        let hist = json!({"svc": "s", "dt": "d", "refs": {"topic": "t", "partition": 0, "offset": 1, "key": "k", "hist": null}});
        let read = unpack(&envelope_with_hist(&hist)).unwrap().unwrap();
        assert!(read.hist_truncated);
        assert_eq!(read.hist, Value::Null);
        // Also further down the chain.
        let inner = json!({"svc": "s", "dt": "d", "refs": {}});
        let hist = json!({"svc": "s", "dt": "d", "refs": [{"topic": "t", "hist": inner}]});
        assert!(
            unpack(&envelope_with_hist(&hist))
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
