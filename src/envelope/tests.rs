//! The envelope's own tests: [`pack`](super::pack) and [`unpack`](super::unpack), and
//! their JSON-text forms, against what the Python library writes and reads.

use super::*;
use crate::error::Error;
use serde_json::json;

#[test]
fn envelope_layout_matches_the_python_library() {
    let refs = vec![json!({"topic": "in", "partition": 0, "offset": 5, "key": "k", "hist": null})];
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
    let refs = vec![json!({"topic": "in", "partition": 0, "offset": 5, "key": "k", "hist": null})];
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
