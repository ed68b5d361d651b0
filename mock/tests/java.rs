//! Kafka's Java console tools against the mock: the console producer writes keyed lines
//! that Paperboy's consumer reads back (contents, count, the Java partitioner's choice
//! of partition), and the console consumer, as a member of a group, reads back what
//! Paperboy's producer wrote and commits on the mock.
//!
//! The tools run as the root crate's interop tests run them: `scripts/kafka
//! console-producer|console-consumer ARGS`, which runs `java -cp` on the kafka-tools
//! jars that `scripts/kafka resolve` (or `start`) put under `$KAFKA_HOME` (default
//! `<repo>/.kafka`). When the jars or Java are missing the tests are skipped with a
//! printed reason, unless `CI` is set (then it is a failure); they never resolve jars
//! themselves (that downloads from Maven Central).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use paperboy::consumer::{Consumer, ConsumerConfig, TopicPartition};
use paperboy::producer::{murmur2_partition, Producer, ProducerConfig, ProducerRecord};
use paperboy_mock::{ApiKey, Cluster};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The longest a Java tool may run (a JVM starts in 1-3 s).
const TIMEOUT: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("mock/ is in the repository")
        .to_owned()
}

fn script() -> PathBuf {
    repo().join("scripts/kafka")
}

/// Whether the Java tools can run: Java on PATH and the kafka-tools jars of the version
/// `scripts/kafka` uses already resolved. Otherwise `false` with the reason printed, or
/// a panic when `CI` is set.
fn java_tools_available() -> bool {
    match java_tools_missing() {
        None => true,
        Some(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "the Java tools are needed, and CI is set: {why}"
            );
            eprintln!("skipping: {why} (set CI=1 to make this a failure)");
            false
        }
    }
}

fn java_tools_missing() -> Option<String> {
    let java = std::process::Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !java.is_ok_and(|s| s.success()) {
        return Some(
            "java is not on PATH (Debian: apt-get install openjdk-17-jre-headless)".into(),
        );
    }
    let out = match std::process::Command::new(script())
        .arg("tools-version")
        .output()
    {
        Ok(out) => out,
        Err(e) => return Some(format!("scripts/kafka did not run: {e}")),
    };
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || version.is_empty() {
        return Some(format!("`scripts/kafka tools-version` failed: {out:?}"));
    }
    let home = std::env::var_os("KAFKA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".kafka"));
    let mut dirs = vec![home.join(format!("tools-{version}/libs"))];
    if version.starts_with("3.") {
        // 3.x: the console producer is in the broker's jars (see scripts/kafka).
        dirs.push(home.join(format!("{version}/libs")));
    }
    for dir in dirs {
        let has_jars = std::fs::read_dir(&dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "jar"))
        });
        if !has_jars {
            return Some(format!(
                "no Kafka {version} tool jars in {} (run `scripts/kafka resolve`, or set \
                 KAFKA_HOME to a directory where it ran)",
                dir.display()
            ));
        }
    }
    None
}

/// What a Java tool left.
struct Output {
    stdout: String,
    stderr: String,
}

/// Runs `scripts/kafka tool args` with `stdin`, bounded by [`TIMEOUT`] (then killed and
/// the test fails); fails the test if it exits non-zero.
async fn java_tool(tool: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(script())
        .arg(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true) // scripts/kafka execs java: this is the JVM
        .spawn()
        .unwrap_or_else(|e| panic!("scripts/kafka {tool} did not start: {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input); // end of input: the console producer flushes and exits
    let out = match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        // The child was moved into the timed-out future, which is dropped: killed.
        Err(_) => panic!("scripts/kafka {tool} {args:?} still running after {TIMEOUT:?}"),
    };
    let o = Output {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        out.status.success(),
        "scripts/kafka {tool} {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        o.stdout,
        o.stderr
    );
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paperboy_reads_what_the_java_console_producer_wrote() {
    if !java_tools_available() {
        return;
    }
    let cluster = Cluster::builder()
        .nodes(3)
        .topic("from-java", 4)
        .build()
        .await
        .unwrap();
    let bootstrap = cluster.bootstrap();
    let n = 200;
    let lines: String = (0..n)
        .map(|i| format!("key-{i}:line {i} from java\n"))
        .collect();
    java_tool(
        "console-producer",
        &[
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            "from-java",
            "--reader-property",
            "parse.key=true",
            "--reader-property",
            "key.separator=:",
        ],
        &lines,
    )
    .await;
    let total: i64 = (0..4)
        .map(|p| cluster.offsets("from-java", p).unwrap().1)
        .sum();
    assert_eq!(total, n, "records stored on the mock");
    // The Java producer is idempotent by default: it asked for a producer id.
    assert!(cluster
        .requests()
        .iter()
        .any(|r| r.api == ApiKey::InitProducerId));

    let consumer = Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", bootstrap.as_str()),
            ("auto.offset.reset", "earliest"),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    let tps: Vec<_> = (0..4)
        .map(|p| TopicPartition::new("from-java", p))
        .collect();
    consumer.assign(&tps).unwrap();
    let mut read = BTreeMap::new();
    let mut offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    while read.len() < n as usize {
        let r = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} records read", read.len()))
            .unwrap();
        let key = String::from_utf8(r.key.clone().expect("keyed").to_vec()).unwrap();
        let value = String::from_utf8(r.value.clone().expect("a value").to_vec()).unwrap();
        assert_eq!(
            r.partition,
            murmur2_partition(key.as_bytes(), 4),
            "Java's partitioner put {key} where Paperboy's would"
        );
        offsets.entry(r.partition).or_default().push(r.offset);
        assert!(read.insert(key, value).is_none(), "a record read twice");
    }
    consumer.close().await;
    for i in 0..n {
        assert_eq!(read[&format!("key-{i}")], format!("line {i} from java"));
    }
    for (p, offs) in offsets {
        let want: Vec<i64> = (0..offs.len() as i64).collect();
        assert_eq!(offs, want, "partition {p}: offsets from 0, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_java_console_consumer_reads_what_paperboy_wrote_and_commits_on_the_mock() {
    if !java_tools_available() {
        return;
    }
    let cluster = Cluster::builder()
        .nodes(3)
        .topic("from-paperboy", 3)
        .build()
        .await
        .unwrap();
    let bootstrap = cluster.bootstrap();
    let n = 150;
    let producer = Producer::new(ProducerConfig::new(&bootstrap))
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..n {
        let r = ProducerRecord::new("from-paperboy")
            .with_key(format!("k{i}"))
            .with_value(format!("value {i} from paperboy"));
        pending.push(producer.enqueue(r).await.unwrap());
    }
    let mut placed = BTreeMap::new();
    for (i, d) in pending.into_iter().enumerate() {
        let d = d.await.unwrap();
        placed.insert((d.partition, d.offset), i);
    }
    producer.close().await;

    let max = n.to_string();
    let out = java_tool(
        "console-consumer",
        &[
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            "from-paperboy",
            "--group",
            "java-readers",
            "--from-beginning",
            "--max-messages",
            &max,
            "--timeout-ms",
            "60000",
            "--formatter-property",
            "print.partition=true",
            "--formatter-property",
            "print.offset=true",
            "--formatter-property",
            "print.key=true",
        ],
        "",
    )
    .await;
    // Lines as "Partition:P\tOffset:O\tKEY\tVALUE".
    let mut seen = BTreeSet::new();
    for line in out.stdout.lines().filter(|l| l.starts_with("Partition:")) {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 4, "{line}");
        let p: i32 = fields[0]["Partition:".len()..].parse().unwrap();
        let o: i64 = fields[1]["Offset:".len()..].parse().unwrap();
        let i = *placed
            .get(&(p, o))
            .unwrap_or_else(|| panic!("Java read {p}/{o}, which Paperboy did not write: {line}"));
        assert_eq!(fields[2], format!("k{i}"), "{line}");
        assert_eq!(fields[3], format!("value {i} from paperboy"), "{line}");
        assert!(seen.insert((p, o)), "read twice: {line}");
    }
    assert_eq!(
        seen.len(),
        n,
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );

    // It consumed as a member of the group and committed its positions when it closed.
    assert!(cluster
        .requests()
        .iter()
        .any(|r| r.api == ApiKey::JoinGroup));
    let committed = |c: &Cluster| {
        (0..3).all(|p| {
            c.committed("java-readers", "from-paperboy", p)
                == Some(c.offsets("from-paperboy", p).unwrap().1)
        })
    };
    assert!(
        cluster.wait_until(Duration::from_secs(10), committed).await,
        "commits: {:?}",
        (0..3)
            .map(|p| cluster.committed("java-readers", "from-paperboy", p))
            .collect::<Vec<_>>()
    );
    // And left the group.
    let (_, members) = cluster.group_members("java-readers").unwrap();
    assert!(members.is_empty(), "{members:?}");
}
