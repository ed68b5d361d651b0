//! The classic group protocol, request by request: finding the coordinator, joining,
//! syncing, heartbeats, leaving, and committing and fetching offsets.
//!
//! [`GroupClient`] knows nothing of partitions being consumed; the consumer drives it
//! and owns the state machine (see `mod.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    heartbeat_request::HeartbeatRequest,
    join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol},
    leave_group_request::{LeaveGroupRequest, MemberIdentity},
    offset_commit_request::{
        OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    },
    offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopics},
    sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment},
    GroupId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, info, warn};

use super::TopicPartition;
use crate::backoff::Backoff;
use crate::client::{check, s, Client};
use crate::conn::Connection;
use crate::error::{Error, KafkaCode, Result};

/// What a member needs to say who it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Membership {
    pub member_id: String,
    pub generation: i32,
}

/// The answer to JoinGroup.
#[derive(Debug)]
pub(crate) struct Joined {
    pub generation: i32,
    pub member_id: String,
    pub leader: String,
    pub protocol: Option<String>,
    /// Every member with its subscription metadata; empty unless this member leads.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// The coordinator-facing half of a group member.
pub(crate) struct GroupClient {
    client: Client,
    group_id: String,
    instance_id: Option<String>,
    /// The coordinator and a connection of the group's own: on the pooled connection,
    /// commits and heartbeats would queue behind long-poll fetches (a broker answers one
    /// request per connection at a time).
    coordinator: Mutex<Option<(i32, Arc<Connection>)>>,
    /// The group's connection to a coordinator it lost (NOT_COORDINATOR, ...): the next
    /// FindCoordinator goes there, not over the pooled connection, where it would wait
    /// behind a long-poll fetch for up to `fetch.max.wait.ms`; and if the coordinator
    /// is found on the same broker, it is used again.
    previous: Mutex<Option<(i32, Arc<Connection>)>>,
}

/// Errors after which the coordinator must be looked up again.
pub(super) fn coordinator_moved(e: &Error) -> bool {
    matches!(
        e.kafka_code(),
        Some(
            KafkaCode::NotCoordinator
                | KafkaCode::CoordinatorNotAvailable
                | KafkaCode::CoordinatorLoadInProgress
        )
    ) || matches!(
        e,
        Error::Disconnected { .. } | Error::Io { .. } | Error::Timeout { .. }
    )
}

impl GroupClient {
    pub(crate) fn new(client: Client, group_id: String, instance_id: Option<String>) -> Self {
        GroupClient {
            client,
            group_id,
            instance_id,
            coordinator: Mutex::new(None),
            previous: Mutex::new(None),
        }
    }

    pub(crate) fn group_id(&self) -> &str {
        &self.group_id
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    pub(super) fn instance(&self) -> Option<StrBytes> {
        self.instance_id.as_deref().map(s)
    }

    /// Forgets the coordinator, so the next call looks it up again (over the lost
    /// coordinator's connection while it is usable).
    pub(crate) fn coordinator_lost(&self) {
        let lost = self
            .coordinator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(lost) = lost.filter(|(_, c)| !c.is_poisoned()) {
            *self.previous.lock().unwrap_or_else(|e| e.into_inner()) = Some(lost);
        }
    }

    /// Drops the group's connections (the consumer is closing).
    pub(crate) fn disconnect(&self) {
        self.coordinator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.previous
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    pub(super) async fn coordinator(&self) -> Result<Arc<Connection>> {
        let known = self
            .coordinator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((_, conn)) = known.filter(|(_, c)| !c.is_poisoned()) {
            return Ok(conn);
        }
        let previous = self
            .previous
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|(_, c)| !c.is_poisoned());
        let conn = match &previous {
            Some((_, c)) => c.clone(),
            None => self.client.conn_to_any().await?,
        };
        let (node, addr) = match self
            .client
            .find_coordinator_on(&conn, 0, &self.group_id)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                if e.kafka_code().is_none() {
                    // The lost coordinator's connection did not answer: the next lookup
                    // goes over the pooled connections.
                    *self.previous.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                return Err(e);
            }
        };
        debug!(group = %self.group_id, node, %addr, "found coordinator");
        let conn = match previous {
            Some((was, c)) if was == node && !c.is_poisoned() => c,
            // A connection of the group's own, from the client (see the struct's field).
            _ => Arc::new(self.client.open_connection(&addr).await?),
        };
        *self.previous.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.coordinator.lock().unwrap_or_else(|e| e.into_inner()) = Some((node, conn.clone()));
        Ok(conn)
    }

    /// Runs `op` against the coordinator, looking it up again and retrying (with
    /// backoff, until the API deadline) when it moved or is loading.
    pub(super) async fn with_coordinator<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = self.client.deadline();
        let mut delays = Backoff::of(self.client.config()).delays();
        loop {
            let result = match self.coordinator().await {
                Ok(conn) => op(conn).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) if matches!(e, Error::Closed) => return Err(e),
                Err(e) => {
                    let wait = delays.next_delay();
                    let retriable = coordinator_moved(&e)
                        || matches!(e, Error::NoBrokerAvailable(_))
                        || e.is_retriable();
                    if !retriable || Instant::now() + wait >= deadline {
                        return Err(e);
                    }
                    if coordinator_moved(&e) || matches!(e, Error::NoBrokerAvailable(_)) {
                        self.coordinator_lost();
                    }
                    debug!(%what, group = %self.group_id, error = %e, "retrying against the coordinator");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// JoinGroup, once. MEMBER_ID_REQUIRED and the like come back as errors with the
    /// member id the coordinator assigned (see [`GroupClient::join`]).
    async fn join_once(
        &self,
        member_id: &str,
        protocols: &[(&'static str, Bytes)],
        session_timeout: Duration,
        rebalance_timeout: Duration,
    ) -> Result<std::result::Result<Joined, (Error, String)>> {
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(s(&self.group_id)))
            .with_session_timeout_ms(session_timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_rebalance_timeout_ms(rebalance_timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_member_id(s(member_id))
            .with_group_instance_id(self.instance())
            .with_protocol_type(s("consumer"))
            .with_protocols(
                protocols
                    .iter()
                    .map(|(name, meta)| {
                        JoinGroupRequestProtocol::default()
                            .with_name(s(name))
                            .with_metadata(meta.clone())
                    })
                    .collect(),
            );
        // The coordinator holds JoinGroup until every member has joined, up to the
        // rebalance timeout.
        let timeout = rebalance_timeout + self.client.config().request_timeout;
        self.with_coordinator("join_group", |conn| {
            let req = req.clone();
            async move {
                let version = conn.version_for::<JoinGroupRequest>()?;
                let resp = conn.request_at(&req, version, timeout).await?;
                if let Some(e) = Error::from_code(resp.error_code, None, || {
                    format!("join group {}", self.group_id)
                }) {
                    if coordinator_moved(&e) {
                        return Err(e);
                    }
                    return Ok(Err((e, resp.member_id.to_string())));
                }
                Ok(Ok(Joined {
                    generation: resp.generation_id,
                    member_id: resp.member_id.to_string(),
                    leader: resp.leader.to_string(),
                    protocol: resp.protocol_name.map(|p| p.to_string()),
                    members: resp
                        .members
                        .into_iter()
                        .map(|m| {
                            (
                                m.member_id.to_string(),
                                m.group_instance_id.map(|i| i.to_string()),
                                m.metadata,
                            )
                        })
                        .collect(),
                }))
            }
        })
        .await
    }

    /// Joins the group: retries MEMBER_ID_REQUIRED with the id the coordinator gave,
    /// and UNKNOWN_MEMBER_ID with an empty id. `member_id` is updated in place.
    pub(crate) async fn join(
        &self,
        member_id: &mut String,
        protocols: &[(&'static str, Bytes)],
        session_timeout: Duration,
        rebalance_timeout: Duration,
    ) -> Result<Joined> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self
                .join_once(member_id, protocols, session_timeout, rebalance_timeout)
                .await?
            {
                Ok(joined) => {
                    *member_id = joined.member_id.clone();
                    return Ok(joined);
                }
                Err((e, assigned)) if attempts < 10 => match e.kafka_code() {
                    Some(KafkaCode::MemberIdRequired) => {
                        debug!(group = %self.group_id, member = %assigned, "member id assigned");
                        *member_id = assigned;
                    }
                    Some(KafkaCode::UnknownMemberId) => member_id.clear(),
                    Some(KafkaCode::RebalanceInProgress) => {
                        tokio::time::sleep(self.client.config().retry_backoff).await
                    }
                    _ => return Err(e),
                },
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// SyncGroup: the leader passes every member's assignment, the others none.
    /// Returns this member's assignment bytes.
    pub(crate) async fn sync(
        &self,
        m: &Membership,
        protocol: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes> {
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&self.group_id)))
            .with_generation_id(m.generation)
            .with_member_id(s(&m.member_id))
            .with_group_instance_id(self.instance())
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(protocol.map(s))
            .with_assignments(
                assignments
                    .into_iter()
                    .map(|(member, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(s(&member))
                            .with_assignment(a)
                    })
                    .collect(),
            );
        self.with_coordinator("sync_group", |conn| {
            let req = req.clone();
            async move {
                let (_, resp) = conn.request(&req).await?;
                check(resp.error_code, None, || {
                    format!("sync group {}", self.group_id)
                })?;
                Ok(resp.assignment)
            }
        })
        .await
    }

    /// One heartbeat. Errors: REBALANCE_IN_PROGRESS (rejoin), ILLEGAL_GENERATION /
    /// UNKNOWN_MEMBER_ID / FENCED_INSTANCE_ID (membership lost), or the coordinator's.
    pub(crate) async fn heartbeat(&self, m: &Membership) -> Result<()> {
        let conn = match self.coordinator().await {
            Ok(c) => c,
            Err(e) => {
                self.coordinator_lost();
                return Err(e);
            }
        };
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&self.group_id)))
            .with_generation_id(m.generation)
            .with_member_id(s(&m.member_id))
            .with_group_instance_id(self.instance());
        let result = match conn.request(&req).await {
            Ok((_, resp)) => check(resp.error_code, None, || {
                format!("heartbeat to group {}", self.group_id)
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            if coordinator_moved(e) {
                self.coordinator_lost();
            }
        }
        result
    }

    /// LeaveGroup, best effort (errors are logged).
    pub(crate) async fn leave(&self, member_id: &str, reason: &str) {
        if member_id.is_empty() {
            return;
        }
        let result = async {
            let conn = self.coordinator().await?;
            let version = conn.version_for::<LeaveGroupRequest>()?;
            let req = if version >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(s(&self.group_id)))
                    .with_members(vec![MemberIdentity::default()
                        .with_member_id(s(member_id))
                        .with_group_instance_id(self.instance())
                        .with_reason((version >= 5).then(|| s(reason)))])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(s(&self.group_id)))
                    .with_member_id(s(member_id))
            };
            let resp = conn
                .request_at(&req, version, self.client.config().request_timeout)
                .await?;
            check(resp.error_code, None, || {
                format!("leave group {}", self.group_id)
            })
        }
        .await;
        match result {
            Ok(()) => info!(group = %self.group_id, member = %member_id, %reason, "left the group"),
            Err(e) => warn!(group = %self.group_id, error = %e, "leave group failed"),
        }
    }

    /// Commits `offsets` (the next offset to read, per partition) for this member's
    /// generation; `membership` is `None` for a consumer outside any group (manual
    /// assignment with a group id), which commits with generation -1.
    pub(crate) async fn commit(
        &self,
        membership: Option<&Membership>,
        offsets: &BTreeMap<TopicPartition, (i64, i32)>,
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, (offset, epoch)) in offsets {
            topics.entry(&tp.topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition)
                    .with_committed_offset(*offset)
                    .with_committed_leader_epoch(*epoch),
            );
        }
        let (generation, member) = match membership {
            Some(m) => (m.generation, m.member_id.clone()),
            None => (-1, String::new()),
        };
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(&self.group_id)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(&member))
            .with_group_instance_id(if membership.is_some() {
                self.instance()
            } else {
                None
            })
            .with_retention_time_ms(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(s(t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        self.with_coordinator("offset_commit", |conn| {
            let req = req.clone();
            async move {
                let (_, resp) = conn.request(&req).await?;
                for t in &resp.topics {
                    for p in &t.partitions {
                        check(p.error_code, None, || {
                            format!(
                                "commit offset of {}[{}] for group {}",
                                t.name.as_str(),
                                p.partition_index,
                                self.group_id
                            )
                        })?;
                    }
                }
                Ok(())
            }
        })
        .await
    }

    /// The committed offsets of `partitions` (`None` where nothing is committed).
    /// `member` is a member of a consumer-protocol group (KIP-848): its member id and
    /// epoch go with the request (v9+), so the coordinator checks the epoch.
    pub(crate) async fn committed(
        &self,
        partitions: &[TopicPartition],
        member: Option<&Membership>,
    ) -> Result<HashMap<TopicPartition, Option<(i64, i32)>>> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            topics.entry(&tp.topic).or_default().push(tp.partition);
        }
        let old_topics: Vec<_> = topics
            .iter()
            .map(|(t, ps)| {
                kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(t)))
                    .with_partition_indexes(ps.clone())
            })
            .collect();
        let new_topics: Vec<_> = topics
            .iter()
            .map(|(t, ps)| {
                OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s(t)))
                    .with_partition_indexes(ps.clone())
            })
            .collect();
        self.with_coordinator("offset_fetch", |conn| {
            let (old_topics, new_topics) = (old_topics.clone(), new_topics.clone());
            async move {
                let version = conn.version_for::<OffsetFetchRequest>()?;
                let req = if version >= 8 {
                    OffsetFetchRequest::default()
                        .with_groups(vec![OffsetFetchRequestGroup::default()
                            .with_group_id(GroupId(s(&self.group_id)))
                            .with_member_id(
                                member.filter(|_| version >= 9).map(|m| s(&m.member_id)),
                            )
                            .with_member_epoch(
                                member.filter(|_| version >= 9).map_or(-1, |m| m.generation),
                            )
                            .with_topics(Some(new_topics))])
                        .with_require_stable(true)
                } else {
                    OffsetFetchRequest::default()
                        .with_group_id(GroupId(s(&self.group_id)))
                        .with_topics(Some(old_topics))
                        .with_require_stable(version >= 7)
                };
                let resp = conn
                    .request_at(&req, version, self.client.config().request_timeout)
                    .await?;
                // v8+ answers per group; older versions for the one group at the top.
                let (code, rows): (i16, Vec<_>) = if version >= 8 {
                    let g = resp.groups.first();
                    let rows = g
                        .into_iter()
                        .flat_map(|g| &g.topics)
                        .flat_map(|t| {
                            t.partitions.iter().map(move |p| {
                                let (o, e) = (p.committed_offset, p.committed_leader_epoch);
                                (t.name.as_str(), p.partition_index, o, e, p.error_code)
                            })
                        })
                        .collect();
                    (g.map_or(0, |g| g.error_code), rows)
                } else {
                    let rows = resp
                        .topics
                        .iter()
                        .flat_map(|t| {
                            t.partitions.iter().map(move |p| {
                                let (o, e) = (p.committed_offset, p.committed_leader_epoch);
                                (t.name.as_str(), p.partition_index, o, e, p.error_code)
                            })
                        })
                        .collect();
                    (resp.error_code, rows)
                };
                check(code, None, || {
                    format!("fetch committed offsets of group {}", self.group_id)
                })?;
                let mut out = HashMap::new();
                for (topic, partition, offset, epoch, code) in rows {
                    check(code, None, || {
                        format!(
                            "fetch committed offset of {topic}[{partition}] for group {}",
                            self.group_id
                        )
                    })?;
                    out.insert(
                        TopicPartition::new(topic, partition),
                        (offset >= 0).then_some((offset, epoch)),
                    );
                }
                Ok(out)
            }
        })
        .await
    }
}
