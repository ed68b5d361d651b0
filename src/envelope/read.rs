//! Reading the envelope's JSON as Python's `json.loads` reads it: the [`Parser`], with
//! a nesting cap, and what it builds ([`Value`]s through [`Values`], or [`Node`]s that
//! keep numbers as their text through [`Nodes`]).

use std::hash::{Hash, Hasher};

use serde_json::{Number, Value};

use super::ordered::{Order, OrderedValue};
use super::python::is_integer;
use super::{hist_too_long, node_hist_too_long, MAX_NESTING};
use crate::error::{Error, Result};

/// An envelope as read: its item and hist as [`Value`]s or [`Node`]s.
pub(super) struct Read<T> {
    pub(super) item: T,
    pub(super) hist: T,
    pub(super) hist_truncated: bool,
}

/// Reads the envelope: `None` for an empty value.
pub(super) fn read<'a, B: Build<'a>>(value: &'a [u8]) -> Result<Option<Read<B::Out>>> {
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
///
/// [`unpack`]: super::unpack
pub(super) trait Build<'a> {
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
pub(super) struct Values;

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

/// Builds [`Node`]s: numbers as their text, every member of an object as read.
pub(super) struct Nodes;

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

/// A JSON value as read, before it becomes a [`Value`] or is written again: numbers as
/// their text, strings decoded (lone surrogates included), objects with every member as
/// read (a repeated key too).
#[derive(Debug)]
pub(super) enum Node<'a> {
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
    pub(super) fn get(&self, key: &str) -> Option<&Node<'a>> {
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
pub(super) enum Text<'a> {
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
    pub(super) fn for_each_code_point(&self, mut f: impl FnMut(u32)) {
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
pub(super) struct Parser<'a, B> {
    s: &'a str,
    pos: usize,
    /// What the input is not, when it is wrong: "not a PHQ envelope", "not JSON".
    not: &'static str,
    /// Set when a value nested deeper than [`MAX_NESTING`] was skipped.
    overflowed: bool,
    build: std::marker::PhantomData<B>,
}

impl<'a, B: Build<'a>> Parser<'a, B> {
    pub(super) fn new(s: &'a str, not: &'static str) -> Self {
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
    pub(super) fn document(&mut self) -> Result<B::Out> {
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
