//! The consumer group protocol of KIP-848 against a scripted coordinator (a small fake
//! started here, no broker needed): what the member sends, request by request, where a
//! real broker cannot be made to answer on cue: a commit refused with
//! STALE_MEMBER_EPOCH is retried with the epoch of the next heartbeat; a fenced member
//! loses its partitions without committing and rejoins with epoch 0 and the same member
//! id; owned partitions are acknowledged at once, not at the next interval; leaving
//! sends epoch -1.

mod fake_broker;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_broker::wire::{api_versions, frame, read_request};
use paperboy::consumer::{BoxFuture, Consumer, ConsumerConfig, RebalanceListener, TopicPartition};
use paperboy_protocol::kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment, TopicPartitions,
};
use paperboy_protocol::kafka_protocol::messages::find_coordinator_response::Coordinator;
use paperboy_protocol::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use paperboy_protocol::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use paperboy_protocol::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use paperboy_protocol::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
};
use paperboy_protocol::kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
    FindCoordinatorResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use paperboy_protocol::kafka_protocol::protocol::{Decodable, StrBytes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use uuid::Uuid;

const TOPIC_ID: Uuid = Uuid::from_u128(0x848);
/// The heartbeat interval the fake asks for: long, so a heartbeat sent sooner was sent
/// on purpose.
const INTERVAL: Duration = Duration::from_millis(1500);

/// One ConsumerGroupHeartbeat as the fake saw it.
#[derive(Debug, Clone)]
struct Beat {
    at: Instant,
    member_id: String,
    epoch: i32,
    subscribed: Option<Vec<String>>,
    owned: Option<Vec<i32>>,
}

#[derive(Default)]
struct Script {
    beats: Vec<Beat>,
    answered_at: Vec<Instant>,
    /// (member epoch, member id, offset) of each OffsetCommit.
    commits: Vec<(i32, String, i64)>,
    /// The epoch the coordinator holds for the member.
    epoch: i32,
    /// Commits to refuse with STALE_MEMBER_EPOCH; the first bumps the member's epoch.
    stale_commits: usize,
    /// The next heartbeat is answered FENCED_MEMBER_EPOCH.
    fence_next: bool,
}

#[derive(Clone)]
struct Coordinator848 {
    addr: String,
    script: Arc<Mutex<Script>>,
}

impl Coordinator848 {
    async fn start() -> Coordinator848 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Coordinator848 {
            addr: addr.to_string(),
            script: Arc::default(),
        };
        let f = fake.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move { f.serve(sock, addr.port()).await });
            }
        });
        fake
    }

    fn beats(&self) -> Vec<Beat> {
        self.script.lock().unwrap().beats.clone()
    }

    fn commits(&self) -> Vec<(i32, String, i64)> {
        self.script.lock().unwrap().commits.clone()
    }

    async fn serve(&self, sock: tokio::net::TcpStream, port: u16) {
        sock.set_nodelay(true).ok();
        let (mut rd, mut wr) = sock.into_split();
        while let Some((header, key, version, mut b)) = read_request(&mut rd).await {
            let id = header.correlation_id;
            let out = match key {
                ApiKey::ApiVersions => frame(
                    id,
                    key,
                    version,
                    &api_versions(&[
                        (ApiKey::ApiVersions, 0, 3),
                        (ApiKey::Metadata, 0, 12),
                        (ApiKey::FindCoordinator, 0, 4),
                        (ApiKey::ConsumerGroupHeartbeat, 0, 1),
                        (ApiKey::OffsetCommit, 2, 9),
                        (ApiKey::OffsetFetch, 1, 9),
                        (ApiKey::ListOffsets, 1, 7),
                        (ApiKey::Fetch, 4, 12),
                    ]),
                ),
                ApiKey::Metadata => frame(id, key, version, &metadata(port)),
                ApiKey::FindCoordinator => {
                    let resp = FindCoordinatorResponse::default().with_coordinators(vec![
                        Coordinator::default()
                            .with_key(StrBytes::from_static_str("g"))
                            .with_node_id(BrokerId(0))
                            .with_host(StrBytes::from_static_str("127.0.0.1"))
                            .with_port(i32::from(port)),
                    ]);
                    frame(id, key, version, &resp)
                }
                ApiKey::ConsumerGroupHeartbeat => {
                    let req = ConsumerGroupHeartbeatRequest::decode(&mut b, version).unwrap();
                    frame(id, key, version, &self.heartbeat(req))
                }
                ApiKey::OffsetCommit => {
                    let req = OffsetCommitRequest::decode(&mut b, version).unwrap();
                    frame(id, key, version, &self.commit(req))
                }
                ApiKey::OffsetFetch => {
                    let req = OffsetFetchRequest::decode(&mut b, version).unwrap();
                    let groups = req
                        .groups
                        .iter()
                        .map(|g| {
                            OffsetFetchResponseGroup::default()
                                .with_group_id(g.group_id.clone())
                                .with_topics(vec![OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(StrBytes::from_static_str("t")))
                                    .with_partitions(vec![
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(0)
                                            .with_committed_offset(-1),
                                    ])])
                        })
                        .collect();
                    frame(
                        id,
                        key,
                        version,
                        &OffsetFetchResponse::default().with_groups(groups),
                    )
                }
                ApiKey::ListOffsets => {
                    let _ = ListOffsetsRequest::decode(&mut b, version).unwrap();
                    let resp = ListOffsetsResponse::default().with_topics(vec![
                        ListOffsetsTopicResponse::default()
                            .with_name(TopicName(StrBytes::from_static_str("t")))
                            .with_partitions(vec![ListOffsetsPartitionResponse::default()
                                .with_partition_index(0)
                                .with_offset(0)
                                .with_leader_epoch(0)]),
                    ]);
                    frame(id, key, version, &resp)
                }
                // An empty partition: a fetch waits for records that never come, and is
                // left unanswered (the consumer's request times out and fetches again).
                ApiKey::Fetch => continue,
                other => panic!("the fake coordinator does not speak {other:?}"),
            };
            if wr.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    fn heartbeat(&self, req: ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse {
        let mut s = self.script.lock().unwrap();
        s.beats.push(Beat {
            at: Instant::now(),
            member_id: req.member_id.to_string(),
            epoch: req.member_epoch,
            subscribed: req
                .subscribed_topic_names
                .as_ref()
                .map(|t| t.iter().map(|t| t.0.to_string()).collect()),
            owned: req.topic_partitions.as_ref().map(|t| {
                t.iter()
                    .filter(|t| t.topic_id == TOPIC_ID)
                    .flat_map(|t| t.partitions.clone())
                    .collect()
            }),
        });
        s.answered_at.push(Instant::now());
        let resp = ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(req.member_id.clone()))
            .with_heartbeat_interval_ms(INTERVAL.as_millis() as i32);
        if req.member_epoch < 0 {
            return resp.with_member_epoch(req.member_epoch);
        }
        if s.fence_next {
            s.fence_next = false;
            return resp.with_error_code(110).with_member_epoch(-1); // FENCED_MEMBER_EPOCH
        }
        if req.member_epoch == 0 {
            // (Re)joining: a new epoch and the whole assignment, partition 0 of "t".
            s.epoch += 1;
            return resp.with_member_epoch(s.epoch).with_assignment(Some(
                Assignment::default().with_topic_partitions(vec![TopicPartitions::default()
                    .with_topic_id(TOPIC_ID)
                    .with_partitions(vec![0])]),
            ));
        }
        resp.with_member_epoch(s.epoch)
    }

    fn commit(&self, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let mut s = self.script.lock().unwrap();
        let offset = req.topics[0].partitions[0].committed_offset;
        s.commits.push((
            req.generation_id_or_member_epoch,
            req.member_id.to_string(),
            offset,
        ));
        let code = if s.stale_commits > 0 {
            // The coordinator moved the member to a new epoch: the next heartbeat says so.
            s.stale_commits -= 1;
            s.epoch += 1;
            113 // STALE_MEMBER_EPOCH
        } else if req.generation_id_or_member_epoch != s.epoch {
            113
        } else {
            0
        };
        OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![OffsetCommitResponsePartition::default()
                .with_partition_index(0)
                .with_error_code(code)])])
    }
}

fn metadata(port: u16) -> MetadataResponse {
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(0))
            .with_host(StrBytes::from_static_str("127.0.0.1"))
            .with_port(i32::from(port))])
        .with_cluster_id(Some(StrBytes::from_static_str("fake")))
        .with_controller_id(BrokerId(0))
        .with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
            .with_topic_id(TOPIC_ID)
            .with_partitions(vec![MetadataResponsePartition::default()
                .with_partition_index(0)
                .with_leader_id(BrokerId(0))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(0)])
                .with_isr_nodes(vec![BrokerId(0)])])])
}

/// Records the listener's calls.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<&'static str>>>);

impl RebalanceListener for Calls {
    fn on_revoked<'a>(&'a self, _: &'a Consumer, _: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        self.0.lock().unwrap().push("revoked");
        Box::pin(async {})
    }
    fn on_lost<'a>(&'a self, _: &'a Consumer, _: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        self.0.lock().unwrap().push("lost");
        Box::pin(async {})
    }
    fn on_assigned<'a>(&'a self, _: &'a Consumer, _: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        self.0.lock().unwrap().push("assigned");
        Box::pin(async {})
    }
}

async fn member(fake: &Coordinator848, auto_commit: bool) -> (Consumer, Calls) {
    let auto_commit = auto_commit.to_string();
    let consumer = Consumer::new(
        ConsumerConfig::from_properties([
            ("bootstrap.servers", fake.addr.as_str()),
            ("group.id", "g"),
            ("group.protocol", "consumer"),
            ("enable.auto.commit", auto_commit.as_str()),
            ("auto.commit.interval.ms", "600000"),
            ("request.timeout.ms", "5000"),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    let calls = Calls::default();
    consumer.set_rebalance_listener(calls.clone());
    consumer.subscribe(&["t"]).unwrap();
    (consumer, calls)
}

/// Polls `consumer` (as an application does) until `cond` holds, for up to 10 s.
async fn poll_until(consumer: &Consumer, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        let got = consumer
            .recv_batch(10, Duration::from_millis(20))
            .await
            .expect("recv_batch");
        assert!(got.is_empty(), "the topic is empty");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assignment_is_acknowledged_at_once_and_a_stale_epoch_commit_is_retried() {
    let fake = Coordinator848::start().await;
    let (consumer, calls) = member(&fake, false).await;
    let tp = TopicPartition::new("t", 0);
    poll_until(&consumer, "the assignment", || {
        consumer.assignment() == [tp.clone()]
    })
    .await;
    poll_until(&consumer, "the acknowledgement", || {
        fake.beats()
            .iter()
            .any(|b| b.owned.as_deref() == Some(&[0]))
    })
    .await;
    let beats = fake.beats();
    // Joining: epoch 0, a client-made member id (a UUID, KIP-1082), the topics, owning
    // nothing.
    let join = &beats[0];
    assert_eq!(join.epoch, 0);
    assert!(Uuid::parse_str(&join.member_id).is_ok(), "{join:?}");
    assert_eq!(join.subscribed.as_deref(), Some(&["t".to_string()][..]));
    assert_eq!(join.owned.as_deref(), Some(&[][..]));
    // Then, with the epoch given, the partition reported as owned: at once after
    // reconciling, not one heartbeat interval later.
    let ack = beats
        .iter()
        .position(|b| b.owned.as_deref() == Some(&[0]))
        .unwrap();
    assert_eq!(beats[ack].epoch, 1);
    assert_eq!(beats[ack].member_id, join.member_id);
    let after = beats[ack].at - fake.script.lock().unwrap().answered_at[0];
    assert!(
        after < INTERVAL / 2,
        "acknowledged {after:?} after the assignment"
    );
    assert_eq!(*calls.0.lock().unwrap(), ["assigned"]);

    // A commit with the member's epoch; the coordinator says it is stale (the member
    // moved to epoch 2): committed again, with epoch 2, after the next heartbeat.
    fake.script.lock().unwrap().stale_commits = 1;
    let started = Instant::now();
    consumer.commit(&[(tp.clone(), 7)]).await.expect("commit");
    assert!(
        started.elapsed() < INTERVAL,
        "retried without waiting an interval"
    );
    let commits = fake.commits();
    assert_eq!(
        commits,
        [
            (1, join.member_id.clone(), 7),
            (2, join.member_id.clone(), 7)
        ]
    );
    let beats = fake.beats();
    assert!(
        beats.iter().any(|b| b.epoch == 1 && b.at > beats[ack].at),
        "a heartbeat between the two commits: {beats:?}"
    );
    consumer.close().await;
    let last = fake.beats().pop().unwrap();
    assert_eq!(
        (last.epoch, last.member_id),
        (-1, join.member_id.clone()),
        "leaves with epoch -1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_member_loses_its_partition_without_committing_and_rejoins_as_itself() {
    let fake = Coordinator848::start().await;
    // Auto-commit on: a revocation would commit; a loss must not.
    let (consumer, calls) = member(&fake, true).await;
    let tp = TopicPartition::new("t", 0);
    poll_until(&consumer, "the assignment", || {
        consumer.assignment() == [tp.clone()]
    })
    .await;
    poll_until(&consumer, "the acknowledgement", || {
        fake.beats()
            .iter()
            .any(|b| b.owned.as_deref() == Some(&[0]))
    })
    .await;
    let member_id = fake.beats()[0].member_id.clone();
    // The next heartbeat (at the interval) is answered FENCED_MEMBER_EPOCH.
    fake.script.lock().unwrap().fence_next = true;
    poll_until(
        &consumer,
        "the loss, the rejoin and a position again",
        || {
            *calls.0.lock().unwrap() == ["assigned", "lost", "assigned"]
                && consumer.position(&tp).is_some()
        },
    )
    .await;
    assert_eq!(fake.commits(), [], "nothing committed for lost partitions");
    let beats = fake.beats();
    let rejoin = beats
        .iter()
        .skip(1)
        .find(|b| b.epoch == 0)
        .expect("a rejoin with epoch 0");
    assert_eq!(rejoin.member_id, member_id, "with the same member id");
    assert_eq!(rejoin.owned.as_deref(), Some(&[][..]), "owning nothing");
    assert_eq!(consumer.assignment(), [tp]);
    // Back in the group with epoch 2: close commits (auto-commit) with it, then leaves.
    consumer.close().await;
    let commits = fake.commits();
    assert_eq!(commits.len(), 1, "{commits:?}");
    assert_eq!((commits[0].0, &commits[0].1), (2, &member_id));
    assert_eq!(fake.beats().pop().unwrap().epoch, -1);
}
