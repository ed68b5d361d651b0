//! Captures real Fetch response frames from a running broker, for the `response_decode`
//! and `split_frame` seeds (`fuzz/fixtures/fetch-v<N>.frame`).
//!
//! ```text
//! scripts/kafka start
//! cd fuzz && cargo run --example capture_fetch [-- 127.0.0.1:9092]
//! cargo run --example gen_seeds
//! ```
//!
//! It creates a fresh topic, produces every batch of the real-producer fixtures
//! (`protocol/tests/fixtures/*.bin`: kcat and the Java producer, every codec) into it
//! one batch per request (base offset reset to 0, as a producer sends it), then fetches the partition from offset 0 at Fetch v4 (the
//! oldest, topic names, not flexible), v12 (flexible, names) and v18 (topic ids), and
//! writes each response frame exactly as the broker sent it: header and body, without
//! the 4-byte length prefix (what `frame::split_frame` returns).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use paperboy_protocol::frame::{decode_response, encode_request};
use paperboy_protocol::kafka_protocol::messages::create_topics_request::CreatableTopic;
use paperboy_protocol::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use paperboy_protocol::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use paperboy_protocol::kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, FetchRequest, ProduceRequest, TopicName,
};
use paperboy_protocol::kafka_protocol::protocol::{Request, StrBytes};

struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    /// Sends `req` at `version` and returns the raw response frame (no length prefix).
    fn call<R: Request>(&mut self, version: i16, req: &R) -> Bytes {
        self.correlation += 1;
        let mut out = BytesMut::new();
        encode_request(
            &mut out,
            self.correlation,
            Some("paperboy-capture"),
            version,
            req,
        )
        .unwrap();
        self.stream.write_all(&out).unwrap();
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).unwrap();
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut frame).unwrap();
        Bytes::from(frame)
    }
}

/// The v2 batches of a log segment file, each as its own byte string.
fn split_batches(mut file: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while file.len() >= 12 {
        let len = i32::from_be_bytes(file[8..12].try_into().unwrap()) as usize;
        out.push(file[..12 + len].to_vec());
        file = &file[12 + len..];
    }
    out
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    let stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut conn = Conn {
        stream,
        correlation: 0,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let name = TopicName(StrBytes::from_string(format!(
        "paperboy-fuzz-capture-{now}"
    )));

    let create = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name.clone())
            .with_num_partitions(1)
            .with_replication_factor(1)])
        .with_timeout_ms(30_000);
    let frame = conn.call(7, &create);
    let (_, created) = decode_response::<CreateTopicsRequest>(frame, 7).unwrap();
    let topic = &created.topics[0];
    assert_eq!(topic.error_code, 0, "create topic: {topic:?}");
    let topic_id = topic.topic_id;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("../protocol/tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    let mut produced = 0;
    for path in &files {
        for mut batch in split_batches(&std::fs::read(path).unwrap()) {
            // A producer sends base offset 0 (the broker assigns offsets; the CRC does
            // not cover the base offset).
            batch[..8].fill(0);
            let req = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name.clone())
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch)))])]);
            // The partition may need a moment to get a leader after creation.
            for attempt in 0.. {
                let frame = conn.call(9, &req);
                let (_, resp) = decode_response::<ProduceRequest>(frame, 9).unwrap();
                let p = &resp.responses[0].partition_responses[0];
                if p.error_code == 0 {
                    produced += 1;
                    break;
                }
                assert!(attempt < 20, "{}: produce failed: {p:?}", path.display());
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
    println!("produced {produced} batches from {} files", files.len());

    let out_dir = root.join("fixtures");
    std::fs::create_dir_all(&out_dir).unwrap();
    for version in [4i16, 12, 18] {
        let partition = FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(0)
            .with_current_leader_epoch(-1)
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(1 << 20);
        let topic = if version >= 13 {
            FetchTopic::default().with_topic_id(topic_id)
        } else {
            FetchTopic::default().with_topic(name.clone())
        };
        let mut req = FetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_isolation_level(0)
            .with_session_epoch(-1)
            .with_topics(vec![topic.with_partitions(vec![partition])]);
        if version < 15 {
            req = req.with_replica_id(BrokerId(-1));
        }
        let frame = conn.call(version, &req);
        let (_, resp) = decode_response::<FetchRequest>(frame.clone(), version).unwrap();
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch v{version}: {p:?}");
        let path = out_dir.join(format!("fetch-v{version}.frame"));
        std::fs::write(&path, &frame).unwrap();
        println!(
            "{}: {} bytes, records {} bytes",
            path.display(),
            frame.len(),
            p.records.as_ref().map_or(0, Bytes::len)
        );
    }
}
