//! Writing JSON as Python's `json.dumps` writes it: the [`PythonFormatter`], Python's
//! float `repr` ([`python_float`]), and the envelope's `dt` ([`format_dt`], [`now_dt`]).

use std::borrow::Cow;
use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::Formatter;

use super::read::{Nodes, Parser};
use super::write::{write_node, Style};
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
pub(super) fn is_integer(text: &str) -> bool {
    !text.contains(['.', 'e', 'E'])
}

/// A JSON number's text as Python's `json.dumps` writes the number `json.loads` reads
/// from it: an integer as written (of any size; `-0` is the integer 0), a float by its
/// `repr` (correctly rounded: `1E400` is `Infinity`, `1.00000000000000001` is `1.0`).
pub(super) fn python_number(text: &str) -> Cow<'_, str> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::pack;
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
    fn dt_is_rfc3339_utc_whole_seconds() {
        assert_eq!(format_dt(1_577_133_103), "2019-12-23T20:31:43+00:00");
        assert_eq!(format_dt(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(format_dt(951_782_400), "2000-02-29T00:00:00+00:00");
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
}
