//! The cluster: its builder, the state every node shares, and the controls a test uses.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::faults::{Fault, FaultId, Faults, RequestRecord};
use crate::handlers::fetch::FetchSessions;
use crate::handlers::group::Group;
use crate::handlers::produce::ProducerEntry;
use crate::log::PartitionLog;
use crate::sasl::{SaslMechanism, SaslUsers};

/// The default `max.message.bytes` of a topic, as Kafka's.
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// Builds a [`Cluster`]; see [`Cluster::builder`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    default_partitions: i32,
    topics: Vec<(String, i32)>,
    auto_create_topics: bool,
    retention_bytes: Option<usize>,
    retention_ms: Option<i64>,
    sasl: SaslUsers,
    first_port: u16,
    initial_rebalance_delay: Duration,
}

impl ClusterBuilder {
    /// How many nodes (ids 0..n), each on its own loopback port. Default 1.
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n.max(1);
        self
    }

    /// Partitions of a topic created without a count (auto-created, or CreateTopics with
    /// -1). Default 1.
    pub fn default_partitions(mut self, p: i32) -> Self {
        self.default_partitions = p.max(1);
        self
    }

    /// A topic that exists from the start.
    pub fn topic(mut self, name: impl Into<String>, partitions: i32) -> Self {
        self.topics.push((name.into(), partitions.max(1)));
        self
    }

    /// Whether Metadata requests that ask for it create unknown topics. Default on.
    pub fn auto_create_topics(mut self, on: bool) -> Self {
        self.auto_create_topics = on;
        self
    }

    /// The default `retention.bytes` of every partition (whole batches are dropped from
    /// the front past it). Default unlimited; a topic's own config overrides it.
    pub fn retention_bytes(mut self, bytes: usize) -> Self {
        self.retention_bytes = Some(bytes);
        self
    }

    /// The default `retention.ms` of every partition: batches whose largest timestamp is
    /// older are dropped from the front (checked every 100 ms). Default unlimited; a
    /// topic's own config overrides it.
    pub fn retention_time(mut self, retention: Duration) -> Self {
        self.retention_ms = Some(retention.as_millis().min(i64::MAX as u128) as i64);
        self
    }

    /// Node `i` listens on `first_port + i` instead of a port the OS picks (for a
    /// standalone server with a known address). Default: OS-assigned.
    pub fn port(mut self, first_port: u16) -> Self {
        self.first_port = first_port;
        self
    }

    /// `group.initial.rebalance.delay.ms`: how long the first join of an empty group waits
    /// for more members (each new member extends it, up to the rebalance timeout).
    /// Default zero (a real broker's is 3 s), so tests need not wait.
    pub fn group_initial_rebalance_delay(mut self, delay: Duration) -> Self {
        self.initial_rebalance_delay = delay;
        self
    }

    /// Requires SASL authentication on every connection, and adds a user of `mechanism`
    /// (call again for more users or mechanisms). Until a connection authenticates it may
    /// send only ApiVersions, SaslHandshake and SaslAuthenticate.
    pub fn sasl_user(mut self, mechanism: SaslMechanism, user: &str, password: &str) -> Self {
        self.sasl
            .by_mechanism
            .entry(mechanism)
            .or_default()
            .insert(user.to_owned(), password.to_owned());
        self
    }

    /// Binds a listener per node on `127.0.0.1` (ports chosen by the OS) and starts
    /// serving. Call within a Tokio runtime; the cluster's tasks run on it.
    pub async fn build(self) -> io::Result<Cluster> {
        let mut listeners = Vec::new();
        let mut nodes = Vec::new();
        for id in 0..self.nodes as i32 {
            let port = match self.first_port {
                0 => 0,
                first => u16::try_from(i32::from(first) + id)
                    .map_err(|_| io::Error::other("port out of range"))?,
            };
            let l = TcpListener::bind(("127.0.0.1", port)).await?;
            let port = l.local_addr()?.port();
            nodes.push(NodeInfo {
                id,
                host: "127.0.0.1".to_owned(),
                port,
                up: true,
                latency: Duration::ZERO,
                rack: None,
            });
            listeners.push(l);
        }
        let mut state = State {
            cluster_id: format!("paperboy-mock-{:x}", random_u64() & 0xffff_ffff),
            nodes,
            topics: BTreeMap::new(),
            groups: HashMap::new(),
            coordinators: HashMap::new(),
            next_producer_id: 1000,
            producer_epochs: HashMap::new(),
            auto_create_topics: self.auto_create_topics,
            default_partitions: self.default_partitions,
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            sasl: self.sasl.clone(),
            initial_rebalance_delay: self.initial_rebalance_delay,
            faults: Faults::default(),
            requests: Vec::new(),
            fetch_sessions: FetchSessions::default(),
            api_overrides: HashMap::new(),
        };
        for (name, partitions) in &self.topics {
            state
                .create_topic(name, *partitions, -1, BTreeMap::new())
                .map_err(|code| io::Error::other(format!("topic {name}: error {code}")))?;
        }
        let (appended, _) = watch::channel(0u64);
        let handles: Vec<NodeHandle> = (0..self.nodes)
            .map(|_| NodeHandle {
                kill: watch::channel(0u64).0,
            })
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            appended,
            changed: watch::channel(0u64).0,
            nodes: handles,
        });
        let mut tasks = Vec::new();
        for (id, l) in listeners.into_iter().enumerate() {
            tasks.push(tokio::spawn(crate::server::serve_node(
                shared.clone(),
                id as i32,
                l,
            )));
        }
        tasks.push(tokio::spawn(housekeeping(shared.clone())));
        Ok(Cluster { shared, tasks })
    }
}

/// An in-process Kafka cluster on loopback ports.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let cluster = paperboy_mock::Cluster::builder().nodes(3).topic("orders", 6).build().await?;
/// let bootstrap = cluster.bootstrap(); // "127.0.0.1:port,127.0.0.1:port,..."
/// # drop(bootstrap);
/// cluster.shutdown();
/// # Ok(()) }
/// ```
///
/// Dropping it stops it too.
#[derive(Debug)]
pub struct Cluster {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// A builder: one node, one partition per new topic, topics auto-created.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            nodes: 1,
            default_partitions: 1,
            topics: Vec::new(),
            auto_create_topics: true,
            retention_bytes: None,
            retention_ms: None,
            sasl: SaslUsers::default(),
            first_port: 0,
            initial_rebalance_delay: Duration::ZERO,
        }
    }

    /// The bootstrap servers: `127.0.0.1:port` of every node, comma-separated.
    pub fn bootstrap(&self) -> String {
        let st = self.shared.lock();
        st.nodes
            .iter()
            .map(|n| format!("{}:{}", n.host, n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The address of node `node`.
    pub fn node_address(&self, node: i32) -> Option<String> {
        let st = self.shared.lock();
        st.node(node).map(|n| format!("{}:{}", n.host, n.port))
    }

    /// Stops every listener and connection.
    pub fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
        for n in &self.shared.nodes {
            n.kill.send_modify(|g| *g += 1);
        }
    }

    /// Creates a topic (as CreateTopics would, replication `min(3, nodes)`).
    ///
    /// # Errors
    /// The Kafka error if it cannot (it exists: TopicAlreadyExists).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), ResponseError> {
        let mut st = self.shared.lock();
        st.create_topic(name, partitions, -1, BTreeMap::new())
            .map_err(error_of)
    }

    /// Creates a topic with topic configs (`max.message.bytes`, `message.timestamp.type`,
    /// `retention.bytes`, `retention.ms` are enforced; others are stored and described).
    ///
    /// # Errors
    /// As [`create_topic`](Self::create_topic).
    pub fn create_topic_with_configs(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<(), ResponseError> {
        let configs = configs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut st = self.shared.lock();
        st.create_topic(name, partitions, -1, configs)
            .map_err(error_of)
    }

    /// Injects a fault; see [`Fault`].
    pub fn inject(&self, fault: Fault) -> FaultId {
        self.shared.lock().faults.inject(fault)
    }

    /// How many more requests an injected fault will affect: `Some(Some(n))`, `Some(None)`
    /// for one that lasts until cleared, `None` once it is used up or cleared.
    pub fn fault_remaining(&self, id: FaultId) -> Option<Option<u32>> {
        self.shared.lock().faults.remaining(id)
    }

    /// Removes one injected fault.
    pub fn clear_fault(&self, id: FaultId) {
        self.shared.lock().faults.clear(id);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear_all();
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Closes every open connection to `node` (it keeps accepting new ones).
    pub fn drop_connections(&self, node: i32) {
        if let Some(n) = self.shared.nodes.get(node as usize) {
            n.kill.send_modify(|g| *g += 1);
        }
    }

    /// Takes `node` down: its connections close, new ones are closed as soon as accepted,
    /// and Metadata leaves it out. Leaders and coordinators do not move by themselves:
    /// partitions it leads answer LEADER_NOT_AVAILABLE in Metadata until
    /// [`move_leader`](Self::move_leader) (groups it coordinates: COORDINATOR_NOT_AVAILABLE
    /// until [`move_coordinator`](Self::move_coordinator)).
    pub fn node_down(&self, node: i32) {
        if let Some(n) = self.shared.lock().node_mut(node) {
            n.up = false;
        }
        self.drop_connections(node);
    }

    /// Brings `node` back up.
    pub fn node_up(&self, node: i32) {
        if let Some(n) = self.shared.lock().node_mut(node) {
            n.up = true;
        }
    }

    /// Delays every response of `node` by `latency` (on top of any delay fault), as a
    /// slow link would; `Duration::ZERO` removes it.
    pub fn set_latency(&self, node: i32, latency: Duration) {
        if let Some(n) = self.shared.lock().node_mut(node) {
            n.latency = latency;
        }
    }

    /// Sets the rack Metadata reports for `node` (`None`: no rack).
    pub fn set_rack(&self, node: i32, rack: Option<&str>) {
        if let Some(n) = self.shared.lock().node_mut(node) {
            n.rack = rack.map(str::to_owned);
        }
    }

    /// Narrows the versions served for `api` (advertised in ApiVersions and accepted;
    /// a request outside them closes its connection, as a broker does), or stops serving
    /// it (`None`), to test a client's version negotiation. Ranges wider than the
    /// mock's own are cut to them.
    pub fn set_api_versions(&self, api: ApiKey, range: Option<(i16, i16)>) {
        let own = crate::versions::supported(api);
        let range = match (range, own) {
            (Some((min, max)), Some((own_min, own_max))) => {
                Some((min.max(own_min), max.min(own_max))).filter(|(a, b)| a <= b)
            }
            _ => None,
        };
        self.shared.lock().api_overrides.insert(api as i16, range);
    }

    /// Makes `node` the leader of a partition, with a new leader epoch; `-1` leaves it
    /// without a leader (Metadata: LEADER_NOT_AVAILABLE; every node: NOT_LEADER_OR_FOLLOWER).
    ///
    /// # Errors
    /// UnknownTopicOrPartition, or BrokerNotAvailable for a node that does not exist.
    pub fn move_leader(&self, topic: &str, partition: i32, node: i32) -> Result<(), ResponseError> {
        let mut st = self.shared.lock();
        if node != -1 && st.node(node).is_none() {
            return Err(ResponseError::BrokerNotAvailable);
        }
        let p = st
            .partition_mut(topic, partition)
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        p.leader = node;
        p.leader_epoch += 1;
        if node != -1 && !p.replicas.contains(&node) {
            p.replicas.insert(0, node);
        }
        let epoch = p.leader_epoch;
        p.log.new_epoch(epoch);
        Ok(())
    }

    /// Makes `node` the coordinator of `group` (FindCoordinator answers it; the others
    /// answer NOT_COORDINATOR to the group's requests).
    pub fn move_coordinator(&self, group: &str, node: i32) {
        self.shared
            .lock()
            .coordinators
            .insert(group.to_owned(), node);
    }

    /// Waits until `condition` (checked against this cluster's inspection methods) holds,
    /// re-checking after every request the cluster serves and every housekeeping tick
    /// (20 ms); `false` if `timeout` passes first. For tests that wait on the cluster's
    /// state without sleeping.
    ///
    /// ```no_run
    /// # async fn run(cluster: paperboy_mock::Cluster) {
    /// use std::time::Duration;
    /// let committed = cluster
    ///     .wait_until(Duration::from_secs(10), |c| c.committed("g", "t", 0) == Some(100))
    ///     .await;
    /// assert!(committed);
    /// # }
    /// ```
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&Cluster) -> bool,
    ) -> bool {
        let mut changed = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changed.borrow_and_update();
            if condition(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return condition(self);
            }
        }
    }

    /// The leader of a partition.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        let st = self.shared.lock();
        st.partition(topic, partition).map(|p| p.leader)
    }

    /// The coordinator of `group`.
    pub fn coordinator(&self, group: &str) -> i32 {
        self.shared.lock().coordinator_for(group)
    }

    /// A partition's log start offset and high watermark.
    pub fn offsets(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        let st = self.shared.lock();
        st.partition(topic, partition)
            .map(|p| (p.log.log_start(), p.log.log_end()))
    }

    /// The offset `group` committed for a partition.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        let st = self.shared.lock();
        st.groups
            .get(group)?
            .offsets
            .get(&(topic.to_owned(), partition))
            .map(|c| c.offset)
    }

    /// The members of `group` and its generation.
    pub fn group_members(&self, group: &str) -> Option<(i32, Vec<String>)> {
        let st = self.shared.lock();
        st.groups
            .get(group)
            .map(|g| (g.generation, g.members.keys().cloned().collect()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn error_of(code: i16) -> ResponseError {
    use kafka_protocol::error::ParseResponseErrorCode;
    code.err().unwrap_or(ResponseError::UnknownServerError)
}

/// What the nodes' tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// Bumped after every append: fetches waiting for data watch it.
    pub appended: watch::Sender<u64>,
    /// Bumped after every request and housekeeping tick: [`Cluster::wait_until`] watches it.
    pub changed: watch::Sender<u64>,
    pub nodes: Vec<NodeHandle>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A handler that panicked leaves the state as it was: keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Per-node controls held outside the state.
#[derive(Debug)]
pub(crate) struct NodeHandle {
    /// Bumped to close every connection of the node.
    pub kill: watch::Sender<u64>,
}

#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub up: bool,
    /// Added before every response of the node (a slow link; librdkafka's broker RTT).
    pub latency: Duration,
    /// The rack Metadata reports.
    pub rack: Option<String>,
}

/// A topic.
#[derive(Debug)]
pub(crate) struct Topic {
    pub id: Uuid,
    pub partitions: Vec<Partition>,
    pub configs: BTreeMap<String, String>,
    pub replication: i16,
}

impl Topic {
    pub fn max_message_bytes(&self) -> usize {
        self.configs
            .get("max.message.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES)
    }

    pub fn log_append_time(&self) -> bool {
        self.configs
            .get("message.timestamp.type")
            .is_some_and(|v| v.eq_ignore_ascii_case("LogAppendTime"))
    }

    pub fn retention_ms(&self, default: Option<i64>) -> Option<i64> {
        match self.configs.get("retention.ms") {
            Some(v) => v.parse::<i64>().ok().filter(|ms| *ms >= 0),
            None => default,
        }
    }

    pub fn retention_bytes(&self, default: Option<usize>) -> Option<usize> {
        match self.configs.get("retention.bytes") {
            Some(v) => v.parse::<i64>().ok().and_then(|b| usize::try_from(b).ok()),
            None => default,
        }
    }
}

/// A partition.
#[derive(Debug)]
pub(crate) struct Partition {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub log: PartitionLog,
    /// Idempotent producers' state, by producer id.
    pub producers: HashMap<i64, ProducerEntry>,
}

/// The whole cluster's state, behind one mutex, never held across an await.
#[derive(Debug)]
pub(crate) struct State {
    pub cluster_id: String,
    pub nodes: Vec<NodeInfo>,
    pub topics: BTreeMap<String, Topic>,
    pub groups: HashMap<String, Group>,
    /// Coordinators moved by the test.
    pub coordinators: HashMap<String, i32>,
    pub next_producer_id: i64,
    /// The current epoch of each producer id handed out.
    pub producer_epochs: HashMap<i64, i16>,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    pub retention_bytes: Option<usize>,
    pub retention_ms: Option<i64>,
    pub sasl: SaslUsers,
    pub initial_rebalance_delay: Duration,
    pub faults: Faults,
    pub requests: Vec<RequestRecord>,
    pub fetch_sessions: FetchSessions,
    /// API version ranges changed by the test (`None`: not served).
    pub api_overrides: HashMap<i16, Option<(i16, i16)>>,
}

impl State {
    /// The versions served for `api`, as changed by the test.
    pub fn served(&self, api: ApiKey) -> Option<(i16, i16)> {
        match self.api_overrides.get(&(api as i16)) {
            Some(o) => *o,
            None => crate::versions::supported(api),
        }
    }

    /// Every API served, with its versions.
    pub fn served_all(&self) -> Vec<(ApiKey, i16, i16)> {
        crate::versions::SERVED
            .iter()
            .filter_map(|&(api, _, _)| self.served(api).map(|(min, max)| (api, min, max)))
            .collect()
    }

    pub fn node(&self, id: i32) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn node_mut(&mut self, id: i32) -> Option<&mut NodeInfo> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    pub fn is_up(&self, id: i32) -> bool {
        self.node(id).is_some_and(|n| n.up)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&Partition> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)
    }

    pub fn partition_mut(&mut self, topic: &str, partition: i32) -> Option<&mut Partition> {
        self.topics
            .get_mut(topic)?
            .partitions
            .get_mut(usize::try_from(partition).ok()?)
    }

    pub fn topic_name_by_id(&self, id: Uuid) -> Option<String> {
        self.topics
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(n, _)| n.clone())
    }

    /// Drops batches past their topic's `retention.ms`.
    fn enforce_retention_time(&mut self, now_ms: i64) {
        let default = self.retention_ms;
        for t in self.topics.values_mut() {
            if let Some(ms) = t.retention_ms(default) {
                for p in &mut t.partitions {
                    p.log.enforce_retention_time(now_ms.saturating_sub(ms));
                }
            }
        }
    }

    /// Adds partitions to a topic, up to `count` in all.
    pub fn add_partitions(
        &mut self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), i16> {
        let n = self.nodes.len();
        let ids: Vec<i32> = self.nodes.iter().map(|n| n.id).collect();
        let t = self
            .topics
            .get_mut(name)
            .ok_or(ResponseError::UnknownTopicOrPartition.code())?;
        let have = t.partitions.len();
        if count <= have as i32 {
            return Err(ResponseError::InvalidPartitions.code());
        }
        if validate_only {
            return Ok(());
        }
        let seed = (str_hash(name) as usize) % n;
        for p in have..count as usize {
            let replicas: Vec<i32> = (0..t.replication as usize)
                .map(|r| ids[(seed + p + r) % n])
                .collect();
            t.partitions.push(Partition {
                leader: replicas[0],
                leader_epoch: 0,
                replicas,
                log: PartitionLog::new(0),
                producers: HashMap::new(),
            });
        }
        Ok(())
    }

    /// Creates a topic. `replication` -1 means `min(3, nodes)`.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<(), i16> {
        if self.topics.contains_key(name) {
            return Err(ResponseError::TopicAlreadyExists.code());
        }
        if !valid_topic_name(name) {
            return Err(ResponseError::InvalidTopicException.code());
        }
        let partitions = if partitions == -1 {
            self.default_partitions
        } else {
            partitions
        };
        if partitions <= 0 {
            return Err(ResponseError::InvalidPartitions.code());
        }
        let n = self.nodes.len();
        let replication = if replication == -1 {
            n.min(3) as i16
        } else {
            replication
        };
        if replication <= 0 || replication as usize > n {
            return Err(ResponseError::InvalidReplicationFactor.code());
        }
        let seed = (str_hash(name) as usize) % n;
        let parts = (0..partitions as usize)
            .map(|p| {
                let replicas: Vec<i32> = (0..replication as usize)
                    .map(|r| self.nodes[(seed + p + r) % n].id)
                    .collect();
                Partition {
                    leader: replicas[0],
                    leader_epoch: 0,
                    replicas,
                    log: PartitionLog::new(0),
                    producers: HashMap::new(),
                }
            })
            .collect();
        self.topics.insert(
            name.to_owned(),
            Topic {
                id: Uuid::from_u128(u128::from(random_u64()) << 64 | u128::from(random_u64())),
                partitions: parts,
                configs,
                replication,
            },
        );
        Ok(())
    }

    /// The coordinator of a group (or transactional id): as moved by the test, or by a
    /// hash of the key.
    pub fn coordinator_for(&self, key: &str) -> i32 {
        if let Some(&n) = self.coordinators.get(key) {
            return n;
        }
        self.nodes[(str_hash(key) as usize) % self.nodes.len()].id
    }
}

/// How often housekeeping enforces `retention.ms`.
const RETENTION_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Expires group sessions and rebalances (every tick) and old batches (every
/// [`RETENTION_CHECK_EVERY`]), until the cluster stops.
async fn housekeeping(shared: Arc<Shared>) {
    let tick_every = crate::handlers::group::REAP_EVERY;
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_retention = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let mut st = shared.lock();
        crate::handlers::group::reap(&mut st, now);
        if now.duration_since(last_retention) >= RETENTION_CHECK_EVERY {
            last_retention = now;
            st.enforce_retention_time(now_ms());
        }
        drop(st);
        shared.changed.send_modify(|g| *g += 1);
    }
}

/// Kafka's legal topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub(crate) fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A stable hash (FNV-1a) for placing topics and groups.
fn str_hash(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A random number from the standard library's randomly seeded hasher.
pub(crate) fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos() as u64,
    );
    h.finish()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}
