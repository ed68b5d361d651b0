//! The cluster: its builder, the controls a test uses, and its housekeeping task.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::faults::{Fault, FaultId, Faults, RequestRecord};
use crate::handlers::fetch::FetchSessions;
use crate::sasl::{SaslMechanism, SaslUsers};
use crate::state::{now_ms, random_u64, NodeInfo, Shared, State};

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
            nodes.push(NodeInfo::new(id, port));
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
            transactions: HashMap::new(),
            txn_offsets: HashMap::new(),
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
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            appended,
            changed: watch::channel(0u64).0,
        });
        let mut listener_tasks = HashMap::new();
        for (id, l) in listeners.into_iter().enumerate() {
            let task = tokio::spawn(crate::server::serve_node(shared.clone(), id as i32, l));
            listener_tasks.insert(id as i32, task);
        }
        let housekeeping = tokio::spawn(housekeeping(shared.clone()));
        Ok(Cluster {
            shared,
            listeners: Mutex::new(listener_tasks),
            housekeeping,
            first_port: self.first_port,
        })
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
    /// Each node's listener task (aborting it closes its connections too).
    listeners: Mutex<HashMap<i32, JoinHandle<()>>>,
    housekeeping: JoinHandle<()>,
    first_port: u16,
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
        for t in self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            t.abort();
        }
        self.housekeeping.abort();
        for n in &self.shared.lock().nodes {
            n.drop_connections();
        }
    }

    /// Adds a node (the next id; OS-assigned port, or `first_port + id` with
    /// [`ClusterBuilder::port`]). It leads nothing until partitions move to it
    /// ([`move_leader`](Self::move_leader), [`create_topic`](Self::create_topic)).
    ///
    /// # Errors
    /// When its listener cannot be bound.
    pub async fn add_node(&self) -> io::Result<i32> {
        let id = self
            .shared
            .lock()
            .nodes
            .iter()
            .map(|n| n.id)
            .max()
            .unwrap_or(-1)
            + 1;
        let port = match self.first_port {
            0 => 0,
            first => u16::try_from(i32::from(first) + id)
                .map_err(|_| io::Error::other("port out of range"))?,
        };
        let l = TcpListener::bind(("127.0.0.1", port)).await?;
        let port = l.local_addr()?.port();
        self.shared.lock().nodes.push(NodeInfo::new(id, port));
        let task = tokio::spawn(crate::server::serve_node(self.shared.clone(), id, l));
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, task);
        Ok(id)
    }

    /// Removes a node for good: its listener and connections close, it leaves every
    /// replica set, the partitions it led move to their first remaining replica (or the
    /// first node) with a new leader epoch, and coordinators moved to it go back to the
    /// hash (which now spreads over fewer nodes).
    ///
    /// # Errors
    /// BrokerNotAvailable for an unknown node; InvalidRequest for the last one.
    pub fn remove_node(&self, node: i32) -> Result<(), ResponseError> {
        let mut st = self.shared.lock();
        let Some(i) = st.nodes.iter().position(|n| n.id == node) else {
            return Err(ResponseError::BrokerNotAvailable);
        };
        if st.nodes.len() == 1 {
            return Err(ResponseError::InvalidRequest);
        }
        let removed = st.nodes.remove(i);
        removed.drop_connections();
        if let Some(t) = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&node)
        {
            t.abort();
        }
        let fallback = st.nodes[0].id;
        for t in st.topics.values_mut() {
            for p in &mut t.partitions {
                p.replicas.retain(|r| *r != node);
                if p.leader == node {
                    p.leader = p.replicas.first().copied().unwrap_or(fallback);
                    if p.replicas.is_empty() {
                        p.replicas.push(p.leader);
                    }
                    p.leader_epoch += 1;
                    let epoch = p.leader_epoch;
                    p.log.new_epoch(epoch);
                }
            }
        }
        st.coordinators.retain(|_, n| *n != node);
        Ok(())
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
        if let Some(n) = self.shared.lock().node(node) {
            n.drop_connections();
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

    /// Makes `node` the coordinator of `group`, or of a transactional id (FindCoordinator
    /// answers it; the others answer NOT_COORDINATOR to the group's or the id's requests).
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

    /// A partition's last stable offset: the first offset of its earliest open
    /// transaction, else its high watermark.
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        let st = self.shared.lock();
        st.partition(topic, partition)
            .map(|p| p.txns.last_stable_offset(p.log.log_end()))
    }

    /// The producer id and epoch of a transactional id, and whether a transaction of it
    /// is open (partitions or offsets added, not ended yet).
    pub fn transaction(&self, transactional_id: &str) -> Option<(i64, i16, bool)> {
        let st = self.shared.lock();
        st.transactions.get(transactional_id).map(|t| {
            (
                t.producer_id,
                t.epoch,
                t.phase == crate::handlers::txn::TxnPhase::Ongoing,
            )
        })
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

/// How often housekeeping enforces `retention.ms`.
const RETENTION_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Expires group sessions and rebalances and aborts transactions past their timeout
/// (every tick), and drops old batches (every [`RETENTION_CHECK_EVERY`]), until the
/// cluster stops.
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
        let aborted = crate::handlers::txn::expire(&mut st, now);
        if now.duration_since(last_retention) >= RETENTION_CHECK_EVERY {
            last_retention = now;
            st.enforce_retention_time(now_ms());
        }
        drop(st);
        if aborted {
            shared.appended.send_modify(|g| *g += 1);
        }
        shared.changed.send_modify(|g| *g += 1);
    }
}
