//! The state every node shares: nodes, topics and their partitions, groups, producer
//! ids, faults, the request log, fetch sessions, version overrides and SASL users,
//! behind one mutex that is never held across an await.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use tokio::sync::watch;
use uuid::Uuid;

use crate::faults::{Faults, RequestRecord};
use crate::handlers::fetch::FetchSessions;
use crate::handlers::group::Group;
use crate::handlers::produce::ProducerEntry;
use crate::handlers::txn::{PartitionTxns, PendingOffsets, Transaction};
use crate::log::PartitionLog;
use crate::sasl::SaslUsers;

/// The default `max.message.bytes` of a topic, as Kafka's.
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// What the nodes' tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// Bumped after every append: fetches waiting for data watch it.
    pub appended: watch::Sender<u64>,
    /// Bumped after every request and housekeeping tick: [`Cluster::wait_until`] watches it.
    pub changed: watch::Sender<u64>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A handler that panicked leaves the state as it was: keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A node.
#[derive(Debug)]
pub(crate) struct NodeInfo {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub up: bool,
    /// Added before every response of the node (a slow link; librdkafka's broker RTT).
    pub latency: Duration,
    /// The rack Metadata reports.
    pub rack: Option<String>,
    /// Bumped to close every connection of the node.
    pub kill: watch::Sender<u64>,
}

impl NodeInfo {
    pub fn new(id: i32, port: u16) -> NodeInfo {
        NodeInfo {
            id,
            host: "127.0.0.1".to_owned(),
            port,
            up: true,
            latency: Duration::ZERO,
            rack: None,
            kill: watch::channel(0u64).0,
        }
    }

    /// Closes every open connection of the node.
    pub fn drop_connections(&self) {
        self.kill.send_modify(|g| *g += 1);
    }
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
    /// Open and aborted transactions on the partition.
    pub txns: PartitionTxns,
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
    /// Transactions, by transactional id.
    pub transactions: HashMap<String, Transaction>,
    /// Offsets sent to transactions (TxnOffsetCommit), until they end.
    pub txn_offsets: PendingOffsets,
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
    pub fn enforce_retention_time(&mut self, now_ms: i64) {
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
                txns: PartitionTxns::default(),
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
                    txns: PartitionTxns::default(),
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
