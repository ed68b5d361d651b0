//! The client core: bootstrap, broker connections, metadata, retries, and the
//! partition-level requests that the producer, the consumer and the tests build on.
//!
//! [`Client`] is cheap to clone (an `Arc` inside); clones share connections and metadata.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest, FindCoordinatorRequest,
    ListOffsetsRequest, MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use paperboy_protocol::compression::Compression;
use paperboy_protocol::records::{self, BatchOptions, NewRecord};
use tokio::sync::Mutex as AsyncMutex;
use tracing::{debug, info, warn, Instrument};

use crate::backoff::Backoff;
use crate::config::ClientConfig;
use crate::conn::{Connection, Dialer};
use crate::error::{Error, Result};
use crate::metadata::Cluster;
use crate::telemetry;

/// A connection to a Kafka cluster.
///
/// Created with [`Client::connect`]; clones share everything.
///
/// # Example
/// ```no_run
/// use paperboy::{Client, ClientConfig, NewTopic};
///
/// # async fn run() -> paperboy::Result<()> {
/// let client = Client::connect(ClientConfig::new("127.0.0.1:9092")).await?;
/// client.create_topics(&[NewTopic::new("events", 6, 1)]).await?;
/// let cluster = client.refresh_metadata(&["events"]).await?;
/// assert_eq!(cluster.topic("events").unwrap().partitions.len(), 6);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.inner.config.bootstrap_servers)
            .field("client_id", &self.inner.config.client_id)
            .finish_non_exhaustive()
    }
}

type Slot = Arc<AsyncMutex<Option<Arc<Connection>>>>;

struct Inner {
    config: ClientConfig,
    /// How connections are opened: TLS built and SASL credentials resolved once.
    dialer: Dialer,
    /// The latest metadata snapshot. Replaced whole; the lock is held only to swap it.
    metadata: RwLock<Arc<Cluster>>,
    /// Serialises metadata refreshes so a burst of stale-metadata errors sends one request.
    refreshing: AsyncMutex<()>,
    /// One connection slot per broker address. The std mutex guards the map only; each
    /// slot's async mutex is held while its connection is being opened.
    conns: Mutex<HashMap<String, Slot>>,
    /// Round-robin cursor for requests any broker can answer.
    next_any: AtomicUsize,
    closed: AtomicBool,
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// The topic name.
    pub name: String,
    /// Number of partitions (-1: the broker's default).
    pub partitions: i32,
    /// Replication factor (-1: the broker's default).
    pub replication_factor: i16,
    /// Topic configs, such as `("cleanup.policy", "compact")`.
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with `partitions` partitions, each with `replication_factor` replicas.
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }

    /// Adds a topic config.
    #[must_use]
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// How many replicas must have a record before the leader acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// `acks=0`: the broker sends no answer at all; nothing is known of the outcome.
    None,
    /// `acks=1`: the leader wrote it.
    Leader,
    /// `acks=all` (`-1`): every in-sync replica has it.
    #[default]
    All,
}

impl Acks {
    pub(crate) fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = crate::ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            _ => Err(crate::config::invalid("acks", s, "0, 1, all or -1")),
        }
    }
}

/// What the broker said of an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// Offset of the batch's first record; -1 with [`Acks::None`].
    pub base_offset: i64,
    /// The broker's append time, for topics with `message.timestamp.type=LogAppendTime`.
    pub log_append_time_ms: Option<i64>,
}

/// Where to look up an offset with [`Client::list_offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset still in the log.
    Earliest,
    /// The offset the next record will get (the high watermark).
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
}

/// Read isolation for fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// Everything up to the high watermark, aborted transactions included.
    #[default]
    ReadUncommitted,
    /// Up to the last stable offset; aborted transactional records are to be skipped.
    ReadCommitted,
}

/// Options of one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// How long the broker may wait for `min_bytes` (`fetch.max.wait.ms`). Default 500 ms.
    pub max_wait: Duration,
    /// Bytes the broker waits for before answering (`fetch.min.bytes`). Default 1.
    pub min_bytes: i32,
    /// Cap on the response (`fetch.max.bytes`). Default 50 MiB.
    pub max_bytes: i32,
    /// Cap per partition (`max.partition.fetch.bytes`). Default 1 MiB.
    pub partition_max_bytes: i32,
    /// Read isolation. Default read_uncommitted.
    pub isolation: IsolationLevel,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            isolation: IsolationLevel::ReadUncommitted,
        }
    }
}

/// One partition's part of a fetch response.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    /// The offset after the last committed record (the high watermark).
    pub high_watermark: i64,
    /// The last stable offset (for read_committed).
    pub last_stable_offset: i64,
    /// The first offset still in the log.
    pub log_start_offset: i64,
    /// Aborted transactions in range: `(producer id, first offset)`.
    pub aborted_transactions: Vec<(i64, i64)>,
    /// The raw record set: whole record batches, possibly followed by a truncated one.
    /// Decode it with [`paperboy_protocol::records::batches`].
    pub records: Bytes,
}

impl Client {
    /// Connects to the cluster: opens a connection to the first reachable bootstrap
    /// server, negotiates API versions, and loads the broker list.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration; [`Error::NoBrokerAvailable`] when no
    /// bootstrap server answers.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        config.validate()?;
        let dialer = Dialer::new(&config)?;
        let client = Client {
            inner: Arc::new(Inner {
                config,
                dialer,
                metadata: RwLock::new(Arc::new(Cluster::default())),
                refreshing: AsyncMutex::new(()),
                conns: Mutex::new(HashMap::new()),
                next_any: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
            }),
        };
        let cluster = client.refresh_metadata(&[]).await?;
        info!(
            cluster_id = cluster.cluster_id.as_deref().unwrap_or("?"),
            brokers = cluster.brokers.len(),
            "connected to Kafka"
        );
        Ok(client)
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The latest metadata snapshot, without asking the cluster.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.inner
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Closes every connection. Requests in flight fail with [`Error::Disconnected`];
    /// later calls fail with [`Error::Closed`].
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let slots: Vec<Slot> = self
            .inner
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in slots {
            s.lock().await.take();
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// The connection to `addr`, opened if there is none or the old one broke.
    pub(crate) async fn conn_to(&self, addr: &str) -> Result<Arc<Connection>> {
        self.check_open()?;
        let slot = self
            .inner
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr.to_owned())
            .or_default()
            .clone();
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.is_poisoned() {
                return Ok(c.clone());
            }
        }
        let conn = Arc::new(self.open_connection(addr).await?);
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// A new connection to `addr` of its own, outside the pool (the group coordinator's,
    /// so commits do not queue behind long-poll fetches), with the client's settings.
    pub(crate) async fn open_connection(&self, addr: &str) -> Result<Connection> {
        self.check_open()?;
        Connection::connect(addr, &self.inner.dialer).await
    }

    /// The connection to broker `node_id`.
    pub(crate) async fn conn_to_node(&self, node_id: i32) -> Result<Arc<Connection>> {
        let addr = self
            .cluster()
            .brokers
            .get(&node_id)
            .map(|b| b.addr())
            .ok_or_else(|| Error::NoBrokerAvailable(format!("broker {node_id} is not known")))?;
        self.conn_to(&addr).await
    }

    /// A connection to any broker: known brokers in turn, then the bootstrap servers.
    pub(crate) async fn conn_to_any(&self) -> Result<Arc<Connection>> {
        let cluster = self.cluster();
        let mut addrs: Vec<String> = cluster.brokers.values().map(|b| b.addr()).collect();
        addrs.sort();
        let start = self.inner.next_any.fetch_add(1, Ordering::Relaxed);
        if !addrs.is_empty() {
            let n = addrs.len();
            addrs.rotate_left(start % n);
        }
        for b in &self.inner.config.bootstrap_servers {
            if !addrs.contains(b) {
                addrs.push(b.clone());
            }
        }
        let mut errors = Vec::new();
        for addr in &addrs {
            match self.conn_to(addr).await {
                Ok(c) => return Ok(c),
                // Settings that fail on one broker fail on every one: say so at once.
                Err(e @ (Error::Closed | Error::Tls { .. } | Error::Authentication { .. })) => {
                    return Err(e)
                }
                Err(e) => {
                    debug!(broker = %addr, error = %e, "broker unreachable");
                    errors.push(format!("{addr}: {e}"));
                }
            }
        }
        Err(Error::NoBrokerAvailable(errors.join("; ")))
    }

    /// The address (`host:port`) of the coordinator of `key`: a group (`key_type` 0) or
    /// a transactional id (1). One FindCoordinator request; the caller retries.
    pub(crate) async fn find_coordinator(&self, key_type: i8, key: &str) -> Result<String> {
        let what = || {
            let kind = if key_type == 1 {
                "transactional id"
            } else {
                "group"
            };
            format!("find coordinator of {kind} {key}")
        };
        let conn = self.conn_to_any().await?;
        let version = conn.version_for::<FindCoordinatorRequest>()?;
        let key = StrBytes::from_string(key.to_owned());
        let req = if version >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
        } else {
            FindCoordinatorRequest::default().with_key(key)
        }
        .with_key_type(key_type);
        let resp = conn
            .request_at(&req, version, self.inner.config.request_timeout)
            .await?;
        let (code, message, host, port) = if version >= 4 {
            let c = resp.coordinators.first().ok_or_else(|| {
                Error::IncompleteResponse(format!("{}: no coordinator in the response", what()))
            })?;
            (
                c.error_code,
                c.error_message.clone(),
                c.host.clone(),
                c.port,
            )
        } else {
            (
                resp.error_code,
                resp.error_message.clone(),
                resp.host,
                resp.port,
            )
        };
        if let Some(e) = Error::from_code(code, message.as_deref(), what) {
            return Err(e);
        }
        Ok(format!("{host}:{port}"))
    }

    /// Asks the cluster for metadata of `topics` (or of no topic, for just the brokers)
    /// and returns the updated snapshot.
    ///
    /// # Errors
    /// [`Error::NoBrokerAvailable`] when no broker answers; other errors as they come.
    pub async fn refresh_metadata(&self, topics: &[&str]) -> Result<Arc<Cluster>> {
        let req = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string((*t).to_owned()))))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(self.inner.config.allow_auto_create_topics);
        self.refresh_with(req, false).await
    }

    /// Refreshes metadata for every topic of the cluster.
    ///
    /// # Errors
    /// As [`Client::refresh_metadata`].
    pub async fn refresh_all_metadata(&self) -> Result<Arc<Cluster>> {
        let req = MetadataRequest::default().with_topics(None);
        self.refresh_with(req, true).await
    }

    async fn refresh_with(&self, req: MetadataRequest, all: bool) -> Result<Arc<Cluster>> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let deadline = Instant::now() + self.inner.config.request_timeout;
        // Its own loop, not `retry`, which refreshes metadata itself.
        let mut delays = Backoff::of(&self.inner.config).delays();
        let resp = loop {
            let attempt = async {
                let conn = self.conn_to_any().await?;
                conn.request(&req).await.map(|(_, r)| r)
            };
            let e = match attempt.await {
                Ok(r) => break r,
                Err(e) => e,
            };
            let wait = delays.next_delay();
            if !e.is_retriable() || Instant::now() + wait >= deadline {
                return Err(e);
            }
            debug!(error = %e, "metadata request failed; retrying");
            tokio::time::sleep(wait).await;
        };
        let merged = Arc::new(self.cluster().merged(&resp, all));
        *self
            .inner
            .metadata
            .write()
            .unwrap_or_else(|e| e.into_inner()) = merged.clone();
        Ok(merged)
    }

    /// Metadata for `topic`, from the cache when it is known and fresh, else asked for.
    pub(crate) async fn topic_metadata(&self, topic: &str) -> Result<Arc<Cluster>> {
        let c = self.cluster();
        if c.topic(topic).is_some() && c.fetched_at.elapsed() < self.inner.config.metadata_max_age {
            return Ok(c);
        }
        let mut c = self.refresh_metadata(&[topic]).await?;
        // A topic being created (we asked, with allow.auto.create.topics) shows up after
        // the broker's controller has made it: ask again, with backoff, until
        // default.api.timeout.ms.
        let deadline = Instant::now() + self.inner.config.default_api_timeout;
        let mut delays = Backoff::of(&self.inner.config).delays();
        while c.topic(topic).is_none() && self.inner.config.allow_auto_create_topics {
            let wait = delays.next_delay();
            if Instant::now() + wait >= deadline {
                break;
            }
            tokio::time::sleep(wait).await;
            c = self.refresh_metadata(&[topic]).await?;
        }
        if c.topic(topic).is_none() {
            return Err(Error::UnknownTopicOrPartition {
                topic: topic.to_owned(),
                partition: None,
            });
        }
        Ok(c)
    }

    /// Runs `op` until it succeeds, fails with an error that is not retriable, or the
    /// deadline or `retries` is reached; waits with exponential backoff (and jitter)
    /// between tries, refreshing the metadata of `topics` after stale-metadata errors.
    pub(crate) async fn retry<T, F, Fut>(
        &self,
        what: &str,
        deadline: Instant,
        topics: &[&str],
        op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.retry_when(what, deadline, topics, Error::is_retriable, op)
            .await
    }

    /// As [`Client::retry`], retrying the errors for which `retriable` is true.
    pub(crate) async fn retry_when<T, F, Fut>(
        &self,
        what: &str,
        deadline: Instant,
        topics: &[&str],
        retriable: impl Fn(&Error) -> bool,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cfg = &self.inner.config;
        let mut delays = Backoff::of(cfg).delays();
        loop {
            let err = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            telemetry::error(what, &cfg.client_id, &err);
            if delays.attempts() >= cfg.retries {
                return Err(err);
            }
            let wait = delays.next_delay();
            if !retriable(&err)
                || Instant::now() + wait >= deadline
                || self.inner.closed.load(Ordering::Acquire)
            {
                return Err(err);
            }
            let attempt = delays.attempts();
            telemetry::retry(what, &cfg.client_id);
            warn!(%what, attempt, error = %err, backoff_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
            if err.is_stale_metadata() && !topics.is_empty() {
                if let Err(e) = self.refresh_metadata(topics).await {
                    debug!(error = %e, "metadata refresh failed");
                }
            }
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.inner.config.default_api_timeout
    }

    /// Creates topics, and waits until each has a leader for every partition.
    ///
    /// # Errors
    /// The first topic's error, e.g. TOPIC_ALREADY_EXISTS as [`Error::Kafka`]
    /// (check with `err.kafka_code() == Some(KafkaCode::TopicAlreadyExists)`).
    pub async fn create_topics(&self, topics: &[NewTopic]) -> Result<()> {
        let span = tracing::info_span!("create_topics", count = topics.len());
        async {
            let timeout = self.inner.config.request_timeout;
            let req = CreateTopicsRequest::default()
                .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
                .with_topics(
                    topics
                        .iter()
                        .map(|t| {
                            CreatableTopic::default()
                                .with_name(TopicName(StrBytes::from_string(t.name.clone())))
                                .with_num_partitions(t.partitions)
                                .with_replication_factor(t.replication_factor)
                                .with_configs(
                                    t.configs
                                        .iter()
                                        .map(|(k, v)| {
                                            CreatableTopicConfig::default()
                                                .with_name(StrBytes::from_string(k.clone()))
                                                .with_value(Some(StrBytes::from_string(v.clone())))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
            let resp = self
                .retry("create_topics", self.deadline(), &[], || async {
                    let (_, resp) = self.conn_to_any().await?.request(&req).await?;
                    // NOT_CONTROLLER and friends are retriable: retry the whole request.
                    for t in &resp.topics {
                        if let Some(e) =
                            Error::from_code(t.error_code, t.error_message.as_deref(), || {
                                format!("create topic {}", t.name.0)
                            })
                        {
                            if e.is_retriable() {
                                return Err(e);
                            }
                        }
                    }
                    Ok(resp)
                })
                .await?;
            for t in &resp.topics {
                if let Some(e) = Error::from_code(t.error_code, t.error_message.as_deref(), || {
                    format!("create topic {}", t.name.0)
                }) {
                    return Err(e);
                }
            }
            let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
            self.wait_for_leaders(&names).await?;
            info!(topics = ?names, "created topics");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Waits until every partition of `topics` has a leader known to the metadata.
    async fn wait_for_leaders(&self, topics: &[&str]) -> Result<()> {
        let deadline = self.deadline();
        loop {
            let c = self.refresh_metadata(topics).await?;
            let ready = topics.iter().all(|t| {
                c.topic(t).is_some_and(|t| {
                    !t.partitions.is_empty()
                        && t.partitions
                            .iter()
                            .all(|p| p.leader >= 0 && c.brokers.contains_key(&p.leader))
                })
            });
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("leaders for {topics:?}"),
                    after: self.inner.config.default_api_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets configuration of a consumer group (IncrementalAlterConfigs on the GROUP
    /// resource, Kafka 4.0+), e.g. `consumer.session.timeout.ms` or
    /// `consumer.heartbeat.interval.ms` for a `group.protocol=consumer` group. The
    /// group need not exist yet. The broker bounds the values
    /// (`group.consumer.min.session.timeout.ms`, ...).
    ///
    /// # Errors
    /// The broker's error, e.g. INVALID_CONFIG as [`Error::Kafka`] with its message.
    pub async fn alter_group_config(&self, group: &str, configs: &[(&str, &str)]) -> Result<()> {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::IncrementalAlterConfigsRequest;
        const GROUP_RESOURCE: i8 = 32;
        const SET: i8 = 0;
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(GROUP_RESOURCE)
                .with_resource_name(StrBytes::from_string(group.to_owned()))
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            AlterableConfig::default()
                                .with_name(StrBytes::from_string((*k).to_owned()))
                                .with_config_operation(SET)
                                .with_value(Some(StrBytes::from_string((*v).to_owned())))
                        })
                        .collect(),
                ),
        ]);
        self.retry("alter_group_config", self.deadline(), &[], || async {
            let (_, resp) = self.conn_to_any().await?.request(&req).await?;
            for r in &resp.responses {
                if let Some(e) = Error::from_code(r.error_code, r.error_message.as_deref(), || {
                    format!("alter config of group {group}")
                }) {
                    return Err(e);
                }
            }
            Ok(())
        })
        .await
    }

    /// Deletes topics.
    ///
    /// # Errors
    /// The first topic's error, e.g. UNKNOWN_TOPIC_OR_PARTITION as [`Error::Kafka`].
    pub async fn delete_topics(&self, topics: &[&str]) -> Result<()> {
        let timeout = self.inner.config.request_timeout;
        let req = DeleteTopicsRequest::default()
            .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topic_names(
                topics
                    .iter()
                    .map(|t| TopicName(StrBytes::from_string((*t).to_owned())))
                    .collect(),
            )
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        kafka_protocol::messages::delete_topics_request::DeleteTopicState::default()
                            .with_name(Some(TopicName(StrBytes::from_string((*t).to_owned()))))
                    })
                    .collect(),
            );
        let (_, resp) = self.conn_to_any().await?.request(&req).await?;
        for t in &resp.responses {
            if let Some(e) = Error::from_code(t.error_code, t.error_message.as_deref(), || {
                format!(
                    "delete topic {}",
                    t.name.as_ref().map(|n| n.0.as_str()).unwrap_or("?")
                )
            }) {
                return Err(e);
            }
        }
        let mut c = (*self.cluster()).clone();
        for t in topics {
            if let Some(old) = c.topics.remove(*t) {
                c.names_by_id.remove(&old.id);
            }
        }
        *self
            .inner
            .metadata
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
        Ok(())
    }

    /// Encodes `records` into one batch with `compression` and appends it to
    /// `topic`/`partition` on its leader.
    ///
    /// This is the building block of the producer, without its batching, idempotence or
    /// ordering guarantees. It retries only when the broker answered that it did not
    /// append the batch (leader moved, not enough replicas, ...): a lost connection is
    /// returned as an error, because the batch may or may not have been written.
    ///
    /// Each attempt waits `request.timeout.ms` for the broker's answer (the broker is
    /// given the same time to gather its acks); attempts are retried within
    /// `default.api.timeout.ms`.
    ///
    /// # Errors
    /// [`Error::Encode`] when the records cannot be encoded; [`Error::Kafka`] with the
    /// broker's code (MESSAGE_TOO_LARGE, ...); [`Error::Timeout`] when the answer did not
    /// come within `request.timeout.ms`; connection errors as they come.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: &[NewRecord],
        compression: Compression,
        acks: Acks,
    ) -> Result<ProduceAck> {
        let mut buf = BytesMut::new();
        let opts = BatchOptions {
            compression,
            ..BatchOptions::default()
        };
        records::encode_batch(records, &opts, &mut buf)?;
        let batch = buf.freeze();
        let span = tracing::debug_span!("produce", %topic, partition, records = records.len(), bytes = batch.len());
        // Retry only what surely did not append: a broker's error code, or a failure to
        // reach the leader at all. A connection lost with the request in flight, or a
        // timeout, leaves the outcome unknown, and is returned.
        let unwritten = |e: &Error| match e {
            Error::Kafka { .. } => e.is_retriable(),
            Error::Io { .. }
            | Error::NoBrokerAvailable(_)
            | Error::UnknownTopicOrPartition { .. } => true,
            _ => false,
        };
        self.retry_when("produce", self.deadline(), &[topic], unwritten, || {
            self.produce_once(topic, partition, batch.clone(), acks)
        })
        .instrument(span)
        .await
    }

    async fn produce_once(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        acks: Acks,
    ) -> Result<ProduceAck> {
        let cluster = self.topic_metadata(topic).await?;
        let leader = cluster.leader_for(topic, partition)?.node_id;
        let topic_id = cluster.topic(topic).map(|t| t.id).unwrap_or_default();
        let conn = self.conn_to_node(leader).await?;
        let timeout = self.inner.config.request_timeout;
        let req = ProduceRequest::default()
            .with_acks(acks.wire())
            .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_topic_id(topic_id)
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        let version = conn.version_for::<ProduceRequest>()?;
        if acks == Acks::None {
            conn.send_no_response(&req, version).await?;
            return Ok(ProduceAck {
                base_offset: -1,
                log_append_time_ms: None,
            });
        }
        // request.timeout.ms for the broker (`timeout_ms`) and for the wait, once.
        let resp = conn.request_at(&req, version, timeout).await?;
        let p = resp
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| {
                Error::IncompleteResponse(format!("produce response lacks {topic}[{partition}]"))
            })?;
        if let Some(e) = Error::from_code(p.error_code, p.error_message.as_deref(), || {
            format!("produce to {topic}[{partition}]")
        }) {
            return Err(e);
        }
        Ok(ProduceAck {
            base_offset: p.base_offset,
            log_append_time_ms: (p.log_append_time_ms >= 0).then_some(p.log_append_time_ms),
        })
    }

    /// Fetches records of `topic`/`partition` from `offset` on its leader.
    ///
    /// # Errors
    /// [`Error::Kafka`] with OFFSET_OUT_OF_RANGE and other broker codes (stale-metadata
    /// codes are retried first); connection errors as they come.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        opts: FetchOptions,
    ) -> Result<FetchedPartition> {
        let span = tracing::debug_span!("fetch", %topic, partition, offset);
        self.retry("fetch", self.deadline(), &[topic], || {
            self.fetch_once(topic, partition, offset, opts)
        })
        .instrument(span)
        .await
    }

    async fn fetch_once(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        opts: FetchOptions,
    ) -> Result<FetchedPartition> {
        let cluster = self.topic_metadata(topic).await?;
        let leader = cluster.leader_for(topic, partition)?.node_id;
        let t = cluster.topic(topic).expect("topic_metadata checked it");
        let leader_epoch = t.partition(partition).map_or(-1, |p| p.leader_epoch);
        let topic_id = t.id;
        let conn = self.conn_to_node(leader).await?;
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(opts.max_wait.as_millis().min(i32::MAX as u128) as i32)
            .with_min_bytes(opts.min_bytes)
            .with_max_bytes(opts.max_bytes)
            .with_isolation_level(match opts.isolation {
                IsolationLevel::ReadUncommitted => 0,
                IsolationLevel::ReadCommitted => 1,
            })
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_topic_id(topic_id)
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(leader_epoch)
                    .with_fetch_offset(offset)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(opts.partition_max_bytes)])]);
        let timeout = self.inner.config.request_timeout + opts.max_wait;
        let version = conn.version_for::<FetchRequest>()?;
        let resp = conn.request_at(&req, version, timeout).await?;
        if let Some(e) = Error::from_code(resp.error_code, None, || format!("fetch {topic}")) {
            return Err(e);
        }
        let p = resp
            .responses
            .iter()
            .filter(|r| {
                if version >= 13 {
                    r.topic_id == topic_id
                } else {
                    r.topic.0.as_str() == topic
                }
            })
            .flat_map(|r| r.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| {
                Error::IncompleteResponse(format!("fetch response lacks {topic}[{partition}]"))
            })?;
        if let Some(e) = Error::from_code(p.error_code, None, || {
            format!("fetch {topic}[{partition}] at {offset}")
        }) {
            return Err(e);
        }
        Ok(FetchedPartition {
            high_watermark: p.high_watermark,
            last_stable_offset: p.last_stable_offset,
            log_start_offset: p.log_start_offset,
            aborted_transactions: p
                .aborted_transactions
                .iter()
                .flatten()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect(),
            records: p.records.clone().unwrap_or_default(),
        })
    }

    /// Looks up an offset of `topic`/`partition`: the earliest, the latest (high
    /// watermark), or the first at or after a timestamp (-1 when there is none).
    ///
    /// # Errors
    /// [`Error::Kafka`] with the broker's code; connection errors as they come.
    pub async fn list_offset(&self, topic: &str, partition: i32, spec: OffsetSpec) -> Result<i64> {
        let timestamp = match spec {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        };
        self.retry("list_offsets", self.deadline(), &[topic], || async move {
            let cluster = self.topic_metadata(topic).await?;
            let leader = cluster.leader_for(topic, partition)?.node_id;
            let epoch = cluster
                .topic(topic)
                .and_then(|t| t.partition(partition))
                .map_or(-1, |p| p.leader_epoch);
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_current_leader_epoch(epoch)
                        .with_timestamp(timestamp)])]);
            let (_, resp) = self.conn_to_node(leader).await?.request(&req).await?;
            let p = resp
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| {
                    Error::IncompleteResponse(format!(
                        "list_offsets response lacks {topic}[{partition}]"
                    ))
                })?;
            if let Some(e) = Error::from_code(p.error_code, None, || {
                format!("list offsets {topic}[{partition}]")
            }) {
                return Err(e);
            }
            Ok(p.offset)
        })
        .await
    }

    /// The version of the API with key `api_key` (0 Produce, 1 Fetch, ...: Kafka's
    /// numbers) this client would use with broker `node_id`; `None` when they share
    /// none (or the key is not one Paperboy knows).
    ///
    /// # Errors
    /// When the broker cannot be reached.
    pub async fn negotiated_version(&self, node_id: i32, api_key: i16) -> Result<Option<i16>> {
        let Ok(api) = kafka_protocol::messages::ApiKey::try_from(api_key) else {
            return Ok(None);
        };
        Ok(self.conn_to_node(node_id).await?.versions().negotiate(api))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_parse() {
        assert_eq!("all".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("-1".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("0".parse::<Acks>().unwrap(), Acks::None);
        assert!("2".parse::<Acks>().is_err());
    }

    #[test]
    fn client_is_send_sync_clone() {
        fn assert_impls<T: Send + Sync + Clone + 'static>() {}
        assert_impls::<Client>();
    }

    #[tokio::test]
    async fn connect_fails_fast_with_no_broker() {
        // Port 1 on loopback: nothing listens, the connect is refused at once.
        let cfg = ClientConfig::new("127.0.0.1:1").with_request_timeout(Duration::from_millis(300));
        let err = Client::connect(cfg).await.unwrap_err();
        assert!(matches!(err, Error::NoBrokerAvailable(_)), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
