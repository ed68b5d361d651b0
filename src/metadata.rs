//! What the client knows of the cluster: brokers, topics, partitions and their leaders.
//!
//! A [`Cluster`] is an immutable snapshot, replaced whole on each refresh and shared as an
//! `Arc`, so readers never hold a lock while they use it.

use std::collections::HashMap;
use std::time::Instant;

use kafka_protocol::messages::MetadataResponse;
use uuid::Uuid;

use crate::error::{Error, KafkaCode};

/// A broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// The broker's node id.
    pub node_id: i32,
    /// Host name or address it advertises.
    pub host: String,
    /// Port it advertises.
    pub port: u16,
    /// Its rack, if configured.
    pub rack: Option<String>,
}

impl Broker {
    /// `host:port`, as used to connect.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The partition index.
    pub id: i32,
    /// The leader's node id, or -1 while there is none.
    pub leader: i32,
    /// The leader epoch, or -1 when the broker did not say.
    pub leader_epoch: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// The error the broker reported for this partition (e.g. LEADER_NOT_AVAILABLE).
    pub error: Option<KafkaCode>,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// The topic name.
    pub name: String,
    /// The topic id (KIP-516), nil when the broker did not send one.
    pub id: Uuid,
    /// Whether it is an internal topic such as `__consumer_offsets`.
    pub internal: bool,
    /// Partitions, indexed by partition id.
    pub partitions: Vec<Partition>,
}

impl Topic {
    /// The partition with index `id`.
    pub fn partition(&self, id: i32) -> Option<&Partition> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.partitions.get(i))
            .filter(|p| p.id == id)
            .or_else(|| self.partitions.iter().find(|p| p.id == id))
    }
}

/// A snapshot of the cluster's metadata.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The cluster id.
    pub cluster_id: Option<String>,
    /// The controller node id (in KRaft, a broker that forwards to the controller).
    pub controller_id: i32,
    /// Brokers by node id.
    pub brokers: HashMap<i32, Broker>,
    /// Topics by name. Holds only the topics asked for so far.
    pub topics: HashMap<String, Topic>,
    /// Topic names by topic id.
    pub(crate) names_by_id: HashMap<Uuid, String>,
    /// When this snapshot was taken.
    pub fetched_at: Instant,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            cluster_id: None,
            controller_id: -1,
            brokers: HashMap::new(),
            topics: HashMap::new(),
            names_by_id: HashMap::new(),
            fetched_at: Instant::now(),
        }
    }
}

impl Cluster {
    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// The name of the topic with id `id`.
    pub fn topic_name(&self, id: &Uuid) -> Option<&str> {
        self.names_by_id.get(id).map(String::as_str)
    }

    /// The leader of `topic`/`partition`.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] when the partition is not known, and a
    /// retriable LEADER_NOT_AVAILABLE [`Error::Kafka`] while it has no leader.
    pub fn leader_for(&self, topic: &str, partition: i32) -> Result<&Broker, Error> {
        let p = self
            .topic(topic)
            .and_then(|t| t.partition(partition))
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: topic.to_owned(),
                partition: Some(partition),
            })?;
        self.brokers.get(&p.leader).ok_or_else(|| Error::Kafka {
            code: KafkaCode::LeaderNotAvailable,
            context: format!("leader of {topic}[{partition}]"),
            message: None,
        })
    }

    /// A new snapshot: this one updated with `resp`.
    ///
    /// Brokers are replaced; topics in `resp` replace their old entries; a topic the
    /// broker reports as unknown is removed. When `all_topics` is true, topics missing
    /// from `resp` are removed too.
    pub(crate) fn merged(&self, resp: &MetadataResponse, all_topics: bool) -> Cluster {
        let brokers = resp
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id.0,
                    Broker {
                        node_id: b.node_id.0,
                        host: b.host.to_string(),
                        port: u16::try_from(b.port).unwrap_or(0),
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                    },
                )
            })
            .collect();
        let mut topics = if all_topics {
            HashMap::new()
        } else {
            self.topics.clone()
        };
        for t in &resp.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            match KafkaCode::try_from_code(t.error_code) {
                None => {}
                Some(KafkaCode::UnknownTopicOrPartition)
                | Some(KafkaCode::InvalidTopicException) => {
                    topics.remove(&name);
                    continue;
                }
                // LEADER_NOT_AVAILABLE while a topic is being created: keep what we have.
                Some(_) if t.partitions.is_empty() => continue,
                Some(_) => {}
            }
            let mut partitions: Vec<Partition> = t
                .partitions
                .iter()
                .map(|p| Partition {
                    id: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    error: KafkaCode::try_from_code(p.error_code),
                })
                .collect();
            partitions.sort_by_key(|p| p.id);
            topics.insert(
                name.clone(),
                Topic {
                    name,
                    id: t.topic_id,
                    internal: t.is_internal,
                    partitions,
                },
            );
        }
        let names_by_id = topics
            .values()
            .filter(|t| !t.id.is_nil())
            .map(|t| (t.id, t.name.clone()))
            .collect();
        Cluster {
            cluster_id: resp.cluster_id.as_ref().map(|c| c.to_string()),
            controller_id: resp.controller_id.0,
            brokers,
            topics,
            names_by_id,
            fetched_at: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn resp(topics: Vec<MetadataResponseTopic>) -> MetadataResponse {
        MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(9092)])
            .with_topics(topics)
    }

    fn topic(name: &'static str, code: i16, parts: &[(i32, i32)]) -> MetadataResponseTopic {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str(name))))
            .with_error_code(code)
            .with_topic_id(Uuid::from_u128(name.len() as u128))
            .with_partitions(
                parts
                    .iter()
                    .map(|&(i, l)| {
                        MetadataResponsePartition::default()
                            .with_partition_index(i)
                            .with_leader_id(BrokerId(l))
                    })
                    .collect(),
            )
    }

    #[test]
    fn merge_keeps_other_topics_and_drops_unknown_ones() {
        let c = Cluster::default().merged(&resp(vec![topic("a", 0, &[(1, 1), (0, 1)])]), false);
        assert_eq!(c.topic("a").unwrap().partitions[0].id, 0, "sorted by id");
        assert_eq!(c.leader_for("a", 1).unwrap().addr(), "127.0.0.1:9092");
        assert_eq!(c.topic_name(&Uuid::from_u128(1)), Some("a"));
        let c = c.merged(&resp(vec![topic("bb", 0, &[(0, 7)])]), false);
        assert!(c.topic("a").is_some());
        let err = c.leader_for("bb", 0).unwrap_err();
        assert!(err.is_retriable(), "no leader yet is retriable: {err}");
        assert!(matches!(
            c.leader_for("bb", 5),
            Err(Error::UnknownTopicOrPartition { .. })
        ));
        let c = c.merged(&resp(vec![topic("a", 3, &[])]), false);
        assert!(c.topic("a").is_none());
        let c = c.merged(&resp(vec![]), true);
        assert!(c.topics.is_empty());
    }
}
