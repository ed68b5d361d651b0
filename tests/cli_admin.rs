//! `paperboy metadata`, `topics`, `groups`, `offsets` and `completions` against a real
//! broker: what they print (text and `--json`) and what they change, checked through the
//! library.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use paperboy::consumer::{Consumer, ConsumerConfig};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy::{OffsetSpec, TopicPartition};
use serde_json::Value;

/// Runs `paperboy args`: (success, stdout, stderr).
fn paperboy(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_paperboy"))
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP")
        .stdin(Stdio::null())
        .output()
        .expect("paperboy runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (ok, out, err) = paperboy(args);
    assert!(ok, "paperboy {args:?} failed: {err}");
    out
}

fn json(args: &[&str]) -> Value {
    let out = ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

async fn produce(topic: &str, partition: i32, values: &[(i64, &str)]) {
    let p = Producer::new(ProducerConfig::new(&common::bootstrap()))
        .await
        .unwrap();
    for (ts, v) in values {
        let r = ProducerRecord::new(topic)
            .with_partition(partition)
            .with_timestamp(*ts)
            .with_value(v.to_string());
        p.send(r).await.unwrap();
    }
    p.close().await;
}

#[tokio::test]
async fn metadata_lists_brokers_and_partitions_in_text_and_json() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-meta", 3).await;
    let b = common::bootstrap();
    let text = ok(&["metadata", "-b", &b, "-t", &topic]);
    assert!(text.contains("broker 1 at "), "{text}");
    assert!(
        text.contains(&format!("topic \"{topic}\" with 3 partitions")),
        "{text}"
    );
    assert!(
        text.contains("partition 2, leader 1, replicas: 1, isrs: 1"),
        "{text}"
    );
    let v = json(&["metadata", "-b", &b, "--json"]);
    let t = v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic.as_str())
        .expect("the topic is listed");
    assert_eq!(t["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(t["partitions"][0]["leader"], 1);
    assert_eq!(v["brokers"][0]["id"], 1);
    let (ok_, _, err) = paperboy(&["metadata", "-b", &b, "-t", &common::unique_topic("none")]);
    assert!(!ok_ && err.contains("unknown topic"), "{err}");
}

#[tokio::test]
async fn topics_are_created_described_changed_listed_and_deleted() {
    let client = common::client().await;
    let b = common::bootstrap();
    let topic = common::unique_topic("cli-topics");
    ok(&[
        "topics",
        "create",
        "-b",
        &b,
        &topic,
        "--partitions",
        "2",
        "--config",
        "retention.ms=3600000",
    ]);
    let meta = client.refresh_metadata(&[&topic]).await.unwrap();
    assert_eq!(meta.topic(&topic).unwrap().partitions.len(), 2);
    let listed = ok(&["topics", "list", "-b", &b]);
    assert!(listed.lines().any(|l| l == topic), "{listed}");
    assert!(
        !listed.contains("__consumer_offsets"),
        "internal topics hidden: {listed}"
    );

    let d = json(&["topics", "describe", "-b", &b, &topic, "--json"]);
    assert_eq!(d["configs"]["retention.ms"], "3600000");
    assert_eq!(d["partitions"].as_array().unwrap().len(), 2);

    ok(&[
        "topics",
        "alter-config",
        "-b",
        &b,
        &topic,
        "--set",
        "cleanup.policy=compact",
        "--delete",
        "retention.ms",
        "--partitions",
        "4",
    ]);
    let find = |configs: &[paperboy::ConfigEntry], k: &str| {
        configs.iter().find(|e| e.name == k).unwrap().clone()
    };
    let configs = common::topic_configs_until(&client, &topic, "the alter-config", |c| {
        find(c, "cleanup.policy").value.as_deref() == Some("compact")
            && find(c, "retention.ms").is_default
    })
    .await;
    assert_ne!(
        find(&configs, "retention.ms").value.as_deref(),
        Some("3600000")
    );
    let meta = client.refresh_metadata(&[&topic]).await.unwrap();
    assert_eq!(meta.topic(&topic).unwrap().partitions.len(), 4);

    let (ok_, _, err) = paperboy(&[
        "topics",
        "alter-config",
        "-b",
        &b,
        &topic,
        "--set",
        "retention.msec=1",
    ]);
    assert!(!ok_ && err.contains("INVALID_CONFIG"), "{err}");
    ok(&["topics", "delete", "-b", &b, &topic]);
    let listed = ok(&["topics", "list", "-b", &b]);
    assert!(!listed.lines().any(|l| l == topic), "{listed}");
}

#[tokio::test]
async fn offsets_by_position_and_time() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-offsets", 2).await;
    produce(&topic, 0, &[(1_000, "a"), (2_000, "b"), (3_000, "c")]).await;
    produce(&topic, 1, &[(5_000, "d")]).await;
    let b = common::bootstrap();
    let latest = ok(&["offsets", "-b", &b, "-t", &topic]);
    assert_eq!(latest, format!("{topic}\t0\t3\n{topic}\t1\t1\n"));
    let earliest = ok(&[
        "offsets", "-b", &b, "-t", &topic, "--time", "earliest", "-p", "0",
    ]);
    assert_eq!(earliest, format!("{topic}\t0\t0\n"));
    let v = json(&[
        "offsets", "-b", &b, "-t", &topic, "--time", "1500", "--json",
    ]);
    assert_eq!(v[0]["offset"], 1, "{v}");
    assert_eq!(v[1]["offset"], 0, "{v}");
    let (ok_, _, err) = paperboy(&["offsets", "-b", &b, "-t", &topic, "-p", "7"]);
    assert!(!ok_ && err.contains("no partition 7"), "{err}");
}

#[tokio::test]
async fn groups_are_listed_described_with_lag_and_reset() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-groups", 1).await;
    produce(
        &topic,
        0,
        &[(1_000, "a"), (2_000, "b"), (3_000, "c"), (4_000, "d")],
    )
    .await;
    let group = common::unique_topic("cli-g");
    let consumer = Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", common::bootstrap().as_str()),
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let tp = TopicPartition::new(&topic, 0);
    while consumer.assignment().is_empty() {
        let _ = consumer.recv_batch(1, Duration::from_millis(200)).await;
    }
    consumer.commit(&[(tp.clone(), 1)]).await.unwrap();
    let b = common::bootstrap();

    let listed = ok(&["groups", "list", "-b", &b]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&format!("{group}\tStable"))),
        "{listed}"
    );
    let d = json(&["groups", "describe", "-b", &b, &group, "--json"]);
    assert_eq!(d["state"], "Stable");
    assert_eq!(d["members"].as_array().unwrap().len(), 1);
    assert_eq!(d["members"][0]["assignment"][0]["topic"], topic.as_str());
    assert_eq!(d["offsets"][0]["committed"], 1);
    assert_eq!(d["offsets"][0]["end"], 4);
    assert_eq!(d["offsets"][0]["lag"], 3);
    let text = ok(&["groups", "describe", "-b", &b, &group]);
    assert!(text.contains(&format!("{topic}\t0\t1\t4\t3")), "{text}");

    // Refused while the group has a member; done once it has none.
    let (ok_, _, err) = paperboy(&[
        "groups",
        "reset-offsets",
        "-b",
        &b,
        &group,
        "-t",
        &topic,
        "--to-latest",
    ]);
    assert!(!ok_ && err.contains("no members"), "{err}");
    consumer.close().await;
    let out = ok(&[
        "groups",
        "reset-offsets",
        "-b",
        &b,
        &group,
        "-t",
        &topic,
        "--to-time",
        "2500",
    ]);
    assert_eq!(out, format!("{topic}\t0\t2\n"));
    assert_eq!(client.group_offsets(&group).await.unwrap()[&tp], 2);
    let out = ok(&[
        "groups",
        "reset-offsets",
        "-b",
        &b,
        &group,
        "-t",
        &topic,
        "--to-earliest",
        "--dry-run",
    ]);
    assert_eq!(out, format!("{topic}\t0\t0\n"));
    assert_eq!(
        client.group_offsets(&group).await.unwrap()[&tp],
        2,
        "a dry run sets nothing"
    );
    ok(&[
        "groups",
        "reset-offsets",
        "-b",
        &b,
        &group,
        "-t",
        &topic,
        "--to-latest",
    ]);
    assert_eq!(
        client.group_offsets(&group).await.unwrap()[&tp],
        client
            .list_offset(&topic, 0, OffsetSpec::Latest)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_properties_file_and_completions() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-file", 1).await;
    let file = std::env::temp_dir().join(common::unique_topic("cli-props"));
    std::fs::write(&file, "# a comment\nclient.id=from-file\n\nlinger.msec=5\n").unwrap();
    let b = common::bootstrap();
    let (ok_, _, err) = paperboy(&[
        "offsets",
        "-b",
        &b,
        "-t",
        &topic,
        "-F",
        file.to_str().unwrap(),
    ]);
    assert!(
        !ok_ && err.contains("linger.msec"),
        "the file's keys are checked: {err}"
    );
    std::fs::write(&file, "# a comment\nclient.id=from-file\n").unwrap();
    ok(&[
        "offsets",
        "-b",
        &b,
        "-t",
        &topic,
        "-F",
        file.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&file);

    let bash = ok(&["completions", "bash"]);
    assert!(
        bash.contains("paperboy") && bash.contains("reset-offsets"),
        "{bash}"
    );
    let help = ok(&["groups", "reset-offsets", "--help"]);
    assert!(help.contains("--to-time"), "{help}");
}

#[tokio::test]
async fn perf_produces_and_consumes_with_rates_and_latencies() {
    let client = common::client().await;
    let topic = common::new_topic(&client, "cli-perf", 2).await;
    let b = common::bootstrap();
    let p = json(&[
        "perf", "produce", "-b", &b, "-t", &topic, "--count", "500", "--size", "64", "--json",
    ]);
    assert_eq!(p["records"], 500, "{p}");
    assert_eq!(p["failed"], 0, "{p}");
    let lat = &p["latency_ms"];
    assert!(
        lat["p50"].as_f64().unwrap() <= lat["p99"].as_f64().unwrap(),
        "{p}"
    );
    assert!(
        lat["p99"].as_f64().unwrap() <= lat["max"].as_f64().unwrap(),
        "{p}"
    );
    let total = client
        .list_offset(&topic, 0, OffsetSpec::Latest)
        .await
        .unwrap()
        + client
            .list_offset(&topic, 1, OffsetSpec::Latest)
            .await
            .unwrap();
    assert_eq!(total, 500);
    let c = json(&["perf", "consume", "-b", &b, "-t", &topic, "--json"]);
    assert_eq!(c["records"], 500, "{c}");
    assert_eq!(c["bytes"], 500 * 64, "{c}");
    let (ok_, _, err) = paperboy(&[
        "perf",
        "consume",
        "-b",
        &b,
        "-t",
        &topic,
        "--count",
        "501",
        "--timeout-ms",
        "500",
    ]);
    assert!(!ok_ && err.contains("read 500 of 501"), "{err}");
}
