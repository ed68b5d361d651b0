//! Administration on [`Client`]: topic configurations and partitions, consumer groups
//! (listing, describing, their committed offsets, resetting them) and deleting records.
//! What `paperboy topics|groups|offsets` use; every call is bounded by
//! `default.api.timeout.ms` and retries what Kafka marks retriable.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    GroupId, IncrementalAlterConfigsRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{info, Instrument};

use super::{check, s, Client};
use crate::error::{Error, KafkaCode, Result};
use crate::group_protocol::decode_assignment;
use crate::offsets::TopicPartition;

/// What a configuration belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigResource {
    /// A topic.
    Topic(String),
    /// A broker, by node id.
    Broker(i32),
    /// A consumer group (KIP-848 group configurations).
    Group(String),
}

impl ConfigResource {
    fn wire(&self) -> (i8, String) {
        match self {
            ConfigResource::Topic(t) => (2, t.clone()),
            ConfigResource::Broker(id) => (4, id.to_string()),
            ConfigResource::Group(g) => (32, g.clone()),
        }
    }
}

/// One configuration entry, as the broker describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The key (`retention.ms`).
    pub name: String,
    /// The value; `None` for a sensitive value or one that is not set.
    pub value: Option<String>,
    /// Whether it is the default (not set on the resource itself).
    pub is_default: bool,
    /// Whether it cannot be changed.
    pub read_only: bool,
    /// Whether its value is hidden (passwords).
    pub sensitive: bool,
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// `group.id`.
    pub group_id: String,
    /// `consumer` for consumer groups (either protocol), or another client's type.
    pub protocol_type: String,
    /// `Stable`, `Empty`, `PreparingRebalance`, ... (empty from brokers before 2.6).
    pub state: String,
    /// `classic` or `consumer` (empty from brokers before 3.8).
    pub group_type: String,
}

/// A group's members and their assignments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// `group.id`.
    pub group_id: String,
    /// Its state (`Stable`, `Empty`, ...; `Dead` when the group does not exist).
    pub state: String,
    /// `classic` or `consumer` (the KIP-848 protocol).
    pub group_type: String,
    /// The assignor in use (`range`, `uniform`, ...), when known.
    pub assignor: String,
    /// Its members.
    pub members: Vec<MemberDescription>,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member id.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
    /// `client.id`.
    pub client_id: String,
    /// The host it connects from.
    pub host: String,
    /// The partitions assigned to it.
    pub assignment: Vec<TopicPartition>,
}

/// Retriable errors, except an unknown topic: an administrator asking about one that is
/// not there wants to hear so at once.
fn settled(e: &Error) -> bool {
    e.is_retriable() && e.kafka_code() != Some(KafkaCode::UnknownTopicOrPartition)
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

impl Client {
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
            self.wait_for_leaders(&names, 1).await?;
            info!(topics = ?names, "created topics");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Waits until each of `topics` has at least `partitions` partitions in the metadata,
    /// every one with a leader known to it (bounded by `default.api.timeout.ms`).
    async fn wait_for_leaders(&self, topics: &[&str], partitions: usize) -> Result<()> {
        self.wait_for_metadata(topics, "leaders", |c, t| {
            c.topic(t).is_some_and(|t| {
                t.partitions.len() >= partitions.max(1)
                    && t.partitions
                        .iter()
                        .all(|p| p.leader >= 0 && c.brokers.contains_key(&p.leader))
            })
        })
        .await
    }

    /// Asks for the metadata of `topics` until `shows` holds for each of them, for up
    /// to `default.api.timeout.ms` (then [`Error::Timeout`] naming `what`). An admin
    /// change is acknowledged when the controller has committed it; brokers apply it as
    /// they replay the metadata log.
    async fn wait_for_metadata(
        &self,
        topics: &[&str],
        what: &str,
        shows: impl Fn(&crate::metadata::Cluster, &str) -> bool,
    ) -> Result<()> {
        let deadline = self.deadline();
        loop {
            let c = self.refresh_metadata(topics).await?;
            if topics.iter().all(|t| shows(&c, t)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{what} of {topics:?} in the metadata"),
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

    /// Deletes topics, and waits until the metadata no longer shows them.
    ///
    /// # Errors
    /// The first topic's error, e.g. UNKNOWN_TOPIC_OR_PARTITION as [`Error::Kafka`];
    /// [`Error::Timeout`] if a topic still shows after `default.api.timeout.ms`.
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
        // Until the metadata no longer shows the topics (asking for an unknown topic drops
        // it from the cache).
        self.wait_for_metadata(topics, "deletion", |c, t| c.topic(t).is_none())
            .await
    }

    /// The configuration of `resource`: every entry, defaults included.
    ///
    /// # Errors
    /// The broker's error for the resource (e.g. UNKNOWN_TOPIC_OR_PARTITION).
    pub async fn describe_configs(&self, resource: &ConfigResource) -> Result<Vec<ConfigEntry>> {
        let (kind, name) = resource.wire();
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(s(&name))
                .with_configuration_keys(None),
        ]);
        let broker = match resource {
            ConfigResource::Broker(id) => Some(*id),
            _ => None,
        };
        self.retry_when(
            "describe_configs",
            self.deadline(),
            &[],
            settled,
            || async {
                let conn = match broker {
                    Some(id) => self.conn_to_node(id).await?,
                    None => self.conn_to_any().await?,
                };
                let (_, resp) = conn.request(&req).await?;
                let r = resp.results.first().ok_or_else(|| {
                    Error::IncompleteResponse(format!(
                        "describe configs of {resource:?}: no result"
                    ))
                })?;
                check(r.error_code, r.error_message.as_deref(), || {
                    format!("describe configs of {resource:?}")
                })?;
                Ok(r.configs
                    .iter()
                    .map(|c| ConfigEntry {
                        name: c.name.to_string(),
                        value: c.value.as_ref().map(|v| v.to_string()),
                        // Sources: 1 topic, 2/3/4 broker-level settings, 5 default.
                        is_default: c.config_source == 5,
                        read_only: c.read_only,
                        sensitive: c.is_sensitive,
                    })
                    .collect())
            },
        )
        .await
    }

    /// Changes configuration entries of `resource` (IncrementalAlterConfigs): `Some`
    /// sets a value, `None` removes the setting (back to the default).
    ///
    /// The call returns once the controller has committed the change; each broker applies
    /// it as it replays the metadata log, so a [`describe_configs`](Self::describe_configs)
    /// straight after can still show the old value for a moment (as with Kafka's own
    /// admin client).
    ///
    /// # Errors
    /// The broker's error, e.g. INVALID_CONFIG naming the key.
    pub async fn alter_configs(
        &self,
        resource: &ConfigResource,
        changes: &[(&str, Option<&str>)],
    ) -> Result<()> {
        const SET: i8 = 0;
        const DELETE: i8 = 1;
        let (kind, name) = resource.wire();
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(s(&name))
                .with_configs(
                    changes
                        .iter()
                        .map(|(k, v)| {
                            AlterableConfig::default()
                                .with_name(s(k))
                                .with_config_operation(if v.is_some() { SET } else { DELETE })
                                .with_value(v.map(s))
                        })
                        .collect(),
                ),
        ]);
        self.retry_when("alter_configs", self.deadline(), &[], settled, || async {
            let (_, resp) = self.conn_to_any().await?.request(&req).await?;
            for r in &resp.responses {
                check(r.error_code, r.error_message.as_deref(), || {
                    format!("alter configs of {resource:?}")
                })?;
            }
            Ok(())
        })
        .await
    }

    /// Grows `topic` to `total` partitions, and waits until the metadata shows them all
    /// with leaders (as [`create_topics`](Self::create_topics) waits for its topics).
    ///
    /// # Errors
    /// The broker's error, e.g. INVALID_PARTITIONS for a count not above the current one;
    /// [`Error::Timeout`] if the new partitions do not show within
    /// `default.api.timeout.ms`.
    pub async fn create_partitions(&self, topic: &str, total: i32) -> Result<()> {
        let timeout = self.config().request_timeout;
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(s(topic)))
                .with_count(total)
                .with_assignments(None)]);
        self.retry_when(
            "create_partitions",
            self.deadline(),
            &[],
            settled,
            || async {
                let (_, resp) = self.conn_to_any().await?.request(&req).await?;
                for r in &resp.results {
                    check(r.error_code, r.error_message.as_deref(), || {
                        format!("create partitions of {topic}")
                    })?;
                }
                Ok(())
            },
        )
        .await?;
        self.wait_for_leaders(&[topic], usize::try_from(total).unwrap_or(0))
            .await
    }

    /// Every group of the cluster (ListGroups to every broker).
    ///
    /// # Errors
    /// A broker's error.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let cluster = self.refresh_metadata(&[]).await?;
        let mut nodes: Vec<i32> = cluster.brokers.keys().copied().collect();
        nodes.sort_unstable();
        let mut out = Vec::new();
        for node in nodes {
            let listed = self
                .retry("list_groups", self.deadline(), &[], || async {
                    let conn = self.conn_to_node(node).await?;
                    let (_, resp) = conn.request(&ListGroupsRequest::default()).await?;
                    check(resp.error_code, None, || {
                        format!("list groups on broker {node}")
                    })?;
                    Ok(resp.groups)
                })
                .await?;
            out.extend(listed.into_iter().map(|g| GroupListing {
                group_id: g.group_id.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
                group_type: g.group_type.to_string(),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// A group's state, members and their assignments: DescribeGroups for a classic
    /// group, ConsumerGroupDescribe for one on the consumer protocol (KIP-848).
    ///
    /// # Errors
    /// The coordinator's error.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let classic = self
            .with_group_coordinator(group, || async {
                let conn = self.group_coordinator_conn(group).await?;
                let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]);
                let (_, resp) = conn.request(&req).await?;
                let g = resp.groups.into_iter().next().ok_or_else(|| {
                    Error::IncompleteResponse(format!("describe group {group}: no group"))
                })?;
                Ok(g)
            })
            .await;
        // A consumer-protocol group answers DescribeGroups with GROUP_ID_NOT_FOUND (or
        // describes it as a classic group with no members).
        let consumer_protocol = match &classic {
            Ok(g) => g.error_code == 69 || (g.protocol_type.is_empty() && g.members.is_empty()),
            Err(_) => false,
        };
        if consumer_protocol {
            if let Some(d) = self.describe_consumer_group(group).await? {
                return Ok(d);
            }
        }
        let g = classic?;
        if g.error_code == 69 {
            return Ok(GroupDescription {
                group_id: group.to_owned(),
                state: "Dead".into(),
                group_type: String::new(),
                assignor: String::new(),
                members: Vec::new(),
            });
        }
        check(g.error_code, g.error_message.as_deref(), || {
            format!("describe group {group}")
        })?;
        Ok(GroupDescription {
            group_id: group.to_owned(),
            state: g.group_state.to_string(),
            group_type: "classic".into(),
            assignor: g.protocol_data.to_string(),
            members: g
                .members
                .iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                    client_id: m.client_id.to_string(),
                    host: m.client_host.to_string(),
                    assignment: if g.protocol_type.as_str() == "consumer" {
                        decode_assignment(&m.member_assignment).unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        })
    }

    /// ConsumerGroupDescribe; `None` when the broker does not serve it or the group is
    /// not a consumer-protocol group.
    async fn describe_consumer_group(&self, group: &str) -> Result<Option<GroupDescription>> {
        let conn = self.group_coordinator_conn(group).await?;
        if conn.version_for::<ConsumerGroupDescribeRequest>().is_err() {
            return Ok(None);
        }
        let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(group))]);
        let (_, resp) = conn.request(&req).await?;
        let Some(g) = resp.groups.into_iter().next() else {
            return Ok(None);
        };
        if g.error_code != 0 {
            return Ok(None);
        }
        Ok(Some(GroupDescription {
            group_id: group.to_owned(),
            state: g.group_state.to_string(),
            group_type: "consumer".into(),
            assignor: g.assignor_name.to_string(),
            members: g
                .members
                .iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.instance_id.as_ref().map(|i| i.to_string()),
                    client_id: m.client_id.to_string(),
                    host: m.client_host.to_string(),
                    assignment: m
                        .assignment
                        .topic_partitions
                        .iter()
                        .flat_map(|t| {
                            t.partitions
                                .iter()
                                .map(move |p| TopicPartition::new(t.topic_name.to_string(), *p))
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    /// The committed offsets of `group`, every partition it has one for.
    ///
    /// # Errors
    /// The coordinator's error.
    pub async fn group_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, i64>> {
        self.with_group_coordinator(group, || async {
            let conn = self.group_coordinator_conn(group).await?;
            let version = conn.version_for::<OffsetFetchRequest>()?;
            let req = if version >= 8 {
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(group)))
                    .with_topics(None)])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(s(group)))
                    .with_topics(None)
            };
            let resp = conn
                .request_at(&req, version, self.config().request_timeout)
                .await?;
            let mut out = BTreeMap::new();
            let what = || format!("committed offsets of group {group}");
            if version >= 8 {
                for g in &resp.groups {
                    check(g.error_code, None, what)?;
                    for t in &g.topics {
                        for p in &t.partitions {
                            if p.error_code == 0 && p.committed_offset >= 0 {
                                out.insert(
                                    TopicPartition::new(t.name.to_string(), p.partition_index),
                                    p.committed_offset,
                                );
                            }
                        }
                    }
                }
            } else {
                check(resp.error_code, None, what)?;
                for t in &resp.topics {
                    for p in &t.partitions {
                        if p.error_code == 0 && p.committed_offset >= 0 {
                            out.insert(
                                TopicPartition::new(t.name.to_string(), p.partition_index),
                                p.committed_offset,
                            );
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Sets `group`'s committed offsets, as an administrator: the group must have no
    /// members (the coordinator refuses it otherwise, with UNKNOWN_MEMBER_ID or
    /// ILLEGAL_GENERATION).
    ///
    /// # Errors
    /// The coordinator's error for the first partition refused.
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<()> {
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for (tp, offset) in offsets {
            let p = OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(-1);
            match topics.iter_mut().find(|t| t.name.as_str() == tp.topic) {
                Some(t) => t.partitions.push(p),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(s(&tp.topic)))
                        .with_partitions(vec![p]),
                ),
            }
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_topics(topics);
        self.with_group_coordinator(group, || async {
            let conn = self.group_coordinator_conn(group).await?;
            let (_, resp) = conn.request(&req).await?;
            for t in &resp.topics {
                for p in &t.partitions {
                    check(p.error_code, None, || {
                        format!(
                            "set offset of {}[{}] for group {group}",
                            t.name.as_str(),
                            p.partition_index
                        )
                    })?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Deletes the records of `topic`'s `partition` before `offset` (-1: all of them,
    /// up to the high watermark); returns the partition's new log start offset.
    ///
    /// # Errors
    /// The leader's error, e.g. OFFSET_OUT_OF_RANGE beyond the high watermark.
    pub async fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> Result<i64> {
        let timeout = self.config().request_timeout;
        let req = DeleteRecordsRequest::default()
            .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(partition)
                    .with_offset(offset)])]);
        self.retry("delete_records", self.deadline(), &[topic], || async {
            let cluster = self.topic_metadata(topic).await?;
            let leader = cluster.leader_for(topic, partition)?.node_id;
            let (_, resp) = self.conn_to_node(leader).await?.request(&req).await?;
            let p = resp
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| {
                    Error::IncompleteResponse(format!("delete records of {topic}[{partition}]"))
                })?;
            check(p.error_code, None, || {
                format!("delete records of {topic}[{partition}]")
            })?;
            Ok(p.low_watermark)
        })
        .await
    }

    /// A connection to `group`'s coordinator (from the pool).
    async fn group_coordinator_conn(
        &self,
        group: &str,
    ) -> Result<std::sync::Arc<crate::conn::Connection>> {
        let addr = self.find_coordinator(0, group).await?;
        self.conn_to(&addr).await
    }

    /// Runs `op`, retrying coordinator moves and loads (and other retriable errors) until
    /// `default.api.timeout.ms`.
    async fn with_group_coordinator<T, F, Fut>(&self, group: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let what = format!("group {group}");
        self.retry(&what, self.deadline(), &[], op).await
    }
}
