//! Interoperability with other real clients: kcat (librdkafka) and the Java tools read
//! what Paperboy writes, and keyed records from the Java producer land on the partition
//! Paperboy's partitioner picks.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use paperboy::producer::{murmur2_partition, Producer, ProducerConfig, ProducerRecord};
use paperboy::Compression;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{what} did not run ({e}); it is needed for the interop tests"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

async fn write_sample(topic: &str, codec: Compression, n: usize) {
    let producer = Producer::new(
        ProducerConfig::new(&common::bootstrap())
            .with_compression(codec)
            .with_linger(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    for i in 0..n {
        let r = ProducerRecord::new(topic)
            .with_partition(0)
            .with_key(format!("k{i}"))
            .with_value(format!(
                "value {i} in {codec}: {}",
                "paperboy ".repeat(i % 9)
            ))
            .with_header("h", Some(Bytes::from(format!("x{i}"))));
        pending.push(producer.enqueue(r).await.unwrap());
    }
    for d in pending {
        d.await.unwrap();
    }
    producer.close().await;
}

fn expected_value(i: usize, codec: Compression) -> String {
    format!("value {i} in {codec}: {}", "paperboy ".repeat(i % 9))
}

#[tokio::test]
async fn kcat_reads_back_what_paperboy_wrote_in_every_codec() {
    let client = common::client().await;
    for codec in Compression::ALL {
        let topic = common::new_topic(&client, &format!("kcat-{codec}"), 1).await;
        write_sample(&topic, codec, 60).await;
        let out = run(
            Command::new("kcat").args([
                "-C",
                "-b",
                &common::bootstrap(),
                "-t",
                &topic,
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%o|%k|%s|%h\n",
            ]),
            "kcat",
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.len(),
            60,
            "{codec}: kcat read {} records",
            lines.len()
        );
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(
                *line,
                format!("{i}|k{i}|{}|h=x{i}", expected_value(i, codec)),
                "{codec}"
            );
        }
    }
}

#[tokio::test]
async fn the_java_console_consumer_reads_back_what_paperboy_wrote_in_every_codec() {
    let client = common::client().await;
    for codec in Compression::ALL {
        let topic = common::new_topic(&client, &format!("java-{codec}"), 1).await;
        write_sample(&topic, codec, 40).await;
        let out = run(
            Command::new(repo().join("scripts/kafka")).args([
                "console-consumer",
                "--bootstrap-server",
                &common::bootstrap(),
                "--topic",
                &topic,
                "--from-beginning",
                "--max-messages",
                "40",
                "--timeout-ms",
                "30000",
                "--formatter-property",
                "print.key=true",
                "--formatter-property",
                "print.headers=true",
                "--formatter-property",
                "print.offset=true",
            ]),
            "the Java console consumer",
        );
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("Offset:")).collect();
        assert_eq!(
            lines.len(),
            40,
            "{codec}: Java read {} records:\n{out}",
            lines.len()
        );
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(
                *line,
                format!("Offset:{i}\th:x{i}\tk{i}\t{}", expected_value(i, codec)),
                "{codec}"
            );
        }
    }
}

#[tokio::test]
async fn keyed_records_from_the_java_producer_land_where_paperboy_puts_them() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "java-keys", 6).await;
    let input: String = (0..120)
        .map(|i| format!("order-{i}:payload {i}\n"))
        .collect();
    let mut child = Command::new(repo().join("scripts/kafka"))
        .args([
            "console-producer",
            "--bootstrap-server",
            &common::bootstrap(),
            "--topic",
            &topic,
            "--reader-property",
            "parse.key=true",
            "--reader-property",
            "key.separator=:",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the Java console producer runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "console producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut seen = 0;
    for p in 0..6 {
        let n = client
            .list_offset(&topic, p, paperboy::OffsetSpec::Latest)
            .await
            .unwrap() as usize;
        for (_, key, _, _) in common::read_partition(&client, &topic, p, 0, n).await {
            let key = key.expect("keyed");
            assert_eq!(
                murmur2_partition(&key, 6),
                p,
                "Java put {:?} on partition {p}",
                String::from_utf8_lossy(&key)
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 120);
}
