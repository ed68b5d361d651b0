//! The mock at the wire level, with a minimal client of raw requests: version
//! negotiation, batch checks, idempotence, log append time, long-polling fetches,
//! ListOffsets by timestamp, the member-id-required join, rebalances and session expiry,
//! and the request-level faults. Every wait is bounded.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};
use paperboy_mock::{ApiKey, Cluster, Fault, ResponseError};
use paperboy_protocol::frame::{decode_response, encode_request, split_frame};
use paperboy_protocol::records::{
    batches, encode_batch, BatchOptions, DecodeLimits, NewRecord, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(10);

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}

/// One connection speaking raw requests.
struct Conn {
    sock: TcpStream,
    correlation: i32,
    buf: BytesMut,
}

impl Conn {
    async fn to(addr: &str) -> Conn {
        Conn {
            sock: TcpStream::connect(addr).await.unwrap(),
            correlation: 0,
            buf: BytesMut::new(),
        }
    }

    async fn send<R: Request>(&mut self, version: i16, req: &R) -> i32 {
        self.correlation += 1;
        let mut out = BytesMut::new();
        encode_request(&mut out, self.correlation, Some("wire-test"), version, req).unwrap();
        self.sock.write_all(&out).await.unwrap();
        self.correlation
    }

    /// The next response frame, or `None` when the connection closed.
    async fn frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(f) = split_frame(&mut self.buf, 1 << 30).unwrap() {
                return Some(f);
            }
            let n = tokio::time::timeout(BOUND, self.sock.read_buf(&mut self.buf))
                .await
                .expect("a response in time")
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    async fn recv<R: Request>(&mut self, version: i16, correlation: i32) -> R::Response {
        let f = self
            .frame()
            .await
            .expect("a response, not a closed connection");
        let (h, body) = decode_response::<R>(f, version).unwrap();
        assert_eq!(h.correlation_id, correlation);
        body
    }

    async fn call<R: Request>(&mut self, version: i16, req: &R) -> R::Response {
        let c = self.send(version, req).await;
        self.recv::<R>(version, c).await
    }
}

fn batch(values: &[&str], opts: BatchOptions) -> Bytes {
    let records: Vec<NewRecord> = values
        .iter()
        .enumerate()
        .map(|(i, v)| NewRecord {
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            timestamp_ms: 1_000 * (i as i64 + 1),
            ..Default::default()
        })
        .collect();
    let mut buf = BytesMut::new();
    encode_batch(&records, &opts, &mut buf).unwrap();
    buf.freeze()
}

fn produce_req(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(s(topic).into())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// (error, base offset, log append time) of a one-partition produce.
async fn produce(c: &mut Conn, topic: &str, records: Bytes) -> (i16, i64, i64) {
    let r = c.call(12, &produce_req(topic, 0, -1, records)).await;
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset, p.log_append_time_ms)
}

fn fetch_req(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(s(topic).into())
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

#[tokio::test]
async fn api_versions_advertises_kafka_4_ranges_and_answers_too_new_in_v0() {
    let cluster = Cluster::builder().build().await.unwrap();
    let mut c = Conn::to(&cluster.bootstrap()).await;
    let r = c.call(4, &ApiVersionsRequest::default()).await;
    assert_eq!(r.error_code, 0);
    let produce = r
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Produce as i16)
        .unwrap();
    assert_eq!((produce.min_version, produce.max_version), (3, 13));

    // ApiVersions v127, as a future client would send it: header v2, empty body.
    let mut raw = BytesMut::new();
    let body: &[u8] = &[0, 18, 0, 127, 0, 0, 0, 9, 0, 1, b'x', 0, 0, 0];
    raw.extend_from_slice(&(body.len() as i32).to_be_bytes());
    raw.extend_from_slice(body);
    c.sock.write_all(&raw).await.unwrap();
    let f = c.frame().await.unwrap();
    let (h, r) = decode_response::<ApiVersionsRequest>(f, 0).unwrap();
    assert_eq!(h.correlation_id, 9);
    assert_eq!(r.error_code, ResponseError::UnsupportedVersion.code());
    assert!(!r.api_keys.is_empty());
}

#[tokio::test]
async fn produce_checks_batches_and_idempotent_sequences() {
    let cluster = Cluster::builder().topic("t", 1).build().await.unwrap();
    let mut c = Conn::to(&cluster.bootstrap()).await;

    let mut corrupt = BytesMut::from(&batch(&["a"], BatchOptions::default())[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(
        produce(&mut c, "t", corrupt.freeze()).await.0,
        ResponseError::CorruptMessage.code()
    );
    let two = [
        batch(&["a"], BatchOptions::default()),
        batch(&["b"], BatchOptions::default()),
    ]
    .concat();
    assert_eq!(
        produce(&mut c, "t", two.into()).await.0,
        ResponseError::InvalidRecord.code()
    );

    let pid = c
        .call(
            5,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1),
        )
        .await;
    assert_eq!(pid.error_code, 0);
    let idem = |seq: i32| BatchOptions {
        producer_id: pid.producer_id.0,
        producer_epoch: pid.producer_epoch,
        base_sequence: seq,
        ..Default::default()
    };
    assert_eq!(
        produce(&mut c, "t", batch(&["a", "b"], idem(0))).await,
        (0, 0, -1)
    );
    assert_eq!(
        produce(&mut c, "t", batch(&["c"], idem(2))).await,
        (0, 2, -1)
    );
    // A retry of the first batch: its original offset, not a second copy.
    assert_eq!(produce(&mut c, "t", batch(&["a", "b"], idem(0))).await.1, 0);
    assert_eq!(cluster.offsets("t", 0), Some((0, 3)));
    // A gap in the sequence.
    assert_eq!(
        produce(&mut c, "t", batch(&["d"], idem(5))).await.0,
        ResponseError::OutOfOrderSequenceNumber.code()
    );
    // acks=0: no response; the next request's response is the next frame.
    c.send(
        12,
        &produce_req("t", 0, 0, batch(&["e"], BatchOptions::default())),
    )
    .await;
    let r = c
        .call(1, &ListOffsetsRequest::default().with_topics(vec![]))
        .await;
    assert!(r.topics.is_empty());
    assert_eq!(cluster.offsets("t", 0), Some((0, 4)));
}

#[tokio::test]
async fn log_append_time_and_list_offsets_by_timestamp() {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let cluster = Cluster::builder().build().await.unwrap();
    let mut c = Conn::to(&cluster.bootstrap()).await;
    let r = c
        .call(
            7,
            &CreateTopicsRequest::default().with_topics(vec![
                CreatableTopic::default()
                    .with_name(s("lat").into())
                    .with_num_partitions(1)
                    .with_replication_factor(-1)
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(s("message.timestamp.type"))
                        .with_value(Some(s("LogAppendTime")))]),
                CreatableTopic::default()
                    .with_name(s("ct").into())
                    .with_num_partitions(1)
                    .with_replication_factor(-1),
            ]),
        )
        .await;
    assert!(r.topics.iter().all(|t| t.error_code == 0), "{r:?}");

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (err, _, lat) = produce(&mut c, "lat", batch(&["x", "y"], BatchOptions::default())).await;
    assert_eq!(err, 0);
    assert!(lat >= before, "log append time {lat} < {before}");
    let f = c.call(12, &fetch_req("lat", 0, 0)).await;
    let records = f.responses[0].partitions[0].records.clone().unwrap();
    let b = batches(records, DecodeLimits::default())
        .next()
        .unwrap()
        .unwrap();
    b.verify_crc().unwrap();
    assert_eq!(b.timestamp_type(), TimestampType::LogAppendTime);

    // CreateTime records at 1000, 2000, 3000 ms.
    assert_eq!(
        produce(
            &mut c,
            "ct",
            batch(&["a", "b", "c"], BatchOptions::default())
        )
        .await
        .0,
        0
    );
    let query = |ts: i64| {
        ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(s("ct").into())
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(ts)])])
    };
    for (ts, want) in [
        (-2, 0),
        (-1, 3),
        (1_500, 1),
        (3_000, 2),
        (3_001, -1),
        (-3, 2),
    ] {
        let r = c.call(9, &query(ts)).await;
        assert_eq!(r.topics[0].partitions[0].offset, want, "timestamp {ts}");
    }
}

#[tokio::test]
async fn a_waiting_fetch_wakes_when_records_arrive() {
    let cluster = Cluster::builder().topic("t", 1).build().await.unwrap();
    let mut fetcher = Conn::to(&cluster.bootstrap()).await;
    let mut producer = Conn::to(&cluster.bootstrap()).await;
    let start = Instant::now();
    let corr = fetcher.send(12, &fetch_req("t", 0, 20_000)).await;
    // The fetch waits: no response yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), fetcher.frame())
            .await
            .is_err()
    );
    assert_eq!(
        produce(&mut producer, "t", batch(&["x"], BatchOptions::default()))
            .await
            .0,
        0
    );
    let r = fetcher.recv::<FetchRequest>(12, corr).await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the fetch was not woken"
    );
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.high_watermark, 1);
    assert!(!p.records.as_ref().unwrap().is_empty());
    assert_eq!(r.session_id, 0);
}

fn join_req(member: &str, session_ms: i32) -> JoinGroupRequest {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    JoinGroupRequest::default()
        .with_group_id(s("g").into())
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(5_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"m"))])
}

fn heartbeat_req(member: &str, generation: i32) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(s("g").into())
        .with_generation_id(generation)
        .with_member_id(s(member))
}

#[tokio::test]
async fn join_requires_a_member_id_then_rebalances_and_expires_sessions() {
    let cluster = Cluster::builder().build().await.unwrap();
    let addr = cluster.bootstrap();
    let mut a = Conn::to(&addr).await;
    let mut b = Conn::to(&addr).await;

    let first = a.call(9, &join_req("", 10_000)).await;
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    let ida = first.member_id.as_str().to_owned();
    let joined = a.call(9, &join_req(&ida, 10_000)).await;
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    assert_eq!(joined.leader.as_str(), ida);
    assert_eq!(joined.members.len(), 1);
    let sync = a
        .call(
            5,
            &SyncGroupRequest::default()
                .with_group_id(s("g").into())
                .with_generation_id(1)
                .with_member_id(s(&ida))
                .with_protocol_type(Some(s("consumer")))
                .with_protocol_name(Some(s("range")))
                .with_assignments(vec![kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(s(&ida))
                    .with_assignment(Bytes::from_static(b"all"))]),
        )
        .await;
    assert_eq!((sync.error_code, &sync.assignment[..]), (0, &b"all"[..]));
    assert_eq!(a.call(4, &heartbeat_req(&ida, 1)).await.error_code, 0);

    // B joins (a short session); A learns of the rebalance from its heartbeat and rejoins.
    let idb = b
        .call(9, &join_req("", 300))
        .await
        .member_id
        .as_str()
        .to_owned();
    let corr_b = b.send(9, &join_req(&idb, 300)).await;
    assert_eq!(
        a.call(4, &heartbeat_req(&ida, 1)).await.error_code,
        ResponseError::RebalanceInProgress.code()
    );
    let rejoined = a.call(9, &join_req(&ida, 10_000)).await;
    let b_joined = b.recv::<JoinGroupRequest>(9, corr_b).await;
    assert_eq!((rejoined.generation_id, b_joined.generation_id), (2, 2));
    assert_eq!(rejoined.members.len(), 2, "the leader gets the member list");
    assert!(b_joined.members.is_empty());
    assert_eq!(cluster.group_members("g").unwrap().1.len(), 2);

    // B goes silent: its session expires and A is told to rejoin alone.
    let a_alone = |c: &Cluster| {
        c.group_members("g")
            .is_some_and(|(_, m)| m == vec![ida.clone()])
    };
    assert!(
        cluster.wait_until(BOUND, a_alone).await,
        "B's session did not expire"
    );
    let code = a.call(4, &heartbeat_req(&ida, 2)).await.error_code;
    assert_eq!(code, ResponseError::RebalanceInProgress.code());
    let alone = a.call(9, &join_req(&ida, 10_000)).await;
    assert_eq!((alone.generation_id, alone.members.len()), (3, 1));
}

#[tokio::test]
async fn faults_error_delay_disconnect_and_coordinator_moves() {
    let cluster = Cluster::builder()
        .nodes(2)
        .topic("t", 1)
        .build()
        .await
        .unwrap();
    let leader = cluster.leader("t", 0).unwrap();
    let mut c = Conn::to(&cluster.node_address(leader).unwrap()).await;

    cluster.inject(Fault::error(ApiKey::Produce, ResponseError::NotEnoughReplicas).times(2));
    for _ in 0..2 {
        let r = produce(&mut c, "t", batch(&["x"], BatchOptions::default())).await;
        assert_eq!(r.0, ResponseError::NotEnoughReplicas.code());
    }
    assert_eq!(
        produce(&mut c, "t", batch(&["x"], BatchOptions::default())).await,
        (0, 0, -1)
    );

    cluster.inject(Fault::delay(ApiKey::Fetch, Duration::from_millis(300)));
    let start = Instant::now();
    c.call(12, &fetch_req("t", 0, 0)).await;
    assert!(start.elapsed() >= Duration::from_millis(300));

    cluster.inject(Fault::disconnect(ApiKey::Metadata));
    c.send(12, &MetadataRequest::default()).await;
    assert!(
        c.frame().await.is_none(),
        "the connection should have closed"
    );

    let coordinator = cluster.coordinator("g");
    let other = 1 - coordinator;
    cluster.move_coordinator("g", other);
    let mut old = Conn::to(&cluster.node_address(coordinator).unwrap()).await;
    let r = old.call(9, &join_req("", 10_000)).await;
    assert_eq!(r.error_code, ResponseError::NotCoordinator.code());
    let r = old
        .call(
            6,
            &FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_coordinator_keys(vec![s("g")]),
        )
        .await;
    assert_eq!(r.coordinators[0].node_id.0, other);

    let seen = cluster.requests();
    assert!(seen
        .iter()
        .any(|r| r.api == ApiKey::JoinGroup && r.node == coordinator && r.version == 9));
}

#[tokio::test]
async fn incremental_fetch_sessions_answer_only_what_changed() {
    let cluster = Cluster::builder().topic("t", 2).build().await.unwrap();
    let mut c = Conn::to(&cluster.bootstrap()).await;
    let session = |id: i32, epoch: i32, mut req: FetchRequest| {
        req.session_id = id;
        req.session_epoch = epoch;
        req
    };
    // Open a session on partition 0 (and 1 via a second topic entry).
    let mut open = fetch_req("t", 0, 0);
    let p1 = open.topics[0].partitions[0].clone().with_partition(1);
    open.topics[0].partitions.push(p1);
    let r = c.call(12, &session(0, 0, open)).await;
    assert_eq!(r.error_code, 0);
    let id = r.session_id;
    assert_ne!(id, 0, "a session was opened");
    assert_eq!(r.responses[0].partitions.len(), 2, "a full answer");

    // Nothing changed: an empty answer.
    let mut empty = fetch_req("t", 0, 0);
    empty.topics.clear();
    let r = c.call(12, &session(id, 1, empty.clone())).await;
    assert_eq!((r.error_code, r.session_id), (0, id));
    assert!(r.responses.is_empty(), "{r:?}");

    // A record on partition 0: only partition 0 comes back, with it.
    c.call(
        12,
        &produce_req("t", 0, -1, batch(&["x"], BatchOptions::default())),
    )
    .await;
    let r = c.call(12, &session(id, 2, empty.clone())).await;
    assert_eq!(r.responses.len(), 1);
    let parts = &r.responses[0].partitions;
    assert_eq!(parts.len(), 1);
    assert_eq!((parts[0].partition_index, parts[0].high_watermark), (0, 1));
    assert!(!parts[0].records.as_ref().unwrap().is_empty());

    // The client moves its offset on partition 0: nothing new to say.
    let r = c.call(12, &session(id, 3, fetch_req("t", 1, 0))).await;
    assert!(r.responses.is_empty(), "{r:?}");

    // Wrong epoch, unknown session; epoch -1 fetches without a session.
    let r = c.call(12, &session(id, 9, empty.clone())).await;
    assert_eq!(r.error_code, ResponseError::InvalidFetchSessionEpoch.code());
    let r = c.call(12, &session(id + 100, 1, empty.clone())).await;
    assert_eq!(r.error_code, ResponseError::FetchSessionIdNotFound.code());
    let r = c.call(12, &session(id, -1, fetch_req("t", 0, 0))).await;
    assert_eq!((r.error_code, r.session_id), (0, 0));
    let r = c.call(12, &session(id, 4, empty)).await;
    assert_eq!(
        r.error_code,
        ResponseError::FetchSessionIdNotFound.code(),
        "epoch -1 closed it"
    );
}

#[tokio::test]
async fn admin_requests_topic_configs_retention_and_latency() {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let cluster = Cluster::builder()
        .topic("t", 1)
        .retention_time(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let mut c = Conn::to(&cluster.bootstrap()).await;

    let grow = |n: i32| {
        CreatePartitionsRequest::default().with_topics(vec![CreatePartitionsTopic::default()
            .with_name(s("t").into())
            .with_count(n)])
    };
    assert_eq!(c.call(3, &grow(3)).await.results[0].error_code, 0);
    assert_eq!(
        c.call(3, &grow(2)).await.results[0].error_code,
        ResponseError::InvalidPartitions.code()
    );
    let md = c
        .call(12, &MetadataRequest::default().with_topics(None))
        .await;
    assert_eq!(md.topics[0].partitions.len(), 3);

    cluster
        .create_topic_with_configs(
            "small",
            1,
            &[("max.message.bytes", "200"), ("retention.bytes", "1")],
        )
        .unwrap();
    let r = c
        .call(
            4,
            &DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("small"))
                    .with_configuration_keys(Some(vec![s("max.message.bytes"), s("retention.ms")])),
            ]),
        )
        .await;
    let configs: Vec<(String, String, i8)> = r.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().unwrap().to_string(),
                c.config_source,
            )
        })
        .collect();
    assert_eq!(
        configs,
        vec![
            ("max.message.bytes".into(), "200".into(), 1),
            ("retention.ms".into(), "3600000".into(), 5)
        ]
    );

    // max.message.bytes: a batch over 200 bytes is refused.
    let big = "x".repeat(300);
    assert_eq!(
        produce(
            &mut c,
            "small",
            batch(&[big.as_str()], BatchOptions::default())
        )
        .await
        .0,
        ResponseError::MessageTooLarge.code()
    );
    // retention.bytes: only the last batch is kept.
    for v in ["a", "b", "c"] {
        assert_eq!(
            produce(&mut c, "small", batch(&[v], BatchOptions::default()))
                .await
                .0,
            0
        );
    }
    assert_eq!(cluster.offsets("small", 0), Some((2, 3)));

    // retention.ms (an hour): records from 1970 go at the next check.
    assert_eq!(
        produce(
            &mut c,
            "t",
            batch(&["old", "older"], BatchOptions::default())
        )
        .await
        .0,
        0
    );
    let deleted = cluster
        .wait_until(BOUND, |c| c.offsets("t", 0) == Some((2, 2)))
        .await;
    assert!(
        deleted,
        "old records were not deleted: {:?}",
        cluster.offsets("t", 0)
    );

    // A slow node.
    cluster.set_latency(0, Duration::from_millis(200));
    let start = Instant::now();
    c.call(3, &ApiVersionsRequest::default()).await;
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn the_initial_rebalance_delay_gathers_the_first_members() {
    let cluster = Cluster::builder()
        .group_initial_rebalance_delay(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let addr = cluster.bootstrap();
    let mut a = Conn::to(&addr).await;
    let mut b = Conn::to(&addr).await;
    let ida = a
        .call(9, &join_req("", 10_000))
        .await
        .member_id
        .as_str()
        .to_owned();
    let idb = b
        .call(9, &join_req("", 10_000))
        .await
        .member_id
        .as_str()
        .to_owned();
    let start = Instant::now();
    let ca = a.send(9, &join_req(&ida, 10_000)).await;
    let cb = b.send(9, &join_req(&idb, 10_000)).await;
    let ra = a.recv::<JoinGroupRequest>(9, ca).await;
    let rb = b.recv::<JoinGroupRequest>(9, cb).await;
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "the join did not wait"
    );
    // One rebalance for both: generation 1, the leader sees two members.
    assert_eq!((ra.generation_id, rb.generation_id), (1, 1));
    let leader = if ra.leader.as_str() == ida { &ra } else { &rb };
    assert_eq!(leader.members.len(), 2);
}

#[tokio::test]
async fn a_member_that_never_syncs_is_removed_after_the_rebalance_timeout() {
    let cluster = Cluster::builder().build().await.unwrap();
    let addr = cluster.bootstrap();
    let mut a = Conn::to(&addr).await;
    let mut b = Conn::to(&addr).await;
    let short = |member: &str| join_req(member, 10_000).with_rebalance_timeout_ms(300);
    let ida = a.call(9, &short("")).await.member_id.as_str().to_owned();
    assert_eq!(a.call(9, &short(&ida)).await.generation_id, 1);
    // B joins; A rejoins; generation 2 waits for SyncGroup, which the leader never sends.
    let idb = b.call(9, &short("")).await.member_id.as_str().to_owned();
    let cb = b.send(9, &short(&idb)).await;
    let ra = a.call(9, &short(&ida)).await;
    let rb = b.recv::<JoinGroupRequest>(9, cb).await;
    assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
    let leader = ra.leader.as_str().to_owned();
    let follower = if leader == ida {
        idb.clone()
    } else {
        ida.clone()
    };
    let conn = if leader == ida { &mut b } else { &mut a };
    // The follower's SyncGroup waits, then the leader is dropped and the follower told to
    // rejoin.
    let sync = conn
        .call(
            5,
            &SyncGroupRequest::default()
                .with_group_id(s("g").into())
                .with_generation_id(2)
                .with_member_id(s(&follower))
                .with_protocol_type(Some(s("consumer")))
                .with_protocol_name(Some(s("range"))),
        )
        .await;
    assert_eq!(sync.error_code, ResponseError::RebalanceInProgress.code());
    let (_, members) = cluster.group_members("g").unwrap();
    assert_eq!(members, vec![follower]);
}

#[tokio::test]
async fn not_leader_answers_name_the_new_leader() {
    let cluster = Cluster::builder()
        .nodes(2)
        .topic("t", 1)
        .build()
        .await
        .unwrap();
    let old = cluster.leader("t", 0).unwrap();
    let new = 1 - old;
    cluster.move_leader("t", 0, new).unwrap();
    let mut c = Conn::to(&cluster.node_address(old).unwrap()).await;

    let r = c
        .call(
            12,
            &produce_req("t", 0, -1, batch(&["x"], BatchOptions::default())),
        )
        .await;
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, ResponseError::NotLeaderOrFollower.code());
    assert_eq!(
        (p.current_leader.leader_id.0, p.current_leader.leader_epoch),
        (new, 1)
    );
    assert_eq!(r.node_endpoints.len(), 1);
    let port = cluster
        .node_address(new)
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<i32>()
        .unwrap();
    assert_eq!(
        (r.node_endpoints[0].node_id.0, r.node_endpoints[0].port),
        (new, port)
    );

    // Fetch v17 names topics by id.
    let md = c
        .call(12, &MetadataRequest::default().with_topics(None))
        .await;
    let mut req = fetch_req("t", 0, 0);
    req.topics[0].topic_id = md.topics[0].topic_id;
    let r = c.call(17, &req).await;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, ResponseError::NotLeaderOrFollower.code());
    assert_eq!(p.current_leader.leader_id.0, new);
    assert_eq!(r.node_endpoints.len(), 1);
}

#[tokio::test]
async fn hostile_frames_close_only_their_connection() {
    let cluster = Cluster::builder().topic("t", 1).build().await.unwrap();
    let addr = cluster.bootstrap();
    let frames: Vec<Vec<u8>> = vec![
        (-5i32).to_be_bytes().to_vec(), // negative length
        [&7i32.to_be_bytes()[..], &[0x7f, 0x7f, 0, 0, 0, 0, 1]].concat(), // unknown API key
        [
            &10i32.to_be_bytes()[..],
            &[0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff],
        ]
        .concat(), // truncated Metadata
        [&8i32.to_be_bytes()[..], &[0, 0, 0, 1, 0, 0, 0, 1]].concat(), // Produce v1: below the floor
        [
            &14i32.to_be_bytes()[..],
            &[0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff],
        ]
        .concat(), // huge array count
    ];
    for f in frames {
        let mut c = Conn::to(&addr).await;
        c.sock.write_all(&f).await.unwrap();
        assert!(
            c.frame().await.is_none(),
            "{f:?} should close the connection"
        );
    }
    // The cluster still serves.
    let mut c = Conn::to(&addr).await;
    let md = c
        .call(12, &MetadataRequest::default().with_topics(None))
        .await;
    assert_eq!(md.topics.len(), 1);
}

#[tokio::test]
async fn leaderless_partitions_racks_fault_counts_and_request_times() {
    let cluster = Cluster::builder()
        .nodes(2)
        .topic("t", 1)
        .build()
        .await
        .unwrap();
    cluster.set_rack(0, Some("rack-a"));
    cluster.move_leader("t", 0, -1).unwrap();
    let mut c = Conn::to(&cluster.node_address(0).unwrap()).await;
    let md = c
        .call(12, &MetadataRequest::default().with_topics(None))
        .await;
    let rack0 = md
        .brokers
        .iter()
        .find(|b| b.node_id.0 == 0)
        .unwrap()
        .rack
        .clone();
    assert_eq!(rack0.as_ref().map(|r| r.as_str()), Some("rack-a"));
    let p = &md.topics[0].partitions[0];
    assert_eq!(
        (p.leader_id.0, p.error_code),
        (-1, ResponseError::LeaderNotAvailable.code())
    );
    let (err, _, _) = produce(&mut c, "t", batch(&["x"], BatchOptions::default())).await;
    assert_eq!(err, ResponseError::NotLeaderOrFollower.code());

    let id = cluster.inject(
        Fault::error(ApiKey::Metadata, ResponseError::UnknownServerError)
            .on_topic("t")
            .times(2),
    );
    assert_eq!(cluster.fault_remaining(id), Some(Some(2)));
    let md = c
        .call(12, &MetadataRequest::default().with_topics(None))
        .await;
    assert_eq!(
        md.topics[0].error_code,
        ResponseError::UnknownServerError.code()
    );
    assert_eq!(cluster.fault_remaining(id), Some(Some(1)));
    cluster.clear_fault(id);
    assert_eq!(cluster.fault_remaining(id), None);

    let times: Vec<_> = cluster.requests().iter().map(|r| r.at).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "requests are recorded in arrival order"
    );
}
