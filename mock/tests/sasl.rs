//! SASL on the mock: Paperboy's producer and consumer authenticate with PLAIN,
//! SCRAM-SHA-256 and SCRAM-SHA-512; a wrong password is refused; an unauthenticated
//! request closes the connection; kcat authenticates too (when installed).

use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
use paperboy::consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use paperboy::producer::{Producer, ProducerConfig, ProducerRecord};
use paperboy_mock::{Cluster, SaslMechanism};
use paperboy_protocol::frame::{decode_response, encode_request, split_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn secured(cfg_set: &mut dyn FnMut(&str, &str), mechanism: &str, user: &str, password: &str) {
    cfg_set("security.protocol", "SASL_PLAINTEXT");
    cfg_set("sasl.mechanism", mechanism);
    cfg_set("sasl.username", user);
    cfg_set("sasl.password", password);
}

async fn cluster() -> Cluster {
    Cluster::builder()
        .topic("t", 1)
        .sasl_user(SaslMechanism::Plain, "alice", "plain-secret")
        .sasl_user(SaslMechanism::ScramSha256, "bob", "sha256-secret")
        .sasl_user(SaslMechanism::ScramSha512, "carol", "sha512-secret")
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mechanism_authenticates_paperboy() {
    let cluster = cluster().await;
    let users = [
        ("PLAIN", "alice", "plain-secret"),
        ("SCRAM-SHA-256", "bob", "sha256-secret"),
        ("SCRAM-SHA-512", "carol", "sha512-secret"),
    ];
    for (i, (mechanism, user, password)) in users.into_iter().enumerate() {
        let mut pc = ProducerConfig::new(&cluster.bootstrap());
        secured(
            &mut |k, v| {
                pc.set(k, v).unwrap();
            },
            mechanism,
            user,
            password,
        );
        let p = tokio::time::timeout(Duration::from_secs(10), Producer::new(pc))
            .await
            .expect("connected in time")
            .unwrap();
        let d = p
            .send(ProducerRecord::new("t").with_value(format!("from {user}")))
            .await
            .unwrap();
        assert_eq!(d.offset, i as i64);
        p.close().await;
    }

    let mut cc = ConsumerConfig::new(&cluster.bootstrap()).with_offset_reset(OffsetReset::Earliest);
    secured(
        &mut |k, v| {
            cc.set(k, v).unwrap();
        },
        "SCRAM-SHA-512",
        "carol",
        "sha512-secret",
    );
    let c = Consumer::new(cc).await.unwrap();
    c.assign(&[TopicPartition::new("t", 0)]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < 3 {
        assert!(Instant::now() < deadline, "read {} of 3", got.len());
        got.extend(c.recv_batch(3, Duration::from_millis(200)).await.unwrap());
    }
    let values: Vec<_> = got.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(values, ["from alice", "from bob", "from carol"]);
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_no_authentication_is_refused() {
    let cluster = cluster().await;
    let mut pc = ProducerConfig::new(&cluster.bootstrap());
    secured(
        &mut |k, v| {
            pc.set(k, v).unwrap();
        },
        "SCRAM-SHA-256",
        "bob",
        "wrong",
    );
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        let p = Producer::new(pc).await?;
        p.send(ProducerRecord::new("t").with_value("x")).await
    })
    .await
    .expect("an answer in time");
    let e = r.expect_err("a wrong password must fail");
    assert!(e.to_string().to_lowercase().contains("auth"), "{e}");

    // Without SASL: ApiVersions is answered; Metadata closes the connection.
    let mut sock = tokio::net::TcpStream::connect(cluster.bootstrap())
        .await
        .unwrap();
    let mut out = bytes::BytesMut::new();
    encode_request(&mut out, 1, None, 3, &ApiVersionsRequest::default()).unwrap();
    encode_request(&mut out, 2, None, 12, &MetadataRequest::default()).unwrap();
    sock.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut got))
        .await
        .expect("the connection closes in time")
        .unwrap();
    let mut buf = bytes::BytesMut::from(&got[..]);
    let frame = split_frame(&mut buf, 1 << 20)
        .unwrap()
        .expect("the ApiVersions answer");
    let (h, _) = decode_response::<ApiVersionsRequest>(frame, 3).unwrap();
    assert_eq!(h.correlation_id, 1);
    assert!(
        buf.is_empty(),
        "Metadata was answered before authentication"
    );
    assert_eq!(cluster.offsets("t", 0), Some((0, 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_authenticates_with_scram() {
    let found = std::process::Command::new("kcat")
        .arg("-V")
        .output()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "kcat is not installed, and CI is set"
        );
        eprintln!("skipping: kcat is not installed");
        return;
    }
    let cluster = cluster().await;
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("kcat")
            .args(["-L", "-b", &cluster.bootstrap()])
            .args([
                "-X",
                "security.protocol=SASL_PLAINTEXT",
                "-X",
                "sasl.mechanisms=SCRAM-SHA-512",
            ])
            .args([
                "-X",
                "sasl.username=carol",
                "-X",
                "sasl.password=sha512-secret",
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kcat finished in time")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("topic \"t\" with 1 partitions"), "{stdout}");
}
