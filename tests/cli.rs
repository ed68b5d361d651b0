//! `paperboy produce` and `paperboy consume` against a real broker, and `paperboy dev`
//! (the in-process cluster as a server; those tests need no broker).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use paperboy::consumer::{Consumer, ConsumerConfig, TopicPartition};
use paperboy::{Acks, Compression, NewRecord, OffsetSpec};
use serde_json::Value;

/// What a run of the binary left: success, stdout, stderr.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `paperboy args` with `stdin`; kills it and fails the test after 60 s.
fn run(args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paperboy"))
        .args(args)
        // -b falls back to KAFKA_BOOTSTRAP: the tests give it or mean its absence.
        .env_remove("KAFKA_BOOTSTRAP")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("paperboy runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let status = wait_or_kill(&mut child, Duration::from_secs(60), args);
    Run {
        ok: status.success(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn wait_or_kill(child: &mut Child, limit: Duration, args: &[&str]) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("paperboy {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn paperboy(args: &[&str], stdin: &str) -> (bool, String) {
    let r = run(args, stdin);
    (r.ok, r.stderr)
}

/// The JSON objects of `consume`'s output, one per line.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn group_config(group: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(&common::bootstrap());
    c.set("group.id", group).unwrap();
    c
}

/// Committed offsets of `group` for partitions `0..partitions` of `topic`.
async fn committed(group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Option<i64>> {
    let consumer = Consumer::new(group_config(group)).await.unwrap();
    let tps: Vec<_> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let got = consumer.committed(&tps).await.unwrap();
    consumer.close().await;
    got.into_iter().map(|(tp, o)| (tp.partition, o)).collect()
}

async fn end_offsets(
    client: &paperboy::Client,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Option<i64>> {
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        let end = client
            .list_offset(topic, p, OffsetSpec::Latest)
            .await
            .unwrap();
        out.insert(p, Some(end));
    }
    out
}

#[tokio::test]
async fn produce_sends_stdin_lines_with_keys() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli", 1).await;
    let b = common::bootstrap();
    let (ok, err) = paperboy(
        &[
            "produce", "-b", &b, "-t", &topic, "-K", ":", "-z", "lz4", "--acks", "all",
        ],
        "k1:hello\nk2:with:colon\nno separator\n",
    );
    assert!(ok, "{err}");
    assert!(err.contains("3 records delivered, 0 failed"), "{err}");
    let read = common::read_partition(&client, &topic, 0, 0, 3).await;
    let got: Vec<(Option<String>, String)> = read
        .into_iter()
        .map(|(_, k, v, _)| {
            (
                k.map(|k| String::from_utf8(k.to_vec()).unwrap()),
                String::from_utf8(v.unwrap().to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("k1".into()), "hello".into()),
            (Some("k2".into()), "with:colon".into()),
            (None, "no separator".into()),
        ]
    );
}

#[tokio::test]
async fn produce_wraps_json_lines_in_the_envelope_and_generates_records() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-env", 1).await;
    let b = common::bootstrap();
    let (ok, err) = paperboy(
        &[
            "produce",
            "-b",
            &b,
            "-t",
            &topic,
            "-K",
            "|",
            "--envelope",
            "svc",
        ],
        "id-1|{\"a\": 1}\n{\"b\": [true]}\n",
    );
    assert!(ok, "{err}");
    let read = common::read_partition(&client, &topic, 0, 0, 2).await;
    assert_eq!(read[0].1.as_deref(), Some(&b"id-1"[..]));
    let v0 = std::str::from_utf8(read[0].2.as_ref().unwrap()).unwrap();
    assert!(
        v0.starts_with(r#"{"item": {"a": 1}, "hist": {"svc": "svc", "dt": ""#),
        "{v0}"
    );
    let id2 = String::from_utf8(read[1].1.clone().unwrap().to_vec()).unwrap();
    assert!(id2.starts_with("svc-"), "generated id {id2}");

    let (ok, err) = paperboy(
        &[
            "produce", "-b", &b, "-t", &topic, "--count", "1000", "--size", "64", "-q",
        ],
        "",
    );
    assert!(ok, "{err}");
    let n = client
        .list_offset(&topic, 0, paperboy::OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(n, 1002);
}

#[tokio::test]
async fn produce_fails_loudly() {
    let b = common::bootstrap();
    let (ok, err) = paperboy(
        &[
            "produce",
            "-b",
            &b,
            "-t",
            &common::unique_topic("missing"),
            "--count",
            "3",
            // On by default: the broker would create the topic.
            "-X",
            "allow.auto.create.topics=false",
        ],
        "",
    );
    assert!(!ok);
    assert!(err.contains("unknown topic"), "{err}");
    let (ok, err) = paperboy(&["produce", "-b", &b, "-t", "x", "-X", "linger.msec=5"], "");
    assert!(!ok);
    assert!(
        err.contains("unknown configuration key `linger.msec`"),
        "{err}"
    );
    let (ok, err) = paperboy(&["produce", "-t", "x"], "");
    assert!(
        !ok && err.contains("required") && err.contains("--bootstrap"),
        "{err}"
    );
    let (ok, err) = paperboy(
        &["produce", "-b", &b, "-t", "x", "--envelope", "s"],
        "not json\n",
    );
    assert!(!ok && err.contains("not JSON"), "{err}");
}

#[tokio::test]
async fn consume_in_a_group_prints_every_record_once_and_commits_the_end() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-consume-group", 3).await;
    let b = common::bootstrap();
    let lines: String = (0..100).map(|i| format!("k{i}:v{i}\n")).collect();
    let (ok, err) = paperboy(&["produce", "-b", &b, "-t", &topic, "-K", ":"], &lines);
    assert!(ok, "{err}");
    let ends = end_offsets(&client, &topic, 3).await;
    assert_eq!(ends.values().map(|e| e.unwrap()).sum::<i64>(), 100);

    let group = common::unique_topic("cli-group");
    let r = run(
        &[
            "consume",
            "-b",
            &b,
            "-t",
            &topic,
            "--group",
            &group,
            "--from-beginning",
            "--count",
            "100",
        ],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("paperboy consume: 100 records") && r.stderr.contains("records/s"),
        "{}",
        r.stderr
    );
    let records = json_lines(&r.stdout);
    assert_eq!(records.len(), 100, "{}", r.stdout);
    let mut keys = BTreeSet::new();
    let mut positions = BTreeSet::new();
    for rec in &records {
        assert_eq!(rec["topic"], topic.as_str());
        assert!(
            rec["timestamp"].as_i64().unwrap() > 1_600_000_000_000,
            "{rec}"
        );
        let key = rec["key"].as_str().unwrap().to_owned();
        assert_eq!(rec["value"].as_str().unwrap(), format!("v{}", &key[1..]));
        assert!(keys.insert(key.clone()), "key {key} printed twice");
        let pos = (
            rec["partition"].as_i64().unwrap() as i32,
            rec["offset"].as_i64().unwrap(),
        );
        assert!(positions.insert(pos), "{pos:?} printed twice");
    }
    let want: BTreeSet<String> = (0..100).map(|i| format!("k{i}")).collect();
    assert_eq!(keys, want);
    // Every offset of every partition, from 0 to its end.
    let want: BTreeSet<(i32, i64)> = ends
        .iter()
        .flat_map(|(p, end)| (0..end.unwrap()).map(move |o| (*p, o)))
        .collect();
    assert_eq!(positions, want);
    assert_eq!(committed(&group, &topic, 3).await, ends);

    // The group resumes at its commits: nothing left to print.
    let r = run(&["consume", "-b", &b, "-t", &topic, "-G", &group, "-e"], "");
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.contains("end of every partition reached"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn consume_a_partition_from_an_offset_to_the_end() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-consume-offset", 2).await;
    let b = common::bootstrap();
    let lines: String = (0..20).map(|i| format!("k{i}:v{i}\n")).collect();
    let (ok, err) = paperboy(
        &[
            "produce",
            "-b",
            &b,
            "-t",
            &topic,
            "-K",
            ":",
            "--partition",
            "0",
        ],
        &lines,
    );
    assert!(ok, "{err}");
    // Bytes that are not UTF-8, a tombstone, and a record in the other partition.
    let binary = NewRecord {
        key: Some(vec![0xff, 0x00, 0x41].into()),
        value: Some(vec![0xc3, 0x28].into()),
        ..NewRecord::default()
    };
    let tombstone = NewRecord {
        key: Some("gone".into()),
        value: None,
        ..NewRecord::default()
    };
    client
        .produce(
            &topic,
            0,
            &[binary, tombstone],
            Compression::None,
            Acks::All,
        )
        .await
        .unwrap();
    let other = NewRecord {
        value: Some("elsewhere".into()),
        ..NewRecord::default()
    };
    client
        .produce(&topic, 1, &[other], Compression::None, Acks::All)
        .await
        .unwrap();

    let r = run(
        &[
            "consume",
            "-b",
            &b,
            "-t",
            &topic,
            "--partition",
            "0",
            "--offset",
            "5",
            "-e",
        ],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    let records = json_lines(&r.stdout);
    let offsets: Vec<i64> = records
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, (5..22).collect::<Vec<_>>(), "{}", r.stdout);
    for rec in &records[..15] {
        assert_eq!(rec["partition"], 0);
        let o = rec["offset"].as_i64().unwrap();
        assert_eq!(rec["key"], format!("k{o}").as_str());
        assert_eq!(rec["value"], format!("v{o}").as_str());
    }
    // Not UTF-8: hex in `key_hex` / `value_hex`, no `key` / `value`.
    let bin = records[15].as_object().unwrap();
    assert_eq!(bin["key_hex"], "ff0041");
    assert_eq!(bin["value_hex"], "c328");
    assert!(
        !bin.contains_key("key") && !bin.contains_key("value"),
        "{bin:?}"
    );
    assert_eq!(records[16]["key"], "gone");
    assert_eq!(records[16]["value"], Value::Null);
    assert!(
        r.stderr.contains("17 records") && r.stderr.contains("end of every partition reached"),
        "{}",
        r.stderr
    );

    // --offset alone: every partition from there; -o -N: the last N.
    let r = run(
        &["consume", "-b", &b, "-t", &topic, "-o", "beginning", "-e"],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    let records = json_lines(&r.stdout);
    assert_eq!(records.len(), 23);
    assert_eq!(
        records.iter().filter(|r| r["partition"] == 1).count(),
        1,
        "{}",
        r.stdout
    );
    let r = run(
        &[
            "consume", "-b", &b, "-t", &topic, "-p", "0", "-o", "-3", "-e",
        ],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    let offsets: Vec<i64> = json_lines(&r.stdout)
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, [19, 20, 21]);
    // --count stops first.
    let r = run(
        &[
            "consume", "-b", &b, "-t", &topic, "-p", "0", "-o", "0", "-c", "4",
        ],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(json_lines(&r.stdout).len(), 4);
    assert!(r.stderr.contains("--count reached"), "{}", r.stderr);
}

#[tokio::test]
async fn consume_unpacks_phq_envelopes() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-consume-env", 1).await;
    let b = common::bootstrap();
    let (ok, err) = paperboy(
        &[
            "produce",
            "-b",
            &b,
            "-t",
            &topic,
            "-K",
            "|",
            "--envelope",
            "importer",
        ],
        "id-1|{\"a\": 1, \"b\": [true, null]}\nid-2|\"just a string\"\n",
    );
    assert!(ok, "{err}");
    let (ok, err) = paperboy(&["produce", "-b", &b, "-t", &topic], "not an envelope\n");
    assert!(ok, "{err}");
    // No hist (old data): null; an empty value is no PHQ message.
    let raw = |v: &'static str| NewRecord {
        value: Some(v.into()),
        ..NewRecord::default()
    };
    client
        .produce(
            &topic,
            0,
            &[raw(r#"{"item": [1, 2]}"#), raw("")],
            Compression::None,
            Acks::All,
        )
        .await
        .unwrap();

    let r = run(
        &[
            "consume",
            "-b",
            &b,
            "-t",
            &topic,
            "--from-beginning",
            "--envelope",
            "-e",
        ],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    let records = json_lines(&r.stdout);
    assert_eq!(records.len(), 5, "{}", r.stdout);
    assert_eq!(records[0]["key"], "id-1");
    assert_eq!(
        records[0]["value"],
        serde_json::json!({"a": 1, "b": [true, null]})
    );
    let hist = &records[0]["hist"];
    assert_eq!(hist["svc"], "importer");
    assert_eq!(hist["refs"], serde_json::json!([]));
    assert!(hist["dt"].as_str().unwrap().ends_with("+00:00"), "{hist}");
    assert_eq!(records[1]["value"], "just a string");
    assert_eq!(records[1]["hist"]["svc"], "importer");
    assert!(records[0].get("envelope_error").is_none());
    // Not an envelope: printed as is, with the reason.
    assert_eq!(records[2]["value"], "not an envelope");
    assert!(records[2].get("hist").is_none());
    assert!(
        records[2]["envelope_error"]
            .as_str()
            .unwrap()
            .contains("not a PHQ envelope"),
        "{}",
        records[2]
    );
    assert_eq!(records[3]["value"], serde_json::json!([1, 2]));
    assert_eq!(records[3]["hist"], Value::Null);
    assert!(records[3].get("envelope_error").is_none());
    assert_eq!(records[4]["value"], "");
    assert!(records[4]["envelope_error"].is_string(), "{}", records[4]);
    assert!(r.stderr.contains("2 not PHQ envelopes"), "{}", r.stderr);
}

/// Issue 12: `produce --envelope` writes every number as Python's `json.dumps` would
/// (integers of any size as written, floats correctly rounded to Python's repr), and
/// `consume --envelope` prints them exactly as written in the envelope.
#[tokio::test]
async fn envelopes_keep_numbers_exact_through_produce_and_consume() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-env-numbers", 1).await;
    let b = common::bootstrap();
    let line = r#"{"big": 123456789012345678901234567890, "neg": -98765432109876543210987654321, "f": 0.1234567890123456789, "tie": 1658206780088562.25, "sub": 5e-324, "e": 1E3, "z": -0, "nz": -0.0, "max": 1.7976931348623157e308, "inf": 1e400, "s": "\u00e9\ud83d\ude00\u0000\ud800", "nan": NaN}"#;
    // What Python's json.dumps(json.loads(line)) writes.
    let python = r#"{"big": 123456789012345678901234567890, "neg": -98765432109876543210987654321, "f": 0.12345678901234568, "tie": 1658206780088562.2, "sub": 5e-324, "e": 1000.0, "z": 0, "nz": -0.0, "max": 1.7976931348623157e+308, "inf": Infinity, "s": "\u00e9\ud83d\ude00\u0000\ud800", "nan": NaN}"#;
    // Random floats written with 40 digits: reading them must round correctly.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let floats: Vec<f64> = std::iter::from_fn(|| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some(f64::from_bits(x))
    })
    .filter(|v| v.is_finite())
    .take(500)
    .collect();
    let mut input = format!("exact|{line}\n");
    for (i, v) in floats.iter().enumerate() {
        input += &format!("f{i}|{{\"v\": {v:.40e}}}\n");
    }
    let (ok, err) = paperboy(
        &[
            "produce",
            "-b",
            &b,
            "-t",
            &topic,
            "-K",
            "|",
            "--envelope",
            "svc",
        ],
        &input,
    );
    assert!(ok, "{err}");
    let read = common::read_partition(&client, &topic, 0, 0, 1 + floats.len()).await;
    let value = |i: usize| std::str::from_utf8(read[i].2.as_ref().unwrap()).unwrap();
    let prefix = format!(r#"{{"item": {python}, "hist": {{"svc": "svc", "dt": ""#);
    assert!(value(0).starts_with(&prefix), "{}", value(0));
    for (i, v) in floats.iter().enumerate() {
        let want = format!(
            r#"{{"item": {{"v": {}}}, "hist""#,
            paperboy::phq::envelope::python_float(*v)
        );
        assert!(value(i + 1).starts_with(&want), "{v:e}: {}", value(i + 1));
    }

    let r = run(
        &[
            "consume",
            "-b",
            &b,
            "-t",
            &topic,
            "--from-beginning",
            "--envelope",
            "-e",
        ],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 1 + floats.len(), "{}", r.stdout);
    // The item as written in the envelope (Python's text), compact; NaN and Infinity as
    // null; the lone surrogate kept as its escape.
    let item = r#""value":{"big":123456789012345678901234567890,"neg":-98765432109876543210987654321,"f":0.12345678901234568,"tie":1658206780088562.2,"sub":5e-324,"e":1000.0,"z":0,"nz":-0.0,"max":1.7976931348623157e+308,"inf":null,"s":"é😀\u0000\ud800","nan":null},"hist":{"svc":"svc""#;
    assert!(lines[0].contains(item), "{}", lines[0]);
    for (v, line) in floats.iter().zip(json_lines(&lines[1..].join("\n"))) {
        let read = line["value"]["v"].as_f64().unwrap();
        assert_eq!(read.to_bits(), v.to_bits(), "{v:e}: {line}");
    }
}

#[tokio::test]
async fn consume_fails_loudly() {
    let b = common::bootstrap();
    let r = run(&["consume", "-b", &b, "-t", "x", "--bogus"], "");
    assert!(!r.ok);
    assert!(
        r.stderr.contains("unexpected argument '--bogus'"),
        "{}",
        r.stderr
    );
    let r = run(&["consume", "-b", &b, "--from-beginning"], "");
    assert!(!r.ok);
    assert!(
        r.stderr.contains("required") && r.stderr.contains("--topic"),
        "{}",
        r.stderr
    );
    let r = run(&["consume", "-t", "x"], "");
    assert!(
        !r.ok && r.stderr.contains("required") && r.stderr.contains("--bootstrap"),
        "{}",
        r.stderr
    );
    let r = run(&["consume", "-b", &b, "-t", "x", "--offset", "soon"], "");
    assert!(
        !r.ok && r.stderr.contains("'soon'") && r.stderr.contains("--offset"),
        "{}",
        r.stderr
    );
    let r = run(&["consume", "-b", &b, "-t", "x", "-G", "g", "-p", "0"], "");
    assert!(
        !r.ok && r.stderr.contains("cannot be used with"),
        "{}",
        r.stderr
    );
    let r = run(&["consume", "-b", &b, "-t", "x", "--count"], "");
    assert!(
        !r.ok && r.stderr.contains("a value is required for '--count"),
        "{}",
        r.stderr
    );
    let r = run(
        &[
            "consume",
            "-b",
            &b,
            "-t",
            "x",
            "-X",
            "fetch.max.wait.msec=5",
        ],
        "",
    );
    assert!(
        !r.ok
            && r.stderr
                .contains("unknown configuration key `fetch.max.wait.msec`"),
        "{}",
        r.stderr
    );
    let missing = common::unique_topic("missing");
    let r = run(&["consume", "-b", &b, "-t", &missing, "-e"], "");
    assert!(!r.ok);
    assert!(
        r.stderr.contains(&format!("unknown topic {missing}")),
        "{}",
        r.stderr
    );
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-consume-bad", 2).await;
    let r = run(&["consume", "-b", &b, "-t", &topic, "-p", "2", "-e"], "");
    assert!(!r.ok);
    assert!(r.stderr.contains("has no partition 2"), "{}", r.stderr);
    let r = run(&["consume", "--help"], "");
    assert!(r.ok && r.stdout.contains("--exit-at-end"), "{}", r.stdout);
}

#[cfg(unix)]
#[tokio::test]
async fn consume_stops_cleanly_on_sigterm_and_commits_what_it_printed() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-consume-sig", 2).await;
    let b = common::bootstrap();
    let lines: String = (0..30).map(|i| format!("k{i}:v{i}\n")).collect();
    let (ok, err) = paperboy(&["produce", "-b", &b, "-t", &topic, "-K", ":"], &lines);
    assert!(ok, "{err}");
    let group = common::unique_topic("cli-sig");
    let args = [
        "consume",
        "-b",
        &b,
        "-t",
        &topic,
        "-G",
        &group,
        "--from-beginning",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_paperboy"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("paperboy runs");
    let stderr = drain(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stdout.lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let mut printed = Vec::new();
    while printed.len() < 30 {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => printed.push(l),
            Err(e) => {
                let _ = child.kill();
                panic!("{} of 30 lines, then {e}", printed.len());
            }
        }
    }
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = wait_or_kill(&mut child, Duration::from_secs(30), &args);
    reader.join().unwrap();
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(
        stderr.contains("30 records") && stderr.contains("stopped by signal"),
        "{stderr}"
    );
    assert_eq!(json_lines(&printed.join("\n")).len(), 30);
    assert_eq!(
        committed(&group, &topic, 2).await,
        end_offsets(&client, &topic, 2).await
    );
}

/// Whether kcat is on PATH. Missing: a failure when `CI` is set, else `false` with the
/// reason printed (the caller skips its kcat step).
fn kcat_available() -> bool {
    let found = Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "kcat is not installed, and CI is set: install kcat (Debian: apt-get install kcat)"
        );
        eprintln!(
            "skipping the kcat step: kcat is not installed (set CI=1 to make this a failure)"
        );
    }
    found
}

/// A running `paperboy dev`: the child, its bootstrap address (the first stdout line),
/// and its stderr being drained. Killed on drop if the test did not stop it.
struct Dev {
    child: Child,
    bootstrap: String,
    stderr: Option<std::thread::JoinHandle<String>>,
    args: Vec<String>,
}

impl Dev {
    /// Starts `paperboy dev args` and waits (at most 30 s) for its first stdout line.
    fn start(args: &[&str]) -> Dev {
        let mut all = vec!["dev".to_owned()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_paperboy"))
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("paperboy dev runs");
        let stderr = drain(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading, so that the server never blocks on a full pipe.
            for _ in lines {}
        });
        let first = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "paperboy {all:?} printed no bootstrap line ({other:?}); stderr: {}",
                    stderr.join().unwrap()
                );
            }
        };
        Dev {
            child,
            bootstrap: first.trim().to_owned(),
            stderr: Some(stderr),
            args: all,
        }
    }

    /// Sends SIGTERM; returns the exit status (at most `limit` later, else the test
    /// fails) and everything printed on stderr.
    fn terminate(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let status = wait_or_kill(&mut self.child, limit, &args);
        (status, self.stderr.take().unwrap().join().unwrap())
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(unix)]
#[test]
fn dev_serves_produce_consume_and_kcat_then_stops_on_sigterm() {
    let mut dev = Dev::start(&["--port", "0", "--nodes", "2", "--partitions", "3"]);
    let b = dev.bootstrap.clone();
    let addrs: Vec<&str> = b.split(',').collect();
    assert_eq!(addrs.len(), 2, "a bootstrap address per node: {b}");
    for a in &addrs {
        let a: std::net::SocketAddr = a.parse().unwrap_or_else(|e| panic!("{a}: {e}"));
        assert!(a.ip().is_loopback() && a.port() != 0, "{a}");
    }

    // Keyed lines through `paperboy produce`; the topic is created on first use with
    // --partitions 3.
    let n = 300;
    let lines: String = (0..n).map(|i| format!("key-{i}:value {i}\n")).collect();
    let (ok, err) = paperboy(
        &["produce", "-b", &b, "-t", "dev-orders", "-K", ":"],
        &lines,
    );
    assert!(ok, "{err}");
    assert!(err.contains(&format!("{n} records")), "{err}");

    // Read back, every partition to its end.
    let r = run(
        &[
            "consume",
            "-b",
            &b,
            "-t",
            "dev-orders",
            "--from-beginning",
            "-e",
        ],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    let read = json_lines(&r.stdout);
    assert_eq!(read.len(), n, "records read back: {}", r.stderr);
    let mut by_partition: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut pairs = BTreeSet::new();
    for v in &read {
        assert_eq!(v["topic"], "dev-orders");
        by_partition
            .entry(v["partition"].as_i64().unwrap())
            .or_default()
            .push(v["offset"].as_i64().unwrap());
        let key = v["key"].as_str().unwrap().to_owned();
        let value = v["value"].as_str().unwrap().to_owned();
        assert_eq!(
            value,
            format!("value {}", key.strip_prefix("key-").unwrap()),
            "{v}"
        );
        assert!(pairs.insert(key), "read twice: {v}");
    }
    assert_eq!(pairs.len(), n, "each record once");
    assert_eq!(
        by_partition.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2],
        "keys spread over the 3 partitions of an auto-created topic"
    );
    for (p, offsets) in &by_partition {
        let want: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, &want, "partition {p}: offsets from 0, in order");
    }

    if kcat_available() {
        let out = Command::new("kcat")
            .args(["-b", &b, "-L", "-m", "10"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kcat -L: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(" 2 brokers:"), "{text}");
        for a in &addrs {
            assert!(text.contains(a), "kcat lists {a}: {text}");
        }
        assert!(
            text.contains("topic \"dev-orders\" with 3 partitions"),
            "{text}"
        );
    }

    let started = Instant::now();
    let (status, stderr) = dev.terminate(Duration::from_secs(5));
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The listeners are gone.
    for a in &addrs {
        assert!(
            std::net::TcpStream::connect(a).is_err(),
            "{a} still accepts connections after the stop"
        );
    }
}

#[test]
fn dev_refuses_an_unknown_flag() {
    let r = run(&["dev", "--port", "0", "--bogus-flag"], "");
    assert!(!r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("--bogus-flag"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "no bootstrap line: {}", r.stdout);
}

#[test]
fn dev_fails_naming_the_address_when_its_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let r = run(&["dev", "--port", &port], "");
    assert!(!r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "no bootstrap line: {}", r.stdout);
    drop(taken);
}

/// `consume -e` from the beginning of partition 0 with `isolation.level`: the values.
fn consume_values(topic: &str, isolation: &str) -> Vec<String> {
    let b = common::bootstrap();
    let prop = format!("isolation.level={isolation}");
    let r = run(
        &[
            "consume",
            "-b",
            &b,
            "-t",
            topic,
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-X",
            &prop,
        ],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    json_lines(&r.stdout)
        .iter()
        .map(|v| v["value"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn produce_with_a_transactional_id_commits_its_input_in_transactions() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-txn", 1).await;
    let b = common::bootstrap();
    let id = common::unique_topic("cli-txn");
    let txn = format!("transactional.id={id}");
    let lines: String = (0..250).map(|i| format!("v{i}\n")).collect();
    let (ok, err) = paperboy(
        &[
            "produce",
            "-b",
            &b,
            "-t",
            &topic,
            "-X",
            &txn,
            "--transaction-records",
            "100",
        ],
        &lines,
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("250 records committed in 3 transactions"),
        "{err}"
    );
    let want: Vec<String> = (0..250).map(|i| format!("v{i}")).collect();
    assert_eq!(consume_values(&topic, "read_committed"), want);
}

#[tokio::test]
async fn a_signal_aborts_the_open_transaction_and_keeps_the_committed_ones() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-txn-sig", 1).await;
    let b = common::bootstrap();
    let id = common::unique_topic("cli-txn-sig");
    let txn = format!("transactional.id={id}");
    let args = [
        "produce",
        "-b",
        &b,
        "-t",
        &topic,
        "-X",
        &txn,
        "--transaction-records",
        "10",
        "--transaction-ms",
        "600000",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_paperboy"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("paperboy runs");
    let stderr = drain(child.stderr.take().unwrap());
    // 25 lines: two transactions of 10 commit, 5 records stay in the open one; stdin
    // stays open.
    let mut stdin = child.stdin.take().unwrap();
    let lines: String = (0..25).map(|i| format!("v{i}\n")).collect();
    stdin.write_all(lines.as_bytes()).unwrap();
    stdin.flush().unwrap();
    // In the log: 25 records and two commit markers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .list_offset(&topic, 0, OffsetSpec::Latest)
        .await
        .unwrap()
        < 27
    {
        assert!(Instant::now() < deadline, "the records did not arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = wait_or_kill(&mut child, Duration::from_secs(30), &args);
    drop(stdin);
    let stderr = stderr.join().unwrap();
    assert!(
        !status.success(),
        "a signal is a failure of the input: {stderr}"
    );
    assert!(
        stderr.contains("stopped by signal")
            && stderr.contains("the open transaction (5 records) was aborted")
            && stderr.contains("20 records were committed"),
        "{stderr}"
    );
    let committed: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    assert_eq!(consume_values(&topic, "read_committed"), committed);
    let all: Vec<String> = (0..25).map(|i| format!("v{i}")).collect();
    assert_eq!(consume_values(&topic, "read_uncommitted"), all);
}
