//! `paperboy produce` against a real broker.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

fn paperboy(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paperboy"))
        .args(args)
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
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    assert!(!ok && err.contains("--bootstrap is required"), "{err}");
    let (ok, err) = paperboy(
        &["produce", "-b", &b, "-t", "x", "--envelope", "s"],
        "not json\n",
    );
    assert!(!ok && err.contains("not JSON"), "{err}");
}
