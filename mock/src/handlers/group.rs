//! FindCoordinator and the classic group protocol: JoinGroup (with the member-id-required
//! round of v4+), SyncGroup, Heartbeat, LeaveGroup, session and rebalance timeouts,
//! generations; ListGroups and DescribeGroups. The group leader assigns partitions on the
//! client side; the coordinator only relays.
//!
//! A JoinGroup waits (holding its connection, as on a broker) until every member of the
//! group has joined or the rebalance timeout has passed; then the members that did not
//! rejoin are removed, the generation advances, and every waiting member gets its answer
//! (the leader with the member list). A follower's SyncGroup waits for the leader's.
//! A reaper task expires members whose session timed out and rebalances that timed out.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{sb, Ctx};
use crate::state::{random_u64, State};

/// How often the reaper looks for expired sessions and rebalance deadlines.
pub(crate) const REAP_EVERY: Duration = Duration::from_millis(20);

/// A committed offset.
#[derive(Debug, Clone)]
pub(crate) struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

impl Default for CommittedOffset {
    fn default() -> Self {
        CommittedOffset {
            offset: -1,
            leader_epoch: -1,
            metadata: None,
        }
    }
}

/// The classic group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat: Instant,
    /// Sent SyncGroup in the current generation.
    synced: bool,
    join_waiter: Option<oneshot::Sender<JoinGroupResponse>>,
    sync_waiter: Option<oneshot::Sender<(i16, Bytes)>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A consumer group.
#[derive(Debug)]
pub(crate) struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or expire.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// CompletingRebalance: members that have not sent SyncGroup by then are removed.
    sync_deadline: Option<Instant>,
    /// The initial join of an empty group waits until then (`group.initial.rebalance.delay.ms`).
    initial_join_until: Option<Instant>,
    pub offsets: HashMap<(String, i32), CommittedOffset>,
}

impl Group {
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_owned(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_join_until: None,
            sync_deadline: None,
            offsets: HashMap::new(),
        }
    }

    /// Kafka's static-membership check: a request naming an instance id that now
    /// belongs to another member id (a newer process with the same
    /// `group.instance.id` took it over) is fenced: FENCED_INSTANCE_ID.
    pub fn fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id.is_some_and(|inst| {
            self.members
                .iter()
                .any(|(id, m)| m.instance_id.as_deref() == Some(inst) && id != member_id)
        })
    }

    /// Whether an OffsetCommit from this member at this generation is accepted.
    pub fn check_commit(&self, member_id: &str, generation: i32) -> Result<(), i16> {
        if generation < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId.code())
            };
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress.code());
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId.code());
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration.code());
        }
        Ok(())
    }

    /// Starts a rebalance: members must rejoin within the largest rebalance timeout.
    fn prepare_rebalance(&mut self) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(tx) = m.sync_waiter.take() {
                    let _ = tx.send((ResponseError::RebalanceInProgress.code(), Bytes::new()));
                }
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.state = GroupState::PreparingRebalance;
        self.sync_deadline = None;
        self.rebalance_deadline = Some(Instant::now() + timeout);
    }

    /// Completes the join phase if every member has joined (and the initial delay of a
    /// group that was empty has passed).
    fn maybe_complete_join(&mut self) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_join_until.is_none()
            && self.members.values().all(|m| m.join_waiter.is_some())
        {
            self.complete_join();
        }
    }

    /// Ends the join phase: members that did not rejoin leave, the generation advances,
    /// and the joined members get their answers.
    fn complete_join(&mut self) {
        self.members.retain(|_, m| m.join_waiter.is_some());
        self.rebalance_deadline = None;
        self.initial_join_until = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            return;
        }
        // The first protocol, in the first member's order, that every member supports.
        let first = self.members.values().next().expect("not empty");
        let protocol = first
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
            .unwrap_or_default();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().expect("a member leads");
        self.protocol = Some(protocol.clone());
        self.protocol_type = Some(first.protocol_type.clone());
        self.state = GroupState::CompletingRebalance;
        let sync_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.sync_deadline = Some(Instant::now() + sync_timeout);
        let list: Vec<JoinGroupResponseMember> = self
            .members
            .iter()
            .map(|(id, m)| {
                JoinGroupResponseMember::default()
                    .with_member_id(sb(id))
                    .with_group_instance_id(m.instance_id.as_deref().map(sb))
                    .with_metadata(m.metadata_for(&protocol))
            })
            .collect();
        let now = Instant::now();
        let generation = self.generation;
        let protocol_type = self.protocol_type.clone();
        for (id, m) in self.members.iter_mut() {
            m.last_heartbeat = now;
            m.synced = false;
            m.assignment = Bytes::new();
            let resp = JoinGroupResponse::default()
                .with_generation_id(generation)
                .with_protocol_type(protocol_type.as_deref().map(sb))
                .with_protocol_name(Some(sb(&protocol)))
                .with_leader(sb(&leader))
                .with_member_id(sb(id))
                .with_members(if *id == leader {
                    list.clone()
                } else {
                    Vec::new()
                });
            if let Some(tx) = m.join_waiter.take() {
                let _ = tx.send(resp);
            }
        }
    }

    /// Removes members (leaving or expired) and rebalances what remains.
    fn remove_members(&mut self, ids: &[String]) {
        let mut removed = false;
        for id in ids {
            if let Some(mut m) = self.members.remove(id) {
                removed = true;
                if let Some(tx) = m.join_waiter.take() {
                    let _ = tx.send(join_error(ResponseError::UnknownMemberId.code(), id));
                }
                if let Some(tx) = m.sync_waiter.take() {
                    let _ = tx.send((ResponseError::UnknownMemberId.code(), Bytes::new()));
                }
            }
        }
        if !removed {
            return;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(),
            GroupState::PreparingRebalance | GroupState::Empty => {}
        }
        if self.members.is_empty() {
            self.complete_join();
        } else {
            self.maybe_complete_join();
        }
    }

    /// Expired sessions and rebalance deadlines.
    fn reap(&mut self, now: Instant) {
        self.pending.retain(|_, expires| *expires > now);
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline.is_some_and(|d| d <= now)
        {
            let missing: Vec<String> = self
                .members
                .iter()
                .filter(|(_, m)| !m.synced)
                .map(|(id, _)| id.clone())
                .collect();
            tracing::debug!(group = %self.id, ?missing, "SyncGroup timed out");
            self.sync_deadline = None;
            self.remove_members(&missing);
        }
        if self.initial_join_until.is_some_and(|t| t <= now) {
            self.initial_join_until = None;
            self.maybe_complete_join();
        }
        if self.state == GroupState::PreparingRebalance
            && self.rebalance_deadline.is_some_and(|d| d <= now)
        {
            self.complete_join();
        }
        let expired: Vec<String> = self
            .members
            .iter()
            // A member waiting in JoinGroup or SyncGroup counts as alive (as on a broker).
            .filter(|(_, m)| {
                m.join_waiter.as_ref().is_none_or(|t| t.is_closed())
                    && m.sync_waiter.as_ref().is_none_or(|t| t.is_closed())
                    && now.duration_since(m.last_heartbeat) > m.session_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        if !expired.is_empty() {
            tracing::debug!(group = %self.id, ?expired, "sessions expired");
            self.remove_members(&expired);
        }
    }
}

fn join_error(code: i16, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code)
        .with_generation_id(-1)
        .with_member_id(sb(member_id))
}

/// Expires sessions and rebalances of every group.
pub(crate) fn reap(st: &mut State, now: Instant) {
    for g in st.groups.values_mut() {
        g.reap(now);
    }
}

/// NOT_COORDINATOR when `node` does not coordinate `group`, COORDINATOR_NOT_AVAILABLE
/// when the coordinator is down.
pub(crate) fn coordinator_error(st: &State, node: i32, group: &str) -> Option<i16> {
    let c = st.coordinator_for(group);
    if !st.is_up(c) {
        Some(ResponseError::CoordinatorNotAvailable.code())
    } else if c != node {
        Some(ResponseError::NotCoordinator.code())
    } else {
        None
    }
}

pub(crate) async fn find_coordinator(
    ctx: &mut Ctx,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let v = ctx.version;
    let st = ctx.shared.lock();
    let fault = ctx.faults.request_error();
    let find = |key: &str| -> (i16, i32, String, i32) {
        if let Some(code) = fault {
            return (code, -1, String::new(), -1);
        }
        let c = st.coordinator_for(key);
        match st.node(c).filter(|n| n.up) {
            Some(n) => (0, n.id, n.host.clone(), i32::from(n.port)),
            None => (
                ResponseError::CoordinatorNotAvailable.code(),
                -1,
                String::new(),
                -1,
            ),
        }
    };
    if v >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, id, host, port) = find(k.as_str());
                Coordinator::default()
                    .with_key(k.clone())
                    .with_error_code(code)
                    .with_node_id(id.into())
                    .with_host(sb(&host))
                    .with_port(port)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, id, host, port) = find(req.key.as_str());
    FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_node_id(id.into())
        .with_host(sb(&host))
        .with_port(port)
}

pub(crate) async fn join_group(ctx: &mut Ctx, req: JoinGroupRequest) -> JoinGroupResponse {
    let v = ctx.version;
    let group_id = req.group_id.as_str().to_owned();
    let rx = {
        let mut st = ctx.shared.lock();
        if let Some(code) = ctx
            .faults
            .request_error()
            .or_else(|| coordinator_error(&st, ctx.node, &group_id))
        {
            return join_error(code, req.member_id.as_str());
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return join_error(
                ResponseError::InconsistentGroupProtocol.code(),
                req.member_id.as_str(),
            );
        }
        if req.session_timeout_ms <= 0 {
            return join_error(
                ResponseError::InvalidSessionTimeout.code(),
                req.member_id.as_str(),
            );
        }
        let initial_delay = st.initial_rebalance_delay;
        let g = st
            .groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(&group_id));
        let protocols: Vec<(String, Bytes)> = req
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_owned(), p.metadata.clone()))
            .collect();
        if !g.members.is_empty() {
            let same_type = g
                .protocol_type
                .as_deref()
                .is_none_or(|t| t == req.protocol_type.as_str());
            let common = g.members.values().all(|m| {
                m.protocols
                    .iter()
                    .any(|(n, _)| protocols.iter().any(|(p, _)| p == n))
            });
            if !same_type || !common {
                return join_error(
                    ResponseError::InconsistentGroupProtocol.code(),
                    req.member_id.as_str(),
                );
            }
        }
        let instance_id = req
            .group_instance_id
            .as_ref()
            .map(|s| s.as_str().to_owned());
        let mut member_id = req.member_id.as_str().to_owned();
        if member_id.is_empty() {
            member_id = format!("{}-{:016x}", ctx.client_id, random_u64());
            if let Some(inst) = &instance_id {
                // A static member coming back replaces its old member id.
                let old: Vec<String> = g
                    .members
                    .iter()
                    .filter(|(_, m)| m.instance_id.as_deref() == Some(inst))
                    .map(|(id, _)| id.clone())
                    .collect();
                if let Some(old) = old.first() {
                    let mut m = g.members.remove(old).expect("listed");
                    if let Some(tx) = m.join_waiter.take() {
                        let _ = tx.send(join_error(ResponseError::FencedInstanceId.code(), old));
                    }
                    if let Some(tx) = m.sync_waiter.take() {
                        let _ = tx.send((ResponseError::FencedInstanceId.code(), Bytes::new()));
                    }
                    if g.leader.as_deref() == Some(old) {
                        g.leader = Some(member_id.clone());
                    }
                    g.members.insert(member_id.clone(), m);
                }
            } else if v >= 4 {
                let session = Duration::from_millis(req.session_timeout_ms as u64);
                g.pending
                    .insert(member_id.clone(), Instant::now() + session);
                return join_error(ResponseError::MemberIdRequired.code(), &member_id);
            }
        } else if g.fenced(instance_id.as_deref(), &member_id) {
            return join_error(ResponseError::FencedInstanceId.code(), &member_id);
        } else if !g.members.contains_key(&member_id) && !g.pending.contains_key(&member_id) {
            return join_error(ResponseError::UnknownMemberId.code(), &member_id);
        }
        g.pending.remove(&member_id);
        let rebalance_ms = if v >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        };
        let existing = g.members.get(&member_id);
        let unchanged = existing.is_some_and(|m| m.protocols == protocols);
        let is_leader = g.leader.as_deref() == Some(member_id.as_str());
        if g.state == GroupState::Stable && unchanged && !is_leader {
            // A follower rejoining with nothing new: the current generation, no rebalance.
            let m = g.members.get_mut(&member_id).expect("exists");
            m.last_heartbeat = Instant::now();
            let protocol = g.protocol.clone().unwrap_or_default();
            return JoinGroupResponse::default()
                .with_generation_id(g.generation)
                .with_protocol_type(g.protocol_type.as_deref().map(sb))
                .with_protocol_name(Some(sb(&protocol)))
                .with_leader(sb(g.leader.as_deref().unwrap_or("")))
                .with_member_id(sb(&member_id));
        }
        let (tx, rx) = oneshot::channel();
        let prior = g.members.remove(&member_id);
        g.members.insert(
            member_id.clone(),
            Member {
                instance_id,
                client_id: ctx.client_id.clone(),
                client_host: ctx.client_host.clone(),
                session_timeout: Duration::from_millis(req.session_timeout_ms as u64),
                rebalance_timeout: Duration::from_millis(rebalance_ms.max(0) as u64),
                protocol_type: req.protocol_type.as_str().to_owned(),
                protocols,
                assignment: prior
                    .as_ref()
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default(),
                last_heartbeat: Instant::now(),
                synced: false,
                join_waiter: Some(tx),
                sync_waiter: None,
            },
        );
        if let Some(mut prior) = prior {
            if let Some(old) = prior.join_waiter.take() {
                let _ = old.send(join_error(
                    ResponseError::UnknownMemberId.code(),
                    &member_id,
                ));
            }
        }
        let was_empty = g.state == GroupState::Empty;
        if g.state != GroupState::PreparingRebalance {
            g.prepare_rebalance();
        }
        let delay = initial_delay;
        if !delay.is_zero() {
            // Kafka's initial delayed join: the first join of an empty group waits for
            // more members; each one that comes extends the wait, up to the rebalance
            // timeout.
            let now = Instant::now();
            let cap = g.rebalance_deadline.unwrap_or(now);
            if was_empty || g.initial_join_until.is_some() {
                g.initial_join_until = Some((now + delay).min(cap));
            }
        }
        g.maybe_complete_join();
        rx
    };
    rx.await.unwrap_or_else(|_| {
        join_error(
            ResponseError::UnknownMemberId.code(),
            req.member_id.as_str(),
        )
    })
}

fn sync_answer(code: i16, g: Option<&Group>, assignment: Bytes) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_error_code(code)
        .with_protocol_type(g.and_then(|g| g.protocol_type.as_deref()).map(sb))
        .with_protocol_name(g.and_then(|g| g.protocol.as_deref()).map(sb))
        .with_assignment(assignment)
}

pub(crate) async fn sync_group(ctx: &mut Ctx, req: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = req.group_id.as_str().to_owned();
    let member_id = req.member_id.as_str().to_owned();
    let rx = {
        let mut st = ctx.shared.lock();
        if let Some(code) = ctx
            .faults
            .request_error()
            .or_else(|| coordinator_error(&st, ctx.node, &group_id))
        {
            return sync_answer(code, None, Bytes::new());
        }
        let Some(g) = st.groups.get_mut(&group_id) else {
            return sync_answer(ResponseError::UnknownMemberId.code(), None, Bytes::new());
        };
        if g.fenced(req.group_instance_id.as_deref(), &member_id) {
            return sync_answer(ResponseError::FencedInstanceId.code(), None, Bytes::new());
        }
        if !g.members.contains_key(&member_id) {
            return sync_answer(ResponseError::UnknownMemberId.code(), None, Bytes::new());
        }
        if req.generation_id != g.generation {
            return sync_answer(ResponseError::IllegalGeneration.code(), None, Bytes::new());
        }
        let inconsistent = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| g.protocol_type.as_deref() != Some(t.as_str()))
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|p| g.protocol.as_deref() != Some(p.as_str()));
        if inconsistent {
            return sync_answer(
                ResponseError::InconsistentGroupProtocol.code(),
                None,
                Bytes::new(),
            );
        }
        match g.state {
            GroupState::Empty => {
                return sync_answer(ResponseError::UnknownMemberId.code(), None, Bytes::new())
            }
            GroupState::PreparingRebalance => {
                return sync_answer(
                    ResponseError::RebalanceInProgress.code(),
                    None,
                    Bytes::new(),
                )
            }
            GroupState::Stable => {
                let a = g.members[&member_id].assignment.clone();
                return sync_answer(0, Some(g), a);
            }
            GroupState::CompletingRebalance => {}
        }
        let (tx, rx) = oneshot::channel();
        {
            let m = g.members.get_mut(&member_id).expect("checked");
            m.sync_waiter = Some(tx);
            m.synced = true;
            m.last_heartbeat = Instant::now();
        }
        if g.leader.as_deref() == Some(member_id.as_str()) {
            let mut given: HashMap<String, Bytes> = req
                .assignments
                .into_iter()
                .map(|a| (a.member_id.as_str().to_owned(), a.assignment))
                .collect();
            for (id, m) in g.members.iter_mut() {
                m.assignment = given.remove(id).unwrap_or_default();
            }
            g.state = GroupState::Stable;
            g.sync_deadline = None;
            for m in g.members.values_mut() {
                if let Some(tx) = m.sync_waiter.take() {
                    let _ = tx.send((0, m.assignment.clone()));
                }
            }
        }
        rx
    };
    match rx.await {
        Ok((code, assignment)) => {
            let st = ctx.shared.lock();
            sync_answer(code, st.groups.get(&group_id), assignment)
        }
        Err(_) => sync_answer(
            ResponseError::RebalanceInProgress.code(),
            None,
            Bytes::new(),
        ),
    }
}

pub(crate) async fn heartbeat(ctx: &mut Ctx, req: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = req.group_id.as_str().to_owned();
    let mut st = ctx.shared.lock();
    let code = ctx
        .faults
        .request_error()
        .or_else(|| coordinator_error(&st, ctx.node, &group_id))
        .unwrap_or_else(|| {
            let Some(g) = st.groups.get_mut(&group_id) else {
                return ResponseError::UnknownMemberId.code();
            };
            if g.fenced(req.group_instance_id.as_deref(), req.member_id.as_str()) {
                return ResponseError::FencedInstanceId.code();
            }
            let Some(m) = g.members.get_mut(req.member_id.as_str()) else {
                return ResponseError::UnknownMemberId.code();
            };
            m.last_heartbeat = Instant::now();
            if req.generation_id != g.generation {
                return ResponseError::IllegalGeneration.code();
            }
            match g.state {
                GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
                GroupState::Empty => ResponseError::UnknownMemberId.code(),
                _ => 0,
            }
        });
    HeartbeatResponse::default().with_error_code(code)
}

pub(crate) async fn leave_group(ctx: &mut Ctx, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let v = ctx.version;
    let group_id = req.group_id.as_str().to_owned();
    let mut st = ctx.shared.lock();
    if let Some(code) = ctx
        .faults
        .request_error()
        .or_else(|| coordinator_error(&st, ctx.node, &group_id))
    {
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let leaving: Vec<(String, Option<String>)> = if v >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.as_str().to_owned(),
                    m.group_instance_id.as_ref().map(|s| s.as_str().to_owned()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.as_str().to_owned(), None)]
    };
    let Some(g) = st.groups.get_mut(&group_id) else {
        return LeaveGroupResponse::default()
            .with_error_code(ResponseError::UnknownMemberId.code());
    };
    let mut results = Vec::new();
    let mut remove = Vec::new();
    for (id, inst) in &leaving {
        // A static member may leave by instance id alone.
        let found = if id.is_empty() {
            g.members
                .iter()
                .find(|(_, m)| m.instance_id.is_some() && m.instance_id == *inst)
                .map(|(id, _)| id.clone())
        } else {
            g.members.contains_key(id).then(|| id.clone())
        };
        let code = match found {
            Some(found) => {
                remove.push(found);
                0
            }
            None => ResponseError::UnknownMemberId.code(),
        };
        results.push(
            MemberResponse::default()
                .with_member_id(sb(id))
                .with_group_instance_id(inst.as_deref().map(sb))
                .with_error_code(code),
        );
    }
    g.remove_members(&remove);
    if v >= 3 {
        LeaveGroupResponse::default().with_members(results)
    } else {
        let code = results.first().map_or(0, |r| r.error_code);
        LeaveGroupResponse::default().with_error_code(code)
    }
}

pub(crate) async fn list_groups(ctx: &mut Ctx, req: ListGroupsRequest) -> ListGroupsResponse {
    let v = ctx.version;
    let st = ctx.shared.lock();
    if let Some(code) = ctx.faults.request_error() {
        return ListGroupsResponse::default().with_error_code(code);
    }
    let groups = st
        .groups
        .values()
        .filter(|g| st.coordinator_for(&g.id) == ctx.node)
        .filter(|g| {
            req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|s| s.as_str().eq_ignore_ascii_case(g.state.name()))
        })
        .filter(|_| {
            req.types_filter.is_empty()
                || req
                    .types_filter
                    .iter()
                    .any(|t| t.as_str().eq_ignore_ascii_case("classic"))
        })
        .map(|g| {
            let mut l = ListedGroup::default()
                .with_group_id(sb(&g.id).into())
                .with_protocol_type(sb(g.protocol_type.as_deref().unwrap_or("consumer")));
            if v >= 4 {
                l = l.with_group_state(sb(g.state.name()));
            }
            if v >= 5 {
                l = l.with_group_type(sb("classic"));
            }
            l
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(crate) async fn describe_groups(
    ctx: &mut Ctx,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let v = ctx.version;
    let st = ctx.shared.lock();
    let fault = ctx.faults.request_error();
    let groups = req
        .groups
        .iter()
        .map(|id| {
            let out = DescribedGroup::default().with_group_id(id.clone());
            if let Some(code) = fault.or_else(|| coordinator_error(&st, ctx.node, id.as_str())) {
                return out.with_error_code(code);
            }
            let Some(g) = st.groups.get(id.as_str()) else {
                let out = out.with_group_state(sb("Dead"));
                return if v >= 6 {
                    out.with_error_code(ResponseError::GroupIdNotFound.code())
                } else {
                    out
                };
            };
            let protocol = g.protocol.clone().unwrap_or_default();
            let members = g
                .members
                .iter()
                .map(|(mid, m)| {
                    DescribedGroupMember::default()
                        .with_member_id(sb(mid))
                        .with_group_instance_id(if v >= 4 {
                            m.instance_id.as_deref().map(sb)
                        } else {
                            None
                        })
                        .with_client_id(sb(&m.client_id))
                        .with_client_host(sb(&m.client_host))
                        .with_member_metadata(m.metadata_for(&protocol))
                        .with_member_assignment(m.assignment.clone())
                })
                .collect();
            out.with_group_state(sb(g.state.name()))
                .with_protocol_type(sb(g.protocol_type.as_deref().unwrap_or("")))
                .with_protocol_data(sb(&protocol))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
