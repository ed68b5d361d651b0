//! Writing what the reader read ([`Node`]s) as JSON text again: as Python's
//! `json.dumps` writes it, or compact.

use std::collections::HashMap;
use std::io::Write;

use super::python::python_number;
use super::read::{Node, Text};

/// How [`write_node`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    /// As Python's `json.dumps`: `", "` and `": "`, ASCII only, numbers as Python writes
    /// them, `NaN`/`Infinity` kept.
    Python,
    /// As serde_json's compact output: UTF-8, numbers as written, `NaN`/`Infinity` as
    /// null.
    Compact,
}

/// Writes what was read. A repeated key is written once, at its first position with its
/// last value, as Python's dict holds it.
pub(super) fn write_node(out: &mut Vec<u8>, node: &Node<'_>, style: Style) {
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
