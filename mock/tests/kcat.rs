//! kcat (librdkafka) against the mock: `-L` lists the cluster, `-P` produces lines,
//! `-C` reads them back, `-G` reads them as a group member. Skipped, with a reason, when
//! kcat is not installed, unless `CI` is set (then a missing kcat fails the test).

use std::process::Stdio;
use std::time::Duration;

use paperboy_mock::{ApiKey, Cluster};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const TIMEOUT: Duration = Duration::from_secs(30);

fn kcat_available() -> bool {
    let found = std::process::Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!(
                "kcat is not installed, and CI is set: install kcat (Debian: apt-get install kcat)"
            );
        }
        eprintln!("skipping: kcat is not installed (set CI=1 to make this a failure)");
    }
    found
}

/// Runs kcat with `args` (and `stdin`), bounded by [`TIMEOUT`]; returns its stdout.
async fn kcat(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kcat starts");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kcat {args:?} did not finish in {TIMEOUT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_lists_produces_and_consumes() {
    if !kcat_available() {
        return;
    }
    let cluster = Cluster::builder()
        .nodes(3)
        .topic("lines", 3)
        .build()
        .await
        .unwrap();
    let b = cluster.bootstrap();

    let listing = kcat(&["-L", "-b", &b], None).await;
    assert!(listing.contains("3 brokers:"), "{listing}");
    assert!(
        listing.contains("topic \"lines\" with 3 partitions"),
        "{listing}"
    );

    let lines: Vec<String> = (0..300).map(|i| format!("k{i}:value {i}")).collect();
    let input = lines.join("\n") + "\n";
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        kcat(
            &["-P", "-b", &b, "-t", "lines", "-K", ":", "-z", codec],
            Some(&input),
        )
        .await;
    }

    let out = kcat(
        &[
            "-C",
            "-b",
            &b,
            "-t",
            "lines",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-K",
            ":",
        ],
        None,
    )
    .await;
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    let mut want: Vec<&str> = lines
        .iter()
        .flat_map(|l| std::iter::repeat_n(l.as_str(), 5))
        .collect();
    want.sort_unstable();
    assert_eq!(got, want);

    let total: i64 = (0..3).map(|p| cluster.offsets("lines", p).unwrap().1).sum();
    assert_eq!(total, 1500);
    assert!(cluster.requests().iter().any(|r| r.api == ApiKey::Produce));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_reads_as_a_group_member_and_commits() {
    if !kcat_available() {
        return;
    }
    let cluster = Cluster::builder()
        .nodes(1)
        .topic("grouped", 2)
        .build()
        .await
        .unwrap();
    let b = cluster.bootstrap();
    // Keyed, so both partitions get records (librdkafka commits only what it consumed).
    let input: String = (0..100).map(|i| format!("k{i}:r{i}\n")).collect();
    kcat(&["-P", "-b", &b, "-t", "grouped", "-K", ":"], Some(&input)).await;
    for p in 0..2 {
        assert!(
            cluster.offsets("grouped", p).unwrap().1 > 0,
            "partition {p} is empty"
        );
    }
    let out = kcat(
        &[
            "-b",
            &b,
            "-G",
            "kgroup",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-X",
            "enable.auto.commit=true",
            "-X",
            "auto.commit.interval.ms=100",
            "grouped",
        ],
        None,
    )
    .await;
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    let mut want: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    let (generation, _) = cluster.group_members("kgroup").expect("the group exists");
    assert!(generation >= 1);
    // librdkafka commits what it consumed when it closes.
    for p in 0..2 {
        let end = cluster.offsets("grouped", p).unwrap().1;
        assert_eq!(
            cluster.committed("kgroup", "grouped", p),
            Some(end),
            "partition {p}"
        );
    }
}
